//! The Redis counter store: one Lua script (EVALSHA) decides atomically.
//! Concurrent requests are batched: a dispatcher task takes whatever is queued (up to
//! [`MAX_BATCH`]) into one script call, with up to [`MAX_IN_FLIGHT`] calls at once. At low load a
//! batch is a single request, so batching adds no wait; under load it turns hundreds of round
//! trips into a few.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::Script;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

pub use crate::redis_pool::{Conn, Endpoint, Pool};

use super::outage::{Delta, LateCell, LateTicket, Ledger};
use super::{Ask, Decision, Params, State, Subject, UsageSource};

/// Most subjects decided by one script call.
pub const MAX_BATCH: usize = 128;
/// Most script calls of one dispatcher under way at once (pipelined on its connection).
pub const MAX_IN_FLIGHT: usize = 2;
const QUEUE: usize = 8_192;
/// Values per subject returned by `limits.lua`.
const RESULT_WIDTH: usize = 6;
/// How long a call whose requests stopped waiting is still awaited, so that its late answer is
/// accounted for (see [`LateCell`]); a call not answered by then is taken as not run.
const LATE_WAIT: Duration = Duration::from_secs(30);

/// Longest a request waits for its answer (queued and in its script call) unless the store is
/// told otherwise ([`RedisStore::answering_within`]).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisStoreError {
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis: {0}")]
    Redis(String),
    /// The connection was found closed (Redis restarted, a peer reset it).
    #[error("redis connection lost: {0}")]
    Dropped(String),
    #[error("the Redis dispatcher has stopped")]
    Stopped,
    #[error("timed out")]
    TimedOut,
}

impl From<redis::RedisError> for RedisStoreError {
    fn from(e: redis::RedisError) -> Self {
        // A call that timed out may still run when the server catches up: it is not "dropped",
        // which would send it again on another connection and count its requests twice.
        if e.is_timeout() {
            Self::TimedOut
        } else if e.is_connection_dropped() || e.is_io_error() {
            Self::Dropped(e.to_string())
        } else {
            Self::Redis(e.to_string())
        }
    }
}

/// A connection pool for `url` (nothing is connected until first use).
///
/// Its connections send without Nagle's delay (`TCP_NODELAY`; redis-rs leaves it off by default):
/// a dispatcher pipelines a second script call behind the first, which Nagle would hold back until
/// the first call's answer arrives.
pub fn pool(url: &str) -> Result<Pool, RedisStoreError> {
    Endpoint::parse(url)
        .map_err(|e| RedisStoreError::Pool(e.to_string()))?
        .pool()
        .map_err(|e| RedisStoreError::Pool(e.to_string()))
}

/// A pool to `endpoint` whose credentials Redis takes ([`check_credentials`]); the error is a
/// message for the operator.
pub async fn checked_pool(endpoint: &Endpoint) -> Result<Pool, String> {
    let p = endpoint
        .pool()
        .map_err(|e| format!("GATEWAY_REDIS_URL: {e}"))?;
    check_credentials(&p).await?;
    Ok(p)
}

/// Whether Redis takes the credentials `pool` connects with, and (TLS) the gateway takes Redis's
/// certificate: `Err` (a message for the operator, naming the setting, with Redis's or rustls's
/// words) when it refuses them — a wrong password or user, none where one is required, a
/// certificate no trusted CA signed. An unreachable Redis is not an error here: the limiter's
/// outage rules cover it, and a start must not wait for it.
pub async fn check_credentials(pool: &Pool) -> Result<(), String> {
    enum Refusal {
        Credentials(String),
        Certificate(String),
    }
    fn refusal(e: &redis::RedisError) -> Option<Refusal> {
        let text = e.to_string();
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
            || text.contains("NOAUTH")
            || text.contains("WRONGPASS")
        {
            Some(Refusal::Credentials(text))
        } else if text.contains("certificate") || text.contains("UnknownIssuer") {
            Some(Refusal::Certificate(text))
        } else {
            None
        }
    }
    let check = async {
        let mut conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => return refusal(&e),
        };
        match redis::cmd("PING").query_async::<()>(&mut conn).await {
            Err(e) => refusal(&e),
            Ok(()) => None,
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), check).await {
        Ok(Some(Refusal::Credentials(why))) => Err(format!(
            "GATEWAY_REDIS_URL: Redis refused the credentials in the URL ({why}); check the user \
             and password (redis://user:password@host:port/)"
        )),
        Ok(Some(Refusal::Certificate(why))) => Err(format!(
            "GATEWAY_REDIS_URL: Redis's TLS certificate is not trusted ({why}); for a private CA \
             set GATEWAY_REDIS_CA to its PEM file"
        )),
        Ok(None) | Err(_) => Ok(()),
    }
}

