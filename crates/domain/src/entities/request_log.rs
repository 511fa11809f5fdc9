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
    /// 0: the API has no routes (or none took the request).
    pub route_id: i64,
    /// 0: no valid key was presented.
    pub key_id: i64,
    pub key_prefix: Option<String>,
    /// Row id of the client (`X-Client-ID`), 0 when none.
    pub client_row_id: i64,
    /// The client's id as sent in `X-Client-ID`, when it is a registered client.
    pub client_id: Option<String>,
    pub method: String,
    /// Without the query unless the API keeps it (`log_query`).
    pub path: String,
    pub status: i32,
    pub latency_us: i64,
    /// From sending the request upstream to its answer's head; `None` when nothing was sent.
    pub upstream_latency_us: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// The target that answered (or failed), 0 when none was tried.
    pub target_id: i64,
    pub client_ip: String,
    /// `crate::request_log::flags` bits.
    pub flags: i32,
    /// The gateway's error type, for the gateway's own answers.
    pub error_type: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
