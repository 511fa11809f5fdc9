//! The data plane: authenticates, limits, proxies and counts (hyper 1.x).

pub mod startup;

pub use startup::Application;
