//! How long the data plane's snapshot takes to load: 10k and 1M keys (SQLite; PostgreSQL with
//! `GW_BENCH_DATABASE_URL`, whose database is emptied first). Seeded databases are kept under
//! `target/bench-db/` and reused, since seeding a million keys takes a minute or two.
//! `cargo bench -p domain --bench snapshot` (`GW_BENCH_KEYS=10000` for the small one only).

// Bench set-up fails loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use domain::entities::api_key;
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::{
    ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, TransactionTrait,
};
use domain::slug::Slug;
use domain::snapshot::Snapshot;
use domain::store;

async fn seeded(n: usize) -> DatabaseConnection {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-db");
    std::fs::create_dir_all(dir).expect("bench-db dir");
    let url = std::env::var("GW_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{dir}/snapshot-{n}.db?mode=rwc"));
    let db = domain::db::connect_and_migrate(&url)
        .await
        .expect("database");
    if api_key::Entity::find().count(&db).await.expect("count") == n as u64 {
        return db;
    }
    eprintln!("seeding {n} keys into {url} (once)");
    let owner = store::create_user(&db, &format!("bench{n}"), "b@example.com", "x", false)
        .await
        .expect("user");
    let slug = Slug::parse(&format!("bench{n}")).expect("slug");
    let tenant = store::create_tenant(&db, "Bench", &slug, owner.id)
        .await
        .expect("tenant");
    let limits = PlanLimits::new(1_000, None, None, None).expect("limits");
    let plan = store::create_plan(&db, tenant.id, "p", limits, Enforcement::Strict)
        .await
        .expect("plan");
    let txn = db.begin().await.expect("txn");
    store::insert_generated_keys(&txn, tenant.id, plan.id, n)
        .await
        .expect("keys");
    txn.commit().await.expect("commit");
    if url.starts_with("sqlite:") {
        // One huge transaction leaves every page in the write-ahead log, where each read looks it
        // up again (5.7 s instead of 4.2 s here); a live database is checkpointed as it goes.
        db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await
            .expect("checkpoint");
    }
    db
}

fn snapshot_load(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("GW_BENCH_KEYS")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("snapshot_load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for n in sizes {
        let db = rt.block_on(seeded(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.to_async(&rt).iter(|| async {
                let snap = Snapshot::load(&db).await.expect("load");
                assert!(snap.key_count() >= n);
                snap
            });
        });
    }
    group.finish();
}

criterion_group!(benches, snapshot_load);
criterion_main!(benches);
