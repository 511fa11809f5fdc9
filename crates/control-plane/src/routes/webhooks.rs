//! Webhooks: the tenant's endpoints (added, deleted) and each one's last deliveries.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use domain::entities::{webhook, webhook_delivery, webhook_event};
use domain::store;
use serde::Deserialize;

use crate::api::webhooks::checked;
use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

/// How many deliveries of each endpoint the page shows.
const SHOWN: u64 = 10;

pub struct Endpoint {
    pub webhook: webhook::Model,
    pub deliveries: Vec<(webhook_delivery::Model, webhook_event::Model)>,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    endpoints: Vec<Endpoint>,
    /// Each event and its checkbox's name.
    events: &'static [(&'static str, &'static str)],
    form: WebhookForm,
    errors: FieldErrors,
}

/// The events as the form offers them: (event, checkbox name).
const CHECKBOXES: [(&str, &str); 5] = [
    ("quota.warning", "ev_quota_warning"),
    ("quota.exhausted", "ev_quota_exhausted"),
    ("key.expiring", "ev_key_expiring"),
    ("circuit.opened", "ev_circuit_opened"),
    ("circuit.closed", "ev_circuit_closed"),
];

#[derive(Deserialize, Default)]
pub struct WebhookForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    ev_quota_warning: Option<String>,
    #[serde(default)]
    ev_quota_exhausted: Option<String>,
    #[serde(default)]
    ev_key_expiring: Option<String>,
    #[serde(default)]
    ev_circuit_opened: Option<String>,
    #[serde(default)]
    ev_circuit_closed: Option<String>,
    #[serde(default)]
    secret: String,
}

impl WebhookForm {
    /// The ticked events.
    fn events(&self) -> Vec<String> {
        [
            &self.ev_quota_warning,
            &self.ev_quota_exhausted,
            &self.ev_key_expiring,
            &self.ev_circuit_opened,
            &self.ev_circuit_closed,
        ]
        .iter()
        .zip(CHECKBOXES)
        .filter(|(t, _)| t.is_some())
        .map(|(_, (e, _))| e.to_owned())
        .collect()
    }

    pub fn wants(&self, event: &str) -> bool {
        self.events().iter().any(|e| e == event)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks", web::get().to(show))
        .route("/webhooks", web::post().to(create))
        .route("/webhooks/{id}/delete", web::post().to(delete));
}

async fn page(
    u: &TenantUser,
    state: &AppState,
    form: WebhookForm,
    errors: FieldErrors,
) -> Result<WebhooksPage, UiError> {
    let mut endpoints = Vec::new();
    for w in store::list_webhooks(&state.db, u.tenant.id).await? {
        let deliveries = store::list_deliveries(&state.db, u.tenant.id, w.id, None, SHOWN).await?;
        endpoints.push(Endpoint {
            webhook: w,
            deliveries,
        });
    }
    Ok(WebhooksPage {
        layout: Layout::tenant(u, state, "Webhooks", "webhooks"),
        endpoints,
        events: &CHECKBOXES,
        form,
        errors,
    })
}

async fn show(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let form = WebhookForm {
        ev_quota_exhausted: Some("on".into()),
        ..WebhookForm::default()
    };
    render(&page(&u, &state, form, FieldErrors::default()).await?)
}

async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<WebhookForm>,
) -> Result<HttpResponse, UiError> {
    let secret = Some(form.secret.as_str()).filter(|s| !s.trim().is_empty());
    match checked(&state, &u.tenant, &form.url, &form.events(), secret).await {
        Ok((url, events, secret)) => {
            store::create_webhook(&state.db, u.tenant.id, &url, &events, &secret).await?;
            flash(
                &u.session,
                format!("Endpoint {url} added. Its signing secret, shown only now: {secret}"),
            );
            Ok(redirect("/webhooks"))
        }
        Err(problems) => {
            let mut errors = FieldErrors::default();
            errors.absorb(&problems);
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(&u, &state, form, errors).await?,
            )
        }
    }
}

async fn delete(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let w = store::get_webhook(&state.db, u.tenant.id, path.into_inner()).await?;
    store::delete_webhook(&state.db, u.tenant.id, w.id).await?;
    flash(&u.session, format!("Endpoint {} deleted.", w.url));
    Ok(redirect("/webhooks"))
}