/// Upper bounds (ms) of the buckets [`CallTimes`] counts script calls in.
pub const CALL_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1_000, 2_500, 5_000];

/// How long script calls took, from sent to answered (answered late included): what tells an
/// operator whether `GATEWAY_REDIS_TIMEOUT_MS` sits above the slowest normal answer.
#[derive(Default)]
pub struct CallTimes {
    /// Calls at or under each bound of [`CALL_BUCKETS_MS`] (not cumulative).
    buckets: [AtomicU64; CALL_BUCKETS_MS.len()],
    over: AtomicU64,
    sum_us: AtomicU64,
}

impl CallTimes {
    fn observe(&self, took: Duration) {
        // `le` buckets: a call of exactly the bound is in it.
        let at = CALL_BUCKETS_MS
            .iter()
            .position(|b| took <= Duration::from_millis(*b));
        match at {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bound of [`CALL_BUCKETS_MS`], then the total and the sum (µs).
    pub fn snapshot(&self) -> ([u64; CALL_BUCKETS_MS.len()], u64, u64) {
        let mut cumulative = [0; CALL_BUCKETS_MS.len()];
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            cumulative[i] = total;
        }
        total += self.over.load(Ordering::Relaxed);
        (cumulative, total, self.sum_us.load(Ordering::Relaxed))
    }
}

/// What a script call asks for one subject.
struct Ask1 {
    key: String,
    subject: Subject,
    params: Params,
    ask: Ask,
    /// The day and month counts the database holds, for a state Redis is missing.
    seed: Option<(u64, u64)>,
    /// On the first of a linked group (a plan's windows with a route's and the tenant's): how many
    /// subjects after this one are the same request (see `limits.lua`); 0 for a subject alone.
    linked: u8,
}

struct Job {
    req: Ask1,
    /// The other subjects of a request counted in several subjects' windows (a route's, the
    /// tenant's): empty (no allocation) for the common request.
    with: Vec<Ask1>,
    /// When the request stops waiting: it is answered [`RedisStoreError::TimedOut`] then.
    deadline: Instant,
    reply: oneshot::Sender<Result<Reply, Failure>>,
}

/// A job's answers: its subject's, and its linked subjects' when it has some.
type Reply = (Answer, Vec<Answer>);

/// A grant Redis decided: how many, the decision, and the subject's state after it (before it,
/// when nothing was granted).
#[derive(Debug, Clone)]
pub struct Grant {
    pub granted: u64,
    pub decision: Decision,
    pub state: State,
}

/// `limits.lua`'s answer for one subject.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // moved once per request, never stored: no box to allocate
enum Answer {
    Granted(Grant),
    /// The subject has day or month windows and Redis has no state for it (and no seed came).
    Missing,
}

/// A request Redis did not decide: why, and — when its call was sent and may still run — the
/// ticket through which the node tells what it decided instead (see [`LateCell`]).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Failure {
    pub error: RedisStoreError,
    pub late: Option<LateTicket>,
}

impl From<RedisStoreError> for Failure {
    fn from(error: RedisStoreError) -> Self {
        Self { error, late: None }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: String,
    jobs: mpsc::Sender<Job>,
    /// Tells this store's per-thread dispatchers from another store's.
    id: u64,
    timeout: Duration,
    /// What is owed to Redis after calls it answered too late (and the limiter's own outage
    /// decisions).
    ledger: Arc<Ledger>,
    /// Where a state Redis is missing is seeded from.
    usage: Option<Arc<dyn UsageSource>>,
    times: Arc<CallTimes>,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Dispatchers running on this thread's runtime, by store id (see
    /// [`RedisStore::attach_current_thread`]).
    static THREAD_JOBS: RefCell<Vec<(u64, mpsc::Sender<Job>)>> = const { RefCell::new(Vec::new()) };
}

impl RedisStore {
    /// The store, with its dispatcher task spawned on the current Tokio runtime.
    pub fn new(pool: Pool, prefix: impl Into<String>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let ledger = Arc::new(Ledger::default());
        let times = Arc::new(CallTimes::default());
        tokio::spawn(dispatch(pool.clone(), rx, ledger.clone(), times.clone()));
        Self {
            pool,
            prefix: prefix.into(),
            jobs,
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            timeout: DEFAULT_TIMEOUT,
            ledger,
            usage: None,
            times,
        }
    }

