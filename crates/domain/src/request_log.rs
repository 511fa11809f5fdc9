//! The request log's record: what a data plane writes of each request it answered on a tenant's
//! path (proxied, refused or failed), and what the management API and dashboard read back.

use std::net::IpAddr;

use arrayvec::ArrayString;

/// Flags of a record (`request_logs.flags`).
pub mod flags {
    /// Refused by its limits (429).
    pub const RATE_LIMITED: i32 = 1;
    /// Tried on more than one target.
    pub const RETRIED: i32 = 2;
    /// Refused because every target was down or its circuit open (503).
    pub const CIRCUIT_OPEN: i32 = 4;
    /// The upstream failed: no answer (unreachable, reset, timed out) or a 5xx.
    pub const UPSTREAM_ERROR: i32 = 8;

    /// The names of the flags set in `bits`, in a fixed order.
    pub fn names(bits: i32) -> Vec<&'static str> {
        [
            (RATE_LIMITED, "rate_limited"),
            (RETRIED, "retried"),
            (CIRCUIT_OPEN, "circuit_open"),
            (UPSTREAM_ERROR, "upstream_error"),
        ]
        .into_iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

/// A key's display prefix (`gw_live_1a2b3c4d`), held without an allocation.
pub type KeyPrefix = ArrayString<32>;

/// The display prefix of a raw key that authenticated: what lists show of it.
pub fn key_prefix(raw: &str) -> KeyPrefix {
    let shown = crate::apikey::display_len(raw);
    KeyPrefix::from(&raw[..shown]).unwrap_or_default()
}

/// One request as the data plane saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub tenant_id: i64,
    pub request_id: String,
    /// 0: the path named no API of the tenant.
    pub api_id: i64,
    pub route_id: i64,
    pub key_id: i64,
    pub key_prefix: Option<KeyPrefix>,
    pub client_row_id: i64,
    pub client_id: Option<String>,
    pub method: std::borrow::Cow<'static, str>,
    pub path: String,
    pub status: u16,
    pub latency_us: u64,
    pub upstream_latency_us: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub target_id: i64,
    pub client_ip: IpAddr,
    pub flags: i32,
    pub error_type: Option<&'static str>,
}

/// The setting that switches the request log on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogSwitch {
    #[default]
    On,
    Off,
}

/// Days a record is kept unless `GATEWAY_REQUEST_LOG_RETENTION_DAYS` says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
