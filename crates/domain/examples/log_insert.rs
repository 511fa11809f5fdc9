//! What writing the request log costs: records inserted per second and CPU µs per record, through
//! the data plane's writer (`RequestLogWriter`, batches of a flush), on a fresh SQLite file — or
//! on PostgreSQL with `TEST_DATABASE_URL`.
//!
//! `cargo run --release -p domain --features test-support --example log_insert`

use std::time::Instant;

use domain::request_log::{Record, key_prefix};
use domain::store::request_log::RequestLogWriter;
use domain::testing::TestDb;

const RECORDS: usize = 100_000;
/// Records per write: about a second of a busy data plane.
const BATCH: usize = 20_000;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
#[allow(clippy::unwrap_used, clippy::cast_precision_loss)]
async fn main() {
    let db = match TestDb::postgres().await {
        Some(pg) if std::env::var("TEST_DATABASE_URL").is_ok() => pg,
        _ => TestDb::sqlite().await,
    };
    let tenant = domain::testing::tenant(&db.db, "bench").await;
    let writer = RequestLogWriter::default();
    let now = chrono::Utc::now().timestamp_millis();
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| {
            let mut r = domain::testing::record(
                tenant,
                now + i64::try_from(i / 30).unwrap(),
                &uuid::Uuid::new_v4().to_string(),
            );
            // Made by the gateway: not in the index of given request ids.
            r.flags = 0;
            r.api_id = 1;
            r.key_id = 1;
            r.key_prefix = Some(key_prefix("gw_live_0123456789abcdef"));
            r.path = "/bench/up/items".into();
            r.upstream_latency_us = Some(1000);
            r.bytes_out = 24;
            r.target_id = 1;
            r
        })
        .collect();
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    for batch in records.chunks(BATCH) {
        writer.insert(&db.db, batch).await.unwrap();
    }
    let took = wall.elapsed().as_secs_f64();
    let used = cpu_seconds() - cpu;
    println!(
        "{:?}: {RECORDS} records in {took:.2} s: {:.0} records/s, {:.2} us CPU per record (this process; the database's own when it is PostgreSQL)",
        db.backend,
        RECORDS as f64 / took,
        used * 1e6 / RECORDS as f64
    );
}