    /// How long this store's script calls took.
    pub fn call_times(&self) -> &CallTimes {
        &self.times
    }

    /// The store seeding a subject's missing day and month counts from `usage` (the database)
    /// before it decides; without it a missing state starts from zero.
    #[must_use]
    pub fn seeding_from(mut self, usage: Arc<dyn UsageSource>) -> Self {
        self.usage = Some(usage);
        self
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The store with every request answered within `timeout` (an error after it). The deadline
    /// travels with the request: one timer per script call, however many requests it carries.
    #[must_use]
    pub fn answering_within(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives the calling thread (a data-plane worker with its own single-threaded runtime) a
    /// dispatcher of its own, with connections to `url` opened on this runtime: this thread's
    /// requests are then batched, sent and answered without waking another thread.
    pub fn attach_current_thread(&self, endpoint: &Endpoint) -> Result<(), RedisStoreError> {
        let pool = endpoint
            .unbounded_pool()
            .map_err(|e| RedisStoreError::Pool(e.to_string()))?;
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(pool, rx, self.ledger.clone(), self.times.clone()));
        THREAD_JOBS.with(|t| t.borrow_mut().push((self.id, jobs)));
        Ok(())
    }

    /// This thread's dispatcher when it has one, else the shared one.
    fn jobs(&self) -> mpsc::Sender<Job> {
        THREAD_JOBS
            .with(|t| {
                t.borrow()
                    .iter()
                    .find(|(id, _)| *id == self.id)
                    .map(|(_, jobs)| jobs.clone())
            })
            .unwrap_or_else(|| self.jobs.clone())
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks and, when admitted, consumes one request of `subject` in every window, atomically.
    pub async fn check(&self, subject: Subject, p: &Params) -> Result<Grant, Failure> {
        self.grant(subject, p, Ask::ONE).await
    }

    /// Grants up to `want` requests at once (a fast-mode lease), see [`grant`]. A subject whose
    /// day or month state Redis does not have is first seeded with what the database holds.
    pub async fn grant(&self, subject: Subject, p: &Params, ask: Ask) -> Result<Grant, Failure> {
        let mut seed = None;
        loop {
            let req = Ask1 {
                key: subject.redis_key(&self.prefix),
                subject,
                params: *p,
                ask,
                seed,
                linked: 0,
            };
            let (jobs, job, answer) = self.job(req, Vec::new());
            jobs.send(job).await.map_err(|_| RedisStoreError::Stopped)?;
            match answer.await.map_err(|_| RedisStoreError::Stopped)??.0 {
                Answer::Granted(g) => return Ok(g),
                Answer::Missing if seed.is_none() => {
                    seed = Some(self.recorded(subject, p).await);
                }
                Answer::Missing => {
                    return Err(RedisStoreError::Redis("limits.lua ignored a seed".into()).into());
                }
            }
        }
    }

    /// One request (a subject, or a linked pair) as a job for this thread's dispatcher: the
    /// dispatcher, the job, and where its answer comes. The dispatcher answers every job by its
    /// deadline (a call that hangs is answered then and awaited on a task of its own), so no timer
    /// per request here. (Sent and awaited by the caller: one state machine per request, not two.)
    fn job(
        &self,
        req: Ask1,
        with: Vec<Ask1>,
    ) -> (
        mpsc::Sender<Job>,
        Job,
        oneshot::Receiver<Result<Reply, Failure>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            req,
            with,
            deadline: Instant::now() + self.timeout,
            reply,
        };
        (self.jobs(), job, answer)
    }

    /// The day and month counts the database holds for `subject` (a seed for a missing state).
    async fn recorded(&self, subject: Subject, p: &Params) -> (u64, u64) {
        match &self.usage {
            Some(u) => u.admitted(subject, p).await,
            None => (0, 0),
        }
    }

    /// Decides one request counted in several subjects' windows (the plan's with a route's and
    /// the tenant's; at most 3) in one script call: admitted by all or consumed in none (see
    /// [`super::decide_linked`]). Returns the merged decision and each subject's state after it.
    pub async fn check_linked(
        &self,
        asks: &[(Subject, &Params)],
    ) -> Result<(Decision, Vec<State>), Failure> {
        let mut seeds = vec![None; asks.len()];
        let group = u8::try_from(asks.len().saturating_sub(1)).unwrap_or(0);
        loop {
            let subject_ask = |i: usize| {
                let (subject, p) = asks[i];
                Ask1 {
                    key: subject.redis_key(&self.prefix),
                    subject,
                    params: *p,
                    ask: Ask::ONE,
                    seed: seeds[i],
                    linked: if i == 0 { group } else { 0 },
                }
            };
            let (jobs, job, answer) =
                self.job(subject_ask(0), (1..asks.len()).map(subject_ask).collect());
            jobs.send(job).await.map_err(|_| RedisStoreError::Stopped)?;
            let (first, rest) = answer.await.map_err(|_| RedisStoreError::Stopped)??;
            let answers = std::iter::once(first).chain(rest).map(Some);
            let mut grants = Vec::with_capacity(asks.len());
            let mut seeded_now = false;
            for (i, a) in answers.into_iter().enumerate() {
                match a {
                    Some(Answer::Granted(g)) => grants.push(g),
                    Some(Answer::Missing) if seeds[i].is_none() => {
                        let (subject, p) = asks[i];
                        seeds[i] = Some(self.recorded(subject, p).await);
                        seeded_now = true;
                    }
                    _ => {
                        return Err(RedisStoreError::Redis(
                            "limits.lua ignored a seed of a linked group".into(),
                        )
                        .into());
                    }
                }
            }
            if seeded_now {
                continue;
            }
            if grants.len() != asks.len() {
                return Err(RedisStoreError::Redis(
                    "limits.lua answered too few subjects of a linked group".into(),
                )
                .into());
            }
            let decision = super::merge(grants.iter().map(|g| &g.decision));
            return Ok((decision, grants.iter().map(|g| g.state).collect()));
        }
    }

    /// Adds what the ledger owes to the subjects' counters in Redis (see `reconcile.lua`); what
    /// could not be written is handed back.
    pub async fn reconcile(
        &self,
        owed: Vec<(Subject, Delta)>,
    ) -> Result<usize, (RedisStoreError, Vec<(Subject, Delta)>)> {
        let script = Script::new(include_str!("reconcile.lua"));
        let mut conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => return Err((e, owed)),
        };
        let mut done = 0;
        for (i, (subject, d)) in owed.iter().enumerate() {
            let args = pack4([d.day.0, d.day.1, d.month.0, d.month.1]);
            let r: Result<i64, _> = script
                .key(subject.redis_key(&self.prefix))
                .arg(&args[..])
                .invoke_async(&mut conn)
                .await;
            match r {
                Ok(changed) => done += usize::from(changed > 0),
                Err(e) => return Err((e.into(), owed[i..].to_vec())),
            }
        }
        Ok(done)
    }

