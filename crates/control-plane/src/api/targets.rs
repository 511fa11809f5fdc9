//! An API's targets under `/apis/{api_id}/targets`: the upstream URLs its requests are spread
//! over by weight. Another tenant's API or target is 404; the first target is the API's
//! `upstream_url`, and an API's last target cannot be deleted (409).

use actix_web::{HttpResponse, delete, get, post, put, web};
use domain::resilience::{MAX_TARGETS, NewTarget};
use domain::store;
use domain::validate::{self, Problems};

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use super::models::{HealthOut, Page, TargetIn, TargetOut};
use crate::state::AppState;

/// The target a body describes, every field's problem reported; an address the upstream policy
/// refuses for the caller's tenant is a problem of `url`.
async fn new_target(state: &AppState, c: &ApiCaller, b: &TargetIn) -> Result<NewTarget, ApiError> {
    let mut problems = Problems::default();
    let t = validate::target(&b.url, b.weight, &mut problems);
    let t = problems.or_value(t)?;
    if let Some(problem) = state
        .upstream_problem(&t.url, c.tenant.trusted_upstreams)
        .await
    {
        return Err(ApiError::invalid("url", problem));
    }
    Ok(t)
}

/// Add a target to an API.
#[utoipa::path(tag = "targets", security(("bearer" = [])), params(("api_id" = i64, Path)), request_body = TargetIn,
    responses((status = 201, body = TargetOut), (status = 401), (status = 404), (status = 409), (status = 422)))]
#[post("/apis/{api_id}/targets")]
pub async fn create_target(
    c: ApiCaller,
    state: web::Data<AppState>,
    api_id: web::Path<i64>,
    body: ApiJson<TargetIn>,
) -> Result<HttpResponse, ApiError> {
    store::get_api(&state.db, c.tenant.id, *api_id).await?;
    let new = new_target(&state, &c, &body.into_inner()).await?;
    if store::count_targets(&state.db, *api_id).await? >= MAX_TARGETS {
        return Err(ApiError::Conflict(format!(
            "An API has at most {MAX_TARGETS} targets."
        )));
    }
    let t = state
        .config
        .create_target(c.tenant.id, *api_id, new)
        .await?;
    Ok(HttpResponse::Created().json(TargetOut::from(t)))
}

/// List an API's targets (all of them: an API has at most 32).
#[utoipa::path(tag = "targets", security(("bearer" = [])), params(("api_id" = i64, Path)),
    responses((status = 200, body = Page<TargetOut>), (status = 401), (status = 404)))]
#[get("/apis/{api_id}/targets")]
pub async fn list_targets(
    c: ApiCaller,
    state: web::Data<AppState>,
    api_id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let items: Vec<TargetOut> = store::list_targets(&state.db, c.tenant.id, *api_id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(Page::of(items, MAX_TARGETS + 1, |t| t.id)))
}

/// Replace a target's URL and weight.
#[utoipa::path(tag = "targets", security(("bearer" = [])), params(("api_id" = i64, Path), ("id" = i64, Path)), request_body = TargetIn,
    responses((status = 200, body = TargetOut), (status = 401), (status = 404), (status = 422)))]
#[put("/apis/{api_id}/targets/{id}")]
pub async fn update_target(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    body: ApiJson<TargetIn>,
) -> Result<HttpResponse, ApiError> {
    let (api_id, id) = *path;
    store::get_target(&state.db, c.tenant.id, api_id, id).await?;
    let new = new_target(&state, &c, &body.into_inner()).await?;
    let t = state
        .config
        .update_target(c.tenant.id, api_id, id, new)
        .await?;
    Ok(HttpResponse::Ok().json(TargetOut::from(t)))
}

/// Delete a target (not an API's last one).
#[utoipa::path(tag = "targets", security(("bearer" = [])), params(("api_id" = i64, Path), ("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404), (status = 409)))]
#[delete("/apis/{api_id}/targets/{id}")]
pub async fn delete_target(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (api_id, id) = *path;
    state
        .config
        .delete_target(c.tenant.id, api_id, id)
        .await
        .map_err(|e| match e {
            store::StoreError::InUse(_) => ApiError::Conflict(
                "An API needs at least one target: add another before deleting this one.".into(),
            ),
            e => e.into(),
        })?;
    Ok(HttpResponse::NoContent().finish())
}

/// Close a target's circuit on every data plane (within a second).
#[utoipa::path(tag = "targets", security(("bearer" = [])), params(("api_id" = i64, Path), ("id" = i64, Path)),
    responses((status = 200, body = TargetOut), (status = 401), (status = 404)))]
#[post("/apis/{api_id}/targets/{id}/reset")]
pub async fn reset_target(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (api_id, id) = *path;
    let t = state.config.reset_target(c.tenant.id, api_id, id).await?;
    Ok(HttpResponse::Ok().json(TargetOut::from(t)))
}

/// The live state of an API's targets, per target and data plane (each reports every few
/// seconds; a node silent for 15 s is left out).
#[utoipa::path(tag = "targets", security(("bearer" = [])), params(("id" = i64, Path)),
    responses((status = 200, body = HealthOut), (status = 401), (status = 404)))]
#[get("/apis/{id}/health")]
pub async fn api_health(
    c: ApiCaller,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let items = state
        .target_health(c.tenant.id, *id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(HealthOut { items }))
}
