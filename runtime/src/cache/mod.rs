//! The response cache (`cache TTL ...` on a route): stored answers, in this process's memory
//! (`memory`, bounded per route, least recently used first out) or, with `state redis`, in
//! Redis (`redis`), where every replica shares them. Which requests are the same, and which
//! bypass the cache, is `gw_engine::cache`, shared with gw-check's test runner. A store that
//! fails is a miss, never an error: the cache only ever saves upstream work.

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::redis_store::RedisStore;
use crate::store::Limiter;

/// One stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
}

impl Entry {
    /// Bytes held: the body and header names and values, plus a little per header.
    pub fn size(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        (self.body.len() + headers + 64) as u64
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The cache of every route: in memory, or in Redis when the limiter's store is Redis.
#[derive(Default)]
pub struct ResponseCache {
    pub memory: memory::MemoryCache,
}

/// Where a lookup or store goes.
pub enum Backend<'a> {
    Memory(&'a memory::MemoryCache),
    Redis(&'a RedisStore),
    /// Redis is failing (the limiter's fallback is on): every lookup is a miss at once,
    /// rather than a wait for a timeout on each request.
    Down,
}

impl ResponseCache {
    pub fn backend<'a>(&'a self, limiter: &'a Limiter) -> Backend<'a> {
        match limiter.redis() {
            Some(_) if limiter.redis_down() => Backend::Down,
            Some(r) => Backend::Redis(r),
            None => Backend::Memory(&self.memory),
        }
    }
}

impl Backend<'_> {
    /// The live entry for `key`, if any. A Redis failure is a miss.
    pub async fn get(&self, route: &str, key: &str) -> Option<Arc<Entry>> {
        let now = now_ms();
        match self {
            Backend::Memory(m) => m.get(route, key, now),
            Backend::Redis(r) => redis::get(r, key, now).await.map(Arc::new),
            Backend::Down => None,
        }
    }

    /// Store an entry; returns how many entries were evicted, or None when it was not stored.
    pub async fn put(&self, route: &str, key: &str, entry: Entry, max_bytes: u64) -> Option<u64> {
        match self {
            Backend::Memory(m) => {
                let s = m.put(route, key, entry, max_bytes);
                s.stored.then_some(s.evicted)
            }
            Backend::Redis(r) => redis::put(r, key, &entry, max_bytes).await.then_some(0),
            Backend::Down => None,
        }
    }
}
