//! Quota webhooks.
//!
//! - `webhooks`: a tenant's endpoints: URL, the events it wants (comma-separated), the secret its
//!   deliveries are signed with.
//! - `webhook_events`: what happened, once (`dedup` is unique: one `quota.exhausted` per subject
//!   and window however many data planes saw it), JSON as delivered; `fanned_out` once a delivery
//!   per subscribed endpoint exists.
//! - `webhook_deliveries`: one event to one endpoint: pending, delivered or failed, attempts, the
//!   next attempt, the last answer's status or error.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_pk_auto, boolean, integer, integer_null, string_len, string_len_uniq, text,
    text_null, timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    TenantId,
    Url,
    Events,
    Secret,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    TenantId,
    EventId,
    Dedup,
    Kind,
    Payload,
    CreatedAt,
    FannedOut,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    EventRowId,
    Status,
    Attempts,
    NextAttemptAt,
    LastStatus,
    LastError,
    CreatedAt,
    FinishedAt,
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
                    .table(Webhooks::Table)
                    .col(big_pk_auto(Webhooks::Id))
                    .col(big_integer(Webhooks::TenantId))
                    .col(text(Webhooks::Url))
                    .col(string_len(Webhooks::Events, 200))
                    .col(string_len(Webhooks::Secret, 128))
                    .col(timestamp_with_time_zone(Webhooks::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Webhooks::Table, Webhooks::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .col(big_pk_auto(WebhookEvents::Id))
                    .col(big_integer(WebhookEvents::TenantId))
                    .col(string_len_uniq(WebhookEvents::EventId, 40))
                    .col(string_len_uniq(WebhookEvents::Dedup, 200))
                    .col(string_len(WebhookEvents::Kind, 32))
                    .col(text(WebhookEvents::Payload))
                    .col(timestamp_with_time_zone(WebhookEvents::CreatedAt))
                    .col(boolean(WebhookEvents::FannedOut).default(false))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookEvents::Table, WebhookEvents::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_events_fanned_out")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::FannedOut)
                    .take(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    .col(big_integer(WebhookDeliveries::WebhookId))
                    .col(big_integer(WebhookDeliveries::EventRowId))
                    .col(string_len(WebhookDeliveries::Status, 16))
                    .col(integer(WebhookDeliveries::Attempts).default(0))
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                    .col(integer_null(WebhookDeliveries::LastStatus))
                    .col(text_null(WebhookDeliveries::LastError))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::FinishedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::WebhookId)
                            .to(Webhooks::Table, Webhooks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EventRowId)
                            .to(WebhookEvents::Table, WebhookEvents::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_webhook")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::WebhookId)
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            WebhookDeliveries::Table.into_iden(),
            WebhookEvents::Table.into_iden(),
            Webhooks::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(t).take()).await?;
        }
        Ok(())
    }
}
