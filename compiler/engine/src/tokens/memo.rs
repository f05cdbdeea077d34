//! Token counts remembered per text: system prompts, tool definitions and conversation history
//! repeat from request to request, and counting them again costs the same BPE work each time.
//!
//! Keyed by the encoding, the text's length and a keyed SipHash of it (a random key per
//! process, so no client can aim two texts at one entry). Bounded: each of [`SHARDS`] shards
//! holds at most [`SHARD_ENTRIES`] counts and is emptied when full (about 350 KB in all).
//! Only texts of at least [`MIN_BYTES`] are remembered: shorter ones count faster than a lookup
//! pays back.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Texts shorter than this are counted, not remembered.
pub const MIN_BYTES: usize = 128;
pub const SHARDS: usize = 8;
/// Counts per shard at most.
pub const SHARD_ENTRIES: usize = 1024;

type Key = (u8, usize, u64);

struct Memo {
    hasher: RandomState,
    shards: [Mutex<HashMap<Key, u64>>; SHARDS],
}

static MEMO: OnceLock<Memo> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

fn memo() -> &'static Memo {
    MEMO.get_or_init(|| Memo { hasher: RandomState::new(), shards: std::array::from_fn(|_| Mutex::default()) })
}

/// The count of `text` in encoding number `enc`: remembered, or counted by `count` and
/// remembered.
pub fn count(enc: u8, text: &str, count: impl FnOnce() -> u64) -> u64 {
    if text.len() < MIN_BYTES {
        return count();
    }
    let memo = memo();
    let hash = memo.hasher.hash_one((enc, text));
    let key = (enc, text.len(), hash);
    let shard = &memo.shards[(hash as usize) % SHARDS];
    if let Some(n) = shard.lock().ok().and_then(|m| m.get(&key).copied()) {
        HITS.fetch_add(1, Ordering::Relaxed);
        return n;
    }
    MISSES.fetch_add(1, Ordering::Relaxed);
    // Counted outside the lock: two threads may count the same text once each.
    let n = count();
    if let Ok(mut m) = shard.lock() {
        if m.len() >= SHARD_ENTRIES {
            m.clear();
        }
        m.insert(key, n);
    }
    n
}

/// (hits, misses) since the process started, and the counts held now.
pub fn stats() -> (u64, u64, usize) {
    let held = MEMO.get().map_or(0, |m| m.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum());
    (HITS.load(Ordering::Relaxed), MISSES.load(Ordering::Relaxed), held)
}
