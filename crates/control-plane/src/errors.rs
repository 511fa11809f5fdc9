//! Errors of dashboard handlers, rendered as pages with the right status.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use domain::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("not found")]
    NotFound,
    #[error("login required")]
    LoginRequired,
    #[error("forbidden")]
    Forbidden,
    #[error("the form's security token is missing or stale")]
    Csrf,
    #[error("too many attempts")]
    TooManyAttempts(i64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<domain::sea_orm::DbErr> for UiError {
    fn from(e: domain::sea_orm::DbErr) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<askama::Error> for UiError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<actix_session::SessionInsertError> for UiError {
    fn from(e: actix_session::SessionInsertError) -> Self {
        Self::Internal(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: String,
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::LoginRequired => StatusCode::SEE_OTHER,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, Self::LoginRequired) {
            return HttpResponse::SeeOther()
                .insert_header((LOCATION, "/login"))
                .finish();
        }
        let (title, message) = match self {
            Self::NotFound => ("Not found", "There is nothing here, or it belongs to someone else.".to_owned()),
            Self::Forbidden => ("Forbidden", "Your account cannot open this page.".to_owned()),
            Self::Csrf => (
                "Form expired",
                "This form was stale or sent from another site. Go back, reload the page and try again."
                    .to_owned(),
            ),
            Self::TooManyAttempts(secs) => {
                ("Too many attempts", format!("Too many login attempts. Try again in {secs} seconds."))
            }
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "dashboard request failed");
                ("Something went wrong", "The error was logged. Please try again.".to_owned())
            }
            Self::LoginRequired => ("", String::new()),
        };
        let status = self.status_code();
        let body = ErrorPage {
            status: status.as_u16(),
            title,
            message,
        }
        .render()
        .unwrap_or_else(|_| title.to_owned());
        let mut resp = HttpResponse::build(status);
        if let Self::TooManyAttempts(secs) = self {
            resp.insert_header(("Retry-After", secs.to_string()));
        }
        resp.insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(body)
    }
}
