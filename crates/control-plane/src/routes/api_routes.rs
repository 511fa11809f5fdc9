//! An API's routes in the dashboard: the list in the order they are tried, add / edit / delete,
//! and a box that says which route a method and path would take (the data plane's own matcher).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use domain::entities::{api, api_route};
// The methods a form offers: the ones a route may name, in `Allow` order.
use domain::route::{METHOD_NAMES as METHODS, Methods, NewRoute, RouteMatch, RouteTable};
use domain::store;
use domain::validate::{self, Problems, RouteFields};
use serde::Deserialize;

use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, optional_number, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

/// A route as the list shows it.
pub struct RouteRow {
    pub id: i64,
    pub path: String,
    pub kind: String,
    pub methods: String,
    pub priority: i32,
    pub strip_prefix: bool,
    pub timeout: String,
    /// The route's own window ("10/min, burst 3, 100/day"), empty when it has none.
    pub limit: String,
    pub cost: i32,
}

/// What the "test a path" box found.
pub struct Probe {
    pub method: String,
    pub path: String,
    /// `ok`: a route takes it; `err`: 404 or 405.
    pub class: &'static str,
    pub answer: String,
}

#[derive(Template)]
#[template(path = "routes.html")]
struct RoutesPage {
    layout: Layout,
    api: api::Model,
    gateway_url: String,
    routes: Vec<RouteRow>,
    methods: &'static [&'static str],
    probe: Option<Probe>,
}

#[derive(Deserialize, Default)]
pub struct ProbeQuery {
    #[serde(default)]
    method: String,
    #[serde(default)]
    path: Option<String>,
}

/// The route form; one checkbox per method (`m_GET`…).
#[derive(Deserialize, Default)]
pub struct RouteForm {
    #[serde(default)]
    path: String,
    #[serde(default)]
    match_kind: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    strip_prefix: Option<String>,
    #[serde(default)]
    timeout_ms: String,
    #[serde(default)]
    retries: String,
    #[serde(default)]
    rl_requests_per_minute: String,
    #[serde(default)]
    rl_burst: String,
    #[serde(default)]
    rl_requests_per_day: String,
    #[serde(default)]
    cost: String,
    #[serde(default, rename = "m_GET")]
    m_get: Option<String>,
    #[serde(default, rename = "m_HEAD")]
    m_head: Option<String>,
    #[serde(default, rename = "m_POST")]
    m_post: Option<String>,
    #[serde(default, rename = "m_PUT")]
    m_put: Option<String>,
    #[serde(default, rename = "m_PATCH")]
    m_patch: Option<String>,
    #[serde(default, rename = "m_DELETE")]
    m_delete: Option<String>,
    #[serde(default, rename = "m_OPTIONS")]
    m_options: Option<String>,
    #[serde(default, rename = "m_TRACE")]
    m_trace: Option<String>,
}

impl RouteForm {
    /// The ticked methods, in [`METHODS`] order.
    fn methods(&self) -> Vec<&'static str> {
        let ticks = [
            &self.m_get,
            &self.m_head,
            &self.m_post,
            &self.m_put,
            &self.m_patch,
            &self.m_delete,
            &self.m_options,
            &self.m_trace,
        ];
        METHODS
            .iter()
            .zip(ticks)
            .filter(|(_, t)| t.is_some())
            .map(|(m, _)| *m)
            .collect()
    }

    /// Whether the form ticks `method` (for the template).
    pub fn has(&self, method: &str) -> bool {
        self.methods().contains(&method)
    }

    fn of(r: &api_route::Model) -> Self {
        let methods = Methods::from_stored(&r.methods);
        let tick = |m: &str| methods.names().any(|n| n == m).then(|| "on".to_owned());
        let num = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        Self {
            path: r.path.clone(),
            match_kind: r.match_kind.clone(),
            priority: r.priority.to_string(),
            strip_prefix: r.strip_prefix.then(|| "on".into()),
            timeout_ms: num(r.timeout_ms.map(i64::from)),
            retries: num(r.retries.map(i64::from)),
            rl_requests_per_minute: num(r.rl_requests_per_minute),
            rl_burst: num(r.rl_burst),
            rl_requests_per_day: num(r.rl_requests_per_day),
            cost: r.cost.to_string(),
            m_get: tick("GET"),
            m_head: tick("HEAD"),
            m_post: tick("POST"),
            m_put: tick("PUT"),
            m_patch: tick("PATCH"),
            m_delete: tick("DELETE"),
            m_options: tick("OPTIONS"),
            m_trace: tick("TRACE"),
        }
    }
}

