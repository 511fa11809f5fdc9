//! Errors of the management API: the JSON envelope of DESIGN.md with the right status.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use domain::store::StoreError;
use domain::validate::Problems;
use serde_json::{Value, json};

/// What a caller is told to wait while the database is unavailable (`Retry-After`).
pub const UNAVAILABLE_RETRY_SECS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (unparseable JSON or query).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid: names the field (the first, when several are wrong: `fields` has
    /// each, with what is wrong with it).
    #[error("{field}: {message}")]
    Invalid {
        field: String,
        message: String,
        fields: Vec<(String, String)>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("request bodies must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    TooLarge,
    #[error("too many attempts")]
    TooManyAttempts(i64),
    /// The database cannot be reached: nothing was read or written; try again shortly.
    #[error("the database is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Invalid {
            field: field.to_owned(),
            fields: vec![(field.to_owned(), message.clone())],
            message,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Invalid { .. } => "invalid_field",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict(_) => "conflict",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooLarge => "payload_too_large",
            Self::TooManyAttempts(_) => "too_many_attempts",
            Self::Unavailable(_) => "database_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// Every field's problem from the shared validators, each said with the JSON field's name.
impl From<Problems> for ApiError {
    fn from(problems: Problems) -> Self {
        let fields: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.field.to_owned(), format!("{} {}", p.field, p.message)))
            .collect();
        let message = fields
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Self::Invalid {
            field: fields.first().map(|f| f.0.clone()).unwrap_or_default(),
            message,
            fields,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(m) | StoreError::InUse(m) => Self::Conflict(m),
            StoreError::Db(e) if domain::db::is_unavailable(&e) => Self::Unavailable(e.to_string()),
            StoreError::Db(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<domain::sea_orm::DbErr> for ApiError {
    fn from(e: domain::sea_orm::DbErr) -> Self {
        StoreError::from(e).into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = match self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "management API request failed");
                "Something went wrong on our side; it was logged.".to_owned()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(error = %detail, "management API request: database unavailable");
                format!(
                    "The gateway's database cannot be reached right now; nothing was changed. \
                     Try again in {UNAVAILABLE_RETRY_SECS} seconds."
                )
            }
            Self::NotFound => "No such resource.".to_owned(),
            Self::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut error = json!({"code": status.as_u16(), "type": self.kind(), "message": message});
        let details: Option<Value> = match self {
            Self::Invalid { field, fields, .. } => Some(json!({
                "field": field,
                "fields": fields
                    .iter()
                    .map(|(f, m)| json!({"field": f, "message": m}))
                    .collect::<Vec<_>>(),
            })),
            Self::TooManyAttempts(secs) => Some(json!({"retry_after": secs})),
            _ => None,
        };
        if let Some(d) = details {
            error["details"] = d;
        }
        let body = json!({"error": error, "request_id": uuid::Uuid::new_v4().to_string()});
        let mut resp = HttpResponse::build(status);
        resp.insert_header((CONTENT_TYPE, "application/json"));
        if matches!(self, Self::Unauthorized(_)) {
            resp.insert_header((WWW_AUTHENTICATE, "Bearer realm=\"gateway\""));
        }
        if let Self::TooManyAttempts(secs) = self {
            resp.insert_header(("Retry-After", secs.to_string()));
        }
        if matches!(self, Self::Unavailable(_)) {
            resp.insert_header(("Retry-After", UNAVAILABLE_RETRY_SECS.to_string()));
        }
        resp.body(body.to_string())
    }
}

#[allow(clippy::needless_pass_by_value)]
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::BadRequest(format!("Invalid query string: {err}")).into()
}

/// A path id that is not a number names no resource.
#[allow(clippy::needless_pass_by_value)]
pub fn path_error(_: actix_web::error::PathError, _: &actix_web::HttpRequest) -> actix_web::Error {
    ApiError::NotFound.into()
}

/// A JSON body that, when it does not fit the type, is refused naming the field and what it
/// expects (`requests_per_minute: expected a whole number, got the text "lots"`), not with the
/// deserializer's position in the text.
pub struct ApiJson<T>(pub T);

impl<T> ApiJson<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for ApiJson<T> {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let is_json = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        let body = actix_web::web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::UnsupportedMediaType.into());
            }
            let bytes = body.await.map_err(|_| ApiError::TooLarge)?;
            if bytes.len() > MAX_JSON_BYTES {
                return Err(ApiError::TooLarge.into());
            }
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(v) => Ok(Self(v)),
                Err(e) => Err(body_problem(&e).into()),
            }
        })
    }
}

/// What is wrong with a body, in words: which field, what it expects, what it got.
fn body_problem(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if !inner.is_data() {
        return ApiError::BadRequest(format!("The body is not valid JSON: {inner}"));
    }
    let raw = inner.to_string();
    // serde's own words, without where in the text it stopped.
    let said = raw.split(" at line ").next().unwrap_or(&raw).to_owned();
    let path = e.path().to_string();
    // "missing field `x`" / "unknown field `x`" name the field themselves.
    let field = if path.is_empty() || path == "." {
        said.split('`').nth(1).unwrap_or("body").to_owned()
    } else {
        path
    };
    let message = humane(&said);
    let message = if message.contains(&format!("`{field}`")) {
        message
    } else {
        format!("{field}: {message}")
    };
    ApiError::invalid(&field, message)
}

/// serde's type names in the words of the API's documentation.
fn humane(said: &str) -> String {
    let mut m = said
        .replace("invalid type: ", "")
        .replace("integer", "number");
    for (from, to) in [
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text"),
    ] {
        m = m.replace(from, to);
    }
    if let Some((got, expected)) = m.split_once(", expected ") {
        return format!(
            "expected {expected}, got {}",
            got.replace("string ", "the text ")
        );
    }
    m
}
