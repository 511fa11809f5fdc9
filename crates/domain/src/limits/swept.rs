//! Maps of per-subject state that drop their expired entries as they grow.

use std::hash::Hash;

use foldhash::{HashMap, HashMapExt};

/// The smallest size at which a map is swept.
pub const MIN_SWEEP_AT: usize = 4_096;

/// A map swept when it reaches twice the size it kept at its last sweep (at least
/// [`MIN_SWEEP_AT`]): when every entry is live, it is not scanned again until it has doubled,
/// instead of on every insert.
pub struct Swept<K, V> {
    map: HashMap<K, V>,
    sweep_at: usize,
}

impl<K, V> Default for Swept<K, V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: MIN_SWEEP_AT,
        }
    }
}

impl<K: Eq + Hash, V> Swept<K, V> {
    /// The map, first sweeping out what `live` rejects when the map has grown to its sweep size.
    pub fn swept(&mut self, live: impl FnMut(&K, &mut V) -> bool) -> &mut HashMap<K, V> {
        if self.map.len() >= self.sweep_at {
            self.map.retain(live);
            self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP_AT);
        }
        &mut self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_of_live_entries_is_swept_again_only_once_it_has_doubled() {
        let mut m: Swept<usize, ()> = Swept::default();
        let mut sweeps = 0;
        for i in 0..4 * MIN_SWEEP_AT {
            m.swept(|_, ()| {
                sweeps += 1;
                true
            })
            .insert(i, ());
        }
        // Scanned at 4096 and at 8192 entries: 12,288 visits, not one scan per insert.
        assert_eq!(sweeps, MIN_SWEEP_AT + 2 * MIN_SWEEP_AT);
        assert_eq!(m.len(), 4 * MIN_SWEEP_AT);
    }

    #[test]
    fn expired_entries_go_at_a_sweep() {
        let mut m: Swept<usize, bool> = Swept::default();
        for i in 0..MIN_SWEEP_AT {
            m.swept(|_, live| *live).insert(i, i % 2 == 0);
        }
        m.swept(|_, live| *live).insert(MIN_SWEEP_AT, true);
        assert_eq!(m.len(), MIN_SWEEP_AT / 2 + 1);
    }
}
