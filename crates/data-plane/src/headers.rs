//! Header rules of the proxy: hop-by-hop stripping (RFC 9110 7.6.1), forwarding headers, request
//! ids, and the rate-limit fields.

use domain::limits::{Decision, Level, Window, WindowState};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop fields never forwarded, besides those the `Connection` field lists.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_GATEWAY_TENANT: HeaderName = HeaderName::from_static("x-gateway-tenant");
pub static X_GATEWAY_KEY_ID: HeaderName = HeaderName::from_static("x-gateway-key-id");
pub static X_GATEWAY_CLIENT_ID: HeaderName = HeaderName::from_static("x-gateway-client-id");
/// The identity token the gateway signs for an upstream that asks (`domain::jwt`).
pub static X_GATEWAY_JWT: HeaderName = HeaderName::from_static("x-gateway-jwt");

// The rate-limit fields, named once rather than parsed from strings on every response.
static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static PER_WINDOW: [(HeaderName, HeaderName); 9] = [
    (
        HeaderName::from_static("x-ratelimit-limit-minute"),
        HeaderName::from_static("x-ratelimit-remaining-minute"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-day"),
        HeaderName::from_static("x-ratelimit-remaining-day"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-month"),
        HeaderName::from_static("x-ratelimit-remaining-month"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-route-minute"),
        HeaderName::from_static("x-ratelimit-remaining-route-minute"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-route-day"),
        HeaderName::from_static("x-ratelimit-remaining-route-day"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-route-month"),
        HeaderName::from_static("x-ratelimit-remaining-route-month"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-tenant-minute"),
        HeaderName::from_static("x-ratelimit-remaining-tenant-minute"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-tenant-day"),
        HeaderName::from_static("x-ratelimit-remaining-tenant-day"),
    ),
    (
        HeaderName::from_static("x-ratelimit-limit-tenant-month"),
        HeaderName::from_static("x-ratelimit-remaining-tenant-month"),
    ),
];

/// Looking a request field up by its lowercase name, in hyper's map or in the raw head the fast
/// path parsed.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl HeaderSource for HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }
}

impl HeaderSource for [httparse::Header<'_>] {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Whether two field names are the same to an upstream: ASCII case ignored, and `_` taken for
/// `-` (CGI-style servers — PHP, WSGI, nginx with `underscores_in_headers` — read `X_Gateway_Tenant`
/// as `X-Gateway-Tenant`, so a lookalike must be treated like the field it imitates).
pub fn same_field(name: &[u8], lower: &str) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (*a == b'_' && b == b'-'))
}

/// Whether `name` starts with `lower_prefix` the way [`same_field`] compares names.
fn field_starts_with(name: &[u8], lower_prefix: &str) -> bool {
    name.len() >= lower_prefix.len() && same_field(&name[..lower_prefix.len()], lower_prefix)
}

/// Whether a field is hop-by-hop: never forwarded in either direction (`Upgrade` included).
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str()))
        || name.eq_ignore_ascii_case("upgrade")
}

/// Fields a `Connection` option can never remove: the message's framing (`Content-Length`,
/// `Transfer-Encoding`), `Host` and the gateway's own `X-Gateway-*` fields are written by the
/// gateway from its own decisions. A nomination of one of them is ignored (RFC 9110 7.6.1 lets a
/// proxy drop a listed field; dropping these would let a peer change how a message is framed).
pub fn is_protected_field(name: &[u8]) -> bool {
    same_field(name, "content-length")
        || same_field(name, "transfer-encoding")
        || same_field(name, "host")
        || is_gateway_field_bytes(name)
}

/// Whether `name` is listed in one of the `Connection` values (so hop-by-hop for this message);
/// never true of a [protected](is_protected_field) field.
pub fn connection_lists<'a>(connection: impl IntoIterator<Item = &'a [u8]>, name: &str) -> bool {
    // Most messages have no `Connection` field: that is the test to make first.
    connection_has_option(connection, name) && !is_protected_field(name.as_bytes())
}

pub use wire::connection_has_option;

/// Whether a field is one of the `X-Gateway-*` fields only the gateway may set (any case, `_` for
/// `-` too).
pub fn is_gateway_field(name: &str) -> bool {
    is_gateway_field_bytes(name.as_bytes())
}

fn is_gateway_field_bytes(name: &[u8]) -> bool {
    field_starts_with(name, "x-gateway-")
}

/// Request fields the gateway sets itself (or, for `X-Forwarded-For`, rebuilds from the caller's
/// and the peer), so the caller's copies — and their `_` lookalikes — never pass as they are.
pub fn is_replaced_request_field(name: &str) -> bool {
    let n = name.as_bytes();
    // Each starts with an x or an f: one byte test rejects most fields.
    if !matches!(n.first().map(u8::to_ascii_lowercase), Some(b'x' | b'f')) {
        return false;
    }
    is_gateway_field_bytes(n)
        || same_field(n, "x-forwarded-for")
        || same_field(n, "x-forwarded-proto")
        || same_field(n, "x-forwarded-host")
        || same_field(n, "x-request-id")
        || same_field(n, "x-real-ip")
        || same_field(n, "forwarded")
}

/// Whether a caller's request field goes on to the upstream (the one rule set of both engines).
/// Dropped: hop-by-hop fields and those `Connection` lists, `Host` (the gateway writes the
/// upstream's), the framing fields and their lookalikes (each engine writes the framing it decided
/// itself), the fields the gateway replaces, the API's key field (and its lookalikes), and any
/// field that carries the presented key (`Authorization: Bearer <key>` beside `X-API-Key`, say).
pub fn forwards_request_field<'a>(
    name: &str,
    value: &[u8],
    connection: impl IntoIterator<Item = &'a [u8]>,
    key_header: &str,
    key: &[u8],
) -> bool {
    let n = name.as_bytes();
    !(same_field(n, key_header)
        || is_hop_by_hop(name)
        || same_field(n, "host")
        || same_field(n, "content-length")
        || same_field(n, "transfer-encoding")
        || is_replaced_request_field(name)
        || carries(value, key)
        || connection_lists(connection, name))
}

