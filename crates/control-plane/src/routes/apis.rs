//! APIs: what the gateway forwards to.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use domain::entities::api;
use domain::header::{
    DEFAULT_KEY_HEADER, DEFAULT_WEBSOCKET_IDLE_MS, UpstreamProtocol, UpstreamTimeout,
};
use domain::jwt::ApiAuth;
use domain::store::{self, NewApi, StoreError};
use domain::validate::{self, ApiFields, Problems};
use serde::Deserialize;

use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

pub struct ApiRow {
    pub api: api::Model,
    pub gateway_url: String,
    /// Targets besides its upstream URL.
    pub more_targets: u64,
}

#[derive(Template)]
#[template(path = "apis.html")]
struct ApisPage {
    layout: Layout,
    apis: Vec<ApiRow>,
}

#[derive(Deserialize, Default)]
pub struct ApiForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    upstream_url: String,
    #[serde(default)]
    key_header: String,
    #[serde(default)]
    timeout_ms: String,
    #[serde(default)]
    pass_encoded_slashes: Option<String>,
    #[serde(default)]
    log_query: Option<String>,
    /// `key`, `key_or_token` or `token`.
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identity_token: Option<String>,
    /// `http1` or `h2`.
    #[serde(default)]
    upstream_protocol: String,
    #[serde(default)]
    websocket_idle_timeout_ms: String,
    #[serde(default)]
    is_active: Option<String>,
}

#[derive(Template)]
#[template(path = "api_form.html")]
struct ApiFormPage {
    layout: Layout,
    /// `None` when creating.
    id: Option<i64>,
    form: ApiForm,
    errors: FieldErrors,
    gateway_prefix: String,
    /// The choices of `auth`: value and label.
    auth_choices: Vec<(&'static str, &'static str)>,
}

fn auth_choices() -> Vec<(&'static str, &'static str)> {
    ApiAuth::ALL
        .iter()
        .map(|a| (a.as_str(), a.label()))
        .collect()
}

fn gateway_prefix(state: &AppState, u: &TenantUser) -> String {
    format!(
        "{}/{}/",
        state.public_url.trim_end_matches('/'),
        u.tenant.slug
    )
}

pub async fn list(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let prefix = gateway_prefix(&state, &u);
    let mut apis = Vec::new();
    for api in store::list_apis(&state.db, u.tenant.id).await? {
        apis.push(ApiRow {
            gateway_url: format!("{prefix}{}/", api.slug),
            more_targets: store::count_targets(&state.db, api.id)
                .await?
                .saturating_sub(1),
            api,
        });
    }
    render(&ApisPage {
        layout: Layout::tenant(&u, &state, "APIs", "apis"),
        apis,
    })
}

pub async fn new(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let form = ApiForm {
        key_header: DEFAULT_KEY_HEADER.into(),
        timeout_ms: UpstreamTimeout::default().millis().to_string(),
        websocket_idle_timeout_ms: DEFAULT_WEBSOCKET_IDLE_MS.to_string(),
        upstream_protocol: UpstreamProtocol::default().as_str().into(),
        is_active: Some("on".into()),
        ..ApiForm::default()
    };
    let page = ApiFormPage {
        gateway_prefix: gateway_prefix(&state, &u),
        auth_choices: auth_choices(),
        layout: Layout::tenant(&u, &state, "New API", "apis"),
        id: None,
        form,
        errors: FieldErrors::default(),
    };
    render(&page)
}

pub async fn edit(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    let form = ApiForm {
        name: a.name,
        slug: a.slug,
        upstream_url: a.upstream_url,
        key_header: a.key_header,
        timeout_ms: a.timeout_ms.to_string(),
        pass_encoded_slashes: a.pass_encoded_slashes.then(|| "on".into()),
        log_query: a.log_query.then(|| "on".into()),
        auth: a.auth,
        identity_token: a.identity_token.then(|| "on".into()),
        upstream_protocol: a.upstream_protocol,
        websocket_idle_timeout_ms: a.websocket_idle_timeout_ms.to_string(),
        is_active: a.is_active.then(|| "on".into()),
    };
    let page = ApiFormPage {
        gateway_prefix: gateway_prefix(&state, &u),
        auth_choices: auth_choices(),
        layout: Layout::tenant(&u, &state, "Edit API", "apis"),
        id: Some(a.id),
        form,
        errors: FieldErrors::default(),
    };
    render(&page)
}

