//! Calendar quotas in a tenant's time zone.
//!
//! - `tenants.time_zone`: the IANA zone its day and month windows are in (default `UTC`).
//! - `tenants.time_zone_before`, `time_zone_changed_at`: the zone before the last change and when
//!   it was made — the windows running then end as they would have in it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string_len, string_len_null, timestamp_with_time_zone_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    TimeZone,
    TimeZoneBefore,
    TimeZoneChangedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            string_len(Tenants::TimeZone, 64).default("UTC").take(),
            string_len_null(Tenants::TimeZoneBefore, 64).take(),
            timestamp_with_time_zone_null(Tenants::TimeZoneChangedAt).take(),
        ];
        // One column per statement: SQLite adds one at a time.
        for mut col in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tenants::Table)
                        .add_column(&mut col)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            Tenants::TimeZoneChangedAt,
            Tenants::TimeZoneBefore,
            Tenants::TimeZone,
        ] {
            manager
                .alter_table(Table::alter().table(Tenants::Table).drop_column(col).take())
                .await?;
        }
        Ok(())
    }
}
