//! Plan enforcement: a per-minute GCRA (token bucket with `burst` capacity) plus calendar quotas per
//! UTC day and month, all checked and consumed in one atomic step; a rejected request consumes
//! nothing. The decision rule lives in [`decide`]; the Redis store runs the same rule in Lua
//! (see `limits.lua`) and both stores are held to the same scenario tests.

pub mod limiter;
pub mod local;
pub mod outage;
pub mod redis;
mod swept;

/// Locks `m`, taking over a lock whose holder panicked (the state behind it stays usable).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks the shards at `at` once each, in index order (two requests locking the same pair never
/// wait on each other); [`Locked::get`] finds a shard's guard. Inline: nothing is allocated.
fn lock_shards<T, const N: usize>(
    shards: &[std::sync::Mutex<T>],
    at: [usize; N],
) -> Locked<'_, T, N> {
    let mut order = at;
    order.sort_unstable();
    let mut guards = arrayvec::ArrayVec::new();
    for (k, i) in order.into_iter().enumerate() {
        if k == 0 || order[k - 1] != i {
            guards.push((i, lock(&shards[i])));
        }
    }
    Locked(guards)
}

struct Locked<'a, T, const N: usize>(arrayvec::ArrayVec<(usize, std::sync::MutexGuard<'a, T>), N>);

impl<T, const N: usize> Locked<'_, T, N> {
    fn get(&mut self, shard: usize) -> &mut T {
        let at = self.0.iter().position(|(i, _)| *i == shard).unwrap_or(0);
        &mut self.0[at].1
    }
}

pub use limiter::{
    AlertSink, Limiter, LimiterError, LimiterSettings, LinkedLimits, QuotaAlert, StoreKind,
};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::plan::PlanLimits;

const US_PER_MS: i64 = 1_000;
const US_PER_MINUTE: i64 = 60_000_000;

/// Where a subject's day and month counts come from when no counter store has them (the usage
/// the database recorded): a Redis that lost its state, an outage's first decision of a subject,
/// the in-process store after a restart.
pub trait UsageSource: Send + Sync {
    /// Requests of `subject` the limits admitted in the day and month windows `p` is in.
    fn admitted<'a>(
        &'a self,
        subject: Subject,
        p: &'a Params,
    ) -> futures_util::future::BoxFuture<'a, (u64, u64)>;
}

/// Whose counters a request spends: an API key's, or a registered client's (`X-Client-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Key {
        tenant_id: i64,
        key_id: i64,
    },
    Client {
        tenant_id: i64,
        client_row_id: i64,
    },
    /// Login throttling of the control plane (a hash of the account name or the address).
    Login(u64),
    /// A route's own windows for one key or one registered client ([`RouteOwner`]): counted apart
    /// from the plan's, decided with them in one step.
    Route {
        tenant_id: i64,
        route_id: i64,
        owner: RouteOwner,
    },
    /// A tenant's ceiling (a platform admin's): every key's and client's requests of the tenant
    /// share it, decided with the plan's (and a route's) windows in one step.
    Tenant {
        tenant_id: i64,
    },
}

/// Whose counters a route's window keeps: a key's (positive: its id) or a registered client's
/// (negative: minus its row id) — one number, so that a subject stays 32 bytes (it is copied into
/// every limiter request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteOwner(i64);

impl RouteOwner {
    pub fn key(key_id: i64) -> Self {
        Self(key_id)
    }

    pub fn client(client_row_id: i64) -> Self {
        Self(-client_row_id)
    }

    /// The key's id, or `None` for a client.
    pub fn key_id(self) -> Option<i64> {
        (self.0 > 0).then_some(self.0)
    }

    /// The client's row id, or `None` for a key.
    pub fn client_row_id(self) -> Option<i64> {
        (self.0 < 0).then_some(-self.0)
    }
}

impl Subject {
    pub fn tenant_id(self) -> i64 {
        match self {
            Self::Key { tenant_id, .. }
            | Self::Client { tenant_id, .. }
            | Self::Route { tenant_id, .. }
            | Self::Tenant { tenant_id } => tenant_id,
            Self::Login(_) => 0,
        }
    }

    /// Redis key of this subject's limit state (`r` = the packed-string layout of `limits.lua`);
    /// the tenant is hash-tagged so a tenant's keys share a Redis Cluster slot.
    pub fn redis_key(self, prefix: &str) -> String {
        let (tenant_id, kind, id) = match self {
            Self::Key { tenant_id, key_id } => (tenant_id, ":r:k:", key_id),
            Self::Client {
                tenant_id,
                client_row_id,
            } => (tenant_id, ":r:c:", client_row_id),
            Self::Login(hash) => return format!("{prefix}:r:login:{hash:016x}"),
            Self::Tenant { tenant_id } => return format!("{prefix}:{{t:{tenant_id}}}:r:t"),
            // Under the tenant's hash tag too: one script call decides it with the plan's key.
            Self::Route {
                tenant_id,
                route_id,
                owner,
            } => {
                let (kind, id) = match (owner.key_id(), owner.client_row_id()) {
                    (Some(k), _) => ('k', k),
                    (_, c) => ('c', c.unwrap_or(0)),
                };
                return format!("{prefix}:{{t:{tenant_id}}}:r:rt:{route_id}:{kind}:{id}");
            }
        };
        // Built on every strict request: pieces pushed, not `format!` (a quarter of the cost).
        let mut num = itoa::Buffer::new();
        let mut key = String::with_capacity(prefix.len() + 48);
        key.push_str(prefix);
        key.push_str(":{t:");
        key.push_str(num.format(tenant_id));
        key.push('}');
        key.push_str(kind);
        key.push_str(num.format(id));
        key
    }
}

/// Whose windows: the plan's (per key or client), a route's own (per route and key or client), or
/// the tenant's ceiling (all of its traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Level {
    #[default]
    Plan,
    Route,
    Tenant,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Route => "route",
            Self::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Minute,
    Day,
    Month,
}

impl Window {
    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// Header suffix: `X-RateLimit-Limit-Minute`.
    pub fn title(self) -> &'static str {
        match self {
            Self::Minute => "Minute",
            Self::Day => "Day",
            Self::Month => "Month",
        }
    }
}

impl WindowState {
    /// The window's name in messages and in the `RateLimit` fields: `minute`, `route-minute`.
    pub fn label(&self) -> &'static str {
        label(self.level, self.window)
    }
}

/// `minute`, `day`, `month`; a route's: `route-minute`, `route-day`, `route-month`; the tenant's
/// ceiling: `tenant-minute`, `tenant-day`, `tenant-month`.
pub fn label(level: Level, window: Window) -> &'static str {
    match (level, window) {
        (Level::Plan, w) => w.name(),
        (Level::Route, Window::Minute) => "route-minute",
        (Level::Route, Window::Day) => "route-day",
        (Level::Route, Window::Month) => "route-month",
        (Level::Tenant, Window::Minute) => "tenant-minute",
        (Level::Tenant, Window::Day) => "tenant-day",
        (Level::Tenant, Window::Month) => "tenant-month",
    }
}

/// A calendar period: its id (`20261122` for a day, `202611` for a month) and when it ends (and
/// starts: what the database's usage of it is read from, when a counter store has lost it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub id: i64,
    pub end_us: i64,
    pub start_us: i64,
}

impl From<crate::calendar::Span> for Period {
    fn from(s: crate::calendar::Span) -> Self {
        Self {
            id: s.id,
            end_us: s.end_us,
            start_us: s.start_us,
        }
    }
}

/// Everything the decision needs, derived from a plan and the current time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub now_us: i64,
    /// GCRA emission interval: time between requests at the sustained rate, at least 1 µs.
    pub interval_us: i64,
    pub burst: u64,
    pub requests_per_minute: u64,
    pub day: Option<(u64, Period)>,
    pub month: Option<(u64, Period)>,
    /// Units one request takes from every window (a route's `cost`; 1 by default; a route's cost
    /// is at most 1000, so 32 bits keep the parameters small).
    pub cost: u32,
    /// Whose windows these are (what the decision's fields and a refusal name).
    pub level: Level,
}

