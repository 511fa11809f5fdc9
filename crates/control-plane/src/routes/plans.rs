//! Plans: how much a key (or client) may call.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use domain::entities::plan;
use domain::plan::{Enforcement, PlanLimits};
use domain::store::{self, StoreError};
use domain::validate::{self, PlanFields, Problems};
use serde::Deserialize;

use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, optional_number, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

pub struct PlanRow {
    pub plan: plan::Model,
    pub keys: u64,
    pub clients: u64,
}

#[derive(Template)]
#[template(path = "plans.html")]
struct PlansPage {
    layout: Layout,
    plans: Vec<PlanRow>,
    /// The quota calendar: the zone shown in the field, what a change left pending, what is wrong.
    time_zone: String,
    pending: Option<String>,
    zone_error: Option<String>,
    zones: &'static [chrono_tz::Tz],
}

/// What the last zone change left pending, in words, while it is.
fn pending_change(t: &domain::entities::tenant::Model) -> Option<String> {
    use domain::calendar::Kind;
    let cal = t.calendar();
    let (before, _) = cal.before?;
    let at = |kind| {
        cal.new_zone_from_us(kind)
            .and_then(chrono::DateTime::from_timestamp_micros)
            .filter(|at| *at > chrono::Utc::now())
    };
    let month = at(Kind::Month)?;
    let day = at(Kind::Day).map_or_else(
        || "days are already".to_owned(),
        |d| format!("days from {} UTC,", d.format("%Y-%m-%d %H:%M")),
    );
    Some(format!(
        "Changed from {}: {day} months from {} UTC in the new zone; until then the running \
         windows end as they would have in {}.",
        before.name(),
        month.format("%Y-%m-%d %H:%M"),
        before.name()
    ))
}

#[derive(Deserialize, Default)]
pub struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    requests_per_minute: String,
    #[serde(default)]
    burst: String,
    #[serde(default)]
    requests_per_day: String,
    #[serde(default)]
    requests_per_month: String,
    #[serde(default)]
    enforcement: String,
}

#[derive(Template)]
#[template(path = "plan_form.html")]
struct PlanFormPage {
    layout: Layout,
    id: Option<i64>,
    form: PlanForm,
    errors: FieldErrors,
}

pub async fn list(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let zone = u.tenant.calendar().zone.name().to_owned();
    list_page(u, state, zone, None).await
}

async fn list_page(
    u: TenantUser,
    state: web::Data<AppState>,
    time_zone: String,
    zone_error: Option<String>,
) -> Result<HttpResponse, UiError> {
    let mut plans = Vec::new();
    for p in store::list_plans(&state.db, u.tenant.id).await? {
        let (keys, clients) = store::plan_usage(&state.db, p.id).await?;
        plans.push(PlanRow {
            plan: p,
            keys,
            clients,
        });
    }
    let page = PlansPage {
        layout: Layout::tenant(&u, &state, "Plans", "plans"),
        plans,
        pending: pending_change(&u.tenant),
        time_zone,
        zones: &chrono_tz::TZ_VARIANTS,
        zone_error,
    };
    if page.zone_error.is_some() {
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    } else {
        render(&page)
    }
}

#[derive(Deserialize)]
pub struct ZoneForm {
    #[serde(default)]
    time_zone: String,
}

/// Sets the time zone of the tenant's day and month windows (from the next of each).
pub async fn set_time_zone(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<ZoneForm>,
) -> Result<HttpResponse, UiError> {
    let zone = match domain::calendar::parse_zone(&form.time_zone) {
        Ok(z) => z,
        Err(m) => {
            let error = format!("Time zone {m}.");
            return list_page(u, state, form.time_zone, Some(error)).await;
        }
    };
    match state.config.set_time_zone(u.tenant.id, zone).await {
        Ok(_) => {
            flash(
                &u.session,
                format!(
                    "Quota time zone set to {}: it applies from the next day and the next month.",
                    zone.name()
                ),
            );
            Ok(redirect("/plans"))
        }
        Err(StoreError::Conflict(m)) => list_page(u, state, form.time_zone, Some(m)).await,
        Err(e) => Err(e.into()),
    }
}

