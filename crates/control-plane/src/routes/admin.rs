//! Platform administration: every tenant, its usage, and switching tenants off and on.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::Utc;
use domain::entities::tenant;
use domain::plan::TenantLimits;
use domain::store::{self, TenantChange};
use domain::validate::{self, Problems, TenantLimitFields};
use serde::Deserialize;

use super::overview::month_start;
use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, optional_number, redirect, render, render_status};
use crate::session::{AdminUser, CsrfForm, NoFields, flash};
use crate::state::AppState;

/// The platform admin's pages.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/admin/analytics",
        web::get().to(super::analytics::admin_analytics),
    )
    .route("/admin/logs", web::get().to(super::analytics::admin_logs))
    .route(
        "/admin/logs/{request_id}",
        web::get().to(super::analytics::admin_record),
    )
    .route("/admin/tenants", web::get().to(tenants))
    .route("/admin/tenants/{id}/toggle", web::post().to(toggle))
    .route("/admin/tenants/{id}/limits", web::get().to(limits_form))
    .route("/admin/tenants/{id}/limits", web::post().to(save_limits))
    .route("/admin/tenants/{id}/trust", web::post().to(toggle_trust));
}

pub struct TenantRow {
    pub tenant: tenant::Model,
    pub requests: i64,
    pub rejected: i64,
}

impl TenantRow {
    /// The tenant's ceiling in words, a window each ("600/min (burst 50)", "10000/day"); empty
    /// when it has none.
    pub fn ceiling(&self) -> Vec<String> {
        let t = &self.tenant;
        TenantLimits::from_columns(t.limit_rpm, t.limit_burst, t.limit_day, t.limit_month)
            .map(|l| ceiling_parts(&l))
            .unwrap_or_default()
    }
}

fn ceiling_words(l: &TenantLimits) -> String {
    ceiling_parts(l).join(" · ")
}

fn ceiling_parts(l: &TenantLimits) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(rpm) = l.requests_per_minute {
        match l.burst.filter(|b| *b != rpm) {
            Some(b) => parts.push(format!("{rpm}/min (burst {b})")),
            None => parts.push(format!("{rpm}/min")),
        }
    }
    if let Some(d) = l.requests_per_day {
        parts.push(format!("{d}/day"));
    }
    if let Some(m) = l.requests_per_month {
        parts.push(format!("{m}/month"));
    }
    parts
}

#[derive(Template)]
#[template(path = "admin_tenants.html")]
struct TenantsPage {
    layout: Layout,
    tenants: Vec<TenantRow>,
}

pub async fn tenants(a: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let usage = store::per_tenant_since(&state.db, month_start(Utc::now().date_naive())).await?;
    let tenants = store::list_tenants(&state.db)
        .await?
        .into_iter()
        .map(|t| {
            let c = usage.get(&t.id).copied().unwrap_or_default();
            TenantRow {
                tenant: t,
                requests: c.requests,
                rejected: c.rejected,
            }
        })
        .collect();
    render(&TenantsPage {
        layout: Layout::admin(&a, &state, "Tenants"),
        tenants,
    })
}

/// A tenant by id, for the admin's toggles.
async fn tenant_by_id(state: &AppState, id: i64) -> Result<tenant::Model, UiError> {
    store::list_tenants(&state.db)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or(UiError::NotFound)
}

/// What an admin's toggle did (published to the data planes by the write): logged, and said in a
/// flash.
fn toggled(a: &AdminUser, t: &tenant::Model, what: &str, message: String) -> HttpResponse {
    tracing::info!(
        admin = a.user.id,
        tenant = t.id,
        active = t.is_active,
        trusted = t.trusted_upstreams,
        "tenant {what} changed"
    );
    flash(&a.session, message);
    redirect("/admin/tenants")
}

