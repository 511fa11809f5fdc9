//! The control plane: dashboard, management API and platform admin (actix-web + askama).

pub mod routes;
pub mod startup;

pub use startup::Application;
