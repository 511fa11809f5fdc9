//! Management API tokens.

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

use super::{StoreError, StoreResult};
use crate::apikey::{ApiKey, KeyHash};
use crate::entities::api_token;

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

/// The token with this raw value, marking it used.
pub async fn authenticate_token(
    db: &impl ConnectionTrait,
    raw: &str,
) -> StoreResult<Option<api_token::Model>> {
    let hash = KeyHash::of(raw).to_hex();
    let Some(t) = api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(hash))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    api_token::Entity::update_many()
        .col_expr(api_token::Column::LastUsedAt, Expr::value(Some(Utc::now())))
        .filter(api_token::Column::Id.eq(t.id))
        .exec(db)
        .await?;
    Ok(Some(t))
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