/// Trusts a tenant with loopback and private upstreams, or takes that back.
pub async fn toggle_trust(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let current = tenant_by_id(&state, path.into_inner()).await?;
    let t = state
        .config
        .set_tenant_trusted(current.id, !current.trusted_upstreams)
        .await?;
    let message = if t.trusted_upstreams {
        format!(
            "Tenant '{}' may now use loopback and private upstreams.",
            t.slug
        )
    } else {
        format!(
            "Tenant '{}' may no longer use loopback and private upstreams.",
            t.slug
        )
    };
    Ok(toggled(&a, &t, "upstream trust", message))
}

pub async fn toggle(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let current = tenant_by_id(&state, path.into_inner()).await?;
    let t = state
        .config
        .set_tenant_active(current.id, !current.is_active)
        .await?;
    let state_word = if t.is_active {
        "reactivated"
    } else {
        "deactivated"
    };
    let message = format!("Tenant '{}' {state_word}.", t.slug);
    Ok(toggled(&a, &t, "activity", message))
}

#[derive(Deserialize, Default)]
pub struct LimitsForm {
    #[serde(default)]
    requests_per_minute: String,
    #[serde(default)]
    burst: String,
    #[serde(default)]
    requests_per_day: String,
    #[serde(default)]
    requests_per_month: String,
}

#[derive(Template)]
#[template(path = "admin_tenant_limits.html")]
struct LimitsPage {
    layout: Layout,
    tenant: tenant::Model,
    form: LimitsForm,
    errors: FieldErrors,
}

/// The form for a tenant's ceiling.
pub async fn limits_form(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let t = tenant_by_id(&state, path.into_inner()).await?;
    let show = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let form = LimitsForm {
        requests_per_minute: show(t.limit_rpm),
        burst: show(t.limit_burst),
        requests_per_day: show(t.limit_day),
        requests_per_month: show(t.limit_month),
    };
    let title = format!("Ceiling of {}", t.slug);
    render(&LimitsPage {
        layout: Layout::admin(&a, &state, &title),
        tenant: t,
        form,
        errors: FieldErrors::default(),
    })
}

/// Sets or (every field empty) removes a tenant's ceiling.
pub async fn save_limits(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<LimitsForm>,
) -> Result<HttpResponse, UiError> {
    let current = tenant_by_id(&state, path.into_inner()).await?;
    let mut errors = FieldErrors::default();
    let mut number = |field: &'static str, label: &str, v: &str| {
        optional_number(v).unwrap_or_else(|_| {
            errors.add(field, format!("{label} must be a positive whole number."));
            None
        })
    };
    let fields = TenantLimitFields {
        requests_per_minute: number(
            "requests_per_minute",
            "Requests per minute",
            &form.requests_per_minute,
        ),
        burst: number("burst", "Burst", &form.burst),
        requests_per_day: number(
            "requests_per_day",
            "Requests per day",
            &form.requests_per_day,
        ),
        requests_per_month: number(
            "requests_per_month",
            "Requests per month",
            &form.requests_per_month,
        ),
    };
    let mut problems = Problems::default();
    let limits = validate::tenant_limits(&fields, &mut problems);
    match errors.or_value(&problems, limits) {
        Ok(limits) => {
            let t = state
                .config
                .change_tenant(
                    current.id,
                    TenantChange {
                        limits: Some(limits),
                        ..TenantChange::default()
                    },
                )
                .await?;
            let message = match limits {
                Some(l) => format!(
                    "Tenant '{}' now has a ceiling of {}.",
                    t.slug,
                    ceiling_words(&l)
                ),
                None => format!("Tenant '{}' has no ceiling now.", t.slug),
            };
            Ok(toggled(&a, &t, "ceiling", message))
        }
        Err(errors) => {
            let title = format!("Ceiling of {}", current.slug);
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &LimitsPage {
                    layout: Layout::admin(&a, &state, &title),
                    tenant: current,
                    form,
                    errors,
                },
            )
        }
    }
}
