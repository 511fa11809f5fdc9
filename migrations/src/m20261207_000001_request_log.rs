//! The request log and traffic analytics.
//!
//! - `request_logs`: one row per request a data plane answered on a tenant's path: the columns
//!   queries filter on, and the rest of the record as JSON in `detail`. On PostgreSQL
//!   the table is partitioned by day (range on `ts_ms`), so retention drops whole partitions; the
//!   data planes create each day's partition before writing into it. On SQLite it is a plain
//!   table whose rowid grows with time, pruned oldest first in batches.
//! - `traffic_stats` / `traffic_latency`: counts and latency-histogram buckets per (tenant, API,
//!   key, client, route) and period (minute, hour, day), added to by every data plane's flush.
//! - `apis.log_query`: keep the query string in logged paths (off: a query may carry secrets).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, boolean, integer, string, text};
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum RequestLogs {
    Table,
    Id,
    TsMs,
    TenantId,
    RequestId,
    ApiId,
    KeyId,
    ClientRowId,
    Status,
    Method,
    Flags,
    Detail,
}

#[derive(DeriveIden, Clone, Copy)]
enum TrafficStats {
    Table,
    Id,
    TenantId,
    Resolution,
    PeriodStart,
    ApiId,
    KeyId,
    ClientId,
    RouteId,
    Requests,
    #[sea_orm(iden = "status_2xx")]
    Status2xx,
    #[sea_orm(iden = "status_3xx")]
    Status3xx,
    #[sea_orm(iden = "status_4xx")]
    Status4xx,
    #[sea_orm(iden = "status_5xx")]
    Status5xx,
    RateLimited,
    UpstreamErrors,
    BytesIn,
    BytesOut,
    LatencyUsSum,
}

#[derive(DeriveIden, Clone, Copy)]
enum TrafficLatency {
    Table,
    Id,
    TenantId,
    Resolution,
    PeriodStart,
    ApiId,
    KeyId,
    ClientId,
    RouteId,
    Bin,
    Count,
}

#[derive(DeriveIden, Clone, Copy)]
enum Apis {
    Table,
    LogQuery,
}

#[derive(DeriveIden, Clone, Copy)]
enum Tenants {
    Table,
    Id,
}

/// The request log's columns after its id, the same on both databases: what queries filter on,
/// and the rest of a record as JSON (`domain::request_log::Detail`).
fn request_log_columns(t: &mut TableCreateStatement) {
    use RequestLogs as R;
    t.col(big_integer(R::TsMs))
        .col(big_integer(R::TenantId))
        .col(string(R::RequestId))
        .col(big_integer(R::ApiId).default(0))
        .col(big_integer(R::KeyId).default(0))
        .col(big_integer(R::ClientRowId).default(0))
        .col(integer(R::Status))
        .col(string(R::Method))
        .col(integer(R::Flags).default(0))
        .col(text(R::Detail));
}

async fn create_request_log(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    let mut t = Table::create();
    t.table(RequestLogs::Table);
    if backend == DatabaseBackend::Postgres {
        // No primary key: on a partitioned table it would have to include `ts_ms`, and nothing
        // refers to a row by its id alone (it only breaks ties in the order).
        t.col(
            ColumnDef::new(RequestLogs::Id)
                .big_integer()
                .auto_increment(),
        );
        request_log_columns(&mut t);
        let sql = format!(
            "{} PARTITION BY RANGE (ts_ms)",
            t.to_string(PostgresQueryBuilder)
        );
        manager.get_connection().execute_unprepared(&sql).await?;
    } else {
        // `INTEGER PRIMARY KEY`: the rowid itself, which grows with every insert.
        t.col(
            ColumnDef::new(RequestLogs::Id)
                .integer()
                .not_null()
                .primary_key(),
        );
        request_log_columns(&mut t);
        manager.create_table(t.take()).await?;
    }
    manager
        .create_index(
            Index::create()
                .name("idx_request_logs_tenant_time")
                .table(RequestLogs::Table)
                .col(RequestLogs::TenantId)
                .col(RequestLogs::TsMs)
                .col(RequestLogs::Id)
                .take(),
        )
        .await?;
    // Request ids the gateway makes are version 7 UUIDs of the request's time: found through the
    // index above. Only ids a caller sent (flag 16) need an index of their own — a partial one,
    // so the usual record costs one index entry, not two (the same statement on both databases).
    manager
        .get_connection()
        .execute_unprepared(
            "CREATE INDEX idx_request_logs_given_request ON request_logs (tenant_id, request_id) \
             WHERE (flags & 16) <> 0",
        )
        .await
        .map(|_| ())
}

