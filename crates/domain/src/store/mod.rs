//! Queries both planes need. Writes of configuration bump the config version; callers that can
//! (the control plane) also publish the change event.

pub mod analytics;
mod listeners;
pub mod request_log;
mod scoped;
mod sessions;
mod signing_keys;
mod targets;
mod tokens;
mod usage;
mod webhooks;
mod writer;

pub use listeners::*;
pub use scoped::*;
pub use sessions::*;
pub use signing_keys::*;
pub use targets::*;
pub use tokens::*;
pub use usage::*;
pub use webhooks::*;
pub use writer::ConfigWriter;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, SqlErr,
};

use crate::apikey::ApiKey;
use crate::entities::{api, api_key, client, config_version, plan, tenant, usage_rollup, user};
use crate::header::{KeyHeader, UpstreamTimeout};
use crate::plan::{Enforcement, PlanLimits};
use crate::slug::Slug;
use crate::upstream::UpstreamUrl;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (taken username, slug, client id...).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The row is referenced elsewhere, or references a row that does not exist.
    #[error("still in use or refers to something missing: {0}")]
    InUse(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Db(DbErr),
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        match e.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(m)) => Self::Conflict(m),
            Some(SqlErr::ForeignKeyConstraintViolation(m)) => Self::InUse(m),
            // SQLite reports an ON DELETE RESTRICT refusal as SQLITE_CONSTRAINT_TRIGGER (1811),
            // which sea-orm does not classify.
            _ if e.to_string().contains("FOREIGN KEY constraint failed") => {
                Self::InUse(e.to_string())
            }
            _ => Self::Db(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub async fn create_user(
    db: &impl ConnectionTrait,
    username: &str,
    email: &str,
    password_hash: &str,
    is_admin: bool,
) -> StoreResult<user::Model> {
    Ok(user::ActiveModel {
        username: Set(username.to_owned()),
        email: Set(email.to_owned()),
        password_hash: Set(password_hash.to_owned()),
        is_admin: Set(is_admin),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?)
}

pub async fn find_user_by_username(
    db: &impl ConnectionTrait,
    username: &str,
) -> StoreResult<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(db)
        .await?)
}

