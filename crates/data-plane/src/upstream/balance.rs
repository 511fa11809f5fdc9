//! Which target serves a request, and what its answer says about the target: smooth weighted
//! round robin (nginx's) over the API's targets that are up — not taken out by the active health
//! check, circuit not open — and a circuit breaker per target fed by every exchange's outcome.
//!
//! The live state (round robin, circuits, health verdicts, in-flight counts) is per data-plane
//! process and outlives snapshots: [`Upstreams::refresh`] carries a target's state over to the
//! next snapshot while its URL and reset generation stay the same (a manual reset moves the
//! generation: the target starts again closed and healthy).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use domain::resilience::{CircuitBreaker, HealthCheck};
use domain::snapshot::{ApiEntry, Snapshot, TargetEntry};

use crate::lock;

/// The clock's time in milliseconds, read at most once and only when a decision needs it: a
/// closed circuit on a healthy target decides without it.
pub struct Now<'a> {
    read: &'a dyn Fn() -> i64,
    at: std::cell::Cell<Option<i64>>,
}

impl<'a> Now<'a> {
    pub fn of(read: &'a dyn Fn() -> i64) -> Self {
        Self {
            read,
            at: std::cell::Cell::new(None),
        }
    }

    pub fn get(&self) -> i64 {
        if let Some(t) = self.at.get() {
            return t;
        }
        let t = (self.read)();
        self.at.set(Some(t));
        t
    }
}

/// A circuit's state, as `gateway_circuit_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl CircuitState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A target's circuit. Closed is read and kept without the lock (one atomic load per request);
/// opening, half-opening and closing again take it.
#[derive(Default)]
struct Circuit {
    state: AtomicU8,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    inner: Mutex<CircuitInner>,
}

#[derive(Default)]
struct CircuitInner {
    /// When an open circuit lets its first probe through (clock milliseconds).
    open_until_ms: i64,
    /// Probes let through since it half-opened, and how many of them succeeded.
    probes: u32,
    successes: u32,
}

/// What a pick holds of its target's circuit: a request of the closed circuit, or a probe of
/// the half-open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permit {
    Normal,
    Probe,
}

impl Circuit {
    fn state(&self) -> CircuitState {
        CircuitState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set(&self, s: CircuitState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Whether a request would be let through at `now` (without taking a permit).
    fn admits(&self, cfg: &CircuitBreaker, now: &Now<'_>) -> bool {
        match self.state() {
            CircuitState::Closed => true,
            CircuitState::Open => now.get() >= lock(&self.inner).open_until_ms,
            CircuitState::HalfOpen => lock(&self.inner).probes < cfg.half_open_max_calls,
        }
    }

    fn acquire(&self, cfg: &CircuitBreaker, now: &Now<'_>) -> Option<Permit> {
        if !cfg.enabled || self.state() == CircuitState::Closed {
            return Some(Permit::Normal);
        }
        let mut inner = lock(&self.inner);
        match self.state() {
            CircuitState::Closed => Some(Permit::Normal),
            CircuitState::Open if now.get() >= inner.open_until_ms => {
                inner.probes = 1;
                inner.successes = 0;
                self.set(CircuitState::HalfOpen);
                Some(Permit::Probe)
            }
            CircuitState::HalfOpen if inner.probes < cfg.half_open_max_calls => {
                inner.probes += 1;
                Some(Permit::Probe)
            }
            CircuitState::Open | CircuitState::HalfOpen => None,
        }
    }

    /// Records an exchange's outcome; true when it changed the circuit's state.
    fn record(&self, cfg: &CircuitBreaker, permit: Permit, ok: bool, now: &Now<'_>) -> bool {
        if !cfg.enabled {
            return false;
        }
        match (permit, ok) {
            (Permit::Normal, true) => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                false
            }
            (Permit::Normal, false) => {
                let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures < cfg.failure_threshold || self.state() != CircuitState::Closed {
                    return false;
                }
                let mut inner = lock(&self.inner);
                if self.state() != CircuitState::Closed {
                    return false;
                }
                self.open(&mut inner, cfg, now);
                true
            }
            (Permit::Probe, ok) => {
                let mut inner = lock(&self.inner);
                if self.state() != CircuitState::HalfOpen {
                    return false;
                }
                if !ok {
                    self.open(&mut inner, cfg, now);
                    return true;
                }
                inner.successes += 1;
                if inner.successes >= cfg.half_open_max_calls {
                    self.failures.store(0, Ordering::Relaxed);
                    self.set(CircuitState::Closed);
                    return true;
                }
                false
            }
        }
    }

    fn open(&self, inner: &mut CircuitInner, cfg: &CircuitBreaker, now: &Now<'_>) {
        inner.open_until_ms = now.get() + i64::from(cfg.recovery_timeout_ms);
        inner.probes = 0;
        inner.successes = 0;
        self.failures.store(0, Ordering::Relaxed);
        self.set(CircuitState::Open);
    }

    /// A probe that was never sent (its request was refused first) gives its place back.
    fn release(&self, permit: Permit) {
        if permit == Permit::Probe {
            let mut inner = lock(&self.inner);
            if self.state() == CircuitState::HalfOpen {
                inner.probes = inner.probes.saturating_sub(1);
            }
        }
    }

    /// Milliseconds until an open circuit lets a probe through.
    fn opens_in(&self, now: &Now<'_>) -> Option<i64> {
        (self.state() == CircuitState::Open)
            .then(|| (lock(&self.inner).open_until_ms - now.get()).max(0))
    }
}

/// The last active health check of a target.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
}

