//! The request log in the database: batched inserts (multi-row `INSERT`, one statement per few
//! hundred records, on both databases), day partitions on PostgreSQL, pruning by age, and the
//! reads of the management API and dashboard (newest first, keyset pagination).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, TransactionTrait, Value,
};

use sea_orm::sea_query::Expr;

use super::StoreResult;
use crate::entities::request_log;
use crate::request_log::{Record, flags};

/// Columns written per record, after the id (which the database assigns).
const COLUMNS: [&str; 10] = [
    "ts_ms",
    "tenant_id",
    "request_id",
    "api_id",
    "key_id",
    "client_row_id",
    "status",
    "method",
    "flags",
    "detail",
];

/// Most records per `INSERT` statement (a power of two): 10 values each, well under SQLite's
/// 32,766 parameters and PostgreSQL's 65,535.
pub const ROWS_PER_INSERT: usize = 512;

/// Records deleted per statement when pruning SQLite, so a prune never holds the write lock long.
const PRUNE_BATCH: u64 = 5_000;

const DAY_MS: i64 = 86_400_000;

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `INSERT INTO request_logs (...) VALUES (...), ...` for `rows` records, in `backend`'s
/// placeholder syntax.
fn insert_sql(backend: DbBackend, rows: usize) -> String {
    let mut sql = String::with_capacity(64 + rows * COLUMNS.len() * 6);
    let _ = write!(
        sql,
        "INSERT INTO request_logs ({}) VALUES ",
        COLUMNS.join(", ")
    );
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..COLUMNS.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if backend == DbBackend::Postgres {
                let _ = write!(sql, "${n}");
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

fn values(r: &Record, out: &mut Vec<Value>) {
    out.push(r.ts_ms.into());
    out.push(r.tenant_id.into());
    out.push(r.request_id.clone().into());
    out.push(r.api_id.into());
    out.push(r.key_id.into());
    out.push(r.client_row_id.into());
    out.push(i32::from(r.status).into());
    out.push(r.method.to_string().into());
    out.push(r.flags.into());
    out.push(r.detail_json().into());
}

/// A record's values, in [`COLUMNS`]' order, bound for SQLite.
fn bind_record(
    args: &mut sea_orm::sqlx::sqlite::SqliteArguments,
    r: &Record,
) -> Result<(), sea_orm::sqlx::error::BoxDynError> {
    use sea_orm::sqlx::Arguments as _;
    args.add(r.ts_ms)?;
    args.add(r.tenant_id)?;
    args.add(r.request_id.as_str())?;
    args.add(r.api_id)?;
    args.add(r.key_id)?;
    args.add(r.client_row_id)?;
    args.add(i32::from(r.status))?;
    args.add(r.method.as_ref())?;
    args.add(r.flags)?;
    args.add(r.detail_json())
}

/// The day (UTC) of a time in milliseconds.
fn day_of(ts_ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ts_ms.div_euclid(DAY_MS) * DAY_MS)
        .unwrap_or_default()
        .date_naive()
}

fn partition_name(day: NaiveDate) -> String {
    format!("request_logs_p{}", day.format("%Y%m%d"))
}

/// Writes records into the request log: on PostgreSQL it makes each day's partition the first
/// time it writes into that day (and remembers which it made).
#[derive(Default)]
pub struct RequestLogWriter {
    partitions: Mutex<HashSet<NaiveDate>>,
    /// The `INSERT` of 2^i rows, by i, once made.
    statements: Mutex<Vec<Option<std::sync::Arc<str>>>>,
}

impl RequestLogWriter {
    /// The `INSERT` statement of `rows` records (a power of two).
    fn sql(&self, backend: DbBackend, rows: usize) -> std::sync::Arc<str> {
        let i = rows.ilog2() as usize;
        let mut made = self
            .statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if made.len() <= i {
            made.resize(i + 1, None);
        }
        made[i]
            .get_or_insert_with(|| insert_sql(backend, rows).into())
            .clone()
    }

    /// Inserts `records` in one transaction, at most [`ROWS_PER_INSERT`] per statement.
    pub async fn insert(
        &self,
        db: &sea_orm::DatabaseConnection,
        records: &[Record],
    ) -> StoreResult<()> {
        match self.try_insert(db, records).await {
            // A day's partition this writer made was dropped since (pruned: a record that old
            // waited long for a database that was down): made again.
            Err(e) if e.to_string().contains("no partition of relation") => {
                self.partitions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clear();
                self.try_insert(db, records).await
            }
            done => done,
        }
    }

    async fn try_insert(
        &self,
        db: &sea_orm::DatabaseConnection,
        records: &[Record],
    ) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let backend = db.get_database_backend();
        if backend == DbBackend::Sqlite {
            return self
                .insert_sqlite(db.get_sqlite_connection_pool(), records)
                .await
                .map_err(|e| {
                    sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e.into())).into()
                });
        }
        if backend == DbBackend::Postgres {
            self.make_partitions(db, records).await?;
        }
        let txn = db.begin().await?;
        let mut vals = Vec::with_capacity(ROWS_PER_INSERT * COLUMNS.len());
        // Statements of a power of two rows only: each is prepared once per connection and then
        // found in its statement cache (a statement of any other length would be parsed anew,
        // thousands of placeholders, at every flush).
        for chunk in super::pow2_chunks(records, ROWS_PER_INSERT) {
            let n = chunk.len();
            vals.clear();
            for r in chunk {
                values(r, &mut vals);
            }
            let sql = self.sql(backend, n);
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                sql.as_ref(),
                std::mem::take(&mut vals),
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// SQLite: the values bound straight to sqlx's arguments (the log is written at the data
    /// plane's full rate; sea-orm's values would be made, cloned and converted once more each).
    async fn insert_sqlite(
        &self,
        pool: &sea_orm::sqlx::SqlitePool,
        records: &[Record],
    ) -> Result<(), sea_orm::sqlx::Error> {
        use sea_orm::sqlx::sqlite::SqliteArguments;
        use sea_orm::sqlx::{self, Arguments as _, AssertSqlSafe};
        let mut tx = pool.begin().await?;
        for chunk in super::pow2_chunks(records, ROWS_PER_INSERT) {
            let n = chunk.len();
            // Sized for the statement at once (binding one by one regrows it a dozen times).
            let mut args = SqliteArguments::default();
            args.reserve(n * COLUMNS.len(), 0);
            for r in chunk {
                bind_record(&mut args, r).map_err(sqlx::Error::Encode)?;
            }
            sqlx::query_with(AssertSqlSafe(self.sql(DbBackend::Sqlite, n)), args)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The day partitions `records` fall in, made when this writer has not made them yet.
    async fn make_partitions(
        &self,
        db: &impl ConnectionTrait,
        records: &[Record],
    ) -> StoreResult<()> {
        let days: Vec<NaiveDate> = {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut days: Vec<NaiveDate> = records
                .iter()
                .map(|r| day_of(r.ts_ms))
                .filter(|d| !known.contains(d))
                .collect();
            days.sort_unstable();
            days.dedup();
            days
        };
        for day in days {
            ensure_partition(db, day).await?;
            self.partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(day);
        }
        Ok(())
    }
}

/// Makes the PostgreSQL partition of `day` unless it exists (another data plane may be making
/// it at the same moment: its "already exists" is success).
pub async fn ensure_partition(db: &impl ConnectionTrait, day: NaiveDate) -> StoreResult<()> {
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let from = start.timestamp_millis();
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF request_logs FOR VALUES FROM ({from}) TO ({})",
        partition_name(day),
        from + DAY_MS
    );
    match db.execute_unprepared(&sql).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes records older than `before_ms`: on PostgreSQL by dropping the day partitions that end
/// before it, on SQLite oldest first in batches. Returns the partitions dropped or rows deleted.
pub async fn prune(db: &impl ConnectionTrait, before_ms: i64) -> StoreResult<u64> {
    if db.get_database_backend() == DbBackend::Postgres {
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT c.relname::text FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE p.relname = 'request_logs' AND pg_table_is_visible(p.oid)",
            ))
            .await?;
        let cutoff = day_of(before_ms);
        let mut dropped = 0;
        for row in rows {
            let name: String = row.try_get_by_index(0)?;
            let Some(day) = name
                .strip_prefix("request_logs_p")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
            else {
                continue;
            };
            // A partition holds [day, day + 1): all of it is older when it ends by the cutoff.
            if day < cutoff {
                db.execute_unprepared(&format!("DROP TABLE IF EXISTS {name}"))
                    .await?;
                dropped += 1;
            }
        }
        return Ok(dropped);
    }
    // SQLite: ids grow with insertion, and so (within a flush or two) does the time; the last id
    // of a record older than the cutoff is found by bisection, then everything up to it goes.
    let Some(last) = last_id_before(db, before_ms).await? else {
        return Ok(0);
    };
    let mut deleted = 0;
    loop {
        let res = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "DELETE FROM request_logs WHERE id IN \
                 (SELECT id FROM request_logs WHERE id <= ? ORDER BY id LIMIT ?)",
                [last.into(), as_i64(PRUNE_BATCH).into()],
            ))
            .await?;
        deleted += res.rows_affected();
        if res.rows_affected() < PRUNE_BATCH {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}

