//! The shared core of Gateway: entities, parsed value types, keys, passwords, settings and the
//! queries both planes need. Knows nothing of actix or hyper.

pub mod analytics;
pub mod apikey;
pub mod calendar;
pub mod clock;
pub mod db;
pub mod entities;
pub mod events;
pub mod header;
pub mod jwt;
pub mod limits;
pub mod password;
pub mod plan;
pub mod redis_pool;
pub mod request_log;
pub mod resilience;
pub mod route;
pub mod settings;
pub mod shutdown;
pub mod slug;
pub mod snapshot;
pub mod store;
pub mod target_health;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod upstream_policy;
pub mod usage;
pub mod validate;
pub mod webhook;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use sea_orm;
