//! A least-recently-used map bounded by bytes: decoded data blobs and decoded trees of
//! the mounted repository stay in memory up to a budget, the entry used longest ago
//! leaving first. Values are `Arc`s, so a reader keeps its blob while it is evicted.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// See the module doc.
pub struct Lru<K, V> {
    budget: usize,
    used: usize,
    tick: u64,
    /// Value, its size in bytes, and when it was last used.
    map: HashMap<K, (V, usize, u64)>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(budget: usize) -> Self {
        Lru {
            budget,
            used: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let (value, _, used_at) = self.map.get_mut(key)?;
        self.order.remove(used_at);
        *used_at = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value.clone())
    }

    /// Keep `value` (`size` bytes), evicting the least recently used entries to make
    /// room; a value larger than the whole budget is not kept.
    pub fn insert(&mut self, key: K, value: V, size: usize) {
        if let Some((_, old_size, used_at)) = self.map.remove(&key) {
            self.order.remove(&used_at);
            self.used -= old_size;
        }
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, s, _)) = self.map.remove(&oldest) {
                self.used -= s;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, size, self.tick));
        self.used += size;
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_budget_and_evicts_the_least_recently_used() {
        let mut c = Lru::new(100);
        c.insert(1, "a", 40);
        c.insert(2, "b", 40);
        assert_eq!(c.get(&1), Some("a")); // 2 is now the oldest
        c.insert(3, "c", 40);
        assert_eq!(c.get(&2), None);
        assert_eq!((c.get(&1), c.get(&3)), (Some("a"), Some("c")));
        assert_eq!(c.used(), 80);
        c.insert(4, "too big", 101);
        assert_eq!(c.get(&4), None);
        c.insert(1, "a again", 10);
        assert_eq!((c.get(&1), c.used()), (Some("a again"), 50));
    }
}
