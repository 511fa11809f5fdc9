//! Chooses the store per request: Redis while it answers in time, the in-process store while it
//! does not (or 503 when configured fail-closed), and back to Redis by itself.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use foldhash::fast::RandomState;

use arc_swap::ArcSwapOption;

use super::local::LocalStore;
use super::lock;
use super::redis::RedisStore;
use super::swept::Swept;

use super::{Ask, Decision, Params, Subject};
use crate::clock::SharedClock;
use crate::plan::{Enforcement, PlanLimits};

pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(20);
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Largest fast-mode lease: requests a data plane may admit on one Redis round trip.
pub const DEFAULT_LEASE_MAX: u64 = 128;
/// How long a leased budget may be spent; what is left then is dropped (never over-admitted).
/// A data plane holds at most two leases of a subject at once (the current one and the next,
/// fetched when the current runs low): that is the most it can refuse early per window.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(1);
/// A lease takes at most this fraction (1/n) of what the tightest window has left, so leases
/// shrink to single requests near a limit and other data planes are not starved.
pub const LEASE_SHARE_DIV: u64 = 8;
const LEASE_SHARDS: usize = 64;
/// A worker thread draws at most this many requests of a lease at a time (and at most 1/8 of
/// what the lease has left), then spends them touching nothing another thread writes.
pub const DRAW_MAX: u64 = 16;
const DRAW_SHARE_DIV: u64 = 8;

#[derive(Debug, Clone, Copy)]
pub struct LimiterSettings {
    /// A Redis answer slower than this counts as Redis being down.
    pub redis_timeout: Duration,
    /// While Redis is down: refuse requests (503) instead of limiting in process.
    pub fail_closed: bool,
    /// How often a down Redis is probed.
    pub probe_interval: Duration,
    /// Fast mode: the most requests leased from Redis at once.
    pub lease_max: u64,
    /// Fast mode: how long a lease may be spent.
    pub lease_ttl: Duration,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            fail_closed: false,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            lease_max: DEFAULT_LEASE_MAX,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Redis,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimiterError {
    #[error("the rate-limit store is unavailable")]
    Unavailable,
}

/// A budget leased from Redis for one subject (fast mode). Spending is a lock-free decrement;
/// fetching a new lease is serialised per subject, and starts in the background once the budget
/// runs low, so requests rarely wait for Redis.
#[derive(Default)]
struct Lease {
    left: AtomicU64,
    expires_ms: AtomicI64,
    /// The windows as Redis saw them at the last grant, for the response headers.
    decision: ArcSwapOption<Decision>,
    refill: tokio::sync::Mutex<()>,
    prefetching: AtomicBool,
    /// Day and month period ids of the last grant: unspent requests are given back only to the
    /// period they were taken from.
    periods: std::sync::Mutex<(i64, i64)>,
    /// Requests worker threads drew but did not spend before their draw expired, with the periods
    /// they were granted in: given back to Redis with the next grant.
    stale: std::sync::Mutex<(u64, (i64, i64))>,
}

fn periods_of(p: &Params) -> (i64, i64) {
    (
        p.day.map_or(0, |(_, per)| per.id),
        p.month.map_or(0, |(_, per)| per.id),
    )
}

impl Lease {
    /// Spends one request of the lease, if it has one left and has not expired; returns the
    /// decision for it.
    fn try_spend(&self, now_ms: i64) -> Option<Decision> {
        if self.expires_ms.load(Ordering::Acquire) <= now_ms {
            return None;
        }
        let mut cur = self.left.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return None;
            }
            match self
                .left
                .compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let left = cur - 1;
        // `load`, not `load_full`: no shared reference count bounced between workers per request.
        let snapshot = self.decision.load();
        Some(with_held(snapshot.as_ref()?, left))
    }

    /// Takes back what an expired lease never spent and what workers drew and did not spend, to
    /// return it to Redis with the next grant (nothing when it was taken in an earlier day or
    /// month: that period is over).
    fn take_unspent(&self, now_ms: i64, params: &Params) -> u64 {
        let expired = if self.expires_ms.load(Ordering::Acquire) > now_ms {
            0
        } else {
            let unspent = self.left.swap(0, Ordering::AcqRel);
            if self.periods() == periods_of(params) {
                unspent
            } else {
                0
            }
        };
        expired + self.take_stale(params)
    }

    fn periods(&self) -> (i64, i64) {
        *lock(&self.periods)
    }

    /// Keeps what a worker drew and did not spend in time, to give back with the next grant.
    fn keep_stale(&self, unspent: u64, periods: (i64, i64)) {
        let mut stale = lock(&self.stale);
        if stale.1 == periods {
            stale.0 += unspent;
        } else {
            // An older period's requests are not given back to a newer one.
            *stale = (unspent, periods);
        }
    }

    /// What workers drew and did not spend, when it was granted in the current periods.
    fn take_stale(&self, params: &Params) -> u64 {
        let (unspent, periods) = std::mem::take(&mut *lock(&self.stale));
        if periods == periods_of(params) {
            unspent
        } else {
            0
        }
    }

