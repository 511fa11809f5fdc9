//! An API's targets and resilience settings. The target with the lowest id is the API's
//! `upstream_url`: every write here keeps the two the same, so an API's first target and the URL
//! older readers know never disagree.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder,
};

use super::{StoreError, StoreResult, bump_config_version, get_api};
use crate::entities::{api, api_target};
use crate::resilience::{ApiResilience, NewTarget};

/// An API's targets in id order (the API must be the tenant's).
pub async fn list_targets(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
) -> StoreResult<Vec<api_target::Model>> {
    get_api(db, tenant_id, api_id).await?;
    Ok(api_target::Entity::find()
        .filter(api_target::Column::TenantId.eq(tenant_id))
        .filter(api_target::Column::ApiId.eq(api_id))
        .order_by_asc(api_target::Column::Id)
        .all(db)
        .await?)
}

pub async fn count_targets(db: &impl ConnectionTrait, api_id: i64) -> StoreResult<u64> {
    Ok(api_target::Entity::find()
        .filter(api_target::Column::ApiId.eq(api_id))
        .count(db)
        .await?)
}

pub async fn get_target(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
) -> StoreResult<api_target::Model> {
    api_target::Entity::find_by_id(id)
        .filter(api_target::Column::TenantId.eq(tenant_id))
        .filter(api_target::Column::ApiId.eq(api_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

/// The API's first target: its `upstream_url`, inserted when the API was made.
pub(super) async fn insert_first_target(
    db: &impl ConnectionTrait,
    a: &api::Model,
) -> StoreResult<()> {
    api_target::ActiveModel {
        tenant_id: Set(a.tenant_id),
        api_id: Set(a.id),
        url: Set(a.upstream_url.clone()),
        weight: Set(1),
        reset_generation: Set(0),
        created_at: Set(a.created_at),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// A changed `upstream_url` is the first target's URL.
pub(super) async fn set_first_target_url(
    db: &impl ConnectionTrait,
    a: &api::Model,
) -> StoreResult<()> {
    let first = api_target::Entity::find()
        .filter(api_target::Column::ApiId.eq(a.id))
        .order_by_asc(api_target::Column::Id)
        .one(db)
        .await?;
    match first {
        Some(t) if t.url == a.upstream_url => Ok(()),
        Some(t) => {
            let mut t = t.into_active_model();
            t.url = Set(a.upstream_url.clone());
            t.update(db).await?;
            Ok(())
        }
        None => insert_first_target(db, a).await,
    }
}

/// The API's `upstream_url` follows its first target.
async fn follow_first_target(db: &impl ConnectionTrait, api_id: i64) -> StoreResult<()> {
    let first = api_target::Entity::find()
        .filter(api_target::Column::ApiId.eq(api_id))
        .order_by_asc(api_target::Column::Id)
        .one(db)
        .await?;
    if let Some(t) = first {
        api::Entity::update_many()
            .col_expr(api::Column::UpstreamUrl, Expr::value(t.url))
            .filter(api::Column::Id.eq(api_id))
            .exec(db)
            .await?;
    }
    Ok(())
}

pub async fn create_target(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    new: NewTarget,
) -> StoreResult<api_target::Model> {
    get_api(db, tenant_id, api_id).await?;
    let t = api_target::ActiveModel {
        tenant_id: Set(tenant_id),
        api_id: Set(api_id),
        url: Set(new.url.to_string()),
        weight: Set(new.weight),
        reset_generation: Set(0),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    bump_config_version(db).await?;
    Ok(t)
}

pub async fn update_target(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
    new: NewTarget,
) -> StoreResult<api_target::Model> {
    let mut t = get_target(db, tenant_id, api_id, id)
        .await?
        .into_active_model();
    t.url = Set(new.url.to_string());
    t.weight = Set(new.weight);
    let t = t.update(db).await?;
    follow_first_target(db, api_id).await?;
    bump_config_version(db).await?;
    Ok(t)
}

/// Deletes a target; an API's last one cannot go ([`StoreError::InUse`]): it would have nowhere
/// to send its requests.
pub async fn delete_target(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
) -> StoreResult<()> {
    get_target(db, tenant_id, api_id, id).await?;
    if count_targets(db, api_id).await? <= 1 {
        return Err(StoreError::InUse(
            "an API needs at least one target".to_owned(),
        ));
    }
    api_target::Entity::delete_by_id(id).exec(db).await?;
    follow_first_target(db, api_id).await?;
    bump_config_version(db).await
}

/// Closes the target's circuit on every data plane (at their next snapshot: within a second).
pub async fn reset_target(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
) -> StoreResult<api_target::Model> {
    let t = get_target(db, tenant_id, api_id, id).await?;
    let generation = t.reset_generation + 1;
    let mut t = t.into_active_model();
    t.reset_generation = Set(generation);
    let t = t.update(db).await?;
    bump_config_version(db).await?;
    Ok(t)
}

/// Sets an API's retries, health check and circuit breaker.
pub async fn set_api_resilience(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    r: ApiResilience,
) -> StoreResult<api::Model> {
    let mut a = get_api(db, tenant_id, id).await?.into_active_model();
    a.retries = Set(r.retries);
    a.health_check = Set(r.stored_health_check());
    a.circuit_breaker = Set(r.stored_circuit_breaker());
    let a = a.update(db).await?;
    bump_config_version(db).await?;
    Ok(a)
}
