//! The data plane: authenticates, limits, proxies and counts: an HTTP/1.1 fast path (`fast`) for
//! ordinary requests, hyper 1.x (`proxy`) for the rest.

pub mod body;
pub mod config;
pub mod errors;
pub mod fast;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod reload;
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
