//! Plans, APIs, keys and clients of the caller's tenant. Another tenant's ids are 404 everywhere.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use chrono::{Duration, Utc};
use domain::entities::{api, api_key, client, plan};
use domain::store::{self, StoreError};
use domain::validate::{self, ApiFields, Problems};

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use super::models::{
    ApiIn, ApiOut, ApiPatch, ClientIn, ClientOut, ClientPatch, KeyCreated, KeyIn, KeyOut, KeyPatch,
    Page, PageQuery, PlanIn, PlanOut, PlanPatch, RotateIn, name, new_api, plan_values, resilience,
};
use crate::state::AppState;

/// Longest grace period of a rotation: 30 days.
const MAX_GRACE_SECONDS: i64 = 30 * 86_400;

fn created<T: serde::Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Created().json(body)
}

fn ok<T: serde::Serialize>(body: &T) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// An upstream the address policy refuses for the caller's tenant is a 422 on `upstream_url`.
async fn refuse_upstream(
    state: &AppState,
    c: &ApiCaller,
    new: &domain::store::NewApi,
) -> Result<(), ApiError> {
    match state
        .upstream_problem(&new.upstream_url, c.tenant.trusted_upstreams)
        .await
    {
        Some(problem) => Err(ApiError::invalid("upstream_url", problem)),
        None => Ok(()),
    }
}

/// A plan id given in a body must be one of the caller's plans.
async fn own_plan(state: &AppState, tenant_id: i64, plan_id: i64) -> Result<plan::Model, ApiError> {
    store::get_plan(&state.db, tenant_id, plan_id)
        .await
        .map_err(|_| ApiError::invalid("plan_id", "plan_id is not one of your plans"))
}

// ---- Plans ---------------------------------------------------------------------------------

/// Create a plan.
#[utoipa::path(tag = "plans", security(("bearer" = [])), request_body = PlanIn,
    responses((status = 201, body = PlanOut), (status = 401), (status = 422)))]
#[post("/plans")]
pub async fn create_plan(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<PlanIn>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let (plan_name, limits, enforcement) = plan_values(
        &b.name,
        b.requests_per_minute,
        b.burst,
        b.requests_per_day,
        b.requests_per_month,
        b.enforcement.as_deref(),
    )?;
    let p = state
        .config
        .create_plan(c.tenant.id, &plan_name, limits, enforcement)
        .await?;
    Ok(created(&PlanOut::from(p)))
}

/// List plans.
#[utoipa::path(tag = "plans", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<PlanOut>), (status = 401)))]
#[get("/plans")]
pub async fn list_plans(
    c: ApiCaller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let items: Vec<PlanOut> = store::page::<plan::Entity>(&state.db, c.tenant.id, after, limit)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ok(&Page::of(items, limit, |p| p.id)))
}

/// Get a plan.
#[utoipa::path(tag = "plans", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = PlanOut), (status = 401), (status = 404)))]
#[get("/plans/{id}")]
pub async fn get_plan(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(&PlanOut::from(
        store::get_plan(&state.db, c.tenant.id, *id).await?,
    )))
}

/// Change a plan (absent fields stay; `null` clears an optional limit).
#[utoipa::path(tag = "plans", security(("bearer" = [])), params(("id" = i64, Path)), request_body = PlanPatch,
    responses((status = 200, body = PlanOut), (status = 401), (status = 404), (status = 422)))]
#[patch("/plans/{id}")]
pub async fn update_plan(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: ApiJson<PlanPatch>,
) -> Result<HttpResponse, ApiError> {
    let p = store::get_plan(&state.db, c.tenant.id, *id).await?;
    let b = body.into_inner();
    let (plan_name, limits, enforcement) = plan_values(
        b.name.as_deref().unwrap_or(&p.name),
        b.requests_per_minute.unwrap_or(p.requests_per_minute),
        b.burst.unwrap_or(p.burst),
        b.requests_per_day.unwrap_or(p.requests_per_day),
        b.requests_per_month.unwrap_or(p.requests_per_month),
        Some(b.enforcement.as_deref().unwrap_or(&p.enforcement)),
    )?;
    let p = state
        .config
        .update_plan(c.tenant.id, p.id, &plan_name, limits, enforcement)
        .await?;
    Ok(ok(&PlanOut::from(p)))
}