/// Whether a field value carries the presented key (or token): most often as its end
/// (`Bearer <key>`), tested first with one comparison; then anywhere in it (a substring search
/// whose set-up costs in proportion to the key: a token is some 300 bytes).
fn carries(value: &[u8], key: &[u8]) -> bool {
    !key.is_empty()
        && value.len() >= key.len()
        && (value.ends_with(key) || memchr::memmem::find(value, key).is_some())
}

/// Whether an upstream's response field goes on to the client (the one rule set of both engines):
/// not hop-by-hop, not listed in `Connection`, not one the gateway sets itself.
pub fn forwards_response_field<'a>(
    name: &str,
    connection: impl IntoIterator<Item = &'a [u8]>,
) -> bool {
    !(is_hop_by_hop(name) || is_gateway_response_field(name) || connection_lists(connection, name))
}

/// The request's id: the caller's `X-Request-ID` when it is a sane token (1-128 of
/// `[A-Za-z0-9._:-]`), and `true`; else a new version 7 UUID of `now_ms` (its time lets the
/// request log find the request by its id without an index of every id), and `false`.
pub fn request_id(headers: &(impl HeaderSource + ?Sized), now_ms: i64) -> (String, bool) {
    if let Some(v) = headers
        .header(X_REQUEST_ID.as_str())
        .and_then(|v| std::str::from_utf8(v).ok())
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return (v.to_owned(), true);
    }
    (domain::request_log::new_request_id(now_ms), false)
}

/// Bytes of the request head as received: request line and header fields.
pub fn head_size(uri_len: usize, headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + uri_len
        + 16
}

fn window_seconds(w: Window) -> u32 {
    match w {
        Window::Minute => 60,
        Window::Day => 86_400,
        Window::Month => 2_592_000,
    }
}

/// `X-RateLimit-*` for the tightest window and per window, plus the IETF `RateLimit-Policy` and
/// `RateLimit` fields.
pub fn insert_rate_limit(headers: &mut HeaderMap, d: &Decision) {
    rate_limit_fields(d, |name, value| {
        // Digits and the policy's ASCII: always a valid value.
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    });
}

/// Whether a response field is one the gateway sets itself (the upstream's copy is replaced).
pub fn is_gateway_response_field(name: &str) -> bool {
    let starts = |p: &str| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    starts("x-ratelimit-")
        || starts("ratelimit")
        || name.eq_ignore_ascii_case(X_REQUEST_ID.as_str())
}

/// One item of a structured `RateLimit` field: `"minute";q=100;w=60`.
fn push_item(
    out: &mut Vec<u8>,
    window: &WindowState,
    (k1, v1): (&str, impl itoa::Integer),
    (k2, v2): (&str, impl itoa::Integer),
) {
    let mut num = itoa::Buffer::new();
    out.push(b'"');
    out.extend_from_slice(window.label().as_bytes());
    out.extend_from_slice(b"\";");
    out.extend_from_slice(k1.as_bytes());
    out.push(b'=');
    out.extend_from_slice(num.format(v1).as_bytes());
    out.push(b';');
    out.extend_from_slice(k2.as_bytes());
    out.push(b'=');
    out.extend_from_slice(num.format(v2).as_bytes());
}