fn day_period(now: DateTime<Utc>) -> Period {
    let d = now.date_naive();
    let next = d.succ_opt().unwrap_or(d);
    Period {
        id: i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day()),
        end_us: midnight_us(next),
        start_us: midnight_us(d),
    }
}

fn month_period(now: DateTime<Utc>) -> Period {
    let d = now.date_naive();
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    let next = NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d);
    Period {
        id: i64::from(d.year()) * 100 + i64::from(d.month()),
        end_us: midnight_us(next),
        start_us: midnight_us(d.with_day(1).unwrap_or(d)),
    }
}

fn midnight_us(d: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
        .timestamp_micros()
}

#[allow(clippy::cast_possible_wrap)] // limits are capped at 2^48 by PlanLimits
fn as_i64(v: u64) -> i64 {
    v as i64
}

impl Params {
    /// The windows of `limits` at `now_ms`, days and months in UTC.
    pub fn new(limits: &PlanLimits, now_ms: i64) -> Self {
        let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        let rpm = as_i64(limits.requests_per_minute.max(1));
        Self {
            now_us: now_ms * US_PER_MS,
            interval_us: (US_PER_MINUTE / rpm).max(1),
            burst: limits.burst.max(1),
            requests_per_minute: limits.requests_per_minute,
            day: limits.requests_per_day.map(|l| (l, day_period(now))),
            month: limits.requests_per_month.map(|l| (l, month_period(now))),
            cost: 1,
            level: Level::Plan,
        }
    }

    /// The windows of `limits` at `now_ms`, days and months in the tenant's `calendar`.
    pub fn in_calendar(
        limits: &PlanLimits,
        now_ms: i64,
        calendar: &crate::calendar::Calendar,
    ) -> Self {
        let mut p = Self::new(limits, now_ms);
        if !calendar.is_utc() {
            let at = p.now_us;
            if let Some((_, per)) = &mut p.day {
                *per = calendar.day(at).into();
            }
            if let Some((_, per)) = &mut p.month {
                *per = calendar.month(at).into();
            }
        }
        p
    }

    /// These windows with each request taking `cost` units (at least 1).
    #[must_use]
    pub fn costing(mut self, cost: u64) -> Self {
        self.cost = u32::try_from(cost).unwrap_or(u32::MAX).max(1);
        self
    }

    /// [`Self::cost`], at least 1.
    pub fn units(&self) -> u64 {
        u64::from(self.cost.max(1))
    }

    /// These windows as a route's.
    #[must_use]
    pub fn of_route(self) -> Self {
        self.of(Level::Route)
    }

    /// These windows as `level`'s.
    #[must_use]
    pub fn of(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Whether a request of this cost can never be admitted: the window it takes more units
    /// of than the window holds, and what that window holds.
    pub fn unattainable(&self) -> Option<(Window, u64)> {
        let quota = |w: Option<(u64, Period)>| w.map_or(u64::MAX, |(l, _)| l);
        [
            (Window::Minute, self.burst),
            (Window::Day, quota(self.day)),
            (Window::Month, quota(self.month)),
        ]
        .into_iter()
        .find(|(_, holds)| self.units() > *holds)
    }
}

/// The stored state of a subject: GCRA theoretical arrival time and the quota counters of the
/// periods they were counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    pub tat_us: i64,
    pub day_id: i64,
    pub day_count: u64,
    pub month_id: i64,
    pub month_count: u64,
}

/// One window's state after a decision, as reported in response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub window: Window,
    pub level: Level,
    pub limit: u64,
    pub remaining: u64,
    /// Milliseconds until the window is whole again (bucket full, or the period ends).
    pub reset_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The window that refused the request (the one with the longest wait).
    pub hit: Option<Window>,
    /// Whose window [`Self::hit`] is.
    pub level: Level,
    /// Milliseconds until the request would be admitted by every window; 0 when allowed, and
    /// when it never will be ([`Self::too_costly`]).
    pub retry_after_ms: i64,
    /// Minute, then day and month when the plan has them: inline, no allocation per decision.
    pub windows: arrayvec::ArrayVec<WindowState, 3>,
    /// What only requests on a limited or costly route have (boxed, so that a decision stays small
    /// enough to be moved without a call to `memcpy`).
    pub extra: Option<Box<Extra>>,
}

/// The rarer parts of a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extra {
    /// A route's own windows and the tenant's ceiling, when the request was counted in them too.
    pub linked_windows: arrayvec::ArrayVec<WindowState, 6>,
    /// Refused because the request costs more units than the hit window holds at all: (cost,
    /// what the window holds — a bucket its burst, a quota its limit).
    pub too_costly: Option<(u64, u64)>,
    /// Day and month windows this grant took past 80 % or used up: each crossing is seen by
    /// exactly one decision (the counter's store decides one grant at a time), whatever the
    /// number of data planes — what quota webhooks are sent from.
    pub alerts: arrayvec::ArrayVec<Alert, 4>,
}

/// A day or month window a grant took past 80 % of its limit, or used up (no further request of
/// the same cost fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub level: Level,
    pub window: Window,
    /// The window's id (`20261122`, `202611`).
    pub period: i64,
    pub limit: u64,
    /// Units used after the grant.
    pub used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// 80 % of the window used.
    Warning,
    /// The window used up.
    Exhausted,
}

impl AlertKind {
    /// The webhook event's type.
    pub fn event(self) -> &'static str {
        match self {
            Self::Warning => "quota.warning",
            Self::Exhausted => "quota.exhausted",
        }
    }
}

/// The alerts of a grant of `units` to a window of `limit` that had `before` used.
fn alerts_of(
    level: Level,
    window: Window,
    (limit, per): (u64, Period),
    before: u64,
    units: u64,
    cost: u64,
    out: &mut arrayvec::ArrayVec<Alert, 4>,
) {
    if units == 0 {
        return;
    }
    let after = before + units;
    let alert = |kind| Alert {
        kind,
        level,
        window,
        period: per.id,
        limit,
        used: after,
    };
    let warn_at = limit.saturating_mul(4).div_ceil(5);
    if before < warn_at && after >= warn_at {
        let _ = out.try_push(alert(AlertKind::Warning));
    }
    if limit.saturating_sub(after) < cost {
        let _ = out.try_push(alert(AlertKind::Exhausted));
    }
}

impl Decision {
    /// Every window the request was counted in: the plan's, then the route's and the tenant's.
    pub fn all_windows(&self) -> impl Iterator<Item = &WindowState> {
        self.windows
            .iter()
            .chain(self.extra.iter().flat_map(|e| e.linked_windows.iter()))
    }

    /// The windows a caller is told of: every one but the tenant's ceiling (what the tenant's
    /// other keys and clients spend is not theirs to see), unless it is what refused the request.
    pub fn shown_windows(&self) -> impl Iterator<Item = &WindowState> {
        let tenant_hit = !self.allowed && self.level == Level::Tenant;
        self.all_windows()
            .filter(move |w| w.level != Level::Tenant || (tenant_hit && Some(w.window) == self.hit))
    }

    /// Takes the quota alerts out of the decision (they are reported once, where it was made).
    pub fn take_alerts(&mut self) -> arrayvec::ArrayVec<Alert, 4> {
        self.extra
            .as_mut()
            .map(|e| std::mem::take(&mut e.alerts))
            .unwrap_or_default()
    }

    /// Refused for good: (the request's cost, what the refusing window holds at all).
    pub fn too_costly(&self) -> Option<(u64, u64)> {
        self.extra.as_ref().and_then(|e| e.too_costly)
    }

    /// Puts one subject's windows where its level says.
    pub(crate) fn place(&mut self, level: Level, windows: arrayvec::ArrayVec<WindowState, 3>) {
        match level {
            Level::Plan => self.windows = windows,
            Level::Route | Level::Tenant => self
                .extra
                .get_or_insert_default()
                .linked_windows
                .extend(windows),
        }
    }

    pub(crate) fn set_too_costly(&mut self, too_costly: Option<(u64, u64)>) {
        if too_costly.is_some() || self.extra.is_some() {
            self.extra.get_or_insert_default().too_costly = too_costly;
        }
    }

