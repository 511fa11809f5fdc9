//! Tenant-scoped reads and writes used by the dashboard and the management API. Every query is
//! filtered by the acting tenant: another tenant's id is simply `NotFound`.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{NewApi, StoreError, StoreResult, bump_config_version, create_api_key, to_i64};
use crate::apikey::ApiKey;
use crate::entities::{api, api_key, api_route, api_token, client, plan, tenant};
use crate::plan::{Enforcement, PlanLimits};
use crate::route::NewRoute;

// ---- Pages by id, for the management API ---------------------------------------------------

/// Entities owned by a tenant, listed a page at a time in id order.
pub trait TenantOwned: EntityTrait {
    fn tenant_column() -> Self::Column;
    fn id_column() -> Self::Column;
}

macro_rules! tenant_owned {
    ($($m:ident),*) => {$(
        impl TenantOwned for $m::Entity {
            fn tenant_column() -> Self::Column { $m::Column::TenantId }
            fn id_column() -> Self::Column { $m::Column::Id }
        }
    )*};
}
tenant_owned!(api, api_key, api_token, client, plan);

/// Up to `limit` of the tenant's rows with an id above `after`, in id order.
pub async fn page<E: TenantOwned>(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    after: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<E::Model>> {
    let mut q = E::find().filter(E::tenant_column().eq(tenant_id));
    if let Some(after) = after {
        q = q.filter(E::id_column().gt(after));
    }
    Ok(q.order_by_asc(E::id_column()).limit(limit).all(db).await?)
}

// ---- APIs ----------------------------------------------------------------------------------

pub async fn list_apis(db: &impl ConnectionTrait, tenant_id: i64) -> StoreResult<Vec<api::Model>> {
    Ok(api::Entity::find()
        .filter(api::Column::TenantId.eq(tenant_id))
        .order_by_asc(api::Column::Name)
        .order_by_asc(api::Column::Id)
        .all(db)
        .await?)
}

pub async fn get_api(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
) -> StoreResult<api::Model> {
    api::Entity::find_by_id(id)
        .filter(api::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

pub async fn update_api(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    new: NewApi,
    is_active: bool,
) -> StoreResult<api::Model> {
    let mut a = get_api(db, tenant_id, id).await?.into_active_model();
    a.name = Set(new.name);
    a.slug = Set(new.slug.into_inner());
    a.upstream_url = Set(new.upstream_url.to_string());
    a.key_header = Set(new.key_header.as_str().to_owned());
    a.timeout_ms = Set(new.timeout.millis());
    a.pass_encoded_slashes = Set(new.pass_encoded_slashes);
    a.log_query = Set(new.log_query);
    a.auth = Set(new.auth.as_str().to_owned());
    a.identity_token = Set(new.identity_token);
    a.upstream_protocol = Set(new.upstream_protocol.as_str().to_owned());
    a.websocket_idle_timeout_ms = Set(new.websocket_idle.millis());
    a.is_active = Set(is_active);
    let a = a.update(db).await?;
    super::targets::set_first_target_url(db, &a).await?;
    bump_config_version(db).await?;
    Ok(a)
}

pub async fn set_api_active(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    active: bool,
) -> StoreResult<api::Model> {
    let mut a = get_api(db, tenant_id, id).await?.into_active_model();
    a.is_active = Set(active);
    let a = a.update(db).await?;
    bump_config_version(db).await?;
    Ok(a)
}

pub async fn delete_api(db: &impl ConnectionTrait, tenant_id: i64, id: i64) -> StoreResult<()> {
    let res = api::Entity::delete_many()
        .filter(api::Column::Id.eq(id))
        .filter(api::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    bump_config_version(db).await
}

// ---- Plans ---------------------------------------------------------------------------------

pub async fn list_plans(
    db: &impl ConnectionTrait,
    tenant_id: i64,
) -> StoreResult<Vec<plan::Model>> {
    Ok(plan::Entity::find()
        .filter(plan::Column::TenantId.eq(tenant_id))
        .order_by_asc(plan::Column::RequestsPerMinute)
        .order_by_asc(plan::Column::Id)
        .all(db)
        .await?)
}

pub async fn get_plan(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
) -> StoreResult<plan::Model> {
    plan::Entity::find_by_id(id)
        .filter(plan::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

pub async fn update_plan(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    name: &str,
    limits: PlanLimits,
    enforcement: Enforcement,
) -> StoreResult<plan::Model> {
    let mut p = get_plan(db, tenant_id, id).await?.into_active_model();
    p.name = Set(name.to_owned());
    p.requests_per_minute = Set(to_i64(limits.requests_per_minute));
    p.burst = Set(Some(to_i64(limits.burst)));
    p.requests_per_day = Set(limits.requests_per_day.map(to_i64));
    p.requests_per_month = Set(limits.requests_per_month.map(to_i64));
    p.enforcement = Set(enforcement.as_str().to_owned());
    let p = p.update(db).await?;
    bump_config_version(db).await?;
    Ok(p)
}

/// How many keys and clients use a plan.
pub async fn plan_usage(db: &impl ConnectionTrait, plan_id: i64) -> StoreResult<(u64, u64)> {
    let keys = api_key::Entity::find()
        .filter(api_key::Column::PlanId.eq(plan_id))
        .count(db)
        .await?;
    let clients = client::Entity::find()
        .filter(client::Column::PlanId.eq(plan_id))
        .count(db)
        .await?;
    Ok((keys, clients))
}

/// Deletes a plan; refused with [`StoreError::InUse`] while keys or clients use it.
pub async fn delete_plan(db: &impl ConnectionTrait, tenant_id: i64, id: i64) -> StoreResult<()> {
    let p = get_plan(db, tenant_id, id).await?;
    let (keys, clients) = plan_usage(db, p.id).await?;
    if keys > 0 || clients > 0 {
        return Err(StoreError::InUse(format!(
            "plan '{}' is used by {keys} key(s) and {clients} client(s)",
            p.name
        )));
    }
    plan::Entity::delete_by_id(p.id).exec(db).await?;
    bump_config_version(db).await
}

// ---- Keys ----------------------------------------------------------------------------------

pub async fn count_keys(db: &impl ConnectionTrait, tenant_id: i64) -> StoreResult<u64> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .count(db)
        .await?)
}

/// One page of keys, newest first.
pub async fn list_keys(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    offset: u64,
    limit: u64,
) -> StoreResult<Vec<api_key::Model>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .order_by_desc(api_key::Column::Id)
        .offset(offset)
        .limit(limit)
        .all(db)
        .await?)
}

/// Keys after `after_id` (newest first), for cursor pagination.
pub async fn list_keys_after(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    before_id: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<api_key::Model>> {
    let mut q = api_key::Entity::find().filter(api_key::Column::TenantId.eq(tenant_id));
    if let Some(id) = before_id {
        q = q.filter(api_key::Column::Id.lt(id));
    }
    Ok(q.order_by_desc(api_key::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

pub async fn get_key(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
) -> StoreResult<api_key::Model> {
    api_key::Entity::find_by_id(id)
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

/// The tenant's keys related by rotation to any of `ids`: the keys they replaced and the keys
/// that replaced them (for "replaced by … / replaces …" in the key list).
pub async fn rotation_partners(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    ids: &[i64],
    replacements: &[i64],
) -> StoreResult<Vec<api_key::Model>> {
    if ids.is_empty() && replacements.is_empty() {
        return Ok(Vec::new());
    }
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .filter(
            sea_orm::Condition::any()
                .add(api_key::Column::ReplacedBy.is_in(ids.iter().copied()))
                .add(api_key::Column::Id.is_in(replacements.iter().copied())),
        )
        .all(db)
        .await?)
}

pub async fn update_key(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    name: &str,
    plan_id: i64,
    expires_at: Option<DateTime<Utc>>,
) -> StoreResult<api_key::Model> {
    get_plan(db, tenant_id, plan_id).await?;
    let mut k = get_key(db, tenant_id, id).await?.into_active_model();
    k.name = Set(name.to_owned());
    k.plan_id = Set(plan_id);
    k.expires_at = Set(expires_at);
    let k = k.update(db).await?;
    bump_config_version(db).await?;
    Ok(k)
}

/// A new key with the old one's name and plan; the old key stays valid until `old_valid_until`
/// (now = revoked at once).
pub async fn rotate_key(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    old_valid_until: DateTime<Utc>,
) -> StoreResult<(api_key::Model, ApiKey)> {
    let old = get_key(db, tenant_id, id).await?;
    if !old.is_active {
        return Err(StoreError::InUse("a revoked key cannot be rotated".into()));
    }
    if let Some(next) = old.replaced_by {
        // Its expiry is now the end of its grace period: a key made from it would inherit that.
        return Err(StoreError::InUse(format!(
            "this key was already rotated (replaced by key {next}); rotate that one instead"
        )));
    }
    if old.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(StoreError::InUse(
            "an expired key cannot be rotated (the new one would be born expired); create a new key"
                .into(),
        ));
    }
    let created = create_api_key(db, tenant_id, old.plan_id, &old.name, old.expires_at).await?;
    let until = old
        .expires_at
        .map_or(old_valid_until, |e| e.min(old_valid_until));
    api_key::Entity::update_many()
        .col_expr(api_key::Column::ExpiresAt, Expr::value(Some(until)))
        .col_expr(api_key::Column::ReplacedBy, Expr::value(Some(created.0.id)))
        .filter(api_key::Column::Id.eq(old.id))
        .exec(db)
        .await?;
    bump_config_version(db).await?;
    Ok(created)
}

// ---- Clients -------------------------------------------------------------------------------

pub async fn list_clients(
    db: &impl ConnectionTrait,
    tenant_id: i64,
) -> StoreResult<Vec<client::Model>> {
    Ok(client::Entity::find()
        .filter(client::Column::TenantId.eq(tenant_id))
        .order_by_asc(client::Column::ClientId)
        .all(db)
        .await?)
}

pub async fn get_client(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
) -> StoreResult<client::Model> {
    client::Entity::find_by_id(id)
        .filter(client::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

pub async fn update_client(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    id: i64,
    name: &str,
    plan_id: i64,
    is_active: bool,
) -> StoreResult<client::Model> {
    get_plan(db, tenant_id, plan_id).await?;
    let mut c = get_client(db, tenant_id, id).await?.into_active_model();
    c.name = Set(name.to_owned());
    c.plan_id = Set(plan_id);
    c.is_active = Set(is_active);
    let c = c.update(db).await?;
    bump_config_version(db).await?;
    Ok(c)
}

pub async fn delete_client(db: &impl ConnectionTrait, tenant_id: i64, id: i64) -> StoreResult<()> {
    let res = client::Entity::delete_many()
        .filter(client::Column::Id.eq(id))
        .filter(client::Column::TenantId.eq(tenant_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    bump_config_version(db).await
}

// ---- Tenants (platform admin) ------------------------------------------------------------

pub async fn list_tenants(db: &impl ConnectionTrait) -> StoreResult<Vec<tenant::Model>> {
    Ok(tenant::Entity::find()
        .order_by_asc(tenant::Column::Slug)
        .all(db)
        .await?)
}

pub async fn tenant_of_owner(
    db: &impl ConnectionTrait,
    owner_id: i64,
) -> StoreResult<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::OwnerId.eq(owner_id))
        .one(db)
        .await?)
}

/// Lets a tenant use loopback and private upstreams (a platform admin's decision), or not.
pub async fn set_tenant_trusted(
    db: &impl ConnectionTrait,
    id: i64,
    trusted: bool,
) -> StoreResult<tenant::Model> {
    update_tenant(db, id, |t| t.trusted_upstreams = Set(trusted)).await
}

pub async fn set_tenant_active(
    db: &impl ConnectionTrait,
    id: i64,
    active: bool,
) -> StoreResult<tenant::Model> {
    update_tenant(db, id, |t| t.is_active = Set(active)).await
}

/// Sets the time zone a tenant's day and month windows are in. It takes effect from the next window
/// of each kind (see [`crate::calendar`]); while an earlier change has not yet taken effect for
/// the month, another is refused (409, saying from when it can be made).
pub async fn set_time_zone(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    zone: chrono_tz::Tz,
) -> StoreResult<tenant::Model> {
    let t = tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)?;
    let current = t.calendar();
    if current.zone == zone {
        return Ok(t);
    }
    let now = chrono::Utc::now();
    let settled = current.settled_at_us();
    if settled > now.timestamp_micros() {
        let when = chrono::DateTime::from_timestamp_micros(settled).unwrap_or(now);
        return Err(StoreError::Conflict(format!(
            "The time zone was changed to {} on {}; that change takes effect for the monthly \
             window only when the current month ends, so it can be changed again from {} UTC.",
            current.zone.name(),
            t.time_zone_changed_at.unwrap_or(now).format("%Y-%m-%d"),
            when.format("%Y-%m-%d %H:%M")
        )));
    }
    let before = current.zone.name().to_owned();
    update_tenant(db, tenant_id, |t| {
        t.time_zone = Set(zone.name().to_owned());
        t.time_zone_before = Set(Some(before));
        t.time_zone_changed_at = Set(Some(now));
    })
    .await
}

/// What a platform admin changes of a tenant at once (`None`: kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantChange {
    pub is_active: Option<bool>,
    pub trusted_upstreams: Option<bool>,
    /// `Some(None)` removes the ceiling.
    pub limits: Option<Option<crate::plan::TenantLimits>>,
}

/// Applies a platform admin's change to a tenant in one write.
pub async fn change_tenant(
    db: &impl ConnectionTrait,
    id: i64,
    change: TenantChange,
) -> StoreResult<tenant::Model> {
    update_tenant(db, id, |t| {
        if let Some(active) = change.is_active {
            t.is_active = Set(active);
        }
        if let Some(trusted) = change.trusted_upstreams {
            t.trusted_upstreams = Set(trusted);
        }
        if let Some(limits) = change.limits {
            let [rpm, burst, day, month] = crate::plan::TenantLimits::columns(limits.as_ref());
            t.limit_rpm = Set(rpm);
            t.limit_burst = Set(burst);
            t.limit_day = Set(day);
            t.limit_month = Set(month);
        }
    })
    .await
}

/// Every tenant, a page at a time in id order (a platform admin's view).
pub async fn page_tenants(
    db: &impl ConnectionTrait,
    after: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<tenant::Model>> {
    let mut q = tenant::Entity::find();
    if let Some(after) = after {
        q = q.filter(tenant::Column::Id.gt(after));
    }
    Ok(q.order_by_asc(tenant::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// A platform admin's change to a tenant, published to the data planes.
async fn update_tenant(
    db: &impl ConnectionTrait,
    id: i64,
    change: impl FnOnce(&mut tenant::ActiveModel),
) -> StoreResult<tenant::Model> {
    let t = tenant::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)?;
    let mut t = t.into_active_model();
    change(&mut t);
    let t = t.update(db).await?;
    bump_config_version(db).await?;
    Ok(t)
}

// ---- Routes --------------------------------------------------------------------------------

/// An API's routes a page at a time in id order (the API must be the tenant's).
pub async fn list_routes(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    after: Option<i64>,
    limit: u64,
) -> StoreResult<Vec<api_route::Model>> {
    get_api(db, tenant_id, api_id).await?;
    let mut q = api_route::Entity::find()
        .filter(api_route::Column::TenantId.eq(tenant_id))
        .filter(api_route::Column::ApiId.eq(api_id));
    if let Some(after) = after {
        q = q.filter(api_route::Column::Id.gt(after));
    }
    Ok(q.order_by_asc(api_route::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

pub async fn get_route(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
) -> StoreResult<api_route::Model> {
    api_route::Entity::find_by_id(id)
        .filter(api_route::Column::TenantId.eq(tenant_id))
        .filter(api_route::Column::ApiId.eq(api_id))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound)
}

/// The route of the API (other than `except`) that already takes the requests `new` would:
/// same path, same match and a method in common.
pub async fn duplicate_route(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    new: &NewRoute,
    except: Option<i64>,
) -> StoreResult<Option<api_route::Model>> {
    let routes = api_route::Entity::find()
        .filter(api_route::Column::TenantId.eq(tenant_id))
        .filter(api_route::Column::ApiId.eq(api_id))
        .all(db)
        .await?;
    Ok(routes.into_iter().find(|r| {
        Some(r.id) != except
            && crate::snapshot::route_of(r).is_ok_and(|old| {
                new.duplicates(&NewRoute {
                    path: old.path,
                    kind: old.kind,
                    methods: old.methods,
                    ..new.clone()
                })
            })
    }))
}

fn set_route_fields(r: &mut api_route::ActiveModel, new: &NewRoute) {
    r.path = Set(new.path.as_str().to_owned());
    r.match_kind = Set(new.kind.as_str().to_owned());
    r.methods = Set(new.methods.to_stored());
    r.priority = Set(new.priority);
    r.strip_prefix = Set(new.strip_prefix);
    r.timeout_ms = Set(new.timeout_ms);
    r.retries = Set(new.retries);
    r.rl_requests_per_minute = Set(new.rate_limit.map(|l| to_i64(l.requests_per_minute)));
    r.rl_burst = Set(new.rate_limit.map(|l| to_i64(l.burst)));
    r.rl_requests_per_day = Set(new.rate_limit.and_then(|l| l.requests_per_day.map(to_i64)));
    r.cost = Set(new.cost);
}

pub async fn create_route(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    new: NewRoute,
) -> StoreResult<api_route::Model> {
    get_api(db, tenant_id, api_id).await?;
    let mut r = api_route::ActiveModel {
        tenant_id: Set(tenant_id),
        api_id: Set(api_id),
        created_at: Set(Utc::now()),
        ..Default::default()
    };
    set_route_fields(&mut r, &new);
    let r = r.insert(db).await?;
    bump_config_version(db).await?;
    Ok(r)
}

pub async fn update_route(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
    new: NewRoute,
) -> StoreResult<api_route::Model> {
    let mut r = get_route(db, tenant_id, api_id, id)
        .await?
        .into_active_model();
    set_route_fields(&mut r, &new);
    let r = r.update(db).await?;
    bump_config_version(db).await?;
    Ok(r)
}

pub async fn delete_route(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    api_id: i64,
    id: i64,
) -> StoreResult<()> {
    let res = api_route::Entity::delete_many()
        .filter(api_route::Column::Id.eq(id))
        .filter(api_route::Column::TenantId.eq(tenant_id))
        .filter(api_route::Column::ApiId.eq(api_id))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    bump_config_version(db).await
}