/// Parses the form into a [`NewApi`], or says what is wrong with each field.
pub fn parse_api(form: &ApiForm) -> Result<NewApi, FieldErrors> {
    let mut errors = FieldErrors::default();
    // Text that is no number at all is the form's own problem; the number's range is the rule's.
    let mut millis = |field: &'static str, text: &str, what: &str| match text.trim() {
        "" => None,
        t => {
            let ms = t.parse::<i64>().ok();
            if ms.is_none() {
                errors.add(
                    field,
                    format!("{what} must be a whole number of milliseconds."),
                );
            }
            ms
        }
    };
    let timeout_ms = millis("timeout_ms", &form.timeout_ms, "Timeout");
    let websocket_idle_timeout_ms = millis(
        "websocket_idle_timeout_ms",
        &form.websocket_idle_timeout_ms,
        "WebSocket idle timeout",
    );
    let mut problems = Problems::default();
    let api = validate::api(
        &ApiFields {
            name: &form.name,
            slug: &form.slug,
            upstream_url: &form.upstream_url,
            key_header: Some(&form.key_header),
            timeout_ms,
            pass_encoded_slashes: form.pass_encoded_slashes.is_some(),
            log_query: form.log_query.is_some(),
            auth: Some(&form.auth),
            identity_token: form.identity_token.is_some(),
            upstream_protocol: Some(&form.upstream_protocol),
            websocket_idle_timeout_ms,
        },
        &mut problems,
    );
    errors.or_value(&problems, api)
}

pub async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<ApiForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, None, form).await
}

pub async fn update(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<ApiForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, Some(path.into_inner()), form).await
}

async fn save(
    u: TenantUser,
    state: web::Data<AppState>,
    id: Option<i64>,
    form: ApiForm,
) -> Result<HttpResponse, UiError> {
    if let Some(id) = id {
        store::get_api(&state.db, u.tenant.id, id).await?;
    }
    let parsed = parse_api(&form);
    let parsed = match parsed {
        Ok(new) => match state
            .upstream_problem(&new.upstream_url, u.tenant.trusted_upstreams)
            .await
        {
            Some(problem) => {
                let mut e = FieldErrors::default();
                e.add("upstream_url", problem);
                Err(e)
            }
            None => Ok(new),
        },
        Err(e) => Err(e),
    };
    let errors = match parsed {
        Ok(new) => {
            let name = new.name.clone();
            let result = match id {
                None => state.config.create_api(u.tenant.id, new).await.map(|_| ()),
                Some(id) => state
                    .config
                    .update_api(u.tenant.id, id, new, form.is_active.is_some())
                    .await
                    .map(|_| ()),
            };
            match result {
                Ok(()) => {
                    flash(&u.session, format!("API '{name}' saved."));
                    return Ok(redirect("/apis"));
                }
                Err(StoreError::Conflict(_)) => {
                    let mut e = FieldErrors::default();
                    e.add("slug", "You already have an API with this slug.");
                    e
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(errors) => errors,
    };
    let title = if id.is_some() { "Edit API" } else { "New API" };
    let page = ApiFormPage {
        gateway_prefix: gateway_prefix(&state, &u),
        auth_choices: auth_choices(),
        layout: Layout::tenant(&u, &state, title, "apis"),
        id,
        form,
        errors,
    };
    render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

pub async fn toggle(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    let a = state
        .config
        .set_api_active(u.tenant.id, a.id, !a.is_active)
        .await?;
    flash(
        &u.session,
        format!(
            "API '{}' {}.",
            a.name,
            if a.is_active { "enabled" } else { "disabled" }
        ),
    );
    Ok(redirect("/apis"))
}

pub async fn delete(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let a = store::get_api(&state.db, u.tenant.id, path.into_inner()).await?;
    state.config.delete_api(u.tenant.id, a.id).await?;
    flash(&u.session, format!("API '{}' deleted.", a.name));
    Ok(redirect("/apis"))
}
