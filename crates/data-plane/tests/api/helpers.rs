//! Test environment: a real upstream, a fresh database with a tenant, plan, API and key, and a data
//! plane on 127.0.0.1:0 in this process (or as a child process, see `process.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use data_plane::config::ProxySettings;
use data_plane::gateway::Gateway;
use data_plane::startup::ShutdownHandle;
use data_plane::{Application, DataPlaneSettings};
use domain::clock::ManualClock;
use domain::entities::{api, plan, tenant};
use domain::header::{KeyHeader, UpstreamTimeout};
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, IntoActiveModel};
use domain::settings::Settings;
use domain::slug::Slug;
use domain::store::{self, NewApi};
use domain::testing::{TestDb, redis_url, unique_name};
use domain::upstream::UpstreamUrl;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::upstream::{Upstream, spawn_upstream};

pub struct Fixture {
    pub tenant: tenant::Model,
    pub plan: plan::Model,
    pub api: api::Model,
    pub key: String,
    pub key_id: i64,
}

impl Fixture {
    /// `/{tenant}/{api}{rest}`
    pub fn path(&self, rest: &str) -> String {
        format!("/{}/{}{rest}", self.tenant.slug, self.api.slug)
    }
}

pub fn limits(rpm: i64, burst: Option<i64>, day: Option<i64>, month: Option<i64>) -> PlanLimits {
    PlanLimits::new(rpm, burst, day, month).unwrap()
}

/// Limits no test reaches.
pub fn generous() -> PlanLimits {
    limits(1_000_000, None, None, None)
}

/// A tenant `slug` with a plan, an API `svc` forwarding to `upstream`, and a key.
pub async fn seed(db: &DatabaseConnection, slug: &str, upstream: &str, l: PlanLimits) -> Fixture {
    seed_with(db, slug, upstream, l, Enforcement::Strict).await
}

pub async fn seed_with(
    db: &DatabaseConnection,
    slug: &str,
    upstream: &str,
    l: PlanLimits,
    mode: Enforcement,
) -> Fixture {
    let owner = store::create_user(db, slug, &format!("{slug}@example.com"), "x", false)
        .await
        .unwrap();
    let tenant = store::create_tenant(db, slug, &Slug::parse(slug).unwrap(), owner.id)
        .await
        .unwrap();
    let plan = store::create_plan(db, tenant.id, "plan", l, mode)
        .await
        .unwrap();
    let api = store::create_api(
        db,
        tenant.id,
        NewApi {
            name: "Service".into(),
            slug: Slug::parse("svc").unwrap(),
            upstream_url: UpstreamUrl::parse(upstream).unwrap(),
            key_header: KeyHeader::default(),
            timeout: UpstreamTimeout::default(),
            pass_encoded_slashes: false,
            log_query: false,
            auth: domain::jwt::ApiAuth::Key,
            identity_token: false,
            upstream_protocol: domain::header::UpstreamProtocol::default(),
            websocket_idle: domain::header::WebsocketIdle::default(),
        },
    )
    .await
    .unwrap();
    let (key, raw) = store::create_api_key(db, tenant.id, plan.id, "test key", None)
        .await
        .unwrap();
    Fixture {
        tenant,
        plan,
        api,
        key: raw.expose().to_owned(),
        key_id: key.id,
    }
}

/// An API `slug` of tenant `tenant_id` forwarding to `url` within `timeout_ms`: its id.
pub async fn add_api(
    db: &DatabaseConnection,
    tenant_id: i64,
    slug: &str,
    url: &str,
    timeout_ms: i64,
    log_query: bool,
) -> i64 {
    store::create_api(
        db,
        tenant_id,
        NewApi {
            name: slug.into(),
            slug: Slug::parse(slug).unwrap(),
            upstream_url: UpstreamUrl::parse(url).unwrap(),
            key_header: KeyHeader::default(),
            timeout: UpstreamTimeout::from_millis(timeout_ms).unwrap(),
            pass_encoded_slashes: false,
            log_query,
            auth: domain::jwt::ApiAuth::Key,
            identity_token: false,
            upstream_protocol: domain::header::UpstreamProtocol::default(),
            websocket_idle: domain::header::WebsocketIdle::default(),
        },
    )
    .await
    .unwrap()
    .id
}

/// A metric's value on the `/metrics` page of the data plane at `base` (panics when absent).
pub async fn metric_at(client: &reqwest::Client, base: &str, name: &str) -> i64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|v| v.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

/// The Redis URL and a fresh key prefix when `TEST_REDIS_URL` is set.
pub fn redis() -> Option<(String, String)> {
    redis_url().map(|u| (u, unique_name("gwtest")))
}

pub struct TestGateway {
    pub address: String,
    /// Where HTTPS is served, when the settings name a certificate.
    pub tls_addr: Option<std::net::SocketAddr>,
    pub client: reqwest::Client,
    pub shutdown: ShutdownHandle,
    pub gateway: Arc<Gateway>,
    pub done: JoinHandle<anyhow::Result<()>>,
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
    }

    /// Reloads the snapshot now (tests that are not about reloading).
    pub async fn reload(&self) {
        data_plane::reload::reload(&self.gateway).await.unwrap();
    }

    /// Stops gracefully and waits until the last usage flush is done.
    pub async fn stop(self) {
        self.shutdown.shutdown();
        self.done.await.unwrap().unwrap();
    }
}

