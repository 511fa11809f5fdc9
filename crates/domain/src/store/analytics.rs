//! Traffic analytics in the database: the data planes add their counts per minute, hour and day
//! (one upsert per bucket that adds to what is there, so any number of data planes and flushes
//! add up), and the management API and dashboard read sums and merged latency histograms of any
//! range back, grouped by period, API, key and so on.

use std::collections::HashMap;
use std::fmt::Write as _;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use super::StoreResult;
use crate::analytics::{Dims, Merged, RESOLUTIONS, Stats, retention_days};

/// Rows deleted per statement when pruning.
const PRUNE_BATCH: i64 = 5_000;

const STAT_COLUMNS: [&str; 10] = [
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "rate_limited",
    "upstream_errors",
    "bytes_in",
    "bytes_out",
    "latency_us_sum",
];

const DIM_COLUMNS: [&str; 7] = [
    "tenant_id",
    "resolution",
    "period_start",
    "api_id",
    "key_id",
    "client_id",
    "route_id",
];

/// Placeholders in `backend`'s syntax, numbered from 1 across one statement.
struct Params {
    backend: DbBackend,
    values: Vec<Value>,
}

impl Params {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            values: Vec::new(),
        }
    }

    /// Adds a value and writes its placeholder into `sql`.
    fn push(&mut self, sql: &mut String, v: impl Into<Value>) {
        self.values.push(v.into());
        if self.backend == DbBackend::Postgres {
            let _ = write!(sql, "${}", self.values.len());
        } else {
            sql.push('?');
        }
    }

    fn statement(self, sql: String) -> Statement {
        Statement::from_sql_and_values(self.backend, sql, self.values)
    }
}

/// One bucket's key at one resolution.
type Bucket = (Dims, i64, i64);

/// The counts of `minutes` (per (dims, minute start in seconds)) at every resolution.
fn at_every_resolution<'a>(
    minutes: impl IntoIterator<Item = (&'a Dims, i64, &'a Stats)>,
) -> HashMap<Bucket, Stats> {
    let mut out: HashMap<Bucket, Stats> = HashMap::new();
    for (dims, minute_start, stats) in minutes {
        for res in RESOLUTIONS {
            let start = minute_start.div_euclid(res) * res;
            out.entry((*dims, res, start)).or_default().merge(stats);
        }
    }
    out
}

/// `ON CONFLICT (<bucket>) DO UPDATE SET c = t.c + excluded.c, ...`
fn adding(table: &str, bucket: &[&str], counts: &[&str]) -> String {
    let sets: Vec<String> = counts
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect();
    format!(
        " ON CONFLICT ({}) DO UPDATE SET {}",
        bucket.join(", "),
        sets.join(", ")
    )
}

/// Adds per-minute traffic (`(dims, minute start in seconds since the epoch, stats)`) to the
/// minute, hour and day buckets (run it in a transaction: a retried batch must not count twice).
pub async fn add<'a>(
    db: &impl ConnectionTrait,
    minutes: impl IntoIterator<Item = (&'a Dims, i64, &'a Stats)>,
) -> StoreResult<()> {
    let buckets = at_every_resolution(minutes);
    if buckets.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let rows: Vec<(&Bucket, &Stats)> = buckets.iter().collect();
    for chunk in super::pow2_chunks(&rows, super::ROWS_PER_STATEMENT) {
        let mut sql = format!(
            "INSERT INTO traffic_stats ({}, {}) VALUES ",
            DIM_COLUMNS.join(", "),
            STAT_COLUMNS.join(", ")
        );
        let mut p = Params::new(backend);
        for (i, ((d, res, start), s)) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            let vals: [i64; 17] = [
                d.tenant_id,
                *res,
                *start,
                d.api_id,
                d.key_id,
                d.client_id,
                d.route_id,
                s.requests,
                s.status_2xx,
                s.status_3xx,
                s.status_4xx,
                s.status_5xx,
                s.rate_limited,
                s.upstream_errors,
                s.bytes_in,
                s.bytes_out,
                s.latency_us_sum,
            ];
            for (j, v) in vals.into_iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                p.push(&mut sql, v);
            }
            sql.push(')');
        }
        sql.push_str(&adding("traffic_stats", &DIM_COLUMNS, &STAT_COLUMNS));
        db.execute_raw(p.statement(sql)).await?;
    }
    let bins: Vec<(&Bucket, u16, u64)> = buckets
        .iter()
        .flat_map(|(b, s)| s.latency.bins().iter().map(move |(bin, n)| (b, *bin, *n)))
        .collect();
    let mut cols: Vec<&str> = DIM_COLUMNS.to_vec();
    cols.push("bin");
    for chunk in super::pow2_chunks(&bins, super::ROWS_PER_STATEMENT) {
        let mut sql = format!(
            "INSERT INTO traffic_latency ({}, count) VALUES ",
            cols.join(", ")
        );
        let mut p = Params::new(backend);
        for (i, ((d, res, start), bin, n)) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            let vals: [i64; 9] = [
                d.tenant_id,
                *res,
                *start,
                d.api_id,
                d.key_id,
                d.client_id,
                d.route_id,
                i64::from(*bin),
                i64::try_from(*n).unwrap_or(i64::MAX),
            ];
            for (j, v) in vals.into_iter().enumerate() {
                if j > 0 {
                    sql.push_str(", ");
                }
                p.push(&mut sql, v);
            }
            sql.push(')');
        }
        sql.push_str(&adding("traffic_latency", &cols, &["count"]));
        db.execute_raw(p.statement(sql)).await?;
    }
    Ok(())
}

