//! Route selection: path patterns, host ids and the lazy DFA over all routes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::pool::Pool;
use regex_automata::util::start;
use regex_automata::Anchored;

use crate::request::Request;

use super::*;

/// A route path pattern, matched exactly as `eval::match_path` does.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// `"/*"`: every path starting with `/`.
    Any,
    /// Segments split on `/`; `star` for a trailing `/*` (the prefix and anything below it).
    Segs { segs: Vec<Seg>, star: bool },
}

#[derive(Debug, Clone)]
pub enum Seg {
    Lit(String),
    Param(String),
}

impl PathPattern {
    pub fn parse(pattern: &str) -> PathPattern {
        if pattern == "/*" {
            return PathPattern::Any;
        }
        let mut parts: Vec<&str> = pattern.split('/').collect();
        let star = parts.len() > 1 && parts.last() == Some(&"*");
        if star {
            parts.pop();
        }
        let segs = parts
            .into_iter()
            .map(|p| match p.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                Some(name) => Seg::Param(name.to_string()),
                None => Seg::Lit(p.to_string()),
            })
            .collect();
        PathPattern::Segs { segs, star }
    }

    /// The params of a path the automaton already matched: only the param segments are read
    /// (the literal ones are known to be equal).
    pub fn params_of_match(&self, path: &str) -> Vec<(String, String)> {
        let PathPattern::Segs { segs, .. } = self else { return vec![] };
        if !segs.iter().any(|s| matches!(s, Seg::Param(_))) {
            return vec![];
        }
        segs.iter()
            .zip(path.split('/'))
            .filter_map(|(seg, s)| match seg {
                Seg::Param(name) => Some((name.clone(), s.to_string())),
                Seg::Lit(_) => None,
            })
            .collect()
    }

    /// The captured params if `path` matches.
    pub fn capture(&self, path: &str) -> Option<Vec<(String, String)>> {
        let (segs, star) = match self {
            PathPattern::Any => return path.starts_with('/').then(Vec::new),
            PathPattern::Segs { segs, star } => (segs, *star),
        };
        let mut params = vec![];
        let mut it = path.split('/');
        for seg in segs {
            let s = it.next()?;
            match seg {
                Seg::Lit(l) => {
                    if l != s {
                        return None;
                    }
                }
                Seg::Param(name) => {
                    if s.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), s.to_string()));
                }
            }
        }
        (star || it.next().is_none()).then_some(params)
    }
}

pub type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// Route selection. Host patterns are resolved to small ids first (hash lookups), so a random
/// `Host` header cannot make the automaton build states proportional to the route count.
/// Routes whose path is a plain literal are found in a hash map; the others (`{param}`, `*`)
/// are one lazy DFA over `path 0xFF host-token`, one pattern per route. A DFA over every
/// literal path would be a byte trie of all of them: with thousands of routes and traffic
/// spread over them, its lazily built states outgrow any sensible cache and it thrashes.
pub struct Router {
    /// Literal path → (route index, host pattern id), ascending.
    pub literal: LiteralMap,
    /// None when no route needs it.
    pub automaton: Option<Automaton>,
    /// Pattern id → route index.
    pub pattern_route: Vec<u32>,
    /// Route index → host pattern id (None: any host), for the fallback scan.
    pub route_host: Vec<Option<u32>>,
    /// Exact host (lower-cased) → id.
    pub host_exact: HostMap,
    /// Wildcard suffix (`*.` removed, as written) → id.
    pub host_wild: HostMap,
    pub token_width: usize,
    pub nfa_bytes: usize,
    pub cache_bytes: usize,
}

/// Host lookups use a fast unkeyed hash: the maps are built from the policy and only ever
/// looked up with request data, so colliding lookups cannot grow them.
pub type HostMap = HashMap<String, u32, std::hash::BuildHasherDefault<FastHasher>>;
pub type LiteralMap = HashMap<String, Vec<(u32, Option<u32>)>, std::hash::BuildHasherDefault<FastHasher>>;

/// FxHash-style: a multiply-rotate over 8-byte words.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// `Request::routing_host` without an allocation when the host is already normal.
pub fn routing_host(req: &Request) -> std::borrow::Cow<'_, str> {
    let raw = if req.host.is_empty() { req.header("host").unwrap_or("") } else { req.host.as_str() };
    let normal = !raw.starts_with('[')
        && !raw.contains(':')
        && !raw.bytes().any(|b| b.is_ascii_uppercase())
        && raw.trim().len() == raw.len();
    if normal {
        std::borrow::Cow::Borrowed(raw)
    } else {
        std::borrow::Cow::Owned(crate::request::normalize_host(raw))
    }
}