    /// How many data planes besides `node` were heard from within `window` but not since
    /// `since_ms`.
    pub async fn peers_behind(
        &self,
        node: u64,
        since_ms: i64,
        now_ms: i64,
        window: Duration,
    ) -> Result<usize, RedisStoreError> {
        let mut conn = self.conn().await?;
        let oldest = now_ms - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let behind: Vec<u64> = redis::cmd("ZRANGEBYSCORE")
            .arg(format!("{}:nodes", self.prefix))
            .arg(oldest)
            .arg(format!("({since_ms}"))
            .query_async(&mut conn)
            .await?;
        Ok(behind.into_iter().filter(|n| *n != node).count())
    }

    /// Says this data plane is alive and returns how many are (those heard from within the
    /// last `window`): a sorted set of node ids scored by their last heartbeat.
    pub async fn heartbeat(
        &self,
        node: u64,
        now_ms: i64,
        window: Duration,
    ) -> Result<u64, RedisStoreError> {
        let mut conn = self.conn().await?;
        let key = format!("{}:nodes", self.prefix);
        let oldest = now_ms - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let (_, _, live, _): (i64, i64, u64, i64) = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(now_ms)
            .arg(node)
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(oldest)
            .cmd("ZCARD")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window.as_millis().saturating_mul(10).max(1))
            .query_async(&mut conn)
            .await?;
        Ok(live.max(1))
    }

    /// A pooled connection (probes, heartbeats, reconciliation: not the decisions' path).
    async fn conn(&self) -> Result<Conn, RedisStoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| RedisStoreError::Pool(e.to_string()))
    }

    /// A cheap round trip, used to tell whether Redis is back.
    pub async fn ping(&self) -> Result<(), RedisStoreError> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

