//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver) signs
//! up, creates an API, a plan and a key, reads the key off the page, calls the running data plane
//! with it (200), revokes it (403). A screenshot of each page lands in `target/screenshots/`.

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

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn fill(c: &Client, css: &str, value: &str) {
    let el = c.wait().for_element(Locator::Css(css)).await.unwrap();
    el.clear().await.unwrap();
    el.send_keys(value).await.unwrap();
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
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let status = client
            .get(url)
            .header("X-API-Key", key)
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
        dashboard: DashboardSettings {
            public_url: gateway_url.clone(),
            ..DashboardSettings::default()
        },
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
    fill(&c, "input[name=slug]", "echo").await;
    fill(
        &c,
        "input[name=upstream_url]",
        &format!("http://{upstream}"),
    )
    .await;
    shot(&c, "03-api-form").await;
    submit(&c).await;
    wait_for_text(&c, "/acme-widgets/echo/").await;
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
    let key = c
        .wait()
        .for_element(Locator::Id("new-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.starts_with("gw_live_") && key.len() == 72, "{key}");
    shot(&c, "07-key-created").await;

    let endpoint = format!("{gateway_url}/acme-widgets/echo/hello");
    call_until(&key, &endpoint, 200).await;

    c.goto(&format!("{dashboard}/keys")).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(!page.contains(&key), "the list never shows the key again");
    shot(&c, "08-keys").await;
    c.find(Locator::Css("#keys button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    wait_for_text(&c, "revoked").await;
    shot(&c, "09-key-revoked").await;
    call_until(&key, &endpoint, 403).await;

    c.goto(&format!("{dashboard}/clients/new")).await.unwrap();
    shot(&c, "10-client-form").await;
    c.goto(&format!("{dashboard}/dashboard")).await.unwrap();
    wait_for_text(&c, "Top keys this month").await;
    shot(&c, "11-overview").await;

    c.goto(&format!("{dashboard}/account/password"))
        .await
        .unwrap();
    wait_for_text(&c, "Change your password").await;
    shot(&c, "12-account-password").await;

    admin_pages(&c, &db).await;
    c.close().await.unwrap();
}

/// Logs the browser out, in as a new platform admin, and shoots the admin's tenant list (with
/// its upstream trust switch).
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
}