/// A target's live state: what survives a snapshot while the target stays the same.
#[derive(Default)]
pub struct TargetHealth {
    circuit: Circuit,
    /// The active health check's verdict (true while there is none).
    healthy: AtomicBool,
    in_flight: AtomicU32,
    pub(crate) check: Mutex<CheckReport>,
    /// A check of it is running.
    pub(crate) checking: AtomicBool,
    /// When its last check started.
    last_check: Mutex<Option<Instant>>,
}

impl TargetHealth {
    fn new() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            ..Self::default()
        }
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.circuit.state()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.circuit.failures.load(Ordering::Relaxed)
    }

    /// The last active check's report.
    pub fn check_report(&self) -> CheckReport {
        lock(&self.check).clone()
    }

    /// Whether a check is due at `now` (none running, the last one `interval` ago); when it
    /// is, the check is marked as running.
    pub(crate) fn check_due(&self, now: Instant, interval: Duration) -> bool {
        let mut last = lock(&self.last_check);
        if last.is_some_and(|at| now.duration_since(at) < interval)
            || self.checking.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// A target of an API with its live state.
pub struct LiveTarget {
    pub entry: Arc<TargetEntry>,
    pub health: Arc<TargetHealth>,
}

/// One API's targets, live: what [`ApiUpstream::pick`] chooses from.
pub struct ApiUpstream {
    pub api_id: i64,
    tenant_id: i64,
    /// Where its circuits' openings and closings go (webhook events), when anywhere.
    events: Option<EventSink>,
    pub targets: Box<[LiveTarget]>,
    breaker: CircuitBreaker,
    pub(crate) health_check: Option<HealthCheck>,
    /// Its tenant may use private upstreams (which health-check client to use).
    pub(crate) trusted: bool,
    /// One cycle of smooth weighted round robin over all the targets (target indices, as many
    /// as the weights add up to, over their greatest common divisor): what a request takes while
    /// every target is up, by one atomic step of `seq` — no lock shared by the workers.
    schedule: Box<[u8]>,
    seq: std::sync::atomic::AtomicUsize,
    /// Smooth weighted round robin's current weights, one per target, for the requests whose
    /// place in the cycle is a target that is out (and for retries): shared among those up.
    current: Mutex<Box<[i64]>>,
}

/// No target can take the request: all are down or open.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable {
    /// When the soonest open circuit lets a probe through, if one will.
    pub retry_after_ms: Option<i64>,
}