    /// Installs a fresh grant (replacing whatever had expired, adding to what is still valid).
    fn install(&self, granted: u64, decision: Decision, params: &Params, now_ms: i64, ttl_ms: i64) {
        *lock(&self.periods) = periods_of(params);
        if self.expires_ms.load(Ordering::Acquire) <= now_ms {
            self.left.store(granted, Ordering::Release);
        } else {
            self.left.fetch_add(granted, Ordering::AcqRel);
        }
        self.decision.store(Some(Arc::new(decision)));
        self.expires_ms
            .store(now_ms.saturating_add(ttl_ms), Ordering::Release);
    }
}

/// A lease's decision with what this data plane still holds counted as remaining.
fn with_held(d: &Decision, held: u64) -> Decision {
    let mut d = d.clone();
    for w in &mut d.windows {
        w.remaining = w.remaining.saturating_add(held).min(w.limit);
    }
    d
}

type LeaseSlot = Arc<Lease>;

/// A worker thread's draw from a node's lease: spent with no lock and no shared write.
struct Draw {
    lease: LeaseSlot,
    left: u64,
    expires_ms: i64,
    /// The periods the drawn requests were granted in; `None` when a grant landed while drawing
    /// (then they are not given back: never to a period they were not taken from).
    periods: Option<(i64, i64)>,
}

impl Draw {
    /// Hands what this draw did not spend to its lease, to be given back to Redis.
    fn give_back(&mut self) {
        if let (unspent @ 1.., Some(periods)) = (std::mem::take(&mut self.left), self.periods) {
            self.lease.keep_stale(unspent, periods);
        }
    }

    /// Draws up to [`DRAW_MAX`] requests (1/8 of what is left) from the lease while it is valid;
    /// returns what the lease has left after, `None` when it has nothing.
    fn refill(&mut self, now_ms: i64) -> Option<u64> {
        let lease = &self.lease;
        let expires_ms = lease.expires_ms.load(Ordering::Acquire);
        if expires_ms <= now_ms {
            return None;
        }
        let periods = lease.periods();
        let mut cur = lease.left.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return None;
            }
            let take = (cur / DRAW_SHARE_DIV).clamp(1, DRAW_MAX);
            match lease.left.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.left = take;
                    self.expires_ms = expires_ms;
                    self.periods = (lease.periods() == periods).then_some(periods);
                    return Some(cur - take);
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Draw {
    fn drop(&mut self) {
        self.give_back();
    }
}

thread_local! {
    /// This thread's draws, by limiter and subject.
    static DRAWS: RefCell<Swept<(u64, Subject), Draw>> = RefCell::new(Swept::default());
}

static NEXT_LIMITER_ID: AtomicU64 = AtomicU64::new(0);

pub struct Limiter {
    /// Tells this limiter's per-thread draws from another's.
    id: u64,
    local: LocalStore,
    leases: Vec<std::sync::Mutex<Swept<Subject, LeaseSlot>>>,
    lease_hasher: RandomState,
    redis: Option<RedisStore>,
    redis_up: AtomicBool,
    settings: LimiterSettings,
    clock: SharedClock,
    fallbacks: AtomicU64,
}

impl Limiter {
    pub fn new(
        redis: Option<RedisStore>,
        settings: LimiterSettings,
        clock: SharedClock,
    ) -> Arc<Self> {
        if redis.is_none() {
            tracing::warn!(
                "no Redis configured: rate limits and quotas are counted in this process only; \
                 run several data planes only with GATEWAY_REDIS_URL set"
            );
        }
        Arc::new(Self {
            id: NEXT_LIMITER_ID.fetch_add(1, Ordering::Relaxed),
            local: LocalStore::default(),
            leases: (0..LEASE_SHARDS)
                .map(|_| std::sync::Mutex::default())
                .collect(),
            lease_hasher: RandomState::default(),
            redis_up: AtomicBool::new(redis.is_some()),
            redis: redis.map(|r| r.answering_within(settings.redis_timeout)),
            settings,
            clock,
            fallbacks: AtomicU64::new(0),
        })
    }