/// Deletes buckets past their resolution's retention ([`retention_days`]) at `now_s`, in
/// batches. Returns the rows deleted.
pub async fn prune(db: &impl ConnectionTrait, now_s: i64) -> StoreResult<u64> {
    let backend = db.get_database_backend();
    let mut deleted = 0;
    for res in RESOLUTIONS {
        let before = now_s - retention_days(res) * 86_400;
        for table in ["traffic_stats", "traffic_latency"] {
            loop {
                let mut sql = format!(
                    "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} \
                     WHERE resolution = "
                );
                let mut p = Params::new(backend);
                p.push(&mut sql, res);
                sql.push_str(" AND period_start < ");
                p.push(&mut sql, before);
                sql.push_str(" LIMIT ");
                p.push(&mut sql, PRUNE_BATCH);
                sql.push(')');
                let n = db.execute_raw(p.statement(sql)).await?.rows_affected();
                deleted += n;
                if n < u64::try_from(PRUNE_BATCH).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
    }
    Ok(deleted)
}

/// Which traffic a read covers: a tenant's (all tenants with `None`, for the platform admin), at
/// one resolution, periods starting in `[from_s, to_s)`, optionally one API, key, client, route.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrafficQuery {
    pub tenant_id: Option<i64>,
    pub resolution: i64,
    pub from_s: i64,
    pub to_s: i64,
    pub api_id: Option<i64>,
    pub key_id: Option<i64>,
    pub client_id: Option<i64>,
    pub route_id: Option<i64>,
}

/// What sums are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One group (key 0).
    All,
    Period,
    Tenant,
    Api,
    Key,
    Client,
    Route,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            Self::All => "0",
            Self::Period => "period_start",
            Self::Tenant => "tenant_id",
            Self::Api => "api_id",
            Self::Key => "key_id",
            Self::Client => "client_id",
            Self::Route => "route_id",
        }
    }
}

impl TrafficQuery {
    /// ` WHERE ...` of this query, its values pushed into `p`.
    fn filter(&self, sql: &mut String, p: &mut Params) {
        sql.push_str(" WHERE resolution = ");
        p.push(sql, self.resolution);
        sql.push_str(" AND period_start >= ");
        p.push(sql, self.from_s);
        sql.push_str(" AND period_start < ");
        p.push(sql, self.to_s);
        for (col, v) in [
            ("tenant_id", self.tenant_id),
            ("api_id", self.api_id),
            ("key_id", self.key_id),
            ("client_id", self.client_id),
            ("route_id", self.route_id),
        ] {
            if let Some(v) = v {
                let _ = write!(sql, " AND {col} = ");
                p.push(sql, v);
            }
        }
    }
}

/// Sums of the counts (latency histograms aside) of the traffic `q` covers, per `group`.
pub async fn sums(
    db: &impl ConnectionTrait,
    q: &TrafficQuery,
    group: GroupBy,
) -> StoreResult<Vec<(i64, Stats)>> {
    let backend = db.get_database_backend();
    let key = group.column();
    let sums: Vec<String> = STAT_COLUMNS
        .iter()
        .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
        .collect();
    let mut sql = format!("SELECT {key}, {} FROM traffic_stats", sums.join(", "));
    let mut p = Params::new(backend);
    q.filter(&mut sql, &mut p);
    if group != GroupBy::All {
        let _ = write!(sql, " GROUP BY {key} ORDER BY {key}");
    }
    let rows = db.query_all_raw(p.statement(sql)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let n = |i: usize| -> StoreResult<i64> {
            Ok(row.try_get_by_index::<Option<i64>>(i)?.unwrap_or(0))
        };
        let stats = Stats {
            requests: n(1)?,
            status_2xx: n(2)?,
            status_3xx: n(3)?,
            status_4xx: n(4)?,
            status_5xx: n(5)?,
            rate_limited: n(6)?,
            upstream_errors: n(7)?,
            bytes_in: n(8)?,
            bytes_out: n(9)?,
            latency_us_sum: n(10)?,
            latency: crate::analytics::Histogram::default(),
        };
        // The "all" group's key is the literal 0, an integer on either database.
        let k = if group == GroupBy::All { 0 } else { n(0)? };
        if stats.requests > 0 {
            out.push((k, stats));
        }
    }
    Ok(out)
}

