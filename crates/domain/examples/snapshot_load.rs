//! Measures how long the data plane's snapshot takes to load with many keys.
//!
//! `cargo run --release -p domain --example snapshot_load -- 1000000 [DATABASE_URL]`
//! (default: a fresh SQLite file in a temporary directory).

use std::time::Instant;

use chrono::Utc;
use domain::apikey::ApiKey;
use domain::entities::api_key;
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::{ActiveValue::Set, EntityTrait, PaginatorTrait, TransactionTrait};
use domain::slug::Slug;
use domain::snapshot::Snapshot;
use domain::store;

const BATCH: usize = 2_000;

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
            })
        })
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let url = args.next().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        )
    });
    let db = domain::db::connect_and_migrate(&url).await?;

    let existing = api_key::Entity::find().count(&db).await?;
    if existing == n as u64 {
        println!("reusing {existing} keys in {url}");
    } else {
        seed(&db, n).await?;
    }
    load(&db, n).await
}

async fn seed(db: &domain::sea_orm::DatabaseConnection, n: usize) -> anyhow::Result<()> {
    let db = db.clone();
    let started = Instant::now();
    let owner = store::create_user(&db, "bench", "bench@example.com", "x", false).await?;
    let tenant = store::create_tenant(&db, "Bench", &Slug::parse("bench")?, owner.id).await?;
    let limits = PlanLimits::new(1_000_000, None, None, None)?;
    let plan = store::create_plan(&db, tenant.id, "p", limits, Enforcement::Strict).await?;
    let mut left = n;
    while left > 0 {
        let take = left.min(BATCH);
        let rows = (0..take).map(|_| {
            let raw = ApiKey::generate();
            api_key::ActiveModel {
                tenant_id: Set(tenant.id),
                plan_id: Set(plan.id),
                name: Set("k".into()),
                prefix: Set(raw.display_prefix()),
                key_hash: Set(raw.hash().to_hex()),
                is_active: Set(true),
                expires_at: Set(None),
                created_at: Set(Utc::now()),
                last_used_at: Set(None),
                ..Default::default()
            }
        });
        let txn = db.begin().await?;
        api_key::Entity::insert_many(rows).exec(&txn).await?;
        txn.commit().await?;
        left -= take;
    }
    println!("seeded {n} keys in {:.2?}", started.elapsed());
    Ok(())
}

async fn load(db: &domain::sea_orm::DatabaseConnection, n: usize) -> anyhow::Result<()> {
    let before = rss_mib();
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let snap = Snapshot::load(db).await?;
        times.push(started.elapsed());
        assert_eq!(snap.key_count(), n);
    }
    times.sort();
    println!(
        "snapshot_load keys={n} median={:.2?} min={:.2?} rss_before={before}MiB rss_after={}MiB",
        times[1],
        times[0],
        rss_mib()
    );
    Ok(())
}
