//! An API's targets in the dashboard: each with its live state as the data planes reported it
//! (up or down, circuit, last check's latency, failures, in flight), add / edit / delete, the reset
//! of a circuit, and the API's retries, health check and circuit breaker.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use domain::entities::{api, api_target};
use domain::resilience::{ApiResilience, MAX_TARGETS};
use domain::store::{self, StoreError};
use domain::validate::{self, CircuitBreakerFields, HealthCheckFields, Problems, ResilienceFields};
use serde::Deserialize;

use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, optional_number, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::{AppState, TargetHealth};

/// One data plane's view of a target, as the list shows it.
pub struct NodeState {
    pub node: String,
    /// `ok` (up), `off` (down or open), `warn` (half-open).
    pub class: &'static str,
    pub state: &'static str,
    pub circuit: String,
    pub latency: String,
    pub error: String,
    pub failures: u32,
    pub in_flight: u32,
}

pub struct TargetRow {
    pub target: api_target::Model,
    pub first: bool,
    pub nodes: Vec<NodeState>,
}

#[derive(Deserialize, Default)]
pub struct TargetForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    weight: String,
}

/// The API's retries, health check and circuit breaker, as the form holds them.
#[derive(Deserialize, Default)]
pub struct ResilienceForm {
    #[serde(default)]
    retries: String,
    #[serde(default)]
    hc_enabled: Option<String>,
    #[serde(default)]
    hc_path: String,
    #[serde(default)]
    hc_interval_ms: String,
    #[serde(default)]
    hc_timeout_ms: String,
    #[serde(default)]
    hc_healthy_threshold: String,
    #[serde(default)]
    hc_unhealthy_threshold: String,
    #[serde(default)]
    hc_status_min: String,
    #[serde(default)]
    hc_status_max: String,
    #[serde(default)]
    cb_enabled: Option<String>,
    #[serde(default)]
    cb_failure_threshold: String,
    #[serde(default)]
    cb_recovery_timeout_ms: String,
    #[serde(default)]
    cb_half_open_max_calls: String,
}

impl ResilienceForm {
    fn of(r: &ApiResilience) -> Self {
        let hc = r.health_check.clone().unwrap_or_default();
        let cb = r.circuit_breaker;
        Self {
            retries: r.retries.map(|n| n.to_string()).unwrap_or_default(),
            hc_enabled: r.health_check.is_some().then(|| "on".into()),
            hc_path: hc.path,
            hc_interval_ms: hc.interval_ms.to_string(),
            hc_timeout_ms: hc.timeout_ms.to_string(),
            hc_healthy_threshold: hc.healthy_threshold.to_string(),
            hc_unhealthy_threshold: hc.unhealthy_threshold.to_string(),
            hc_status_min: hc.status_min.to_string(),
            hc_status_max: hc.status_max.to_string(),
            cb_enabled: cb.enabled.then(|| "on".into()),
            cb_failure_threshold: cb.failure_threshold.to_string(),
            cb_recovery_timeout_ms: cb.recovery_timeout_ms.to_string(),
            cb_half_open_max_calls: cb.half_open_max_calls.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "targets.html")]
struct TargetsPage {
    layout: Layout,
    api: api::Model,
    targets: Vec<TargetRow>,
    /// How many data planes reported lately.
    nodes: usize,
    add: TargetForm,
    resilience: ResilienceForm,
    default_retries: u32,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "target_form.html")]
struct TargetFormPage {
    layout: Layout,
    api: api::Model,
    id: i64,
    form: TargetForm,
    errors: FieldErrors,
}

fn node_state(h: TargetHealth) -> NodeState {
    let r = h.report;
    let (class, state) = match (r.up, r.circuit.as_str()) {
        (_, "half_open") => ("warn", "probing"),
        (true, _) => ("ok", "up"),
        (false, _) => ("off", "down"),
    };
    NodeState {
        node: h.node,
        class,
        state,
        circuit: r.circuit.replace('_', "-"),
        latency: r
            .last_check_ms
            .map(|ms| {
                if ms == 0 {
                    "<1 ms".to_owned()
                } else {
                    format!("{ms} ms")
                }
            })
            .unwrap_or_default(),
        error: r.last_error.unwrap_or_default(),
        failures: r.consecutive_failures,
        in_flight: r.in_flight,
    }
}