pub async fn create_tenant(
    db: &impl ConnectionTrait,
    name: &str,
    slug: &Slug,
    owner_id: i64,
) -> StoreResult<tenant::Model> {
    let t = tenant::ActiveModel {
        name: Set(name.to_owned()),
        slug: Set(slug.as_str().to_owned()),
        owner_id: Set(owner_id),
        is_active: Set(true),
        trusted_upstreams: Set(false),
        token_lifetime_s: Set(i32::try_from(crate::jwt::DEFAULT_LIFETIME_S).unwrap_or(i32::MAX)),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    bump_config_version(db).await?;
    Ok(t)
}

pub async fn create_plan(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    name: &str,
    limits: PlanLimits,
    enforcement: Enforcement,
) -> StoreResult<plan::Model> {
    let p = plan::ActiveModel {
        tenant_id: Set(tenant_id),
        name: Set(name.to_owned()),
        requests_per_minute: Set(to_i64(limits.requests_per_minute)),
        burst: Set(Some(to_i64(limits.burst))),
        requests_per_day: Set(limits.requests_per_day.map(to_i64)),
        requests_per_month: Set(limits.requests_per_month.map(to_i64)),
        enforcement: Set(enforcement.as_str().to_owned()),
        is_active: Set(true),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    bump_config_version(db).await?;
    Ok(p)
}

/// The fields of a new API.
#[derive(Debug, Clone)]
pub struct NewApi {
    pub name: String,
    pub slug: Slug,
    pub upstream_url: UpstreamUrl,
    pub key_header: KeyHeader,
    pub timeout: UpstreamTimeout,
    /// Pass `%2F` in paths through to the upstream (refused with 400 otherwise).
    pub pass_encoded_slashes: bool,
    /// Keep the query string in request log paths.
    pub log_query: bool,
    /// What callers present: a key, a token minted from one, or either.
    pub auth: crate::jwt::ApiAuth,
    /// Sign an `X-Gateway-JWT` naming the caller for the upstream.
    pub identity_token: bool,
    /// HTTP/1.1 or HTTP/2 to the upstreams.
    pub upstream_protocol: crate::header::UpstreamProtocol,
    /// A relayed WebSocket idle this long is closed.
    pub websocket_idle: crate::header::WebsocketIdle,
}

pub async fn create_api(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    new: NewApi,
) -> StoreResult<api::Model> {
    let a = api::ActiveModel {
        tenant_id: Set(tenant_id),
        name: Set(new.name),
        slug: Set(new.slug.into_inner()),
        upstream_url: Set(new.upstream_url.to_string()),
        key_header: Set(new.key_header.as_str().to_owned()),
        timeout_ms: Set(new.timeout.millis()),
        pass_encoded_slashes: Set(new.pass_encoded_slashes),
        log_query: Set(new.log_query),
        auth: Set(new.auth.as_str().to_owned()),
        identity_token: Set(new.identity_token),
        upstream_protocol: Set(new.upstream_protocol.as_str().to_owned()),
        websocket_idle_timeout_ms: Set(new.websocket_idle.millis()),
        is_active: Set(true),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    targets::insert_first_target(db, &a).await?;
    bump_config_version(db).await?;
    Ok(a)
}

/// Creates a key for a plan of the same tenant. The raw key is returned once and never stored.
pub async fn create_api_key(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    plan_id: i64,
    name: &str,
    expires_at: Option<DateTime<Utc>>,
) -> StoreResult<(api_key::Model, ApiKey)> {
    ensure_plan_of_tenant(db, tenant_id, plan_id).await?;
    let raw = ApiKey::generate();
    let k = api_key::ActiveModel {
        tenant_id: Set(tenant_id),
        plan_id: Set(plan_id),
        name: Set(name.to_owned()),
        prefix: Set(raw.display_prefix()),
        key_hash: Set(raw.hash().to_hex()),
        is_active: Set(true),
        expires_at: Set(expires_at),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        replaced_by: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    bump_config_version(db).await?;
    Ok((k, raw))
}

/// Inserts `n` keys of random value for a plan, in batches (load tests and benchmarks: nobody ever
/// sees these keys). Does not bump the config version.
pub async fn insert_generated_keys(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    plan_id: i64,
    n: usize,
) -> StoreResult<()> {
    const BATCH: usize = 2_000;
    for start in (0..n).step_by(BATCH) {
        let rows = (start..(start + BATCH).min(n)).map(|_| {
            let raw = ApiKey::generate();
            api_key::ActiveModel {
                tenant_id: Set(tenant_id),
                plan_id: Set(plan_id),
                name: Set("generated".into()),
                prefix: Set(raw.display_prefix()),
                key_hash: Set(raw.hash().to_hex()),
                is_active: Set(true),
                expires_at: Set(None),
                created_at: Set(Utc::now()),
                last_used_at: Set(None),
                replaced_by: Set(None),
                ..Default::default()
            }
        });
        api_key::Entity::insert_many(rows).exec(db).await?;
    }
    Ok(())
}

pub async fn create_client(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    client_id: &str,
    name: &str,
    plan_id: i64,
) -> StoreResult<client::Model> {
    ensure_plan_of_tenant(db, tenant_id, plan_id).await?;
    let c = client::ActiveModel {
        tenant_id: Set(tenant_id),
        client_id: Set(client_id.to_owned()),
        name: Set(name.to_owned()),
        plan_id: Set(plan_id),
        is_active: Set(true),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    bump_config_version(db).await?;
    Ok(c)
}

/// A plan id coming from a form or request must belong to the acting tenant.
async fn ensure_plan_of_tenant(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    plan_id: i64,
) -> StoreResult<()> {
    plan::Entity::find_by_id(plan_id)
        .filter(plan::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

/// Current configuration version (bumped by every configuration write).
pub async fn config_version(db: &impl ConnectionTrait) -> StoreResult<i64> {
    config_version::Entity::find_by_id(1)
        .one(db)
        .await?
        .map(|row| row.version)
        .ok_or(StoreError::NotFound)
}

/// Bumps the configuration version; data planes without Redis poll it to notice changes.
pub async fn bump_config_version(db: &impl ConnectionTrait) -> StoreResult<()> {
    config_version::Entity::update_many()
        .col_expr(
            config_version::Column::Version,
            Expr::col(config_version::Column::Version).add(1),
        )
        .col_expr(config_version::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(config_version::Column::Id.eq(1))
        .exec(db)
        .await?;
    Ok(())
}

/// Usage counts of one tenant/day/api/key/client/route bucket, to be added to the rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsageDelta {
    pub tenant_id: i64,
    pub day: NaiveDate,
    pub api_id: i64,
    pub key_id: i64,
    /// Row id of the client, 0 when none.
    pub client_id: i64,
    /// The route taken, 0 when the API has no routes.
    pub route_id: i64,
    pub requests: i64,
    pub rejected: i64,
    pub upstream_errors: i64,
    /// Units the limits consumed (each admitted request's cost).
    pub units: i64,
}

/// Adds usage to the daily rollups (insert, or add to the existing row), a few hundred rows a
/// statement (run it in a transaction when it must be all or nothing).
pub async fn add_usage(db: &impl ConnectionTrait, deltas: &[UsageDelta]) -> StoreResult<()> {
    use usage_rollup::Column as C;
    if deltas.is_empty() {
        return Ok(());
    }
    let rows: Vec<usage_rollup::ActiveModel> = deltas
        .iter()
        .map(|d| usage_rollup::ActiveModel {
            tenant_id: Set(d.tenant_id),
            day: Set(d.day),
            api_id: Set(d.api_id),
            key_id: Set(d.key_id),
            client_id: Set(d.client_id),
            route_id: Set(d.route_id),
            requests: Set(d.requests),
            rejected: Set(d.rejected),
            upstream_errors: Set(d.upstream_errors),
            units: Set(d.units),
            ..Default::default()
        })
        .collect();
    adding_counts(
        db,
        usage_rollup::Entity,
        [
            C::TenantId,
            C::Day,
            C::ApiId,
            C::KeyId,
            C::ClientId,
            C::RouteId,
        ],
        [C::Requests, C::Rejected, C::UpstreamErrors, C::Units],
        &rows,
    )
    .await
}

/// Most rows per multi-row statement of the usage and traffic writers (a power of two).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

/// `items` in runs whose lengths are powers of two, each at most `max` (a power of two), longest
/// first: the row counts of multi-row statements. A multi-row statement's text depends on its
/// row count, and every pooled connection keeps each statement it prepared (sqlx's cache, 100 a
/// connection): writers whose batches had any length kept preparing new ones, each with hundreds
/// of placeholders, and the data plane's memory grew with them for hours (~1 MiB a minute in a
/// soak). In powers of two a table is written by at most `log2(max) + 1` statements, prepared
/// once per connection.
pub(crate) fn pow2_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, tail) = rest.split_at(1 << rest.len().min(max).ilog2());
        rest = tail;
        Some(chunk)
    })
}

/// A usage table's upsert of `rows`, in runs of [`pow2_chunks`]: a row of an existing bucket adds
/// its counts to the stored ones.
pub(crate) async fn adding_counts<E, C>(
    db: &impl ConnectionTrait,
    table: E,
    bucket: [C; 6],
    counts: [C; 4],
    rows: &[E::ActiveModel],
) -> StoreResult<()>
where
    E: EntityTrait,
    E::ActiveModel: Clone + Send,
    C: ColumnTrait + Copy,
{
    let conflict = OnConflict::columns(bucket)
        .values(counts.map(|col| (col, Expr::col((table, col)).add(Expr::col((EXCLUDED, col))))))
        .to_owned();
    for chunk in pow2_chunks(rows, ROWS_PER_STATEMENT) {
        E::insert_many(chunk.iter().cloned())
            .on_conflict(conflict.clone())
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Records that keys were used (batched by the data plane's usage flush).
pub async fn touch_keys(
    db: &impl ConnectionTrait,
    key_ids: &[i64],
    at: DateTime<Utc>,
) -> StoreResult<()> {
    if key_ids.is_empty() {
        return Ok(());
    }
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Expr::value(Some(at)))
        .filter(api_key::Column::Id.is_in(key_ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// Revokes a key of `tenant_id` (another tenant's key is `NotFound`).
pub async fn revoke_key(db: &impl ConnectionTrait, tenant_id: i64, key_id: i64) -> StoreResult<()> {
    let res = api_key::Entity::update_many()
        .col_expr(api_key::Column::IsActive, Expr::value(false))
        .filter(api_key::Column::Id.eq(key_id))
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    bump_config_version(db).await
}

/// The `excluded` pseudo-table of an upsert (the row that was refused).
#[derive(Clone, Copy)]
pub(crate) struct Excluded;
pub(crate) const EXCLUDED: Excluded = Excluded;
impl sea_orm::sea_query::Iden for Excluded {
    fn unquoted(&self) -> &'static str {
        "excluded"
    }
}

#[allow(clippy::cast_possible_wrap)] // limits are capped at 2^48 by PlanLimits
pub(crate) fn to_i64(v: u64) -> i64 {
    v as i64
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, NaiveDate, SubsecRound, Utc};
    use sea_orm::{EntityTrait, ModelTrait};

    use super::*;
    use crate::apikey::KeyHash;
    use crate::entities::{api, api_key, client, plan, tenant, usage_rollup, user};
    use crate::testing::TestDb;

    fn slug(s: &str) -> Slug {
        Slug::parse(s).unwrap()
    }

    /// Whatever a batch's length, its statements have a power-of-two row count of at most the
    /// maximum, cover it in order, and all batches together use log2(max) + 1 statement shapes.
    #[test]
    fn batches_are_written_in_powers_of_two() {
        let mut shapes = std::collections::BTreeSet::new();
        for len in 0..2_000usize {
            let items: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = pow2_chunks(&items, 256).collect();
            assert_eq!(chunks.concat(), items, "{len}");
            for c in &chunks {
                assert!(
                    c.len().is_power_of_two() && c.len() <= 256,
                    "{len}: {}",
                    c.len()
                );
                shapes.insert(c.len());
            }
            assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()));
        }
        assert_eq!(shapes.len(), 9);
    }

    async fn owner_and_tenant(db: &sea_orm::DatabaseConnection, name: &str) -> tenant::Model {
        let u = create_user(
            db,
            name,
            &format!("{name}@example.com"),
            "$argon2id$x",
            false,
        )
        .await
        .unwrap();
        create_tenant(db, &format!("{name} Inc"), &slug(name), u.id)
            .await
            .unwrap()
    }

    #[allow(clippy::too_many_lines)] // one walk through every entity
    async fn entities_round_trip(t: TestDb) {
        let db = &t.db;
        let v0 = config_version(db).await.unwrap();
        let alice = create_user(db, "alice", "alice@example.com", "$argon2id$hash", true)
            .await
            .unwrap();
        assert_eq!(
            user::Entity::find_by_id(alice.id)
                .one(db)
                .await
                .unwrap()
                .as_ref(),
            Some(&alice)
        );
        assert_eq!(
            find_user_by_username(db, "alice").await.unwrap(),
            Some(alice.clone())
        );
        assert!(find_user_by_username(db, "bob").await.unwrap().is_none());

        let ten = create_tenant(db, "Acme", &slug("acme"), alice.id)
            .await
            .unwrap();
        assert_eq!(
            tenant::Entity::find_by_id(ten.id).one(db).await.unwrap(),
            Some(ten.clone())
        );
        assert!(ten.is_active);

        let limits = PlanLimits::new(120, Some(20), Some(10_000), Some(200_000)).unwrap();
        let pro = create_plan(db, ten.id, "Pro", limits, Enforcement::Fast)
            .await
            .unwrap();
        let back = plan::Entity::find_by_id(pro.id)
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, pro);
        assert_eq!(
            (
                back.requests_per_minute,
                back.burst,
                back.requests_per_day,
                back.requests_per_month
            ),
            (120, Some(20), Some(10_000), Some(200_000))
        );
        assert_eq!(back.enforcement, "fast");

        let weather = create_api(
            db,
            ten.id,
            NewApi {
                name: "Weather".into(),
                slug: slug("weather"),
                upstream_url: UpstreamUrl::parse("https://weather.example.com/v2/").unwrap(),
                key_header: KeyHeader::default(),
                timeout: UpstreamTimeout::default(),
                pass_encoded_slashes: false,
                log_query: false,
                auth: crate::jwt::ApiAuth::Key,
                identity_token: false,
                upstream_protocol: crate::header::UpstreamProtocol::default(),
                websocket_idle: crate::header::WebsocketIdle::default(),
            },
        )
        .await
        .unwrap();
        let back = api::Entity::find_by_id(weather.id)
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, weather);
        assert_eq!(back.upstream_url, "https://weather.example.com/v2");
        assert_eq!(
            (back.key_header.as_str(), back.timeout_ms),
            ("X-API-Key", 30_000)
        );

        let expires = (Utc::now() + Duration::days(30)).trunc_subsecs(6);
        let (key, raw) = create_api_key(db, ten.id, pro.id, "ci", Some(expires))
            .await
            .unwrap();
        let back = api_key::Entity::find_by_id(key.id)
            .one(db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, key);
        assert_eq!(back.expires_at, Some(expires));
        assert_eq!(KeyHash::from_hex(&back.key_hash), Some(raw.hash()));
        assert!(
            !back.key_hash.contains(&raw.expose()[8..]),
            "the raw key is never stored"
        );
        assert_eq!(back.prefix, raw.display_prefix());

        let mobile = create_client(db, ten.id, "mobile-app", "Mobile app", pro.id)
            .await
            .unwrap();
        assert_eq!(
            client::Entity::find_by_id(mobile.id).one(db).await.unwrap(),
            Some(mobile)
        );

        assert_eq!(
            config_version(db).await.unwrap(),
            v0 + 5,
            "every config write bumps the version"
        );
    }

    async fn constraints_hold(t: TestDb) {
        let db = &t.db;
        let a = owner_and_tenant(db, "alpha").await;
        let b = owner_and_tenant(db, "beta").await;

        // Taken username and slug are conflicts, not generic failures.
        assert!(matches!(
            create_user(db, "alpha", "x@example.com", "h", false).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            create_tenant(db, "Other", &slug("alpha"), b.owner_id).await,
            Err(StoreError::Conflict(_))
        ));

        let limits = PlanLimits::new(60, None, None, None).unwrap();
        let pa = create_plan(db, a.id, "Free", limits, Enforcement::Strict)
            .await
            .unwrap();
        // Another tenant's plan cannot be used for a key or a client.
        assert!(matches!(
            create_api_key(db, b.id, pa.id, "k", None).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            create_client(db, b.id, "c", "c", pa.id).await,
            Err(StoreError::NotFound)
        ));

        // Client ids are unique per tenant, not globally.
        let pb = create_plan(db, b.id, "Free", limits, Enforcement::Strict)
            .await
            .unwrap();
        create_client(db, a.id, "shared-id", "A", pa.id)
            .await
            .unwrap();
        create_client(db, b.id, "shared-id", "B", pb.id)
            .await
            .unwrap();
        assert!(matches!(
            create_client(db, a.id, "shared-id", "again", pa.id).await,
            Err(StoreError::Conflict(_))
        ));

        // A plan in use by a key cannot be deleted; nothing is lost.
        let (key, _) = create_api_key(db, a.id, pa.id, "k", None).await.unwrap();
        let err = pa.clone().delete(db).await.map_err(StoreError::from);
        assert!(matches!(err, Err(StoreError::InUse(_))), "{err:?}");
        assert!(
            api_key::Entity::find_by_id(key.id)
                .one(db)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            plan::Entity::find_by_id(pa.id)
                .one(db)
                .await
                .unwrap()
                .is_some()
        );
    }

    async fn usage_accumulates(t: TestDb) {
        let db = &t.db;
        let ten = owner_and_tenant(db, "gamma").await;
        let day = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let d = UsageDelta {
            tenant_id: ten.id,
            day,
            api_id: 1,
            key_id: 2,
            client_id: 0,
            route_id: 0,
            requests: 10,
            rejected: 2,
            upstream_errors: 1,
            units: 8,
        };
        add_usage(
            db,
            &[
                d,
                UsageDelta {
                    client_id: 7,
                    requests: 3,
                    ..d
                },
            ],
        )
        .await
        .unwrap();
        add_usage(
            db,
            &[UsageDelta {
                requests: 5,
                rejected: 0,
                upstream_errors: 0,
                ..d
            }],
        )
        .await
        .unwrap();
        add_usage(db, &[]).await.unwrap();
        let mut rows = usage_rollup::Entity::find().all(db).await.unwrap();
        rows.sort_by_key(|r| r.client_id);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].requests, rows[0].rejected, rows[0].upstream_errors),
            (15, 2, 1)
        );
        assert_eq!((rows[1].client_id, rows[1].requests), (7, 3));
        // A route's requests are their own rows; what the limits start from counts units (a
        // route's cost per admitted request), per route for a route's window.
        add_usage(
            db,
            &[UsageDelta {
                route_id: 9,
                requests: 4,
                rejected: 1,
                units: 9,
                ..d
            }],
        )
        .await
        .unwrap();
        assert_eq!(usage_rollup::Entity::find().all(db).await.unwrap().len(), 3);
        let key = crate::limits::Subject::Key {
            tenant_id: ten.id,
            key_id: 2,
        };
        let on_route = crate::limits::Subject::Route {
            tenant_id: ten.id,
            route_id: 9,
            owner: crate::limits::RouteOwner::key(2),
        };
        assert_eq!(
            usage::admitted(db, key, day).await.unwrap(),
            (8 + 8 + 9, 25)
        );
        assert_eq!(usage::admitted(db, on_route, day).await.unwrap(), (9, 9));
        let next_day = day.succ_opt().unwrap();
        assert_eq!(
            usage::admitted(db, on_route, next_day).await.unwrap(),
            (0, 9)
        );
    }

    #[tokio::test]
    async fn entities_round_trip_on_every_backend() {
        for t in TestDb::all().await {
            entities_round_trip(t).await;
        }
    }

    #[tokio::test]
    async fn constraints_hold_on_every_backend() {
        for t in TestDb::all().await {
            constraints_hold(t).await;
        }
    }

    #[tokio::test]
    async fn usage_accumulates_on_every_backend() {
        for t in TestDb::all().await {
            usage_accumulates(t).await;
        }
    }
}
