//! What the limiter does while Redis is judged down, so that an outage stays within a stated
//! bound and leaves the counters exact once it is over:
//!
//! - [`Known`]: each subject's Redis state as this node last saw it (every decision Redis made
//!   for it here).
//! - [`Outage`]: local decisions, each node spending only its share of what was left when the
//!   outage began — `1/N` of every window's remaining count, `N` the live data planes (from the
//!   heartbeat they keep in Redis) — with the per-minute bucket refilling at `rate / N`.
//! - [`Ledger`]: what the node admitted on its own (to add to Redis) and what Redis counted for
//!   requests it did not admit (calls answered after the node had stopped waiting: to take back),
//!   per subject and period; reconciled when Redis answers again.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use foldhash::fast::RandomState;
use foldhash::{HashMap, HashMapExt};

use super::swept::Swept;
use super::{
    Decision, Params, State, Subject, Window, WindowState, as_i64, ceil_div, lock, longest_wait,
};

const SHARDS: usize = 64;

fn shard_of(hasher: &RandomState, subject: Subject) -> usize {
    #[allow(clippy::cast_possible_truncation)] // only the low bits pick a shard
    let h = hasher.hash_one(subject) as usize;
    h % SHARDS
}

type KnownMap = Swept<Subject, (State, i64)>;

/// The last Redis state of each subject this node decided, with when it was seen: one map per
/// thread that decides (a request writes nothing another core writes), all read when an outage
/// starts.
pub struct Known {
    id: u64,
    threads: Mutex<Vec<Arc<Mutex<KnownMap>>>>,
}