/// What a batch did to the dispatcher's connection.
enum Outcome {
    /// The kept connection served it.
    Served,
    /// It needed a connection from the pool (verified there by a PING): keep this one.
    Fresh(Conn),
    /// It failed: the kept connection is given up, and the next batch takes a verified one.
    Failed,
}

/// The decision script (EVALSHA, loaded on first use).
fn limits_script() -> Script {
    Script::new(include_str!("limits.lua"))
}

/// Batches this dispatcher's jobs into script calls on one kept, multiplexed connection (the
/// calls in flight share it). Taking a connection from the pool for every call would cost a
/// PING round trip each time (the pool verifies what it hands out): twice the round trips.
async fn dispatch(
    pool: Pool,
    mut rx: mpsc::Receiver<Job>,
    ledger: Arc<Ledger>,
    times: Arc<CallTimes>,
) {
    // Shared, not cloned, by every call (its text is kilobytes).
    let script = Arc::new(limits_script());
    let mut kept: Option<Conn> = None;
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = rx.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(job) = job else { break };
                let now = Instant::now();
                let mut batch = Vec::new();
                let mut next = Some(job);
                while let Some(job) = next {
                    if job.deadline > now {
                        batch.push(job);
                    } else {
                        // Waited its whole time in the queue (every call in flight is slow); never
                        // sent, so nothing of it can run later.
                        let _ = job.reply.send(Err(RedisStoreError::TimedOut.into()));
                    }
                    next = if batch.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
                }
                let Some(deadline) = batch.iter().map(|j| j.deadline).min() else {
                    continue;
                };
                if !pool.is_cluster() {
                    let conn = kept.clone();
                    in_flight.push(run_batch(&pool, conn, &script, batch, deadline, &ledger, &times));
                    continue;
                }
                // On a cluster one script call's keys must share a hash slot: a call per slot (a
                // tenant's keys share one, by their hash tag).
                for batch in by_slot(batch) {
                    let deadline = batch.iter().map(|j| j.deadline).min().unwrap_or(deadline);
                    let conn = kept.clone();
                    in_flight.push(run_batch(&pool, conn, &script, batch, deadline, &ledger, &times));
                }
            }
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => match outcome {
                Outcome::Served => {}
                Outcome::Fresh(conn) => {
                    kept.get_or_insert(conn);
                }
                Outcome::Failed => kept = None,
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// A cluster's `batch` as one script call per hash slot, in the order of their first job (a
/// linked group's subjects are one tenant's: one slot).
fn by_slot(batch: Vec<Job>) -> Vec<Vec<Job>> {
    let mut calls: Vec<(redis::cluster_routing::Slot, Vec<Job>)> = Vec::new();
    for job in batch {
        let slot = crate::redis_pool::slot(&job.req.key);
        match calls.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, jobs)) => jobs.push(job),
            None => calls.push((slot, vec![job])),
        }
    }
    calls.into_iter().map(|(_, jobs)| jobs).collect()
}

/// One script call for `reqs`: on the kept connection, or — when there is none, or it was found
/// closed — on one from the pool (returned to be kept).
async fn attempt(
    pool: Pool,
    conn: Option<Conn>,
    script: Arc<Script>,
    reqs: Vec<Ask1>,
) -> Result<(Vec<Answer>, Option<Conn>), RedisStoreError> {
    if let Some(mut kept) = conn {
        match call(&mut kept, &script, &reqs).await {
            // Closed while idle (Redis restarted): once more on a verified connection.
            Err(RedisStoreError::Dropped(e)) => {
                tracing::debug!(error = %e, "kept Redis connection was closed; taking another");
            }
            other => return other.map(|answers| (answers, None)),
        }
    }
    let fresh = pool
        .get()
        .await
        .map_err(|e| RedisStoreError::Pool(e.to_string()))?;
    let answers = call(&mut fresh.clone(), &script, &reqs).await?;
    Ok((answers, Some(fresh)))
}

