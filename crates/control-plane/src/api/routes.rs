//! An API's routes under `/apis/{api_id}/routes`. Another tenant's API or route is 404.

use actix_web::{HttpResponse, delete, get, post, put, web};
use domain::store;
use domain::validate::{self, Problems, RouteFields, RouteLimitFields};

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use super::models::{Page, PageQuery, RouteIn, RouteOut};
use crate::state::AppState;

/// The route a body describes, every field's problem reported (a route of the API that already
/// takes the same requests is a problem of `path`).
async fn new_route(
    state: &AppState,
    tenant_id: i64,
    api_id: i64,
    b: &RouteIn,
    except: Option<i64>,
) -> Result<domain::route::NewRoute, ApiError> {
    let mut problems = Problems::default();
    let route = validate::route(
        &RouteFields {
            path: &b.path,
            match_kind: b.r#match.as_deref(),
            methods: b.methods.as_deref().unwrap_or_default(),
            priority: b.priority,
            strip_prefix: b.strip_prefix.unwrap_or(false),
            timeout_ms: b.timeout_ms,
            retries: b.retries,
            rate_limit: b.rate_limit.as_ref().map(|rl| RouteLimitFields {
                requests_per_minute: rl.requests_per_minute,
                burst: rl.burst,
                requests_per_day: rl.requests_per_day,
            }),
            cost: b.cost,
        },
        &mut problems,
    );
    let route = problems.or_value(route)?;
    if let Some(old) = store::duplicate_route(&state.db, tenant_id, api_id, &route, except).await? {
        return Err(ApiError::invalid(
            "path",
            format!(
                "path {} (match \"{}\") already has route {} for {}: give this one other methods",
                old.path,
                old.match_kind,
                old.id,
                if old.methods.is_empty() {
                    "every method"
                } else {
                    old.methods.as_str()
                },
            ),
        ));
    }
    Ok(route)
}

/// Add a route to an API.
#[utoipa::path(tag = "routes", security(("bearer" = [])), params(("api_id" = i64, Path)), request_body = RouteIn,
    responses((status = 201, body = RouteOut), (status = 401), (status = 404), (status = 422)))]
#[post("/apis/{api_id}/routes")]
pub async fn create_route(
    c: ApiCaller,
    state: web::Data<AppState>,
    api_id: web::Path<i64>,
    body: ApiJson<RouteIn>,
) -> Result<HttpResponse, ApiError> {
    store::get_api(&state.db, c.tenant.id, *api_id).await?;
    let new = new_route(&state, c.tenant.id, *api_id, &body.into_inner(), None).await?;
    let r = state.config.create_route(c.tenant.id, *api_id, new).await?;
    Ok(HttpResponse::Created().json(RouteOut::from(r)))
}

/// List an API's routes.
#[utoipa::path(tag = "routes", security(("bearer" = [])), params(("api_id" = i64, Path), PageQuery),
    responses((status = 200, body = Page<RouteOut>), (status = 401), (status = 404)))]
#[get("/apis/{api_id}/routes")]
pub async fn list_routes(
    c: ApiCaller,
    state: web::Data<AppState>,
    api_id: web::Path<i64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let items: Vec<RouteOut> = store::list_routes(&state.db, c.tenant.id, *api_id, after, limit)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |r| r.id)))
}

/// Get a route.
#[utoipa::path(tag = "routes", security(("bearer" = [])), params(("api_id" = i64, Path), ("id" = i64, Path)),
    responses((status = 200, body = RouteOut), (status = 401), (status = 404)))]
#[get("/apis/{api_id}/routes/{id}")]
pub async fn get_route(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (api_id, id) = *path;
    let r = store::get_route(&state.db, c.tenant.id, api_id, id).await?;
    Ok(HttpResponse::Ok().json(RouteOut::from(r)))
}

/// Replace a route (absent optional fields take their defaults).
#[utoipa::path(tag = "routes", security(("bearer" = [])), params(("api_id" = i64, Path), ("id" = i64, Path)), request_body = RouteIn,
    responses((status = 200, body = RouteOut), (status = 401), (status = 404), (status = 422)))]
#[put("/apis/{api_id}/routes/{id}")]
pub async fn update_route(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    body: ApiJson<RouteIn>,
) -> Result<HttpResponse, ApiError> {
    let (api_id, id) = *path;
    store::get_route(&state.db, c.tenant.id, api_id, id).await?;
    let new = new_route(&state, c.tenant.id, api_id, &body.into_inner(), Some(id)).await?;
    let r = state
        .config
        .update_route(c.tenant.id, api_id, id, new)
        .await?;
    Ok(HttpResponse::Ok().json(RouteOut::from(r)))
}

/// Delete a route.
#[utoipa::path(tag = "routes", security(("bearer" = [])), params(("api_id" = i64, Path), ("id" = i64, Path)),
    responses((status = 204), (status = 401), (status = 404)))]
#[delete("/apis/{api_id}/routes/{id}")]
pub async fn delete_route(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, ApiError> {
    let (api_id, id) = *path;
    state.config.delete_route(c.tenant.id, api_id, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
