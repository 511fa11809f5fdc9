//! Building the actix application: bind the listener first (port 0 in tests), then serve.

use std::net::{SocketAddr, TcpListener};

use actix_session::SessionMiddleware;
use actix_session::config::PersistentSession;
use actix_session::storage::CookieSessionStore;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, ErrorHandlers, Logger};
use actix_web::{App, HttpServer, web};
use domain::clock::SystemClock;
use domain::events::Publisher;
use domain::limits::redis::{RedisStore, checked_pool};
use domain::limits::{Limiter, LimiterSettings};
use domain::store::ConfigWriter;

use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::api;
use crate::config::ControlPlaneSettings;
use crate::pages;
use crate::routes;
use crate::state::AppState;

/// Largest form or JSON body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Where the generated OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

pub struct Application {
    addr: SocketAddr,
    server: Server,
    /// Sends the tenants' webhook deliveries while the server runs.
    deliverer: crate::webhooks::Deliverer,
    /// The HTTPS certificate, when TLS is configured (reloaded while the server runs).
    certificates: Option<std::sync::Arc<domain::tls::Certificates>>,
}

/// The cookie key from `GATEWAY_SECRET_KEY` (at least 32 bytes), or a random one with a warning.
pub fn session_key(secret: Option<&str>) -> anyhow::Result<Key> {
    match secret {
        Some(s) if s.len() >= 32 => Ok(Key::derive_from(s.as_bytes())),
        Some(_) => anyhow::bail!("GATEWAY_SECRET_KEY must be at least 32 bytes long"),
        None => {
            tracing::warn!(
                "GATEWAY_SECRET_KEY is not set: using a random session key, so every restart logs \
                 everyone out and several control planes cannot share sessions"
            );
            Ok(Key::generate())
        }
    }
}

impl Application {
    /// Connects the database, applies migrations and binds the listener.
    pub async fn build(settings: ControlPlaneSettings) -> anyhow::Result<Self> {
        let shared = &settings.shared;
        let db = domain::db::connect_and_migrate(&shared.database_url).await?;
        let key = session_key(shared.secret_key.as_deref())?;
        let token_secret = shared
            .token_secret()
            .map_err(|e| anyhow::anyhow!("GATEWAY_TOKEN_KEY (or GATEWAY_SECRET_KEY): {e}"))?;
        if token_secret.is_none() {
            tracing::warn!(
                "neither GATEWAY_TOKEN_KEY nor GATEWAY_SECRET_KEY is set: tenants cannot get token \
                 signing keys (tokens are neither minted nor signed)"
            );
        }
        let redis_pool = match shared.redis_endpoint().map_err(anyhow::Error::msg)? {
            Some(endpoint) => Some(checked_pool(&endpoint).await.map_err(anyhow::Error::msg)?),
            None => None,
        };
        let store = redis_pool
            .clone()
            .map(|p| RedisStore::new(p, shared.redis_prefix.clone()));
        let limiter = Limiter::new(
            store,
            LimiterSettings::default(),
            std::sync::Arc::new(SystemClock),
            // Login throttles have only a per-minute window: nothing to seed.
            None,
        );
        domain::password::warm_up();
        let certificates = settings.listen.certificates()?;
        let listener = TcpListener::bind(settings.listen.control_plane_addr)?;
        let addr = listener.local_addr()?;
        let upstream_policy = shared.upstream_policy(&[(addr, "control plane")]).await;
        // Where this control plane listens, for every data plane's upstream policy.
        domain::store::register_listener(&db, "control plane", addr).await?;
        let health = domain::target_health::HealthReports::new(
            redis_pool.clone().map(|p| (p, shared.redis_prefix.clone())),
            db.clone(),
        );
        let publisher = Publisher::new(redis_pool, shared.redis_prefix.clone());
        let deliverer = crate::webhooks::Deliverer::new(
            db.clone(),
            upstream_policy.clone(),
            std::time::Duration::from_millis(settings.dashboard.webhook_retry_base_ms.max(1)),
        )?;
        let state = web::Data::new(AppState {
            health,
            config: ConfigWriter::new(db.clone(), publisher).with_token_secret(token_secret),
            db,
            limiter,
            settings: settings.dashboard.clone(),
            public_url: shared.public_url.clone(),
            asset_version: pages::asset_version(),
            upstream_policy,
        });
        // Behind its own TLS the dashboard's cookies are `Secure` whatever the setting says.
        let secure = settings.dashboard.cookie_secure || certificates.is_some();
        let openapi = api::openapi();
        let server = HttpServer::new(move || {
            let sessions = SessionMiddleware::builder(CookieSessionStore::default(), key.clone())
                .cookie_name("gw_session".into())
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_secure(secure)
                .session_lifecycle(PersistentSession::default().session_ttl(
                    actix_web::cookie::time::Duration::hours(domain::store::SESSION_TTL_HOURS),
                ))
                .build();
            // The document is served before the /api/v1 scope, which claims every path under it.
            App::new()
                .app_data(state.clone())
                .app_data(web::FormConfig::default().limit(MAX_BODY_BYTES))
                .service(SwaggerUi::new("/api/docs/{_:.*}").url(OPENAPI_PATH, openapi.clone()))
                .route(
                    "/api/docs",
                    web::get().to(|| async { pages::redirect("/api/docs/") }),
                )
                .into_utoipa_app()
                .configure(api::configure)
                .into_app()
                .wrap(ErrorHandlers::new().default_handler(crate::errors::with_layout))
                .wrap(sessions)
                .wrap(
                    DefaultHeaders::new()
                        .add(("X-Frame-Options", "DENY"))
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("Referrer-Policy", "same-origin")),
                )
                .wrap(Logger::new("%r %s %Dms").log_target("control_plane::access"))
                .configure(routes::configure)
        });
        let server = match &certificates {
            Some(c) => {
                server.listen_rustls_0_23(listener, (*c.server_config(&[b"http/1.1"])).clone())?
            }
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self {
            addr,
            server,
            deliverer,
            certificates,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let deliveries = tokio::spawn(self.deliverer.run());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let reloads = self.certificates.map(|c| tokio::spawn(c.watch(stop_rx)));
        let served = self.server.await;
        deliveries.abort();
        let _ = stop_tx.send(true);
        if let Some(r) = reloads {
            let _ = r.await;
        }
        served
    }
}
