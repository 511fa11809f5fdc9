//! Platform administration under `/api/v1/admin`, for admin tokens only: what the admin dashboard
//! does — every tenant listed, switched off and on, trusted with private upstreams, and given a
//! ceiling over all of its traffic.

// A PUT body tells an absent field (keep) from `null` (remove the ceiling).
#![allow(clippy::option_option)]

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use chrono::{DateTime, Utc};
use domain::entities::tenant;
use domain::plan::TenantLimits;
use domain::store::{self, TenantChange};
use domain::validate::{self, Problems, TenantLimitFields};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::account::basic_user;
use super::auth::AdminCaller;
use super::errors::{ApiError, ApiJson};
use super::models::{Page, PageQuery, TokenCreated};
use crate::state::AppState;

/// A tenant's ceiling: requests of all of its keys and clients together. A window left out does
/// not limit.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, Copy, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsBody {
    /// Per-minute rate (a token bucket refilled at this rate).
    pub requests_per_minute: Option<i64>,
    /// The bucket's size (default: `requests_per_minute`); needs `requests_per_minute`.
    pub burst: Option<i64>,
    /// Per calendar day (UTC).
    pub requests_per_day: Option<i64>,
    /// Per calendar month (UTC).
    pub requests_per_month: Option<i64>,
}

/// A tenant as a platform admin sees it.
#[derive(Serialize, ToSchema)]
pub struct AdminTenantOut {
    pub id: i64,
    pub name: String,
    pub slug: String,
    /// A deactivated tenant's requests are refused at the edge, its dashboard and API closed.
    pub is_active: bool,
    /// May register loopback and private upstreams.
    pub trusted_upstreams: bool,
    /// Its ceiling; `null` when it has none.
    pub limits: Option<TenantLimitsBody>,
    pub created_at: DateTime<Utc>,
}

impl From<tenant::Model> for AdminTenantOut {
    fn from(t: tenant::Model) -> Self {
        let limits =
            TenantLimits::from_columns(t.limit_rpm, t.limit_burst, t.limit_day, t.limit_month).map(
                |_| TenantLimitsBody {
                    requests_per_minute: t.limit_rpm,
                    burst: t.limit_burst.or(t.limit_rpm),
                    requests_per_day: t.limit_day,
                    requests_per_month: t.limit_month,
                },
            );
        Self {
            id: t.id,
            name: t.name,
            slug: t.slug,
            is_active: t.is_active,
            trusted_upstreams: t.trusted_upstreams,
            limits,
            created_at: t.created_at,
        }
    }
}

/// What to change of a tenant; a field left out is kept.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminTenantIn {
    pub is_active: Option<bool>,
    pub trusted_upstreams: Option<bool>,
    /// The ceiling, replaced whole (`null` or `{}` removes it).
    #[serde(default, deserialize_with = "super::models::nullable")]
    #[schema(value_type = Option<TenantLimitsBody>)]
    pub limits: Option<Option<TenantLimitsBody>>,
}

/// A ceiling as given, checked by the rule the admin page uses (every field's problem named,
/// under `limits.`).
pub fn checked_limits(body: &TenantLimitsBody) -> Result<Option<TenantLimits>, Problems> {
    let mut problems = Problems::default();
    let fields = TenantLimitFields {
        requests_per_minute: body.requests_per_minute,
        burst: body.burst,
        requests_per_day: body.requests_per_day,
        requests_per_month: body.requests_per_month,
    };
    let limits = validate::tenant_limits(&fields, &mut problems);
    problems.or_value(limits)
}

/// Prefixes each problem's field with `limits.` (where it is in the body).
fn under_limits(problems: &Problems) -> ApiError {
    let mut out = Problems::default();
    for p in problems.iter() {
        let field: &'static str = match p.field {
            "requests_per_minute" => "limits.requests_per_minute",
            "burst" => "limits.burst",
            "requests_per_day" => "limits.requests_per_day",
            "requests_per_month" => "limits.requests_per_month",
            other => other,
        };
        out.add(field, p.message.clone());
    }
    out.into()
}

/// Issue an admin token with a platform admin's HTTP Basic credentials.
#[utoipa::path(
    tag = "admin",
    security(("basic" = [])),
    responses(
        (status = 201, body = TokenCreated),
        (status = 401, description = "Missing or wrong credentials"),
        (status = 403, description = "The account is not a platform admin"),
        (status = 429, description = "Too many attempts"),
    )
)]
#[post("/admin/tokens")]
pub async fn create_admin_token(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = basic_user(&req, &state, "a platform admin's").await?;
    if !user.is_admin {
        return Err(ApiError::Forbidden(
            "This account is not a platform admin; POST /api/v1/tokens issues a tenant's token."
                .into(),
        ));
    }
    let (t, raw) = store::create_admin_token(&state.db, user.id).await?;
    tracing::info!(admin = user.id, token = t.id, "admin token issued");
    Ok(HttpResponse::Created().json(TokenCreated {
        id: t.id,
        token: raw.expose().to_owned(),
    }))
}

/// Every tenant, in id order.
#[utoipa::path(tag = "admin", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<AdminTenantOut>), (status = 401), (status = 403)))]
#[get("/admin/tenants")]
pub async fn list_tenants(
    _: AdminCaller,
    state: web::Data<AppState>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = q.parse()?;
    let items: Vec<AdminTenantOut> = store::page_tenants(&state.db, after, limit)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |t| t.id)))
}

async fn tenant_by_id(state: &AppState, id: i64) -> Result<tenant::Model, ApiError> {
    use domain::sea_orm::EntityTrait;
    tenant::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or(ApiError::NotFound)
}

/// One tenant.
#[utoipa::path(tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = AdminTenantOut), (status = 401), (status = 403), (status = 404)))]
#[get("/admin/tenants/{id}")]
pub async fn get_tenant(
    _: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let t = tenant_by_id(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(AdminTenantOut::from(t)))
}

/// Switch a tenant off or on, trust it with private upstreams, set or remove its ceiling. What
/// the body leaves out is kept; the data planes follow within a second.
#[utoipa::path(tag = "admin", security(("bearer" = [])), request_body = AdminTenantIn,
    responses((status = 200, body = AdminTenantOut), (status = 401), (status = 403), (status = 404),
        (status = 422, description = "A field is wrong: each is named")))]
#[put("/admin/tenants/{id}")]
pub async fn update_tenant(
    a: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    body: ApiJson<AdminTenantIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let id = path.into_inner();
    let limits = match body.limits {
        None => None,
        Some(None) => Some(None),
        Some(Some(l)) => Some(checked_limits(&l).map_err(|p| under_limits(&p))?),
    };
    let t = state
        .config
        .change_tenant(
            id,
            TenantChange {
                is_active: body.is_active,
                trusted_upstreams: body.trusted_upstreams,
                limits,
            },
        )
        .await?;
    tracing::info!(
        admin = a.user.id,
        tenant = t.id,
        active = t.is_active,
        trusted = t.trusted_upstreams,
        ceiling = ?(t.limit_rpm, t.limit_burst, t.limit_day, t.limit_month),
        "tenant changed through the admin API"
    );
    Ok(HttpResponse::Ok().json(AdminTenantOut::from(t)))
}
