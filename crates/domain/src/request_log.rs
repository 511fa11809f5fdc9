//! The request log's record: what a data plane writes of each request it answered on a tenant's
//! path (proxied, refused or failed), and what the management API and dashboard read back.

use std::fmt::Write as _;
use std::net::IpAddr;

use arrayvec::ArrayString;
use serde::{Deserialize, Serialize};

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
    /// The caller sent its own `X-Request-ID` (else the gateway made one, a version 7 UUID of
    /// the request's time): only these are indexed by request id.
    pub const REQUEST_ID_GIVEN: i32 = 16;

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

/// What a record holds beyond the columns queries filter on, stored as JSON in `detail` (one
/// value to write instead of a dozen: the log is written at the data plane's full rate).
/// Absent fields are zero or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Detail<'a> {
    #[serde(skip_serializing_if = "is_zero")]
    pub route_id: i64,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub path: std::borrow::Cow<'a, str>,
    pub latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_latency_us: Option<u64>,
    #[serde(skip_serializing_if = "is_zero_u")]
    pub bytes_in: u64,
    #[serde(skip_serializing_if = "is_zero_u")]
    pub bytes_out: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub target_id: i64,
    #[serde(borrow)]
    pub client_ip: std::borrow::Cow<'a, str>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<std::borrow::Cow<'a, str>>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero_u(v: &u64) -> bool {
    *v == 0
}

impl Record {
    /// The record's `detail` JSON: what serde would write of its [`Detail`] (same fields, order
    /// and omissions), written by hand — the log is written at the data plane's full rate, and
    /// serde's string escaping and an address formatted into a `String` of its own were a tenth
    /// of the log writer's CPU.
    pub fn detail_json(&self) -> String {
        let mut j = JsonObject::with_capacity(160 + self.path.len());
        if self.route_id != 0 {
            j.int("route_id", self.route_id);
        }
        if let Some(p) = &self.key_prefix {
            j.str("key_prefix", p);
        }
        if let Some(c) = &self.client_id {
            j.str("client_id", c);
        }
        j.str("path", &self.path);
        j.int("latency_us", self.latency_us);
        if let Some(u) = self.upstream_latency_us {
            j.int("upstream_latency_us", u);
        }
        if self.bytes_in != 0 {
            j.int("bytes_in", self.bytes_in);
        }
        if self.bytes_out != 0 {
            j.int("bytes_out", self.bytes_out);
        }
        if self.target_id != 0 {
            j.int("target_id", self.target_id);
        }
        j.key("client_ip");
        // An address needs no escaping.
        let _ = write!(j.0, "\"{}\"", self.client_ip);
        if let Some(e) = self.error_type {
            j.str("error_type", e);
        }
        j.0.push('}');
        j.0
    }
}

/// A JSON object being written: `{` and the members so far.
struct JsonObject(String);

impl JsonObject {
    fn with_capacity(n: usize) -> Self {
        let mut s = String::with_capacity(n);
        s.push('{');
        Self(s)
    }

    /// `"name":` (the names are ours: nothing to escape).
    fn key(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(name);
        self.0.push_str("\":");
    }

    fn int(&mut self, name: &str, v: impl itoa::Integer) {
        self.key(name);
        self.0.push_str(itoa::Buffer::new().format(v));
    }

    fn str(&mut self, name: &str, v: &str) {
        self.key(name);
        // The usual value (a path, a key prefix) has nothing to escape: copied as it is;
        // anything else is escaped by serde_json.
        if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.0.push('"');
            self.0.push_str(v);
            self.0.push('"');
        } else if let Ok(quoted) = serde_json::to_string(v) {
            self.0.push_str(&quoted);
        }
    }
}

/// The time (ms since the epoch) a request id the gateway made names: its ids are version 7
/// UUIDs of the request's time. `None` for any other id.
pub fn time_of_request_id(rid: &str) -> Option<i64> {
    let id = uuid::Uuid::try_parse(rid).ok()?;
    if id.get_version_num() != 7 {
        return None;
    }
    let b = id.as_bytes();
    let ms = b[..6]
        .iter()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
    i64::try_from(ms).ok()
}

/// A new request id: a version 7 UUID of `now_ms` (RFC 9562), random bits from the thread's
/// CSPRNG.
pub fn new_request_id(now_ms: i64) -> String {
    let mut bytes = [0u8; 10];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let ms = u64::try_from(now_ms).unwrap_or(0);
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes)
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_request_ids_carry_their_time() {
        let ms = 1_796_083_200_123;
        let rid = new_request_id(ms);
        assert_eq!(rid.len(), 36);
        assert_eq!(time_of_request_id(&rid), Some(ms));
        assert_ne!(new_request_id(ms), rid, "random beyond the time");
        assert_eq!(time_of_request_id(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(time_of_request_id("ticket-42"), None);
    }

    /// The hand-written JSON is what serde writes of the record's [`Detail`].
    #[test]
    fn the_detail_json_is_serdes() {
        let serde_of = |r: &Record| {
            let ip = r.client_ip.to_string();
            serde_json::to_string(&Detail {
                route_id: r.route_id,
                key_prefix: r.key_prefix.as_ref().map(|p| p.as_str().into()),
                client_id: r.client_id.as_deref().map(Into::into),
                path: r.path.as_str().into(),
                latency_us: r.latency_us,
                upstream_latency_us: r.upstream_latency_us,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                target_id: r.target_id,
                client_ip: ip.into(),
                error_type: r.error_type.map(Into::into),
            })
            .unwrap()
        };
        let mut r = crate::testing::record(1, 1, "r");
        assert_eq!(r.detail_json(), serde_of(&r));
        r.route_id = -7;
        r.key_prefix = Some(key_prefix("gw_live_abcdefghijklmnop"));
        r.client_id = Some("acme \"north\"\\\n\u{1}é".into());
        r.path = "/t/a/ü?q=\"x\"\t".into();
        r.latency_us = u64::MAX;
        r.upstream_latency_us = Some(0);
        r.bytes_in = 1;
        r.bytes_out = 2;
        r.target_id = i64::MIN;
        r.client_ip = "2001:db8::1".parse().unwrap();
        r.error_type = Some("upstream_timeout");
        assert_eq!(r.detail_json(), serde_of(&r));
        let json = r.detail_json();
        let parsed: Detail<'_> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.client_id.as_deref(), r.client_id.as_deref());
        assert_eq!(parsed.path, r.path);
    }

    #[test]
    fn a_records_detail_round_trips_and_leaves_out_what_is_empty() {
        let mut r = crate::testing::record(1, 1, "r");
        r.path = "/t/a/\"q\"".into();
        r.status = 401;
        r.latency_us = 120;
        r.bytes_out = 99;
        r.client_ip = "::1".parse().unwrap();
        r.error_type = Some("missing_api_key");
        let json = r.detail_json();
        assert_eq!(
            json,
            r#"{"path":"/t/a/\"q\"","latency_us":120,"bytes_out":99,"client_ip":"::1","error_type":"missing_api_key"}"#
        );
        let d: Detail<'_> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (d.path.as_ref(), d.bytes_in, d.route_id),
            ("/t/a/\"q\"", 0, 0)
        );
    }
}
