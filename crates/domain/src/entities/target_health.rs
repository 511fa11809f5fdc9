//! The `target_health` table: each data plane's last report of an API's targets, when there is no
//! Redis to report to (see `crate::target_health`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "target_health")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub api_id: i64,
    /// The data plane that reported (its node name).
    pub node: String,
    /// A `NodeReport` as JSON.
    pub report: String,
    /// Wall-clock milliseconds of the report.
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
