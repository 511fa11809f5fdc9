//! The routing snapshot: everything the data plane needs to authenticate and limit a request,
//! loaded from the database in one pass and swapped atomically, so the hot path never queries it.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryOrder, QuerySelect};

use crate::apikey::KeyHash;
use crate::entities::{api, api_key, api_route, api_target, client, plan, tenant};
use crate::jwt::{ApiAuth, VerifyKeys};
use crate::plan::{Enforcement, PlanLimits};
use crate::resilience::ApiResilience;
use crate::route::{MatchKind, Methods, Route, RouteLimit, RoutePath, RouteTable};
use crate::upstream::UpstreamUrl;

#[derive(Debug)]
pub struct TenantEntry {
    pub id: i64,
    pub slug: Box<str>,
    pub is_active: bool,
    /// May use loopback and private upstreams (a platform admin's decision).
    pub trusted_upstreams: bool,
    /// How long its minted tokens live, in seconds.
    pub token_lifetime_s: i64,
    /// Its current signing key, sealed (`None`: it has none yet).
    pub signing_key: Option<SealedKey>,
    /// A platform admin's ceiling over all of its traffic, as the limiter decides it.
    pub ceiling: Option<crate::plan::PlanLimits>,
    /// Where its day and month windows begin and end.
    pub calendar: crate::calendar::Calendar,
    apis: HashMap<Box<str>, Arc<ApiEntry>>,
    clients: HashMap<Box<str>, ClientEntry>,
}

/// A tenant's current signing key as stored: its id and its sealed private half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub kid: Box<str>,
    pub sealed: Box<str>,
}

#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // independent facts of an API, not encoded states
pub struct ApiEntry {
    pub id: i64,
    pub tenant_id: i64,
    pub slug: Box<str>,
    /// Where its requests go, at least one; the first is the API's `upstream_url`.
    pub targets: Box<[Arc<TargetEntry>]>,
    /// Whether any target is spoken to over TLS (`https`).
    pub upstream_tls: bool,
    /// Lowercase name of the header the key is read from.
    pub key_header: Box<str>,
    /// The same name as the tenant wrote it, for messages.
    pub key_header_name: Box<str>,
    pub timeout: Duration,
    /// `%2F` in a path is passed through (else refused).
    pub pass_encoded_slashes: bool,
    /// The request log keeps its requests' query strings.
    pub log_query: bool,
    /// What callers present: a key, a token, or either.
    pub auth: ApiAuth,
    /// The gateway signs an `X-Gateway-JWT` naming the caller for the upstream.
    pub identity_token: bool,
    /// The owning tenant may use loopback and private upstreams.
    pub trusted_upstreams: bool,
    pub is_active: bool,
    /// Its routes, compiled; empty: every path and method is forwarded.
    pub routes: RouteTable,
    /// Retries, active health check and circuit breaker.
    pub resilience: ApiResilience,
    /// HTTP/1.1 or HTTP/2 to its upstreams.
    pub upstream_protocol: crate::header::UpstreamProtocol,
    /// A relayed WebSocket idle (no byte either way) this long is closed.
    pub websocket_idle: Duration,
}

/// One upstream of an API, as requests are sent to it.
#[derive(Debug)]
pub struct TargetEntry {
    pub id: i64,
    pub url: UpstreamUrl,
    pub weight: u32,
    /// The `Host` header sent upstream.
    pub authority: Box<str>,
    /// `host:port` to connect to (the port filled in from the scheme when the URL has none).
    pub addr: Box<str>,
    /// The upstream's path prefix without a trailing `/` (empty for the root).
    pub path: Box<str>,
    /// Spoken to over TLS (`https`).
    pub tls: bool,
    /// Which idle upstream connections requests to it may reuse: its address, marked by its
    /// tenant's trust (a connection checked for a trusted tenant must not serve another).
    pub pool_key: Box<str>,
    /// Moves on a manual reset of its circuit.
    pub reset_generation: i64,
}

