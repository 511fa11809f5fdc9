//! The `listeners` table: where the gateway's planes listen (never an upstream).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "listeners")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `control plane` or `data plane`.
    pub kind: String,
    /// `ip:port`.
    pub addr: String,
    pub seen_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
