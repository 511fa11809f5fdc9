//! The `apis` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[allow(clippy::struct_excessive_bools)] // independent columns of an API, not encoded states
#[sea_orm(table_name = "apis")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
    pub slug: String,
    pub upstream_url: String,
    pub key_header: String,
    pub timeout_ms: i32,
    pub is_active: bool,
    /// Percent-encoded slashes (`%2F`) in a path are passed to the upstream instead of refused.
    pub pass_encoded_slashes: bool,
    /// Tries after a failed one, on another target; `None`: 1 with two targets or more, else 0.
    pub retries: Option<i32>,
    /// The active health check as JSON (`resilience::HealthCheck`); `None`: off.
    pub health_check: Option<String>,
    /// The circuit breaker's settings as JSON (`resilience::CircuitBreaker`); `None`: defaults.
    pub circuit_breaker: Option<String>,
    /// The request log keeps the query string of its requests' paths (off: a query may carry
    /// secrets).
    pub log_query: bool,
    /// What a caller presents: `key`, `key_or_token` or `token` (`crate::jwt`).
    pub auth: String,
    /// The gateway signs an `X-Gateway-JWT` naming the caller for the upstream.
    pub identity_token: bool,
    /// How the gateway speaks to its upstreams: `http1` or `h2` (`crate::upstream::Protocol`).
    pub upstream_protocol: String,
    /// A relayed WebSocket idle (no byte either way) this long is closed.
    pub websocket_idle_timeout_ms: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