async fn run_batch(
    pool: &Pool,
    conn: Option<Conn>,
    script: &Arc<Script>,
    batch: Vec<Job>,
    deadline: Instant,
    ledger: &Arc<Ledger>,
    times: &Arc<CallTimes>,
) -> Outcome {
    // Each reply with what it asked for (what a late answer is accounted against): one subject,
    // or a linked group's, in the order they are sent.
    let mut reqs: Vec<Ask1> = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for j in batch {
        let first = (j.req.subject, j.req.params);
        reqs.push(j.req);
        let others: Vec<(Subject, Params)> = j.with.iter().map(|w| (w.subject, w.params)).collect();
        reqs.extend(j.with);
        replies.push((j.reply, first, others));
    }
    let sent = Instant::now();
    let (clock, pool, script) = (times.clone(), pool.clone(), script.clone());
    let mut in_call = Box::pin(async move {
        let r = attempt(pool, conn, script, reqs).await;
        clock.observe(sent.elapsed());
        r
    });
    // A call that hangs (a stalled server, a dead peer) answers its requests by the earliest of
    // their deadlines. It may still run: it is awaited a while longer on a task of its own (the
    // dispatcher goes on) and its answer accounted for.
    let result = tokio::select! {
        r = &mut in_call => r,
        () = tokio::time::sleep_until(deadline) => {
            let mut cells: Vec<Arc<LateCell>> = Vec::with_capacity(replies.len());
            for (reply, first, others) in replies {
                let mine: Vec<Arc<LateCell>> = std::iter::once(first)
                    .chain(others)
                    .map(|(subject, params)| LateCell::new(ledger.clone(), subject, params))
                    .collect();
                cells.extend(mine.iter().cloned());
                let _ = reply.send(Err(Failure {
                    error: RedisStoreError::TimedOut,
                    late: Some(LateTicket(mine)),
                }));
            }
            tokio::spawn(async move {
                match tokio::time::timeout(LATE_WAIT, in_call).await {
                    Ok(Ok((answers, _))) => {
                        for (cell, answer) in cells.iter().zip(answers) {
                            cell.answered(Some(match answer {
                                Answer::Granted(g) => g.granted,
                                Answer::Missing => 0,
                            }));
                        }
                    }
                    _ => cells.iter().for_each(|c| c.answered(None)),
                }
            });
            return Outcome::Failed;
        }
    };
    match result {
        Ok((answers, fresh)) => {
            let mut answers = answers.into_iter();
            for (reply, _, linked) in replies {
                let Some(first) = answers.next() else {
                    break;
                };
                let rest: Vec<Answer> = answers.by_ref().take(linked.len()).collect();
                let _ = reply.send(Ok((first, rest)));
            }
            fresh.map_or(Outcome::Served, Outcome::Fresh)
        }
        Err(e) => {
            for (reply, _, _) in replies {
                let _ = reply.send(Err(e.clone().into()));
            }
            Outcome::Failed
        }
    }
}

fn int(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// Values per subject sent to `limits.lua`.
const ARG_WIDTH: usize = 18;

/// Little-endian doubles, as `struct.unpack('<d…')` in `limits.lua` reads them. Every value is an
/// integer below 2^53 (µs timestamps, counts, limits), so the conversion is exact.
#[allow(clippy::cast_precision_loss)]
fn pack(values: [i64; ARG_WIDTH]) -> [u8; ARG_WIDTH * 8] {
    let mut out = [0; ARG_WIDTH * 8];
    for (chunk, v) in out.chunks_exact_mut(8).zip(values) {
        chunk.copy_from_slice(&(v as f64).to_le_bytes());
    }
    out
}

/// The four doubles of `reconcile.lua`'s arguments.
#[allow(clippy::cast_precision_loss)]
fn pack4(values: [i64; 4]) -> [u8; 32] {
    let mut out = [0; 32];
    for (chunk, v) in out.chunks_exact_mut(8).zip(values) {
        chunk.copy_from_slice(&(v as f64).to_le_bytes());
    }
    out
}

/// The doubles of `limits.lua`'s answer back to integers.
#[allow(clippy::cast_possible_truncation)]
fn unpack(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64)
        .collect()
}