/// A traffic table: its id, the bucket's dimensions (tenant, resolution, period start, API, key,
/// client, route: a unique index in that order, and one on the period for pruning), `counts`
/// (zero by default) and `extra` columns.
async fn create_traffic_table(
    manager: &SchemaManager<'_>,
    table: DynIden,
    name: &str,
    dims: [DynIden; 8],
    extra: Vec<ColumnDef>,
    unique_extra: Option<DynIden>,
) -> Result<(), DbErr> {
    let [id, tenant, resolution, start, api, key, client, route] = dims;
    let mut t = Table::create();
    t.table(table.clone())
        .col(
            ColumnDef::new(id)
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(big_integer(tenant.clone()))
        .col(integer(resolution.clone()))
        .col(big_integer(start.clone()));
    for c in [&api, &key, &client, &route] {
        t.col(big_integer(c.clone()).default(0));
    }
    for mut c in extra {
        t.col(&mut c);
    }
    t.foreign_key(
        ForeignKey::create()
            .from(table.clone(), tenant.clone())
            .to(Tenants::Table, Tenants::Id)
            .on_delete(ForeignKeyAction::Cascade),
    );
    manager.create_table(t.take()).await?;
    let mut unique = Index::create();
    unique
        .name(format!("uq_{name}_bucket"))
        .table(table.clone())
        .unique();
    for c in [
        tenant,
        resolution.clone(),
        start.clone(),
        api,
        key,
        client,
        route,
    ]
    .into_iter()
    .chain(unique_extra)
    {
        unique.col(c);
    }
    manager.create_index(unique.take()).await?;
    // Pruning by age, whichever the tenant.
    manager
        .create_index(
            Index::create()
                .name(format!("idx_{name}_period"))
                .table(table)
                .col(resolution)
                .col(start)
                .take(),
        )
        .await
}

async fn create_traffic(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    use TrafficLatency as L;
    use TrafficStats as S;
    let counts = [
        S::Requests,
        S::Status2xx,
        S::Status3xx,
        S::Status4xx,
        S::Status5xx,
        S::RateLimited,
        S::UpstreamErrors,
        S::BytesIn,
        S::BytesOut,
        S::LatencyUsSum,
    ];
    create_traffic_table(
        manager,
        S::Table.into_iden(),
        "traffic_stats",
        [
            S::Id,
            S::TenantId,
            S::Resolution,
            S::PeriodStart,
            S::ApiId,
            S::KeyId,
            S::ClientId,
            S::RouteId,
        ]
        .map(IntoIden::into_iden),
        counts.map(|c| big_integer(c).default(0).take()).to_vec(),
        None,
    )
    .await?;
    create_traffic_table(
        manager,
        L::Table.into_iden(),
        "traffic_latency",
        [
            L::Id,
            L::TenantId,
            L::Resolution,
            L::PeriodStart,
            L::ApiId,
            L::KeyId,
            L::ClientId,
            L::RouteId,
        ]
        .map(IntoIden::into_iden),
        vec![integer(L::Bin), big_integer(L::Count).default(0).take()],
        Some(L::Bin.into_iden()),
    )
    .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_request_log(manager).await?;
        create_traffic(manager).await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .add_column(boolean(Apis::LogQuery).default(false))
                    .take(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Apis::Table)
                    .drop_column(Apis::LogQuery)
                    .take(),
            )
            .await?;
        for t in [
            TrafficLatency::Table.into_iden(),
            TrafficStats::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(t).take()).await?;
        }
        // Its partitions go with it on PostgreSQL.
        manager
            .drop_table(Table::drop().table(RequestLogs::Table).take())
            .await
    }
}