#[derive(Template)]
#[template(path = "route_form.html")]
struct RouteFormPage {
    layout: Layout,
    api: api::Model,
    /// `None` when adding.
    id: Option<i64>,
    form: RouteForm,
    errors: FieldErrors,
    methods: &'static [&'static str],
}

fn row(r: &api_route::Model) -> RouteRow {
    let methods = Methods::from_stored(&r.methods);
    RouteRow {
        id: r.id,
        path: r.path.clone(),
        kind: r.match_kind.clone(),
        methods: if methods.is_any() {
            "any".into()
        } else {
            methods.names().collect::<Vec<_>>().join(", ")
        },
        priority: r.priority,
        strip_prefix: r.strip_prefix,
        timeout: r.timeout_ms.map(|t| format!("{t} ms")).unwrap_or_default(),
        limit: r
            .rl_requests_per_minute
            .map(|rpm| {
                // A burst equal to the rate is the default: not worth a word.
                let burst = r
                    .rl_burst
                    .filter(|b| *b != rpm)
                    .map(|b| format!(", burst {b}"));
                let day = r.rl_requests_per_day.map(|d| format!(", {d}/day"));
                format!(
                    "{rpm}/min{}{}",
                    burst.unwrap_or_default(),
                    day.unwrap_or_default()
                )
            })
            .unwrap_or_default(),
        cost: r.cost,
    }
}

/// All of an API's routes (the dashboard shows every one; an API has tens, not thousands).
async fn all_routes(
    state: &AppState,
    tenant_id: i64,
    api_id: i64,
) -> Result<Vec<api_route::Model>, UiError> {
    Ok(store::list_routes(&state.db, tenant_id, api_id, None, 10_000).await?)
}

pub async fn list(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    q: web::Query<ProbeQuery>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    let stored = all_routes(&state, u.tenant.id, a.id).await?;
    let table = RouteTable::compile(
        stored
            .iter()
            .filter_map(|r| domain::snapshot::route_of(r).ok())
            .collect(),
    );
    // Listed in the order the gateway tries them.
    let routes = table
        .routes()
        .iter()
        .filter_map(|r| stored.iter().find(|s| s.id == r.id))
        .map(row)
        .collect();
    let probe = q.path.as_deref().map(|p| probe(&table, &q.method, p));
    let gateway_url = format!(
        "{}/{}/{}",
        state.public_url.trim_end_matches('/'),
        u.tenant.slug,
        a.slug
    );
    render(&RoutesPage {
        layout: Layout::tenant(&u, &state, format!("Routes of {}", a.name), "apis"),
        api: a,
        gateway_url,
        routes,
        methods: &METHODS,
        probe,
    })
}

/// What the gateway would do with `method` `path` (below the API).
fn probe(table: &RouteTable, method: &str, path: &str) -> Probe {
    let method = if method.is_empty() { "GET" } else { method };
    let path = path.trim();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    // The query is not part of matching.
    let matched = path.split(['?', '#']).next().unwrap_or("/");
    let (class, answer) = if table.is_empty() {
        (
            "ok",
            "This API has no routes: every path and method is forwarded.".to_owned(),
        )
    } else {
        match table.find(method, matched) {
            RouteMatch::Found(_, r) => {
                let forwarded = r.forwarded_rest(matched);
                let forwarded = if forwarded.is_empty() { "/" } else { forwarded };
                (
                    "ok",
                    format!(
                        "Route {} ({} {}) takes it; the upstream receives {}.",
                        r.path,
                        r.kind.as_str(),
                        r.methods,
                        forwarded
                    ),
                )
            }
            RouteMatch::NoPath => (
                "err",
                "404 route_not_found: no route matches this path.".into(),
            ),
            RouteMatch::WrongMethod(allow) => (
                "err",
                format!("405 method_not_allowed: routes match this path with {allow} only."),
            ),
        }
    };
    Probe {
        method: method.to_owned(),
        path,
        class,
        answer,
    }
}

pub async fn new(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    let form = RouteForm {
        match_kind: "prefix".into(),
        priority: "0".into(),
        ..RouteForm::default()
    };
    render(&RouteFormPage {
        layout: Layout::tenant(&u, &state, "New route", "apis"),
        api: a,
        id: None,
        form,
        errors: FieldErrors::default(),
        methods: &METHODS,
    })
}

