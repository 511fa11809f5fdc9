//! Upstream safety: tenants a platform admin trusts with private and loopback upstreams, and APIs
//! that pass percent-encoded slashes through to their upstream.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::boolean;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    TrustedUpstreams,
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    PassEncodedSlashes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(boolean(Tenants::TrustedUpstreams).default(false))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(boolean(Apis::PassEncodedSlashes).default(false))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .drop_column(Apis::PassEncodedSlashes)
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .drop_column(Tenants::TrustedUpstreams)
                    .take(),
            )
            .await
    }
}