    /// The Redis store, when one is configured.
    pub fn redis_store(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    pub fn redis_configured(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis is currently used (false when not configured).
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// Requests decided in process because Redis was configured but down.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Checks and consumes one request of `subject` under `limits` (strict mode).
    pub async fn check(
        &self,
        subject: Subject,
        limits: &PlanLimits,
    ) -> Result<(Decision, StoreKind), LimiterError> {
        self.check_with(subject, limits, Enforcement::Strict).await
    }

    /// Checks and consumes one request: strict asks Redis every time; fast spends a budget leased
    /// from Redis and asks again only when it runs out (never admitting more than the limit).
    pub async fn check_with(
        &self,
        subject: Subject,
        limits: &PlanLimits,
        enforcement: Enforcement,
    ) -> Result<(Decision, StoreKind), LimiterError> {
        let now_ms = self.clock.now_ms();
        let params = Params::new(limits, now_ms);
        if let Some(redis) = &self.redis {
            if self.redis_up() {
                // The store answers within `redis_timeout` (its dispatcher keeps every request's
                // deadline: one timer per script call, not one per request).
                let result = match enforcement {
                    Enforcement::Strict => redis.check(subject, &params).await,
                    Enforcement::Fast => self.fast(redis, subject, &params, now_ms).await,
                };
                match result {
                    Ok(decision) => return Ok((decision, StoreKind::Redis)),
                    Err(e) => self.mark_down(&e.to_string()),
                }
            }
            if self.settings.fail_closed {
                return Err(LimiterError::Unavailable);
            }
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        Ok((self.local.check(subject, &params), StoreKind::Local))
    }

    fn lease_slot(&self, subject: Subject) -> LeaseSlot {
        #[allow(clippy::cast_possible_truncation)] // only the low bits pick a shard
        let shard =
            (std::hash::BuildHasher::hash_one(&self.lease_hasher, subject) as usize) % LEASE_SHARDS;
        let now = self.clock.now_ms();
        lock(&self.leases[shard])
            .swept(|_, l| l.expires_ms.load(Ordering::Relaxed) > now || Arc::strong_count(l) > 1)
            .entry(subject)
            .or_default()
            .clone()
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Fast mode: spend the subject's lease, or lease a new budget from Redis.
    async fn fast(
        &self,
        redis: &RedisStore,
        subject: Subject,
        params: &Params,
        now_ms: i64,
    ) -> Result<Decision, super::redis::RedisStoreError> {
        if let Some(decision) = self.spend_drawn(redis, subject, params, now_ms) {
            return Ok(decision);
        }
        let lease = self.lease_slot(subject);
        let _one_fetch = lease.refill.lock().await;
        // Another request may have refilled while this one waited.
        if let Some(decision) = lease.try_spend(now_ms) {
            return Ok(decision);
        }
        let ask = Ask {
            want: self.settings.lease_max.max(1),
            share_div: LEASE_SHARE_DIV,
            refund: lease.take_unspent(now_ms, params),
        };
        let (granted, decision) = redis.grant(subject, params, ask).await?;
        if granted == 0 {
            return Ok(decision);
        }
        lease.install(granted - 1, decision.clone(), params, now_ms, self.ttl_ms());
        Ok(with_held(&decision, granted - 1))
    }

    /// Fast mode's common case: spends a request this thread drew from the node's lease, drawing
    /// again when its draw is spent or expired. `None` when the lease has nothing left to draw.
    fn spend_drawn(
        &self,
        redis: &RedisStore,
        subject: Subject,
        params: &Params,
        now_ms: i64,
    ) -> Option<Decision> {
        DRAWS.with_borrow_mut(|draws| {
            let draws = draws.swept(|_, d| d.expires_ms > now_ms);
            let draw = draws.entry((self.id, subject)).or_insert_with(|| Draw {
                lease: self.lease_slot(subject),
                left: 0,
                expires_ms: 0,
                periods: None,
            });
            if draw.left == 0 || draw.expires_ms <= now_ms {
                draw.give_back();
                let lease_left = draw.refill(now_ms)?;
                self.maybe_prefetch(&draw.lease, redis, subject, params, lease_left);
            }
            draw.left -= 1;
            let held = draw.left + draw.lease.left.load(Ordering::Relaxed);
            let snapshot = draw.lease.decision.load();
            Some(with_held(snapshot.as_ref()?, held))
        })
    }

    /// Once a lease runs low, fetches the next one in the background (one fetch at a time).
    fn maybe_prefetch(
        &self,
        lease: &LeaseSlot,
        redis: &RedisStore,
        subject: Subject,
        params: &Params,
        left: u64,
    ) {
        let want = self.settings.lease_max.max(1);
        // At a quarter spent: the next lease has three quarters of this one's time to arrive.
        // What a node holds stays under two leases (the rest of this one plus the next).
        if left > want - want / 4 || lease.prefetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let (lease, redis, params, ttl_ms) = (lease.clone(), redis.clone(), *params, self.ttl_ms());
        tokio::spawn(async move {
            {
                let _one_fetch = lease.refill.lock().await;
                let ask = Ask {
                    want,
                    share_div: LEASE_SHARE_DIV,
                    refund: lease.take_stale(&params),
                };
                let fetched = redis.grant(subject, &params, ask).await;
                if let Ok((granted, decision)) = fetched
                    && granted > 0
                {
                    lease.install(granted, decision, &params, params.now_us / 1_000, ttl_ms);
                }
            }
            lease.prefetching.store(false, Ordering::Release);
        });
    }

    fn mark_down(&self, why: &str) {
        if self.redis_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason = why,
                fail_closed = self.settings.fail_closed,
                "Redis unavailable: limiting in process until it answers again"
            );
        }
    }

    /// Probes a down Redis until it answers, then switches back to it. Runs until `stop` fires.
    pub async fn probe_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(self.settings.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if self.redis_up() {
                continue;
            }
            // A generous timeout for the probe: a slow first connection is still a live Redis.
            let probe = tokio::time::timeout(self.settings.redis_timeout * 10, redis.ping()).await;
            if matches!(probe, Ok(Ok(()))) && !self.redis_up.swap(true, Ordering::Relaxed) {
                tracing::info!("Redis answers again: limits are shared across data planes again");
            }
        }
    }
}