async fn page(
    u: &TenantUser,
    state: &AppState,
    a: api::Model,
    add: TargetForm,
    resilience: Option<ResilienceForm>,
    errors: FieldErrors,
) -> Result<TargetsPage, UiError> {
    let stored = store::list_targets(&state.db, u.tenant.id, a.id).await?;
    let health = state.target_health(u.tenant.id, a.id).await?;
    let mut nodes: Vec<&str> = health.iter().map(|h| h.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let nodes = nodes.len();
    let first_id = stored.first().map(|t| t.id);
    let targets = stored
        .into_iter()
        .map(|t| TargetRow {
            first: Some(t.id) == first_id,
            nodes: health
                .iter()
                .filter(|h| h.report.target_id == t.id)
                .cloned()
                .map(node_state)
                .collect(),
            target: t,
        })
        .collect::<Vec<_>>();
    let r = ApiResilience::of(&a);
    Ok(TargetsPage {
        layout: Layout::tenant(u, state, format!("Targets of {}", a.name), "apis"),
        default_retries: domain::resilience::default_retries(targets.len()),
        resilience: resilience.unwrap_or_else(|| ResilienceForm::of(&r)),
        api: a,
        targets,
        nodes,
        add,
        errors,
    })
}

pub async fn list(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    let weight = TargetForm {
        weight: "1".into(),
        ..TargetForm::default()
    };
    render(&page(&u, &state, a, weight, None, FieldErrors::default()).await?)
}

/// The target a form describes, or what is wrong with each field (an address the upstream policy
/// refuses for the tenant included).
async fn parse_target(
    state: &AppState,
    u: &TenantUser,
    form: &TargetForm,
) -> Result<domain::resilience::NewTarget, FieldErrors> {
    let mut errors = FieldErrors::default();
    let weight = optional_number(&form.weight).unwrap_or_else(|_| {
        errors.add("weight", "Weight must be a whole number.");
        None
    });
    let mut problems = Problems::default();
    let t = validate::target(&form.url, weight, &mut problems);
    errors.absorb(&problems);
    match t {
        Some(t) if errors.is_empty() => {
            if let Some(p) = state
                .upstream_problem(&t.url, u.tenant.trusted_upstreams)
                .await
            {
                errors.add("url", p);
                return Err(errors);
            }
            Ok(t)
        }
        _ => Err(errors),
    }
}

pub async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<TargetForm>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    let mut errors = match parse_target(&state, &u, &form).await {
        Ok(new) => {
            if store::count_targets(&state.db, a.id).await? < MAX_TARGETS {
                let url = new.url.to_string();
                state.config.create_target(u.tenant.id, a.id, new).await?;
                flash(&u.session, format!("Target {url} added."));
                return Ok(redirect(&format!("/apis/{}/targets", a.id)));
            }
            FieldErrors::default()
        }
        Err(e) => e,
    };
    if errors.is_empty() {
        errors.add("url", format!("An API has at most {MAX_TARGETS} targets."));
    }
    let p = page(&u, &state, a, form, None, errors).await?;
    render_status(StatusCode::UNPROCESSABLE_ENTITY, &p)
}

pub async fn edit(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    let a = store::get_api(&state.db, u.tenant.id, api_id).await?;
    let t = store::get_target(&state.db, u.tenant.id, a.id, id).await?;
    render(&TargetFormPage {
        layout: Layout::tenant(&u, &state, "Edit target", "apis"),
        api: a,
        id,
        form: TargetForm {
            url: t.url,
            weight: t.weight.to_string(),
        },
        errors: FieldErrors::default(),
    })
}