/// The fields of [`insert_rate_limit`], handed to `emit` one by one as bytes (the fast path
/// writes them straight into its response head: no allocation per field).
pub fn rate_limit_fields(d: &Decision, mut emit: impl FnMut(&HeaderName, &[u8])) {
    let Some(tight) = d.tightest() else { return };
    let secs = |ms: i64| (ms.max(0) + 999) / 1000;
    let mut num = itoa::Buffer::new();
    emit(&LIMIT, num.format(tight.limit).as_bytes());
    emit(&REMAINING, num.format(tight.remaining).as_bytes());
    emit(&RESET, num.format(secs(tight.reset_ms)).as_bytes());
    let mut text = Vec::with_capacity(96);
    for w in d.shown_windows() {
        let level = match w.level {
            Level::Plan => 0,
            Level::Route => 3,
            Level::Tenant => 6,
        };
        let (limit, remaining) = &PER_WINDOW[level
            + match w.window {
                Window::Minute => 0,
                Window::Day => 1,
                Window::Month => 2,
            }];
        emit(limit, num.format(w.limit).as_bytes());
        emit(remaining, num.format(w.remaining).as_bytes());
        if !text.is_empty() {
            text.extend_from_slice(b", ");
        }
        push_item(
            &mut text,
            w,
            ("q", w.limit),
            ("w", window_seconds(w.window)),
        );
    }
    emit(&POLICY, &text);
    text.clear();
    push_item(
        &mut text,
        tight,
        ("r", tight.remaining),
        ("t", secs(tight.reset_ms)),
    );
    emit(&RATELIMIT, &text);
    // A request too costly for a window will never be admitted: no wait to announce.
    if !d.allowed && d.too_costly().is_none() {
        emit(
            &header::RETRY_AFTER,
            num.format(d.retry_after_secs()).as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_fields_are_dropped_but_never_the_framing() {
        let connection: [&[u8]; 2] = [
            b"keep-alive, X-Secret-Hop, Content-Length",
            b"transfer-encoding,HOST, x-gateway-tenant",
        ];
        let fwd = |name: &str| forwards_response_field(name, connection);
        for dropped in [
            "connection",
            "keep-alive",
            "x-secret-hop",
            "transfer-encoding",
            "te",
            "upgrade",
            "x-ratelimit-limit",
        ] {
            assert!(!fwd(dropped), "{dropped}");
        }
        assert!(fwd("x-keep"));
        for protected in [
            "content-length",
            "Host",
            "X-Gateway-Tenant",
            "x_gateway_key_id",
        ] {
            assert!(
                !connection_lists(connection, protected),
                "{protected} cannot be nominated"
            );
        }
    }

    #[test]
    fn request_fields_the_gateway_owns_and_lookalikes_never_pass() {
        let fwd = |name: &str, value: &str| {
            forwards_request_field(name, value.as_bytes(), [], "x-api-key", b"gw_live_secret")
        };
        for dropped in [
            ("X_Gateway_Tenant", "bob"),
            ("x-gateway-key-id", "1"),
            ("X_API_KEY", "gw_live_secret"),
            ("Authorization", "Bearer gw_live_secret"),
            ("Cookie", "a=1; key=gw_live_secret"),
            ("X-Real-IP", "10.0.0.1"),
            ("Forwarded", "for=10.0.0.1"),
            ("X_Forwarded_For", "10.0.0.1"),
            ("Content_Length", "5"),
            ("transfer_encoding", "chunked"),
            ("Host", "x"),
        ] {
            assert!(!fwd(dropped.0, dropped.1), "{dropped:?}");
        }
        assert!(fwd("Authorization", "Bearer someone-elses-token"));
        assert!(fwd("x-custom", "kept"));
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123.x:y_z"));
        assert_eq!(request_id(&h, 5), ("abc-123.x:y_z".to_owned(), true));
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_static("bad id with spaces"),
        );
        let (generated, given) = request_id(&h, 1_796_083_200_000);
        assert_eq!((generated.len(), given), (36, false));
        assert_eq!(
            domain::request_log::time_of_request_id(&generated),
            Some(1_796_083_200_000)
        );
        assert_ne!(
            request_id(&HeaderMap::new(), 1_796_083_200_000).0,
            generated
        );
    }
}
