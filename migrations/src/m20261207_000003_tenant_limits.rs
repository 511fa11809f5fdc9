//! Tenant ceilings and admin tokens.
//!
//! - `tenants.limit_rpm`, `limit_burst`, `limit_day`, `limit_month`: a platform admin's ceiling
//!   over all of a tenant's traffic (all null: none).
//! - `admin_tokens`: management API bearer tokens of platform admins (the `/api/v1/admin`
//!   endpoints), stored only as SHA-256, like a tenant's `api_tokens`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, string_len, string_len_uniq,
    timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    LimitRpm,
    LimitBurst,
    LimitDay,
    LimitMonth,
}

#[derive(DeriveIden)]
enum AdminTokens {
    Table,
    Id,
    UserId,
    Prefix,
    TokenHash,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

const LIMITS: [Tenants; 4] = [
    Tenants::LimitRpm,
    Tenants::LimitBurst,
    Tenants::LimitDay,
    Tenants::LimitMonth,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for col in LIMITS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tenants::Table)
                        .add_column(big_integer_null(col))
                        .take(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(AdminTokens::Table)
                    .col(big_pk_auto(AdminTokens::Id))
                    .col(big_integer(AdminTokens::UserId))
                    .col(string_len(AdminTokens::Prefix, 32))
                    .col(string_len_uniq(AdminTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(AdminTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(AdminTokens::LastUsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(AdminTokens::Table, AdminTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AdminTokens::Table).take())
            .await?;
        for col in LIMITS {
            manager
                .alter_table(Table::alter().table(Tenants::Table).drop_column(col).take())
                .await?;
        }
        Ok(())
    }
}
