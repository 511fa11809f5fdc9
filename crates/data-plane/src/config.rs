//! Data-plane settings: the shared ones plus the proxy's own, with typed defaults.

use std::time::Duration;

use domain::limits::LimiterSettings;
use domain::limits::limiter::DEFAULT_LEASE_MAX;
use domain::request_log::LogSwitch;
use std::net::SocketAddr;
use std::path::PathBuf;

use domain::tls::{TlsError, TlsFiles, TlsSettingNames};

use domain::settings::{DEFAULT_DATA_PLANE_ADDR, Settings, parse_addr};

pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// A loaded 2-core node's slowest Redis script call under `scripts/bench` stayed below 20 ms.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 250;
// The limiter's own default is the same (one number, said twice for clap's sake).
const _: () = assert!(
    DEFAULT_REDIS_TIMEOUT_MS as u128 == domain::limits::limiter::DEFAULT_REDIS_TIMEOUT.as_millis()
);
pub const DEFAULT_RELOAD_POLL_MS: u64 = 2_000;
pub const DEFAULT_USAGE_FLUSH_MS: u64 = 1_000;
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_LEASE_TTL_MS: u64 = 1_000;
pub const DEFAULT_HEALTH_REPORT_MS: u64 = 2_000;
pub const DEFAULT_REQUEST_LOG_RETENTION_DAYS: u32 = domain::request_log::DEFAULT_RETENTION_DAYS;
/// Records a data plane holds before the oldest are dropped (a few seconds of a busy node's
/// traffic, a few tens of MB).
pub const DEFAULT_REQUEST_LOG_BUFFER: usize = 100_000;
pub const DEFAULT_REQUEST_LOG_FLUSH_MS: u64 = 1_000;

/// Which engine reads client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// The HTTP/1.1 fast path, handing what it does not serve to hyper.
    #[default]
    Fast,
    /// hyper for every connection (slower: for comparison and debugging).
    Hyper,
}

/// What happens to open WebSocket connections when their key is revoked or expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RevokedSockets {
    /// They are closed (within a quarter of a second).
    #[default]
    Close,
    /// They run until either side closes them (new ones are refused).
    Finish,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProxySettings {
    /// Which engine reads client connections: `fast` (the HTTP/1.1 fast path, handing the rest
    /// to hyper) or `hyper` (hyper for everything).
    #[arg(long, env = "GATEWAY_ENGINE", value_enum, default_value_t = Engine::Fast)]
    pub engine: Engine,

    /// Largest request body forwarded (413 above it).
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u64,

    /// Largest request head (request line and headers) accepted (431 above it).
    #[arg(long, env = "GATEWAY_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// Longest wait for a Redis decision: that request is then decided locally, and after 3 such
    /// answers in a row (or a connection error) Redis is judged down until it answers again.
    #[arg(long, env = "GATEWAY_REDIS_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_TIMEOUT_MS)]
    pub redis_timeout_ms: u64,

    /// Refuse requests (503) while Redis is down instead of limiting in process.
    #[arg(long, env = "GATEWAY_REDIS_FAIL_CLOSED", default_value_t = false)]
    pub redis_fail_closed: bool,

    /// How often the config version is polled (the fallback when no Redis event arrives).
    #[arg(long, env = "GATEWAY_RELOAD_POLL_MS", default_value_t = DEFAULT_RELOAD_POLL_MS)]
    pub reload_poll_ms: u64,

    /// How often usage counts are flushed to Redis and the database.
    #[arg(long, env = "GATEWAY_USAGE_FLUSH_MS", default_value_t = DEFAULT_USAGE_FLUSH_MS)]
    pub usage_flush_ms: u64,

    /// Fast-mode plans: the most requests a data plane leases from Redis at once.
    #[arg(long, env = "GATEWAY_FAST_LEASE_MAX", default_value_t = DEFAULT_LEASE_MAX)]
    pub fast_lease_max: u64,

    /// Fast-mode plans: how long a leased budget may be spent before what is left is dropped.
    #[arg(long, env = "GATEWAY_FAST_LEASE_TTL_MS", default_value_t = DEFAULT_LEASE_TTL_MS)]
    pub fast_lease_ttl_ms: u64,

    /// Worker threads, each with its own listening socket and upstream pool; 0 = one per core.
    #[arg(long, env = "GATEWAY_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// On shutdown, how long in-flight requests may take to finish.
    #[arg(long, env = "GATEWAY_SHUTDOWN_GRACE_MS", default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,

    /// Longest wait for a request head, idle keep-alive time included: the connection is closed
    /// after it.
    #[arg(long, env = "GATEWAY_HEADER_TIMEOUT_MS", default_value_t = DEFAULT_HEADER_TIMEOUT_MS)]
    pub header_timeout_ms: u64,

    /// How often this data plane reports its targets' state (up, circuit, last check) to Redis,
    /// or to the database without Redis, for the control plane to show (at most 10 s: a report
    /// older than 15 s is taken for a gone node).
    #[arg(long, env = "GATEWAY_HEALTH_REPORT_MS", default_value_t = DEFAULT_HEALTH_REPORT_MS,
          value_parser = clap::value_parser!(u64).range(100..=10_000))]
    pub health_report_ms: u64,

    /// This data plane's name in the targets' health reports (default: `<hostname>:<port>`).
    #[arg(long, env = "GATEWAY_NODE_NAME")]
    pub node_name: Option<String>,

    /// The request log: `on` (a record of every request on a tenant's path, written in batches
    /// off the request's path) or `off`.
    #[arg(long, env = "GATEWAY_REQUEST_LOG", value_enum, default_value_t = LogSwitch::On)]
    pub request_log: LogSwitch,

    /// Days request log records are kept (older ones are pruned by the data planes).
    #[arg(long, env = "GATEWAY_REQUEST_LOG_RETENTION_DAYS",
          default_value_t = DEFAULT_REQUEST_LOG_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub request_log_retention_days: u32,

    /// Request log records held in memory while the database is slow; beyond it the oldest are
    /// dropped (and counted in `gateway_request_log_dropped_total`).
    #[arg(long, env = "GATEWAY_REQUEST_LOG_BUFFER", default_value_t = DEFAULT_REQUEST_LOG_BUFFER,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub request_log_buffer: usize,

    /// How often request log records are written to the database.
    #[arg(long, env = "GATEWAY_REQUEST_LOG_FLUSH_MS", default_value_t = DEFAULT_REQUEST_LOG_FLUSH_MS,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub request_log_flush_ms: u64,

    /// Open WebSocket connections whose key is revoked or expires: `close` (within a quarter of a second)
    /// or `finish` (they run until either side closes them; new ones are refused).
    #[arg(long, env = "GATEWAY_WEBSOCKET_REVOKED", value_enum, default_value_t = RevokedSockets::Close)]
    pub websocket_revoked: RevokedSockets,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            engine: Engine::Fast,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            redis_fail_closed: false,
            reload_poll_ms: DEFAULT_RELOAD_POLL_MS,
            usage_flush_ms: DEFAULT_USAGE_FLUSH_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            fast_lease_max: DEFAULT_LEASE_MAX,
            fast_lease_ttl_ms: DEFAULT_LEASE_TTL_MS,
            workers: 0,
            health_report_ms: DEFAULT_HEALTH_REPORT_MS,
            node_name: None,
            request_log: LogSwitch::On,
            request_log_retention_days: DEFAULT_REQUEST_LOG_RETENTION_DAYS,
            request_log_buffer: DEFAULT_REQUEST_LOG_BUFFER,
            request_log_flush_ms: DEFAULT_REQUEST_LOG_FLUSH_MS,
            websocket_revoked: RevokedSockets::Close,
        }
    }
}

