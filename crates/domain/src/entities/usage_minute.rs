//! The `usage_minutes` table: per-minute usage of the last two days, for charts and the API.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_minutes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    pub api_id: i64,
    pub key_id: i64,
    /// Row id of the client, 0 when none.
    pub client_id: i64,
    pub requests: i64,
    pub rejected: i64,
    pub upstream_errors: i64,
    /// The route the requests took, 0 when their API has no routes.
    pub route_id: i64,
    /// Units the limits consumed: each admitted request's cost (1 unless its route costs more).
    pub units: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
