//! Users, tenants, plans, APIs, API keys, clients, daily usage rollups and the config version.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, date, integer, pk_auto, string,
    string_len, string_len_uniq, timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    Email,
    PasswordHash,
    IsAdmin,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    Slug,
    OwnerId,
    IsActive,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Plans {
    Table,
    Id,
    TenantId,
    Name,
    RequestsPerMinute,
    Burst,
    RequestsPerDay,
    RequestsPerMonth,
    Enforcement,
    IsActive,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    Id,
    TenantId,
    Name,
    Slug,
    UpstreamUrl,
    KeyHeader,
    TimeoutMs,
    IsActive,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    PlanId,
    Name,
    Prefix,
    KeyHash,
    IsActive,
    ExpiresAt,
    CreatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum Clients {
    Table,
    Id,
    TenantId,
    ClientId,
    Name,
    PlanId,
    IsActive,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UsageRollups {
    Table,
    Id,
    TenantId,
    Day,
    ApiId,
    KeyId,
    ClientId,
    Requests,
    Rejected,
    UpstreamErrors,
}

#[derive(DeriveIden)]
enum ConfigVersion {
    Table,
    Id,
    Version,
    UpdatedAt,
}

fn fk(
    from_table: impl IntoIden,
    from_col: impl IntoIden,
    to_table: impl IntoIden,
    to_col: impl IntoIden,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from_table, from_col)
        .to(to_table, to_col)
        .on_delete(on_delete)
        .take()
}

fn index(
    name: &str,
    table: impl IntoIden,
    cols: &[&'static str],
    unique: bool,
) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(Alias::new(*col));
    }
    if unique {
        stmt.unique();
    }
    stmt.take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    // One statement per table, in dependency order: long, but read top to bottom.
    #[allow(clippy::too_many_lines)]
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(big_pk_auto(Users::Id))
                    .col(string_len_uniq(Users::Username, 64))
                    .col(string_len(Users::Email, 254))
                    .col(string(Users::PasswordHash))
                    .col(boolean(Users::IsAdmin).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(big_pk_auto(Tenants::Id))
                    .col(string_len(Tenants::Name, 100))
                    .col(string_len_uniq(Tenants::Slug, 50))
                    .col(big_integer(Tenants::OwnerId))
                    .col(boolean(Tenants::IsActive).default(true))
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .foreign_key(&mut fk(
                        Tenants::Table,
                        Tenants::OwnerId,
                        Users::Table,
                        Users::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_tenants_owner",
                Tenants::Table,
                &["owner_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Plans::Table)
                    .col(big_pk_auto(Plans::Id))
                    .col(big_integer(Plans::TenantId))
                    .col(string_len(Plans::Name, 100))
                    .col(big_integer(Plans::RequestsPerMinute))
                    .col(big_integer_null(Plans::Burst))
                    .col(big_integer_null(Plans::RequestsPerDay))
                    .col(big_integer_null(Plans::RequestsPerMonth))
                    .col(string_len(Plans::Enforcement, 16).default("strict"))
                    .col(boolean(Plans::IsActive).default(true))
                    .col(timestamp_with_time_zone(Plans::CreatedAt))
                    .foreign_key(&mut fk(
                        Plans::Table,
                        Plans::TenantId,
                        Tenants::Table,
                        Tenants::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_plans_tenant",
                Plans::Table,
                &["tenant_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Apis::Table)
                    .col(big_pk_auto(Apis::Id))
                    .col(big_integer(Apis::TenantId))
                    .col(string_len(Apis::Name, 100))
                    .col(string_len(Apis::Slug, 50))
                    .col(string_len(Apis::UpstreamUrl, 2048))
                    .col(string_len(Apis::KeyHeader, 100).default("X-API-Key"))
                    .col(integer(Apis::TimeoutMs).default(30_000))
                    .col(boolean(Apis::IsActive).default(true))
                    .col(timestamp_with_time_zone(Apis::CreatedAt))
                    .foreign_key(&mut fk(
                        Apis::Table,
                        Apis::TenantId,
                        Tenants::Table,
                        Tenants::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "uq_apis_tenant_slug",
                Apis::Table,
                &["tenant_id", "slug"],
                true,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(big_pk_auto(ApiKeys::Id))
                    .col(big_integer(ApiKeys::TenantId))
                    .col(big_integer(ApiKeys::PlanId))
                    .col(string_len(ApiKeys::Name, 100))
                    .col(string_len(ApiKeys::Prefix, 32))
                    .col(string_len_uniq(ApiKeys::KeyHash, 64))
                    .col(boolean(ApiKeys::IsActive).default(true))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .foreign_key(&mut fk(
                        ApiKeys::Table,
                        ApiKeys::TenantId,
                        Tenants::Table,
                        Tenants::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        ApiKeys::Table,
                        ApiKeys::PlanId,
                        Plans::Table,
                        Plans::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_api_keys_tenant",
                ApiKeys::Table,
                &["tenant_id", "id"],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "idx_api_keys_plan",
                ApiKeys::Table,
                &["plan_id"],
                false,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Clients::Table)
                    .col(big_pk_auto(Clients::Id))
                    .col(big_integer(Clients::TenantId))
                    .col(string_len(Clients::ClientId, 100))
                    .col(string_len(Clients::Name, 100))
                    .col(big_integer(Clients::PlanId))
                    .col(boolean(Clients::IsActive).default(true))
                    .col(timestamp_with_time_zone(Clients::CreatedAt))
                    .foreign_key(&mut fk(
                        Clients::Table,
                        Clients::TenantId,
                        Tenants::Table,
                        Tenants::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        Clients::Table,
                        Clients::PlanId,
                        Plans::Table,
                        Plans::Id,
                        ForeignKeyAction::Restrict,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "uq_clients_tenant_client_id",
                Clients::Table,
                &["tenant_id", "client_id"],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "idx_clients_plan",
                Clients::Table,
                &["plan_id"],
                false,
            ))
            .await?;

        // Usage history outlives Redis: one row per tenant/day/api/key/client. Ids of deleted APIs,
        // keys or clients stay in the history, so only the tenant is a foreign key. `client_id` is
        // 0 when no X-Client-ID was sent (0 rather than NULL, so the unique key can be upserted).
        manager
            .create_table(
                Table::create()
                    .table(UsageRollups::Table)
                    .col(big_pk_auto(UsageRollups::Id))
                    .col(big_integer(UsageRollups::TenantId))
                    .col(date(UsageRollups::Day))
                    .col(big_integer(UsageRollups::ApiId))
                    .col(big_integer(UsageRollups::KeyId))
                    .col(big_integer(UsageRollups::ClientId).default(0))
                    .col(big_integer(UsageRollups::Requests).default(0))
                    .col(big_integer(UsageRollups::Rejected).default(0))
                    .col(big_integer(UsageRollups::UpstreamErrors).default(0))
                    .foreign_key(&mut fk(
                        UsageRollups::Table,
                        UsageRollups::TenantId,
                        Tenants::Table,
                        Tenants::Id,
                        ForeignKeyAction::Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "uq_usage_rollups_bucket",
                UsageRollups::Table,
                &["tenant_id", "day", "api_id", "key_id", "client_id"],
                true,
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConfigVersion::Table)
                    .col(pk_auto(ConfigVersion::Id))
                    .col(big_integer(ConfigVersion::Version).default(0))
                    .col(timestamp_with_time_zone(ConfigVersion::UpdatedAt))
                    .take(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ConfigVersion::Table)
                    .columns([
                        ConfigVersion::Id,
                        ConfigVersion::Version,
                        ConfigVersion::UpdatedAt,
                    ])
                    .values_panic([1.into(), 0.into(), Expr::current_timestamp()])
                    .take(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ConfigVersion::Table.into_iden(),
            UsageRollups::Table.into_iden(),
            Clients::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Apis::Table.into_iden(),
            Plans::Table.into_iden(),
            Tenants::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).take())
                .await?;
        }
        Ok(())
    }
}
