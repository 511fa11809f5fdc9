//! Where the gateway's own planes listen, as each registers itself at start: never an upstream
//! (the upstream address policy of every plane reads them).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_pk_auto, string_len, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Listeners {
    Table,
    Id,
    Kind,
    Addr,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Listeners::Table)
                    .col(big_pk_auto(Listeners::Id))
                    .col(string_len(Listeners::Kind, 32))
                    .col(string_len(Listeners::Addr, 64))
                    .col(timestamp_with_time_zone(Listeners::SeenAt))
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_listeners_kind_addr")
                    .table(Listeners::Table)
                    .col(Listeners::Kind)
                    .col(Listeners::Addr)
                    .unique()
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Listeners::Table).take())
            .await
    }
}