/// The merged latency histograms of the traffic `q` covers, per `group`.
pub async fn latencies(
    db: &impl ConnectionTrait,
    q: &TrafficQuery,
    group: GroupBy,
) -> StoreResult<HashMap<i64, Merged>> {
    let backend = db.get_database_backend();
    let key = group.column();
    let mut sql = format!("SELECT {key}, bin, CAST(SUM(count) AS BIGINT) FROM traffic_latency");
    let mut p = Params::new(backend);
    q.filter(&mut sql, &mut p);
    if group == GroupBy::All {
        sql.push_str(" GROUP BY bin");
    } else {
        let _ = write!(sql, " GROUP BY {key}, bin");
    }
    let rows = db.query_all_raw(p.statement(sql)).await?;
    let mut out: HashMap<i64, Merged> = HashMap::new();
    for row in rows {
        let k = if group == GroupBy::All {
            0
        } else {
            row.try_get_by_index::<i64>(0)?
        };
        let bin: i32 = row.try_get_by_index(1)?;
        let n: Option<i64> = row.try_get_by_index(2)?;
        out.entry(k).or_default().add_bin(
            u16::try_from(bin).unwrap_or(crate::analytics::MAX_BIN),
            u64::try_from(n.unwrap_or(0)).unwrap_or(0),
        );
    }
    Ok(out)
}

/// Traffic of a period, a group or a whole range, as read back: counts and percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub requests: i64,
    pub status_2xx: i64,
    pub status_3xx: i64,
    pub status_4xx: i64,
    pub status_5xx: i64,
    pub rate_limited: i64,
    pub upstream_errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// Mean latency, ms.
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Summary {
    fn of(s: &Stats, latency: Option<&Merged>) -> Self {
        #[allow(clippy::cast_precision_loss)] // sums far below 2^53
        let mean_ms = (s.requests > 0)
            .then(|| (s.latency_us_sum as f64 / s.requests as f64).round() / 1000.0);
        Self {
            requests: s.requests,
            status_2xx: s.status_2xx,
            status_3xx: s.status_3xx,
            status_4xx: s.status_4xx,
            status_5xx: s.status_5xx,
            rate_limited: s.rate_limited,
            upstream_errors: s.upstream_errors,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            mean_ms,
            p50_ms: latency.and_then(|m| m.quantile_ms(0.5)),
            p95_ms: latency.and_then(|m| m.quantile_ms(0.95)),
            p99_ms: latency.and_then(|m| m.quantile_ms(0.99)),
        }
    }

    /// Answers of the gateway or the upstream that failed (5xx), over all requests.
    #[allow(clippy::cast_precision_loss)]
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.status_5xx as f64 / self.requests as f64
        }
    }
}

/// The analytics of a range: totals, one point per period (empty periods included), and the
/// breakdowns by API and by key (busiest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub total: Summary,
    pub series: Vec<(i64, Summary)>,
    pub by_api: Vec<(i64, Summary)>,
    pub by_key: Vec<(i64, Summary)>,
}

/// The most periods a report holds (a day of minutes, two months of hours, years of days).
pub const MAX_POINTS: i64 = 1500;

fn grouped(sums: Vec<(i64, Stats)>, mut latency: HashMap<i64, Merged>) -> Vec<(i64, Summary)> {
    let mut out: Vec<(i64, Summary)> = sums
        .into_iter()
        .map(|(k, s)| {
            let m = latency.remove(&k);
            (k, Summary::of(&s, m.as_ref()))
        })
        .collect();
    out.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
    out
}