impl ProxySettings {
    /// Worker threads this data plane runs.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }

    pub fn limiter(&self) -> LimiterSettings {
        LimiterSettings {
            redis_timeout: Duration::from_millis(self.redis_timeout_ms.max(1)),
            fail_closed: self.redis_fail_closed,
            lease_max: self.fast_lease_max.max(1),
            lease_ttl: Duration::from_millis(self.fast_lease_ttl_ms.max(1)),
            ..LimiterSettings::default()
        }
    }
}

/// Where the data plane listens.
#[derive(Debug, Clone, clap::Args)]
pub struct DataPlaneListen {
    /// Listen address of the data plane (the proxy).
    #[arg(long, env = "GATEWAY_DATA_PLANE_ADDR", default_value = DEFAULT_DATA_PLANE_ADDR)]
    pub data_plane_addr: SocketAddr,

    /// TLS certificate chain (PEM) the data plane serves; with the key, it speaks HTTPS (HTTP/2
    /// and HTTP/1.1 by ALPN) on `GATEWAY_DATA_PLANE_TLS_ADDR`, or on its one address without it.
    /// Read again when the file changes or on SIGHUP.
    #[arg(long, env = "GATEWAY_DATA_PLANE_TLS_CERT")]
    pub data_plane_tls_cert: Option<PathBuf>,

    /// The TLS certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GATEWAY_DATA_PLANE_TLS_KEY")]
    pub data_plane_tls_key: Option<PathBuf>,

    /// A second listen address for HTTPS, beside plain HTTP on `GATEWAY_DATA_PLANE_ADDR` (unset:
    /// with a certificate, the one address speaks HTTPS only).
    #[arg(long, env = "GATEWAY_DATA_PLANE_TLS_ADDR")]
    pub data_plane_tls_addr: Option<SocketAddr>,
}

impl Default for DataPlaneListen {
    fn default() -> Self {
        Self {
            data_plane_addr: parse_addr(DEFAULT_DATA_PLANE_ADDR),
            data_plane_tls_cert: None,
            data_plane_tls_key: None,
            data_plane_tls_addr: None,
        }
    }
}

impl DataPlaneListen {
    /// The certificate the data plane terminates TLS with, when its settings name one.
    pub fn tls_files(&self) -> Result<Option<TlsFiles>, TlsError> {
        TlsFiles::from_settings(
            self.data_plane_tls_cert.as_deref(),
            self.data_plane_tls_key.as_deref(),
            self.data_plane_tls_addr.is_some(),
            TlsSettingNames {
                cert: "GATEWAY_DATA_PLANE_TLS_CERT",
                key: "GATEWAY_DATA_PLANE_TLS_KEY",
                addr: "GATEWAY_DATA_PLANE_TLS_ADDR",
            },
        )
    }
}

/// Everything the data plane is configured with.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataPlaneSettings {
    #[command(flatten)]
    pub shared: Settings,
    #[command(flatten)]
    pub listen: DataPlaneListen,
    #[command(flatten)]
    pub proxy: ProxySettings,
}

impl DataPlaneSettings {
    /// For a test: the given database, listening on 127.0.0.1:0, no Redis.
    pub fn for_tests(database_url: &str) -> Self {
        Self {
            shared: Settings::for_tests(database_url),
            listen: DataPlaneListen {
                data_plane_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..DataPlaneListen::default()
            },
            proxy: ProxySettings::default(),
        }
    }
}
