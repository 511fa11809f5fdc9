//! The data plane: authenticates, limits, proxies and counts: an HTTP/1.1 fast path (`fast`) for
//! ordinary requests, hyper 1.x (`proxy`) for the rest.

pub mod config;
pub mod errors;
pub mod fast;
pub mod headers;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod startup;
pub mod usage;
pub mod watchdog;

pub use config::DataPlaneSettings;
pub use startup::Application;
