//! Each tenant's token signing keys (`crate::jwt`) and its token lifetime.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use super::{StoreError, StoreResult, bump_config_version};
use crate::entities::{signing_key, tenant};
use crate::jwt::{self, TokenSecret};

/// The tenant's keys that still verify at `now`: its current key first, then the retired ones
/// newest first.
pub async fn signing_keys(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    now: DateTime<Utc>,
) -> StoreResult<Vec<signing_key::Model>> {
    let mut keys: Vec<signing_key::Model> = signing_key::Entity::find()
        .filter(signing_key::Column::TenantId.eq(tenant_id))
        .order_by_desc(signing_key::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .filter(|k| still_verifies(k, now))
        .collect();
    keys.sort_by_key(|k| k.retired_at.is_some());
    Ok(keys)
}

/// Whether key `k` verifies tokens at `now`: current, or retired less than its tokens' lifetime
/// (and the leeway) ago.
pub fn still_verifies(k: &signing_key::Model, now: DateTime<Utc>) -> bool {
    k.retired_at.is_none() || k.verify_until.is_some_and(|u| u > now)
}

/// Every tenant's keys that still verify at `now` (the data plane's snapshot).
pub async fn verifying_keys(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> StoreResult<Vec<signing_key::Model>> {
    Ok(signing_key::Entity::find()
        .order_by_asc(signing_key::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .filter(|k| still_verifies(k, now))
        .collect())
}

/// A new signing key for the tenant, which from now on signs its tokens; its previous key is
/// retired but still verifies the tokens it signed until they expire (the tenant's token
/// lifetime and the leeway from now). Keys retired long enough ago to verify nothing are deleted.
pub async fn rotate_signing_key(
    db: &DatabaseConnection,
    secret: &TokenSecret,
    tenant_id: i64,
) -> StoreResult<signing_key::Model> {
    let new =
        jwt::generate(secret).map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(e.to_string())))?;
    let txn = db.begin().await?;
    // Written first, so the transaction holds SQLite's write lock before it reads: a read
    // snapshot upgraded to a write after another connection wrote (a data plane's log or usage)
    // would fail with SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out.
    bump_config_version(&txn).await?;
    let t = tenant::Entity::find_by_id(tenant_id)
        .one(&txn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let now = Utc::now();
    let until = now + Duration::seconds(i64::from(t.token_lifetime_s) + jwt::LEEWAY_S);
    for old in signing_key::Entity::find()
        .filter(signing_key::Column::TenantId.eq(tenant_id))
        .all(&txn)
        .await?
    {
        if old.retired_at.is_none() {
            let mut a: signing_key::ActiveModel = old.into();
            a.retired_at = Set(Some(now));
            a.verify_until = Set(Some(until));
            a.update(&txn).await?;
        } else if !still_verifies(&old, now) {
            signing_key::Entity::delete_by_id(old.id).exec(&txn).await?;
        }
    }
    let k = signing_key::ActiveModel {
        tenant_id: Set(tenant_id),
        kid: Set(new.kid),
        public_x: Set(new.public_x),
        sealed_private: Set(new.sealed_private),
        created_at: Set(now),
        retired_at: Set(None),
        verify_until: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(k)
}

/// The tenant's current signing key, made when it has none.
pub async fn ensure_signing_key(
    db: &DatabaseConnection,
    secret: &TokenSecret,
    tenant_id: i64,
) -> StoreResult<signing_key::Model> {
    let current = signing_key::Entity::find()
        .filter(signing_key::Column::TenantId.eq(tenant_id))
        .filter(signing_key::Column::RetiredAt.is_null())
        .one(db)
        .await?;
    match current {
        Some(k) => Ok(k),
        None => rotate_signing_key(db, secret, tenant_id).await,
    }
}

/// Sets how long the tenant's minted tokens live (seconds, within
/// [`jwt::MIN_LIFETIME_S`]..=[`jwt::MAX_LIFETIME_S`]).
pub async fn set_token_lifetime(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    seconds: i32,
) -> StoreResult<tenant::Model> {
    let t = tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut a: tenant::ActiveModel = t.into();
    a.token_lifetime_s = Set(seconds);
    let t = a.update(db).await?;
    bump_config_version(db).await?;
    Ok(t)
}
