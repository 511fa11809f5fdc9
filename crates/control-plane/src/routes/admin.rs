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

/// Trusts a tenant with loopback and private upstreams, or takes that back.
pub async fn toggle_trust(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let current = store::list_tenants(&state.db)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or(UiError::NotFound)?;
    let t = store::set_tenant_trusted(&state.db, id, !current.trusted_upstreams).await?;
    state.changed().await;
    tracing::info!(
        admin = a.user.id,
        tenant = t.id,
        trusted = t.trusted_upstreams,
        "tenant upstream trust changed"
    );
    flash(
        &a.session,
        if t.trusted_upstreams {
            format!(
                "Tenant '{}' may now use loopback and private upstreams.",
                t.slug
            )
        } else {
            format!(
                "Tenant '{}' may no longer use loopback and private upstreams.",
                t.slug
            )
        },
    );
    Ok(redirect("/admin/tenants"))
}

pub async fn toggle(
    a: AdminUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let current = store::list_tenants(&state.db)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or(UiError::NotFound)?;
    let t = store::set_tenant_active(&state.db, id, !current.is_active).await?;
    state.changed().await;
    tracing::info!(
        admin = a.user.id,
        tenant = t.id,
        active = t.is_active,
        "tenant toggled"
    );
    flash(
        &a.session,
        format!(
            "Tenant '{}' {}.",
            t.slug,
            if t.is_active {
                "reactivated"
            } else {
                "deactivated"
            }
        ),
    );
    Ok(redirect("/admin/tenants"))
}
