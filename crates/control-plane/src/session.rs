//! Who is logged in, CSRF tokens and flash messages, kept in the signed session cookie; the
//! session itself is a token whose hash the database holds, so the server can end it (logout, a
//! password change).

use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use domain::entities::{tenant, user};
use domain::sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use rand::RngCore;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::errors::UiError;
use crate::state::AppState;

/// The session's token (its SHA-256 is in `user_sessions`).
const SID: &str = "sid";
const CSRF: &str = "csrf";
const FLASH: &str = "flash";

/// The session's CSRF token, created on first use.
pub fn csrf_token(session: &Session) -> Result<String, UiError> {
    if let Ok(Some(t)) = session.get::<String>(CSRF) {
        return Ok(t);
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    session.insert(CSRF, &token)?;
    Ok(token)
}

fn verify_csrf(session: &Session, sent: &str) -> Result<(), UiError> {
    let expected = session
        .get::<String>(CSRF)
        .ok()
        .flatten()
        .ok_or(UiError::Csrf)?;
    if expected.as_bytes().ct_eq(sent.as_bytes()).into() {
        Ok(())
    } else {
        Err(UiError::Csrf)
    }
}

/// Starts a fresh session for `user_id`: a new session (so a planted one is useless), recorded
/// in the database, and a new CSRF token.
pub async fn log_in(session: &Session, state: &AppState, user_id: i64) -> Result<(), UiError> {
    let token = domain::store::start_session(&state.db, user_id).await?;
    session.renew();
    session.remove(CSRF);
    session.insert(SID, token)?;
    csrf_token(session)?;
    Ok(())
}

/// Ends the session on the server (its cookie is worth nothing after) and in the browser.
pub async fn log_out(session: &Session, state: &AppState) -> Result<(), UiError> {
    if let Ok(Some(token)) = session.get::<String>(SID) {
        domain::store::end_session(&state.db, &token).await?;
    }
    session.purge();
    Ok(())
}

/// The session token of a logged-in session (what a password change keeps).
pub fn session_token(session: &Session) -> Option<String> {
    session.get::<String>(SID).ok().flatten()
}

pub fn flash(session: &Session, message: impl Into<String>) {
    let _ = session.insert(FLASH, message.into());
}

pub fn take_flash(session: &Session) -> Option<String> {
    session.remove_as::<String>(FLASH).and_then(Result::ok)
}

/// A form whose `csrf_token` field matched the session's token.
pub struct CsrfForm<T>(pub T);

#[derive(Deserialize)]
struct WithToken<T> {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    inner: T,
}

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = req.get_session();
        let form = web::Form::<WithToken<T>>::from_request(req, payload);
        Box::pin(async move {
            // An unparseable body cannot carry a valid token either: report it as a CSRF refusal
            // only when the token is what is wrong.
            let form = form.await?;
            verify_csrf(&session, &form.csrf_token)?;
            Ok(Self(form.into_inner().inner))
        })
    }
}

/// A form with no fields but the CSRF token (logout, revoke, toggles).
#[derive(Deserialize)]
pub struct NoFields {}

/// A logged-in user with a tenant: the tenant dashboard's caller.
pub struct TenantUser {
    pub user: user::Model,
    pub tenant: tenant::Model,
    pub csrf: String,
    pub session: Session,
}

/// A logged-in platform admin.
pub struct AdminUser {
    pub user: user::Model,
    pub csrf: String,
    pub session: Session,
}

async fn current_user(
    req: &HttpRequest,
) -> Result<(user::Model, Option<tenant::Model>, Session), UiError> {
    let session = req.get_session();
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| UiError::Internal("no state".into()))?;
    let token = session_token(&session).ok_or(UiError::LoginRequired)?;
    // An ended session (logged out, password changed, expired) is no login, cookie or not.
    let Some(user_id) = domain::store::session_user(&state.db, &token).await? else {
        session.purge();
        return Err(UiError::LoginRequired);
    };
    let Some(user) = user::Entity::find_by_id(user_id).one(&state.db).await? else {
        session.purge();
        return Err(UiError::LoginRequired);
    };
    let tenant = tenant::Entity::find()
        .filter(tenant::Column::OwnerId.eq(user.id))
        .one(&state.db)
        .await?;
    Ok((user, tenant, session))
}

/// Any logged-in user, with or without a tenant (their own account pages); what the narrower
/// extractors start from.
pub struct AnyUser {
    pub user: user::Model,
    pub tenant: Option<tenant::Model>,
    pub csrf: String,
    pub session: Session,
}

impl AnyUser {
    pub(crate) async fn of(req: &HttpRequest) -> Result<Self, UiError> {
        let (user, tenant, session) = current_user(req).await?;
        let csrf = csrf_token(&session)?;
        Ok(Self {
            user,
            tenant,
            csrf,
            session,
        })
    }
}

impl FromRequest for AnyUser {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Self::of(&req).await })
    }
}

impl FromRequest for TenantUser {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let u = AnyUser::of(&req).await?;
            // An admin without a tenant of their own has nothing to see here.
            let tenant = u.tenant.ok_or(if u.user.is_admin {
                UiError::NotFound
            } else {
                UiError::LoginRequired
            })?;
            Ok(Self {
                user: u.user,
                tenant,
                csrf: u.csrf,
                session: u.session,
            })
        })
    }
}

impl FromRequest for AdminUser {
    type Error = UiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let u = AnyUser::of(&req).await?;
            if !u.user.is_admin {
                return Err(UiError::NotFound);
            }
            Ok(Self {
                user: u.user,
                csrf: u.csrf,
                session: u.session,
            })
        })
    }
}

/// Whoever is logged in, if anyone (for `/`).
pub async fn maybe_user(req: &HttpRequest) -> Option<(user::Model, Option<tenant::Model>)> {
    current_user(req).await.ok().map(|(u, t, _)| (u, t))
}