/// Delete a plan; 409 while keys or clients use it.
#[utoipa::path(tag = "plans", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404), (status = 409)))]
#[delete("/plans/{id}")]
pub async fn delete_plan(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.config.delete_plan(c.tenant.id, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- APIs ----------------------------------------------------------------------------------

fn gateway_prefix(state: &AppState, c: &ApiCaller) -> String {
    format!(
        "{}/{}/",
        state.public_url.trim_end_matches('/'),
        c.tenant.slug
    )
}

fn conflict_on_slug(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => {
            ApiError::Conflict("You already have an API with this slug.".into())
        }
        other => other.into(),
    }
}

/// Register an API.
#[utoipa::path(tag = "apis", security(("bearer" = [])), request_body = ApiIn,
    responses((status = 201, body = ApiOut), (status = 401), (status = 409), (status = 422)))]
#[post("/apis")]
pub async fn create_api(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<ApiIn>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let new = new_api(&b.fields())?;
    refuse_upstream(&state, &c, &new).await?;
    let given = b.retries.is_some() || b.health_check.is_some() || b.circuit_breaker.is_some();
    let settings = resilience(b.retries, b.health_check.as_ref(), b.circuit_breaker)?;
    let mut a = state
        .config
        .create_api(c.tenant.id, new)
        .await
        .map_err(conflict_on_slug)?;
    if given {
        a = state
            .config
            .set_api_resilience(c.tenant.id, a.id, settings)
            .await?;
    }
    if b.is_active == Some(false) {
        a = state
            .config
            .set_api_active(c.tenant.id, a.id, false)
            .await?;
    }
    Ok(created(&ApiOut::new(a, &gateway_prefix(&state, &c))))
}

/// List APIs.
#[utoipa::path(tag = "apis", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ApiOut>), (status = 401)))]
#[get("/apis")]
pub async fn list_apis(
    c: ApiCaller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let prefix = gateway_prefix(&state, &c);
    let items: Vec<ApiOut> = store::page::<api::Entity>(&state.db, c.tenant.id, after, limit)
        .await?
        .into_iter()
        .map(|a| ApiOut::new(a, &prefix))
        .collect();
    Ok(ok(&Page::of(items, limit, |a| a.id)))
}

/// Get an API.
#[utoipa::path(tag = "apis", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ApiOut), (status = 401), (status = 404)))]
#[get("/apis/{id}")]
pub async fn get_api(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let a = store::get_api(&state.db, c.tenant.id, *id).await?;
    Ok(ok(&ApiOut::new(a, &gateway_prefix(&state, &c))))
}

/// Change an API (absent fields stay).
#[utoipa::path(tag = "apis", security(("bearer" = [])), params(("id" = i64, Path)), request_body = ApiPatch,
    responses((status = 200, body = ApiOut), (status = 401), (status = 404), (status = 409), (status = 422)))]
#[patch("/apis/{id}")]
pub async fn update_api(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: ApiJson<ApiPatch>,
) -> Result<HttpResponse, ApiError> {
    let a = store::get_api(&state.db, c.tenant.id, *id).await?;
    let b = body.into_inner();
    let new = new_api(&ApiFields {
        name: b.name.as_deref().unwrap_or(&a.name),
        slug: b.slug.as_deref().unwrap_or(&a.slug),
        upstream_url: b.upstream_url.as_deref().unwrap_or(&a.upstream_url),
        key_header: Some(b.key_header.as_deref().unwrap_or(&a.key_header)),
        timeout_ms: Some(b.timeout_ms.unwrap_or(i64::from(a.timeout_ms))),
        pass_encoded_slashes: b.pass_encoded_slashes.unwrap_or(a.pass_encoded_slashes),
        log_query: b.log_query.unwrap_or(a.log_query),
        auth: Some(b.auth.as_deref().unwrap_or(&a.auth)),
        identity_token: b.identity_token.unwrap_or(a.identity_token),
        upstream_protocol: Some(
            b.upstream_protocol
                .as_deref()
                .unwrap_or(&a.upstream_protocol),
        ),
        websocket_idle_timeout_ms: Some(
            b.websocket_idle_timeout_ms
                .unwrap_or(i64::from(a.websocket_idle_timeout_ms)),
        ),
    })?;
    refuse_upstream(&state, &c, &new).await?;
    let settings = if b.touches_resilience() {
        let now = domain::resilience::ApiResilience::of(&a);
        let retries = match b.retries {
            Some(r) => r,
            None => now.retries.map(i64::from),
        };
        let health_check = match &b.health_check {
            Some(h) => h.clone(),
            None => now.health_check.map(Into::into),
        };
        let breaker = b
            .circuit_breaker
            .unwrap_or(Some(now.circuit_breaker.into()));
        Some(resilience(retries, health_check.as_ref(), breaker)?)
    } else {
        None
    };
    let mut a = state
        .config
        .update_api(c.tenant.id, a.id, new, b.is_active.unwrap_or(a.is_active))
        .await
        .map_err(conflict_on_slug)?;
    if let Some(settings) = settings {
        a = state
            .config
            .set_api_resilience(c.tenant.id, a.id, settings)
            .await?;
    }
    Ok(ok(&ApiOut::new(a, &gateway_prefix(&state, &c))))
}

