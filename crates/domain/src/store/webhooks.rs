//! Webhook endpoints, events and deliveries (see [`crate::webhook`]).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{StoreError, StoreResult};
use crate::entities::{api_key, webhook, webhook_delivery, webhook_event};
use crate::webhook::NewEvent;

/// Registers an endpoint for `events` of the tenant.
pub async fn create_webhook(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    url: &str,
    events: &[&str],
    secret: &str,
) -> StoreResult<webhook::Model> {
    Ok(webhook::ActiveModel {
        tenant_id: Set(tenant_id),
        url: Set(url.to_owned()),
        events: Set(events.join(",")),
        secret: Set(secret.to_owned()),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?)
}

/// The tenant's endpoints, a page at a time in id order.
pub async fn list_webhooks(
    db: &impl ConnectionTrait,
    tenant_id: i64,
) -> StoreResult<Vec<webhook::Model>> {
    Ok(webhook::Entity::find()
        .filter(webhook::Column::TenantId.eq(tenant_id))
        .order_by_asc(webhook::Column::Id)
        .all(db)
        .await?)
}

/// The tenant's endpoint `id`.
pub async fn get_webhook(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
) -> StoreResult<webhook::Model> {
    webhook::Entity::find_by_id(id)
        .filter(webhook::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Deletes the tenant's endpoint `id` and its deliveries.
pub async fn delete_webhook(db: &impl ConnectionTrait, tenant_id: i64, id: i64) -> StoreResult<()> {
    get_webhook(db, tenant_id, id).await?;
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::WebhookId.eq(id))
        .exec(db)
        .await?;
    webhook::Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

/// Records events, each once: one already recorded under its `dedup` key is left as it is.
/// Returns how many were new.
pub async fn record_events(db: &impl ConnectionTrait, events: &[NewEvent]) -> StoreResult<u64> {
    let mut new = 0;
    for e in events {
        let row = webhook_event::ActiveModel {
            tenant_id: Set(e.tenant_id),
            event_id: Set(e.event_id.clone()),
            dedup: Set(e.dedup.clone()),
            kind: Set(e.kind.to_owned()),
            payload: Set(e.payload.clone()),
            created_at: Set(Utc::now()),
            fanned_out: Set(false),
            ..Default::default()
        };
        let inserted = webhook_event::Entity::insert(row)
            .on_conflict(
                OnConflict::column(webhook_event::Column::Dedup)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        new += inserted;
    }
    Ok(new)
}

/// Makes a pending delivery of every event not fanned out yet to each of its tenant's endpoints
/// that wants it. Returns how many deliveries were made.
pub async fn fan_out(db: &impl ConnectionTrait, now: DateTime<Utc>) -> StoreResult<u64> {
    let events = webhook_event::Entity::find()
        .filter(webhook_event::Column::FannedOut.eq(false))
        .order_by_asc(webhook_event::Column::Id)
        .limit(200)
        .all(db)
        .await?;
    let mut made = 0;
    for e in events {
        for w in list_webhooks(db, e.tenant_id).await? {
            if !w.events.split(',').any(|k| k == e.kind) {
                continue;
            }
            webhook_delivery::ActiveModel {
                webhook_id: Set(w.id),
                event_row_id: Set(e.id),
                status: Set("pending".into()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(db)
            .await?;
            made += 1;
        }
        let mut done: webhook_event::ActiveModel = e.into();
        done.fanned_out = Set(true);
        done.update(db).await?;
    }
    Ok(made)
}

/// A delivery due now, with its endpoint and event.
pub struct Due {
    pub delivery: webhook_delivery::Model,
    pub webhook: webhook::Model,
    pub event: webhook_event::Model,
}

/// Pending deliveries due by `now` (the oldest first), each claimed for `lease` so that another
/// control plane does not send it meanwhile.
pub async fn claim_due(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    limit: u64,
) -> StoreResult<Vec<Due>> {
    let rows = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::Status.eq("pending"))
        .filter(webhook_delivery::Column::NextAttemptAt.lte(now))
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await?;
    let mut out = Vec::new();
    for d in rows {
        // Claimed only if nobody moved it since it was read.
        let claimed = webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::NextAttemptAt,
                sea_orm::sea_query::Expr::value(now + lease),
            )
            .filter(webhook_delivery::Column::Id.eq(d.id))
            .filter(webhook_delivery::Column::NextAttemptAt.eq(d.next_attempt_at))
            .exec(db)
            .await?;
        if claimed.rows_affected == 0 {
            continue;
        }
        let (Some(w), Some(e)) = (
            webhook::Entity::find_by_id(d.webhook_id).one(db).await?,
            webhook_event::Entity::find_by_id(d.event_row_id)
                .one(db)
                .await?,
        ) else {
            continue;
        };
        out.push(Due {
            delivery: d,
            webhook: w,
            event: e,
        });
    }
    Ok(out)
}

/// What an attempt came to.
pub enum Attempt {
    /// A 2xx answer with this status.
    Delivered(i32),
    /// Another answer (`Some(status)`) or none, and why; tried again at `next`, or given up when
    /// `next` is `None`.
    Failed {
        status: Option<i32>,
        error: String,
        next: Option<DateTime<Utc>>,
    },
}

/// Records an attempt of `d`.
pub async fn record_attempt(
    db: &impl ConnectionTrait,
    d: &webhook_delivery::Model,
    outcome: Attempt,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let mut row: webhook_delivery::ActiveModel = d.clone().into();
    row.attempts = Set(d.attempts + 1);
    match outcome {
        Attempt::Delivered(status) => {
            row.status = Set("delivered".into());
            row.last_status = Set(Some(status));
            row.last_error = Set(None);
            row.finished_at = Set(Some(now));
        }
        Attempt::Failed {
            status,
            error,
            next,
        } => {
            row.last_status = Set(status);
            row.last_error = Set(Some(error));
            if let Some(at) = next {
                row.next_attempt_at = Set(at);
            } else {
                row.status = Set("failed".into());
                row.finished_at = Set(Some(now));
            }
        }
    }
    row.update(db).await?;
    Ok(())
}

/// The deliveries of the tenant's endpoint `webhook_id`, newest first, a page at a time (`before`:
/// the last id of the previous page); with each its event's id and type.
pub async fn list_deliveries(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    webhook_id: i64,
    before: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<(webhook_delivery::Model, webhook_event::Model)>> {
    get_webhook(db, tenant_id, webhook_id).await?;
    let mut q =
        webhook_delivery::Entity::find().filter(webhook_delivery::Column::WebhookId.eq(webhook_id));
    if let Some(before) = before {
        q = q.filter(webhook_delivery::Column::Id.lt(before));
    }
    let rows = q
        .order_by_desc(webhook_delivery::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for d in rows {
        if let Some(e) = webhook_event::Entity::find_by_id(d.event_row_id)
            .one(db)
            .await?
        {
            out.push((d, e));
        }
    }
    Ok(out)
}

/// Keys that expire within `ahead` of `now` (and have not yet), with their tenant: what
/// `key.expiring` is sent for (once per key and expiry, by the event's `dedup`).
pub async fn keys_expiring(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    ahead: chrono::Duration,
) -> StoreResult<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::IsActive.eq(true))
        .filter(api_key::Column::ExpiresAt.gt(now))
        .filter(api_key::Column::ExpiresAt.lte(now + ahead))
        .all(db)
        .await?)
}

/// Whether a platform admin lets tenant `id` use loopback and private addresses (its webhook
/// endpoints as its upstreams).
pub async fn tenant_trusted(db: &impl ConnectionTrait, id: i64) -> StoreResult<bool> {
    use crate::entities::tenant;
    Ok(tenant::Entity::find_by_id(id)
        .one(db)
        .await?
        .is_some_and(|t| t.trusted_upstreams))
}
