//! Reading usage back for dashboards and the API: daily rollups (history) and minute rows (the
//! last two days).

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect,
};

use super::StoreResult;
use crate::entities::{usage_minute, usage_rollup};
use crate::limits::{Params, Subject, UsageSource};
use crate::usage::{Bucket, Counts};

/// How long minute rows are kept in the database.
pub const MINUTE_RETENTION_MINUTES: i64 = 2 * 24 * 60;

/// Filters of a usage query; `None` means all.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageFilter {
    pub api_id: Option<i64>,
    pub key_id: Option<i64>,
    pub client_id: Option<i64>,
}

fn counts_of(requests: i64, rejected: i64, upstream_errors: i64, units: i64) -> Counts {
    Counts {
        requests,
        rejected,
        upstream_errors,
        units,
    }
}

impl UsageFilter {
    /// The filter as a condition on a usage table's api, key and client columns.
    fn condition<C: ColumnTrait>(self, api: C, key: C, client: C) -> Condition {
        let mut c = Condition::all();
        for (col, id) in [
            (api, self.api_id),
            (key, self.key_id),
            (client, self.client_id),
        ] {
            if let Some(id) = id {
                c = c.add(col.eq(id));
            }
        }
        c
    }
}

/// Sums counts per bucket (day or minute), in bucket order.
fn summed<K: std::hash::Hash + Ord + Copy>(
    rows: impl IntoIterator<Item = (K, Counts)>,
) -> Vec<(K, Counts)> {
    let mut by: HashMap<K, Counts> = HashMap::new();
    for (k, c) in rows {
        by.entry(k).or_default().add(c);
    }
    let mut out: Vec<_> = by.into_iter().collect();
    out.sort_by_key(|(k, _)| *k);
    out
}

/// Daily rows of a tenant between two days (inclusive), summed per day.
pub async fn daily(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    from: NaiveDate,
    to: NaiveDate,
    f: UsageFilter,
) -> StoreResult<Vec<(NaiveDate, Counts)>> {
    use usage_rollup::Column as C;
    let rows = usage_rollup::Entity::find()
        .filter(C::TenantId.eq(tenant_id))
        .filter(C::Day.gte(from))
        .filter(C::Day.lte(to))
        .filter(f.condition(C::ApiId, C::KeyId, C::ClientId))
        .all(db)
        .await?;
    Ok(summed(rows.into_iter().map(|r| {
        (
            r.day,
            counts_of(r.requests, r.rejected, r.upstream_errors, r.units),
        )
    })))
}

/// Minute rows of a tenant between two minutes since the epoch (inclusive), summed per minute.
pub async fn minutes(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    from: i64,
    to: i64,
    f: UsageFilter,
) -> StoreResult<Vec<(i64, Counts)>> {
    use usage_minute::Column as C;
    let rows = usage_minute::Entity::find()
        .filter(C::TenantId.eq(tenant_id))
        .filter(C::Minute.gte(from))
        .filter(C::Minute.lte(to))
        .filter(f.condition(C::ApiId, C::KeyId, C::ClientId))
        .all(db)
        .await?;
    Ok(summed(rows.into_iter().map(|r| {
        (
            r.minute,
            counts_of(r.requests, r.rejected, r.upstream_errors, r.units),
        )
    })))
}

/// Requests per key of a tenant since `from` (inclusive), for the given keys or all when empty.
pub async fn per_key_since(
    db: &impl ConnectionTrait,
    tenant_id: i64,
    from: NaiveDate,
    key_ids: &[i64],
) -> StoreResult<HashMap<i64, Counts>> {
    use usage_rollup::Column as C;
    let mut q = usage_rollup::Entity::find()
        .filter(C::TenantId.eq(tenant_id))
        .filter(C::Day.gte(from));
    if !key_ids.is_empty() {
        q = q.filter(C::KeyId.is_in(key_ids.iter().copied()));
    }
    let mut out: HashMap<i64, Counts> = HashMap::new();
    for r in q.all(db).await? {
        out.entry(r.key_id).or_default().add(counts_of(
            r.requests,
            r.rejected,
            r.upstream_errors,
            r.units,
        ));
    }
    Ok(out)
}

/// Units a limit subject's limits consumed (each admitted request's cost), on `day` and in the
/// month `day` is in: where a counter store that has lost (or never had) a subject's day and month
/// counts starts them from.
pub async fn admitted(
    db: &impl ConnectionTrait,
    subject: Subject,
    day: NaiveDate,
) -> StoreResult<(u64, u64)> {
    admitted_since(db, subject, day, day.with_day(1).unwrap_or(day), day).await
}