pub async fn new(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let form = PlanForm {
        enforcement: "strict".into(),
        ..PlanForm::default()
    };
    let layout = Layout::tenant(&u, &state, "New plan", "plans");
    render(&PlanFormPage {
        layout,
        id: None,
        form,
        errors: FieldErrors::default(),
    })
}

pub async fn edit(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let p = store::get_plan(&state.db, u.tenant.id, path.into_inner()).await?;
    let show = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let form = PlanForm {
        name: p.name,
        requests_per_minute: p.requests_per_minute.to_string(),
        burst: show(p.burst),
        requests_per_day: show(p.requests_per_day),
        requests_per_month: show(p.requests_per_month),
        enforcement: p.enforcement,
    };
    let layout = Layout::tenant(&u, &state, "Edit plan", "plans");
    render(&PlanFormPage {
        layout,
        id: Some(p.id),
        form,
        errors: FieldErrors::default(),
    })
}

/// Parses plan fields, or says what is wrong with each.
pub fn parse_plan(
    name: &str,
    rpm: &str,
    burst: &str,
    day: &str,
    month: &str,
    enforcement: &str,
) -> Result<(String, PlanLimits, Enforcement), FieldErrors> {
    let mut errors = FieldErrors::default();
    // Text that is no number at all is the form's own problem; what the numbers may be is the
    // rule's.
    let mut number = |field: &'static str, label: &str, v: &str| {
        optional_number(v).unwrap_or_else(|_| {
            errors.add(field, format!("{label} must be a positive whole number."));
            None
        })
    };
    let fields = PlanFields {
        name,
        requests_per_minute: number("requests_per_minute", "Requests per minute", rpm),
        burst: number("burst", "Burst", burst),
        requests_per_day: number("requests_per_day", "Requests per day", day),
        requests_per_month: number("requests_per_month", "Requests per month", month),
        enforcement: Some(enforcement),
    };
    let mut problems = Problems::default();
    let plan = validate::plan(&fields, &mut problems);
    errors.or_value(&problems, plan)
}

pub async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<PlanForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, None, form).await
}

pub async fn update(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<PlanForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, Some(path.into_inner()), form).await
}

async fn save(
    u: TenantUser,
    state: web::Data<AppState>,
    id: Option<i64>,
    form: PlanForm,
) -> Result<HttpResponse, UiError> {
    if let Some(id) = id {
        store::get_plan(&state.db, u.tenant.id, id).await?;
    }
    let parsed = parse_plan(
        &form.name,
        &form.requests_per_minute,
        &form.burst,
        &form.requests_per_day,
        &form.requests_per_month,
        &form.enforcement,
    );
    match parsed {
        Ok((name, limits, enforcement)) => {
            match id {
                None => {
                    state
                        .config
                        .create_plan(u.tenant.id, &name, limits, enforcement)
                        .await?
                }
                Some(id) => {
                    state
                        .config
                        .update_plan(u.tenant.id, id, &name, limits, enforcement)
                        .await?
                }
            };
            flash(&u.session, format!("Plan '{name}' saved."));
            Ok(redirect("/plans"))
        }
        Err(errors) => {
            let layout = Layout::tenant(
                &u,
                &state,
                if id.is_some() {
                    "Edit plan"
                } else {
                    "New plan"
                },
                "plans",
            );
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &PlanFormPage {
                    layout,
                    id,
                    form,
                    errors,
                },
            )
        }
    }
}

pub async fn delete(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let p = store::get_plan(&state.db, u.tenant.id, path.into_inner()).await?;
    match state.config.delete_plan(u.tenant.id, p.id).await {
        Ok(()) => {
            flash(&u.session, format!("Plan '{}' deleted.", p.name));
        }
        Err(StoreError::InUse(_)) => {
            let (keys, clients) = store::plan_usage(&state.db, p.id).await?;
            flash(
                &u.session,
                format!(
                    "Plan '{}' was not deleted: {keys} key(s) and {clients} client(s) still use it. Move them to another plan first.",
                    p.name
                ),
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(redirect("/plans"))
}
