//! Seeds a database for the benchmark: tenant `bench`, API `up` forwarding to the given upstream, a
//! strict and a fast plan with limits never reached, a key on each, and `N` more keys; and API
//! `routed` on the same upstream with 100 routes, its `/items` the last in priority (what the
//! `routes` target calls, against `up` without routes) and `/limited` the first, with a window of
//! its own (what `route-limit` calls); and API `spread` on three targets (the same upstream three
//! times, equal weights: what `targets` calls, against `up` on one); and API `token` taking keys or
//! tokens, the tenant with a signing key sealed by `GATEWAY_TOKEN_KEY` and tokens that live a day
//! (what `token` calls with a minted token, against `up` with the key); and tenant `ceiling` with
//! the same API `up`, a strict plan and a key, under a ceiling never reached (what `ceiling` calls).
//! `bench-seed <database-url> <upstream-url> [extra-keys]` prints the keys as JSON.

use domain::header::{KeyHeader, UpstreamTimeout};
use domain::plan::{Enforcement, PlanLimits};
use domain::route::{MatchKind, Methods, NewRoute, RouteLimit, RoutePath};
use domain::sea_orm::TransactionTrait;
use domain::slug::Slug;
use domain::store::{self, NewApi};
use domain::upstream::UpstreamUrl;

/// Routes of the `routed` API.
const ROUTES: usize = 100;

/// Far above anything a benchmark reaches.
const NEVER: i64 = 1_000_000_000;
const NEVER_U: u64 = 1_000_000_000;

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
    let new_api = new_api_again(&upstream)?;
    store::create_api(&db, tenant.id, new_api.clone()).await?;
    let routed = store::create_api(
        &db,
        tenant.id,
        NewApi {
            name: "Bench upstream with routes".into(),
            slug: Slug::parse("routed")?,
            ..new_api
        },
    )
    .await?;
    for i in 0..ROUTES - 1 {
        let mut r = NewRoute::new(
            RoutePath::parse(&format!("/r{i}/{{id}}")).map_err(anyhow::Error::msg)?,
            MatchKind::Prefix,
            Methods::parse(&["GET", "POST"]).map_err(anyhow::Error::msg)?,
        );
        r.priority = i32::try_from(ROUTES - i)?;
        store::create_route(&db, tenant.id, routed.id, r).await?;
    }
    let mut last = NewRoute::new(
        RoutePath::parse("/items").map_err(anyhow::Error::msg)?,
        MatchKind::Prefix,
        Methods::parse(&["GET"]).map_err(anyhow::Error::msg)?,
    );
    last.priority = -1;
    store::create_route(&db, tenant.id, routed.id, last).await?;
    // Tried first: a route with a window of its own, never reached (what `route-limit` calls).
    let mut limited = NewRoute::new(
        RoutePath::parse("/limited").map_err(anyhow::Error::msg)?,
        MatchKind::Prefix,
        Methods::parse(&["GET"]).map_err(anyhow::Error::msg)?,
    );
    limited.priority = i32::try_from(ROUTES + 1)?;
    limited.rate_limit = Some(RouteLimit {
        requests_per_minute: NEVER_U,
        burst: NEVER_U,
        requests_per_day: None,
    });
    store::create_route(&db, tenant.id, routed.id, limited).await?;
    // Three healthy targets, balanced by weight (what `targets` calls).
    let spread = store::create_api(
        &db,
        tenant.id,
        NewApi {
            name: "Bench upstream on three targets".into(),
            slug: Slug::parse("spread")?,
            ..new_api_again(&upstream)?
        },
    )
    .await?;
    for _ in 0..2 {
        let url = UpstreamUrl::parse(&upstream)?;
        store::create_target(
            &db,
            tenant.id,
            spread.id,
            domain::resilience::NewTarget { url, weight: 1 },
        )
        .await?;
    }
    seed_tokens(&db, tenant.id, &upstream).await?;
    let (_, strict_key) = store::create_api_key(&db, tenant.id, strict.id, "strict", None).await?;
    let (_, fast_key) = store::create_api_key(&db, tenant.id, fast.id, "fast", None).await?;
    let ceiling_key = seed_ceiling(&db, &upstream, limits).await?;
    let txn = db.begin().await?;
    store::insert_generated_keys(&txn, tenant.id, strict.id, extra).await?;
    txn.commit().await?;
    println!(
        "{}",
        serde_json::json!({"strict_key": strict_key.expose(), "fast_key": fast_key.expose(), "path": "/bench/up/items", "routes_path": "/bench/routed/items", "limited_path": "/bench/routed/limited", "spread_path": "/bench/spread/items", "token_path": "/bench/token/items", "ceiling_key": ceiling_key.expose(), "ceiling_path": "/ceiling/up/items"})
    );
    Ok(())
}

