//! Chooses the store per request: Redis while it answers in time; while it is judged down (several
//! answers in a row too slow, or a connection error — one slow answer is no outage), bounded local
//! decisions (see [`super::outage`]) or 503 when configured fail-closed; back to Redis by itself,
//! once what was admitted meanwhile is added to its counters. Without Redis, the in-process store,
//! its day and month counts started from the usage the database holds.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use foldhash::fast::RandomState;

use arc_swap::ArcSwapOption;

use super::local::LocalStore;
use super::lock;
use super::outage::{Known, LateTicket, Outage};
use super::redis::{Failure, RedisStore, RedisStoreError};
use super::swept::Swept;

use super::{Ask, Decision, Level, Params, State, Subject, UsageSource, as_i64};
use crate::calendar::Calendar;
use crate::clock::SharedClock;
use crate::plan::{Enforcement, PlanLimits};

pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Answers too slow in a row before Redis is judged down (a connection error is at once).
pub const DOWN_AFTER_TIMEOUTS: u32 = 3;
/// How often a data plane says in Redis that it is alive (and reads how many are).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A data plane not heard from for this long is not counted among the live ones.
pub const HEARTBEAT_WINDOW: Duration = Duration::from_secs(5);
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

/// What one request is counted in: a subject's windows, and a route's windows and the tenant's
/// ceiling linked to them (boxed: a request on no limited route of a tenant with no ceiling carries
/// one subject's worth through every await).
#[derive(Clone)]
struct Asked {
    subject: Subject,
    params: Params,
    linked: Option<Box<Linked>>,
}

type Linked = arrayvec::ArrayVec<(Subject, Params), 2>;

impl Asked {
    fn one(subject: Subject, params: Params) -> Self {
        Self {
            subject,
            params,
            linked: None,
        }
    }

    /// Every subject the request is counted in, the plan's first.
    fn all(&self) -> arrayvec::ArrayVec<(Subject, &Params), 3> {
        std::iter::once((self.subject, &self.params))
            .chain(
                self.linked
                    .iter()
                    .flat_map(|l| l.iter().map(|(s, p)| (*s, p))),
            )
            .collect()
    }
}

/// Windows a request is counted in beside its plan's: a route's own (its subject and limits) and
/// the tenant's ceiling; and where the tenant's days and months begin and end (every window's).
#[derive(Clone, Copy, Default)]
pub struct LinkedLimits<'a> {
    pub route: Option<(Subject, &'a PlanLimits)>,
    pub tenant: Option<(Subject, &'a PlanLimits)>,
    pub calendar: Calendar,
}

/// Records that this node decided `asked` itself (`admitted` requests): through the late call's
/// ticket when one may still run, else straight in the ledger, for every subject it counts in.
fn owe(redis: &RedisStore, asked: &Asked, late: Option<LateTicket>, admitted: u64) {
    // The call may still run: its answer and this decision settle in the ledger.
    if let Some(ticket) = late {
        ticket.decided(admitted);
    } else {
        let n = as_i64(admitted);
        for (subject, p) in asked.all() {
            redis.ledger().add(subject, p, n);
        }
    }
}

/// Wall time, not the limiter's clock: every data plane's heartbeats share one scale.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
        w.remaining = w.remaining.saturating_add(held);
        // A quota never has more left than its limit; the minute bucket's size is its burst,
        // which may be above the plan's rate.
        if w.window != super::Window::Minute {
            w.remaining = w.remaining.min(w.limit);
        }
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
    /// Where day and month counts start from when nothing else has them (the database).
    usage: Option<Arc<dyn UsageSource>>,
    /// Each subject's Redis state as last decided here, where an outage's shares start from.
    known: Arc<Known>,
    /// Local decisions while Redis is judged down.
    outage: Outage,
    /// Redis answers too slow in a row.
    timeouts_in_a_row: AtomicU32,
    /// Live data planes, from the heartbeat (1 until heard).
    nodes: AtomicU64,
    node_id: u64,
    /// This node owes Redis nothing of an outage (what its heartbeat says to the others).
    settled: AtomicBool,
    /// Back on Redis after an outage, but some live peer has not settled yet: decisions need
    /// Redis and this node's outage share both (the peer's own admissions are not in Redis's
    /// counts yet, and the share is what keeps the two apart).
    catching_up: AtomicBool,
    /// Where quota alerts go (the data plane records them for webhooks).
    alerts: std::sync::OnceLock<AlertSink>,
}

