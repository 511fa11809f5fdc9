//! Usage carries the route a request took and the units its limits consumed (a route's `cost`
//! per admitted request): what the counters are seeded from after Redis loses them, so that
//! costly routes and route windows are not granted twice. Rows from before count one unit per
//! admitted request, as they did.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::big_integer;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum UsageRollups {
    Table,
    RouteId,
    Units,
}

#[derive(DeriveIden, Clone, Copy)]
enum UsageMinutes {
    Table,
    RouteId,
    Units,
}

/// One usage table: its name, its bucket index without and with the route, and the bucket's
/// columns before `route_id`.
struct Usage {
    table: &'static str,
    index: &'static str,
    routed_index: &'static str,
    bucket: [&'static str; 4],
}

const TABLES: [Usage; 2] = [
    Usage {
        table: "usage_rollups",
        index: "uq_usage_rollups_bucket",
        routed_index: "uq_usage_rollups_route_bucket",
        bucket: ["tenant_id", "day", "api_id", "key_id"],
    },
    Usage {
        table: "usage_minutes",
        index: "uq_usage_minutes_bucket",
        routed_index: "uq_usage_minutes_route_bucket",
        bucket: ["tenant_id", "minute", "api_id", "key_id"],
    },
];

fn bucket_index(u: &Usage, with_route: bool) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(if with_route { u.routed_index } else { u.index })
        .table(Alias::new(u.table))
        .unique();
    for col in u.bucket {
        idx.col(Alias::new(col));
    }
    idx.col(Alias::new("client_id"));
    if with_route {
        idx.col(Alias::new("route_id"));
    }
    idx.take()
}

/// `DROP INDEX`, the same statement on SQLite and PostgreSQL (index names are per schema on both).
async fn drop_index(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(&format!("DROP INDEX {name}"))
        .await
        .map(|_| ())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (u, (table, route, units)) in TABLES.iter().zip([
            (
                UsageRollups::Table.into_iden(),
                UsageRollups::RouteId.into_iden(),
                UsageRollups::Units.into_iden(),
            ),
            (
                UsageMinutes::Table.into_iden(),
                UsageMinutes::RouteId.into_iden(),
                UsageMinutes::Units.into_iden(),
            ),
        ]) {
            for col in [route, units] {
                manager
                    .alter_table(
                        Table::alter()
                            .table(table.clone())
                            .add_column(big_integer(col).default(0))
                            .take(),
                    )
                    .await?;
            }
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "UPDATE {} SET units = requests - rejected",
                    u.table
                ))
                .await?;
            // The new bucket index first, under a name of its own, then the old one goes.
            manager.create_index(bucket_index(u, true)).await?;
            drop_index(manager, u.index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for u in &TABLES {
            // Rows of one bucket on several routes become one again: their counts are added to
            // the bucket's route-less row, then removed.
            let cols = format!("{}, client_id", u.bucket.join(", "));
            let sums = "SUM(requests), SUM(rejected), SUM(upstream_errors)";
            let add = "requests = {t}.requests + excluded.requests, \
                       rejected = {t}.rejected + excluded.rejected, \
                       upstream_errors = {t}.upstream_errors + excluded.upstream_errors";
            let db = manager.get_connection();
            db.execute_unprepared(&format!(
                "INSERT INTO {t} ({cols}, route_id, requests, rejected, upstream_errors) \
                 SELECT {cols}, 0, {sums} FROM {t} WHERE route_id <> 0 GROUP BY {cols} \
                 ON CONFLICT ({cols}, route_id) DO UPDATE SET {add}",
                t = u.table,
                add = add.replace("{t}", u.table),
            ))
            .await?;
            db.execute_unprepared(&format!("DELETE FROM {} WHERE route_id <> 0", u.table))
                .await?;
            manager.create_index(bucket_index(u, false)).await?;
            drop_index(manager, u.routed_index).await?;
            for col in ["route_id", "units"] {
                manager
                    .alter_table(
                        Table::alter()
                            .table(Alias::new(u.table))
                            .drop_column(Alias::new(col))
                            .take(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}
