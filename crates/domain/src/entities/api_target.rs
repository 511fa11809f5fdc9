//! The `api_targets` table: the upstream URLs an API's requests are spread over (see
//! `crate::resilience`). The target with the lowest id is the API's `upstream_url`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_targets")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub api_id: i64,
    /// As validated by `UpstreamUrl`, in its canonical form.
    pub url: String,
    /// Its share of the requests, ≥ 1.
    pub weight: i32,
    /// Raised by a manual reset: a data plane that sees it move closes the target's circuit.
    pub reset_generation: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