#[allow(clippy::too_many_lines)] // one command built, sent and read back: clearer in one piece
async fn call(
    conn: &mut Conn,
    script: &Script,
    batch: &[Ask1],
) -> Result<Vec<Answer>, RedisStoreError> {
    // Whether each job's subject is asked again later in the batch (limits.lua then carries its
    // state instead of writing it in between).
    let mut seen: foldhash::HashSet<&str> = foldhash::HashSetExt::with_capacity(batch.len());
    let mut again: Vec<bool> = batch
        .iter()
        .rev()
        .map(|job| !seen.insert(job.key.as_str()))
        .collect();
    again.reverse();
    // EVALSHA sha numkeys key… arg…, written straight into one command buffer (redis-rs's
    // ScriptInvocation would copy every key and argument twice more).
    let key_bytes: usize = batch.iter().map(|j| j.key.len()).sum();
    let mut cmd = redis::Cmd::with_capacity(
        3 + 2 * batch.len(),
        64 + key_bytes + batch.len() * ARG_WIDTH * 8,
    );
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(batch.len());
    for job in batch {
        cmd.arg(job.key.as_str());
    }
    for (job, again) in batch.iter().zip(again) {
        let p = &job.params;
        let (dl, day) = p.day.map_or((0, None), |(l, per)| (l, Some(per)));
        let (ml, month) = p.month.map_or((0, None), |(l, per)| (l, Some(per)));
        let args = pack([
            p.now_us,
            p.interval_us,
            int(p.burst),
            int(dl),
            day.map_or(0, |d| d.id),
            day.map_or(0, |d| d.end_us),
            int(ml),
            month.map_or(0, |m| m.id),
            month.map_or(0, |m| m.end_us),
            int(job.ask.want),
            int(job.ask.share_div),
            int(job.ask.refund),
            i64::from(again),
            i64::from(job.seed.is_some()),
            int(job.seed.map_or(0, |s| s.0)),
            int(job.seed.map_or(0, |s| s.1)),
            int(p.units()),
            i64::from(job.linked),
        ]);
        cmd.arg(&args[..]);
    }
    let packed: Vec<u8> = match cmd.query_async(conn).await {
        // Not in this server's script cache (a restart, SCRIPT FLUSH): load it and ask again.
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await?
        }
        other => other?,
    };
    if packed.len() != batch.len() * RESULT_WIDTH * 8 {
        return Err(RedisStoreError::Redis(format!(
            "limits.lua answered {} bytes for {} subjects",
            packed.len(),
            batch.len()
        )));
    }
    let flat = unpack(&packed);
    let row = |r: &[i64]| {
        let before = State {
            tat_us: r[1],
            day_id: r[2],
            day_count: u64::try_from(r[3]).unwrap_or(0),
            month_id: r[4],
            month_count: u64::try_from(r[5]).unwrap_or(0),
        };
        (r[0], before)
    };
    let mut rows = flat.chunks_exact(RESULT_WIDTH).map(row);
    let mut answers = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        // One subject, or a linked group decided as one request.
        let n = if i + usize::from(batch[i].linked) < batch.len() {
            1 + usize::from(batch[i].linked)
        } else {
            1
        };
        let jobs = &batch[i..i + n];
        i += n;
        if let [job] = jobs {
            let Some((g, before)) = rows.next() else {
                break;
            };
            // One subject: what grant() decides from the same state, to check Redis against.
            let Ok(by_redis) = u64::try_from(g) else {
                answers.push(Answer::Missing);
                continue;
            };
            let (mine, decision, after) = super::grant(&job.params, &before, job.ask);
            answers.push(if mine == by_redis {
                Answer::Granted(Grant {
                    granted: mine,
                    decision,
                    state: after.unwrap_or(before),
                })
            } else {
                let m = super::measure(&job.params, &before, job.ask.refund);
                answer(job, &before, &m, mine, by_redis)
            });
            continue;
        }
        let group: arrayvec::ArrayVec<((i64, State), super::Measure), 3> = jobs
            .iter()
            .zip(rows.by_ref())
            .map(|(job, (g, before))| {
                let m = super::measure(&job.params, &before, job.ask.refund);
                ((g, before), m)
            })
            .collect();
        if group.iter().any(|((g, _), _)| *g < 0) {
            // Nothing decided: the missing are seeded and the group asked again.
            for (job, ((g, before), m)) in jobs.iter().zip(&group) {
                answers.push(if *g < 0 {
                    Answer::Missing
                } else {
                    answer(job, before, m, 0, 0)
                });
            }
            continue;
        }
        // A linked group: what decide_linked() decides from the same states.
        let avail = group.iter().map(|(_, m)| m.avail).min().unwrap_or(0);
        let ask = jobs[0].ask;
        let cap = avail
            .checked_div(ask.share_div)
            .map_or(u64::MAX, |share| share.max(1));
        let mine = ask.want.min(avail).min(cap);
        for (job, ((g, before), m)) in jobs.iter().zip(&group) {
            answers.push(answer(job, before, m, mine, u64::try_from(*g).unwrap_or(0)));
        }
    }
    Ok(answers)
}

