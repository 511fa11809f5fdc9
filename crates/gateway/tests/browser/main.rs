//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver) signs
//! up, creates an API, a plan and a key, reads the key off the page, calls the running data plane
//! with it (200), rotates it, revokes the replacement (403). A screenshot of each page lands in
//! `target/screenshots/`; tables are checked for cells that wrap mid-word or stand out of their row.
//! Beside it, on the same two planes without a browser: the request log end to end, from requests
//! through the data plane to the control plane's management API.

// Test code fails loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control_plane::ControlPlaneSettings;
use control_plane::config::DashboardSettings;
use data_plane::DataPlaneSettings;
use data_plane::config::ProxySettings;
use domain::settings::Settings;
use domain::testing::{TestDb, in_ci, redis_url, unique_name};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Driver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// chromedriver on a free port, or `None` (skip) when Chromium is not installed outside CI.
async fn start_driver() -> Option<Driver> {
    if !installed(CHROMEDRIVER) || !PathBuf::from(CHROMIUM).exists() {
        assert!(
            !in_ci(),
            "the browser test needs Chromium and chromedriver (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipping the browser test: Chromium or chromedriver is not installed");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(Driver {
        child,
        url,
        profile: tempfile::tempdir().unwrap(),
    })
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1366,900",
                format!("--user-data-dir={}", driver.profile.path().display()),
            ],
        }),
    );
    // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
    ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A screenshot of the whole page, however long (the window grows to it, then shrinks back).
