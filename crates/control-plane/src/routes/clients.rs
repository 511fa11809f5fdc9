//! Clients: callers identified by `X-Client-ID`, each with a plan and counters of its own.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use domain::entities::{client, plan};
use domain::store::{self, StoreError};
use domain::validate::{self, Problems};
use serde::Deserialize;

use crate::errors::UiError;
use crate::pages::{FieldErrors, Layout, redirect, render, render_status};
use crate::session::{CsrfForm, NoFields, TenantUser, flash};
use crate::state::AppState;

pub struct ClientRow {
    pub client: client::Model,
    pub plan: String,
}

#[derive(Template)]
#[template(path = "clients.html")]
struct ClientsPage {
    layout: Layout,
    clients: Vec<ClientRow>,
    has_plans: bool,
}

#[derive(Deserialize, Default)]
pub struct ClientForm {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    plan_id: String,
    #[serde(default)]
    is_active: Option<String>,
}

#[derive(Template)]
#[template(path = "client_form.html")]
struct ClientFormPage {
    layout: Layout,
    id: Option<i64>,
    form: ClientForm,
    plans: Vec<plan::Model>,
    errors: FieldErrors,
}

pub async fn list(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let plans: HashMap<i64, String> = store::list_plans(&state.db, u.tenant.id)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let clients = store::list_clients(&state.db, u.tenant.id)
        .await?
        .into_iter()
        .map(|c| ClientRow {
            plan: plans.get(&c.plan_id).cloned().unwrap_or_default(),
            client: c,
        })
        .collect();
    let layout = Layout::tenant(&u, &state, "Clients", "clients");
    render(&ClientsPage {
        layout,
        clients,
        has_plans: !plans.is_empty(),
    })
}

pub async fn new(u: TenantUser, state: web::Data<AppState>) -> Result<HttpResponse, UiError> {
    let plans = store::list_plans(&state.db, u.tenant.id).await?;
    let form = ClientForm {
        plan_id: plans.first().map(|p| p.id.to_string()).unwrap_or_default(),
        is_active: Some("on".into()),
        ..ClientForm::default()
    };
    let layout = Layout::tenant(&u, &state, "New client", "clients");
    render(&ClientFormPage {
        layout,
        id: None,
        form,
        plans,
        errors: FieldErrors::default(),
    })
}

pub async fn edit(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, UiError> {
    let c = store::get_client(&state.db, u.tenant.id, path.into_inner()).await?;
    let plans = store::list_plans(&state.db, u.tenant.id).await?;
    let form = ClientForm {
        client_id: c.client_id,
        name: c.name,
        plan_id: c.plan_id.to_string(),
        is_active: c.is_active.then(|| "on".into()),
    };
    let layout = Layout::tenant(&u, &state, "Edit client", "clients");
    render(&ClientFormPage {
        layout,
        id: Some(c.id),
        form,
        plans,
        errors: FieldErrors::default(),
    })
}

pub async fn create(
    u: TenantUser,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<ClientForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, None, form).await
}

pub async fn update(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(form): CsrfForm<ClientForm>,
) -> Result<HttpResponse, UiError> {
    save(u, state, Some(path.into_inner()), form).await
}

async fn save(
    u: TenantUser,
    state: web::Data<AppState>,
    id: Option<i64>,
    form: ClientForm,
) -> Result<HttpResponse, UiError> {
    let existing = match id {
        Some(id) => Some(store::get_client(&state.db, u.tenant.id, id).await?),
        None => None,
    };
    let mut errors = FieldErrors::default();
    let mut problems = Problems::default();
    let name = problems
        .check("name", validate::name(&form.name))
        .unwrap_or_default();
    // A client's id is fixed once registered: only a new one is checked.
    let client_id = if existing.is_none() {
        problems
            .check("client_id", validate::client_id(&form.client_id))
            .unwrap_or_default()
    } else {
        form.client_id.trim().to_owned()
    };
    errors.absorb(&problems);
    let plan = match form.plan_id.parse::<i64>() {
        Ok(pid) => store::get_plan(&state.db, u.tenant.id, pid).await.ok(),
        Err(_) => None,
    };
    if plan.is_none() {
        errors.add("plan_id", "Choose one of your plans.");
    }
    if let (Some(plan), true) = (plan, errors.is_empty()) {
        let result = match &existing {
            None => state
                .config
                .create_client(u.tenant.id, &client_id, &name, plan.id)
                .await
                .map(|_| ()),
            Some(c) => state
                .config
                .update_client(u.tenant.id, c.id, &name, plan.id, form.is_active.is_some())
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                flash(&u.session, format!("Client '{name}' saved."));
                return Ok(redirect("/clients"));
            }
            Err(StoreError::Conflict(_)) => {
                errors.add("client_id", "You already have a client with this ID.");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let plans = store::list_plans(&state.db, u.tenant.id).await?;
    let layout = Layout::tenant(
        &u,
        &state,
        if id.is_some() {
            "Edit client"
        } else {
            "New client"
        },
        "clients",
    );
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &ClientFormPage {
            layout,
            id,
            form,
            plans,
            errors,
        },
    )
}

pub async fn toggle(
    u: TenantUser,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    CsrfForm(_): CsrfForm<NoFields>,
) -> Result<HttpResponse, UiError> {
    let c = store::get_client(&state.db, u.tenant.id, path.into_inner()).await?;
    let c = state
        .config
        .update_client(u.tenant.id, c.id, &c.name, c.plan_id, !c.is_active)
        .await?;
    flash(
        &u.session,
        format!(
            "Client '{}' {}.",
            c.name,
            if c.is_active {
                "reactivated"
            } else {
                "deactivated"
            }
        ),
    );
    Ok(redirect("/clients"))
}
