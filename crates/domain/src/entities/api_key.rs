//! The `api_keys` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub plan_id: i64,
    pub name: String,
    /// Display prefix of the raw key, safe to show in lists.
    pub prefix: String,
    /// Hex SHA-256 of the raw key; the raw key itself is never stored.
    #[sea_orm(unique)]
    pub key_hash: String,
    pub is_active: bool,
    pub expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    /// The key that replaced this one when it was rotated.
    pub replaced_by: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
