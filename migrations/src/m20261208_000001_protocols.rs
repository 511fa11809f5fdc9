//! Protocols an API speaks beyond HTTP/1.1 (issue 24).
//!
//! - `apis.upstream_protocol`: `http1` (the default: every API so far) or `h2` (HTTP/2 to the
//!   upstream: over TLS for `https` targets, cleartext with prior knowledge for `http` ones; what
//!   a gRPC upstream needs).
//! - `apis.websocket_idle_timeout_ms`: a relayed WebSocket with no byte either way for this long
//!   is closed (default one hour).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{integer, string_len};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Apis {
    Table,
    UpstreamProtocol,
    WebsocketIdleTimeoutMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(string_len(Apis::UpstreamProtocol, 8).default("http1"))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(integer(Apis::WebsocketIdleTimeoutMs).default(3_600_000))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Apis::WebsocketIdleTimeoutMs, Apis::UpstreamProtocol] {
            manager
                .alter_table(Table::alter().table(Apis::Table).drop_column(col).take())
                .await?;
        }
        Ok(())
    }
}
