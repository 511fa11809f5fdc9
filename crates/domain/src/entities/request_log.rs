//! The `request_logs` table: one row per request a data plane answered on a tenant's path
//! (partitioned by day on PostgreSQL).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "request_logs")]
pub struct Model {
    /// Breaks ties between rows of the same millisecond (no primary key on PostgreSQL).
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub tenant_id: i64,
    pub request_id: String,
    /// 0: the path named no API of the tenant.
    pub api_id: i64,
    /// 0: no valid key was presented.
    pub key_id: i64,
    /// Row id of the client (`X-Client-ID`), 0 when none.
    pub client_row_id: i64,
    pub status: i32,
    pub method: String,
    /// `crate::request_log::flags` bits.
    pub flags: i32,
    /// The rest, as JSON: `crate::request_log::Detail`.
    pub detail: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// What `detail` holds (defaults for a field it lacks or a value it cannot read).
    pub fn detail(&self) -> crate::request_log::Detail<'_> {
        serde_json::from_str(&self.detail).unwrap_or_default()
    }
}