/// Replace an API: every field as `POST /apis` takes them; an optional field left out takes its
/// default (no health check, the default circuit breaker, retries by the number of targets).
#[utoipa::path(tag = "apis", security(("bearer" = [])), params(("id" = i64, Path)), request_body = ApiIn,
    responses((status = 200, body = ApiOut), (status = 401), (status = 404), (status = 409), (status = 422)))]
#[put("/apis/{id}")]
pub async fn replace_api(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: ApiJson<ApiIn>,
) -> Result<HttpResponse, ApiError> {
    let a = store::get_api(&state.db, c.tenant.id, *id).await?;
    let b = body.into_inner();
    let new = new_api(&b.fields())?;
    refuse_upstream(&state, &c, &new).await?;
    let settings = resilience(b.retries, b.health_check.as_ref(), b.circuit_breaker)?;
    let a = state
        .config
        .update_api(c.tenant.id, a.id, new, b.is_active.unwrap_or(true))
        .await
        .map_err(conflict_on_slug)?;
    let a = state
        .config
        .set_api_resilience(c.tenant.id, a.id, settings)
        .await?;
    Ok(ok(&ApiOut::new(a, &gateway_prefix(&state, &c))))
}

/// Delete an API.
#[utoipa::path(tag = "apis", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404)))]
#[delete("/apis/{id}")]
pub async fn delete_api(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.config.delete_api(c.tenant.id, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- Keys ----------------------------------------------------------------------------------

fn future_expiry(
    at: Option<chrono::DateTime<Utc>>,
) -> Result<Option<chrono::DateTime<Utc>>, ApiError> {
    match at {
        Some(t) if t <= Utc::now() => Err(ApiError::invalid(
            "expires_at",
            "expires_at must be in the future",
        )),
        other => Ok(other),
    }
}

/// Issue a key; the response is the only time the key itself is shown.
#[utoipa::path(tag = "keys", security(("bearer" = [])), request_body = KeyIn,
    responses((status = 201, body = KeyCreated), (status = 401), (status = 422)))]
#[post("/keys")]
pub async fn create_key(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<KeyIn>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let key_name = name("name", &b.name)?;
    let plan = own_plan(&state, c.tenant.id, b.plan_id).await?;
    let expires_at = future_expiry(b.expires_at)?;
    let (k, raw) = state
        .config
        .create_api_key(c.tenant.id, plan.id, &key_name, expires_at)
        .await?;
    Ok(created(&KeyCreated::new(k, &raw)))
}

/// List keys (prefixes only).
#[utoipa::path(tag = "keys", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<KeyOut>), (status = 401)))]
#[get("/keys")]
pub async fn list_keys(
    c: ApiCaller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let items: Vec<KeyOut> = store::page::<api_key::Entity>(&state.db, c.tenant.id, after, limit)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ok(&Page::of(items, limit, |k| k.id)))
}

/// Get a key.
#[utoipa::path(tag = "keys", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = KeyOut), (status = 401), (status = 404)))]
#[get("/keys/{id}")]
pub async fn get_key(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(&KeyOut::from(
        store::get_key(&state.db, c.tenant.id, *id).await?,
    )))
}

/// Rename a key, move it to another plan or change its expiry (`null` = never).
#[utoipa::path(tag = "keys", security(("bearer" = [])), params(("id" = i64, Path)), request_body = KeyPatch,
    responses((status = 200, body = KeyOut), (status = 401), (status = 404), (status = 422)))]
#[patch("/keys/{id}")]
pub async fn update_key(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: ApiJson<KeyPatch>,
) -> Result<HttpResponse, ApiError> {
    let k = store::get_key(&state.db, c.tenant.id, *id).await?;
    let b = body.into_inner();
    let key_name = name("name", b.name.as_deref().unwrap_or(&k.name))?;
    let plan_id = match b.plan_id {
        Some(pid) => own_plan(&state, c.tenant.id, pid).await?.id,
        None => k.plan_id,
    };
    let expires_at = match b.expires_at {
        Some(v) => future_expiry(v)?,
        None => k.expires_at,
    };
    let k = state
        .config
        .update_key(c.tenant.id, k.id, &key_name, plan_id, expires_at)
        .await?;
    Ok(ok(&KeyOut::from(k)))
}

