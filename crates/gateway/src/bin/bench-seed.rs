//! Seeds a database for the benchmark: tenant `bench`, API `up` forwarding to the given upstream, a
//! strict and a fast plan with limits never reached, a key on each, and `N` more keys.
//! `bench-seed <database-url> <upstream-url> [extra-keys]` prints the keys as JSON.

use chrono::Utc;
use domain::apikey::ApiKey;
use domain::entities::api_key;
use domain::header::{KeyHeader, UpstreamTimeout};
use domain::plan::{Enforcement, PlanLimits};
use domain::sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait};
use domain::slug::Slug;
use domain::store::{self, NewApi};
use domain::upstream::UpstreamUrl;

const BATCH: usize = 2_000;
/// Far above anything a benchmark reaches.
const NEVER: i64 = 1_000_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: bench-seed <database-url> <upstream-url> [extra-keys]")
    })?;
    let upstream = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("missing the upstream URL"))?;
    let extra: usize = args.next().map_or(Ok(0), |n| n.parse())?;
    let db = domain::db::connect_and_migrate(&url).await?;
    let owner = store::create_user(&db, "bench", "bench@example.com", "x", false).await?;
    let tenant = store::create_tenant(&db, "Bench", &Slug::parse("bench")?, owner.id).await?;
    let limits = PlanLimits::new(NEVER, Some(NEVER), None, None)?;
    let strict = store::create_plan(&db, tenant.id, "strict", limits, Enforcement::Strict).await?;
    let fast = store::create_plan(&db, tenant.id, "fast", limits, Enforcement::Fast).await?;
    let new_api = NewApi {
        name: "Bench upstream".into(),
        slug: Slug::parse("up")?,
        upstream_url: UpstreamUrl::parse(&upstream)?,
        key_header: KeyHeader::default(),
        timeout: UpstreamTimeout::default(),
    };
    store::create_api(&db, tenant.id, new_api).await?;
    let (_, strict_key) = store::create_api_key(&db, tenant.id, strict.id, "strict", None).await?;
    let (_, fast_key) = store::create_api_key(&db, tenant.id, fast.id, "fast", None).await?;
    let mut left = extra;
    while left > 0 {
        let take = left.min(BATCH);
        let rows = (0..take).map(|_| {
            let raw = ApiKey::generate();
            api_key::ActiveModel {
                tenant_id: Set(tenant.id),
                plan_id: Set(strict.id),
                name: Set("filler".into()),
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
    println!(
        "{}",
        serde_json::json!({"strict_key": strict_key.expose(), "fast_key": fast_key.expose(), "path": "/bench/up/items"})
    );
    Ok(())
}