/// A subject's answer: the decision for `by_redis` requests granted from `before`, which is what
/// `grant()` decided (`mine`) unless Redis and it disagree (then Redis is trusted, and it is said).
fn answer(job: &Ask1, before: &State, m: &super::Measure, mine: u64, by_redis: u64) -> Answer {
    if mine != by_redis {
        tracing::error!(
            ?before,
            mine,
            by_redis,
            "limits.lua and grant() disagree; trusting Redis"
        );
    }
    let (decision, after) = super::settle(&job.params, m, by_redis);
    Answer::Granted(Grant {
        granted: by_redis,
        decision,
        state: after.unwrap_or(*before),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanLimits;
    use crate::testing::{redis_url, unique_name};

    const SUBJECT: Subject = Subject::Login(1);

    fn job(key: &str, params: Params) -> Ask1 {
        Ask1 {
            key: key.to_owned(),
            subject: SUBJECT,
            params,
            ask: Ask::ONE,
            // A fresh subject: nothing recorded.
            seed: Some((0, 0)),
            linked: 0,
        }
    }

    fn granted(answers: Vec<Answer>) -> Vec<u64> {
        answers
            .into_iter()
            .map(|a| match a {
                Answer::Granted(g) => g.granted,
                Answer::Missing => panic!("missing"),
            })
            .collect()
    }

    /// A call that timed out in redis-rs is not taken for a closed connection: a dropped one is
    /// retried on another connection, which would run a call the server may still run twice.
    #[test]
    fn a_timed_out_call_is_not_retried_as_dropped() {
        let timed_out = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(
            RedisStoreError::from(timed_out),
            RedisStoreError::TimedOut
        ));
        let reset =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            RedisStoreError::from(reset),
            RedisStoreError::Dropped(_)
        ));
    }

    /// A server that does not have the script (restarted, flushed) is sent it, and the call that
    /// found it missing is answered, counted once. (Each call here uses a copy of the script no
    /// server has seen, rather than flushing a Redis other tests are using.)
    #[tokio::test]
    async fn a_server_without_the_script_is_sent_it_and_answers() {
        let Some(url) = redis_url() else { return };
        let pool = pool(&url).unwrap();
        let name = unique_name("gwtest");
        let key = format!("{name}:s");
        // Burst 2: the third ask is refused.
        let plan = PlanLimits::new(1, Some(2), None, None).unwrap();
        let p = Params::new(&plan, 1_795_000_000_000);
        let mut conn = pool.get().await.unwrap();
        let mut granted = Vec::new();
        for (i, batch) in [vec![job(&key, p)], vec![job(&key, p), job(&key, p)]]
            .into_iter()
            .enumerate()
        {
            let unseen = Script::new(&format!("{}\n-- {name} {i}", include_str!("limits.lua")));
            let answers = call(&mut conn, &unseen, &batch).await.unwrap();
            granted.extend(super::tests::granted(answers));
        }
        assert_eq!(granted, [1, 1, 0]);
    }

    /// One script call asking for two subjects in turn: a subject asked again is carried from ask
    /// to ask within the call, and what the call leaves is stored (and set to expire) for the next.
    #[tokio::test]
    async fn a_call_asking_for_one_subject_many_times_counts_every_ask() {
        let Some(url) = redis_url() else { return };
        let pool = pool(&url).unwrap();
        let prefix = unique_name("gwtest");
        let (a, b) = (format!("{prefix}:a"), format!("{prefix}:b"));
        // Burst 3, one a minute: the fourth ask of a subject is refused.
        let plan = PlanLimits::new(1, Some(3), Some(100), None).unwrap();
        let p = Params::new(&plan, 1_795_000_000_000);
        let script = limits_script();
        let order = [&a, &b, &a, &a, &b, &a];
        let batch: Vec<Ask1> = order.iter().map(|k| job(k, p)).collect();
        let mut conn = pool.get().await.unwrap();
        let first = granted(call(&mut conn, &script, &batch).await.unwrap());
        assert_eq!(first, [1, 1, 1, 1, 1, 0]);

        let again = granted(
            call(&mut conn, &script, &[job(&a, p), job(&b, p)])
                .await
                .unwrap(),
        );
        assert_eq!((again[0], again[1]), (0, 1), "a has spent 3, b 2 of 3");
        for key in [&a, &b] {
            let ttl_ms: i64 = ::redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(ttl_ms > 0, "{key} lives until its windows end: {ttl_ms}");
        }
    }
}