    /// The tightest window a caller is told of ([`Self::shown_windows`]): the fewest remaining,
    /// ties to the later reset; the refusing one on a refusal.
    pub fn tightest(&self) -> Option<&WindowState> {
        if let Some(hit) = self.hit {
            return self
                .all_windows()
                .find(|w| w.window == hit && w.level == self.level);
        }
        self.shown_windows().min_by(|a, b| {
            a.remaining
                .cmp(&b.remaining)
                .then(b.reset_ms.cmp(&a.reset_ms))
        })
    }

    /// `Retry-After` in whole seconds, rounded up (at least 1 on a rejection).
    pub fn retry_after_secs(&self) -> i64 {
        if self.allowed || self.too_costly().is_some() {
            0
        } else {
            ceil_div(self.retry_after_ms, 1000).max(1)
        }
    }
}

pub(crate) fn ceil_div(a: i64, b: i64) -> i64 {
    if a <= 0 { 0 } else { (a + b - 1) / b }
}

fn saturating_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The decision rule for one request: given the stored state before it, decide, and return the
/// state to store when it is admitted. `limits.lua` is [`grant`] in Lua.
pub fn decide(p: &Params, before: &State) -> (Decision, Option<State>) {
    let (_, decision, after) = grant(p, before, Ask::ONE);
    (decision, after)
}

/// What a grant asks for: how many requests, the share cap, and leased-but-unspent requests to
/// give back first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Grant up to this many (1 for a single request).
    pub want: u64,
    /// With `share_div > 0`, a grant of several is capped at `1/share_div` of what the tightest
    /// window has left, so that a data plane leasing a budget near the limit leaves the rest to
    /// others.
    pub share_div: u64,
    /// Requests of an expired lease that were never spent: returned to every window of the
    /// current period before granting.
    pub refund: u64,
}

impl Ask {
    pub const ONE: Self = Self {
        want: 1,
        share_div: 0,
        refund: 0,
    };
}

/// What a subject's windows can grant now: requests of `p.cost` units each, after a refund.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Measure {
    tat: i64,
    day_count: u64,
    month_count: u64,
    /// Units the per-minute bucket holds now.
    minute_units: u64,
    /// Requests every window admits now.
    pub(crate) avail: u64,
}

pub(crate) fn measure(p: &Params, before: &State, refund: u64) -> Measure {
    let burst = as_i64(p.burst);
    let interval = p.interval_us;
    let tat = before
        .tat_us
        .saturating_sub(as_i64(refund).saturating_mul(interval))
        .max(p.now_us);
    let count_in = |period: Option<(u64, Period)>, id: i64, count: u64| {
        period.map_or(0, |(_, per)| {
            if id == per.id {
                count.saturating_sub(refund)
            } else {
                0
            }
        })
    };
    let day_count = count_in(p.day, before.day_id, before.day_count);
    let month_count = count_in(p.month, before.month_id, before.month_count);
    let cost = p.units();
    let minute_units = saturating_u64((p.now_us + burst * interval - tat) / interval);
    let left = |w: Option<(u64, Period)>, used: u64| {
        w.map_or(u64::MAX, |(l, _)| l.saturating_sub(used) / cost)
    };
    let avail = (minute_units / cost)
        .min(left(p.day, day_count))
        .min(left(p.month, month_count));
    Measure {
        tat,
        day_count,
        month_count,
        minute_units,
        avail,
    }
}

/// The decision for `granted` requests of what `m` measured, and the state to store (none when
/// nothing was granted).
pub(crate) fn settle(p: &Params, m: &Measure, granted: u64) -> (Decision, Option<State>) {
    let burst = as_i64(p.burst);
    let interval = p.interval_us;
    let cost = p.units();
    let allowed = granted > 0;
    let refused_here = m.avail == 0;
    let out =
        |w: Option<(u64, Period)>, used: u64| w.is_some_and(|(l, _)| l.saturating_sub(used) < cost);
    let (hit_window, wait_us) = longest_wait(
        p,
        (m.minute_units < cost)
            .then(|| m.tat + as_i64(cost) * interval - burst * interval - p.now_us),
        out(p.day, m.day_count),
        out(p.month, m.month_count),
    );
    let units = granted.saturating_mul(cost);
    let (tat_after, day_after, month_after) = (
        m.tat + as_i64(units) * interval,
        m.day_count + units,
        m.month_count + units,
    );
    let level = p.level;
    let mut windows = arrayvec::ArrayVec::new();
    let used_us = tat_after - p.now_us;
    windows.push(WindowState {
        window: Window::Minute,
        level,
        // The plan's rate (what RateLimit-Policy states), not the bucket's size: what can be sent
        // now is `remaining`, and `reset` the time until the bucket is full again.
        limit: p.requests_per_minute,
        remaining: saturating_u64((burst * interval - used_us) / interval).min(p.burst),
        reset_ms: ceil_div(used_us, US_PER_MS),
    });
    for (window, quota, after) in [
        (Window::Day, p.day, day_after),
        (Window::Month, p.month, month_after),
    ] {
        if let Some((limit, per)) = quota {
            windows.push(WindowState {
                window,
                level,
                limit,
                remaining: limit.saturating_sub(after),
                reset_ms: ceil_div(per.end_us - p.now_us, US_PER_MS),
            });
        }
    }
    let unattainable = p.unattainable();
    let decision = Decision {
        allowed,
        hit: (!allowed && refused_here).then(|| unattainable.map_or(hit_window, |(w, _)| w)),
        level,
        retry_after_ms: if allowed || unattainable.is_some() {
            0
        } else {
            ceil_div(wait_us, US_PER_MS)
        },
        windows: arrayvec::ArrayVec::new(),
        extra: None,
    };
    let mut decision = decision;
    decision.place(level, windows);
    decision.set_too_costly(
        unattainable
            .filter(|_| !allowed)
            .map(|(_, holds)| (cost, holds)),
    );
    let mut alerts = arrayvec::ArrayVec::new();
    if let Some(q) = p.day {
        alerts_of(level, Window::Day, q, m.day_count, units, cost, &mut alerts);
    }
    if let Some(q) = p.month {
        alerts_of(
            level,
            Window::Month,
            q,
            m.month_count,
            units,
            cost,
            &mut alerts,
        );
    }
    if !alerts.is_empty() {
        decision.extra.get_or_insert_default().alerts = alerts;
    }
    let after = allowed.then(|| State {
        tat_us: tat_after,
        day_id: p.day.map_or(0, |(_, per)| per.id),
        day_count: day_after,
        month_id: p.month.map_or(0, |(_, per)| per.id),
        month_count: month_after,
    });
    (decision, after)
}

/// Grants up to `ask.want` requests at once, all windows together: as many as every window can
/// admit now (each taking `p.cost` units), at least one or none (a refusal consumes nothing; a
/// refund is kept either way). Returns the number granted, the decision (the state of every
/// window after the grant, in units; for a refusal, which window and how long to wait) and the
/// state to store.
pub fn grant(p: &Params, before: &State, ask: Ask) -> (u64, Decision, Option<State>) {
    let m = measure(p, before, ask.refund);
    let cap = m
        .avail
        .checked_div(ask.share_div)
        .map_or(u64::MAX, |share| share.max(1));
    let granted = ask.want.min(m.avail).min(cap);
    let (decision, after) = settle(p, &m, granted);
    (granted, decision, after)
}

/// One request decided by several subjects' windows together (a route's and the plan's): admitted
/// only when every one of them admits it. Returns the merged decision and, per subject, the state
/// to store (all `None` on a refusal: nothing is consumed anywhere).
pub fn decide_linked<const N: usize>(
    asks: [(&Params, &State); N],
) -> (Decision, [Option<State>; N]) {
    let measures = asks.map(|(p, before)| measure(p, before, 0));
    let granted = u64::from(measures.iter().all(|m| m.avail >= 1));
    let mut i = 0;
    let settled = asks.map(|(p, _)| {
        let r = settle(p, &measures[i], granted);
        i += 1;
        r
    });
    let decision = merge(settled.iter().map(|(d, _)| d));
    (decision, settled.map(|(_, after)| after))
}

