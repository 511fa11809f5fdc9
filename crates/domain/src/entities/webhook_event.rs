//! The `webhook_events` table: what happened, once per subject and window (`dedup`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    /// The id receivers deduplicate by.
    #[sea_orm(unique)]
    pub event_id: String,
    #[sea_orm(unique)]
    pub dedup: String,
    pub kind: String,
    /// The JSON body delivered.
    pub payload: String,
    pub created_at: DateTimeUtc,
    pub fanned_out: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