/// The lazy DFA and a pool of per-thread caches for it.
pub struct Automaton {
    pub dfa: Arc<DFA>,
    pub pool: Pool<Cache, CacheFn>,
}

/// The byte that separates the path from the host token: never part of UTF-8 text.
pub const SEP: u8 = 0xFF;

/// The fixed-width host token for a host pattern id: base-255 digits, never `SEP`.
pub fn host_token(id: u32, width: usize) -> [u8; 4] {
    let mut out = [0u8; 4];
    let mut n = id;
    for i in (0..width.min(4)).rev() {
        if let Some(b) = out.get_mut(i) {
            *b = (n % 255) as u8;
        }
        n /= 255;
    }
    out
}

impl Router {
    /// Ids of the host patterns `host` (lower-cased, no port) matches, ascending.
    pub(super) fn host_ids(&self, host: &str) -> Vec<u32> {
        let mut ids = vec![];
        if let Some(id) = self.host_exact.get(host) {
            ids.push(*id);
        }
        if !self.host_wild.is_empty() {
            // `*.suffix` matches `X.suffix` for a non-empty X: look up every suffix after a dot.
            for (j, _) in host.match_indices('.').filter(|(j, _)| *j >= 1) {
                if let Some(id) = host.get(j + 1..).and_then(|s| self.host_wild.get(s)) {
                    ids.push(*id);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The candidate routes (host and path match, any method), ascending = priority order.
    pub(super) fn candidates(&self, routes: &[RouteRt], path: &str, hosts: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(rs) = self.literal.get(path) {
            for (route, host) in rs {
                if host.is_none_or(|h| hosts.contains(&h)) {
                    out.push(*route);
                }
            }
        }
        if self.search(path.as_bytes(), hosts, &mut out).is_err() {
            // The lazy DFA cannot fail as configured; if it ever does, scan (same answer).
            out.clear();
            for (i, r) in routes.iter().enumerate() {
                let host_ok = match self.route_host.get(i).copied().flatten() {
                    None => true,
                    Some(h) => hosts.contains(&h),
                };
                if r.routable && host_ok && r.path.capture(path).is_some() {
                    out.push(i as u32);
                }
            }
            return out;
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn search(&self, path: &[u8], hosts: &[u32], out: &mut Vec<u32>) -> Result<(), ()> {
        let Some(Automaton { dfa, pool }) = &self.automaton else { return Ok(()) };
        let mut guard = pool.get();
        let cache: &mut Cache = &mut guard;
        let walk_path = |cache: &mut Cache| -> Result<Option<LazyStateID>, ()> {
            let mut sid = dfa.start_state(cache, &start::Config::new().anchored(Anchored::Yes)).map_err(|_| ())?;
            for &b in path.iter().chain(std::iter::once(&SEP)) {
                sid = dfa.next_state(cache, sid, b).map_err(|_| ())?;
                if sid.is_dead() {
                    return Ok(None);
                }
            }
            Ok(Some(sid))
        };
        let mut clears = cache.clear_count();
        let Some(mut after_path) = walk_path(cache)? else { return Ok(()) };
        self.collect(dfa, cache, after_path, out)?;
        for &h in hosts {
            if cache.clear_count() != clears {
                // A cache clear invalidated the saved state: walk the path again.
                clears = cache.clear_count();
                match walk_path(cache)? {
                    Some(s) => after_path = s,
                    None => return Ok(()),
                }
            }
            let token = host_token(h, self.token_width);
            let mut sid = after_path;
            for &b in token.get(..self.token_width).unwrap_or(&[]) {
                sid = dfa.next_state(cache, sid, b).map_err(|_| ())?;
                if sid.is_dead() {
                    break;
                }
            }
            if !sid.is_dead() {
                self.collect(dfa, cache, sid, out)?;
            }
        }
        Ok(())
    }

    fn collect(&self, dfa: &DFA, cache: &mut Cache, sid: LazyStateID, out: &mut Vec<u32>) -> Result<(), ()> {
        let end = dfa.next_eoi_state(cache, sid).map_err(|_| ())?;
        if end.is_match() {
            for i in 0..dfa.match_len(cache, end) {
                let pid = dfa.match_pattern(cache, end, i);
                let route = self.pattern_route.get(pid.as_usize()).ok_or(())?;
                out.push(*route);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("literal_paths", &self.literal.len())
            .field("patterns", &self.pattern_route.len())
            .field("host_patterns", &(self.host_exact.len() + self.host_wild.len()))
            .field("nfa_bytes", &self.nfa_bytes)
            .finish()
    }
}