impl TargetEntry {
    pub fn new(
        id: i64,
        url: UpstreamUrl,
        weight: u32,
        trusted: bool,
        reset_generation: i64,
    ) -> Self {
        let addr = url.connect_addr();
        Self {
            id,
            weight: weight.max(1),
            authority: url.authority().into(),
            path: url.url().path().trim_end_matches('/').into(),
            tls: url.url().scheme() == "https",
            pool_key: if trusted {
                format!("trusted {addr}").into()
            } else {
                addr.as_str().into()
            },
            addr: addr.into(),
            url,
            reset_generation,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    pub id: i64,
    pub tenant_id: i64,
    pub plan_id: i64,
    pub is_active: bool,
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct ClientEntry {
    pub id: i64,
    pub tenant_id: i64,
    pub plan_id: i64,
    pub is_active: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanEntry {
    pub id: i64,
    pub limits: PlanLimits,
    pub enforcement: Enforcement,
    pub is_active: bool,
}

/// An immutable view of the configuration at one config version.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: i64,
    tenants: HashMap<Box<str>, TenantEntry>,
    keys: HashMap<KeyHash, KeyEntry>,
    plans: HashMap<i64, PlanEntry>,
    /// Every tenant's keys that verify tokens, by key id.
    pub verify_keys: VerifyKeys,
    /// The keys of the tenants that have signing keys, by key id: what a token names.
    key_ids: HashMap<i64, KeyHash>,
    /// Each tenant's slug by its id.
    slugs: HashMap<i64, Box<str>>,
}

impl TenantEntry {
    pub fn api(&self, slug: &str) -> Option<&Arc<ApiEntry>> {
        self.apis.get(slug)
    }

    pub fn client(&self, client_id: &str) -> Option<&ClientEntry> {
        self.clients.get(client_id)
    }
}

impl Snapshot {
    pub fn tenant(&self, slug: &str) -> Option<&TenantEntry> {
        self.tenants.get(slug)
    }

    pub fn tenant_by_id(&self, id: i64) -> Option<&TenantEntry> {
        self.tenants.get(self.slugs.get(&id)?)
    }

    pub fn key(&self, hash: &KeyHash) -> Option<&KeyEntry> {
        self.keys.get(hash)
    }

    /// The key with id `id` and its hash, if its tenant has a signing key (only those keys can
    /// have minted tokens).
    pub fn key_by_id(&self, id: i64) -> Option<(&KeyHash, &KeyEntry)> {
        let hash = self.key_ids.get(&id)?;
        Some((hash, self.keys.get(hash)?))
    }

    pub fn plan(&self, id: i64) -> Option<&PlanEntry> {
        self.plans.get(&id)
    }

    /// Every API of every tenant.
    pub fn apis(&self) -> impl Iterator<Item = &Arc<ApiEntry>> {
        self.tenants.values().flat_map(|t| t.apis.values())
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Loads the whole configuration. The version is read first, so a write that lands during the
    /// load is picked up by the next reload rather than missed.
    pub async fn load(db: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let version = crate::store::config_version(db).await.unwrap_or(0);
        let (mut tenants, slug_of) = load_tenants(db).await?;
        load_apis(db, &mut tenants, &slug_of).await?;
        load_clients(db, &mut tenants, &slug_of).await?;
        let plans = load_plans(db).await?;
        let keys = load_keys(db).await?;
        let verify_keys = load_signing_keys(db, &mut tenants, &slug_of).await?;
        let signing: std::collections::HashSet<i64> = tenants
            .values()
            .filter(|t| t.signing_key.is_some())
            .map(|t| t.id)
            .collect();
        let key_ids = if signing.is_empty() {
            HashMap::new()
        } else {
            keys.iter()
                .filter(|(_, e)| signing.contains(&e.tenant_id))
                .map(|(h, e)| (e.id, *h))
                .collect()
        };
        Ok(Self {
            version,
            tenants,
            keys,
            plans,
            verify_keys,
            key_ids,
            slugs: slug_of,
        })
    }
}

/// Every tenant's keys that still verify (and each tenant's current one, sealed, into its entry).
async fn load_signing_keys(
    db: &impl ConnectionTrait,
    tenants: &mut Tenants,
    slug_of: &SlugOf,
) -> Result<VerifyKeys, DbErr> {
    let mut keys = VerifyKeys::default();
    let rows = crate::store::verifying_keys(db, chrono::Utc::now())
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    for k in rows {
        keys.insert(k.tenant_id, &k.kid, &k.public_x);
        if k.retired_at.is_none()
            && let Some(t) = slug_of.get(&k.tenant_id).and_then(|s| tenants.get_mut(s))
        {
            t.signing_key = Some(SealedKey {
                kid: k.kid.into(),
                sealed: k.sealed_private.into(),
            });
        }
    }
    Ok(keys)
}

type Tenants = HashMap<Box<str>, TenantEntry>;
type N = Option<i64>;
/// A tenant as the snapshot reads it: id, slug, active, trusted, token lifetime, its ceiling.
/// ... and its time zone, the zone before the last change and when that was made.
type TenantRow = (
    i64,
    String,
    bool,
    bool,
    i32,
    N,
    N,
    N,
    N,
    String,
    Option<String>,
    At,
);
type At = Option<chrono::DateTime<chrono::Utc>>;
type SlugOf = HashMap<i64, Box<str>>;
type KeyRow = (
    i64,
    i64,
    i64,
    String,
    bool,
    Option<chrono::DateTime<chrono::Utc>>,
);

async fn load_tenants(db: &impl ConnectionTrait) -> Result<(Tenants, SlugOf), DbErr> {
    let mut tenants = Tenants::new();
    let mut slug_of = SlugOf::new();
    let rows: Vec<TenantRow> = tenant::Entity::find()
        .select_only()
        .columns([
            tenant::Column::Id,
            tenant::Column::Slug,
            tenant::Column::IsActive,
            tenant::Column::TrustedUpstreams,
            tenant::Column::TokenLifetimeS,
            tenant::Column::LimitRpm,
            tenant::Column::LimitBurst,
            tenant::Column::LimitDay,
            tenant::Column::LimitMonth,
            tenant::Column::TimeZone,
            tenant::Column::TimeZoneBefore,
            tenant::Column::TimeZoneChangedAt,
        ])
        .into_tuple()
        .all(db)
        .await?;
    for row in rows {
        let (id, slug, is_active, trusted_upstreams, token_lifetime_s, rpm, burst, day, month) = (
            row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
        );
        let calendar = crate::calendar::Calendar::of_columns(&row.9, row.10.as_deref(), row.11);
        let slug: Box<str> = slug.into();
        slug_of.insert(id, slug.clone());
        let entry = TenantEntry {
            id,
            slug: slug.clone(),
            is_active,
            trusted_upstreams,
            token_lifetime_s: i64::from(token_lifetime_s),
            signing_key: None,
            ceiling: crate::plan::TenantLimits::from_columns(rpm, burst, day, month)
                .map(|t| t.as_plan()),
            calendar,
            apis: HashMap::new(),
            clients: HashMap::new(),
        };
        tenants.insert(slug, entry);
    }
    Ok((tenants, slug_of))
}

async fn load_apis(
    db: &impl ConnectionTrait,
    tenants: &mut Tenants,
    slug_of: &SlugOf,
) -> Result<(), DbErr> {
    let mut routes = load_routes(db).await?;
    let mut targets: HashMap<i64, Vec<api_target::Model>> = HashMap::new();
    for t in api_target::Entity::find()
        .order_by_asc(api_target::Column::Id)
        .all(db)
        .await?
    {
        targets.entry(t.api_id).or_default().push(t);
    }
    for a in api::Entity::find().all(db).await? {
        let Some(tenant) = slug_of.get(&a.tenant_id).and_then(|s| tenants.get_mut(s)) else {
            continue;
        };
        let trusted = tenant.trusted_upstreams;
        let mut list: Vec<Arc<TargetEntry>> = targets
            .remove(&a.id)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| {
                let Ok(url) = UpstreamUrl::parse(&t.url) else {
                    tracing::warn!(
                        target_id = t.id,
                        "skipping a target with an unparseable URL"
                    );
                    return None;
                };
                Some(Arc::new(TargetEntry::new(
                    t.id,
                    url,
                    t.weight.unsigned_abs(),
                    trusted,
                    t.reset_generation,
                )))
            })
            .collect();
        if list.is_empty() {
            // An API written before its targets were (or by an older control plane).
            let Ok(upstream) = UpstreamUrl::parse(&a.upstream_url) else {
                tracing::warn!(
                    api_id = a.id,
                    "skipping an API with an unparseable upstream URL"
                );
                continue;
            };
            list.push(Arc::new(TargetEntry::new(0, upstream, 1, trusted, 0)));
        }
        let entry = ApiEntry {
            id: a.id,
            tenant_id: a.tenant_id,
            slug: a.slug.clone().into(),
            upstream_tls: list.iter().any(|t| t.tls),
            targets: list.into(),
            key_header: a.key_header.to_ascii_lowercase().into(),
            key_header_name: a.key_header.clone().into(),
            timeout: Duration::from_millis(u64::from(a.timeout_ms.unsigned_abs())),
            pass_encoded_slashes: a.pass_encoded_slashes,
            log_query: a.log_query,
            auth: ApiAuth::parse(&a.auth).unwrap_or_default(),
            identity_token: a.identity_token,
            trusted_upstreams: trusted,
            is_active: a.is_active,
            routes: RouteTable::compile(routes.remove(&a.id).unwrap_or_default()),
            resilience: ApiResilience::of(&a),
            upstream_protocol: crate::header::UpstreamProtocol::parse(&a.upstream_protocol)
                .unwrap_or_default(),
            websocket_idle: Duration::from_millis(u64::from(
                a.websocket_idle_timeout_ms.unsigned_abs(),
            )),
        };
        tenant.apis.insert(a.slug.into(), Arc::new(entry));
    }
    Ok(())
}

/// Every API's routes, by API id (a row that no longer validates is skipped with a warning).
async fn load_routes(db: &impl ConnectionTrait) -> Result<HashMap<i64, Vec<Route>>, DbErr> {
    let mut by_api: HashMap<i64, Vec<Route>> = HashMap::new();
    for r in api_route::Entity::find().all(db).await? {
        match route_of(&r) {
            Ok(route) => by_api.entry(r.api_id).or_default().push(route),
            Err(e) => tracing::warn!(route_id = r.id, error = %e, "skipping an invalid route"),
        }
    }
    Ok(by_api)
}

/// A stored route as the data plane uses it.
pub fn route_of(r: &api_route::Model) -> Result<Route, String> {
    let rate_limit = match (r.rl_requests_per_minute, r.rl_burst) {
        (Some(rpm), burst) => {
            let l = PlanLimits::new(rpm, burst, r.rl_requests_per_day, None)
                .map_err(|e| e.to_string())?;
            Some(RouteLimit {
                requests_per_minute: l.requests_per_minute,
                burst: l.burst,
                requests_per_day: l.requests_per_day,
            })
        }
        (None, _) => None,
    };
    Ok(Route {
        id: r.id,
        path: RoutePath::parse(&r.path)?,
        kind: MatchKind::parse(&r.match_kind)?,
        methods: Methods::from_stored(&r.methods),
        priority: r.priority,
        strip_prefix: r.strip_prefix,
        timeout: r
            .timeout_ms
            .map(|t| Duration::from_millis(u64::from(t.unsigned_abs()))),
        retries: r.retries.and_then(|n| u32::try_from(n).ok()),
        rate_limit,
        cost: u32::try_from(r.cost.max(1)).unwrap_or(1),
    })
}

async fn load_clients(
    db: &impl ConnectionTrait,
    tenants: &mut Tenants,
    slug_of: &SlugOf,
) -> Result<(), DbErr> {
    let rows: Vec<(i64, i64, String, i64, bool)> = client::Entity::find()
        .select_only()
        .columns([
            client::Column::Id,
            client::Column::TenantId,
            client::Column::ClientId,
            client::Column::PlanId,
            client::Column::IsActive,
        ])
        .into_tuple()
        .all(db)
        .await?;
    for (id, tenant_id, client_id, plan_id, is_active) in rows {
        if let Some(t) = slug_of.get(&tenant_id).and_then(|s| tenants.get_mut(s)) {
            t.clients.insert(
                client_id.into(),
                ClientEntry {
                    id,
                    tenant_id,
                    plan_id,
                    is_active,
                },
            );
        }
    }
    Ok(())
}

async fn load_plans(db: &impl ConnectionTrait) -> Result<HashMap<i64, PlanEntry>, DbErr> {
    let mut plans = HashMap::new();
    for p in plan::Entity::find().all(db).await? {
        match PlanLimits::new(
            p.requests_per_minute,
            p.burst,
            p.requests_per_day,
            p.requests_per_month,
        ) {
            Ok(limits) => {
                let entry = PlanEntry {
                    id: p.id,
                    limits,
                    enforcement: p.enforcement.parse().unwrap_or_default(),
                    is_active: p.is_active,
                };
                plans.insert(p.id, entry);
            }
            Err(e) => {
                tracing::warn!(plan_id = p.id, error = %e, "skipping a plan with invalid limits");
            }
        }
    }
    Ok(plans)
}

/// Keys per page of the bulk key load.
const KEY_PAGE: i64 = 8192;

/// A page of keys as the database packs it: the last id, then ids, tenant ids, plan ids and key
/// hashes, each column of the page comma-joined into one string in the same row order (all
/// aggregates of one query see its rows in one order). One row per page instead of per key: the
/// driver's per-row cost (sqlx copies every value of a row on its worker thread and frees it on
/// the reader's) was most of a million-key load.
const KEY_PAGE_SQLITE: &str = "SELECT max(id), group_concat(id), group_concat(tenant_id), \
     group_concat(plan_id), group_concat(key_hash) FROM (SELECT id, tenant_id, plan_id, key_hash \
     FROM api_keys WHERE id > ? ORDER BY id LIMIT ?)";
const KEY_PAGE_POSTGRES: &str = "SELECT max(id), string_agg(id::text, ','), \
     string_agg(tenant_id::text, ','), string_agg(plan_id::text, ','), string_agg(key_hash, ',') \
     FROM (SELECT id, tenant_id, plan_id, key_hash FROM api_keys WHERE id > $1 ORDER BY id \
     LIMIT $2) AS page";

async fn load_keys(db: &impl ConnectionTrait) -> Result<HashMap<KeyHash, KeyEntry>, DbErr> {
    load_keys_in_pages(db, KEY_PAGE).await
}

async fn load_keys_in_pages(
    db: &impl ConnectionTrait,
    page_size: i64,
) -> Result<HashMap<KeyHash, KeyEntry>, DbErr> {
    use sea_orm::{ColumnTrait, Condition, DbBackend, QueryFilter, Statement};
    // Most keys are active and never expire: the pages carry four columns per key, and the few
    // exceptions are read first, in a query of their own.
    let exceptions: HashMap<i64, (bool, Option<i64>)> = api_key::Entity::find()
        .select_only()
        .columns([
            api_key::Column::Id,
            api_key::Column::IsActive,
            api_key::Column::ExpiresAt,
        ])
        .filter(
            Condition::any()
                .add(api_key::Column::ExpiresAt.is_not_null())
                .add(api_key::Column::IsActive.eq(false)),
        )
        .into_tuple::<(i64, bool, Option<chrono::DateTime<chrono::Utc>>)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(id, is_active, expires_at)| {
            (id, (is_active, expires_at.map(|t| t.timestamp_millis())))
        })
        .collect();
    let count = api_key::Entity::find().count(db).await?;
    // Pages are read here and added to the map on a blocking thread meanwhile, so the database
    // reads the next page while the last one is parsed and hashed.
    let (pages, mut received) = tokio::sync::mpsc::channel::<[String; 4]>(2);
    let builder = tokio::task::spawn_blocking(move || {
        let mut keys = HashMap::with_capacity(usize::try_from(count).unwrap_or(0));
        while let Some(page) = received.blocking_recv() {
            insert_page(&page, &exceptions, &mut keys)?;
        }
        Ok::<_, DbErr>(keys)
    });
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => KEY_PAGE_POSTGRES,
        _ => KEY_PAGE_SQLITE,
    };
    let mut after = 0_i64;
    loop {
        let stmt = Statement::from_sql_and_values(backend, sql, [after.into(), page_size.into()]);
        let Some(row) = db.query_one_raw(stmt).await? else {
            break;
        };
        let Some(last) = row.try_get_by_index::<Option<i64>>(0)? else {
            break;
        };
        let column = |i| {
            row.try_get_by_index::<Option<String>>(i)
                .map(Option::unwrap_or_default)
        };
        let page = [column(1)?, column(2)?, column(3)?, column(4)?];
        if pages.send(page).await.is_err() {
            break; // The builder stopped on a bad page: its error is returned below.
        }
        after = last;
    }
    drop(pages);
    builder
        .await
        .map_err(|e| DbErr::Custom(format!("building the key map failed: {e}")))?
}

/// Adds one page of keys (`ids, tenant ids, plan ids, hashes`, each comma-joined) to `keys`.
fn insert_page(
    [ids, tenants, plans, hashes]: &[String; 4],
    exceptions: &HashMap<i64, (bool, Option<i64>)>,
    keys: &mut HashMap<KeyHash, KeyEntry>,
) -> Result<(), DbErr> {
    let uneven = || DbErr::Custom("a page of keys has columns of unequal length".into());
    let number = |s: Option<&str>| {
        let s = s.ok_or_else(uneven)?;
        s.parse::<i64>()
            .map_err(|e| DbErr::Custom(format!("a page of keys holds a bad number {s:?}: {e}")))
    };
    let (mut ids, mut tenants, mut plans) = (ids.split(','), tenants.split(','), plans.split(','));
    for hash in hashes.split(',') {
        let id = number(ids.next())?;
        let (tenant_id, plan_id) = (number(tenants.next())?, number(plans.next())?);
        // A key that became inactive or expiring after the exceptions were read is corrected by
        // that change's own event or reload: the version was read before either query.
        let (is_active, expires_at_ms) = exceptions.get(&id).copied().unwrap_or((true, None));
        if let Some(hash) = KeyHash::from_hex(hash) {
            let entry = KeyEntry {
                id,
                tenant_id,
                plan_id,
                is_active,
                expires_at_ms,
            };
            keys.insert(hash, entry);
        }
    }
    match ids.next() {
        Some(_) => Err(uneven()),
        None => Ok(()),
    }
}

fn key_entry(
    (id, tenant_id, plan_id, hash, is_active, expires_at): KeyRow,
) -> Option<(KeyHash, KeyEntry)> {
    let hash = KeyHash::from_hex(&hash)?;
    let expires_at_ms = expires_at.map(|t| t.timestamp_millis());
    Some((
        hash,
        KeyEntry {
            id,
            tenant_id,
            plan_id,
            is_active,
            expires_at_ms,
        },
    ))
}

/// The current entries of some keys, for applying a key change without a full reload.
pub async fn load_key_entries(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<Vec<(KeyHash, KeyEntry)>, DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let rows: Vec<KeyRow> = api_key::Entity::find()
        .select_only()
        .columns(KEY_COLUMNS)
        .filter(api_key::Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(key_entry).collect())
}

const KEY_COLUMNS: [api_key::Column; 6] = [
    api_key::Column::Id,
    api_key::Column::TenantId,
    api_key::Column::PlanId,
    api_key::Column::KeyHash,
    api_key::Column::IsActive,
    api_key::Column::ExpiresAt,
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use crate::store;
    use crate::testing::TestDb;

    /// Keys loaded in bulk (active, never expiring) and as exceptions (revoked, expiring) come out
    /// of a full load exactly as a single key's reload reads them.
    async fn every_kind_of_key_loads_as_stored(t: TestDb) {
        let db = &t.db;
        let owner = store::create_user(db, "snap", "s@example.com", "x", false)
            .await
            .unwrap();
        let slug = crate::slug::Slug::parse("snap").unwrap();
        let tenant = store::create_tenant(db, "Snap", &slug, owner.id)
            .await
            .unwrap();
        let limits = PlanLimits::new(60, None, None, None).unwrap();
        let plan = store::create_plan(db, tenant.id, "p", limits, Enforcement::Strict)
            .await
            .unwrap();
        let expiry = Utc.timestamp_millis_opt(4_102_444_800_123).unwrap();
        let mut keys = Vec::new();
        for (name, expires, revoke) in [
            ("plain", None, false),
            ("expiring", Some(expiry), false),
            ("revoked", None, true),
            ("revoked-expiring", Some(expiry + Duration::days(1)), true),
            ("plain-too", None, false),
        ] {
            let (k, raw) = store::create_api_key(db, tenant.id, plan.id, name, expires)
                .await
                .unwrap();
            if revoke {
                store::revoke_key(db, tenant.id, k.id).await.unwrap();
            }
            keys.push((k.id, raw.hash(), !revoke, expires));
        }
        let snap = Snapshot::load(db).await.unwrap();
        assert_eq!(snap.key_count(), keys.len());
        let ids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let single: HashMap<KeyHash, KeyEntry> = load_key_entries(db, &ids)
            .await
            .unwrap()
            .into_iter()
            .collect();
        for (id, hash, active, expires) in keys {
            let entry = *snap.key(&hash).unwrap();
            assert_eq!(
                (entry.id, entry.tenant_id, entry.plan_id, entry.is_active),
                (id, tenant.id, plan.id, active)
            );
            assert_eq!(entry.expires_at_ms, expires.map(|t| t.timestamp_millis()));
            assert_eq!(single[&hash], entry, "key {id}");
        }
        // Pages of two (and one): every key once, each as the whole load has it.
        for page_size in [1, 2] {
            let paged = load_keys_in_pages(db, page_size).await.unwrap();
            assert_eq!(paged.len(), snap.key_count(), "pages of {page_size}");
            for (hash, entry) in &paged {
                assert_eq!(snap.key(hash), Some(entry), "pages of {page_size}");
            }
        }
    }

    #[tokio::test]
    async fn every_kind_of_key_loads_as_stored_on_every_backend() {
        for t in TestDb::all().await {
            every_kind_of_key_loads_as_stored(t).await;
        }
    }
}
