//! Errors of dashboard handlers, rendered as pages with the right status.

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;
use domain::store::StoreError;

use crate::pages::Layout;
use crate::session::AnyUser;
use crate::state::AppState;

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
    /// The database cannot be reached: nothing was read or written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for UiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            StoreError::Db(e) => e.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<domain::sea_orm::DbErr> for UiError {
    fn from(e: domain::sea_orm::DbErr) -> Self {
        if domain::db::is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
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
    layout: Layout,
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// What an error page says, attached to the response so that [`with_layout`], which sees the
/// request, can draw it inside the dashboard's layout (top bar and all when logged in).
#[derive(Clone)]
struct ErrorText {
    title: &'static str,
    message: String,
}

impl ErrorText {
    fn not_found() -> Self {
        Self {
            title: "Not found",
            message: "There is nothing here, or it belongs to someone else.".to_owned(),
        }
    }

    fn page(&self, mut layout: Layout, status: StatusCode) -> String {
        self.title.clone_into(&mut layout.title);
        ErrorPage {
            layout,
            status: status.as_u16(),
            title: self.title,
            message: &self.message,
        }
        .render()
        .unwrap_or_else(|_| self.message.clone())
    }
}

/// Error handler of the dashboard: an error page (a [`UiError`], or the router's empty 404 for a
/// path nobody serves) is drawn in the layout of whoever is logged in. The management API's JSON
/// answers pass untouched.
pub fn with_layout<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let status = res.status();
    let text = match res.response().extensions().get::<ErrorText>().cloned() {
        Some(text) => Some(text),
        None if status == StatusCode::NOT_FOUND
            && !res.request().path().starts_with("/api/")
            && !res.headers().contains_key(CONTENT_TYPE) =>
        {
            Some(ErrorText::not_found())
        }
        None => None,
    };
    let Some(text) = text else {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    };
    let (req, resp) = res.into_parts();
    Ok(ErrorHandlerResponse::Future(Box::pin(async move {
        let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
            return Ok(ServiceResponse::new(req, resp).map_into_left_body());
        };
        // Without the database there is no user to draw the layout for (and no waiting for it).
        let user = if status == StatusCode::SERVICE_UNAVAILABLE {
            None
        } else {
            AnyUser::of(&req).await.ok()
        };
        let layout = Layout::error(user.as_ref(), state.asset_version.clone());
        let mut resp = resp
            .set_body(text.page(layout, status))
            .map_into_boxed_body();
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Ok(ServiceResponse::new(req, resp).map_into_right_body())
    })))
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::LoginRequired => StatusCode::SEE_OTHER,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::NotFound => {
                let t = ErrorText::not_found();
                (t.title, t.message)
            }
            Self::Forbidden => ("Forbidden", "Your account cannot open this page.".to_owned()),
            Self::Csrf => (
                "Form expired",
                "This form was stale or sent from another site. Go back, reload the page and try again."
                    .to_owned(),
            ),
            Self::TooManyAttempts(secs) => {
                ("Too many attempts", format!("Too many login attempts. Try again in {secs} seconds."))
            }
            Self::Unavailable(detail) => {
                tracing::warn!(error = %detail, "dashboard request: database unavailable");
                (
                    "Temporarily unavailable",
                    format!(
                        "The gateway's database cannot be reached right now, so nothing was \
                         changed. Your gateways keep serving traffic. Try again in {} seconds.",
                        crate::api::errors::UNAVAILABLE_RETRY_SECS
                    ),
                )
            }
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "dashboard request failed");
                ("Something went wrong", "The error was logged. Please try again.".to_owned())
            }
            Self::LoginRequired => ("", String::new()),
        };
        let status = self.status_code();
        let text = ErrorText { title, message };
        // Drawn without the layout here; `with_layout` redraws it with the caller's.
        let body = text.page(Layout::error(None, crate::pages::asset_version()), status);
        let mut resp = HttpResponse::build(status);
        if let Self::TooManyAttempts(secs) = self {
            resp.insert_header(("Retry-After", secs.to_string()));
        }
        let mut resp = resp
            .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(body);
        resp.extensions_mut().insert(text);
        resp
    }
}
