//! Webhook endpoints: registered, listed, deleted; their deliveries (see `domain::webhook`).

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use domain::entities::{webhook, webhook_delivery, webhook_event};
use domain::store;
use domain::upstream::UpstreamUrl;
use domain::validate::Problems;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::ApiCaller;
use super::errors::{ApiError, ApiJson};
use super::models::{Page, PageQuery};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// Where deliveries are sent by `POST` (`http` or `https`; loopback and private addresses only for
    /// tenants a platform admin trusts).
    pub url: String,
    /// Any of `quota.warning`, `quota.exhausted`, `key.expiring`, `circuit.opened`,
    /// `circuit.closed`.
    pub events: Vec<String>,
    /// What deliveries are signed with (16 to 128 characters); one is made when left out.
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookOut,
    /// The signing secret: shown only here.
    pub secret: String,
}

impl From<webhook::Model> for WebhookOut {
    fn from(w: webhook::Model) -> Self {
        Self {
            id: w.id,
            url: w.url,
            events: w.events.split(',').map(str::to_owned).collect(),
            created_at: w.created_at,
        }
    }
}

/// One delivery of an event to an endpoint.
#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    pub id: i64,
    /// The event's id (what a receiver deduplicates by) and type.
    pub event_id: String,
    pub event: String,
    /// `pending`, `delivered` or `failed` (given up after 24 h).
    pub status: String,
    pub attempts: i32,
    /// The last answer's status, when there was one.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What was (or is to be) delivered.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<(webhook_delivery::Model, webhook_event::Model)> for DeliveryOut {
    fn from((d, e): (webhook_delivery::Model, webhook_event::Model)) -> Self {
        Self {
            id: d.id,
            event_id: e.event_id,
            event: e.kind,
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            finished_at: d.finished_at,
            payload: serde_json::from_str(&e.payload).unwrap_or_default(),
        }
    }
}

/// An endpoint's fields checked, every problem named: (URL, events, secret).
pub async fn checked(
    state: &AppState,
    tenant: &domain::entities::tenant::Model,
    url: &str,
    events: &[String],
    secret: Option<&str>,
) -> Result<(String, Vec<&'static str>, String), Problems> {
    let mut problems = Problems::default();
    let url = match UpstreamUrl::parse(url) {
        Ok(u) => match state.upstream_problem(&u, tenant.trusted_upstreams).await {
            Some(p) => {
                problems.add(
                    "url",
                    p.replace("Upstream URL is refused: ", "is refused: "),
                );
                None
            }
            None => Some(u.url().as_str().to_owned()),
        },
        Err(e) => {
            problems.add("url", e.to_string());
            None
        }
    };
    let mut kinds = Vec::new();
    for e in events {
        match domain::webhook::EVENTS.iter().find(|k| **k == e.trim()) {
            Some(k) if !kinds.contains(k) => kinds.push(*k),
            Some(_) => {}
            None => problems.add(
                "events",
                format!(
                    "has {e:?}, which is no event: choose from {}",
                    domain::webhook::EVENTS.join(", ")
                ),
            ),
        }
    }
    if events.is_empty() {
        problems.add("events", "must name at least one event");
    }
    let secret = match secret.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) if (16..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(s.to_owned())
        }
        Some(_) => {
            problems.add("secret", "must be 16 to 128 visible ASCII characters");
            None
        }
        None => Some(format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()))),
    };
    match (url, secret, problems.is_empty()) {
        (Some(u), Some(s), true) => Ok((u, kinds, s)),
        _ => Err(problems),
    }
}

/// Register an endpoint for the tenant's events; the answer shows its signing secret once.
#[utoipa::path(tag = "webhooks", security(("bearer" = [])), request_body = WebhookIn,
    responses((status = 201, body = WebhookCreated), (status = 401), (status = 422)))]
#[post("/webhooks")]
pub async fn create_webhook(
    c: ApiCaller,
    state: web::Data<AppState>,
    body: ApiJson<WebhookIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (url, events, secret) = checked(
        &state,
        &c.tenant,
        &body.url,
        &body.events,
        body.secret.as_deref(),
    )
    .await?;
    let w = store::create_webhook(&state.db, c.tenant.id, &url, &events, &secret).await?;
    Ok(HttpResponse::Created().json(WebhookCreated {
        webhook: w.into(),
        secret,
    }))
}

/// The tenant's endpoints.
#[utoipa::path(tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Page<WebhookOut>), (status = 401)))]
#[get("/webhooks")]
pub async fn list_webhooks(
    c: ApiCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let items: Vec<WebhookOut> = store::list_webhooks(&state.db, c.tenant.id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: None,
    }))
}

/// Delete an endpoint and its deliveries.
#[utoipa::path(tag = "webhooks", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 404)))]
#[delete("/webhooks/{id}")]
pub async fn delete_webhook(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    store::delete_webhook(&state.db, c.tenant.id, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(tag = "webhooks", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<DeliveryOut>), (status = 401), (status = 404)))]
#[get("/webhooks/{id}/deliveries")]
pub async fn list_deliveries(
    c: ApiCaller,
    state: web::Data<AppState>,
    path: web::Path<i64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    // Newest first: the cursor is the last id of the previous page, the next are below it.
    let (before, limit) = q.parse()?;
    let rows =
        store::list_deliveries(&state.db, c.tenant.id, path.into_inner(), before, limit).await?;
    let items: Vec<DeliveryOut> = rows.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(Page::of(items, limit, |d| d.id)))
}
