//! The `plans` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "plans")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub requests_per_minute: i64,
    pub burst: Option<i64>,
    pub requests_per_day: Option<i64>,
    pub requests_per_month: Option<i64>,
    /// `strict` (every request checked in Redis) or `fast` (leased local budgets).
    pub enforcement: String,
    pub is_active: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
