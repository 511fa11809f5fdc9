//! Sign-up and tokens.

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use domain::entities::api_token;
use domain::password;
use domain::slug::Slug;
use domain::store;

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use super::models::{
    Page, PageQuery, SignupIn, SignupOut, TenantOut, TokenCreated, TokenOut, name,
};
use crate::accounts::{self, AccountError, email_problem, username_problem};
use crate::state::AppState;

fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::UsernameTaken => ApiError::Conflict("This username is taken.".into()),
        AccountError::SlugTaken => ApiError::Conflict("This tenant slug is taken.".into()),
        AccountError::Throttled(secs) => ApiError::TooManyAttempts(secs),
        AccountError::Internal(m) => ApiError::Internal(m),
    }
}

/// Create an account and its tenant; returns a management token.
#[utoipa::path(
    tag = "account",
    request_body = SignupIn,
    responses(
        (status = 201, body = SignupOut),
        (status = 404, description = "Sign-up is switched off"),
        (status = 409, description = "Username or slug taken"),
        (status = 422, description = "A field is invalid"),
    )
)]
#[post("/signup")]
pub async fn signup(
    state: web::Data<AppState>,
    body: ApiJson<SignupIn>,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.signup_enabled {
        return Err(ApiError::NotFound);
    }
    let b = body.into_inner();
    let username = b.username.trim().to_lowercase();
    if let Some(p) = username_problem(&username) {
        return Err(ApiError::invalid("username", p));
    }
    if let Some(p) = email_problem(b.email.trim()) {
        return Err(ApiError::invalid("email", p));
    }
    let tenant_name = name("tenant_name", &b.tenant_name)?;
    let slug = match b.tenant_slug.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Slug::parse(s),
        _ => Slug::derive_from(&tenant_name),
    }
    .map_err(|e| ApiError::invalid("tenant_slug", format!("tenant_slug {e}")))?;
    if let Some(p) = password::weakness(&b.password, &username) {
        return Err(ApiError::invalid("password", p));
    }
    let (user, tenant) = accounts::create_account(
        &state,
        &username,
        b.email.trim(),
        &b.password,
        &tenant_name,
        &slug,
    )
    .await
    .map_err(account_error)?;
    let (_, token) = store::create_token(&state.db, tenant.id, user.id).await?;
    let out = SignupOut {
        tenant: TenantOut {
            id: tenant.id,
            name: tenant.name,
            slug: tenant.slug,
        },
        token: token.expose().to_owned(),
    };
    Ok(HttpResponse::Created().json(out))
}

/// The account whose username and password came with HTTP Basic authentication (`whose`: "your",
/// "a platform admin's", said when they are missing); logins are throttled as the dashboard's.
pub(super) async fn basic_user(
    req: &HttpRequest,
    state: &AppState,
    whose: &str,
) -> Result<domain::entities::user::Model, ApiError> {
    let (username, pw) = basic_credentials(req).ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "Send {whose} username and password with HTTP Basic authentication."
        ))
    })?;
    let address = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    accounts::verify_login(state, &address, &username, pw)
        .await
        .map_err(account_error)?
        .ok_or_else(|| ApiError::Unauthorized("Wrong username or password.".into()))
}

fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    use actix_web_httpauth::headers::authorization::{Basic, Scheme};
    let header = req.headers().get(AUTHORIZATION)?;
    let basic = Basic::parse(header).ok()?;
    Some((basic.user_id().to_string(), basic.password()?.to_string()))
}

/// Issue a token with HTTP Basic credentials (username and password).
#[utoipa::path(
    tag = "account",
    security(("basic" = [])),
    responses(
        (status = 201, body = TokenCreated),
        (status = 401, description = "Missing or wrong credentials"),
        (status = 429, description = "Too many attempts"),
    )
)]
#[post("/tokens")]
pub async fn create_token(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = basic_user(&req, &state, "your").await?;
    let tenant = store::tenant_of_owner(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::Forbidden("This account has no tenant.".into()))?;
    let (t, raw) = store::create_token(&state.db, tenant.id, user.id).await?;
    Ok(HttpResponse::Created().json(TokenCreated {
        id: t.id,
        token: raw.expose().to_owned(),
    }))
}

/// The tenant's tokens (prefixes only).
#[utoipa::path(tag = "account", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<TokenOut>), (status = 401)))]
#[get("/tokens")]
pub async fn list_tokens(
    caller: ApiCaller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let tokens: Vec<TokenOut> =
        store::page::<api_token::Entity>(&state.db, caller.tenant.id, after, limit)
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
    Ok(HttpResponse::Ok().json(Page::of(tokens, limit, |t| t.id)))
}

/// Revoke a token (it may be the one in use).
#[utoipa::path(tag = "account", security(("bearer" = [])), params(("id" = i64, Path)), responses((status = 204), (status = 401), (status = 404)))]
#[delete("/tokens/{id}")]
pub async fn delete_token(
    caller: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    store::delete_token(&state.db, caller.tenant.id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