async fn shot_full(c: &Client, name: &str) {
    let height = c
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    c.set_window_size(1366, u32::try_from(height).unwrap() + 140)
        .await
        .unwrap();
    shot(c, name).await;
    c.set_window_size(1366, 900).await.unwrap();
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// What a person would find broken in the page's tables at 1366 px: a short value (key header,
/// prefix, date, badge) split over two lines, or a cell not as tall as its row.
async fn assert_tables_tidy(c: &Client, page: &str) {
    let problems = c
        .execute(
            r"const out = [];
            for (const el of document.querySelectorAll('td.nowrap code, td.nowrap, .badge, th')) {
              const lines = new Set([...el.getClientRects()].map(r => Math.round(r.top)));
              if (lines.size > 1)
                out.push('wraps: ' + el.textContent.trim());
            }
            for (const row of document.querySelectorAll('tbody tr')) {
              const h = row.getBoundingClientRect().height;
              for (const cell of row.cells)
                if (Math.abs(cell.getBoundingClientRect().height - h) > 1.5)
                  out.push('misaligned: ' + cell.textContent.trim());
            }
            if (document.documentElement.scrollWidth > window.innerWidth)
              out.push('page scrolls sideways');
            const main = document.querySelector('main').getBoundingClientRect();
            for (const t of document.querySelectorAll('table'))
              if (t.getBoundingClientRect().right > main.right - 20)
                out.push('table wider than the page: ' + (t.id || t.className));
            return out;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(problems, serde_json::json!([]), "on {page}");
}

async fn fill(c: &Client, css: &str, value: &str) {
    let el = c.wait().for_element(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits until the page's address holds `needle` (a link or form took the browser there).
async fn wait_for_url(c: &Client, needle: &str) {
    let started = Instant::now();
    while !c.current_url().await.unwrap().as_str().contains(needle) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the browser never reached a page with {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit(c: &Client) {
    c.find(Locator::Css("main form button[type=submit].primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn wait_for_text(c: &Client, text: &str) {
    let started = Instant::now();
    loop {
        if c.source().await.unwrap().contains(text) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "page never showed {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call_until(key: &str, url: &str, want: u16) {
    call_with_until(("X-API-Key", key), url, want).await;
}

/// Calls `url` with field `credential` until it answers `want` (within 10 s).
async fn call_with_until(credential: (&str, &str), url: &str, want: u16) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let status = client
            .get(url)
            .header(credential.0, credential.1)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url} kept answering {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Both planes in this process on one fresh database, and the demo upstream.
async fn start_gateway() -> (String, String, std::net::SocketAddr, TestDb) {
    let db = TestDb::sqlite().await;
    let upstream = gateway::demo::spawn_upstream("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut shared = Settings::for_tests(db.url.clone());
    // Both planes name the gateway alike: the tokens' issuer, which the dashboard checks.
    shared.public_url = "http://gateway.test".into();
    if let Some(url) = redis_url() {
        shared.redis_url = Some(url);
        shared.redis_prefix = unique_name("gwtest");
    }
    let dp = data_plane::Application::build(DataPlaneSettings {
        shared: shared.clone(),
        listen: DataPlaneSettings::for_tests(&db.url).listen,
        proxy: ProxySettings {
            reload_poll_ms: 200,
            ..ProxySettings::default()
        },
    })
    .await
    .unwrap();
    let gateway_url = format!("http://{}", dp.local_addr());
    tokio::spawn(dp.run_until_stopped());
    let cp = control_plane::Application::build(ControlPlaneSettings {
        shared,
        listen: ControlPlaneSettings::for_tests(&db.url).listen,
        dashboard: DashboardSettings::default(),
    })
    .await
    .unwrap();
    let dashboard = format!("http://127.0.0.1:{}", cp.port());
    tokio::spawn(cp.run_until_stopped());

    (dashboard, gateway_url, upstream, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_create_an_api_plan_and_key_call_it_then_revoke_it() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let (dashboard, gateway_url, upstream, db) = start_gateway().await;

    let c = browser(&driver).await;
    c.goto(&format!("{dashboard}/register")).await.unwrap();
    shot(&c, "01-register").await;
    fill(&c, "input[name=username]", "alice").await;
    fill(&c, "input[name=email]", "alice@example.com").await;
    fill(&c, "input[name=tenant_name]", "Acme Widgets").await;
    // The slug is suggested from the name as it is typed.
    let slug = c
        .find(Locator::Css("input[name=tenant_slug]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(slug.as_deref(), Some("acme-widgets"));
    fill(&c, "input[name=password]", "tangerine-orbit-42").await;
    fill(&c, "input[name=confirm_password]", "tangerine-orbit-42").await;
    submit(&c).await;
    wait_for_text(&c, "Get started").await;
    shot(&c, "02-overview-empty").await;

    c.goto(&format!("{dashboard}/apis/new")).await.unwrap();
    fill(&c, "input[name=name]", "Echo").await;
    // The slug's pattern is one Chromium compiles (under the `v` flag): a bad slug is refused
    // before the form is sent.
    fill(&c, "input[name=slug]", "Echo API!").await;
    assert_eq!(slug_valid(&c).await, serde_json::json!(false));
    fill(&c, "input[name=slug]", "echo").await;
    assert_eq!(slug_valid(&c).await, serde_json::json!(true));
    fill(
        &c,
        "input[name=upstream_url]",
        &format!("http://{upstream}"),
    )
    .await;
    shot(&c, "03-api-form").await;
    submit(&c).await;
    wait_for_text(&c, "/acme-widgets/echo/").await;
    assert_tables_tidy(&c, "APIs").await;
    shot(&c, "04-apis").await;

    c.goto(&format!("{dashboard}/plans/new")).await.unwrap();
    fill(&c, "input[name=name]", "Starter").await;
    fill(&c, "input[name=requests_per_minute]", "120").await;
    fill(&c, "input[name=requests_per_month]", "50000").await;
    shot(&c, "05-plan-form").await;
    submit(&c).await;
    wait_for_text(&c, "Starter").await;
    shot(&c, "06-plans").await;

    c.goto(&format!("{dashboard}/keys/new")).await.unwrap();
    fill(&c, "input[name=name]", "mobile app").await;
    submit(&c).await;
    let key = shown_key(&c).await;
    assert!(key.starts_with("gw_live_") && key.len() == 46, "{key}");
    shot(&c, "07-key-created").await;

    let endpoint = format!("{gateway_url}/acme-widgets/echo/hello");
    call_until(&key, &endpoint, 200).await;

    c.goto(&format!("{dashboard}/keys")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(!page.contains(&key), "the list never shows the key again");
    assert_tables_tidy(&c, "keys").await;
    shot(&c, "08-keys").await;
    let new_key = rotate_then_revoke_the_replacement(&c, &key).await;
    call_until(&new_key, &endpoint, 403).await;
    call_until(&key, &endpoint, 200).await;

    analytics_pages(&c, &dashboard, &gateway_url, &key).await;
    routes_pages(&c, &dashboard, &gateway_url, &key).await;
    targets_page(&c, &dashboard, upstream).await;
    tokens_page(&c, &dashboard, &gateway_url, &key).await;
    webhooks_page(&c, &dashboard, &db).await;

    c.goto(&format!("{dashboard}/clients/new")).await.unwrap();
    shot(&c, "10-client-form").await;
    c.goto(&format!("{dashboard}/dashboard")).await.unwrap();
    wait_for_text(&c, "Top keys this month").await;
    assert_tables_tidy(&c, "overview").await;
    shot(&c, "11-overview").await;

    // A path nobody serves: the app's own 404, inside the layout with its top bar.
    c.goto(&format!("{dashboard}/no/such/page")).await.unwrap();
    wait_for_text(&c, "404 · Not found").await;
    c.find(Locator::Css("header.topbar nav a[href='/keys']"))
        .await
        .expect("the top bar on the 404 page");
    shot(&c, "14-not-found").await;

    c.goto(&format!("{dashboard}/account/password"))
        .await
        .unwrap();
    wait_for_text(&c, "Change your password").await;
    shot(&c, "12-account-password").await;

    admin_pages(&c, &db).await;
    c.close().await.unwrap();
}

/// Real traffic through the data plane — answers of every class, latencies from 5 to 120 ms, a
/// request id to look up — then the Analytics page (cards, charts, breakdowns, a filter), the
/// request log (a search by request id, the record's page) and the key's own page.
async fn analytics_pages(c: &Client, dashboard: &str, gateway_url: &str, key: &str) {
    let client = reqwest::Client::new();
    let base = format!("{gateway_url}/acme-widgets/echo");
    let mut calls = Vec::new();
    for i in 0..60u64 {
        let url = match i % 10 {
            0..=5 => format!("{base}/slow/{}", 5 + i * 2),
            6 => format!("{base}/status/503"),
            7 => format!("{base}/status/404"),
            _ => format!("{base}/items?page={i}"),
        };
        let req = client
            .get(url)
            .header("x-request-id", format!("ticket-{i}"));
        // Every tenth request without its key: refused with 401.
        let req = if i % 10 == 9 {
            req
        } else {
            req.header("X-API-Key", key)
        };
        calls.push(tokio::spawn(req.send()));
    }
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
    // The data plane writes records and counts about every second.
    c.goto(&format!("{dashboard}/analytics?range=1h"))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let n = c
            .find(Locator::Id("stat-requests"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if n.parse::<i64>().unwrap_or(0) >= 60 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "analytics show {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.refresh().await.unwrap();
    }
    wait_for_text(c, "Requests by status").await;
    wait_for_text(c, "No valid key (refused)").await;
    assert_tables_tidy(c, "analytics").await;
    shot_full(c, "19-analytics").await;
    // Narrowed to the key from the breakdown: the refused requests without a key are not its.
    c.find(Locator::Css("#by-key tbody a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Analytics · key mobile app").await;
    assert!(!c.source().await.unwrap().contains("No valid key (refused)"));

    c.goto(&format!("{dashboard}/logs")).await.unwrap();
    wait_for_text(c, "ticket-").await;
    assert_tables_tidy(c, "logs").await;
    shot_full(c, "20-logs").await;
    // A request id from a support ticket finds its record in one search.
    fill(c, "input[name=request_id]", "ticket-6").await;
    submit(c).await;
    // The unfiltered page shows the same text: wait for the search's own page.
    wait_for_url(c, "request_id=ticket-6").await;
    wait_for_text(c, "/acme-widgets/echo/status/503").await;
    let rows = c.find_all(Locator::Css("#logs tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1);
    c.find(Locator::LinkText("ticket-6"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Upstream latency").await;
    wait_for_text(c, "upstream_error").await;
    shot_full(c, "21-log-record").await;
    // Only 5xx.
    c.goto(&format!("{dashboard}/logs?status=5xx"))
        .await
        .unwrap();
    let rows = c.find_all(Locator::Css("#logs tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 6, "the six 503s");

    // The key's own page, from the keys list (the row of this key, not of its revoked
    // replacement of the same name).
    c.goto(&format!("{dashboard}/keys")).await.unwrap();
    c.find(Locator::XPath(&format!(
        "//tr[.//code[starts-with(text(), '{}')]]//a[text()='mobile app']",
        &key[..16]
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_for_text(c, "Plan windows").await;
    wait_for_text(c, &format!("{}…", &key[..16])).await;
    wait_for_text(c, "This month").await;
    assert_tables_tidy(c, "key page").await;
    shot_full(c, "22-key").await;
}

/// The API's routes: one added (then the gateway answers 404 for other paths), a form with
/// mistakes, and the "test a path" box.
async fn routes_pages(c: &Client, dashboard: &str, gateway_url: &str, key: &str) {
    c.goto(&format!("{dashboard}/apis")).await.unwrap();
    c.find(Locator::LinkText("Routes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Routes of Echo").await;
    c.find(Locator::LinkText("Add route"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(c, "input[name=path]", "hello").await;
    fill(c, "input[name=priority]", "high").await;
    fill(c, "input[name=rl_burst]", "3").await;
    c.find(Locator::Css("input[name=m_GET]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit(c).await;
    wait_for_text(c, "Path must start with /").await;
    wait_for_text(c, "Priority must be a whole number.").await;
    wait_for_text(c, "Route limit per minute is required with a rate limit").await;
    shot(c, "16-route-form-errors").await;
    fill(c, "input[name=path]", "/hello").await;
    fill(c, "input[name=priority]", "5").await;
    fill(c, "input[name=timeout_ms]", "2500").await;
    fill(c, "input[name=rl_requests_per_minute]", "10").await;
    fill(c, "input[name=cost]", "2").await;
    c.execute(
        "document.querySelector('fieldset.route-limit').scrollIntoView()",
        vec![],
    )
    .await
    .unwrap();
    shot(c, "16b-route-form-limit").await;
    submit(c).await;
    wait_for_text(c, "Route /hello saved.").await;
    wait_for_text(c, "2500 ms").await;
    wait_for_text(c, "10/min, burst 3").await;
    // The box says what the gateway will do, and the gateway does it.
    fill(c, "form.probe input[name=path]", "/hello/x?y=1").await;
    c.execute(
        "document.querySelector('form.probe select').value = 'POST'",
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css("form.probe button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(
        c,
        "405 method_not_allowed: routes match this path with GET, HEAD only.",
    )
    .await;
    assert_tables_tidy(c, "routes").await;
    shot(c, "15-routes").await;
    call_until(key, &format!("{gateway_url}/acme-widgets/echo/other"), 404).await;
    call_until(
        key,
        &format!("{gateway_url}/acme-widgets/echo/hello/x"),
        200,
    )
    .await;
}

/// Reloads `url` until its page shows `text` (what a data plane reports every few seconds).
async fn reload_until(c: &Client, url: &str, text: &str) {
    let started = Instant::now();
    loop {
        c.goto(url).await.unwrap();
        if c.source().await.unwrap().contains(text) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{url} never showed {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The API's targets: its live state as the data plane reports it, a second target (after a
/// form with mistakes), the health check switched on, and a circuit reset.
async fn targets_page(c: &Client, dashboard: &str, upstream: std::net::SocketAddr) {
    c.goto(&format!("{dashboard}/apis")).await.unwrap();
    c.find(Locator::LinkText("Targets"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Targets of Echo").await;
    let page = c.current_url().await.unwrap().to_string();
    reload_until(c, &page, "badge ok\">up").await;
    fill(c, "input[name=url]", "ftp://nowhere").await;
    fill(c, "input[name=weight]", "two").await;
    submit(c).await;
    wait_for_text(c, "URL must start with http:// or https://").await;
    wait_for_text(c, "Weight must be a whole number.").await;
    fill(c, "input[name=url]", &format!("http://{upstream}/")).await;
    fill(c, "input[name=weight]", "2").await;
    submit(c).await;
    wait_for_text(c, "added.").await;
    c.find(Locator::Css("input[name=hc_enabled]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(c, "input[name=hc_path]", "/probe").await;
    fill(c, "input[name=hc_interval_ms]", "300").await;
    fill(c, "input[name=hc_timeout_ms]", "200").await;
    fill(c, "input[name=cb_failure_threshold]", "3").await;
    c.find(Locator::Css("form[action$='/resilience'] button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Retries, health check and circuit breaker saved.").await;
    // Both targets checked and up, each with its last check's latency.
    reload_until(c, &page, " ms</div>").await;
    let source = c.source().await.unwrap();
    assert_eq!(
        source.matches("badge ok\">up").count(),
        2,
        "both targets up"
    );
    assert_tables_tidy(c, "targets").await;
    shot(c, "17-targets").await;
    c.find(Locator::Css("form[action$='/reset'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "is closed again on every data plane").await;
    c.find(Locator::LinkText("Edit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Edit target").await;
    shot(c, "18-target-form").await;
}

/// Tokens: a lifetime with a mistake then a good one, the first signing key, the API set to take
/// tokens, a token minted and used, the key rotated, and the old token checked (still valid).
/// The Webhooks page: a wrong form, an endpoint added, and a recorded event's delivery listed.
async fn webhooks_page(c: &Client, dashboard: &str, db: &TestDb) {
    c.goto(&format!("{dashboard}/webhooks")).await.unwrap();
    fill(c, "input[name=url]", "ftp://nowhere").await;
    submit(c).await;
    wait_for_text(c, "URL").await;
    wait_for_text(c, "field-error").await;
    fill(c, "input[name=url]", "https://hooks.example.com/gateway").await;
    click(c, "input[name=ev_quota_warning]").await;
    submit(c).await;
    wait_for_text(c, "shown only now").await;
    // An event as a data plane records it: the control plane fans it out to the endpoint.
    let tenant = domain::store::list_tenants(&db.db)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.slug == "acme-widgets")
        .unwrap();
    let alert = domain::limits::QuotaAlert {
        subject: domain::limits::Subject::Key {
            tenant_id: tenant.id,
            key_id: 1,
        },
        alert: domain::limits::Alert {
            kind: domain::limits::AlertKind::Exhausted,
            level: domain::limits::Level::Plan,
            window: domain::limits::Window::Day,
            period: 20_261_207,
            limit: 1_000,
            used: 1_000,
        },
    };
    let event = domain::webhook::NewEvent::of_alert(&alert).unwrap();
    domain::store::record_events(&db.db, std::slice::from_ref(&event))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        c.goto(&format!("{dashboard}/webhooks")).await.unwrap();
        if c.source().await.unwrap().contains(&event.event_id) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no delivery listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_tables_tidy(c, "webhooks").await;
    shot_full(c, "26-webhooks").await;
}

async fn tokens_page(c: &Client, dashboard: &str, gateway_url: &str, key: &str) {
    c.goto(&format!("{dashboard}/tokens")).await.unwrap();
    wait_for_text(c, "No signing key yet").await;
    let save = "form[action='/tokens/settings'] button";
    fill(c, "input[name=lifetime_minutes]", "0").await;
    click(c, save).await;
    wait_for_text(c, "Tokens live 1 to 1440 minutes").await;
    fill(c, "input[name=lifetime_minutes]", "30").await;
    click(c, save).await;
    wait_for_text(c, "live 30 minutes").await;
    let rotate = "form[action='/tokens/rotate'] button";
    click(c, rotate).await;
    wait_for_text(c, "tokens can be minted now").await;

    // The API takes keys or tokens.
    c.goto(&format!("{dashboard}/apis")).await.unwrap();
    c.find(Locator::LinkText("Edit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click(c, "select[name=auth] option[value=key_or_token]").await;
    submit(c).await;
    wait_for_text(c, "/acme-widgets/echo/").await;

    let minted: serde_json::Value = reqwest::Client::new()
        .post(format!("{gateway_url}/_gateway/token"))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().expect("a token").to_owned();
    assert_eq!(minted["expires_in"], 1800, "the lifetime set above");
    let bearer = format!("Bearer {token}");
    let endpoint = format!("{gateway_url}/acme-widgets/echo/hello");
    call_with_until(("Authorization", &bearer), &endpoint, 200).await;

    c.goto(&format!("{dashboard}/tokens")).await.unwrap();
    click(c, rotate).await;
    wait_for_text(c, "The previous key still verifies").await;
    fill(c, "textarea[name=token]", &token).await;
    click(c, "form[action='/tokens/check'] button").await;
    wait_for_text(c, "badge ok\">valid").await;
    wait_for_text(c, "\"tenant\": \"acme-widgets\"").await;
    assert_eq!(
        c.source()
            .await
            .unwrap()
            .matches("badge off\">retired")
            .count(),
        1,
        "the first key, retired"
    );
    assert_tables_tidy(c, "tokens").await;
    shot_full(c, "23-tokens").await;
}

/// The key the key-created page shows (once).
async fn shown_key(c: &Client) -> String {
    c.wait()
        .for_element(Locator::Id("new-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn slug_valid(c: &Client) -> serde_json::Value {
    c.execute(
        "return document.querySelector('input[name=slug]').checkValidity();",
        vec![],
    )
    .await
    .unwrap()
}

/// Rotates the key from the keys list (a day of grace), checks the list says which key replaced
/// which, then revokes the replacement; returns the replacement key.
async fn rotate_then_revoke_the_replacement(c: &Client, old: &str) -> String {
    c.find(Locator::Css("#keys td.actions a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Rotate key").await;
    c.find(Locator::Css("select[name=grace_hours]"))
        .await
        .unwrap()
        .select_by_value("24")
        .await
        .unwrap();
    submit(c).await;
    let new_key = shown_key(c).await;
    assert_ne!(new_key, old);
    c.find(Locator::LinkText("Back to keys"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, &format!("replaced by {}…", &new_key[..16])).await;
    wait_for_text(c, &format!("replaces {}…", &old[..16])).await;
    wait_for_text(c, "grace until").await;
    assert_tables_tidy(c, "keys after a rotation").await;
    shot(c, "09-keys-rotated").await;
    // The newest row is the replacement.
    c.find(Locator::Css("#keys tbody tr:first-child button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    wait_for_text(c, "revoked").await;
    shot(c, "09b-key-revoked").await;
    new_key
}

/// Logs the browser out, in as a new platform admin, and shoots the admin's tenant list (with
/// its upstream trust switch) and a tenant's ceiling form.
async fn admin_pages(c: &Client, db: &TestDb) {
    // A platform admin's tenant list, with its trust switch.
    control_plane::admin_cli::run(
        &Settings::for_tests(db.url.clone()),
        control_plane::admin_cli::CreateAdmin {
            username: "root".into(),
            email: "root@example.com".into(),
            password: Some("granite-lantern-sparrow-81".into()),
        },
    )
    .await
    .unwrap();
    c.find(Locator::Css("header form button.link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(c, "Log in").await;
    fill(c, "input[name=username]", "root").await;
    fill(c, "input[name=password]", "granite-lantern-sparrow-81").await;
    submit(c).await;
    wait_for_text(c, "acme-widgets").await;
    shot(c, "13-admin-tenants").await;
    // The tenant's ceiling: the form, a wrong field, then saved and shown in the list.
    click(c, "td.actions a[href$='/limits']").await;
    wait_for_text(c, "Ceiling of acme-widgets").await;
    fill(c, "input[name=burst]", "50").await;
    submit(c).await;
    wait_for_text(c, "Burst needs requests_per_minute").await;
    shot(c, "24-admin-ceiling").await;
    fill(c, "input[name=requests_per_minute]", "600").await;
    fill(c, "input[name=requests_per_day]", "100000").await;
    submit(c).await;
    wait_for_text(c, "now has a ceiling of 600/min (burst 50) · 100000/day").await;
    shot(c, "25-admin-tenants-ceiling").await;
    assert_tables_tidy(c, "the admin's tenant list with a ceiling").await;
}

/// Both planes on one database: a request of each kind through the data plane is in the control
/// plane's `/api/v1/logs` within 3 seconds, with the status and error type it was answered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // sign-up, a plan, three APIs and two keys; then each answer
async fn every_kind_of_answer_is_in_the_management_apis_log_within_three_seconds() {
    use serde_json::{Value, json};
    let (dashboard, gateway_url, upstream, _db) = start_gateway().await;
    let http = reqwest::Client::new();
    let signed_up: Value = http
        .post(format!("{dashboard}/api/v1/signup"))
        .json(&json!({"username": "olga", "email": "olga@example.com",
            "password": "tangerine-orbit-42", "tenant_name": "Erin Co", "tenant_slug": "erin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_up["token"]
        .as_str()
        .unwrap_or_else(|| panic!("signed up: {signed_up}"))
        .to_owned();
    let post = |path: &str, body: Value| {
        http.post(format!("{dashboard}/api/v1{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let plan = post("/plans", json!({"name": "Pro", "requests_per_minute": 600}))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .clone();
    let tight = post(
        "/plans",
        json!({"name": "Tight", "requests_per_minute": 1, "burst": 1}),
    )
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap()["id"]
        .clone();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (slug, url, timeout_ms) in [
        ("echo", format!("http://{upstream}"), 30_000),
        ("slow", format!("http://{upstream}"), 200),
        ("dead", format!("http://{closed}"), 30_000),
    ] {
        let r = post(
            "/apis",
            json!({"name": slug, "slug": slug, "upstream_url": url, "timeout_ms": timeout_ms}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let key = |plan: Value| {
        let post = &post;
        async move {
            post("/keys", json!({"name": "k", "plan_id": plan}))
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (key, tight_key) = (key(plan).await, key(tight).await);
    call_until(&key, &format!("{gateway_url}/erin/echo/ready"), 200).await;

    let base = format!("{gateway_url}/erin");
    let cases = [
        (
            "e2e-200",
            format!("{base}/echo/hello"),
            Some(key.as_str()),
            200,
            None,
        ),
        (
            "e2e-401",
            format!("{base}/echo/hello"),
            None,
            401,
            Some("missing_api_key"),
        ),
        (
            "e2e-403",
            format!("{base}/echo/hello"),
            Some("gw_live_0"),
            403,
            Some("invalid_api_key"),
        ),
        (
            "e2e-404",
            format!("{base}/nope/x"),
            Some(key.as_str()),
            404,
            Some("not_found"),
        ),
        (
            "e2e-502",
            format!("{base}/dead/x"),
            Some(key.as_str()),
            502,
            Some("upstream_unreachable"),
        ),
        (
            "e2e-504",
            format!("{base}/slow/slow/1000"),
            Some(key.as_str()),
            504,
            Some("upstream_timeout"),
        ),
        (
            "e2e-first",
            format!("{base}/echo/a"),
            Some(tight_key.as_str()),
            200,
            None,
        ),
        (
            "e2e-429",
            format!("{base}/echo/b"),
            Some(tight_key.as_str()),
            429,
            Some("rate_limited"),
        ),
    ];
    for (rid, url, key, status, _) in &cases {
        let mut req = http.get(url).header("x-request-id", *rid);
        if let Some(k) = key {
            req = req.header("X-API-Key", *k);
        }
        assert_eq!(req.send().await.unwrap().status(), *status, "{rid}");
    }
    let answered = Instant::now();
    for (rid, _, _, status, kind) in &cases {
        loop {
            let r = http
                .get(format!("{dashboard}/api/v1/logs/{rid}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                let rec: Value = r.json().await.unwrap();
                assert_eq!(rec["status"], *status, "{rec}");
                assert_eq!(rec["error_type"].as_str(), *kind, "{rec}");
                break;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(3),
                "{rid} not in the log 3 s after its answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let page: Value = http
        .get(format!("{dashboard}/api/v1/logs?status=5xx"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e2e-504", "e2e-502"], "newest first");
}
