//! The routing snapshot: everything the data plane needs to authenticate and limit a request,
//! loaded from the database in one pass and swapped atomically, so the hot path never queries it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QuerySelect, StreamTrait};

use crate::apikey::KeyHash;
use crate::entities::{api, api_key, client, plan, tenant};
use crate::plan::{Enforcement, PlanLimits};
use crate::upstream::UpstreamUrl;

#[derive(Debug)]
pub struct TenantEntry {
    pub id: i64,
    pub slug: Box<str>,
    pub is_active: bool,
    apis: HashMap<Box<str>, Arc<ApiEntry>>,
    clients: HashMap<Box<str>, ClientEntry>,
}

#[derive(Debug)]
pub struct ApiEntry {
    pub id: i64,
    pub tenant_id: i64,
    pub slug: Box<str>,
    pub upstream: UpstreamUrl,
    /// `scheme://authority/path` of the upstream without a trailing slash.
    pub upstream_base: Box<str>,
    /// The `Host` header sent upstream.
    pub upstream_authority: Box<str>,
    /// `host:port` to connect to (the port filled in from the scheme when the URL has none).
    pub upstream_addr: Box<str>,
    /// The upstream's path prefix without a trailing `/` (empty for the root).
    pub upstream_path: Box<str>,
    /// Whether the upstream is spoken to over TLS (`https`).
    pub upstream_tls: bool,
    /// Lowercase name of the header the key is read from.
    pub key_header: Box<str>,
    /// The same name as the tenant wrote it, for messages.
    pub key_header_name: Box<str>,
    pub timeout: Duration,
    pub is_active: bool,
}

#[derive(Debug, Clone, Copy)]
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

    pub fn key(&self, hash: &KeyHash) -> Option<&KeyEntry> {
        self.keys.get(hash)
    }

    pub fn plan(&self, id: i64) -> Option<&PlanEntry> {
        self.plans.get(&id)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Loads the whole configuration. The version is read first, so a write that lands during the
    /// load is picked up by the next reload rather than missed.
    pub async fn load<C>(db: &C) -> Result<Self, DbErr>
    where
        C: ConnectionTrait + StreamTrait + Send,
    {
        let version = crate::store::config_version(db).await.unwrap_or(0);
        let (mut tenants, slug_of) = load_tenants(db).await?;
        load_apis(db, &mut tenants, &slug_of).await?;
        load_clients(db, &mut tenants, &slug_of).await?;
        let plans = load_plans(db).await?;
        let keys = load_keys(db).await?;
        Ok(Self {
            version,
            tenants,
            keys,
            plans,
        })
    }
}

type Tenants = HashMap<Box<str>, TenantEntry>;
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
    let rows: Vec<(i64, String, bool)> = tenant::Entity::find()
        .select_only()
        .columns([
            tenant::Column::Id,
            tenant::Column::Slug,
            tenant::Column::IsActive,
        ])
        .into_tuple()
        .all(db)
        .await?;
    for (id, slug, is_active) in rows {
        let slug: Box<str> = slug.into();
        slug_of.insert(id, slug.clone());
        let entry = TenantEntry {
            id,
            slug: slug.clone(),
            is_active,
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
    for a in api::Entity::find().all(db).await? {
        let Some(tenant) = slug_of.get(&a.tenant_id).and_then(|s| tenants.get_mut(s)) else {
            continue;
        };
        let Ok(upstream) = UpstreamUrl::parse(&a.upstream_url) else {
            tracing::warn!(
                api_id = a.id,
                "skipping an API with an unparseable upstream URL"
            );
            continue;
        };
        let entry = ApiEntry {
            id: a.id,
            tenant_id: a.tenant_id,
            slug: a.slug.clone().into(),
            upstream_base: upstream.base().into(),
            upstream_authority: upstream.authority().into(),
            upstream_addr: upstream.connect_addr().into(),
            upstream_path: upstream.url().path().trim_end_matches('/').into(),
            upstream_tls: upstream.url().scheme() == "https",
            upstream,
            key_header: a.key_header.to_ascii_lowercase().into(),
            key_header_name: a.key_header.clone().into(),
            timeout: Duration::from_millis(u64::from(a.timeout_ms.unsigned_abs())),
            is_active: a.is_active,
        };
        tenant.apis.insert(a.slug.into(), Arc::new(entry));
    }
    Ok(())
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

async fn load_keys<C>(db: &C) -> Result<HashMap<KeyHash, KeyEntry>, DbErr>
where
    C: ConnectionTrait + StreamTrait + Send,
{
    // Streamed: at a million keys, materialising every row first would double the peak memory.
    let count = api_key::Entity::find().count(db).await?;
    let mut keys = HashMap::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut rows = api_key::Entity::find()
        .select_only()
        .columns(KEY_COLUMNS)
        .into_tuple::<KeyRow>()
        .stream(db)
        .await?;
    while let Some(row) = rows.next().await {
        if let Some((hash, entry)) = key_entry(row?) {
            keys.insert(hash, entry);
        }
    }
    Ok(keys)
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