static NEXT_KNOWN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// This thread's maps, by [`Known`] (one in a data plane; tests run several in a process).
    static MINE: std::cell::RefCell<Vec<(u64, Arc<Mutex<KnownMap>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Default for Known {
    fn default() -> Self {
        Self {
            id: NEXT_KNOWN_ID.fetch_add(1, Ordering::Relaxed),
            threads: Mutex::new(Vec::new()),
        }
    }
}

/// How long a remembered state is worth keeping: a state older than a day says nothing of a
/// window still running (day windows end within it; month counts come from the database).
const KNOWN_FOR_US: i64 = 86_400_000_000;

impl Known {
    pub fn remember(&self, subject: Subject, state: State, now_us: i64) {
        MINE.with_borrow_mut(|mine| {
            let map = if let Some((_, map)) = mine.iter().find(|(id, _)| *id == self.id) {
                map
            } else {
                let m = Arc::new(Mutex::new(KnownMap::default()));
                lock(&self.threads).push(m.clone());
                mine.push((self.id, m));
                &mine[mine.len() - 1].1
            };
            lock(map)
                .swept(|_, (_, at)| *at + KNOWN_FOR_US > now_us)
                .insert(subject, (state, now_us));
        });
    }

    /// The latest state any thread saw of `subject`.
    pub fn get(&self, subject: Subject) -> Option<State> {
        let maps: Vec<Arc<Mutex<KnownMap>>> = lock(&self.threads).clone();
        maps.iter()
            .filter_map(|m| lock(m).swept(|_, _| true).get(&subject).copied())
            .max_by_key(|(s, at)| (*at, s.day_count, s.month_count, s.tat_us))
            .map(|(s, _)| s)
    }
}

/// A node's share of one subject's windows during an outage.
#[derive(Debug, Clone, Copy)]
struct Share {
    /// GCRA arrival time of the node's bucket: capacity `burst`, one request per `interval_us`.
    tat_us: i64,
    interval_us: i64,
    burst: u64,
    /// (period id, requests this node may still admit in it)
    day: Option<(i64, u64)>,
    month: Option<(i64, u64)>,
    nodes: u64,
}

impl Share {
    /// The share of `nodes` data planes of what `base` (the last Redis state) left.
    fn of(p: &Params, base: &State, nodes: u64) -> Self {
        let nodes = nodes.max(1);
        let n = as_i64(nodes);
        let burst = as_i64(p.burst);
        let tat = base.tat_us.max(p.now_us);
        let avail = ((p.now_us + burst * p.interval_us - tat) / p.interval_us).clamp(0, burst);
        let interval_us = p.interval_us.saturating_mul(n);
        let node_burst = (p.burst / nodes).max(1);
        // What this node may send at once now: its share of what the bucket held, rounded down.
        let node_avail = (avail / n).min(as_i64(node_burst));
        let left_in = |window: Option<(u64, super::Period)>, id: i64, count: u64| {
            window.map(|(limit, per)| {
                let used = if id == per.id { count } else { 0 };
                (per.id, limit.saturating_sub(used) / nodes)
            })
        };
        Self {
            tat_us: p.now_us + (as_i64(node_burst) - node_avail) * interval_us,
            interval_us,
            burst: node_burst,
            day: left_in(p.day, base.day_id, base.day_count),
            month: left_in(p.month, base.month_id, base.month_count),
            nodes,
        }
    }

    /// A window that rolled over during the outage starts with its share of the whole limit.
    fn roll(&mut self, p: &Params) {
        let nodes = self.nodes;
        for (mine, plan) in [(&mut self.day, p.day), (&mut self.month, p.month)] {
            match (mine.as_mut(), plan) {
                (Some((id, left)), Some((limit, per))) if *id != per.id => {
                    *id = per.id;
                    *left = limit / nodes;
                }
                (None, Some((limit, per))) => *mine = Some((per.id, limit / nodes)),
                _ => {}
            }
        }
    }

    /// Requests (of `p.cost` units) this share admits now, after rolling its periods.
    fn avail(&mut self, p: &Params) -> u64 {
        self.roll(p);
        let cost = p.units();
        let minute = self.minute_units(p) / cost;
        let left = |w: Option<(i64, u64)>| w.map_or(u64::MAX, |(_, l)| l / cost);
        minute.min(left(self.day)).min(left(self.month))
    }

    fn minute_units(&self, p: &Params) -> u64 {
        let burst = as_i64(self.burst);
        let tat = self.tat_us.max(p.now_us);
        u64::try_from((p.now_us + burst * self.interval_us - tat) / self.interval_us).unwrap_or(0)
    }

    /// Decides one request: admitted (and spent) when `admit`, which the caller sets only when
    /// [`Self::avail`] said so here and in every other share the request is counted in.
    fn settle(&mut self, p: &Params, admit: bool) -> Decision {
        let burst = as_i64(self.burst);
        let cost = p.units();
        let refused_here = self.avail(p) == 0;
        let tat = self.tat_us.max(p.now_us);
        let minute_units = self.minute_units(p);
        let day_left = self.day.map_or(u64::MAX, |(_, l)| l);
        let month_left = self.month.map_or(u64::MAX, |(_, l)| l);
        let (hit, wait_us) = if admit {
            self.tat_us = tat + as_i64(cost) * self.interval_us;
            for (_, left) in [self.day.as_mut(), self.month.as_mut()]
                .into_iter()
                .flatten()
            {
                *left -= cost;
            }
            (Window::Minute, 0)
        } else {
            longest_wait(
                p,
                (minute_units < cost).then(|| {
                    tat + as_i64(cost) * self.interval_us - burst * self.interval_us - p.now_us
                }),
                day_left < cost,
                month_left < cost,
            )
        };
        let used_us = self.tat_us.max(p.now_us) - p.now_us;
        let mut windows = arrayvec::ArrayVec::new();
        windows.push(WindowState {
            window: Window::Minute,
            level: p.level,
            limit: p.requests_per_minute,
            remaining: u64::try_from((burst * self.interval_us - used_us) / self.interval_us)
                .unwrap_or(0),
            reset_ms: ceil_div(used_us, 1_000),
        });
        for (window, plan, mine) in [
            (Window::Day, p.day, self.day),
            (Window::Month, p.month, self.month),
        ] {
            if let (Some((limit, per)), Some((_, left))) = (plan, mine) {
                windows.push(WindowState {
                    window,
                    level: p.level,
                    limit,
                    remaining: left,
                    reset_ms: ceil_div(per.end_us - p.now_us, 1_000),
                });
            }
        }
        let unattainable = p.unattainable();
        let mut decision = Decision {
            allowed: admit,
            hit: (!admit && refused_here).then(|| unattainable.map_or(hit, |(w, _)| w)),
            level: p.level,
            retry_after_ms: if admit || unattainable.is_some() {
                0
            } else {
                ceil_div(wait_us, 1_000)
            },
            windows: arrayvec::ArrayVec::new(),
            extra: None,
        };
        decision.place(p.level, windows);
        decision.set_too_costly(
            unattainable
                .filter(|_| !admit)
                .map(|(_, holds)| (cost, holds)),
        );
        decision
    }
}

/// Local decisions while Redis is down: per subject, the node's [`Share`].
pub struct Outage {
    shards: Vec<Mutex<HashMap<Subject, Share>>>,
    hasher: RandomState,
    subjects: AtomicUsize,
}

impl Default for Outage {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::default(),
            subjects: AtomicUsize::new(0),
        }
    }
}

