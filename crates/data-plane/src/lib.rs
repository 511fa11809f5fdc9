//! The data plane: authenticates, limits, proxies and counts.
//!
//! - `gateway`: the state every request shares, and the gateway's own endpoints;
//! - `pipeline`: the request's life as phases, in order (admit, limit, pick upstream, upstream
//!   request fields, upstream response fields, finish) — where every decision about a request is
//!   made, once;
//! - `engine::fast` (HTTP/1.1 straight off the socket) and `engine::hyper` (the rest): they move
//!   bytes and call the phases;
//! - the `wire` crate: the fast engine's HTTP/1.1 codec, pure functions; `upstream`: connections and pools
//!   to upstreams; `headers`: the field rules; `body`, `errors`, `metrics`, `usage`, `reload`,
//!   `watchdog`, `config`, `startup`.

pub mod body;
pub mod config;
pub mod engine;
pub mod errors;
pub mod gateway;
pub mod headers;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod request_log;
pub mod startup;
pub mod upstream;
pub mod usage;
pub mod watchdog;

pub use config::DataPlaneSettings;
pub use startup::Application;

/// Locks `m`, taking over a lock whose holder panicked (the state behind it stays usable).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
