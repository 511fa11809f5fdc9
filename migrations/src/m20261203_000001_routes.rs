//! Routes of an API: the paths and methods it serves, each with its own prefix stripping,
//! timeout, retries, rate window and cost. Deleting an API deletes its routes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, integer, integer_null, string_len,
    timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiRoutes {
    Table,
    Id,
    TenantId,
    ApiId,
    Path,
    MatchKind,
    Methods,
    Priority,
    StripPrefix,
    TimeoutMs,
    Retries,
    RlRequestsPerMinute,
    RlBurst,
    RlRequestsPerDay,
    Cost,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiRoutes::Table)
                    .col(big_pk_auto(ApiRoutes::Id))
                    .col(big_integer(ApiRoutes::TenantId))
                    .col(big_integer(ApiRoutes::ApiId))
                    .col(string_len(ApiRoutes::Path, 200))
                    .col(string_len(ApiRoutes::MatchKind, 10).default("prefix"))
                    .col(string_len(ApiRoutes::Methods, 100).default(""))
                    .col(integer(ApiRoutes::Priority).default(0))
                    .col(boolean(ApiRoutes::StripPrefix).default(false))
                    .col(integer_null(ApiRoutes::TimeoutMs))
                    .col(integer_null(ApiRoutes::Retries))
                    .col(big_integer_null(ApiRoutes::RlRequestsPerMinute))
                    .col(big_integer_null(ApiRoutes::RlBurst))
                    .col(big_integer_null(ApiRoutes::RlRequestsPerDay))
                    .col(integer(ApiRoutes::Cost).default(1))
                    .col(timestamp_with_time_zone(ApiRoutes::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiRoutes::Table, ApiRoutes::ApiId)
                            .to(Apis::Table, Apis::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_routes_api")
                    .table(ApiRoutes::Table)
                    .col(ApiRoutes::ApiId)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiRoutes::Table).take())
            .await
    }
}
