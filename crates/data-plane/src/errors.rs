//! Errors the gateway itself produces, each rendered as the one JSON envelope of DESIGN.md:
//! `{"error": {"code", "type", "message", "details"}, "request_id"}`. Upstream errors pass through
//! untouched and never come here.

use std::fmt::Write as _;

use bytes::Bytes;
use domain::jwt::TokenCheck;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

/// Where an error came from decides its status: the caller (4xx), the upstream (502/504), or us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    // Downstream: the caller's request.
    NoRoute,
    UnknownApi,
    BadRequest(&'static str),
    /// The request body broke its own framing (a bad chunk, data past a chunk's size) or ended
    /// before its length.
    BadBody,
    MethodNotAllowed {
        method: String,
    },
    /// The API has routes and none matches the path.
    RouteNotFound,
    /// Routes match the path, none with this method; `allow`: the methods they take.
    MethodNotRouted {
        method: String,
        allow: String,
    },
    HeadersTooLarge {
        limit: usize,
        /// What exceeded it: the whole head, or the number of fields.
        what: HeadLimit,
    },
    BodyTooLarge {
        limit: u64,
    },
    MissingKey {
        header: String,
    },
    InvalidKey,
    KeyRevoked,
    KeyExpired,
    PlanUnavailable,
    UnknownClient,
    /// A bearer token failed a check (`TokenCheck::Expired` is `token_expired`).
    Token(TokenCheck),
    /// The API takes tokens only and the request has none.
    TokenRequired,
    /// The key a token was minted from is revoked or expired.
    TokenRevoked,
    RateLimited {
        /// Whose window refused: `plan`, `route` or `tenant`.
        level: &'static str,
        window: &'static str,
        retry_after_secs: i64,
        reset_secs: i64,
    },
    /// The request costs more units than a window holds at all: it can never be admitted.
    TooCostly {
        level: &'static str,
        window: &'static str,
        cost: u64,
        holds: u64,
    },
    // Upstream.
    UpstreamUnreachable,
    /// The upstream's address is one the policy refuses for this tenant (SSRF guard).
    UpstreamForbidden,
    UpstreamTimeout {
        timeout_ms: u128,
    },
    /// Every target of the API is down or its circuit open: nothing was sent.
    UpstreamUnavailable {
        /// When the soonest open circuit lets a request through, if one will.
        retry_after_secs: Option<u64>,
    },
    // Ours.
    LimiterUnavailable,
    /// The tenant has no signing key, or this data plane has no token key to open it with.
    TokenSigningUnavailable {
        why: &'static str,
    },
}

