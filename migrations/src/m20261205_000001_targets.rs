//! An API's targets: the upstream URLs its requests are spread over (smooth weighted round robin),
//! each with a weight and a reset generation (a manual reset of its circuit, which every data
//! plane applies at its next snapshot). Every existing API gets its `upstream_url` as its first
//! target, so it keeps working as before. The API gains its retries and the settings of its
//! active health check and circuit breaker (JSON; absent: off / the defaults). Without Redis, each
//! data plane reports its targets' state into `target_health` (one row per API and node).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_pk_auto, integer, integer_null, string_len, text, text_null,
    timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiTargets {
    Table,
    Id,
    TenantId,
    ApiId,
    Url,
    Weight,
    ResetGeneration,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TargetHealth {
    Table,
    Id,
    ApiId,
    Node,
    Report,
    UpdatedAtMs,
}

#[derive(DeriveIden, Clone, Copy)]
enum Apis {
    Table,
    Id,
    Retries,
    HealthCheck,
    CircuitBreaker,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiTargets::Table)
                    .col(big_pk_auto(ApiTargets::Id))
                    .col(big_integer(ApiTargets::TenantId))
                    .col(big_integer(ApiTargets::ApiId))
                    .col(string_len(ApiTargets::Url, 2048))
                    .col(integer(ApiTargets::Weight).default(1))
                    .col(big_integer(ApiTargets::ResetGeneration).default(0))
                    .col(timestamp_with_time_zone(ApiTargets::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiTargets::Table, ApiTargets::ApiId)
                            .to(Apis::Table, Apis::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_api_targets_api")
                    .table(ApiTargets::Table)
                    .col(ApiTargets::ApiId)
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TargetHealth::Table)
                    .col(big_pk_auto(TargetHealth::Id))
                    .col(big_integer(TargetHealth::ApiId))
                    .col(string_len(TargetHealth::Node, 200))
                    .col(text(TargetHealth::Report))
                    .col(big_integer(TargetHealth::UpdatedAtMs))
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_target_health_api_node")
                    .table(TargetHealth::Table)
                    .col(TargetHealth::ApiId)
                    .col(TargetHealth::Node)
                    .unique()
                    .take(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO api_targets (tenant_id, api_id, url, weight, reset_generation, created_at) \
                 SELECT tenant_id, id, upstream_url, 1, 0, created_at FROM apis ORDER BY id",
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(integer_null(Apis::Retries))
                    .take(),
            )
            .await?;
        for col in [Apis::HealthCheck, Apis::CircuitBreaker] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Apis::Table)
                        .add_column(text_null(col))
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The first target is the API's upstream_url already: the others go with the table.
        for col in [Apis::Retries, Apis::HealthCheck, Apis::CircuitBreaker] {
            manager
                .alter_table(Table::alter().table(Apis::Table).drop_column(col).take())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(TargetHealth::Table).take())
            .await?;
        manager
            .drop_table(Table::drop().table(ApiTargets::Table).take())
            .await
    }
}
