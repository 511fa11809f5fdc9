//! Usage and traffic counting: in process per (tenant, api, key, client, route, minute) on the hot
//! path — the limits' usage (requests, rejected, units) and the analytics of every answer (status
//! class, bytes, latency histogram) in one map entry — flushed in batches to Redis (usage minute
//! buckets) and to the database (usage rollups, key `last_used_at`, traffic minutes/hours/days)
//! in one transaction. A failed write is kept and retried at the next flush; the last flush runs
//! at shutdown.

use foldhash::{HashMap, HashMapExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use chrono::DateTime;
use domain::analytics::{Dims, Hit, Stats};
use domain::clock::SharedClock;
use domain::redis_pool::Pool;
use domain::sea_orm::{DatabaseConnection, TransactionTrait};
use domain::store::{self, UsageDelta};
use domain::usage::{Bucket, Counts, write_minutes};

use crate::lock;

/// Shards of the per-thread maps (usage, the request log's buffers).
pub(crate) const SHARDS: usize = 32;
const PRUNE_EVERY_MINUTES: i64 = 10;

/// What one bucket counted: the limits' usage (only requests that reached the limit phase) and
/// the analytics of every answer.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    pub usage: Counts,
    pub traffic: Stats,
}

impl Slot {
    fn merge(&mut self, o: &Self) {
        self.usage.add(o.usage);
        self.traffic.merge(&o.traffic);
    }
}

type Batch = HashMap<Bucket, Counts>;
type Slots = HashMap<Bucket, Slot>;

fn merge(into: &mut Batch, from: &Batch) {
    for (b, c) in from {
        into.entry(*b).or_default().add(*c);
    }
}

fn merge_slots(into: &mut Slots, from: &Slots) {
    for (b, s) in from {
        into.entry(*b).or_default().merge(s);
    }
}

/// One shard per thread that records (a data-plane worker, mostly), each on its own cache line: a
/// request's count is added under a lock no other core touches between flushes.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Slots>);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// This thread's shard of the per-thread maps.
pub(crate) fn thread_shard() -> usize {
    THREAD_SHARD.with(|s| *s)
}

pub struct UsageRecorder {
    shards: Vec<Shard>,
    redis: Option<(Pool, String)>,
    db: DatabaseConnection,
    pending_redis: Mutex<Batch>,
    pending_db: Mutex<Slots>,
    flush_lock: tokio::sync::Mutex<()>,
    flush_errors: AtomicU64,
    last_prune: AtomicI64,
    clock: SharedClock,
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    pub buckets: usize,
    pub redis_ok: bool,
    pub db_ok: bool,
}

impl UsageRecorder {
    /// `clock`: the gateway's, which decides what is past its retention.
    pub fn new(db: DatabaseConnection, redis: Option<(Pool, String)>, clock: SharedClock) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            redis,
            db,
            pending_redis: Mutex::new(HashMap::new()),
            pending_db: Mutex::new(HashMap::new()),
            flush_lock: tokio::sync::Mutex::new(()),
            flush_errors: AtomicU64::new(0),
            last_prune: AtomicI64::new(0),
            clock,
        }
    }

    /// Counts one request: its usage (zero when it never reached the limit phase) and its
    /// answer (hot path: one short lock of this thread's shard; the same bucket may be counted
    /// in several shards, and a flush adds them up).
    pub fn record(&self, bucket: Bucket, usage: Counts, hit: &Hit) {
        let mut shard = lock(&self.shards[thread_shard()].0);
        let slot = shard.entry(bucket).or_default();
        slot.usage.add(usage);
        slot.traffic.count(hit);
    }

    /// Drops minute rows past their retention, at most every few minutes.
    async fn prune_old_minutes(&self) {
        let now_minute = self.clock.now_ms().div_euclid(60_000);
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
        if let Err(e) = store::analytics::prune(&self.db, now_minute * 60).await {
            tracing::warn!(error = %e, "could not prune old traffic analytics");
        }
    }

    pub fn flush_errors(&self) -> u64 {
        self.flush_errors.load(Ordering::Relaxed)
    }

    fn drain(&self) -> Slots {
        let mut all = Slots::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *lock(&shard.0));
            merge_slots(&mut all, &taken);
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
                for (b, s) in &fresh {
                    if s.usage.requests != 0 {
                        pending.entry(*b).or_default().add(s.usage);
                    }
                }
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
            merge_slots(&mut pending, &fresh);
            std::mem::take(&mut *pending)
        };
        if let Err(e) = self.write_db(&batch).await {
            tracing::warn!(error = %e, buckets = batch.len(), "usage flush to the database failed; will retry");
            self.flush_errors.fetch_add(1, Ordering::Relaxed);
            merge_slots(&mut lock(&self.pending_db), &batch);
            report.db_ok = false;
        }
        report
    }

    async fn write_db(&self, slots: &Slots) -> Result<(), store::StoreError> {
        if slots.is_empty() {
            return Ok(());
        }
        let batch: Batch = slots
            .iter()
            .filter(|(_, s)| s.usage.requests != 0)
            .map(|(b, s)| (*b, s.usage))
            .collect();
        let traffic: Vec<(Dims, i64, &Stats)> = slots
            .iter()
            .filter(|(_, s)| s.traffic.requests != 0)
            .map(|(b, s)| {
                let dims = Dims {
                    tenant_id: b.tenant_id,
                    api_id: b.api_id,
                    key_id: b.key_id,
                    client_id: b.client_id,
                    route_id: b.route_id,
                };
                (dims, b.minute * 60, &s.traffic)
            })
            .collect();
        let mut days: HashMap<(i64, chrono::NaiveDate, i64, i64, i64, i64), Counts> =
            HashMap::new();
        let mut last_used: HashMap<i64, i64> = HashMap::new();
        for (b, c) in &batch {
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
        store::add_minutes(&txn, &batch).await?;
        store::analytics::add(&txn, traffic.iter().map(|(d, m, s)| (d, *m, *s))).await?;
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