/// Which limit of a request head was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLimit {
    Bytes,
    Fields,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute | Self::UnknownApi | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) | Self::BadBody => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed { .. } | Self::MethodNotRouted { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MissingKey { .. } | Self::Token(_) | Self::TokenRequired => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidKey
            | Self::KeyRevoked
            | Self::KeyExpired
            | Self::PlanUnavailable
            | Self::UnknownClient
            | Self::TokenRevoked => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::TooCostly { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnreachable | Self::UpstreamForbidden => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::LimiterUnavailable
            | Self::UpstreamUnavailable { .. }
            | Self::TokenSigningUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoRoute | Self::UnknownApi => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::BadBody => "bad_request_body",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed { .. } | Self::MethodNotRouted { .. } => "method_not_allowed",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::MissingKey { .. } => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::KeyRevoked => "api_key_revoked",
            Self::KeyExpired => "api_key_expired",
            Self::PlanUnavailable => "plan_unavailable",
            Self::UnknownClient => "unknown_client",
            Self::Token(TokenCheck::Expired) => "token_expired",
            Self::Token(_) | Self::TokenRequired => "token_invalid",
            Self::TokenRevoked => "token_revoked",
            Self::TokenSigningUnavailable { .. } => "token_signing_unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooCostly { .. } => "request_too_costly",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamForbidden => "upstream_forbidden",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::LimiterUnavailable => "limiter_unavailable",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::NoRoute => "No API here. Call /{tenant}/{api}/{path}.".into(),
            Self::UnknownApi => "No active API at this address.".into(),
            Self::BadRequest(why) => (*why).to_owned(),
            Self::BadBody => {
                "The request body is malformed or ended before its declared length.".into()
            }
            Self::MethodNotAllowed { method } => {
                format!("The gateway does not forward {method} requests.")
            }
            Self::RouteNotFound => "No route of this API matches this path.".into(),
            Self::MethodNotRouted { method, allow } => {
                format!("This path does not take {method} requests; it takes {allow}.")
            }
            Self::HeadersTooLarge {
                limit,
                what: HeadLimit::Bytes,
            } => format!("The request line and header fields exceed {limit} bytes."),
            Self::HeadersTooLarge {
                limit,
                what: HeadLimit::Fields,
            } => format!("The request has more than {limit} header fields."),
            Self::BodyTooLarge { limit } => format!("The request body exceeds {limit} bytes."),
            Self::MissingKey { header } => format!("Send your API key in the {header} header."),
            Self::InvalidKey => "The API key is not valid for this API.".into(),
            Self::KeyRevoked => "The API key has been revoked.".into(),
            Self::KeyExpired => "The API key has expired.".into(),
            Self::PlanUnavailable => "The API key's plan is not active.".into(),
            Self::UnknownClient => "X-Client-ID names no active client of this API's owner.".into(),
            Self::Token(check) => check.message().into(),
            Self::TokenRequired => "This API takes a token: send Authorization: Bearer <token> \
                 (POST /_gateway/token with your API key mints one)."
                .into(),
            Self::TokenRevoked => {
                "The API key this token was minted from has been revoked or has expired.".into()
            }
            Self::TokenSigningUnavailable { why } => (*why).into(),
            Self::RateLimited {
                window,
                retry_after_secs,
                ..
            } => format!(
                "Rate limit exceeded: {} limit is used up. Retry in {retry_after_secs} s.",
                window_phrase(window)
            ),
            Self::TooCostly {
                window,
                cost,
                holds,
                ..
            } => format!(
                "This request costs {cost} units and {} limit holds {holds} at most, so it can \
                 never be admitted: ask the API's owner to raise the limit or lower the route's cost.",
                window_phrase(window)
            ),
            Self::UpstreamUnreachable => "The upstream API could not be reached.".into(),
            Self::UpstreamForbidden => "The upstream API's address is not one the gateway may \
                 connect to (loopback, private, link-local or the gateway's own); the API's owner \
                 can ask the operator to allow it."
                .into(),
            Self::UpstreamTimeout { timeout_ms } => {
                format!("The upstream API did not answer within {timeout_ms} ms.")
            }
            Self::UpstreamUnavailable { retry_after_secs } => match retry_after_secs {
                Some(s) => format!(
                    "Every upstream target of this API is down or failing, so the request was not \
                     sent. Retry in {s} s."
                ),
                None => "Every upstream target of this API is down or failing, so the request \
                         was not sent. Try again shortly."
                    .into(),
            },
            Self::LimiterUnavailable => {
                "Rate limiting is unavailable, so requests are refused. Try again shortly.".into()
            }
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            Self::RateLimited {
                level,
                window,
                retry_after_secs,
                reset_secs,
            } => Some(json!({
                "level": level,
                "window": window,
                "retry_after": retry_after_secs,
                "reset": reset_secs,
            })),
            Self::TooCostly {
                level,
                window,
                cost,
                holds,
            } => Some(json!({
                "level": level,
                "window": window,
                "cost": cost,
                "holds": holds,
            })),
            Self::MissingKey { header } => Some(json!({"header": header})),
            Self::Token(check) => Some(json!({"check": check.as_str()})),
            Self::UpstreamUnavailable {
                retry_after_secs: Some(s),
            } => Some(json!({"retry_after": s})),
            Self::BodyTooLarge { limit } => Some(json!({"limit_bytes": limit})),
            Self::HeadersTooLarge {
                limit,
                what: HeadLimit::Bytes,
            } => Some(json!({"limit_bytes": limit})),
            Self::HeadersTooLarge {
                limit,
                what: HeadLimit::Fields,
            } => Some(json!({"limit_fields": limit})),
            Self::MethodNotAllowed { method } => Some(json!({"method": method})),
            Self::MethodNotRouted { method, allow } => Some(json!({
                "method": method,
                "allow": allow.split(", ").collect::<Vec<_>>(),
            })),
            _ => None,
        }
    }

    /// The gRPC status a gRPC caller gets for it (gRPC's own table for the HTTP statuses, with
    /// the gateway's refusals named closer: a key or token refused is `UNAUTHENTICATED`, a limit
    /// `RESOURCE_EXHAUSTED`, no upstream `UNAVAILABLE`).
    pub fn grpc_status(&self) -> u8 {
        const INTERNAL: u8 = 13;
        match self {
            Self::NoRoute
            | Self::UnknownApi
            | Self::RouteNotFound
            | Self::MethodNotAllowed { .. }
            | Self::MethodNotRouted { .. } => 12, // UNIMPLEMENTED
            Self::BadRequest(_) | Self::BadBody => INTERNAL,
            Self::HeadersTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::RateLimited { .. }
            | Self::TooCostly { .. } => 8, // RESOURCE_EXHAUSTED
            Self::MissingKey { .. }
            | Self::InvalidKey
            | Self::KeyRevoked
            | Self::KeyExpired
            | Self::UnknownClient
            | Self::Token(_)
            | Self::TokenRequired
            | Self::TokenRevoked => 16, // UNAUTHENTICATED
            Self::PlanUnavailable => 7,        // PERMISSION_DENIED
            Self::UpstreamTimeout { .. } => 4, // DEADLINE_EXCEEDED
            Self::UpstreamUnreachable
            | Self::UpstreamForbidden
            | Self::UpstreamUnavailable { .. }
            | Self::LimiterUnavailable
            | Self::TokenSigningUnavailable { .. } => 14, // UNAVAILABLE
        }
    }

    /// The JSON envelope with the request id, `Content-Type` set.
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut error = json!({
            "code": status.as_u16(),
            "type": self.kind(),
            "message": self.message(),
        });
        if let Some(details) = self.details() {
            error["details"] = details;
        }
        let mut resp = json_response(status, &json!({"error": error, "request_id": request_id}));
        if let Self::MethodNotRouted { allow, .. } = self
            && let Ok(v) = HeaderValue::from_str(allow)
        {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        if let Self::UpstreamUnavailable {
            retry_after_secs: Some(s),
        } = self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*s));
        }
        resp
    }
}

/// "the minute", "this route's minute", "the tenant's minute": a window's label (`route-minute`)
/// in a sentence.
fn window_phrase(label: &str) -> String {
    if let Some(w) = label.strip_prefix("route-") {
        format!("this route's {w}")
    } else if let Some(w) = label.strip_prefix("tenant-") {
        format!("the tenant's {w} (shared by all of its keys and clients)")
    } else {
        format!("the {label}")
    }
}

/// A refusal (`resp`, the JSON envelope for `err`) as a gRPC caller reads one: HTTP 200 with
/// no body and the status in the head (a "trailers-only" answer: `grpc-status`, `grpc-message`
/// percent-encoded as gRPC says), the gateway's other fields (request id, rate-limit fields,
/// `Retry-After`) kept.
pub fn grpc_refusal(err: &GatewayError, resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(err.grpc_status())),
    );
    let mut message = String::new();
    for b in err.message().bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            message.push(char::from(b));
        } else {
            let _ = write!(message, "%{b:02X}");
        }
    }
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, with or without a
/// `+proto`-like suffix).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