impl Outage {
    /// Whether this outage has decided for `subject` already.
    pub fn has(&self, subject: Subject) -> bool {
        lock(&self.shards[shard_of(&self.hasher, subject)]).contains_key(&subject)
    }

    /// Decides one request of `subject`, starting its share from `base` (what Redis last said of
    /// it, or what the database holds) among `nodes` data planes when it has none yet.
    pub fn decide(&self, subject: Subject, p: &Params, base: &State, nodes: u64) -> Decision {
        self.decide_linked([(subject, p, base)], nodes)
    }

    /// Decides one request counted in several subjects' windows (a route's and the plan's):
    /// admitted only when every share admits it, spent from all of them or from none.
    pub fn decide_linked<const N: usize>(
        &self,
        asks: [(Subject, &Params, &State); N],
        nodes: u64,
    ) -> Decision {
        let at = asks.map(|(s, _, _)| shard_of(&self.hasher, s));
        let mut locked = super::lock_shards(&self.shards, at);
        let mut i = 0;
        let mut shares: [Share; N] = asks.map(|(subject, p, base)| {
            let map = locked.get(at[i]);
            i += 1;
            *map.entry(subject).or_insert_with(|| {
                self.subjects.fetch_add(1, Ordering::Relaxed);
                Share::of(p, base, nodes)
            })
        });
        let admit = shares
            .iter_mut()
            .zip(&asks)
            .all(|(share, (_, p, _))| share.avail(p) >= 1);
        let mut decisions: arrayvec::ArrayVec<Decision, N> = shares
            .iter_mut()
            .zip(&asks)
            .map(|(share, (_, p, _))| share.settle(p, admit))
            .collect();
        for ((share, (subject, _, _)), shard) in shares.iter().zip(&asks).zip(at) {
            locked.get(shard).insert(*subject, *share);
        }
        match decisions.len() {
            1 => decisions.swap_remove(0),
            _ => super::merge(&decisions),
        }
    }

    /// Forgets every share: the next outage starts from what Redis says then.
    pub fn clear(&self) {
        for s in &self.shards {
            lock(s).clear();
        }
        self.subjects.store(0, Ordering::Relaxed);
    }
}

/// Changes to one subject's day and month counters in Redis, per period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// (day period id, requests to add; negative: to take back)
    pub day: (i64, i64),
    pub month: (i64, i64),
}

/// What is owed to Redis once it answers again.
#[derive(Default)]
pub struct Ledger {
    entries: Mutex<HashMap<Subject, Delta>>,
    /// Calls sent to Redis whose answer this node stopped waiting for and has not seen yet.
    in_doubt: AtomicUsize,
}