pub async fn edit(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    let a = store::get_api(&state.db, u.tenant.id, api_id).await?;
    let r = store::get_route(&state.db, u.tenant.id, a.id, id).await?;
    render(&RouteFormPage {
        layout: Layout::tenant(&u, &state, "Edit route", "apis"),
        api: a,
        id: Some(r.id),
        form: RouteForm::of(&r),
        errors: FieldErrors::default(),
        methods: &METHODS,
    })
}

/// The form as a route to store, or what is wrong with each field.
fn parse_route(form: &RouteForm) -> Result<NewRoute, FieldErrors> {
    let mut errors = FieldErrors::default();
    // Text that is no number is the form's own problem; the number's range is the rule's.
    let mut number = |field: &'static str, label: &str, text: &str| {
        optional_number(text).unwrap_or_else(|_| {
            errors.add(field, format!("{label} must be a whole number."));
            None
        })
    };
    let priority = number("priority", "Priority", &form.priority);
    let timeout_ms = number("timeout_ms", "Timeout", &form.timeout_ms);
    let retries = number("retries", "Retries", &form.retries);
    let rpm = number(
        "rate_limit.requests_per_minute",
        "Route limit per minute",
        &form.rl_requests_per_minute,
    );
    let burst = number("rate_limit.burst", "Route burst", &form.rl_burst);
    let per_day = number(
        "rate_limit.requests_per_day",
        "Route limit per day",
        &form.rl_requests_per_day,
    );
    let cost = number("cost", "Cost", &form.cost);
    // A route's own window is there when any of its fields is filled in (the rule names what
    // is missing).
    let rate_limit = (rpm.is_some() || burst.is_some() || per_day.is_some()).then_some(
        validate::RouteLimitFields {
            requests_per_minute: rpm,
            burst,
            requests_per_day: per_day,
        },
    );
    let methods = form.methods();
    let mut problems = Problems::default();
    let route = validate::route(
        &RouteFields {
            path: &form.path,
            match_kind: Some(&form.match_kind),
            methods: &methods,
            priority,
            strip_prefix: form.strip_prefix.is_some(),
            timeout_ms,
            retries,
            rate_limit,
            cost,
        },
        &mut problems,
    );
    errors.or_value(&problems, route)
}

pub async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<RouteForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, path.into_inner(), None, form).await
}

pub async fn update(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    CsrfForm(form): CsrfForm<RouteForm>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    save(u, state, api_id, Some(id), form).await
}

async fn save(
    u: TenantUser,
    state: web::Data<AppState>,
    api_id: i64,
    id: Option<i64>,
    form: RouteForm,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, api_id).await?;
    if let Some(id) = id {
        store::get_route(&state.db, u.tenant.id, a.id, id).await?;
    }
    let errors = match parse_route(&form) {
        Ok(new) => {
            if let Some(old) =
                store::duplicate_route(&state.db, u.tenant.id, a.id, &new, id).await?
            {
                let mut e = FieldErrors::default();
                e.add(
                    "path",
                    format!(
                        "Route {} already takes {} with these methods: give this one other methods.",
                        old.path, old.match_kind
                    ),
                );
                e
            } else {
                let path = new.path.to_string();
                match id {
                    None => state.config.create_route(u.tenant.id, a.id, new).await?,
                    Some(id) => {
                        state
                            .config
                            .update_route(u.tenant.id, a.id, id, new)
                            .await?
                    }
                };
                flash(&u.session, format!("Route {path} saved."));
                return Ok(redirect(&format!("/apis/{}/routes", a.id)));
            }
        }
        Err(errors) => errors,
    };
    let title = if id.is_some() {
        "Edit route"
    } else {
        "New route"
    };
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &RouteFormPage {
            layout: Layout::tenant(&u, &state, title, "apis"),
            api: a,
            id,
            form,
            errors,
            methods: &METHODS,
        },
    )
}

pub async fn delete(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<(i64, i64)>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let (api_id, id) = path.into_inner();
    let r = store::get_route(&state.db, u.tenant.id, api_id, id).await?;
    state.config.delete_route(u.tenant.id, api_id, r.id).await?;
    flash(&u.session, format!("Route {} deleted.", r.path));
    Ok(redirect(&format!("/apis/{api_id}/routes")))
}
