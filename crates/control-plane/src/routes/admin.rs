//! Platform administration: every tenant, its usage, and switching tenants off and on.

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::Utc;
use domain::entities::tenant;
use domain::store;

use super::overview::month_start;
use crate::errors::UiError;
use crate::pages::{Layout, redirect, render};
use crate::session::{AdminUser, CsrfForm, NoFields, flash};
use crate::state::AppState;

pub struct TenantRow {
    pub tenant: tenant::Model,
    pub requests: i64,
    pub rejected: i64,
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
