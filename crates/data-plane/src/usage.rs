//! Usage counting: in process per (tenant, api, key, client, minute) on the hot path, flushed in
//! batches to Redis (minute buckets) and to the database (daily rollups, key `last_used_at`).
//! A failed write is kept and retried at the next flush; the last flush runs at shutdown.

use foldhash::{HashMap, HashMapExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use chrono::DateTime;
use deadpool_redis::Pool;
use domain::sea_orm::{DatabaseConnection, TransactionTrait};
use domain::store::{self, UsageDelta};
use domain::usage::{Bucket, Counts, write_minutes};

use crate::lock;

const SHARDS: usize = 32;
const PRUNE_EVERY_MINUTES: i64 = 10;

type Batch = HashMap<Bucket, Counts>;

fn merge(into: &mut Batch, from: &Batch) {
    for (b, c) in from {
        into.entry(*b).or_default().add(*c);
    }
}

/// One shard per thread that records (a data-plane worker, mostly), each on its own cache line: a
/// request's count is added under a lock no other core touches between flushes.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Batch>);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

pub struct UsageRecorder {
    shards: Vec<Shard>,
    redis: Option<(Pool, String)>,
    db: DatabaseConnection,
    pending_redis: Mutex<Batch>,
    pending_db: Mutex<Batch>,
    flush_lock: tokio::sync::Mutex<()>,
    flush_errors: AtomicU64,
    last_prune: AtomicI64,
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    pub buckets: usize,
    pub redis_ok: bool,
    pub db_ok: bool,
}

impl UsageRecorder {
    pub fn new(db: DatabaseConnection, redis: Option<(Pool, String)>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            redis,
            db,
            pending_redis: Mutex::new(HashMap::new()),
            pending_db: Mutex::new(HashMap::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_errors: AtomicU64::new(0),
            last_prune: AtomicI64::new(0),
        }
    }

    /// Counts one request (hot path: one short lock of this thread's shard; the same bucket may
    /// be counted in several shards, and a flush adds them up).
    pub fn record(&self, bucket: Bucket, counts: Counts) {
        let shard = THREAD_SHARD.with(|s| *s);
        lock(&self.shards[shard].0)
            .entry(bucket)
            .or_default()
            .add(counts);
    }

    /// Drops minute rows past their retention, at most every few minutes.
    async fn prune_old_minutes(&self) {
        let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
        let last = self.last_prune.load(Ordering::Relaxed);
        if now_minute - last < PRUNE_EVERY_MINUTES
            || self
                .last_prune
                .compare_exchange(last, now_minute, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let before = now_minute - store::MINUTE_RETENTION_MINUTES;
        if let Err(e) = store::prune_minutes(&self.db, before).await {
            tracing::warn!(error = %e, "could not prune old usage minutes");
        }
    }

    pub fn flush_errors(&self) -> u64 {
        self.flush_errors.load(Ordering::Relaxed)
    }

    fn drain(&self) -> Batch {
        let mut all = Batch::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *lock(&shard.0));
            merge(&mut all, &taken);
        }
        all
    }

    /// Moves everything counted so far to Redis and the database.
    pub async fn flush(&self) -> FlushReport {
        let _one_at_a_time = self.flush_lock.lock().await;
        let fresh = self.drain();
        let mut report = FlushReport {
            buckets: fresh.len(),
            redis_ok: true,
            db_ok: true,
        };

        if let Some((pool, prefix)) = &self.redis {
            let batch = {
                let mut pending = lock(&self.pending_redis);
                merge(&mut pending, &fresh);
                std::mem::take(&mut *pending)
            };
            if let Err(e) = write_minutes(pool, prefix, &batch).await {
                tracing::warn!(error = %e, buckets = batch.len(), "usage flush to Redis failed; will retry");
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                merge(&mut lock(&self.pending_redis), &batch);
                report.redis_ok = false;
            }
        }

        let batch = {
            let mut pending = lock(&self.pending_db);
            merge(&mut pending, &fresh);
            std::mem::take(&mut *pending)
        };
        if let Err(e) = self.write_db(&batch).await {
            tracing::warn!(error = %e, buckets = batch.len(), "usage flush to the database failed; will retry");
            self.flush_errors.fetch_add(1, Ordering::Relaxed);
            merge(&mut lock(&self.pending_db), &batch);
            report.db_ok = false;
        }
        report
    }

    async fn write_db(&self, batch: &Batch) -> Result<(), store::StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut days: HashMap<(i64, chrono::NaiveDate, i64, i64, i64, i64), Counts> =
            HashMap::new();
        let mut last_used: HashMap<i64, i64> = HashMap::new();
        for (b, c) in batch {
            let day = DateTime::from_timestamp(b.minute * 60, 0)
                .unwrap_or_default()
                .date_naive();
            days.entry((
                b.tenant_id,
                day,
                b.api_id,
                b.key_id,
                b.client_id,
                b.route_id,
            ))
            .or_default()
            .add(*c);
            let seen = last_used.entry(b.key_id).or_default();
            *seen = (*seen).max(b.minute);
        }
        let deltas: Vec<UsageDelta> = days
            .into_iter()
            .map(
                |((tenant_id, day, api_id, key_id, client_id, route_id), c)| UsageDelta {
                    tenant_id,
                    day,
                    api_id,
                    key_id,
                    client_id,
                    route_id,
                    requests: c.requests,
                    rejected: c.rejected,
                    upstream_errors: c.upstream_errors,
                    units: c.units,
                },
            )
            .collect();
        // One transaction: a retried batch must never be counted twice.
        let txn = self.db.begin().await.map_err(store::StoreError::from)?;
        store::add_usage(&txn, &deltas).await?;
        store::add_minutes(&txn, batch).await?;
        // Keys used in the same minute are stamped together.
        let mut by_minute: HashMap<i64, Vec<i64>> = HashMap::new();
        for (key, minute) in last_used {
            by_minute.entry(minute).or_default().push(key);
        }
        let now = chrono::Utc::now();
        for (minute, keys) in by_minute {
            // The minute's end, or now for the minute under way: never before the use itself
            // (the minute's start could be before the key was even created).
            let at = DateTime::from_timestamp((minute + 1) * 60, 0)
                .unwrap_or_default()
                .min(now);
            store::touch_keys(&txn, &keys, at).await?;
        }
        txn.commit().await.map_err(store::StoreError::from)?;
        self.prune_old_minutes().await;
        Ok(())
    }
}