/// The decisions of one request's subjects as one: admitted by all, every window's state, and for
/// a refusal the refusing window with the longest wait (a window it can never fit first).
pub fn merge<'a>(decisions: impl IntoIterator<Item = &'a Decision>) -> Decision {
    let mut out = Decision {
        allowed: true,
        hit: None,
        level: Level::Plan,
        retry_after_ms: 0,
        windows: arrayvec::ArrayVec::new(),
        extra: None,
    };
    for d in decisions {
        out.allowed &= d.allowed;
        if let Some(alerts) = d
            .extra
            .as_ref()
            .map(|e| &e.alerts)
            .filter(|a| !a.is_empty())
        {
            let mine = &mut out.extra.get_or_insert_default().alerts;
            for a in alerts {
                let _ = mine.try_push(*a);
            }
        }
        for w in d.all_windows() {
            let _ = match w.level {
                Level::Plan => out.windows.try_push(*w),
                Level::Route | Level::Tenant => out
                    .extra
                    .get_or_insert_default()
                    .linked_windows
                    .try_push(*w),
            };
        }
        // A window the request can never fit (the smallest of them) before any wait; then the
        // longest wait.
        let worse = match (out.too_costly(), d.too_costly()) {
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some((_, held)), Some((_, holds))) => holds < held,
            (None, None) => out.hit.is_none() || d.retry_after_ms > out.retry_after_ms,
        };
        if d.hit.is_some() && worse {
            out.hit = d.hit;
            out.level = d.level;
            out.retry_after_ms = d.retry_after_ms;
            out.set_too_costly(d.too_costly());
        }
    }
    if !out.allowed && out.hit.is_none() {
        // Refused with no window of its own to blame (cannot happen: some subject refused).
        out.hit = Some(Window::Minute);
    }
    out
}

/// The window whose refusal waits longest, and that wait (µs): the per-minute bucket's next token
/// (`minute_wait`, when the bucket is empty), or a used-up day or month until its period ends.
pub(crate) fn longest_wait(
    p: &Params,
    minute_wait: Option<i64>,
    day_out: bool,
    month_out: bool,
) -> (Window, i64) {
    let mut waits = [
        (Window::Minute, minute_wait.unwrap_or(0)),
        (Window::Day, 0),
        (Window::Month, 0),
    ];
    if let (Some((_, per)), true) = (p.day, day_out) {
        waits[1].1 = per.end_us - p.now_us;
    }
    if let (Some((_, per)), true) = (p.month, month_out) {
        waits[2].1 = per.end_us - p.now_us;
    }
    waits
        .iter()
        .copied()
        .max_by_key(|(_, w)| *w)
        .unwrap_or((Window::Minute, 0))
}

