//! The demo: a tiny local upstream so the printed `curl` works offline, and a demo tenant with an
//! API, a plan and a key created on an empty database.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use domain::header::{KeyHeader, UpstreamTimeout};
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use domain::slug::Slug;
use domain::store::{self, NewApi};
use domain::upstream::UpstreamUrl;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tokio::net::TcpListener;

pub const DEMO_USER: &str = "demo";
pub const DEMO_TENANT_SLUG: &str = "demo";
pub const DEMO_API_SLUG: &str = "echo";

/// Longest `/slow/{ms}` the demo upstream sleeps.
const MAX_DEMO_SLEEP_MS: u64 = 5_000;

/// Echoes the request as JSON; `…/slow/{ms}` answers after sleeping that long (at most 5 s) and
/// `…/status/{code}` answers with that status: something to watch in the analytics.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut segments = req.uri().path().rsplit('/');
    let (last, before) = (segments.next(), segments.next());
    let mut status = http::StatusCode::OK;
    match (before, last.and_then(|l| l.parse::<u64>().ok())) {
        (Some("slow"), Some(ms)) => {
            tokio::time::sleep(std::time::Duration::from_millis(ms.min(MAX_DEMO_SLEEP_MS))).await;
        }
        (Some("status"), Some(code)) => {
            status = u16::try_from(code)
                .ok()
                .and_then(|c| http::StatusCode::from_u16(c).ok())
                .filter(|c| c.as_u16() >= 200)
                .unwrap_or(http::StatusCode::BAD_REQUEST);
        }
        _ => {}
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().into()))
        .collect();
    let body = serde_json::json!({
        "message": "Hello from the demo upstream, through Gateway.",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
        "time": chrono::Utc::now().to_rfc3339(),
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Starts the demo upstream; returns the address it listens on.
pub async fn spawn_upstream(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
    Ok(local)
}

/// What the first start created, to print.
pub struct Demo {
    pub password: String,
    pub key: String,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// On an empty database (no users), creates the demo account, tenant, API, plan and key; the API
/// takes keys or tokens, and with a token key (`secret`) the tenant gets its signing key.
pub async fn seed_if_empty(
    db: &DatabaseConnection,
    upstream: SocketAddr,
    secret: Option<&domain::jwt::TokenSecret>,
) -> anyhow::Result<Option<Demo>> {
    if domain::entities::user::Entity::find().count(db).await? > 0 {
        return Ok(None);
    }
    let password = format!("demo-{}", random_hex(6));
    let hash = domain::password::hash_password(&password)?;
    let user =
        store::create_user(db, DEMO_USER, "demo@localhost.localdomain", &hash, false).await?;
    let tenant = store::create_tenant(db, "Demo", &Slug::parse(DEMO_TENANT_SLUG)?, user.id).await?;
    let limits = PlanLimits::new(60, Some(20), Some(10_000), None)?;
    let plan = store::create_plan(db, tenant.id, "Demo plan", limits, Enforcement::Strict).await?;
    store::create_api(
        db,
        tenant.id,
        NewApi {
            name: "Echo (demo upstream)".into(),
            slug: Slug::parse(DEMO_API_SLUG)?,
            upstream_url: UpstreamUrl::parse(&format!("http://{upstream}"))?,
            key_header: KeyHeader::default(),
            timeout: UpstreamTimeout::default(),
            pass_encoded_slashes: false,
            log_query: false,
            auth: domain::jwt::ApiAuth::KeyOrToken,
            identity_token: false,
            upstream_protocol: domain::header::UpstreamProtocol::default(),
            websocket_idle: domain::header::WebsocketIdle::default(),
        },
    )
    .await?;
    if let Some(secret) = secret {
        store::ensure_signing_key(db, secret, tenant.id).await?;
    }
    let (_, key) = store::create_api_key(db, tenant.id, plan.id, "demo key", None).await?;
    Ok(Some(Demo {
        password,
        key: key.expose().to_owned(),
    }))
}
