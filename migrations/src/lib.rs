//! The one migration set of Gateway, written with sea-orm-migration's schema DSL so that the same
//! code creates the schema on SQLite and on PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_usage_minutes;
mod m20261122_000003_api_tokens;
mod m20261202_000001_upstream_safety;
mod m20261202_000002_sessions_and_rotation;
mod m20261202_000003_listeners;
mod m20261203_000001_routes;
mod m20261204_000001_usage_routes;
mod m20261205_000001_targets;
mod m20261207_000001_request_log;
mod m20261207_000002_tokens;
mod m20261207_000003_tenant_limits;
mod m20261207_000004_time_zones;
mod m20261207_000005_webhooks;
mod m20261208_000001_protocols;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_usage_minutes::Migration),
            Box::new(m20261122_000003_api_tokens::Migration),
            Box::new(m20261202_000001_upstream_safety::Migration),
            Box::new(m20261202_000002_sessions_and_rotation::Migration),
            Box::new(m20261202_000003_listeners::Migration),
            Box::new(m20261203_000001_routes::Migration),
            Box::new(m20261204_000001_usage_routes::Migration),
            Box::new(m20261205_000001_targets::Migration),
            Box::new(m20261207_000001_request_log::Migration),
            Box::new(m20261207_000002_tokens::Migration),
            Box::new(m20261207_000003_tenant_limits::Migration),
            Box::new(m20261207_000004_time_zones::Migration),
            Box::new(m20261207_000005_webhooks::Migration),
            Box::new(m20261208_000001_protocols::Migration),
        ]
    }
}