/// Units a limit subject's limits consumed on the UTC days from `day_from` to `to` and from
/// `month_from` to `to`: a day and month of a tenant's own time zone are counted from the UTC
/// days they overlap, so a count seeded this way may be above what the window holds (a store that
/// lost its counters then refuses early, never grants again).
pub async fn admitted_since(
    db: &impl ConnectionTrait,
    subject: Subject,
    day_from: NaiveDate,
    month_from: NaiveDate,
    to: NaiveDate,
) -> StoreResult<(u64, u64)> {
    use usage_rollup::Column as C;
    let (tenant_id, by) = match subject {
        Subject::Key { tenant_id, key_id } => (
            tenant_id,
            Condition::all()
                .add(C::KeyId.eq(key_id))
                .add(C::ClientId.eq(0)),
        ),
        Subject::Client {
            tenant_id,
            client_row_id,
        } => (
            tenant_id,
            Condition::all().add(C::ClientId.eq(client_row_id)),
        ),
        Subject::Route {
            tenant_id,
            route_id,
            owner,
        } => {
            // A route's window of a client counts the client's requests on the route, with
            // whichever key; of a key, the key's own (no client).
            let who = match (owner.key_id(), owner.client_row_id()) {
                (Some(key_id), _) => Condition::all()
                    .add(C::KeyId.eq(key_id))
                    .add(C::ClientId.eq(0)),
                (_, client) => Condition::all().add(C::ClientId.eq(client.unwrap_or(0))),
            };
            (tenant_id, who.add(C::RouteId.eq(route_id)))
        }
        // The tenant's ceiling counts everything its keys and clients were admitted.
        Subject::Tenant { tenant_id } => (tenant_id, Condition::all()),
        Subject::Login(_) => return Ok((0, 0)),
    };
    let rows: Vec<(NaiveDate, i64)> = usage_rollup::Entity::find()
        .select_only()
        .columns([C::Day, C::Units])
        .filter(C::TenantId.eq(tenant_id))
        .filter(C::Day.gte(month_from.min(day_from)))
        .filter(C::Day.lte(to))
        .filter(by)
        .into_tuple()
        .all(db)
        .await?;
    let (mut on_day, mut in_month) = (0u64, 0u64);
    for (d, units) in rows {
        let n = u64::try_from(units).unwrap_or(0);
        if d >= month_from {
            in_month += n;
        }
        if d >= day_from {
            on_day += n;
        }
    }
    Ok((on_day, in_month))
}

/// The database as a [`UsageSource`]: a store's missing day and month counts start from the
/// usage recorded (up to one usage flush behind the traffic of every data plane).
pub struct DbUsage(pub sea_orm::DatabaseConnection);

impl UsageSource for DbUsage {
    fn admitted<'a>(
        &'a self,
        subject: Subject,
        p: &'a Params,
    ) -> futures_util::future::BoxFuture<'a, (u64, u64)> {
        Box::pin(async move {
            let date = |us: i64| {
                chrono::DateTime::from_timestamp_micros(us)
                    .unwrap_or_default()
                    .date_naive()
            };
            let today = date(p.now_us);
            // The UTC days the windows overlap (for UTC windows: today, and this month's).
            let day_from = p.day.map_or(today, |(_, per)| date(per.start_us));
            let month_from = p
                .month
                .map_or(today.with_day(1).unwrap_or(today), |(_, per)| {
                    date(per.start_us)
                });
            match admitted_since(&self.0, subject, day_from, month_from, today).await {
                Ok(counts) => counts,
                Err(e) => {
                    tracing::warn!(error = %e, ?subject, "could not read usage to seed limit counters");
                    (0, 0)
                }
            }
        })
    }
}

/// Requests per tenant since `from`: the platform admin's overview.
pub async fn per_tenant_since(
    db: &impl ConnectionTrait,
    from: NaiveDate,
) -> StoreResult<HashMap<i64, Counts>> {
    let mut out: HashMap<i64, Counts> = HashMap::new();
    for r in usage_rollup::Entity::find()
        .filter(usage_rollup::Column::Day.gte(from))
        .all(db)
        .await?
    {
        out.entry(r.tenant_id).or_default().add(counts_of(
            r.requests,
            r.rejected,
            r.upstream_errors,
            r.units,
        ));
    }
    Ok(out)
}

/// Adds minute buckets to the minute table (insert, or add to the existing row), a few hundred
/// rows a statement (run it in a transaction when it must be all or nothing).
pub async fn add_minutes<S: std::hash::BuildHasher>(
    db: &impl ConnectionTrait,
    batch: &HashMap<Bucket, Counts, S>,
) -> StoreResult<()> {
    use usage_minute::Column as C;
    if batch.is_empty() {
        return Ok(());
    }
    let rows: Vec<usage_minute::ActiveModel> = batch
        .iter()
        .map(|(b, c)| usage_minute::ActiveModel {
            tenant_id: Set(b.tenant_id),
            minute: Set(b.minute),
            api_id: Set(b.api_id),
            key_id: Set(b.key_id),
            client_id: Set(b.client_id),
            route_id: Set(b.route_id),
            requests: Set(c.requests),
            rejected: Set(c.rejected),
            upstream_errors: Set(c.upstream_errors),
            units: Set(c.units),
            ..Default::default()
        })
        .collect();
    super::adding_counts(
        db,
        usage_minute::Entity,
        [
            C::TenantId,
            C::Minute,
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

/// Deletes minute rows older than `before` (minutes since the epoch).
pub async fn prune_minutes(db: &impl ConnectionTrait, before: i64) -> StoreResult<u64> {
    let res = usage_minute::Entity::delete_many()
        .filter(usage_minute::Column::Minute.lt(before))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