/// Tried targets of one request, by index (an API has at most 32).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tried(u32);

impl Tried {
    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn has(self, i: usize) -> bool {
        i < 32 && self.0 & (1 << i) != 0
    }

    fn add(&mut self, i: usize) {
        if i < 32 {
            self.0 |= 1 << i;
        }
    }
}

/// Where the events of circuits that open and close go.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<domain::webhook::NewEvent>;

impl ApiUpstream {
    fn new(api: &ApiEntry, old: Option<&ApiUpstream>, events: Option<EventSink>) -> Self {
        let targets: Box<[LiveTarget]> = api
            .targets
            .iter()
            .map(|t| LiveTarget {
                entry: t.clone(),
                health: old
                    .and_then(|o| o.targets.iter().find(|l| same_target(&l.entry, t)))
                    .map_or_else(|| Arc::new(TargetHealth::new()), |l| l.health.clone()),
            })
            .collect();
        if api.resilience.health_check.is_none() {
            // Without an active check, no target stays out because of one.
            for t in &targets {
                t.health.set_healthy(true);
            }
        }
        Self {
            api_id: api.id,
            tenant_id: api.tenant_id,
            events,
            schedule: schedule(&targets),
            seq: std::sync::atomic::AtomicUsize::new(0),
            current: Mutex::new(vec![0; targets.len()].into()),
            targets,
            breaker: api.resilience.circuit_breaker,
            health_check: api.resilience.health_check.clone(),
            trusted: api.trusted_upstreams,
        }
    }

    /// Whether `api`'s configuration is what this was made of (nothing to rebuild).
    fn made_of(&self, api: &ApiEntry) -> bool {
        self.breaker == api.resilience.circuit_breaker
            && self.health_check == api.resilience.health_check
            && self.trusted == api.trusted_upstreams
            && self.targets.len() == api.targets.len()
            && self
                .targets
                .iter()
                .zip(api.targets.iter())
                .all(|(l, t)| same_target(&l.entry, t) && l.entry.weight == t.weight)
    }

    /// Whether target `i` takes requests at `now`: not out by the active check, circuit not
    /// open (or due to half-open).
    pub fn is_up(&self, i: usize, now: &Now<'_>) -> bool {
        let h = &self.targets[i].health;
        h.is_healthy() && (!self.breaker.enabled || h.circuit.admits(&self.breaker, now))
    }

    /// The target for a request at `now`, other than those `tried`: smooth weighted round robin
    /// over the targets that are up.
    pub fn pick(self: &Arc<Self>, now: &Now<'_>, tried: Tried) -> Result<Picked, Unavailable> {
        if self.targets.len() == 1 {
            if !tried.has(0)
                && self.is_up(0, now)
                && let Some(p) = self.take(0, now)
            {
                return Ok(p);
            }
            return Err(self.unavailable(now));
        }
        // Every target up (the usual case): the next place in the cycle.
        if tried.is_empty() {
            let at = self.seq.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
            let i = usize::from(self.schedule[at]);
            if self.is_up(i, now)
                && let Some(p) = self.take(i, now)
            {
                return Ok(p);
            }
        }
        // That place's target is out: the targets that are up share it by weight.
        let mut current = lock(&self.current);
        let mut skip = tried;
        loop {
            let mut best: Option<usize> = None;
            let mut total = 0i64;
            for (i, t) in self.targets.iter().enumerate() {
                if skip.has(i) || !self.is_up(i, now) {
                    continue;
                }
                let w = i64::from(t.entry.weight);
                current[i] += w;
                total += w;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let Some(b) = best else {
                drop(current);
                return Err(self.unavailable(now));
            };
            current[b] -= total;
            if let Some(p) = self.take(b, now) {
                return Ok(p);
            }
            skip.add(b);
        }
    }

    fn take(self: &Arc<Self>, i: usize, now: &Now<'_>) -> Option<Picked> {
        let health = &self.targets[i].health;
        let permit = health.circuit.acquire(&self.breaker, now)?;
        health.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            api: self.clone(),
            index: i,
            permit,
            done: false,
        })
    }

    fn unavailable(&self, now: &Now<'_>) -> Unavailable {
        Unavailable {
            retry_after_ms: self
                .targets
                .iter()
                .filter(|t| t.health.is_healthy())
                .filter_map(|t| t.health.circuit.opens_in(now))
                .min(),
        }
    }
}