/// API `token` taking keys or tokens, the tenant's signing key sealed by `GATEWAY_TOKEN_KEY`, and
/// tokens that live a day (what `token` calls with a token minted from the strict key).
async fn seed_tokens(
    db: &domain::sea_orm::DatabaseConnection,
    tenant_id: i64,
    upstream: &str,
) -> anyhow::Result<()> {
    store::create_api(
        db,
        tenant_id,
        NewApi {
            name: "Bench upstream taking tokens".into(),
            slug: Slug::parse("token")?,
            auth: domain::jwt::ApiAuth::KeyOrToken,
            ..new_api_again(upstream)?
        },
    )
    .await?;
    let token_key = std::env::var("GATEWAY_TOKEN_KEY")
        .map_err(|_| anyhow::anyhow!("set GATEWAY_TOKEN_KEY (it seals the signing key)"))?;
    let secret = domain::jwt::TokenSecret::new(&token_key)?;
    store::ensure_signing_key(db, &secret, tenant_id).await?;
    store::set_token_lifetime(db, tenant_id, i32::try_from(domain::jwt::MAX_LIFETIME_S)?).await?;
    Ok(())
}

/// Tenant `ceiling`: the API `up` and a strict plan under a ceiling never reached (what `ceiling`
/// calls, against `strict` without one); its key.
async fn seed_ceiling(
    db: &domain::sea_orm::DatabaseConnection,
    upstream: &str,
    limits: PlanLimits,
) -> anyhow::Result<domain::apikey::ApiKey> {
    let owner = store::create_user(db, "ceiling", "ceiling@example.com", "x", false).await?;
    let ceiled = store::create_tenant(db, "Ceiling", &Slug::parse("ceiling")?, owner.id).await?;
    let plan = store::create_plan(db, ceiled.id, "strict", limits, Enforcement::Strict).await?;
    store::create_api(db, ceiled.id, new_api_again(upstream)?).await?;
    let ceiling = domain::plan::TenantLimits {
        requests_per_minute: Some(NEVER_U),
        burst: Some(NEVER_U),
        requests_per_day: Some(NEVER_U * 100),
        requests_per_month: None,
    };
    store::change_tenant(
        db,
        ceiled.id,
        store::TenantChange {
            limits: Some(Some(ceiling)),
            ..store::TenantChange::default()
        },
    )
    .await?;
    let (_, key) = store::create_api_key(db, ceiled.id, plan.id, "ceiling", None).await?;
    Ok(key)
}

/// The bench API `up` on `upstream`.
fn new_api_again(upstream: &str) -> anyhow::Result<NewApi> {
    Ok(NewApi {
        name: "Bench upstream".into(),
        slug: Slug::parse("up")?,
        upstream_url: UpstreamUrl::parse(upstream)?,
        key_header: KeyHeader::default(),
        timeout: UpstreamTimeout::default(),
        pass_encoded_slashes: false,
        log_query: false,
        auth: domain::jwt::ApiAuth::Key,
        identity_token: false,
        upstream_protocol: domain::header::UpstreamProtocol::default(),
        websocket_idle: domain::header::WebsocketIdle::default(),
    })
}