/// A day or month window of `subject` a grant took past 80 % or used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaAlert {
    pub subject: Subject,
    pub alert: super::Alert,
}

/// What a limiter hands each quota alert to (it must not wait: it runs where the decision was made).
pub type AlertSink = Arc<dyn Fn(QuotaAlert) + Send + Sync>;

/// Sends the alerts of a decision made for `asked` to `sink`, each with the subject whose window
/// it is (taken out of the decision either way: they are reported once).
fn report_alerts(sink: Option<&AlertSink>, asked: &Asked, d: &mut Decision) {
    let alerts = d.take_alerts();
    let Some(sink) = sink else { return };
    for alert in alerts {
        let subject = asked
            .all()
            .iter()
            .find(|(_, p)| p.level == alert.level)
            .map_or(asked.subject, |(s, _)| *s);
        sink(QuotaAlert { subject, alert });
    }
}

impl Limiter {
    pub fn new(
        redis: Option<RedisStore>,
        settings: LimiterSettings,
        clock: SharedClock,
        usage: Option<Arc<dyn UsageSource>>,
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
            redis: redis.map(|r| {
                let r = r.answering_within(settings.redis_timeout);
                match &usage {
                    Some(u) => r.seeding_from(u.clone()),
                    None => r,
                }
            }),
            settings,
            clock,
            fallbacks: AtomicU64::new(0),
            usage,
            known: Arc::default(),
            outage: Outage::default(),
            timeouts_in_a_row: AtomicU32::new(0),
            nodes: AtomicU64::new(1),
            node_id: rand::random(),
            settled: AtomicBool::new(true),
            catching_up: AtomicBool::new(false),
            alerts: std::sync::OnceLock::new(),
        })
    }

    /// Sends every quota alert this limiter's decisions raise to `sink` (once; later calls are
    /// ignored).
    pub fn alerts_to(&self, sink: AlertSink) {
        let _ = self.alerts.set(sink);
    }

    /// Back on Redis after an outage, still capped by this node's share until every live data
    /// plane has settled its outage counts.
    pub fn settling(&self) -> bool {
        self.catching_up.load(Ordering::Acquire)
    }

    /// Live data planes as the last heartbeat counted them.
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed)
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
        let params = Params::new(limits, self.clock.now_ms());
        self.decide(
            &Asked {
                subject,
                params,
                linked: None,
            },
            enforcement,
        )
        .await
    }

    /// Checks and consumes one request of `cost` units (a route's cost) under the plan's `limits`
    /// and, when there are, a route's own windows and the tenant's ceiling (`extra`: their
    /// subjects and limits) — in one atomic decision: admitted by every window, or consumed in
    /// none. A request that is counted in more than its plan's windows or costs more than one
    /// unit is decided with Redis every time (strict), whatever the plan's enforcement: a lease of
    /// single requests of one subject cannot hold it.
    pub async fn check_request(
        &self,
        subject: Subject,
        limits: &PlanLimits,
        enforcement: Enforcement,
        cost: u64,
        extra: LinkedLimits<'_>,
    ) -> Result<(Decision, StoreKind), LimiterError> {
        let now_ms = self.clock.now_ms();
        let linked: Linked = [
            extra.route.map(|r| (r, Level::Route)),
            extra.tenant.map(|t| (t, Level::Tenant)),
        ]
        .into_iter()
        .flatten()
        .map(|((s, l), level)| {
            let p = Params::in_calendar(l, now_ms, &extra.calendar);
            (s, p.costing(cost).of(level))
        })
        .collect();
        let asked = Asked {
            subject,
            params: Params::in_calendar(limits, now_ms, &extra.calendar).costing(cost),
            linked: (!linked.is_empty()).then(|| Box::new(linked)),
        };
        let enforcement = if asked.linked.is_some() || cost > 1 {
            Enforcement::Strict
        } else {
            enforcement
        };
        self.decide(&asked, enforcement).await
    }

    /// Decides `asked` and reports the quota alerts of the decision (see [`Self::alerts_to`]).
    async fn decide(
        &self,
        asked: &Asked,
        enforcement: Enforcement,
    ) -> Result<(Decision, StoreKind), LimiterError> {
        let mut out = self.decide_in_store(asked, enforcement).await;
        if let Ok((d, _)) = &mut out {
            report_alerts(self.alerts.get(), asked, d);
        }
        out
    }

    async fn decide_in_store(
        &self,
        asked: &Asked,
        enforcement: Enforcement,
    ) -> Result<(Decision, StoreKind), LimiterError> {
        let (subject, params) = (asked.subject, asked.params);
        let Some(redis) = &self.redis else {
            return Ok((self.local_check(asked).await, StoreKind::Local));
        };
        let mut late = None;
        if self.redis_up() {
            // Just back from an outage: this node's share still caps it (see `catching_up`).
            let share = if self.catching_up.load(Ordering::Acquire) {
                let d = self.outage_decide(asked).await;
                if !d.allowed {
                    return Ok((d, StoreKind::Local));
                }
                Some(d)
            } else {
                None
            };
            // The store answers within `redis_timeout` (its dispatcher keeps every request's
            // deadline: one timer per script call, not one per request).
            let result = match (enforcement, share.is_some(), asked.linked.is_some()) {
                (_, _, true) => {
                    let all = asked.all();
                    redis.check_linked(&all).await.map(|(decision, states)| {
                        for ((s, _), state) in all.iter().zip(states) {
                            self.known.remember(*s, state, params.now_us);
                        }
                        decision
                    })
                }
                (Enforcement::Fast, false, false) => {
                    self.fast(redis, subject, &params, params.now_us / 1_000)
                        .await
                }
                _ => redis.check(subject, &params).await.map(|g| {
                    self.known.remember(subject, g.state, params.now_us);
                    g.decision
                }),
            };
            match result {
                Ok(decision) => {
                    self.answered();
                    return Ok((decision, StoreKind::Redis));
                }
                Err(f) => {
                    self.failed(&f.error);
                    if let Some(d) = share {
                        // Decided by the share already: admitted here, owed to Redis.
                        self.fallbacks.fetch_add(1, Ordering::Relaxed);
                        owe(redis, asked, f.late, 1);
                        return Ok((d, StoreKind::Local));
                    }
                    late = f.late;
                }
            }
        }
        if self.settings.fail_closed {
            // `late`, dropped, tells a late answer that nothing was admitted here.
            return Err(LimiterError::Unavailable);
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        let decision = self.outage_decide(asked).await;
        owe(redis, asked, late, u64::from(decision.allowed));
        Ok((decision, StoreKind::Local))
    }

    /// Without Redis: the in-process store, a subject's day and month counts first started from
    /// what the database holds (so a restart grants nothing).
    async fn local_check(&self, asked: &Asked) -> Decision {
        if asked.linked.is_none() {
            return self.local_single(asked.subject, &asked.params).await;
        }
        let asks = asked.all();
        let linked = |needs_seed| match asks.as_slice() {
            [a, b] => self.local.check_linked([*a, *b], needs_seed),
            [a, b, c] => self.local.check_linked([*a, *b, *c], needs_seed),
            _ => Err(0),
        };
        // Each subject missing here is seeded once; then it is decided.
        for _ in 0..asks.len() {
            match linked(self.usage.is_some()) {
                Ok(d) => return d,
                Err(i) => {
                    let (s, p) = asks[i];
                    let base = self.recorded_state(s, p).await;
                    self.local.seed(s, p, base);
                }
            }
        }
        linked(false).unwrap_or_else(|_| super::decide(&asked.params, &State::default()).0)
    }

    async fn local_single(&self, subject: Subject, params: &Params) -> Decision {
        if self.usage.is_none() {
            return self.local.check(subject, params);
        }
        if let Some(d) = self.local.check_seeded(subject, params) {
            return d;
        }
        let base = self.recorded_state(subject, params).await;
        self.local.seed(subject, params, base);
        self.local.check(subject, params)
    }

    /// A decision while Redis is judged down: this node's share of what each subject had left,
    /// as Redis last said here, or as the database records it.
    async fn outage_decide(&self, asked: &Asked) -> Decision {
        let nodes = self.nodes();
        let asks = asked.all();
        let mut bases: arrayvec::ArrayVec<State, 3> = arrayvec::ArrayVec::new();
        for (s, p) in &asks {
            bases.push(self.outage_base(*s, p).await);
        }
        let o = &self.outage;
        match (asks.as_slice(), bases.as_slice()) {
            ([(s, p), (s2, p2)], [b, b2]) => o.decide_linked([(*s, p, b), (*s2, p2, b2)], nodes),
            ([(s, p), (s2, p2), (s3, p3)], [b, b2, b3]) => {
                o.decide_linked([(*s, p, b), (*s2, p2, b2), (*s3, p3, b3)], nodes)
            }
            _ => o.decide(asked.subject, &asked.params, &bases[0], nodes),
        }
    }

    async fn outage_base(&self, subject: Subject, params: &Params) -> State {
        if self.outage.has(subject) {
            State::default()
        } else if let Some(known) = self.known.get(subject) {
            known
        } else {
            self.recorded_state(subject, params).await
        }
    }

    /// A subject's day and month counts as the usage in the database records them (a full
    /// bucket: the minute window is not recorded).
    async fn recorded_state(&self, subject: Subject, params: &Params) -> State {
        let (day_count, month_count) = match &self.usage {
            Some(u) if params.day.is_some() || params.month.is_some() => {
                u.admitted(subject, params).await
            }
            _ => (0, 0),
        };
        State {
            tat_us: 0,
            day_id: params.day.map_or(0, |(_, per)| per.id),
            day_count,
            month_id: params.month.map_or(0, |(_, per)| per.id),
            month_count,
        }
    }

    /// A Redis answer in time: the run of slow ones is over.
    fn answered(&self) {
        if self.timeouts_in_a_row.load(Ordering::Relaxed) != 0 {
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// A Redis call failed: a connection error judges Redis down at once, slow answers after
    /// [`DOWN_AFTER_TIMEOUTS`] in a row.
    fn failed(&self, e: &RedisStoreError) {
        let down = match e {
            RedisStoreError::TimedOut => {
                self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= DOWN_AFTER_TIMEOUTS
            }
            _ => true,
        };
        if down {
            self.mark_down(&e.to_string());
        }
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
    ) -> Result<Decision, Failure> {
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
        let g = redis.grant(subject, params, ask).await?;
        self.known.remember(subject, g.state, params.now_us);
        let (granted, mut decision) = (g.granted, g.decision);
        report_alerts(
            self.alerts.get(),
            &Asked::one(subject, *params),
            &mut decision,
        );
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
        let known = self.known.clone();
        let sink = self.alerts.get().cloned();
        tokio::spawn(async move {
            {
                let _one_fetch = lease.refill.lock().await;
                let ask = Ask {
                    want,
                    share_div: LEASE_SHARE_DIV,
                    refund: lease.take_stale(&params),
                };
                // A failure's late ticket, dropped, says nothing of it was used here.
                if let Ok(mut g) = redis.grant(subject, &params, ask).await {
                    known.remember(subject, g.state, params.now_us);
                    report_alerts(sink.as_ref(), &Asked::one(subject, params), &mut g.decision);
                    if g.granted > 0 {
                        lease.install(
                            g.granted,
                            g.decision,
                            &params,
                            params.now_us / 1_000,
                            ttl_ms,
                        );
                    }
                }
            }
            lease.prefetching.store(false, Ordering::Release);
        });
    }

    fn mark_down(&self, why: &str) {
        self.settled.store(false, Ordering::Release);
        self.catching_up.store(false, Ordering::Release);
        if self.redis_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                reason = why,
                fail_closed = self.settings.fail_closed,
                "Redis unavailable: limiting in process until it answers again"
            );
        }
    }

    /// Probes a down Redis until it answers, then adds what was admitted meanwhile to its
    /// counters and switches back to it — capped by this node's outage share until every live
    /// peer has settled too; while Redis is up, settles what calls answered too late left owing.
    /// Runs until `stop` fires.
    pub async fn probe_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(self.settings.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recovered_at = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let ledger = redis.ledger();
            if self.redis_up() {
                if !ledger.is_empty() && ledger.in_doubt() == 0 {
                    self.reconcile(&redis).await;
                }
                if self.catching_up.load(Ordering::Acquire) {
                    // Every live peer has beaten since this node came back: each has added
                    // its outage admissions to Redis (it beats only once it owes nothing).
                    let behind = redis
                        .peers_behind(self.node_id, recovered_at, wall_ms(), HEARTBEAT_WINDOW)
                        .await;
                    if matches!(behind, Ok(0)) {
                        self.catching_up.store(false, Ordering::Release);
                        self.outage.clear();
                        tracing::info!("every data plane has settled its outage counts");
                    }
                }
                continue;
            }
            // A generous timeout for the probe: a slow first connection is still a live Redis.
            let probe = tokio::time::timeout(self.settings.redis_timeout * 10, redis.ping()).await;
            // Calls answered late must be settled first: their outcome is part of what is owed.
            if !matches!(probe, Ok(Ok(()))) || ledger.in_doubt() > 0 {
                continue;
            }
            if !self.reconcile(&redis).await {
                continue;
            }
            recovered_at = wall_ms();
            self.settled.store(true, Ordering::Release);
            self.beat(&redis).await;
            self.catching_up.store(true, Ordering::Release);
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
            if !self.redis_up.swap(true, Ordering::Relaxed) {
                tracing::info!("Redis answers again: limits are shared across data planes again");
            }
            // What was decided locally while switching back.
            self.reconcile(&redis).await;
        }
    }

    /// Adds what the ledger owes to Redis's counters; false when Redis did not take it (it is
    /// kept for the next try).
    async fn reconcile(&self, redis: &RedisStore) -> bool {
        let owed = redis.ledger().take();
        if owed.is_empty() {
            return true;
        }
        let subjects = owed.len();
        match redis.reconcile(owed).await {
            Ok(changed) => {
                tracing::info!(subjects, changed, "outage counts added to Redis");
                true
            }
            Err((e, back)) => {
                tracing::warn!(error = %e, "could not add outage counts to Redis yet");
                redis.ledger().restore(back);
                false
            }
        }
    }

    /// Keeps this data plane counted among the live ones in Redis, and learns how many there
    /// are (what an outage's shares divide by). Runs until `stop` fires.
    pub async fn heartbeat_until(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            // A beat says "alive and owing nothing": none while an outage is unsettled.
            if self.settled.load(Ordering::Acquire) {
                self.beat(&redis).await;
            }
        }
    }

    async fn beat(&self, redis: &RedisStore) {
        let beat = redis.heartbeat(self.node_id, wall_ms(), HEARTBEAT_WINDOW);
        if let Ok(Ok(n)) = tokio::time::timeout(HEARTBEAT_INTERVAL, beat).await {
            self.nodes.store(n, Ordering::Relaxed);
        }
    }
}