pub fn settings_for(db_url: &str, redis: Option<&(String, String)>) -> DataPlaneSettings {
    let mut shared = Settings::for_tests(db_url);
    if let Some((url, prefix)) = redis {
        shared.redis_url = Some(url.clone());
        shared.redis_prefix.clone_from(prefix);
    }
    // Generous Redis timeout: a loaded CI machine must not look like a Redis outage.
    let proxy = ProxySettings {
        redis_timeout_ms: 2_000,
        ..ProxySettings::default()
    };
    DataPlaneSettings {
        shared,
        listen: DataPlaneSettings::for_tests(db_url).listen,
        proxy,
    }
}

pub async fn spawn_gateway(settings: DataPlaneSettings, clock: Option<ManualClock>) -> TestGateway {
    let app = match clock {
        Some(c) => Application::build_with_clock(settings, Arc::new(c)).await,
        None => Application::build(settings).await,
    }
    .expect("build data plane");
    let address = format!("http://{}", app.local_addr());
    let tls_addr = app.tls_addr();
    let shutdown = app.shutdown_handle();
    let gateway = app.gateway();
    let done = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestGateway {
        address,
        tls_addr,
        client,
        shutdown,
        gateway,
        done,
    }
}

/// The usual set-up: upstream, database, fixture and gateway.
pub struct TestEnv {
    pub upstream: Upstream,
    pub db: TestDb,
    pub fx: Fixture,
    pub gw: TestGateway,
    pub clock: ManualClock,
    pub redis: Option<(String, String)>,
}

pub struct EnvOptions {
    pub limits: PlanLimits,
    pub redis: bool,
    pub proxy: Option<ProxySettings>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            limits: generous(),
            redis: false,
            proxy: None,
        }
    }
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(EnvOptions::default()).await
    }

    pub async fn with(opts: EnvOptions) -> Self {
        let upstream = spawn_upstream().await;
        let db = TestDb::sqlite().await;
        let fx = seed(&db.db, "acme", &upstream.url("/base"), opts.limits).await;
        let redis = if opts.redis { redis() } else { None };
        let mut settings = settings_for(&db.url, redis.as_ref());
        if let Some(proxy) = opts.proxy {
            settings.proxy = proxy;
        }
        let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap());
        let gw = spawn_gateway(settings, Some(clock.clone())).await;
        Self {
            upstream,
            db,
            fx,
            gw,
            clock,
            redis,
        }
    }

    pub async fn get(&self, rest: &str) -> reqwest::Response {
        self.gw.get(&self.fx.path(rest), &self.fx.key).await
    }

    /// Points the fixture's API at another upstream URL and timeout, and reloads.
    pub async fn point_api_at(&self, url: String, timeout_ms: i32) {
        let mut a = self.fx.api.clone().into_active_model();
        a.upstream_url = Set(url.clone());
        a.timeout_ms = Set(timeout_ms);
        let _: api::Model = a.update(&self.db.db).await.unwrap();
        point_targets_at(&self.db.db, self.fx.api.id, &url).await;
        self.gw.reload().await;
    }
}

/// Points every target of API `api_id` at `url` (a fixture's API has one: its upstream URL).
pub async fn point_targets_at(db: &DatabaseConnection, api_id: i64, url: &str) {
    use domain::entities::api_target;
    use domain::sea_orm::sea_query::Expr;
    use domain::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    api_target::Entity::update_many()
        .col_expr(api_target::Column::Url, Expr::value(url.to_owned()))
        .filter(api_target::Column::ApiId.eq(api_id))
        .exec(db)
        .await
        .unwrap();
}

/// One answer read off a raw connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads answers off `s` (interim 1xx ones skipped) until `want` have arrived or the gateway
/// closes the connection.
pub async fn read_answers(s: &mut TcpStream, want: usize) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answers.len() < want {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut storage);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse::<usize>().unwrap());
            let status = resp.code.unwrap();
            if (100..200).contains(&status) {
                buf.drain(..n);
                continue;
            }
            if let Some(len) = len
                && buf.len() >= n + len
            {
                answers.push(Answer {
                    status,
                    headers,
                    body: buf[n..n + len].to_vec(),
                });
                buf.drain(..n + len);
                continue;
            }
        }
        let mut chunk = vec![0u8; 16 * 1024];
        let read = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("the gateway neither answered nor closed");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    answers
}

/// Waits until the data plane at `base` reports Redis up and its limiter deciding through it
/// again (`/health/ready`), failing after `within`.
pub async fn until_deciding_on_redis(client: &reqwest::Client, base: &str, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let body: serde_json::Value = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["redis"] == "up" && body["limiter"] == "redis" {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{base} did not decide through Redis again within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
