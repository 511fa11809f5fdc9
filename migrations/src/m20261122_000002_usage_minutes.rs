//! Per-minute usage kept for two days, so charts of the last hour need no Redis.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, big_pk_auto};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsageMinutes {
    Table,
    Id,
    TenantId,
    Minute,
    ApiId,
    KeyId,
    ClientId,
    Requests,
    Rejected,
    UpstreamErrors,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UsageMinutes::Table)
                    .col(big_pk_auto(UsageMinutes::Id))
                    .col(big_integer(UsageMinutes::TenantId))
                    .col(big_integer(UsageMinutes::Minute))
                    .col(big_integer(UsageMinutes::ApiId))
                    .col(big_integer(UsageMinutes::KeyId))
                    .col(big_integer(UsageMinutes::ClientId).default(0))
                    .col(big_integer(UsageMinutes::Requests).default(0))
                    .col(big_integer(UsageMinutes::Rejected).default(0))
                    .col(big_integer(UsageMinutes::UpstreamErrors).default(0))
                    .foreign_key(
                        ForeignKey::create()
                            .from(UsageMinutes::Table, UsageMinutes::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_usage_minutes_bucket")
                    .table(UsageMinutes::Table)
                    .col(UsageMinutes::TenantId)
                    .col(UsageMinutes::Minute)
                    .col(UsageMinutes::ApiId)
                    .col(UsageMinutes::KeyId)
                    .col(UsageMinutes::ClientId)
                    .unique()
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_usage_minutes_minute")
                    .table(UsageMinutes::Table)
                    .col(UsageMinutes::Minute)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(UsageMinutes::Table).take())
            .await
    }
}