impl Ledger {
    /// Adds `n` requests of `subject` (negative: takes them back) in the periods of `p`; an
    /// entry of an earlier period of a window is replaced (that period is over).
    /// Counts are in units: `n` requests of `p.cost` units each.
    pub fn add(&self, subject: Subject, p: &Params, n: i64) {
        if n == 0 || (p.day.is_none() && p.month.is_none()) {
            return;
        }
        let n = n.saturating_mul(as_i64(p.units()));
        let mut entries = lock(&self.entries);
        let e = entries.entry(subject).or_default();
        for (slot, window) in [(&mut e.day, p.day), (&mut e.month, p.month)] {
            if let Some((_, per)) = window {
                if slot.0 == per.id {
                    slot.1 += n;
                } else {
                    *slot = (per.id, n);
                }
            }
        }
    }

    /// Everything owed, emptying the ledger.
    pub fn take(&self) -> Vec<(Subject, Delta)> {
        lock(&self.entries)
            .drain()
            .filter(|(_, d)| d.day.1 != 0 || d.month.1 != 0)
            .collect()
    }

    /// Puts back what could not be reconciled (a later entry of the same subject wins a period
    /// it shares by adding up).
    pub fn restore(&self, owed: Vec<(Subject, Delta)>) {
        let mut entries = lock(&self.entries);
        for (subject, d) in owed {
            let e = entries.entry(subject).or_default();
            for (slot, back) in [(&mut e.day, d.day), (&mut e.month, d.month)] {
                if slot.0 == back.0 || slot.1 == 0 {
                    *slot = (back.0, slot.1 + back.1);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.entries).is_empty()
    }

    pub fn in_doubt(&self) -> usize {
        self.in_doubt.load(Ordering::Acquire)
    }
}

/// A request whose Redis call was sent and not answered in time: the call may still run. The
/// node's own decision and Redis's late answer meet here, and the difference goes to the
/// [`Ledger`]: admitted here and granted there, nothing; admitted here only, added; granted there
/// only (refused here, or a lease never installed), taken back.
pub struct LateCell {
    ledger: Arc<Ledger>,
    subject: Subject,
    params: Params,
    /// (granted by this node, granted by Redis — 0 when its answer never came), each once known
    sides: Mutex<(Option<u64>, Option<u64>)>,
}

impl LateCell {
    pub(crate) fn new(ledger: Arc<Ledger>, subject: Subject, params: Params) -> Arc<Self> {
        ledger.in_doubt.fetch_add(1, Ordering::AcqRel);
        Arc::new(Self {
            ledger,
            subject,
            params,
            sides: Mutex::new((None, None)),
        })
    }

    /// Redis's answer after all (`None`: it never came, the call is taken as not run).
    pub(crate) fn answered(&self, granted: Option<u64>) {
        let mut sides = lock(&self.sides);
        if sides.1.is_none() {
            sides.1 = Some(granted.unwrap_or(0));
            self.ledger.in_doubt.fetch_sub(1, Ordering::AcqRel);
            self.settle(&sides);
        }
    }

    fn decided(&self, granted: u64) {
        let mut sides = lock(&self.sides);
        if sides.0.is_none() {
            sides.0 = Some(granted);
            self.settle(&sides);
        }
    }

    fn settle(&self, sides: &(Option<u64>, Option<u64>)) {
        if let (Some(here), Some(there)) = *sides {
            self.ledger
                .add(self.subject, &self.params, as_i64(here) - as_i64(there));
        }
    }
}

/// The node's side of a [`LateCell`]: what it decided for the request (nothing admitted when
/// dropped undecided).
/// A request counted in several subjects' windows (a route's and the plan's) has a cell for each.
pub struct LateTicket(pub(crate) Vec<Arc<LateCell>>);

impl LateTicket {
    pub fn decided(self, granted: u64) {
        for cell in &self.0 {
            cell.decided(granted);
        }
    }
}

impl Drop for LateTicket {
    fn drop(&mut self) {
        for cell in &self.0 {
            cell.decided(0);
        }
    }
}

impl std::fmt::Debug for LateTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LateTicket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanLimits;

    const S: Subject = Subject::Key {
        tenant_id: 1,
        key_id: 2,
    };

    fn params(rpm: i64, burst: i64, day: i64, now_ms: i64) -> Params {
        Params::new(
            &PlanLimits::new(rpm, Some(burst), Some(day), None).unwrap(),
            now_ms,
        )
    }

    const T0: i64 = 1_795_000_000_000;

    #[test]
    fn each_of_n_nodes_spends_its_share_of_what_was_left() {
        let p = params(50, 50, 50, T0);
        // Redis had counted 10 of the day and the bucket had 40 left.
        let base = State {
            tat_us: p.now_us + 10 * p.interval_us,
            day_id: p.day.unwrap().1.id,
            day_count: 10,
            ..State::default()
        };
        let outage = Outage::default();
        let admitted = (0..100)
            .filter(|_| outage.decide(S, &p, &base, 2).allowed)
            .count();
        assert_eq!(admitted, 20, "half of the 40 left");
        // The bucket refills at half the plan's rate: one per 2.4 s here.
        let later = params(50, 50, 50, T0 + 2_400);
        assert!(
            !outage.decide(S, &later, &base, 2).allowed,
            "the day share is spent"
        );
        let outage = Outage::default();
        let fresh = params(50, 50, 1_000, T0);
        let n = (0..100)
            .filter(|_| outage.decide(S, &fresh, &base, 2).allowed)
            .count();
        assert_eq!(n, 20, "the minute share: half of the 40 the bucket held");
        let refilled = params(50, 50, 1_000, T0 + 2_400);
        assert!(outage.decide(S, &refilled, &base, 2).allowed);
        assert!(!outage.decide(S, &refilled, &base, 2).allowed);
    }

    #[test]
    fn linked_shares_admit_together_or_spend_nothing_and_count_costs_in_units() {
        let plan = params(60, 10, 100, T0).costing(2);
        let route = params(60, 4, 100, T0).costing(2).of_route();
        let r = Subject::Route {
            tenant_id: 1,
            route_id: 5,
            owner: super::super::RouteOwner::key(2),
        };
        let outage = Outage::default();
        let fresh = State::default();
        let decide = || outage.decide_linked([(S, &plan, &fresh), (r, &route, &fresh)], 1);
        for _ in 0..2 {
            assert!(decide().allowed);
        }
        // The route's 4 units are spent (2 requests of 2): refused by it, the plan untouched.
        let d = decide();
        assert_eq!((d.allowed, d.level), (false, super::super::Level::Route));
        let alone = outage.decide(S, &plan, &fresh, 1);
        assert!(alone.allowed);
        let minute = alone
            .windows
            .iter()
            .find(|w| w.window == Window::Minute)
            .unwrap();
        assert_eq!(minute.remaining, 10 - 3 * 2, "three requests of 2 units");
    }

    #[test]
    fn a_late_answer_and_the_nodes_decision_settle_to_what_was_admitted() {
        let p = params(60, 60, 100, T0);
        let ledger = Arc::new(Ledger::default());
        // (admitted here, granted by Redis) -> owed
        for (here, there, owed) in [
            (1, Some(1), 0),
            (1, Some(0), 1),
            (0, Some(1), -1),
            (1, None, 1),
            (0, Some(128), -128),
        ] {
            let cell = LateCell::new(ledger.clone(), S, p);
            assert_eq!(ledger.in_doubt(), 1);
            // Either order.
            if here == 1 {
                cell.answered(there);
                LateTicket(vec![cell.clone()]).decided(here);
            } else {
                drop(LateTicket(vec![cell.clone()]));
                cell.answered(there);
            }
            assert_eq!(ledger.in_doubt(), 0);
            let owed_now: i64 = ledger.take().iter().map(|(_, d)| d.day.1).sum();
            assert_eq!(owed_now, owed, "{here} {there:?}");
        }
    }
}