/// How long a subject's state must be kept: until the bucket is full and every quota period ends.
pub fn state_ttl_ms(p: &Params, after: &State) -> i64 {
    let mut until = after.tat_us;
    if let Some((_, per)) = p.day {
        until = until.max(per.end_us);
    }
    if let Some((_, per)) = p.month {
        until = until.max(per.end_us);
    }
    ceil_div(until - p.now_us, US_PER_MS).max(1) + 1_000
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use crate::clock::Clock;

    use super::local::LocalStore;
    use super::redis::{RedisStore, pool};
    use super::*;
    use crate::testing::{redis_url, unique_name};

    enum Store {
        Local(LocalStore),
        Redis(RedisStore),
    }

    impl Store {
        async fn check(&self, subject: Subject, limits: &PlanLimits, now_ms: i64) -> Decision {
            let p = Params::new(limits, now_ms);
            match self {
                Self::Local(s) => s.check(subject, &p),
                Self::Redis(s) => s.check(subject, &p).await.unwrap().decision,
            }
        }
    }

    /// The in-process store always, the Redis store when `TEST_REDIS_URL` is set.
    fn stores() -> Vec<Store> {
        let mut v = vec![Store::Local(LocalStore::default())];
        if let Some(url) = redis_url() {
            v.push(Store::Redis(RedisStore::new(
                pool(&url).unwrap(),
                unique_name("gwtest"),
            )));
        }
        v
    }

    /// Asking for `n` requests at once, nothing given back.
    fn want(n: u64) -> Ask {
        Ask {
            want: n,
            ..Ask::ONE
        }
    }

    const KEY: Subject = Subject::Key {
        tenant_id: 1,
        key_id: 7,
    };

    fn ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_millis()
    }

    fn limits(rpm: i64, burst: Option<i64>, day: Option<i64>, month: Option<i64>) -> PlanLimits {
        PlanLimits::new(rpm, burst, day, month).unwrap()
    }

    fn window(d: &Decision, w: Window) -> WindowState {
        *d.windows.iter().find(|s| s.window == w).unwrap()
    }

    #[tokio::test]
    async fn burst_is_spent_then_refills_at_the_rate() {
        let l = limits(60, Some(5), None, None);
        let t0 = ms(2026, 11, 22, 12, 0, 0);
        for store in stores() {
            for expected_remaining in (0..5).rev() {
                let d = store.check(KEY, &l, t0).await;
                assert!(d.allowed);
                assert_eq!(window(&d, Window::Minute).remaining, expected_remaining);
            }
            let d = store.check(KEY, &l, t0).await;
            assert!(!d.allowed);
            assert_eq!(d.hit, Some(Window::Minute));
            assert_eq!(d.retry_after_ms, 1_000, "one token per second at 60/min");
            assert_eq!(d.retry_after_secs(), 1);
            // Just before the token arrives: still refused, and the wait shrank.
            let d = store.check(KEY, &l, t0 + 999).await;
            assert_eq!((d.allowed, d.retry_after_ms), (false, 1));
            assert!(store.check(KEY, &l, t0 + 1_000).await.allowed);
            assert!(!store.check(KEY, &l, t0 + 1_000).await.allowed);
            // After 5 idle seconds the bucket is full again, never fuller.
            let later = t0 + 60_000;
            let d = store.check(KEY, &l, later).await;
            assert_eq!(window(&d, Window::Minute).remaining, 4);
        }
    }

    #[tokio::test]
    async fn a_rejected_request_consumes_nothing() {
        let l = limits(1, Some(1), Some(3), Some(10));
        let t0 = ms(2026, 11, 22, 12, 0, 0);
        for store in stores() {
            let d = store.check(KEY, &l, t0).await;
            assert!(d.allowed);
            assert_eq!(window(&d, Window::Day).remaining, 2);
            for _ in 0..5 {
                let d = store.check(KEY, &l, t0 + 10).await;
                assert!(!d.allowed);
                assert_eq!(d.hit, Some(Window::Minute));
                assert_eq!(
                    window(&d, Window::Day).remaining,
                    2,
                    "a 429 must not spend the day quota"
                );
                assert_eq!(window(&d, Window::Month).remaining, 9);
            }
            let d = store.check(KEY, &l, t0 + 60_000).await;
            assert!(d.allowed);
            assert_eq!(window(&d, Window::Day).remaining, 1);
            assert_eq!(window(&d, Window::Month).remaining, 8);
        }
    }

    #[test]
    fn a_window_taken_past_80_percent_and_used_up_alerts_once_each() {
        let l = limits(1_000, None, Some(10), Some(1_000));
        let t = ms(2026, 11, 22, 12, 0, 0);
        let mut state = State::default();
        let mut seen = Vec::new();
        for n in 1..=12 {
            let (mut d, after) = decide(&Params::new(&l, t + n), &state);
            for a in d.take_alerts() {
                seen.push((n, a.kind, a.window, a.used));
            }
            if let Some(after) = after {
                state = after;
            }
        }
        assert_eq!(
            seen,
            [
                (8, AlertKind::Warning, Window::Day, 8),
                (10, AlertKind::Exhausted, Window::Day, 10)
            ],
            "the month (1000) is far from both; refusals raise nothing"
        );
        // A cost of 3 against 10: the 3rd request (9 used) leaves no room for a 4th.
        let mut state = State::default();
        let mut kinds = Vec::new();
        for n in 1..=4 {
            let (mut d, after) = decide(&Params::new(&l, t + n).costing(3), &state);
            kinds.extend(d.take_alerts().iter().map(|a| (n, a.kind)));
            if let Some(after) = after {
                state = after;
            }
        }
        assert_eq!(kinds, [(3, AlertKind::Warning), (3, AlertKind::Exhausted)]);
    }

    #[tokio::test]
    async fn day_quota_resets_exactly_at_utc_midnight() {
        let l = limits(1_000, None, Some(2), None);
        let before_midnight = ms(2026, 11, 22, 23, 59, 59);
        let midnight = ms(2026, 11, 23, 0, 0, 0);
        for store in stores() {
            assert!(store.check(KEY, &l, before_midnight).await.allowed);
            assert!(store.check(KEY, &l, before_midnight + 500).await.allowed);
            let d = store.check(KEY, &l, before_midnight + 600).await;
            assert!(!d.allowed);
            assert_eq!(d.hit, Some(Window::Day));
            assert_eq!(d.retry_after_ms, 400, "the wait is until midnight");
            assert_eq!(d.tightest().unwrap().window, Window::Day);
            assert!(!store.check(KEY, &l, midnight - 1).await.allowed);
            let d = store.check(KEY, &l, midnight).await;
            assert!(d.allowed, "a new day starts exactly at 00:00:00 UTC");
            assert_eq!(window(&d, Window::Day).remaining, 1);
        }
    }

    #[tokio::test]
    async fn month_quota_resets_at_the_first_of_the_month_and_the_longest_wait_wins() {
        let l = limits(1, Some(1), None, Some(2));
        let t0 = ms(2026, 12, 31, 23, 0, 0);
        for store in stores() {
            assert!(store.check(KEY, &l, t0).await.allowed);
            assert!(store.check(KEY, &l, t0 + 60_000).await.allowed);
            // Minute bucket empty (60 s wait) and month spent (1 h wait): the month is what blocks.
            let d = store.check(KEY, &l, t0 + 60_000).await;
            assert!(!d.allowed);
            assert_eq!(d.hit, Some(Window::Month));
            assert_eq!(d.retry_after_ms, 3_600_000 - 60_000);
            assert_eq!(d.retry_after_secs(), 3_540);
            let d = store.check(KEY, &l, ms(2027, 1, 1, 0, 0, 0)).await;
            assert!(d.allowed, "January starts a new month (and a new year)");
            assert_eq!(window(&d, Window::Month).remaining, 1);
            assert_eq!(
                d.windows.len(),
                2,
                "no day window on a plan without a day quota"
            );
        }
    }

    #[tokio::test]
    async fn subjects_are_counted_apart() {
        let l = limits(1, Some(1), None, None);
        let t0 = ms(2026, 11, 22, 12, 0, 0);
        let other_key = Subject::Key {
            tenant_id: 1,
            key_id: 8,
        };
        let client = Subject::Client {
            tenant_id: 1,
            client_row_id: 7,
        };
        for store in stores() {
            assert!(store.check(KEY, &l, t0).await.allowed);
            assert!(!store.check(KEY, &l, t0).await.allowed);
            assert!(store.check(other_key, &l, t0).await.allowed);
            assert!(
                store.check(client, &l, t0).await.allowed,
                "client 7 is not key 7"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_admit_exactly_the_burst() {
        let l = limits(1, Some(50), None, None);
        let t0 = ms(2026, 11, 22, 12, 0, 0);
        for store in stores() {
            let store = Arc::new(store);
            let tasks: Vec<_> = (0..300)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.check(KEY, &l, t0).await.allowed })
                })
                .collect();
            let mut admitted = 0;
            for t in tasks {
                admitted += usize::from(t.await.unwrap());
            }
            assert_eq!(admitted, 50);
        }
    }

    #[tokio::test]
    async fn grants_of_several_take_what_every_window_allows() {
        let plan = limits(60, Some(10), Some(12), None);
        let t0 = ms(2026, 11, 22, 12, 0, 0);
        for store in stores() {
            let p = Params::new(&plan, t0);
            let (granted, d) = match &store {
                Store::Local(_) => {
                    let (g, d, _) = grant(&p, &State::default(), want(4));
                    (g, d)
                }
                Store::Redis(r) => {
                    let g = r.grant(KEY, &p, want(4)).await.unwrap();
                    (g.granted, g.decision)
                }
            };
            assert_eq!((granted, d.allowed), (4, true));
            let Store::Redis(r) = &store else { continue };
            // 6 left in the bucket; a share cap of 1/3 grants 2 of them.
            assert_eq!(
                r.grant(
                    KEY,
                    &p,
                    Ask {
                        want: 10,
                        share_div: 3,
                        refund: 0
                    }
                )
                .await
                .unwrap()
                .granted,
                2
            );
            assert_eq!(r.grant(KEY, &p, want(10)).await.unwrap().granted, 4);
            let super::redis::Grant {
                granted: g,
                decision: d,
                ..
            } = r.grant(KEY, &p, want(10)).await.unwrap();
            assert_eq!((g, d.allowed, d.hit), (0, false, Some(Window::Minute)));
            assert_eq!(d.retry_after_ms, 1_000);
            // Later the day quota (12, 10 spent) is what caps the grant.
            let later = Params::new(&plan, t0 + 60_000);
            assert_eq!(r.grant(KEY, &later, want(10)).await.unwrap().granted, 2);
        }
    }

    #[tokio::test]
    async fn unspent_lease_requests_are_given_back_to_the_same_period() {
        let Some(url) = redis_url() else { return };
        let r = RedisStore::new(pool(&url).unwrap(), unique_name("gwtest"));
        let plan = limits(1_000_000, None, Some(10), None);
        let p = Params::new(&plan, ms(2026, 11, 22, 12, 0, 0));
        assert_eq!(r.grant(KEY, &p, want(5)).await.unwrap().granted, 5);
        // 3 of the 5 were never spent: given back, then 2 granted: 4 taken in all.
        let super::redis::Grant {
            granted: g,
            decision: d,
            ..
        } = r
            .grant(
                KEY,
                &p,
                Ask {
                    want: 2,
                    share_div: 0,
                    refund: 3,
                },
            )
            .await
            .unwrap();
        assert_eq!(g, 2);
        assert_eq!(window(&d, Window::Day).remaining, 6);
    }

    /// Counters written by an earlier version (the text form) still count after an upgrade.
    #[tokio::test]
    async fn state_in_the_earlier_text_form_is_still_honoured() {
        let Some(url) = redis_url() else { return };
        let prefix = unique_name("gwtest");
        let r = RedisStore::new(pool(&url).unwrap(), prefix.clone());
        let plan = limits(1_000_000, None, Some(10), None);
        let p = Params::new(&plan, ms(2026, 11, 22, 12, 0, 0));
        let day = p.day.unwrap().1.id;
        let mut conn = r.pool().get().await.unwrap();
        let text = format!("{} {day} 7 0 0", p.now_us);
        let _: () = ::redis::cmd("SET")
            .arg(KEY.redis_key(&prefix))
            .arg(text)
            .query_async(&mut conn)
            .await
            .unwrap();
        let super::redis::Grant {
            granted: g,
            decision: d,
            ..
        } = r.grant(KEY, &p, Ask::ONE).await.unwrap();
        assert_eq!(g, 1);
        assert_eq!(
            window(&d, Window::Day).remaining,
            2,
            "7 counted before, 1 now"
        );
        // Rewritten in the packed form, and still set to expire: within a minute of the day's end.
        let ttl_ms: i64 = ::redis::cmd("PTTL")
            .arg(KEY.redis_key(&prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        let day_left_ms = (p.day.unwrap().1.end_us - p.now_us) / 1000;
        assert!(
            ttl_ms > day_left_ms && ttl_ms <= day_left_ms + 61_000,
            "{ttl_ms} ms"
        );
        for _ in 0..2 {
            let g = r.grant(KEY, &p, Ask::ONE).await.unwrap().granted;
            assert_eq!(g, 1);
        }
        let super::redis::Grant {
            granted: g,
            decision: d,
            ..
        } = r.grant(KEY, &p, Ask::ONE).await.unwrap();
        assert_eq!((g, d.allowed), (0, false), "the day's 10 are used up");
    }

    /// Usage "recorded in the database": fixed day and month counts.
    struct Recorded(std::sync::Mutex<(u64, u64)>);

    impl UsageSource for Recorded {
        fn admitted<'a>(
            &'a self,
            _: Subject,
            _: &'a Params,
        ) -> futures_util::future::BoxFuture<'a, (u64, u64)> {
            let counts = *self.0.lock().unwrap();
            Box::pin(async move { counts })
        }
    }

    #[tokio::test]
    async fn a_state_redis_lost_is_seeded_from_the_recorded_usage_before_it_decides() {
        let Some(url) = redis_url() else { return };
        let recorded = Arc::new(Recorded(std::sync::Mutex::new((7, 20))));
        let prefix = unique_name("gwtest");
        let r = RedisStore::new(pool(&url).unwrap(), prefix.clone()).seeding_from(recorded.clone());
        let plan = limits(1_000, None, Some(10), Some(30));
        let p = Params::new(&plan, ms(2026, 11, 22, 12, 0, 0));
        let d = r.check(KEY, &p).await.unwrap().decision;
        assert_eq!(
            window(&d, Window::Day).remaining,
            2,
            "7 recorded + this one"
        );
        assert_eq!(window(&d, Window::Month).remaining, 9);
        // Seeded once: later requests count on from Redis's own state.
        *recorded.0.lock().unwrap() = (0, 0);
        let d = r.check(KEY, &p).await.unwrap().decision;
        assert_eq!(window(&d, Window::Day).remaining, 1);
        // Redis loses the state (a restart without persistence): seeded again, not reset.
        let mut conn = r.pool().get().await.unwrap();
        let _: () = ::redis::cmd("DEL")
            .arg(KEY.redis_key(&prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        *recorded.0.lock().unwrap() = (9, 22);
        let d = r.check(KEY, &p).await.unwrap().decision;
        assert_eq!(window(&d, Window::Day).remaining, 0);
        let refused = r.check(KEY, &p).await.unwrap().decision;
        assert!(!refused.allowed, "the day's 10 are spent");
        assert_eq!(refused.hit, Some(Window::Day));
        // A plan with only a per-minute window has nothing to seed.
        let minute_only = Params::new(&limits(60, Some(5), None, None), p.now_us / 1_000);
        *recorded.0.lock().unwrap() = (1_000, 1_000);
        assert!(r.check(KEY, &minute_only).await.unwrap().decision.allowed);
    }

    #[tokio::test]
    async fn a_linked_pair_redis_lost_is_seeded_for_both_before_it_decides() {
        let Some(url) = redis_url() else { return };
        let recorded = Arc::new(Recorded(std::sync::Mutex::new((7, 20))));
        let r = RedisStore::new(pool(&url).unwrap(), unique_name("gwtest"))
            .seeding_from(recorded.clone());
        let t0 = ms(2026, 11, 22, 12, 0, 0);
        let plan = Params::new(&limits(1_000, None, Some(10), None), t0).costing(2);
        let route = Params::new(&limits(1_000, None, Some(9), None), t0)
            .costing(2)
            .of_route();
        let (d, states) = r
            .check_linked(&[(KEY, &plan), (ROUTE, &route)])
            .await
            .unwrap();
        let [plan_state, route_state] = states[..] else {
            panic!("two states")
        };
        assert!(d.allowed);
        // Both started from what was recorded (7 units of the day), then took 2.
        assert_eq!((plan_state.day_count, route_state.day_count), (9, 9));
        assert_eq!(level_window(&d, Level::Route, Window::Day).remaining, 0);
        // Seeded once: the route's day (9) has no room for 2 more, the plan's (10) neither.
        *recorded.0.lock().unwrap() = (0, 0);
        let (d, _) = r
            .check_linked(&[(KEY, &plan), (ROUTE, &route)])
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.hit, Some(Window::Day));
    }

    #[tokio::test]
    async fn without_redis_a_restarted_limiter_starts_from_the_recorded_usage() {
        let plan = limits(1_000, None, Some(10), Some(30));
        let clock = crate::clock::ManualClock::at(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
                .unwrap(),
        );
        let recorded = Arc::new(Recorded(std::sync::Mutex::new((6, 6))));
        let limiter = Limiter::new(
            None,
            LimiterSettings::default(),
            Arc::new(clock.clone()),
            Some(recorded.clone()),
        );
        let (d, _) = limiter.check(KEY, &plan).await.unwrap();
        assert_eq!(
            window(&d, Window::Day).remaining,
            3,
            "6 before the restart, 1 now"
        );
        // Read once: then the process counts on its own.
        *recorded.0.lock().unwrap() = (0, 0);
        let (d, _) = limiter.check(KEY, &plan).await.unwrap();
        assert_eq!(window(&d, Window::Day).remaining, 2);
        // The next day counts from zero, the month goes on from what this process counted.
        clock.advance_ms(86_400_000);
        let (d, _) = limiter.check(KEY, &plan).await.unwrap();
        assert_eq!(window(&d, Window::Day).remaining, 9);
        assert_eq!(window(&d, Window::Month).remaining, 21);
        // Another restart: the record again (the last flush had 9 of the month).
        *recorded.0.lock().unwrap() = (1, 9);
        let restarted = Limiter::new(
            None,
            LimiterSettings::default(),
            Arc::new(clock.clone()),
            Some(recorded.clone()),
        );
        let (d, _) = restarted.check(KEY, &plan).await.unwrap();
        assert_eq!(window(&d, Window::Day).remaining, 8);
        assert_eq!(window(&d, Window::Month).remaining, 20);
    }

    /// A fast-mode limiter on the test Redis with leases of up to `lease_max`, its clock and its
    /// store (`None` without a test Redis).
    fn fast_limiter(
        lease_max: u64,
    ) -> Option<(crate::clock::ManualClock, RedisStore, Arc<Limiter>)> {
        let url = redis_url()?;
        let clock = crate::clock::ManualClock::at(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
                .unwrap(),
        );
        let store = RedisStore::new(pool(&url).unwrap(), unique_name("gwtest"));
        let settings = LimiterSettings {
            lease_max,
            redis_timeout: std::time::Duration::from_secs(2),
            ..LimiterSettings::default()
        };
        let limiter = Limiter::new(Some(store.clone()), settings, Arc::new(clock.clone()), None);
        Some((clock, store, limiter))
    }

    /// Fast mode through the limiter: a lease, spent in part, expires; the next request gives the
    /// rest back, so the day's count holds only what was admitted.
    #[tokio::test]
    async fn fast_mode_returns_what_an_expired_lease_did_not_spend() {
        let Some((clock, store, limiter)) = fast_limiter(10) else {
            return;
        };
        let plan = limits(1_000_000, None, Some(100), None);
        let fast = crate::plan::Enforcement::Fast;
        for _ in 0..2 {
            assert!(
                limiter
                    .check_with(KEY, &plan, fast)
                    .await
                    .unwrap()
                    .0
                    .allowed
            );
        }
        clock.advance_ms(2_000);
        let (d, kind) = limiter.check_with(KEY, &plan, fast).await.unwrap();
        assert_eq!(kind, StoreKind::Redis);
        assert_eq!(
            window(&d, Window::Day).remaining,
            97,
            "3 admitted, the rest given back or held"
        );
        // What Redis itself counts: 3 spent + the 9 this node still holds.
        let p = Params::new(&plan, clock.now_ms());
        let d = store
            .grant(
                Subject::Key {
                    tenant_id: 1,
                    key_id: 7,
                },
                &p,
                want(1),
            )
            .await
            .unwrap()
            .decision;
        assert_eq!(window(&d, Window::Day).remaining, 100 - 12 - 1);
    }

    /// Fast mode: a worker draws part of its node's lease and spends it alone; what it drew and
    /// did not spend before the lease expired is given back with the next grant like the rest.
    #[tokio::test]
    async fn fast_mode_returns_what_a_worker_drew_and_did_not_spend() {
        let Some((clock, store, limiter)) = fast_limiter(80) else {
            return;
        };
        let plan = limits(1_000_000, None, Some(1_000), None);
        let fast = crate::plan::Enforcement::Fast;
        // The first request leases 80 (keeping 79); the second draws 79 / 8 = 9 of them.
        for remaining in [999, 998] {
            let (d, _) = limiter.check_with(KEY, &plan, fast).await.unwrap();
            assert!(d.allowed);
            assert_eq!(window(&d, Window::Day).remaining, remaining);
        }
        clock.advance_ms(2_000);
        let (d, _) = limiter.check_with(KEY, &plan, fast).await.unwrap();
        assert_eq!(
            window(&d, Window::Day).remaining,
            997,
            "3 admitted: the lease's 70 and the draw's 8 given back"
        );
        // Redis counts the 3 spent and the 79 the new lease holds.
        let p = Params::new(&plan, clock.now_ms());
        let d = store.grant(KEY, &p, want(1)).await.unwrap().decision;
        assert_eq!(window(&d, Window::Day).remaining, 1_000 - 3 - 79 - 1);
    }

    /// A limiter on the test Redis (strict) when there is one, and one in process.
    fn limiters() -> Vec<(&'static str, Arc<Limiter>)> {
        limiters_on(&Arc::new(crate::clock::ManualClock::at(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
                .unwrap(),
        )))
    }

    /// [`limiters`] on `clock`.
    fn limiters_on(clock: &Arc<crate::clock::ManualClock>) -> Vec<(&'static str, Arc<Limiter>)> {
        let clock = clock.clone();
        let mut v = vec![(
            "in process",
            Limiter::new(None, LimiterSettings::default(), clock.clone(), None),
        )];
        if let Some(url) = redis_url() {
            let store = RedisStore::new(pool(&url).unwrap(), unique_name("gwtest"));
            v.push((
                "redis",
                Limiter::new(Some(store), LimiterSettings::default(), clock, None),
            ));
        }
        v
    }

    /// A request of `KEY` under `plan` with the tenant's `calendar`.
    async fn in_zone(
        l: &Limiter,
        plan: &PlanLimits,
        calendar: crate::calendar::Calendar,
    ) -> Decision {
        let extra = LinkedLimits {
            calendar,
            ..LinkedLimits::default()
        };
        let strict = crate::plan::Enforcement::Strict;
        l.check_request(KEY, plan, strict, 1, extra)
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn day_quotas_reset_at_the_tenants_local_midnight_dst_included() {
        use crate::calendar::Calendar;
        let plan = limits(1_000, None, Some(2), None);
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        // Tokyo (UTC+9): the 23rd starts at 15:00 UTC on the 22nd. New York, 2026-11-01: clocks go
        // back an hour, a 25-hour day; the 2nd starts at 05:00 UTC (04:00 the day before).
        let tokyo = Calendar::new(chrono_tz::Asia::Tokyo);
        let new_york = Calendar::new(chrono_tz::America::New_York);
        for (zone, cal, spent_at, midnight) in [
            (
                "Tokyo",
                tokyo,
                ms(2026, 11, 22, 10, 0, 0),
                ms(2026, 11, 22, 15, 0, 0),
            ),
            (
                "New York",
                new_york,
                ms(2026, 11, 1, 12, 0, 0),
                ms(2026, 11, 2, 5, 0, 0),
            ),
        ] {
            let clock = Arc::new(crate::clock::ManualClock::at(at(spent_at)));
            for (name, l) in limiters_on(&clock) {
                clock.set(at(spent_at));
                for _ in 0..2 {
                    assert!(in_zone(&l, &plan, cal).await.allowed, "{zone} {name}");
                }
                let d = in_zone(&l, &plan, cal).await;
                assert_eq!(d.hit, Some(Window::Day), "{zone} {name}");
                assert_eq!(
                    d.retry_after_ms,
                    midnight - spent_at,
                    "{zone} {name}: until local midnight"
                );
                assert_eq!(window(&d, Window::Day).reset_ms, midnight - spent_at);
                // An hour before local midnight — New York's UTC offset an hour earlier would
                // have reset already — and a millisecond before: still the same day.
                for before in [midnight - 3_600_000, midnight - 1] {
                    clock.set(at(before));
                    assert!(!in_zone(&l, &plan, cal).await.allowed, "{zone} {name}");
                }
                clock.set(at(midnight));
                let d = in_zone(&l, &plan, cal).await;
                assert!(d.allowed, "{zone} {name}: a new day at local midnight");
                assert_eq!(window(&d, Window::Day).remaining, 1);
            }
        }
    }

    #[tokio::test]
    async fn a_zone_change_neither_grants_nor_loses_the_running_days_count() {
        use crate::calendar::Calendar;
        let plan = limits(1_000, None, Some(2), Some(100));
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        let changed = ms(2026, 11, 22, 10, 0, 0);
        let clock = Arc::new(crate::clock::ManualClock::at(at(changed)));
        // UTC -> Tokyo at 10:00 UTC, the day's quota spent: Tokyo's 23rd began at 15:00, but the
        // UTC day runs to its end; then a new (Tokyo) day.
        let cal = Calendar::changed(chrono_tz::Asia::Tokyo, chrono_tz::UTC, changed * 1_000);
        for (name, l) in limiters_on(&clock) {
            clock.set(at(changed));
            for _ in 0..2 {
                assert!(in_zone(&l, &plan, Calendar::UTC).await.allowed, "{name}");
            }
            clock.set(at(ms(2026, 11, 22, 20, 0, 0)));
            let d = in_zone(&l, &plan, cal).await;
            assert_eq!(
                d.hit,
                Some(Window::Day),
                "{name}: nothing granted by the change"
            );
            clock.set(at(ms(2026, 11, 23, 0, 0, 0)));
            let d = in_zone(&l, &plan, cal).await;
            assert!(d.allowed, "{name}: the first Tokyo day");
            assert_eq!(
                window(&d, Window::Month).remaining,
                97,
                "{name}: the month kept its count"
            );
            assert_eq!(
                window(&d, Window::Day).reset_ms,
                ms(2026, 11, 23, 15, 0, 0) - ms(2026, 11, 23, 0, 0, 0),
                "{name}: it ends at Tokyo's midnight"
            );
        }
    }

    const ROUTE: Subject = Subject::Route {
        tenant_id: 1,
        route_id: 3,
        owner: RouteOwner(7),
    };

    fn level_window(d: &Decision, level: Level, w: Window) -> WindowState {
        *d.all_windows()
            .find(|s| s.window == w && s.level == level)
            .unwrap()
    }

    #[tokio::test]
    async fn a_tenant_ceiling_is_shared_by_its_keys_and_a_refusal_elsewhere_spends_none_of_it() {
        let generous = limits(6_000, Some(100), None, None);
        let tight = limits(60, Some(2), None, None);
        let ceiling = limits(600, Some(10), Some(1_000), None);
        let one = limits(60, Some(1), None, None);
        let tenant = Subject::Tenant { tenant_id: 1 };
        let other = Subject::Key {
            tenant_id: 1,
            key_id: 8,
        };
        let strict = crate::plan::Enforcement::Strict;
        for (name, l) in limiters() {
            let ask = |key, plan, route| {
                l.check_request(
                    key,
                    plan,
                    strict,
                    1,
                    LinkedLimits {
                        route,
                        tenant: Some((tenant, &ceiling)),
                        ..LinkedLimits::default()
                    },
                )
            };
            // The tight key: 2 admitted, then refused by its own plan, spending nothing of the
            // ceiling.
            for _ in 0..2 {
                assert!(ask(KEY, &tight, None).await.unwrap().0.allowed, "{name}");
            }
            for _ in 0..5 {
                let (d, _) = ask(KEY, &tight, None).await.unwrap();
                assert_eq!((d.allowed, d.level), (false, Level::Plan), "{name}");
            }
            // A route refusal (its window holds 1) spends nothing of the ceiling either.
            assert!(
                ask(other, &generous, Some((ROUTE, &one)))
                    .await
                    .unwrap()
                    .0
                    .allowed
            );
            let (d, _) = ask(other, &generous, Some((ROUTE, &one))).await.unwrap();
            assert_eq!((d.allowed, d.level), (false, Level::Route), "{name}");
            // The other key gets what is left of the ceiling: 10 - 2 - 1.
            for _ in 0..7 {
                let (d, _) = ask(other, &generous, None).await.unwrap();
                assert!(d.allowed, "{name}");
                // What the tenant's other callers spent is not shown to this one.
                assert!(
                    d.shown_windows().all(|w| w.level != Level::Tenant),
                    "{name}"
                );
                assert_eq!(d.tightest().unwrap().level, Level::Plan, "{name}");
            }
            let (d, _) = ask(other, &generous, None).await.unwrap();
            assert_eq!(
                (d.allowed, d.level, d.hit),
                (false, Level::Tenant, Some(Window::Minute)),
                "{name}"
            );
            assert_eq!(d.tightest().unwrap().label(), "tenant-minute", "{name}");
            assert!(d.retry_after_secs() >= 1, "{name}");
            assert_eq!(level_window(&d, Level::Tenant, Window::Day).remaining, 990);
        }
    }

    #[tokio::test]
    async fn a_route_window_and_the_plan_decide_together_and_a_refusal_consumes_neither() {
        let plan = limits(60, Some(5), Some(100), None);
        let route = limits(60, Some(3), None, None);
        let strict = crate::plan::Enforcement::Strict;
        for (name, l) in limiters() {
            let on_route = |cost| {
                l.check_request(
                    KEY,
                    &plan,
                    strict,
                    cost,
                    LinkedLimits {
                        route: Some((ROUTE, &route)),
                        tenant: None,
                        ..LinkedLimits::default()
                    },
                )
            };
            for left in [2, 1, 0] {
                let (d, _) = on_route(1).await.unwrap();
                assert!(d.allowed, "{name}");
                assert_eq!(
                    level_window(&d, Level::Route, Window::Minute).remaining,
                    left
                );
            }
            let (d, _) = on_route(1).await.unwrap();
            assert!(!d.allowed, "{name}: the route's burst of 3 is spent");
            assert_eq!(
                (d.hit, d.level),
                (Some(Window::Minute), Level::Route),
                "{name}"
            );
            assert_eq!(d.tightest().unwrap().label(), "route-minute");
            assert_eq!(d.retry_after_ms, 1_000, "{name}");
            assert_eq!(
                level_window(&d, Level::Plan, Window::Minute).remaining,
                2,
                "{name}: the refusal took nothing from the plan"
            );
            assert_eq!(level_window(&d, Level::Plan, Window::Day).remaining, 97);
            // Off the route, the plan's two are still there; then the plan refuses, and the
            // route (given time to refill) is not charged for it.
            for _ in 0..2 {
                assert!(
                    l.check_request(KEY, &plan, strict, 1, LinkedLimits::default())
                        .await
                        .unwrap()
                        .0
                        .allowed
                );
            }
            let (d, _) = l
                .check_request(KEY, &plan, strict, 1, LinkedLimits::default())
                .await
                .unwrap();
            assert_eq!((d.allowed, d.level), (false, Level::Plan), "{name}");
        }
    }

    #[tokio::test]
    async fn a_request_costing_n_takes_n_units_from_every_window() {
        let plan = limits(60, Some(10), Some(100), None);
        let route = limits(60, Some(9), Some(20), None);
        let strict = crate::plan::Enforcement::Strict;
        for (name, l) in limiters() {
            let (d, _) = l
                .check_request(
                    KEY,
                    &plan,
                    strict,
                    3,
                    LinkedLimits {
                        route: Some((ROUTE, &route)),
                        tenant: None,
                        ..LinkedLimits::default()
                    },
                )
                .await
                .unwrap();
            assert!(d.allowed, "{name}");
            assert_eq!(level_window(&d, Level::Plan, Window::Minute).remaining, 7);
            assert_eq!(level_window(&d, Level::Plan, Window::Day).remaining, 97);
            assert_eq!(level_window(&d, Level::Route, Window::Minute).remaining, 6);
            assert_eq!(level_window(&d, Level::Route, Window::Day).remaining, 17);
            // Without a route window, cost still counts in the plan's.
            let (d, _) = l
                .check_request(KEY, &plan, strict, 3, LinkedLimits::default())
                .await
                .unwrap();
            assert_eq!(
                level_window(&d, Level::Plan, Window::Minute).remaining,
                4,
                "{name}"
            );
            let (d, _) = l
                .check_request(KEY, &plan, strict, 3, LinkedLimits::default())
                .await
                .unwrap();
            assert_eq!(
                level_window(&d, Level::Plan, Window::Minute).remaining,
                1,
                "{name}"
            );
            // 1 unit left, 3 asked: refused, nothing taken, the wait is for two more units.
            let (d, _) = l
                .check_request(
                    KEY,
                    &plan,
                    strict,
                    3,
                    LinkedLimits {
                        route: Some((ROUTE, &route)),
                        tenant: None,
                        ..LinkedLimits::default()
                    },
                )
                .await
                .unwrap();
            assert!(!d.allowed, "{name}");
            assert_eq!(
                (d.hit, d.level, d.too_costly()),
                (Some(Window::Minute), Level::Plan, None)
            );
            assert_eq!(d.retry_after_ms, 2_000, "{name}");
            assert_eq!(
                level_window(&d, Level::Route, Window::Day).remaining,
                17,
                "{name}"
            );
            // More than the route's burst of 9: never admitted, and said so.
            let (d, _) = l
                .check_request(
                    KEY,
                    &plan,
                    strict,
                    12,
                    LinkedLimits {
                        route: Some((ROUTE, &route)),
                        tenant: None,
                        ..LinkedLimits::default()
                    },
                )
                .await
                .unwrap();
            assert!(!d.allowed, "{name}");
            assert_eq!(d.too_costly(), Some((12, 9)), "{name}");
            assert_eq!(d.retry_after_secs(), 0, "no wait would help");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_on_a_route_admit_exactly_its_burst_and_the_plan_counts_them() {
        let plan = limits(6_000, Some(500), Some(10_000), None);
        let route = limits(60, Some(10), None, None);
        let strict = crate::plan::Enforcement::Strict;
        for (name, l) in limiters() {
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let l = l.clone();
                    tokio::spawn(async move {
                        l.check_request(
                            KEY,
                            &plan,
                            strict,
                            1,
                            LinkedLimits {
                                route: Some((ROUTE, &route)),
                                tenant: None,
                                ..LinkedLimits::default()
                            },
                        )
                        .await
                        .unwrap()
                        .0
                        .allowed
                    })
                })
                .collect();
            let mut admitted = 0;
            for t in tasks {
                admitted += usize::from(t.await.unwrap());
            }
            assert_eq!(admitted, 10, "{name}");
            let (d, _) = l
                .check_request(KEY, &plan, strict, 1, LinkedLimits::default())
                .await
                .unwrap();
            assert_eq!(
                level_window(&d, Level::Plan, Window::Day).remaining,
                10_000 - 11,
                "{name}: the plan counted the 10 admitted and this one"
            );
        }
    }

    /// A decision is moved several times per request: past 128 bytes each move is a `memcpy`
    /// call (what `scripts/bench-instructions` showed when route windows were first inline).
    #[test]
    fn a_decision_stays_small_enough_to_move_inline() {
        assert!(
            std::mem::size_of::<Decision>() <= 128,
            "{} bytes",
            std::mem::size_of::<Decision>()
        );
    }

    #[test]
    fn redis_keys_are_namespaced_and_hash_tagged() {
        assert_eq!(KEY.redis_key("gw"), "gw:{t:1}:r:k:7");
        let c = Subject::Client {
            tenant_id: 3,
            client_row_id: 9,
        };
        assert_eq!(c.redis_key("gw"), "gw:{t:3}:r:c:9");
        assert_eq!(ROUTE.redis_key("gw"), "gw:{t:1}:r:rt:3:k:7");
        let of_client = Subject::Route {
            tenant_id: 3,
            route_id: 4,
            owner: RouteOwner::client(9),
        };
        assert_eq!(of_client.redis_key("gw"), "gw:{t:3}:r:rt:4:c:9");
        assert_eq!(std::mem::size_of::<Subject>(), 32);
    }
}
