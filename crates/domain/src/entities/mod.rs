//! sea-orm entities, one module per table. The schema itself lives in the `migration` crate.

pub mod admin_token;
pub mod api;
pub mod api_key;
pub mod api_route;
pub mod api_target;
pub mod api_token;
pub mod client;
pub mod config_version;
pub mod listener;
pub mod plan;
pub mod request_log;
pub mod signing_key;
pub mod target_health;
pub mod tenant;
pub mod traffic_latency;
pub mod traffic_stat;
pub mod usage_minute;
pub mod usage_rollup;
pub mod user;
pub mod user_session;
pub mod webhook;
pub mod webhook_delivery;
pub mod webhook_event;
