//! The single-row `config_version` table, bumped on every configuration write so that data planes
//! without Redis notice changes by polling it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "config_version")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub version: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
