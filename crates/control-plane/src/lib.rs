//! The control plane: dashboard, management API and platform admin (actix-web + askama).

pub mod accounts;
pub mod admin_cli;
pub mod analytics;
pub mod api;
pub mod charts;
pub mod config;
pub mod errors;
pub mod pages;
pub mod routes;
pub mod session;
pub mod startup;
pub mod state;
pub mod webhooks;

pub use config::ControlPlaneSettings;
pub use startup::Application;