/// The first record at or after id `from`: (its id, its time).
async fn first_from(db: &impl ConnectionTrait, from: i64) -> StoreResult<Option<(i64, i64)>> {
    Ok(request_log::Entity::find()
        .select_only()
        .columns([request_log::Column::Id, request_log::Column::TsMs])
        .filter(request_log::Column::Id.gte(from))
        .order_by_asc(request_log::Column::Id)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?)
}

/// SQLite: the largest id whose record (and every record before it, as far as the bisection
/// sees) is older than `before_ms`.
async fn last_id_before(db: &impl ConnectionTrait, before_ms: i64) -> StoreResult<Option<i64>> {
    let Some((first, ts)) = first_from(db, 0).await? else {
        return Ok(None);
    };
    if ts >= before_ms {
        return Ok(None);
    }
    let max: Option<i64> = request_log::Entity::find()
        .select_only()
        .column_as(request_log::Column::Id.max(), "m")
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten();
    let (mut lo, mut hi) = (first, max.unwrap_or(first));
    // Invariant: the record at (or after) `lo` is older than the cutoff.
    while lo < hi {
        let mid = lo + (hi - lo + 1) / 2;
        match first_from(db, mid).await? {
            Some((id, ts)) if ts < before_ms => lo = id.max(mid),
            _ => hi = mid - 1,
        }
    }
    Ok(Some(lo))
}

