//! Who calls the management API: a bearer token acting on its tenant.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use domain::entities::tenant;
use domain::sea_orm::EntityTrait;
use domain::store;

use super::errors::ApiError;
use crate::state::AppState;

/// The tenant a valid `Authorization: Bearer <token>` acts on.
pub struct ApiCaller {
    pub tenant: tenant::Model,
}

/// The bearer token and the app's state of a request: what both callers' extractors start from.
/// `missing` is said when no token came.
fn token_and_state(
    token: Option<String>,
    state: Option<web::Data<AppState>>,
    missing: &str,
) -> Result<(String, web::Data<AppState>), ApiError> {
    let state = state.ok_or_else(|| ApiError::Internal("no state".into()))?;
    let token = token.ok_or_else(|| ApiError::Unauthorized(missing.into()))?;
    Ok((token, state))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let (token, state) = token_and_state(
                token,
                state,
                "Send a token: Authorization: Bearer <token> (POST /api/v1/tokens issues one).",
            )?;
            let t = store::authenticate_token(&state.db, &token)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("The token is not valid.".into()))?;
            // Written off the request's path: a database busy with a write (SQLite takes one
            // writer at a time) never delays or fails a read of the API.
            let (db, used) = (state.db.clone(), t.clone());
            actix_web::rt::spawn(async move {
                if let Err(e) = store::touch_token(&db, &used).await {
                    tracing::debug!(error = %e, "could not record a token's use");
                }
            });
            let tenant = tenant::Entity::find_by_id(t.tenant_id)
                .one(&state.db)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("The token is not valid.".into()))?;
            if !tenant.is_active {
                return Err(ApiError::Forbidden(
                    "This tenant has been deactivated by the platform admin.".into(),
                ));
            }
            Ok(Self { tenant })
        })
    }
}

/// A platform admin calling with an admin token (`POST /api/v1/admin/tokens` issues one): the
/// `/api/v1/admin` endpoints. A tenant's token there is refused (403), saying what is needed.
pub struct AdminCaller {
    pub user: domain::entities::user::Model,
}

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let (token, state) = token_and_state(
                token,
                state,
                "Send a platform admin's token: Authorization: Bearer <token> \
                 (POST /api/v1/admin/tokens issues one).",
            )?;
            if let Some((_, user)) = store::authenticate_admin_token(&state.db, &token).await? {
                return Ok(Self { user });
            }
            if store::authenticate_token(&state.db, &token)
                .await?
                .is_some()
            {
                return Err(ApiError::Forbidden(
                    "This is a tenant's token; the admin endpoints take a platform admin's token \
                     (POST /api/v1/admin/tokens with an admin's username and password)."
                        .into(),
                ));
            }
            Err(ApiError::Unauthorized("The token is not valid.".into()))
        })
    }
}
