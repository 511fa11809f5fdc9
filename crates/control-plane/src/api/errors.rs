//! Errors of the management API: the JSON envelope of DESIGN.md with the right status.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use domain::store::StoreError;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (unparseable JSON or query).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed but invalid: names the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
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
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.into(),
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
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(m) | StoreError::InUse(m) => Self::Conflict(m),
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
            Self::NotFound => "No such resource.".to_owned(),
            Self::Invalid { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let mut error = json!({"code": status.as_u16(), "type": self.kind(), "message": message});
        let details: Option<Value> = match self {
            Self::Invalid { field, .. } => Some(json!({"field": field})),
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
        resp.body(body.to_string())
    }
}

// actix hands error handlers the error by value.
#[allow(clippy::needless_pass_by_value)]
/// Maps the JSON extractor's failures into the envelope: 415, 413, 400 or 422.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::ContentType => ApiError::UnsupportedMediaType,
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::TooLarge,
        E::Deserialize(e) if e.is_data() => {
            let msg = e.to_string();
            // serde names the field in "missing field `x`" / "unknown field `x`".
            let field = msg.split('`').nth(1).unwrap_or("body").to_owned();
            ApiError::Invalid {
                field,
                message: msg,
            }
        }
        E::Deserialize(e) => ApiError::BadRequest(format!("The body is not valid JSON: {e}")),
        other => ApiError::BadRequest(other.to_string()),
    };
    api.into()
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