/// One cycle of smooth weighted round robin (nginx's) over `targets`, all up: weights 5:1:1 give
/// `0 0 1 0 2 0 0`.
fn schedule(targets: &[LiveTarget]) -> Box<[u8]> {
    fn gcd(a: i64, b: i64) -> i64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let weights: Vec<i64> = targets
        .iter()
        .map(|t| i64::from(t.entry.weight.max(1)))
        .collect();
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| w / g).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(u8::try_from(best).unwrap_or(0));
    }
    if out.is_empty() {
        out.push(0);
    }
    out.into()
}

/// Same target (id and URL) at the same reset generation: its live state carries over.
fn same_target(a: &TargetEntry, b: &TargetEntry) -> bool {
    a.id == b.id && a.url == b.url && a.reset_generation == b.reset_generation
}

/// The target a request was given: counted in flight until dropped, and told the exchange's
/// outcome by [`Picked::succeeded`] or [`Picked::failed`] (dropped untold, a probe gives its place
/// back: the request never reached the target).
pub struct Picked {
    api: Arc<ApiUpstream>,
    index: usize,
    permit: Permit,
    done: bool,
}

impl Picked {
    pub fn target(&self) -> &Arc<TargetEntry> {
        &self.api.targets[self.index].entry
    }

    /// The targets a retry must not take again: this one.
    pub fn tried(&self, mut before: Tried) -> Tried {
        before.add(self.index);
        before
    }

    pub fn api(&self) -> &Arc<ApiUpstream> {
        &self.api
    }

    /// The target answered (anything but a 502, 503 or 504).
    pub fn succeeded(mut self, now: &Now<'_>) {
        self.record(true, now);
    }

    /// The target failed: no connection, a reset, a timeout, or a 502, 503 or 504.
    pub fn failed(mut self, now: &Now<'_>) {
        self.record(false, now);
    }

    fn record(&mut self, ok: bool, now: &Now<'_>) {
        self.done = true;
        let t = &self.api.targets[self.index];
        if t.health
            .circuit
            .record(&self.api.breaker, self.permit, ok, now)
        {
            let state = t.health.circuit.state();
            tracing::info!(
                api_id = self.api.api_id,
                target_id = t.entry.id,
                url = %t.entry.url,
                circuit = state.as_str(),
                "circuit changed"
            );
            // Opened from closed (a half-open circuit opening again is the same outage), or
            // closed again: what the tenant's webhooks hear of.
            let opened = state == CircuitState::Open && self.permit == Permit::Normal;
            if let Some(sink) = self
                .api
                .events
                .as_ref()
                .filter(|_| opened || state == CircuitState::Closed)
            {
                let _ = sink.send(domain::webhook::NewEvent::circuit(
                    self.api.tenant_id,
                    self.api.api_id,
                    t.entry.id,
                    &t.entry.url.to_string(),
                    opened,
                    now.get(),
                ));
            }
        }
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        let health = &self.api.targets[self.index].health;
        health.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            health.circuit.release(self.permit);
        }
    }
}

/// Every API's live targets in this process, by API id, as of one snapshot version.
#[derive(Default)]
pub struct Upstreams {
    live: ArcSwap<Live>,
    events: std::sync::OnceLock<EventSink>,
}

#[derive(Default)]
struct Live {
    version: i64,
    by_api: foldhash::HashMap<i64, Arc<ApiUpstream>>,
}

impl Upstreams {
    /// The live targets of `api`: those of the installed snapshot, or (while a newer snapshot is
    /// being installed) a fresh set of its own.
    pub fn of(&self, api: &ApiEntry) -> Arc<ApiUpstream> {
        match self.live.load().by_api.get(&api.id) {
            Some(u) if u.targets.len() == api.targets.len() => u.clone(),
            _ => Arc::new(ApiUpstream::new(api, None, self.events.get().cloned())),
        }
    }

