//! The `traffic_stats` table: requests by status class, rate-limited, upstream errors, bytes and
//! the latency sum per (tenant, API, key, client, route) and period (minute, hour, day).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "traffic_stats")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// The period's length in seconds: 60, 3600 or 86400.
    pub resolution: i32,
    /// The period's start, in seconds since the Unix epoch (UTC).
    pub period_start: i64,
    pub api_id: i64,
    pub key_id: i64,
    pub client_id: i64,
    pub route_id: i64,
    pub requests: i64,
    #[sea_orm(column_name = "status_2xx")]
    pub status_2xx: i64,
    #[sea_orm(column_name = "status_3xx")]
    pub status_3xx: i64,
    #[sea_orm(column_name = "status_4xx")]
    pub status_4xx: i64,
    #[sea_orm(column_name = "status_5xx")]
    pub status_5xx: i64,
    pub rate_limited: i64,
    pub upstream_errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub latency_us_sum: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
