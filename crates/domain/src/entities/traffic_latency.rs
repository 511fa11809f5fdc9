//! The `traffic_latency` table: latency histogram buckets (`crate::analytics::bin_of`) of the
//! same periods as `traffic_stats`, one row per non-empty bucket.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "traffic_latency")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub resolution: i32,
    pub period_start: i64,
    pub api_id: i64,
    pub key_id: i64,
    pub client_id: i64,
    pub route_id: i64,
    pub bin: i32,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
