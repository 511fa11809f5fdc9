//! `spawn_app`: a control plane on its own fresh database and port for each test, and a browser-
//! like client (cookies kept, redirects not followed) that fills CSRF tokens in like a page does.

use std::sync::Arc;

use control_plane::{Application, ControlPlaneSettings};
use domain::testing::TestDb;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    pub fn csrf(&self) -> Option<String> {
        let at =
            self.body.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
        Some(self.body[at..].split('"').next()?.to_owned())
    }

    #[track_caller]
    pub fn assert_contains(&self, needle: &str) {
        assert!(
            self.body.contains(needle),
            "expected {needle:?} in page ({}):\n{}",
            self.status,
            self.body
        );
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn spawn_app_with(db: TestDb, tweak: impl FnOnce(&mut ControlPlaneSettings)) -> TestApp {
    let mut settings = ControlPlaneSettings::for_tests(&db.url);
    tweak(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("build control plane");
    let address = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: client(),
        db: Arc::new(db),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestDb::sqlite().await, |_| {}).await
}

/// One app per configured backend: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.
pub async fn spawn_apps() -> Vec<TestApp> {
    let mut apps = Vec::new();
    for db in TestDb::all().await {
        apps.push(spawn_app_with(db, |_| {}).await);
    }
    apps
}

pub const PASSWORD: &str = "correct-horse-42";

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Another browser on the same app (its own cookies).
    pub fn other_browser(&self) -> Self {
        Self {
            address: self.address.clone(),
            client: client(),
            db: self.db.clone(),
        }
    }

    async fn page(resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        Page {
            status,
            location,
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        Self::page(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    /// Posts a form as-is (no token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        Self::page(
            self.client
                .post(self.url(path))
                .form(fields)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Posts a form with the session's CSRF token, read off `from` like a browser would.
    pub async fn post(&self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let token = self
            .get(from)
            .await
            .csrf()
            .unwrap_or_else(|| panic!("no CSRF token on {from}"));
        let mut all = vec![("csrf_token", token.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    pub async fn register(&self, username: &str, tenant: &str) -> Page {
        let email = format!("{username}@example.com");
        self.post(
            "/register",
            "/register",
            &[
                ("username", username),
                ("email", &email),
                ("tenant_name", tenant),
                ("tenant_slug", ""),
                ("password", PASSWORD),
                ("confirm_password", PASSWORD),
            ],
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Page {
        self.post(
            "/login",
            "/login",
            &[("username", username), ("password", password)],
        )
        .await
    }

    /// Creates a plan through the dashboard; returns its id.
    pub async fn create_plan(&self, name: &str, rpm: &str) -> i64 {
        let p = self
            .post(
                "/plans/new",
                "/plans",
                &[
                    ("name", name),
                    ("requests_per_minute", rpm),
                    ("burst", ""),
                    ("requests_per_day", ""),
                    ("requests_per_month", "1000"),
                    ("enforcement", "strict"),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        last_id(&self.get("/plans").await.body, "/plans/", "/edit")
    }

    pub async fn create_api(&self, name: &str, slug: &str, upstream: &str) -> i64 {
        let p = self
            .post(
                "/apis/new",
                "/apis",
                &[
                    ("name", name),
                    ("slug", slug),
                    ("upstream_url", upstream),
                    ("key_header", "X-API-Key"),
                    ("timeout_ms", "5000"),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
        last_id(&self.get("/apis").await.body, "/apis/", "/edit")
    }

    /// Creates a key and returns (id, raw key read off the page).
    pub async fn create_key(&self, name: &str, plan_id: i64) -> (i64, String) {
        let p = self
            .post(
                "/keys/new",
                "/keys",
                &[
                    ("name", name),
                    ("plan_id", &plan_id.to_string()),
                    ("expires_on", ""),
                ],
            )
            .await;
        assert_eq!(p.status, 200, "{}", p.body);
        let raw = between(&p.body, "<code id=\"new-key\">", "</code>");
        let id = last_id(&self.get("/keys").await.body, "/keys/", "/rotate");
        (id, raw)
    }
}

pub fn between(body: &str, start: &str, end: &str) -> String {
    let at = body
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in {body}"))
        + start.len();
    body[at..].split(end).next().unwrap().to_owned()
}

/// The largest id in links like `{prefix}{id}{suffix}`.
pub fn last_id(body: &str, prefix: &str, suffix: &str) -> i64 {
    body.match_indices(prefix)
        .filter_map(|(i, _)| {
            let rest = &body[i + prefix.len()..];
            let end = rest.find(suffix)?;
            rest[..end].parse::<i64>().ok()
        })
        .max()
        .unwrap_or_else(|| panic!("no {prefix}<id>{suffix} link in {body}"))
}
