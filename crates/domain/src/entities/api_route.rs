//! The `api_routes` table: an API's routes (see `crate::route`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_routes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub api_id: i64,
    /// As validated by `RoutePath` (no trailing slash but the root).
    pub path: String,
    /// `prefix` or `exact`.
    pub match_kind: String,
    /// Upper-case method names joined by commas; empty for any method.
    pub methods: String,
    pub priority: i32,
    pub strip_prefix: bool,
    pub timeout_ms: Option<i32>,
    pub retries: Option<i32>,
    pub rl_requests_per_minute: Option<i64>,
    pub rl_burst: Option<i64>,
    pub rl_requests_per_day: Option<i64>,
    pub cost: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
