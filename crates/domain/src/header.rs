//! The header an API reads its key from, and the per-API upstream timeout.

use std::time::Duration;

pub const DEFAULT_KEY_HEADER: &str = "X-API-Key";
pub const DEFAULT_TIMEOUT_MS: i32 = 30_000;
pub const MAX_TIMEOUT_MS: i32 = 300_000;
const MAX_HEADER_NAME_LEN: usize = 100;

/// Headers the gateway itself manages; a key carried in one of them would be lost or leak.
const FORBIDDEN_KEY_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "cookie",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-client-id",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyHeaderError {
    #[error("must be a header name of 1 to {MAX_HEADER_NAME_LEN} letters, digits or '-'")]
    Invalid,
    #[error("'{0}' is managed by the gateway and cannot carry the key")]
    Forbidden(String),
}

/// A valid HTTP header name the key is read from (`X-API-Key`, `Authorization`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHeader(String);

impl KeyHeader {
    pub fn parse(input: &str) -> Result<Self, KeyHeaderError> {
        let name = input.trim();
        if name.is_empty()
            || name.len() > MAX_HEADER_NAME_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(KeyHeaderError::Invalid);
        }
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_KEY_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-gateway-") {
            return Err(KeyHeaderError::Forbidden(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyHeader {
    fn default() -> Self {
        Self(DEFAULT_KEY_HEADER.to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be between 1 and {MAX_TIMEOUT_MS} milliseconds")]
pub struct TimeoutError;

/// Upstream timeout of an API, 1 ms to 5 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeout(i32);

impl UpstreamTimeout {
    pub fn from_millis(ms: i64) -> Result<Self, TimeoutError> {
        match i32::try_from(ms) {
            Ok(v) if (1..=MAX_TIMEOUT_MS).contains(&v) => Ok(Self(v)),
            _ => Err(TimeoutError),
        }
    }

    pub fn millis(self) -> i32 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0.unsigned_abs()))
    }
}

impl Default for UpstreamTimeout {
    fn default() -> Self {
        Self(DEFAULT_TIMEOUT_MS)
    }
}

/// How the gateway speaks to an API's upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS for `https` targets).
    #[default]
    Http1,
    /// HTTP/2: over TLS (ALPN `h2`) for `https` targets, cleartext with prior knowledge (h2c)
    /// for `http` ones. What a gRPC upstream needs.
    H2,
}

impl UpstreamProtocol {
    pub fn parse(v: &str) -> Result<Self, &'static str> {
        match v.trim() {
            "" | "http1" => Ok(Self::Http1),
            "h2" => Ok(Self::H2),
            _ => Err("must be http1 or h2"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2 => "h2",
        }
    }
}

pub const DEFAULT_WEBSOCKET_IDLE_MS: i32 = 3_600_000;
const MAX_WEBSOCKET_IDLE_MS: i32 = 86_400_000;

/// How long a relayed WebSocket may be idle (no byte either way): 1 s to 24 h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebsocketIdle(i32);

impl WebsocketIdle {
    pub fn from_millis(ms: i64) -> Result<Self, &'static str> {
        match i32::try_from(ms) {
            Ok(v) if (1_000..=MAX_WEBSOCKET_IDLE_MS).contains(&v) => Ok(Self(v)),
            _ => Err("must be between 1000 (1 s) and 86400000 (24 h) milliseconds"),
        }
    }

    pub fn millis(self) -> i32 {
        self.0
    }
}

impl Default for WebsocketIdle {
    fn default() -> Self {
        Self(DEFAULT_WEBSOCKET_IDLE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_headers() {
        assert_eq!(KeyHeader::parse("X-API-Key").unwrap().as_str(), "X-API-Key");
        assert!(KeyHeader::parse("Authorization").is_ok());
        assert_eq!(KeyHeader::parse("X Key"), Err(KeyHeaderError::Invalid));
        assert_eq!(KeyHeader::parse(""), Err(KeyHeaderError::Invalid));
        assert!(matches!(
            KeyHeader::parse("Host"),
            Err(KeyHeaderError::Forbidden(_))
        ));
        assert!(matches!(
            KeyHeader::parse("x-gateway-tenant"),
            Err(KeyHeaderError::Forbidden(_))
        ));
    }

    #[test]
    fn timeouts() {
        assert_eq!(UpstreamTimeout::default().millis(), 30_000);
        assert!(UpstreamTimeout::from_millis(0).is_err());
        assert!(UpstreamTimeout::from_millis(300_001).is_err());
        assert_eq!(
            UpstreamTimeout::from_millis(250).unwrap().duration(),
            Duration::from_millis(250)
        );
    }
}
