//! `Gateway`: what every request shares, whichever engine reads it — the configuration snapshot
//! and the keys changed since, the limiter, usage recorder, metrics, database, clock, settings,
//! upstream policy and the targets' live state — and the gateway's own endpoints (`/health*`, `/metrics`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use domain::apikey::KeyHash;
use domain::clock::SharedClock;
use domain::limits::Limiter;
use domain::sea_orm::DatabaseConnection;
use domain::snapshot::Snapshot;
use domain::upstream_policy::UpstreamPolicy;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::config::ProxySettings;
use crate::errors::json_response;
use crate::metrics::Metrics;
use crate::pipeline::token::Tokens;
use crate::request_log::RequestLog;
use crate::upstream::balance::Upstreams;
use crate::usage::UsageRecorder;

/// Longest `/health/ready` waits for the database's answer before it reports it down.
const DB_PING_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Key entries newer than the snapshot, by hash, with the config version they came with.
pub type KeyOverlay = foldhash::HashMap<KeyHash, (i64, domain::snapshot::KeyEntry)>;

pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    /// Keys changed after the snapshot was loaded (applied from change events), with the config
    /// version that carried them; emptied of what a newer snapshot already has.
    pub key_overlay: ArcSwap<KeyOverlay>,
    pub limiter: Arc<Limiter>,
    pub usage: UsageRecorder,
    /// Each request's record, buffered for the database.
    pub request_log: RequestLog,
    pub metrics: Metrics,
    pub db: DatabaseConnection,
    pub clock: SharedClock,
    pub settings: ProxySettings,
    /// Which upstream addresses may be connected to, for which tenants.
    pub policy: Arc<UpstreamPolicy>,
    /// Every API's targets with their live state: round robin, circuits, health.
    pub upstreams: Upstreams,
    /// Set once the first snapshot is loaded.
    pub loaded: AtomicBool,
    /// Where this data plane listens (registered in the database for the other planes' policy).
    pub bound: std::sync::Mutex<Option<SocketAddr>>,
    /// Minting, verifying and signing tokens.
    pub tokens: Tokens,
}

impl Gateway {
    /// A gateway serving an empty snapshot until the first [`crate::reload::reload`].
    pub fn new(
        limiter: Arc<Limiter>,
        usage: UsageRecorder,
        db: DatabaseConnection,
        clock: SharedClock,
        settings: ProxySettings,
        policy: Arc<UpstreamPolicy>,
        tokens: Tokens,
    ) -> anyhow::Result<Self> {
        let request_log = RequestLog::new(
            db.clone(),
            settings.request_log == domain::request_log::LogSwitch::On,
            settings.request_log_buffer / settings.worker_count().max(1),
            settings.request_log_buffer,
            settings.request_log_retention_days,
        );
        Ok(Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            key_overlay: ArcSwap::from_pointee(KeyOverlay::default()),
            limiter,
            usage,
            request_log,
            metrics: Metrics::new(),
            db,
            clock,
            settings,
            policy,
            upstreams: Upstreams::default(),
            loaded: AtomicBool::new(false),
            bound: std::sync::Mutex::new(None),
            tokens,
        })
    }

    /// The gateway's own answer to a request for `path` (health, metrics, and the token
    /// endpoints under `/_gateway/`), `None` for every other path: the one list of paths both
    /// engines leave to the gateway.
    pub async fn local_answer(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Option<Response<Full<Bytes>>> {
        if path.starts_with(GATEWAY_PREFIX) {
            return self.token_answer(method, path, headers, peer).await;
        }
        match path {
            "/health" | "/health/live" => {
                Some(json_response(StatusCode::OK, &json!({"status": "ok"})))
            }
            "/health/ready" => Some(self.readiness().await),
            "/metrics" => Some(self.metrics_page()),
            _ => None,
        }
    }

    async fn readiness(&self) -> Response<Full<Bytes>> {
        // Bounded: a database that is down must not hold the probe for the pool's acquire timeout.
        let db_up = tokio::time::timeout(DB_PING_WITHIN, self.db.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        let loaded = self.loaded.load(Ordering::Relaxed);
        let redis = match (self.limiter.redis_configured(), self.limiter.redis_up()) {
            (false, _) => "not_configured",
            (true, true) => "up",
            (true, false) => "down",
        };
        let fail_closed_and_down = self.settings.redis_fail_closed && redis == "down";
        // A data plane with a loaded snapshot serves without the database (keys, plans and
        // routes are in the snapshot; usage and the request log wait in memory): it stays ready.
        let ready = loaded && !fail_closed_and_down;
        let body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "database": if db_up { "up" } else { "down" },
            "snapshot": if loaded { "loaded" } else { "waiting_for_schema" },
            "snapshot_version": self.snapshot.load().version,
            "redis": redis,
            "limiter": match (self.limiter.redis_up(), self.limiter.settling()) {
                (false, _) => "local",
                (true, true) => "settling",
                (true, false) => "redis",
            },
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }

    fn metrics_page(&self) -> Response<Full<Bytes>> {
        self.metrics
            .redis_up
            .set(i64::from(self.limiter.redis_up()));
        self.metrics
            .limiter_fallbacks
            .set(i64::try_from(self.limiter.fallback_count()).unwrap_or(i64::MAX));
        self.metrics
            .data_planes
            .set(i64::try_from(self.limiter.nodes()).unwrap_or(i64::MAX));
        self.metrics
            .usage_flush_errors
            .set(i64::try_from(self.usage.flush_errors()).unwrap_or(i64::MAX));
        self.metrics.set_request_log(self.request_log.counts());
        let mut page = self.metrics.render();
        self.upstreams.write_metrics(&mut page, self.clock.now_ms());
        if let Some(store) = self.limiter.redis_store() {
            redis_call_times(&mut page, store.call_times());
        }
        let mut resp = Response::new(Full::new(Bytes::from(page)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }
}

/// Whether `path` is one of the gateway's own ([`Gateway::local_answer`]).
pub fn is_local_path(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/health/live" | "/health/ready" | "/metrics"
    ) || path.starts_with(GATEWAY_PREFIX)
}

/// Where the gateway's own endpoints other than health and metrics live: no tenant slug starts
/// with `_`.
const GATEWAY_PREFIX: &str = "/_gateway/";

/// `gateway_redis_call_duration_seconds`, the histogram of Redis script calls, in the text format.
fn redis_call_times(page: &mut String, times: &domain::limits::redis::CallTimes) {
    use std::fmt::Write;
    let (cumulative, total, sum_us) = times.snapshot();
    let name = "gateway_redis_call_duration_seconds";
    let _ = writeln!(
        page,
        "# HELP {name} Redis limit script calls, from sent to answered (late answers included)"
    );
    let _ = writeln!(page, "# TYPE {name} histogram");
    for (bound, n) in domain::limits::redis::CALL_BUCKETS_MS
        .iter()
        .zip(cumulative)
    {
        let le = f64::from(u32::try_from(*bound).unwrap_or(u32::MAX)) / 1000.0;
        let _ = writeln!(page, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(page, "{name}_bucket{{le=\"+Inf\"}} {total}");
    #[allow(clippy::cast_precision_loss)] // a sum of µs: far below 2^53
    let sum = sum_us as f64 / 1e6;
    let _ = writeln!(page, "{name}_sum {sum}");
    let _ = writeln!(page, "{name}_count {total}");
}