/// Revoke a key: refused by every data plane within a second.
#[utoipa::path(tag = "keys", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404)))]
#[delete("/keys/{id}")]
pub async fn revoke_key(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.config.revoke_key(c.tenant.id, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Replace a key with a new one; the old one keeps working for `grace_seconds`.
#[utoipa::path(tag = "keys", security(("bearer" = [])), params(("id" = i64, Path)), request_body = Option<RotateIn>,
    responses((status = 201, body = KeyCreated), (status = 401), (status = 404), (status = 409), (status = 422)))]
#[post("/keys/{id}/rotate")]
pub async fn rotate_key(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: Option<ApiJson<RotateIn>>,
) -> Result<HttpResponse, ApiError> {
    let grace = body.and_then(|b| b.into_inner().grace_seconds).unwrap_or(0);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(ApiError::invalid(
            "grace_seconds",
            format!("grace_seconds must be between 0 and {MAX_GRACE_SECONDS}"),
        ));
    }
    let until = Utc::now() + Duration::seconds(grace);
    let (k, raw) = state.config.rotate_key(c.tenant.id, *id, until).await?;
    Ok(created(&KeyCreated::new(k, &raw)))
}

// ---- Clients -------------------------------------------------------------------------------

/// Register a client (`X-Client-ID`).
#[utoipa::path(tag = "clients", security(("bearer" = [])), request_body = ClientIn,
    responses((status = 201, body = ClientOut), (status = 401), (status = 409), (status = 422)))]
#[post("/clients")]
pub async fn create_client(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<ClientIn>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let mut problems = Problems::default();
    let client_id = problems.check("client_id", validate::client_id(&b.client_id));
    let client_name = problems.check("name", validate::name(&b.name));
    let (client_id, client_name) = problems.or_value(client_id.zip(client_name))?;
    let plan = own_plan(&state, c.tenant.id, b.plan_id).await?;
    let cl = state
        .config
        .create_client(c.tenant.id, &client_id, &client_name, plan.id)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::Conflict("You already have a client with this client_id.".into())
            }
            other => other.into(),
        })?;
    Ok(created(&ClientOut::from(cl)))
}

/// List clients.
#[utoipa::path(tag = "clients", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ClientOut>), (status = 401)))]
#[get("/clients")]
pub async fn list_clients(
    c: ApiCaller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let items: Vec<ClientOut> = store::page::<client::Entity>(&state.db, c.tenant.id, after, limit)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(ok(&Page::of(items, limit, |c| c.id)))
}

/// Get a client.
#[utoipa::path(tag = "clients", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = ClientOut), (status = 401), (status = 404)))]
#[get("/clients/{id}")]
pub async fn get_client(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    Ok(ok(&ClientOut::from(
        store::get_client(&state.db, c.tenant.id, *id).await?,
    )))
}

/// Rename, move to another plan, deactivate or reactivate a client.
#[utoipa::path(tag = "clients", security(("bearer" = [])), params(("id" = i64, Path)), request_body = ClientPatch,
    responses((status = 200, body = ClientOut), (status = 401), (status = 404), (status = 422)))]
#[patch("/clients/{id}")]
pub async fn update_client(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    body: ApiJson<ClientPatch>,
) -> Result<HttpResponse, ApiError> {
    let cl = store::get_client(&state.db, c.tenant.id, *id).await?;
    let b = body.into_inner();
    let client_name = name("name", b.name.as_deref().unwrap_or(&cl.name))?;
    let plan_id = match b.plan_id {
        Some(pid) => own_plan(&state, c.tenant.id, pid).await?.id,
        None => cl.plan_id,
    };
    let cl = state
        .config
        .update_client(
            c.tenant.id,
            cl.id,
            &client_name,
            plan_id,
            b.is_active.unwrap_or(cl.is_active),
        )
        .await?;
    Ok(ok(&ClientOut::from(cl)))
}

/// Delete a client.
#[utoipa::path(tag = "clients", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404)))]
#[delete("/clients/{id}")]
pub async fn delete_client(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.config.delete_client(c.tenant.id, *id).await?;
    Ok(HttpResponse::NoContent().finish())
}