    /// Follows a new snapshot: APIs whose targets and breaker are unchanged keep their state as
    /// is; a changed API is rebuilt, each target that stayed the same keeping its state. A
    /// snapshot older than the one followed already is ignored.
    pub fn refresh(&self, snap: &Snapshot) {
        self.live.rcu(|old| {
            if old.version > snap.version {
                return Arc::clone(old);
            }
            let mut by_api = foldhash::HashMap::default();
            for api in snap.apis() {
                let live = match old.by_api.get(&api.id) {
                    Some(o) if o.made_of(api) => o.clone(),
                    o => Arc::new(ApiUpstream::new(
                        api,
                        o.map(AsRef::as_ref),
                        self.events.get().cloned(),
                    )),
                };
                by_api.insert(api.id, live);
            }
            Arc::new(Live {
                version: snap.version,
                by_api,
            })
        });
    }

    /// Sends the events of circuits that open and close to `sink` (once; before the first
    /// snapshot is followed).
    pub fn events_to(&self, sink: EventSink) {
        let _ = self.events.set(sink);
    }

    /// Every API's live targets.
    pub fn all(&self) -> Vec<Arc<ApiUpstream>> {
        self.live.load().by_api.values().cloned().collect()
    }

    /// `gateway_upstream_up`, `gateway_circuit_state` and `gateway_upstream_in_flight` in the
    /// text format, one series per API and target.
    pub fn write_metrics(&self, page: &mut String, now_ms: i64) {
        let read = || now_ms;
        let now = &Now::of(&read);
        let all = self.live.load();
        let mut apis: Vec<&Arc<ApiUpstream>> = all.by_api.values().collect();
        apis.sort_by_key(|a| a.api_id);
        let series = [
            (
                "gateway_upstream_up",
                "Whether a target takes requests (1) or is down or its circuit open (0)",
            ),
            (
                "gateway_circuit_state",
                "A target's circuit: 0 closed, 1 open, 2 half-open",
            ),
            (
                "gateway_upstream_in_flight",
                "Requests being exchanged with a target",
            ),
            (
                "gateway_upstream_consecutive_failures",
                "A target's failures in a row, as its circuit counts them",
            ),
            (
                "gateway_upstream_check_latency_ms",
                "The last active health check's latency (-1: it failed or none ran)",
            ),
        ];
        for (n, (name, help)) in series.iter().enumerate() {
            let _ = writeln!(page, "# HELP {name} {help}");
            let _ = writeln!(page, "# TYPE {name} gauge");
            for api in &apis {
                for (i, t) in api.targets.iter().enumerate() {
                    let value = match n {
                        0 => i64::from(api.is_up(i, now)),
                        1 => t.health.circuit_state() as i64,
                        2 => i64::from(t.health.in_flight()),
                        3 => i64::from(t.health.consecutive_failures()),
                        _ => t
                            .health
                            .check_report()
                            .latency_ms
                            .map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
                    };
                    let _ = writeln!(
                        page,
                        "{name}{{api_id=\"{}\",target=\"{}\"}} {value}",
                        api.api_id,
                        t.entry
                            .url
                            .to_string()
                            .replace('\\', "\\\\")
                            .replace('"', "\\\""),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Now<'static> {
        let read: &'static dyn Fn() -> i64 = Box::leak(Box::new(move || ms));
        Now::of(read)
    }
    use domain::upstream::UpstreamUrl;

    fn api(weights: &[u32], breaker: CircuitBreaker) -> ApiEntry {
        let targets: Vec<Arc<TargetEntry>> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let url = UpstreamUrl::parse(&format!("http://10.0.0.{i}:80")).unwrap();
                Arc::new(TargetEntry::new(
                    i64::try_from(i).unwrap() + 1,
                    url,
                    *w,
                    false,
                    0,
                ))
            })
            .collect();
        ApiEntry {
            id: 1,
            tenant_id: 1,
            slug: "a".into(),
            targets: targets.into(),
            upstream_tls: false,
            key_header: "x-api-key".into(),
            key_header_name: "X-API-Key".into(),
            timeout: std::time::Duration::from_secs(1),
            pass_encoded_slashes: false,
            log_query: false,
            auth: domain::jwt::ApiAuth::Key,
            identity_token: false,
            upstream_protocol: domain::header::UpstreamProtocol::default(),
            websocket_idle: std::time::Duration::from_hours(1),
            trusted_upstreams: false,
            is_active: true,
            routes: domain::route::RouteTable::compile(Vec::new()),
            resilience: domain::resilience::ApiResilience {
                circuit_breaker: breaker,
                ..Default::default()
            },
        }
    }

    fn share(u: &Arc<ApiUpstream>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; u.targets.len()];
        for _ in 0..n {
            let p = u.pick(&at(0), Tried::default()).unwrap();
            counts[p.index] += 1;
            p.succeeded(&at(0));
        }
        counts
    }

    #[test]
    fn smooth_weighted_round_robin_shares_by_weight_and_interleaves() {
        let u = Arc::new(ApiUpstream::new(
            &api(&[5, 1, 1], CircuitBreaker::default()),
            None,
            None,
        ));
        let order: Vec<usize> = (0..7)
            .map(|_| {
                let p = u.pick(&at(0), Tried::default()).unwrap();
                p.index
            })
            .collect();
        // nginx's sequence for 5:1:1: never five of the heavy one in a row.
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(share(&u, 700), [500, 100, 100]);
    }

    #[test]
    fn a_circuit_opens_half_opens_and_closes() {
        let cfg = CircuitBreaker {
            enabled: true,
            failure_threshold: 3,
            recovery_timeout_ms: 1000,
            half_open_max_calls: 2,
        };
        let up = Arc::new(ApiUpstream::new(&api(&[1], cfg), None, None));
        for _ in 0..3 {
            up.pick(&at(0), Tried::default()).unwrap().failed(&at(0));
        }
        let health = &up.targets[0].health;
        assert_eq!(health.circuit_state(), CircuitState::Open);
        let refusal = up.pick(&at(500), Tried::default()).err().unwrap();
        assert_eq!(refusal.retry_after_ms, Some(500));
        // Recovery passed: two probes, no third while they are out.
        let first = up.pick(&at(1000), Tried::default()).unwrap();
        assert_eq!(health.circuit_state(), CircuitState::HalfOpen);
        let second = up.pick(&at(1000), Tried::default()).unwrap();
        assert!(up.pick(&at(1000), Tried::default()).is_err());
        // A probe refused before it was sent gives its place back.
        drop(second);
        let second = up.pick(&at(1000), Tried::default()).unwrap();
        first.succeeded(&at(1001));
        second.succeeded(&at(1002));
        assert_eq!(health.circuit_state(), CircuitState::Closed);
        // One failed probe reopens.
        for _ in 0..3 {
            up.pick(&at(2000), Tried::default())
                .unwrap()
                .failed(&at(2000));
        }
        let p = up.pick(&at(3000), Tried::default()).unwrap();
        p.failed(&at(3000));
        assert_eq!(health.circuit_state(), CircuitState::Open);
        assert_eq!(health.in_flight(), 0);
    }

    #[test]
    fn open_and_tried_targets_are_skipped() {
        let cfg = CircuitBreaker {
            failure_threshold: 1,
            ..CircuitBreaker::default()
        };
        let u = Arc::new(ApiUpstream::new(&api(&[1, 1], cfg), None, None));
        let first = u.pick(&at(0), Tried::default()).unwrap();
        let tried = first.tried(Tried::default());
        let second = u.pick(&at(0), tried).unwrap();
        assert_ne!(first.index, second.index);
        assert!(u.pick(&at(0), second.tried(tried)).is_err());
        let open = first.index;
        first.failed(&at(0));
        assert_eq!(share(&u, 10)[1 - open], 10);
    }
}
