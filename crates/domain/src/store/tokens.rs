//! Management API tokens.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

use super::{StoreError, StoreResult};
use crate::apikey::{ApiKey, KeyHash};
use crate::entities::{admin_token, api_token, user};

/// Issues a token for `user_id` acting on `tenant_id`; the raw token is returned once.
pub async fn create_token(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    user_id: i64,
) -> StoreResult<(api_token::Model, ApiKey)> {
    let raw = ApiKey::generate_token();
    let t = api_token::ActiveModel {
        tenant_id: Set(tenant_id),
        user_id: Set(user_id),
        prefix: Set(raw.display_prefix()),
        token_hash: Set(raw.hash().to_hex()),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok((t, raw))
}

/// How stale a token's `last_used_at` may get before a use writes it again.
pub const TOKEN_TOUCH_EVERY_SECS: i64 = 60;

/// The token with this raw value (a read only: see [`touch_token`]).
pub async fn authenticate_token(
    db: &impl ConnectionTrait,
    raw: &str,
) -> StoreResult<Option<api_token::Model>> {
    let hash = KeyHash::of(raw).to_hex();
    Ok(api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(hash))
        .one(db)
        .await?)
}

/// Records that `t` was used now, when its record is more than a minute old: written after the
/// request is answered, so a busy (write-locked) database never delays an API call.
pub async fn touch_token(db: &impl ConnectionTrait, t: &api_token::Model) -> StoreResult<()> {
    let now = Utc::now();
    if t.last_used_at
        .is_some_and(|at| (now - at).num_seconds() < TOKEN_TOUCH_EVERY_SECS)
    {
        return Ok(());
    }
    api_token::Entity::update_many()
        .col_expr(api_token::Column::LastUsedAt, Expr::value(Some(now)))
        .filter(api_token::Column::Id.eq(t.id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn list_tokens(
    db: &impl ConnectionTrait,
    tenant_id: i64,
) -> StoreResult<Vec<api_token::Model>> {
    Ok(api_token::Entity::find()
        .filter(api_token::Column::TenantId.eq(tenant_id))
        .order_by_asc(api_token::Column::Id)
        .all(db)
        .await?)
}

pub async fn delete_token(db: &impl ConnectionTrait, tenant_id: i64, id: i64) -> StoreResult<()> {
    let res = api_token::Entity::delete_many()
        .filter(api_token::Column::Id.eq(id))
        .filter(api_token::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Issues a management token for platform admin `user_id` (the `/api/v1/admin` endpoints); the
/// raw token is returned once.
pub async fn create_admin_token(
    db: &impl ConnectionTrait,
    user_id: i64,
) -> StoreResult<(admin_token::Model, ApiKey)> {
    let raw = ApiKey::generate_token();
    let t = admin_token::ActiveModel {
        user_id: Set(user_id),
        prefix: Set(raw.display_prefix()),
        token_hash: Set(raw.hash().to_hex()),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok((t, raw))
}

/// The platform admin an admin token with this raw value belongs to, while that user is still an
/// admin (a demoted admin's tokens stop working at once).
pub async fn authenticate_admin_token(
    db: &impl ConnectionTrait,
    raw: &str,
) -> StoreResult<Option<(admin_token::Model, user::Model)>> {
    let hash = KeyHash::of(raw).to_hex();
    let Some(t) = admin_token::Entity::find()
        .filter(admin_token::Column::TokenHash.eq(hash))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let user = user::Entity::find_by_id(t.user_id).one(db).await?;
    Ok(user.filter(|u| u.is_admin).map(|u| (t, u)))
}