pub async fn update(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    CsrfForm(form): CsrfForm<TargetForm>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    let a = store::get_api(&state.db, u.tenant.id, api_id).await?;
    store::get_target(&state.db, u.tenant.id, a.id, id).await?;
    match parse_target(&state, &u, &form).await {
        Ok(new) => {
            let url = new.url.to_string();
            state
                .config
                .update_target(u.tenant.id, a.id, id, new)
                .await?;
            flash(&u.session, format!("Target {url} saved."));
            Ok(redirect(&format!("/apis/{}/targets", a.id)))
        }
        Err(errors) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &TargetFormPage {
                layout: Layout::tenant(&u, &state, "Edit target", "apis"),
                api: a,
                id,
                form,
                errors,
            },
        ),
    }
}

pub async fn delete(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    let t = store::get_target(&state.db, u.tenant.id, api_id, id).await?;
    match state.config.delete_target(u.tenant.id, api_id, id).await {
        Ok(()) => flash(&u.session, format!("Target {} deleted.", t.url)),
        Err(StoreError::InUse(_)) => flash(
            &u.session,
            "An API needs at least one target: add another before deleting this one.",
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(redirect(&format!("/apis/{api_id}/targets")))
}

pub async fn reset(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    let t = state.config.reset_target(u.tenant.id, api_id, id).await?;
    flash(
        &u.session,
        format!(
            "The circuit of {} is closed again on every data plane.",
            t.url
        ),
    );
    Ok(redirect(&format!("/apis/{api_id}/targets")))
}

/// The form's resilience settings, or what is wrong with each field.
fn parse_resilience(form: &ResilienceForm) -> Result<ApiResilience, FieldErrors> {
    let mut errors = FieldErrors::default();
    let mut number = |field: &'static str, text: &str| {
        optional_number(text).unwrap_or_else(|_| {
            errors.add(field, "This must be a whole number.");
            None
        })
    };
    let retries = number("retries", &form.retries);
    let health_check = HealthCheckFields {
        path: Some(form.hc_path.as_str()).filter(|p| !p.trim().is_empty()),
        interval_ms: number("health_check.interval_ms", &form.hc_interval_ms),
        timeout_ms: number("health_check.timeout_ms", &form.hc_timeout_ms),
        healthy_threshold: number("health_check.healthy_threshold", &form.hc_healthy_threshold),
        unhealthy_threshold: number(
            "health_check.unhealthy_threshold",
            &form.hc_unhealthy_threshold,
        ),
        status_min: number("health_check.status_min", &form.hc_status_min),
        status_max: number("health_check.status_max", &form.hc_status_max),
    };
    let circuit_breaker = CircuitBreakerFields {
        enabled: Some(form.cb_enabled.is_some()),
        failure_threshold: number(
            "circuit_breaker.failure_threshold",
            &form.cb_failure_threshold,
        ),
        recovery_timeout_ms: number(
            "circuit_breaker.recovery_timeout_ms",
            &form.cb_recovery_timeout_ms,
        ),
        half_open_max_calls: number(
            "circuit_breaker.half_open_max_calls",
            &form.cb_half_open_max_calls,
        ),
    };
    let mut problems = Problems::default();
    let r = validate::resilience(
        &ResilienceFields {
            retries,
            health_check: form.hc_enabled.is_some().then_some(health_check),
            circuit_breaker: Some(circuit_breaker),
        },
        &mut problems,
    );
    errors.or_value(&problems, r)
}

pub async fn save_resilience(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<ResilienceForm>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    match parse_resilience(&form) {
        Ok(r) => {
            state
                .config
                .set_api_resilience(u.tenant.id, a.id, r)
                .await?;
            flash(
                &u.session,
                "Retries, health check and circuit breaker saved.",
            );
            Ok(redirect(&format!("/apis/{}/targets", a.id)))
        }
        Err(errors) => {
            let add = TargetForm {
                weight: "1".into(),
                ..TargetForm::default()
            };
            let p = page(&u, &state, a, add, Some(form), errors).await?;
            render_status(StatusCode::UNPROCESSABLE_ENTITY, &p)
        }
    }
}
