//! The in-memory response cache: per route, a byte-bounded map evicting the least recently
//! used entry first. An entry's size counts its key, headers and body; one that alone exceeds
//! the route's bound is not stored. Expired entries go when they are next read, or when the
//! bound needs their room (oldest use first, expired or not).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::Entry;

#[derive(Default)]
pub struct MemoryCache {
    routes: Mutex<HashMap<String, RouteLru>>,
}

#[derive(Default)]
struct RouteLru {
    used: u64,
    /// A counter of uses: the order of `order`.
    tick: u64,
    entries: HashMap<String, Slot>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, String>,
}

struct Slot {
    entry: Arc<Entry>,
    last_use: u64,
    size: u64,
}

/// What a store did, for the metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub stored: bool,
    pub evicted: u64,
}

impl MemoryCache {
    /// The live entry under `key`, marked as just used.
    pub fn get(&self, route: &str, key: &str, now_ms: u64) -> Option<Arc<Entry>> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let lru = routes.get_mut(route)?;
        let slot = lru.entries.get(key)?;
        if slot.entry.expires_at_ms <= now_ms {
            lru.remove(key);
            return None;
        }
        let entry = slot.entry.clone();
        lru.touch(key);
        Some(entry)
    }

    /// Store `entry`, evicting the least recently used entries until the route's cache holds at
    /// most `max_bytes`.
    pub fn put(&self, route: &str, key: &str, entry: Entry, max_bytes: u64) -> Stored {
        let size = entry.size() + key.len() as u64;
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let lru = routes.entry(route.to_string()).or_default();
        lru.remove(key);
        let mut out = Stored::default();
        if size > max_bytes {
            return out;
        }
        while lru.used + size > max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else { break };
            if let Some(slot) = lru.entries.remove(&oldest) {
                lru.used -= slot.size;
                out.evicted += 1;
            }
        }
        lru.tick += 1;
        lru.order.insert(lru.tick, key.to_string());
        lru.entries.insert(key.to_string(), Slot { entry: Arc::new(entry), last_use: lru.tick, size });
        lru.used += size;
        out.stored = true;
        out
    }

    /// (entries, bytes) held for a route.
    pub fn usage(&self, route: &str) -> (usize, u64) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.get(route).map_or((0, 0), |l| (l.entries.len(), l.used))
    }
}

impl RouteLru {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.entries.remove(key) {
            self.order.remove(&slot.last_use);
            self.used -= slot.size;
        }
    }

    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(slot) = self.entries.get_mut(key) {
            self.order.remove(&slot.last_use);
            slot.last_use = tick;
            self.order.insert(tick, key.to_string());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(body: usize, expires_at_ms: u64) -> Entry {
        Entry { status: 200, headers: vec![], body: vec![b'x'; body].into(), stored_at_ms: 0, expires_at_ms }
    }

    #[test]
    fn least_recently_used_goes_first_and_the_bound_holds() {
        let c = MemoryCache::default();
        let max = 3 * (100 + 1 + 64);
        for k in ["a", "b", "c"] {
            assert!(c.put("r", k, entry(100, 1_000), max).stored);
        }
        assert!(c.get("r", "a", 0).is_some()); // a is now the most recent
        let s = c.put("r", "d", entry(100, 1_000), max);
        assert_eq!(s, Stored { stored: true, evicted: 1 });
        assert!(c.get("r", "b", 0).is_none(), "b was the least recently used");
        assert!(c.get("r", "a", 0).is_some() && c.get("r", "c", 0).is_some() && c.get("r", "d", 0).is_some());
        assert!(c.usage("r").1 <= max);
        // Too large alone: not stored, nothing evicted.
        assert_eq!(c.put("r", "e", entry(10_000, 1_000), max), Stored::default());
        assert_eq!(c.usage("r").0, 3);
    }

    #[test]
    fn an_expired_entry_is_gone_and_routes_are_apart() {
        let c = MemoryCache::default();
        c.put("r", "k", entry(10, 500), 10_000);
        assert!(c.get("other", "k", 0).is_none());
        assert!(c.get("r", "k", 499).is_some());
        assert!(c.get("r", "k", 500).is_none());
        assert_eq!(c.usage("r"), (0, 0));
    }
}
