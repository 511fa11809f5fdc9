//! The in-process counter store: the embedded default without Redis, and the fallback while Redis
//! is unreachable. Exact within one process; each process counts on its own.

use std::collections::hash_map::Entry as Slot;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::Mutex;

use super::lock;
use super::swept::Swept;
use super::{Decision, Params, State, Subject, decide, state_ttl_ms};

const SHARDS: usize = 64;

struct Entry {
    state: State,
    expires_us: i64,
}

/// Sharded maps of subject -> state; one shard lock makes a decision atomic.
pub struct LocalStore {
    shards: Vec<Mutex<Swept<Subject, Entry>>>,
    hasher: RandomState,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::default(),
        }
    }
}

impl LocalStore {
    fn shard(&self, subject: Subject) -> &Mutex<Swept<Subject, Entry>> {
        &self.shards[self.shard_index(subject)]
    }

    fn shard_index(&self, subject: Subject) -> usize {
        #[allow(clippy::cast_possible_truncation)] // only the low bits pick a shard
        let shard = (self.hasher.hash_one(subject) as usize) % SHARDS;
        shard
    }

    /// Starts `subject` from `state` (what the database recorded) unless it has a live state.
    pub fn seed(&self, subject: Subject, p: &Params, state: State) {
        let mut shard = lock(self.shard(subject));
        let map = shard.swept(|_, e| e.expires_us > p.now_us);
        let live = map.get(&subject).is_some_and(|e| e.expires_us > p.now_us);
        if !live {
            map.insert(
                subject,
                Entry {
                    state,
                    expires_us: p.now_us + state_ttl_ms(p, &state) * 1_000,
                },
            );
        }
    }

    /// [`Self::check`], or `None` (nothing decided) when the subject has day or month windows
    /// and no live state here: the caller seeds it ([`Self::seed`]) and asks again.
    pub fn check_seeded(&self, subject: Subject, p: &Params) -> Option<Decision> {
        self.decide(subject, p, p.day.is_some() || p.month.is_some())
    }

    pub fn check(&self, subject: Subject, p: &Params) -> Decision {
        self.decide(subject, p, false)
            .unwrap_or_else(|| decide(p, &State::default()).0)
    }

    fn decide(&self, subject: Subject, p: &Params, needs_seed: bool) -> Option<Decision> {
        let mut shard = lock(self.shard(subject));
        let map = shard.swept(|_, e| e.expires_us > p.now_us);
        // One lookup (one hash) whether the subject is new, current or expired.
        let slot = map.entry(subject);
        let before = match &slot {
            Slot::Occupied(e) if e.get().expires_us > p.now_us => e.get().state,
            _ if needs_seed => return None,
            _ => State::default(),
        };
        let (decision, after) = decide(p, &before);
        if let Some(after) = after {
            slot.insert_entry(Entry {
                state: after,
                expires_us: p.now_us + state_ttl_ms(p, &after) * 1_000,
            });
        }
        Some(decision)
    }

    /// One request counted in several subjects' windows (a route's and the plan's), decided
    /// together under their shards' locks: admitted by all or consumed nowhere. `Err(i)`: with
    /// `needs_seed`, subject `i` has day or month windows and no live state here — the caller
    /// seeds it and asks again.
    pub fn check_linked<const N: usize>(
        &self,
        asks: [(Subject, &Params); N],
        needs_seed: bool,
    ) -> Result<Decision, usize> {
        let at = asks.map(|(subject, _)| self.shard_index(subject));
        let mut locked = super::lock_shards(&self.shards, at);
        let mut befores = [State::default(); N];
        for (i, (subject, p)) in asks.iter().enumerate() {
            let map = locked.get(at[i]).swept(|_, e| e.expires_us > p.now_us);
            match map.get(subject) {
                Some(e) if e.expires_us > p.now_us => befores[i] = e.state,
                _ if needs_seed && (p.day.is_some() || p.month.is_some()) => return Err(i),
                _ => {}
            }
        }
        let mut i = 0;
        let (decision, afters) = super::decide_linked(asks.map(|(_, p)| {
            let ask = (p, &befores[i]);
            i += 1;
            ask
        }));
        for (i, after) in afters.into_iter().enumerate() {
            if let Some(after) = after {
                let (subject, p) = asks[i];
                locked.get(at[i]).swept(|_, _| true).insert(
                    subject,
                    Entry {
                        state: after,
                        expires_us: p.now_us + state_ttl_ms(p, &after) * 1_000,
                    },
                );
            }
        }
        Ok(decision)
    }

    /// Forgets everything (tests, and a fresh start after a long Redis outage is not needed).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