/// The report of `q`'s range (`from_s` and `to_s` on its resolution's boundaries).
pub async fn report(db: &impl ConnectionTrait, q: &TrafficQuery) -> StoreResult<Report> {
    let all = sums(db, q, GroupBy::All).await?;
    let mut all_latency = latencies(db, q, GroupBy::All).await?;
    let total = all
        .first()
        .map(|(_, s)| Summary::of(s, all_latency.remove(&0).as_ref()))
        .unwrap_or_default();
    let mut per = sums(db, q, GroupBy::Period)
        .await?
        .into_iter()
        .collect::<HashMap<_, _>>();
    let mut per_latency = latencies(db, q, GroupBy::Period).await?;
    let res = q.resolution.max(1);
    let mut series = Vec::new();
    let mut t = q.from_s.div_euclid(res) * res;
    while t < q.to_s && series.len() < usize::try_from(MAX_POINTS).unwrap_or(usize::MAX) {
        let s = per.remove(&t).unwrap_or_default();
        series.push((t, Summary::of(&s, per_latency.remove(&t).as_ref())));
        t += res;
    }
    let by_api = grouped(
        sums(db, q, GroupBy::Api).await?,
        latencies(db, q, GroupBy::Api).await?,
    );
    let by_key = grouped(
        sums(db, q, GroupBy::Key).await?,
        latencies(db, q, GroupBy::Key).await?,
    );
    Ok(Report {
        total,
        series,
        by_api,
        by_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestDb, traffic as stats};

    /// 2026-12-01 10:00 UTC, in seconds.
    const T0: i64 = 1_796_119_200;

    fn dims(tenant_id: i64, api_id: i64, key_id: i64) -> Dims {
        Dims {
            tenant_id,
            api_id,
            key_id,
            client_id: 0,
            route_id: 0,
        }
    }

    #[allow(clippy::many_single_char_names)] // a, b: two keys' buckets; q: the query
    async fn adds_up(t: TestDb) {
        let db = &t.db;
        let tenants = [
            crate::testing::tenant(db, "one").await,
            crate::testing::tenant(db, "two").await,
        ];
        let (a, b) = (dims(tenants[0], 1, 10), dims(tenants[0], 2, 20));
        let other = dims(tenants[1], 3, 30);
        // Two flushes of the same minute add up; a minute of the next hour stays apart.
        let first = stats(&[(200, 10), (200, 20), (429, 1)]);
        let second = stats(&[(502, 100), (200, 30)]);
        let later = stats(&[(200, 40)]);
        add(db, [(&a, T0, &first), (&b, T0, &second)])
            .await
            .unwrap();
        add(db, [(&a, T0, &second), (&other, T0, &first)])
            .await
            .unwrap();
        add(db, [(&a, T0 + 3600, &later)]).await.unwrap();

        let q = |res: i64, from: i64, to: i64| TrafficQuery {
            tenant_id: Some(tenants[0]),
            resolution: res,
            from_s: from,
            to_s: to,
            ..TrafficQuery::default()
        };
        let all = sums(db, &q(60, T0, T0 + 60), GroupBy::All).await.unwrap();
        assert_eq!(all.len(), 1, "{:?}", t.backend);
        let s = &all[0].1;
        assert_eq!(
            (s.requests, s.status_2xx, s.status_4xx, s.status_5xx),
            (7, 4, 1, 2)
        );
        assert_eq!(
            (s.rate_limited, s.upstream_errors, s.bytes_out),
            (1, 2, 350)
        );
        // The day holds both hours; the other tenant's traffic is not in it.
        let day = sums(db, &q(86_400, T0 - 36_000, T0 + 50_400), GroupBy::All)
            .await
            .unwrap();
        assert_eq!(day[0].1.requests, 8);
        let hours = sums(db, &q(3600, T0, T0 + 7200), GroupBy::Period)
            .await
            .unwrap();
        assert_eq!(
            hours
                .iter()
                .map(|(p, s)| (*p, s.requests))
                .collect::<Vec<_>>(),
            vec![(T0, 7), (T0 + 3600, 1)]
        );
        let by_key = sums(db, &q(60, T0, T0 + 60), GroupBy::Key).await.unwrap();
        assert_eq!(
            by_key
                .iter()
                .map(|(k, s)| (*k, s.requests))
                .collect::<Vec<_>>(),
            vec![(10, 5), (20, 2)]
        );
        // Latencies merge across flushes and keys: 1, 10, 20, 30, 30, 100, 100 ms (the 4th of 7
        // is the median by nearest rank).
        let lat = latencies(db, &q(60, T0, T0 + 60), GroupBy::All)
            .await
            .unwrap();
        let m = &lat[&0];
        assert_eq!(m.count(), 7);
        let p50 = m.quantile_ms(0.5).unwrap();
        assert!((p50 - 30.0).abs() <= 30.0 / 32.0, "p50 {p50}");
        let p99 = m.quantile_ms(0.99).unwrap();
        assert!((p99 - 100.0).abs() <= 100.0 / 32.0, "p99 {p99}");
        let per_key = latencies(db, &q(60, T0, T0 + 60), GroupBy::Key)
            .await
            .unwrap();
        assert_eq!(per_key[&20].count(), 2);
        // Pruning by age: a year later only the day rows are left (400 days).
        prune(db, T0 + 365 * 86_400).await.unwrap();
        assert!(
            sums(db, &q(60, T0, T0 + 60), GroupBy::All)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            sums(db, &q(3600, T0, T0 + 7200), GroupBy::All)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            sums(db, &q(86_400, T0 - 36_000, T0 + 50_400), GroupBy::All)
                .await
                .unwrap()[0]
                .1
                .requests,
            8
        );
    }

    #[tokio::test]
    async fn traffic_adds_up_at_every_resolution_on_every_backend() {
        for t in TestDb::all().await {
            adds_up(t).await;
        }
    }
}