/// Which answers a log query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u16),
    /// `4` for 4xx, and so on.
    Class(u16),
}

impl StatusFilter {
    /// `200`, `4xx`, `5XX`...; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(class) = s
            .strip_suffix("xx")
            .or_else(|| s.strip_suffix("XX"))
            .and_then(|d| d.parse::<u16>().ok())
            .filter(|d| (1..=5).contains(d))
        {
            return Some(Self::Class(class));
        }
        s.parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(Self::Exact)
    }
}

/// A log query: which tenant's (all for the platform admin), which time and which requests.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub tenant_id: Option<i64>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub api_id: Option<i64>,
    pub key_id: Option<i64>,
    pub client_row_id: Option<i64>,
    pub status: Option<StatusFilter>,
    pub method: Option<String>,
    pub request_id: Option<String>,
}

/// Records matching `q`, newest first: at most `limit`, after `cursor` (the time and id of the
/// last record of the previous page).
pub async fn list(
    db: &impl ConnectionTrait,
    q: &LogQuery,
    cursor: Option<(i64, i64)>,
    limit: u64,
) -> StoreResult<Vec<request_log::Model>> {
    use request_log::Column as C;
    let mut cond = Condition::all();
    if let Some(t) = q.tenant_id {
        cond = cond.add(C::TenantId.eq(t));
    }
    if let Some(from) = q.from_ms {
        cond = cond.add(C::TsMs.gte(from));
    }
    if let Some(to) = q.to_ms {
        cond = cond.add(C::TsMs.lt(to));
    }
    for (col, v) in [
        (C::ApiId, q.api_id),
        (C::KeyId, q.key_id),
        (C::ClientRowId, q.client_row_id),
    ] {
        if let Some(v) = v {
            cond = cond.add(col.eq(v));
        }
    }
    match q.status {
        Some(StatusFilter::Exact(s)) => cond = cond.add(C::Status.eq(i32::from(s))),
        Some(StatusFilter::Class(c)) => {
            let lo = i32::from(c) * 100;
            cond = cond.add(C::Status.gte(lo)).add(C::Status.lt(lo + 100));
        }
        None => {}
    }
    if let Some(m) = &q.method {
        cond = cond.add(C::Method.eq(m.to_ascii_uppercase()));
    }
    if let Some(rid) = &q.request_id {
        cond = cond
            .add(C::RequestId.eq(rid.as_str()))
            .add(by_request_id(rid));
    }
    if let Some((ts, id)) = cursor {
        cond = cond.add(
            Condition::any()
                .add(C::TsMs.lt(ts))
                .add(Condition::all().add(C::TsMs.eq(ts)).add(C::Id.lt(id))),
        );
    }
    Ok(request_log::Entity::find()
        .filter(cond)
        .order_by_desc(C::TsMs)
        .order_by_desc(C::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Where a request id's record can be: an id the caller sent is in the partial index of given
/// ids; one the gateway made (a version 7 UUID) is at the time it names, found through the
/// time index.
fn by_request_id(rid: &str) -> Condition {
    use request_log::Column as C;
    let given = Expr::cust(format!("(flags & {}) <> 0", flags::REQUEST_ID_GIVEN));
    let mut c = Condition::any().add(given);
    if let Some(at) = crate::request_log::time_of_request_id(rid) {
        c = c.add(C::TsMs.between(at - REQUEST_ID_SLACK_MS, at + REQUEST_ID_SLACK_MS));
    }
    c
}

/// How far a record's time may be from the time its request id names (the same clock read makes
/// both; a minute either way costs nothing).
const REQUEST_ID_SLACK_MS: i64 = 60_000;

/// The newest record of `request_id` (of `tenant_id`, or of any tenant for the platform admin).
pub async fn find(
    db: &impl ConnectionTrait,
    tenant_id: Option<i64>,
    request_id: &str,
) -> StoreResult<Option<request_log::Model>> {
    let q = LogQuery {
        tenant_id,
        request_id: Some(request_id.to_owned()),
        ..LogQuery::default()
    };
    Ok(list(db, &q, None, 1).await?.into_iter().next())
}

/// How many records the log holds for a tenant (all tenants with `None`): for tests and admins.
pub async fn count(db: &impl ConnectionTrait, tenant_id: Option<i64>) -> StoreResult<u64> {
    use sea_orm::PaginatorTrait;
    let mut q = request_log::Entity::find();
    if let Some(t) = tenant_id {
        q = q.filter(request_log::Column::TenantId.eq(t));
    }
    Ok(q.count(db).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    const DAY: i64 = DAY_MS;
    /// 2026-12-01 00:00 UTC.
    const T0: i64 = 1_796_083_200_000;

    fn rec(tenant_id: i64, ts_ms: i64, rid: &str, status: u16) -> Record {
        let mut r = crate::testing::record(tenant_id, ts_ms, rid);
        r.api_id = 7;
        r.key_id = 9;
        r.key_prefix = Some(crate::request_log::key_prefix("gw_live_0123456789abcdef"));
        r.path = "/t/api/x".into();
        r.status = status;
        r.upstream_latency_us = Some(1200);
        r.bytes_out = 42;
        r.target_id = 3;
        if status == 429 {
            r.flags |= flags::RATE_LIMITED;
            r.error_type = Some("rate_limited");
        }
        r
    }

    async fn round_trip(t: TestDb) {
        let db = &t.db;
        let writer = RequestLogWriter::default();
        // 1,200 records over three days, of two tenants: more than one statement's worth.
        let mut records = Vec::new();
        for i in 0..1200 {
            let tenant = 1 + i % 2;
            let status = [200, 404, 429, 502][usize::try_from(i % 4).unwrap()];
            records.push(rec(
                tenant,
                T0 + i * (3 * DAY / 1200),
                &format!("r{i}"),
                status,
            ));
        }
        writer.insert(db, &records).await.unwrap();
        assert_eq!(count(db, None).await.unwrap(), 1200, "{:?}", t.backend);
        assert_eq!(count(db, Some(1)).await.unwrap(), 600);

        let mine = |status| LogQuery {
            tenant_id: Some(1),
            status,
            ..LogQuery::default()
        };
        // Newest first, pages by cursor, nothing twice, nothing of the other tenant.
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = list(db, &mine(None), cursor, 250).await.unwrap();
            if page.is_empty() {
                break;
            }
            cursor = page.last().map(|r| (r.ts_ms, r.id));
            seen.extend(page);
        }
        assert_eq!(seen.len(), 600);
        assert!(seen.windows(2).all(|w| w[0].ts_ms >= w[1].ts_ms));
        assert!(seen.iter().all(|r| r.tenant_id == 1));
        let r = &seen[0];
        let d = r.detail();
        assert_eq!(d.key_prefix.as_deref(), Some("gw_live_01234567"));
        assert_eq!((d.client_ip.as_ref(), d.bytes_out), ("127.0.0.1", 42));
        // Tenant 1 has the even records: 200 and 429 by turns.
        let class4 = list(db, &mine(StatusFilter::parse("4xx")), None, 1000)
            .await
            .unwrap();
        assert_eq!(class4.len(), 300);
        assert!(
            class4
                .iter()
                .all(|r| r.status == 429 && r.flags & flags::RATE_LIMITED != 0)
        );
        assert!(
            list(db, &mine(StatusFilter::parse("502")), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // A request id finds its record, for its tenant only: one the caller sent, and one the
        // gateway made (a version 7 UUID of the record's time).
        assert_eq!(find(db, Some(1), "r10").await.unwrap().unwrap().status, 429);
        assert!(find(db, Some(2), "r10").await.unwrap().is_none());
        let made = crate::request_log::new_request_id(T0 + 2 * DAY + 5);
        let mut own = rec(2, T0 + 2 * DAY + 5, &made, 200);
        own.flags = 0;
        writer.insert(db, &[own]).await.unwrap();
        assert_eq!(
            find(db, Some(2), &made).await.unwrap().unwrap().tenant_id,
            2
        );
        assert!(find(db, Some(1), &made).await.unwrap().is_none());
        // A time range.
        let day2 = LogQuery {
            from_ms: Some(T0 + DAY),
            to_ms: Some(T0 + 2 * DAY),
            ..LogQuery::default()
        };
        assert_eq!(list(db, &day2, None, 2000).await.unwrap().len(), 400);

        // Pruning before the third day keeps the third day whole.
        prune(db, T0 + 2 * DAY).await.unwrap();
        let left = list(db, &LogQuery::default(), None, 2000).await.unwrap();
        assert_eq!(left.len(), 401, "{:?}", t.backend);
        assert!(left.iter().all(|r| r.ts_ms >= T0 + 2 * DAY));
        // Writing again into a pruned day makes its partition again.
        writer
            .insert(db, &[rec(1, T0 + 10, "again", 200)])
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", t.backend));
        let w2 = RequestLogWriter::default();
        w2.insert(db, &[rec(1, T0 + 20, "again2", 200)])
            .await
            .unwrap();
        assert!(find(db, None, "again2").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_request_log_round_trips_pages_and_prunes_on_every_backend() {
        for t in TestDb::all().await {
            round_trip(t).await;
        }
    }

    #[test]
    fn status_filters_parse() {
        assert_eq!(StatusFilter::parse("5xx"), Some(StatusFilter::Class(5)));
        assert_eq!(StatusFilter::parse("404"), Some(StatusFilter::Exact(404)));
        for bad in ["6xx", "99", "abc", "", "2x"] {
            assert_eq!(StatusFilter::parse(bad), None, "{bad}");
        }
    }
}
