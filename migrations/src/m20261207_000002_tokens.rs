//! Tokens (JWTs minted from API keys, see `domain::jwt`).
//!
//! - `signing_keys`: each tenant's Ed25519 keys: the key id, the public key (the JWK's `x`), the
//!   private key sealed with the token key (never in the clear), and, once rotated out, until when
//!   it still verifies the tokens it signed (`verify_until`).
//! - `tenants.token_lifetime_s`: how long a minted token lives (default 15 min).
//! - `apis.auth`: what an API accepts (`key`, `key_or_token`, `token`); `apis.identity_token`:
//!   the gateway signs an `X-Gateway-JWT` for its upstream.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_pk_auto, boolean, integer, string_len, text, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum SigningKeys {
    Table,
    Id,
    TenantId,
    Kid,
    PublicX,
    SealedPrivate,
    CreatedAt,
    RetiredAt,
    VerifyUntil,
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
    TokenLifetimeS,
}

#[derive(DeriveIden, Clone, Copy)]
enum Apis {
    Table,
    Auth,
    IdentityToken,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .col(big_pk_auto(SigningKeys::Id))
                    .col(big_integer(SigningKeys::TenantId))
                    .col(string_len(SigningKeys::Kid, 64).unique_key())
                    .col(string_len(SigningKeys::PublicX, 64))
                    .col(text(SigningKeys::SealedPrivate))
                    .col(timestamp_with_time_zone(SigningKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(SigningKeys::RetiredAt))
                    .col(timestamp_with_time_zone_null(SigningKeys::VerifyUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .from(SigningKeys::Table, SigningKeys::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_signing_keys_tenant")
                    .table(SigningKeys::Table)
                    .col(SigningKeys::TenantId)
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(integer(Tenants::TokenLifetimeS).default(900))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(string_len(Apis::Auth, 16).default("key"))
                    .take(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(boolean(Apis::IdentityToken).default(false))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Apis::IdentityToken, Apis::Auth] {
            manager
                .alter_table(Table::alter().table(Apis::Table).drop_column(col).take())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .drop_column(Tenants::TokenLifetimeS)
                    .take(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(SigningKeys::Table).take())
            .await
    }
}
