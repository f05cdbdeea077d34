//! The decision graph: the immutable product of compilation and the only thing the runtime
//! reads. Route selection is one walk of a multi-pattern lazy DFA; everything after it is a
//! flat, hash-consed program over interned request facts. `decide` must agree with
//! `eval::decide` on every program and request (`Decision::same_decision`).

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::pool::Pool;
use regex_automata::util::start;
use regex_automata::Anchored;
use serde::{Serialize, Serializer};

use crate::ast::{Auth, BinOp, Fact, ForwardedMode, Func, Method, OnError, PathSeg};
use crate::eval;
use crate::ijson::{self, BodyError};
use crate::keys::LoadedKeys;
use crate::request::{AppliedLimit, Decision, Identity, Outcome, Request, TraceStep};
use crate::value::{self, Undecided, Val};

// ======================================================================= public plain data

/// A string setting with its `env(...)` parts filled in at load. Secrets (anything read from
/// the environment, admin tokens, JWT secrets, salts) never leave through `Serialize` or
/// `Debug`: they print as `"<redacted>"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// None when an env var it names is unset.
    pub value: Option<String>,
    pub secret: bool,
    /// The env vars it reads, for "GW_X is unset" messages.
    pub env: Vec<String>,
}

impl Resolved {
    pub fn get(&self) -> Option<&str> {
        self.value.as_deref()
    }

    fn shown(&self) -> Option<&str> {
        match (&self.value, self.secret) {
            (None, _) => None,
            (Some(_), true) => Some(REDACTED),
            (Some(v), false) => Some(v.as_str()),
        }
    }
}

pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for Resolved {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

/// The `gateway { ... }` block with every default filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub listen: Resolved,
    pub admin: Option<AdminSettings>,
    pub state: StateSettings,
    pub audit: Option<AuditSettings>,
    pub max_body: u64,
    pub max_header_bytes: u64,
    pub max_headers: u64,
    pub header_timeout_ns: u64,
    pub idle_timeout_ns: u64,
    pub drain_timeout_ns: u64,
    pub tls: Option<TlsSettings>,
    pub policy_header: bool,
    pub forwarded: ForwardedMode,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY: u64 = 10_000_000;
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64_000;
pub const DEFAULT_MAX_HEADERS: u64 = 100;
pub const DEFAULT_HEADER_TIMEOUT_NS: u64 = 10_000_000_000;
pub const DEFAULT_IDLE_TIMEOUT_NS: u64 = 60_000_000_000;
pub const DEFAULT_DRAIN_TIMEOUT_NS: u64 = 30_000_000_000;
pub const DEFAULT_UPSTREAM_TIMEOUT_NS: u64 = 60_000_000_000;
pub const DEFAULT_CONNECT_TIMEOUT_NS: u64 = 5_000_000_000;
pub const DEFAULT_HEALTH_TIMEOUT_NS: u64 = 2_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct AdminSettings {
    pub addr: Resolved,
    pub token: Option<Resolved>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StateSettings {
    Local,
    Redis { url: Resolved, on_error: OnError },
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditSettings {
    pub path: Resolved,
    pub rotate_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsSettings {
    pub cert: Resolved,
    pub key: Resolved,
}

/// Where a route's credential may come from, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum CredentialSource {
    Header(String),
    Bearer,
    Query(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthInfo {
    /// Index into `Graph::keysets`; None if the key set is not defined (every key is invalid).
    pub keyset: Option<usize>,
    pub keyset_name: String,
    pub sources: Vec<CredentialSource>,
    pub optional: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardInfo {
    /// `allow` (refuses when the condition is false) or `deny` (refuses when it is true).
    pub kind: &'static str,
    pub status: u16,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RewriteInfo {
    Prefix { from: String, to: String },
    Path { template: String, parts: Vec<TemplatePart> },
}

/// A piece of a `rewrite path "/v2/{id}"` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum TemplatePart {
    Lit(String),
    Param(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct RespondInfo {
    pub status: u16,
    #[serde(serialize_with = "bytes_as_text")]
    pub body: Vec<u8>,
    pub content_type: Option<&'static str>,
}

fn bytes_as_text<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    String::from_utf8_lossy(b).serialize(s)
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheInfo {
    pub ttl_ns: u64,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CorsInfo {
    pub origins: Vec<String>,
    pub methods: Vec<Method>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JwtInfo {
    pub secret: Resolved,
    pub issuer: Option<String>,
}

/// What a route does once a request passes its guards.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionInfo {
    /// `to NAME`; `upstream` is None if no upstream has that name.
    Forward {
        name: String,
        upstream: Option<usize>,
    },
    Respond,
    Serve {
        builtin: String,
    },
    /// No action: the decision is `NoRoute` (check refuses such routes).
    None,
}

/// Everything the runtime needs about one route, as plain data.
#[derive(Debug, Clone, Serialize)]
pub struct RouteInfo {
    pub name: String,
    /// Position among the program's routes: `Decision::route_index`.
    pub index: usize,
    /// False for a route without `when` (never selected).
    pub routable: bool,
    pub methods: Vec<Method>,
    pub path: String,
    pub host: Option<String>,
    pub has_condition: bool,
    pub auth: Option<AuthInfo>,
    pub guards: Vec<GuardInfo>,
    /// Indices into `Graph::limits` of the route's own limits, in order.
    pub limits: Vec<usize>,
    pub set_headers: Vec<(String, Resolved)>,
    pub strip_headers: Vec<String>,
    pub rewrite: Option<RewriteInfo>,
    pub respond: Option<RespondInfo>,
    pub cache: Option<CacheInfo>,
    pub websocket: bool,
    pub cors: Option<CorsInfo>,
    pub jwt: Option<JwtInfo>,
    pub action: ActionInfo,
    pub upstream: Option<usize>,
    /// An expression of the route (condition, guard, limit) reads the JSON body.
    pub reads_body: bool,
    /// The route has a token limit: the runtime must read the body to count tokens.
    pub counts_tokens: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub url: Resolved,
    pub weight: u64,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BalanceInfo {
    RoundRobin,
    Weighted,
    LeastConn,
    /// `hash(EXPR)`: the key comes from `Graph::balance_key`.
    Hash,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthInfo {
    pub method: Method,
    pub path: String,
    pub every_ns: u64,
    pub timeout_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryInfo {
    pub attempts: u64,
    pub on_connect_error: bool,
    pub on_timeout: bool,
    pub statuses: Vec<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpstreamInfo {
    pub name: String,
    pub targets: Vec<TargetInfo>,
    pub balance: BalanceInfo,
    pub headers: Vec<(String, Resolved)>,
    pub timeout_ns: u64,
    pub connect_timeout_ns: u64,
    pub health: Option<HealthInfo>,
    pub retry: Option<RetryInfo>,
    pub max_connections: Option<u64>,
    /// The upstream declares `affinity` (region preference; not evaluated by the graph).
    pub affinity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitKindInfo {
    Rate { count: u64, window_ns: u64, burst: Option<u64> },
    Tokens { count: u64, window_ns: u64, estimate: Option<u64> },
    Concurrent { max: u64 },
}

/// What a limit's counters are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum LimitPer {
    Route,
    Key,
    Tenant,
    Client,
    Header(String),
    Expr,
}

/// Who declared a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitOwner {
    Route { route: usize, name: String },
    Tenant { name: String },
}

/// One entry of the limit table (`AppliedLimit::limit` indexes it).
#[derive(Debug, Clone, Serialize)]
pub struct LimitInfo {
    pub id: String,
    pub kind: LimitKindInfo,
    pub shadow: bool,
    pub per: LimitPer,
    pub owner: LimitOwner,
    pub model: Option<String>,
    pub conditional: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantInfo {
    pub name: String,
    /// Indices into `Graph::limits`, applied after a route's limits.
    pub limits: Vec<usize>,
    pub region: Option<String>,
}

/// A key set for the runtime. The hashes are never serialized.
#[derive(Clone, Serialize)]
pub struct KeysetInfo {
    pub name: String,
    pub len: usize,
    pub salted: bool,
    #[serde(skip)]
    pub keys: LoadedKeys,
}

impl fmt::Debug for KeysetInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysetInfo")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("salted", &self.salted)
            .finish()
    }
}

/// Sizes of the compiled graph, for `--emit json` and benchmarks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GraphStats {
    pub routes: usize,
    /// Distinct literal paths (found by hash lookup).
    pub literal_paths: usize,
    /// Patterns in the route automaton (paths with `{param}` or `*`).
    pub patterns: usize,
    pub host_patterns: usize,
    pub nodes: usize,
    pub shared_nodes: usize,
    pub facts: usize,
    pub regexes: usize,
    pub nfa_bytes: usize,
    pub dfa_cache_bytes: usize,
}

// ======================================================================= internal program

pub(crate) type NodeId = u32;

/// One operation of the flat expression program. Children always have smaller ids.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(Val),
    /// Index into `Graph::facts`.
    Fact(u32),
    List(Box<[NodeId]>),
    Not(NodeId),
    Exists(NodeId),
    /// A matcher reference: `x` as a condition (`value::cond`).
    Truthy(NodeId),
    And(NodeId, NodeId),
    Or(NodeId, NodeId),
    Bin(BinOp, NodeId, NodeId),
    /// `x matches /re/`; index into `Graph::regexes`.
    Match(NodeId, u32),
    Call(Func, Box<[NodeId]>),
}

impl Node {
    pub(crate) fn children(&self) -> Vec<NodeId> {
        match self {
            Node::Const(_) | Node::Fact(_) => vec![],
            Node::List(xs) | Node::Call(_, xs) => xs.to_vec(),
            Node::Not(x) | Node::Exists(x) | Node::Truthy(x) | Node::Match(x, _) => vec![*x],
            Node::And(a, b) | Node::Or(a, b) | Node::Bin(_, a, b) => vec![*a, *b],
        }
    }

    /// Whether the node always yields a `Val::Bool` (or the `Val::Error` of an undecided one).
    pub(crate) fn is_boolean(&self) -> bool {
        match self {
            Node::Const(v) => matches!(v, Val::Bool(_)),
            Node::Not(_)
            | Node::Exists(_)
            | Node::Truthy(_)
            | Node::And(..)
            | Node::Or(..)
            | Node::Bin(..)
            | Node::Match(..) => true,
            Node::Fact(_) | Node::List(_) | Node::Call(..) => false,
        }
    }

    /// The operator's meaning, with children produced on demand by `arg` (so `and`/`or`
    /// short-circuit). None for a fact, which needs the request.
    pub(crate) fn apply(
        &self,
        regexes: &[Option<regex_automata::meta::Regex>],
        mut arg: impl FnMut(NodeId) -> Val,
    ) -> Option<Val> {
        Some(match self {
            Node::Const(v) => v.clone(),
            Node::Fact(_) => return None,
            Node::List(xs) => value::list(xs.iter().map(|x| arg(*x)).collect()),
            Node::Not(x) => value::not(&arg(*x)),
            Node::Exists(x) => value::exists(&arg(*x)),
            Node::Truthy(x) => value::cond(&arg(*x)),
            Node::And(a, b) => {
                let a = arg(*a);
                value::and(&a, || arg(*b))
            }
            Node::Or(a, b) => {
                let a = arg(*a);
                value::or(&a, || arg(*b))
            }
            Node::Bin(op, a, b) => {
                let a = arg(*a);
                value::binary(*op, &a, &arg(*b))
            }
            Node::Match(x, re) => match regexes.get(*re as usize).and_then(Option::as_ref) {
                Some(re) => value::regex_match(re, &arg(*x)),
                None => Val::Bool(false),
            },
            Node::Call(func, xs) => {
                let args: Vec<Val> = xs.iter().map(|x| arg(*x)).collect();
                value::call(*func, &args)
            }
        })
    }
}

/// Per-node facts the evaluator needs, computed once by `lower`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NodeMeta {
    /// Used by more than one parent or root: memoized per request.
    pub shared: bool,
    /// Depends on path params or the identity, which change between candidates and after auth.
    pub contextual: bool,
}

/// A route path pattern, matched exactly as `eval::match_path` does.
#[derive(Debug, Clone)]
pub(crate) enum PathPattern {
    /// `"/*"`: every path starting with `/`.
    Any,
    /// Segments split on `/`; `star` for a trailing `/*` (the prefix and anything below it).
    Segs { segs: Vec<Seg>, star: bool },
}

#[derive(Debug, Clone)]
pub(crate) enum Seg {
    Lit(String),
    Param(String),
}

impl PathPattern {
    pub(crate) fn parse(pattern: &str) -> PathPattern {
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
    pub(crate) fn params_of_match(&self, path: &str) -> Vec<(String, String)> {
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
    pub(crate) fn capture(&self, path: &str) -> Option<Vec<(String, String)>> {
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

/// Method bits: one per `ast::Method` except `ANY`.
pub(crate) fn method_bit(method: &str) -> u8 {
    match method {
        "GET" => 1,
        "POST" => 2,
        "PUT" => 4,
        "PATCH" => 8,
        "DELETE" => 16,
        "HEAD" => 32,
        "OPTIONS" => 64,
        _ => 0,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AuthRt {
    pub keyset: Option<usize>,
    /// Kept whole so the credential is found by `eval::credential` itself.
    pub auth: Auth,
}

#[derive(Debug, Clone)]
pub(crate) struct GuardRt {
    pub cond: NodeId,
    /// `deny` refuses when the condition holds, `allow` when it does not.
    pub refuse_when: bool,
    pub status: u16,
    pub message: String,
}

#[derive(Debug, Clone)]
pub(crate) enum KeyRt {
    Route,
    Key,
    Tenant,
    Client,
    Header(String),
    Expr(NodeId),
}

#[derive(Debug, Clone)]
pub(crate) enum ModelRt {
    None,
    /// The `model` regex did not compile: the limit never applies (as in eval).
    Never,
    Regex(regex_automata::meta::Regex),
}

#[derive(Debug, Clone)]
pub(crate) struct LimitRt {
    /// Index into the limit table of the first limit with this id (None: not in the table).
    pub table: Option<usize>,
    pub id: String,
    pub cond: Option<NodeId>,
    pub model: ModelRt,
    pub key: KeyRt,
}

/// The decision-time half of a route.
#[derive(Debug, Clone)]
pub(crate) struct RouteRt {
    pub name: String,
    pub routable: bool,
    pub any_method: bool,
    pub method_mask: u8,
    /// `Method::as_str` of each declared method, for 405's `allowed`.
    pub methods: Vec<String>,
    pub path: PathPattern,
    pub cond: Option<NodeId>,
    pub auth: Option<AuthRt>,
    pub guards: Vec<GuardRt>,
    pub limits: Vec<LimitRt>,
    pub outcome: Outcome,
}

impl RouteRt {
    fn method_ok(&self, bit: u8) -> bool {
        self.any_method || self.method_mask & bit != 0
    }
}

pub(crate) type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// Route selection. Host patterns are resolved to small ids first (hash lookups), so a random
/// `Host` header cannot make the automaton build states proportional to the route count.
/// Routes whose path is a plain literal are found in a hash map; the others (`{param}`, `*`)
/// are one lazy DFA over `path 0xFF host-token`, one pattern per route. A DFA over every
/// literal path would be a byte trie of all of them: with thousands of routes and traffic
/// spread over them, its lazily built states outgrow any sensible cache and it thrashes.
pub(crate) struct Router {
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
pub(crate) type HostMap = HashMap<String, u32, std::hash::BuildHasherDefault<FastHasher>>;
pub(crate) type LiteralMap = HashMap<String, Vec<(u32, Option<u32>)>, std::hash::BuildHasherDefault<FastHasher>>;

/// FxHash-style: a multiply-rotate over 8-byte words.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

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
pub(crate) fn routing_host(req: &Request) -> std::borrow::Cow<'_, str> {
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
pub(crate) struct Automaton {
    pub dfa: Arc<DFA>,
    pub pool: Pool<Cache, CacheFn>,
}

/// The byte that separates the path from the host token: never part of UTF-8 text.
pub(crate) const SEP: u8 = 0xFF;

/// The fixed-width host token for a host pattern id: base-255 digits, never `SEP`.
pub(crate) fn host_token(id: u32, width: usize) -> [u8; 4] {
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
    fn host_ids(&self, host: &str) -> Vec<u32> {
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
    fn candidates(&self, routes: &[RouteRt], path: &str, hosts: &[u32]) -> Vec<u32> {
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

// ======================================================================= the graph

/// The compiled policy. Immutable, `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct Graph {
    pub(crate) settings: Settings,
    pub(crate) routes: Vec<RouteInfo>,
    pub(crate) upstreams: Vec<UpstreamInfo>,
    pub(crate) limits: Vec<LimitInfo>,
    pub(crate) tenants: Vec<TenantInfo>,
    pub(crate) keysets: Vec<KeysetInfo>,

    pub(crate) rt: Vec<RouteRt>,
    pub(crate) router: Router,
    pub(crate) nodes: Vec<Node>,
    pub(crate) meta: Vec<NodeMeta>,
    pub(crate) facts: Vec<Fact>,
    pub(crate) regexes: Vec<Option<regex_automata::meta::Regex>>,
    /// Tenant name (first tenant of that name) → its limits as (table index, id).
    pub(crate) tenant_limits: HashMap<String, Vec<(usize, String)>>,
    /// Upstream index → the node of its `hash(EXPR)`.
    pub(crate) balance_keys: Vec<Option<NodeId>>,
    /// `body.model`, read by `limit ... model /re/`.
    pub(crate) model_path: Vec<PathSeg>,
}

/// The JSON body, read (strictly) on first use only.
struct Body<'r> {
    req: &'r Request,
    parsed: OnceCell<Result<Option<serde_json::Value>, BodyError>>,
}

impl Body<'_> {
    fn get(&self) -> &Result<Option<serde_json::Value>, BodyError> {
        self.parsed.get_or_init(|| ijson::read_request(self.req))
    }

    /// A body field as a value: missing without a body, undecided for a refused body.
    fn field(&self, path: &[PathSeg]) -> Val {
        match self.get() {
            Ok(Some(b)) => value::body_lookup(b, path).map(Val::from_json).unwrap_or(Val::Missing),
            Ok(None) => Val::Missing,
            Err(e) => Val::Error(e.clone()),
        }
    }
}

/// What an expression can see.
struct Ctx<'r> {
    req: &'r Request,
    host: &'r str,
    params: &'r [(String, String)],
    identity: Option<&'r Identity>,
    body: &'r Body<'r>,
}

/// Values of shared nodes already computed for this request. Small: only nodes evaluated
/// for this request's candidates land here.
#[derive(Default)]
struct Memo {
    entries: Vec<(NodeId, bool, Val)>,
}

impl Memo {
    fn get(&self, id: NodeId) -> Option<&Val> {
        self.entries.iter().find(|(n, _, _)| *n == id).map(|(_, _, v)| v)
    }

    /// Forget values that depend on params or identity (a new candidate, or after auth).
    fn new_context(&mut self) {
        self.entries.retain(|(_, contextual, _)| !contextual);
    }
}

impl Graph {
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every route of the program in order; `Decision::route_index` indexes this.
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    pub fn upstreams(&self) -> &[UpstreamInfo] {
        &self.upstreams
    }

    /// The limit table; `AppliedLimit::limit` indexes this.
    pub fn limits(&self) -> &[LimitInfo] {
        &self.limits
    }

    pub fn tenants(&self) -> &[TenantInfo] {
        &self.tenants
    }

    pub fn keysets(&self) -> &[KeysetInfo] {
        &self.keysets
    }

    pub fn route(&self, name: &str) -> Option<&RouteInfo> {
        self.routes.iter().find(|r| r.name == name)
    }

    pub fn upstream_index(&self, name: &str) -> Option<usize> {
        self.upstreams.iter().position(|u| u.name == name)
    }

    pub fn stats(&self) -> GraphStats {
        GraphStats {
            routes: self.routes.len(),
            literal_paths: self.router.literal.len(),
            patterns: self.router.pattern_route.len(),
            host_patterns: self.router.host_exact.len() + self.router.host_wild.len(),
            nodes: self.nodes.len(),
            shared_nodes: self.meta.iter().filter(|m| m.shared).count(),
            facts: self.facts.len(),
            regexes: self.regexes.len(),
            nfa_bytes: self.router.nfa_bytes,
            dfa_cache_bytes: self.router.cache_bytes,
        }
    }

    /// Whether deciding `req` may read its body: some route the request's method, host and
    /// path select reads a body field or counts tokens. The runtime buffers the body (up to
    /// `max_body`) only then.
    /// A request every route could select refuses the credential of is refused without its
    /// body being read (see `refused_before_body`), so the body is not wanted then either.
    pub fn wants_body(&self, req: &Request) -> bool {
        let host = routing_host(req);
        let hosts = self.router.host_ids(&host);
        let bit = method_bit(&req.method);
        let candidates = self.router.candidates(&self.rt, &req.path, &hosts);
        let reads = candidates.iter().any(|&i| {
            let i = i as usize;
            self.rt.get(i).is_some_and(|r| r.method_ok(bit))
                && self.routes.get(i).is_some_and(|r| r.reads_body || r.counts_tokens)
        });
        reads && self.refused_before_body(req, &candidates).is_none()
    }

    /// `eval::refused_before_body`: the 401 every route the request could select (whatever
    /// its body) gives, if they all refuse its credential.
    fn refused_before_body(&self, req: &Request, candidates: &[u32]) -> Option<Decision> {
        let bit = method_bit(&req.method);
        let mut refusals: Vec<(usize, &str)> = vec![];
        for &index in candidates {
            let index = index as usize;
            let Some(route) = self.rt.get(index) else { continue };
            if !route.method_ok(bit) {
                continue;
            }
            let auth = route.auth.as_ref()?;
            let message = match eval::credential(&auth.auth, req) {
                None if auth.auth.optional => return None,
                None => eval::MISSING_KEY,
                Some(presented) => {
                    let keys = auth.keyset.and_then(|k| self.keysets.get(k));
                    if keys.and_then(|k| k.keys.lookup(presented)).is_some() {
                        return None;
                    }
                    eval::INVALID_KEY
                }
            };
            refusals.push((index, message));
            if route.cond.is_none() {
                break;
            }
        }
        let &(index, message) = refusals.iter().find(|(_, m)| *m == eval::INVALID_KEY).or(refusals.first())?;
        let route = self.rt.get(index)?;
        let mut d = Decision::new(Outcome::Unauthorized { message: message.to_string() });
        d.trace = vec![step("auth", eval::refused_before_body_note(message))];
        d.route = Some(route.name.clone());
        d.route_index = Some(index);
        d.params = route.path.params_of_match(&req.path);
        Some(d)
    }

    /// The key of `hash(EXPR)` balancing for a decided request (None if the upstream does
    /// not balance by hash).
    pub fn balance_key(&self, upstream: usize, req: &Request, decision: &Decision) -> Option<String> {
        let node = (*self.balance_keys.get(upstream)?)?;
        let host = req.routing_host();
        let body = Body { req, parsed: OnceCell::new() };
        let cx = Ctx { req, host: &host, params: &decision.params, identity: decision.identity.as_ref(), body: &body };
        Some(self.eval(node, &cx, &mut Memo::default()).key_string())
    }

    /// Decide what the policy does with `req`: exactly what `eval::decide` answers.
    pub fn decide(&self, req: &Request) -> Decision {
        let host = routing_host(req);
        let host: &str = &host;
        let hosts = self.router.host_ids(host);
        let candidates = self.router.candidates(&self.rt, &req.path, &hosts);
        let body = Body { req, parsed: OnceCell::new() };
        let bit = method_bit(&req.method);
        let mut trace = vec![];
        let mut allowed: Vec<String> = vec![];
        let mut memo = Memo::default();

        for &index in &candidates {
            let index = index as usize;
            let Some(route) = self.rt.get(index) else { continue };
            if !route.method_ok(bit) {
                for m in &route.methods {
                    if !allowed.contains(m) {
                        allowed.push(m.clone());
                    }
                }
                continue;
            }
            let params = route.path.params_of_match(&req.path);
            let mut undecided = None;
            if let Some(cond) = route.cond {
                memo.new_context();
                let cx = Ctx { req, host, params: &params, identity: None, body: &body };
                match self.eval(cond, &cx, &mut memo).truth() {
                    Ok(true) => {}
                    Ok(false) => {
                        trace.push(step(
                            "route",
                            cat(&["`", &route.name, "` matches the path but its condition is false"]),
                        ));
                        continue;
                    }
                    Err(u) => undecided = Some(u),
                }
            }
            let mut d = match undecided {
                Some(u) => {
                    trace
                        .push(step("route", cat(&["`", &route.name, "`'s condition cannot be decided: ", &u.message])));
                    eval::invalid(u)
                }
                None => {
                    trace.push(step("route", cat(&["`", &route.name, "` matches"])));
                    self.decide_route(index, route, req, host, &params, &body, &mut memo, &mut trace)
                }
            };
            // Only a refusing route can be overruled by the refusal of all candidates (a
            // credential every candidate refuses is refused whatever the body).
            if matches!(d.outcome, Outcome::Unauthorized { .. } | Outcome::Invalid { .. }) {
                if let Some(refused) = self.refused_before_body(req, &candidates) {
                    return refused;
                }
            }
            if body.parsed.get().is_some() {
                trace.push(step("body", body_note(&body)));
            }
            d.route = Some(route.name.clone());
            d.route_index = Some(index);
            d.params = params;
            d.trace = trace;
            return d;
        }
        if let Some(refused) = self.refused_before_body(req, &candidates) {
            return refused;
        }
        if body.parsed.get().is_some() {
            trace.push(step("body", body_note(&body)));
        }
        let mut d = if allowed.is_empty() {
            trace.push(step("route", "no route matches".to_string()));
            Decision::new(Outcome::NoRoute)
        } else {
            trace.push(step("route", format!("the path matches routes for {} only", allowed.join(", "))));
            Decision::new(Outcome::MethodNotAllowed { allowed })
        };
        d.trace = trace;
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_route(
        &self,
        index: usize,
        route: &RouteRt,
        req: &Request,
        host: &str,
        params: &[(String, String)],
        body: &Body<'_>,
        memo: &mut Memo,
        trace: &mut Vec<TraceStep>,
    ) -> Decision {
        let mut identity = None;
        if let Some(auth) = &route.auth {
            match eval::credential(&auth.auth, req) {
                None if auth.auth.optional => trace.push(step("auth", "no credential; auth is optional".to_string())),
                None => {
                    trace.push(step("auth", eval::MISSING_KEY.to_string()));
                    return Decision::new(Outcome::Unauthorized { message: eval::MISSING_KEY.to_string() });
                }
                Some(presented) => {
                    let entry = auth.keyset.and_then(|k| self.keysets.get(k)).and_then(|k| k.keys.lookup(presented));
                    let Some(entry) = entry else {
                        trace.push(step("auth", eval::INVALID_KEY.to_string()));
                        return Decision::new(Outcome::Unauthorized { message: eval::INVALID_KEY.to_string() });
                    };
                    trace.push(step("auth", cat(&["key `", &entry.name, "` of tenant `", &entry.tenant, "`"])));
                    identity = Some(Identity {
                        keys: auth.auth.keys.name.clone(),
                        tenant: entry.tenant.clone(),
                        key_name: entry.name.clone(),
                    });
                }
            }
            memo.new_context();
        }
        let cx = Ctx { req, host, params, identity: identity.as_ref(), body };
        let undecided = |trace: &mut Vec<TraceStep>, what: &str, u: Undecided| {
            trace.push(step(what, cat(&["cannot be decided: ", &u.message])));
            let mut d = eval::invalid(u);
            d.identity = identity.clone();
            d
        };

        // A route whose decision reads the body takes only a body the strict reader accepts.
        if self.routes.get(index).is_some_and(|r| r.reads_body || r.counts_tokens) {
            if let Err(e) = body.get() {
                return undecided(trace, "body", e.clone());
            }
        }

        for (i, g) in route.guards.iter().enumerate() {
            match self.eval(g.cond, &cx, memo).truth() {
                Err(u) => return undecided(trace, "guard", u),
                Ok(holds) if holds == g.refuse_when => {
                    trace.push(step("guard", format!("guard {} refused the request with {}", i + 1, g.status)));
                    let mut d = Decision::new(Outcome::Denied { status: g.status, message: g.message.clone() });
                    d.identity = identity;
                    return d;
                }
                Ok(_) => {}
            }
        }

        let mut applied = vec![];
        for l in &route.limits {
            if let Some(c) = l.cond {
                match self.eval(c, &cx, memo).truth() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(u) => return undecided(trace, "limit", u),
                }
            }
            match &l.model {
                ModelRt::None => {}
                ModelRt::Never => continue,
                ModelRt::Regex(re) => match value::regex_match(re, &body.field(&self.model_path)).truth() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(u) => return undecided(trace, "limit", u),
                },
            }
            let key = match self.limit_key(&l.key, &cx, memo) {
                Ok(k) => k,
                Err(u) => return undecided(trace, "limit", u),
            };
            if let Some(t) = l.table {
                applied.push(AppliedLimit { limit: t, id: l.id.clone(), key });
            }
        }
        if let Some(id) = &identity {
            if let Some(ls) = self.tenant_limits.get(&id.tenant) {
                for (t, lid) in ls {
                    applied.push(AppliedLimit { limit: *t, id: lid.clone(), key: id.tenant.clone() });
                }
            }
        }
        for l in &applied {
            trace.push(step("limit", cat(&[&l.id, " keyed by `", &l.key, "`"])));
        }
        trace.push(step("action", action_note(&route.outcome)));
        let mut d = Decision::new(route.outcome.clone());
        d.identity = identity;
        d.limits = applied;
        d
    }

    fn limit_key(&self, key: &KeyRt, cx: &Ctx<'_>, memo: &mut Memo) -> Result<String, Undecided> {
        let id = cx.identity;
        Ok(match key {
            KeyRt::Route => String::new(),
            KeyRt::Key => id.map(|i| format!("{}/{}", i.keys, i.key_name)).unwrap_or_else(|| "-".into()),
            KeyRt::Tenant => id.map(|i| i.tenant.clone()).unwrap_or_else(|| "-".into()),
            KeyRt::Client => cx.req.client_ip.clone().unwrap_or_else(|| "-".into()),
            KeyRt::Header(h) => cx.req.header(h).unwrap_or("-").to_string(),
            KeyRt::Expr(n) => match self.eval(*n, cx, memo) {
                Val::Error(u) => return Err(u),
                v => v.key_string(),
            },
        })
    }

    fn eval(&self, id: NodeId, cx: &Ctx<'_>, memo: &mut Memo) -> Val {
        let meta = self.meta.get(id as usize).copied().unwrap_or_default();
        if meta.shared {
            if let Some(v) = memo.get(id) {
                return v.clone();
            }
        }
        let v = match self.nodes.get(id as usize) {
            None => Val::Missing,
            Some(Node::Fact(f)) => match self.facts.get(*f as usize) {
                Some(f) => self.fact(f, cx),
                None => Val::Missing,
            },
            Some(node) => node.apply(&self.regexes, |c| self.eval(c, cx, memo)).unwrap_or(Val::Missing),
        };
        if meta.shared {
            memo.entries.push((id, meta.contextual, v.clone()));
        }
        v
    }

    fn fact(&self, f: &Fact, cx: &Ctx<'_>) -> Val {
        let s = |v: Option<&str>| v.map(|v| Val::Str(v.to_string())).unwrap_or(Val::Missing);
        match f {
            Fact::Method => Val::Str(cx.req.method.clone()),
            Fact::Path => crate::request::path_fact(&cx.req.path),
            Fact::Host => Val::Str(cx.host.to_string()),
            Fact::ClientIp => s(cx.req.client_ip.as_deref()),
            Fact::Tenant => s(cx.identity.map(|i| i.tenant.as_str())),
            Fact::Key => s(cx.identity.map(|i| i.key_name.as_str())),
            Fact::Header(h) => cx.req.header_fact(h),
            Fact::Query(q) => cx.req.query_fact(q),
            Fact::Param(p) => match cx.params.iter().find(|(k, _)| k == p) {
                Some((_, v)) => crate::request::path_fact(v),
                None => Val::Missing,
            },
            Fact::Body(path) => cx.body.field(path),
        }
    }

    /// Graphviz of routes → auth → guards → limits → action/upstream (`gw-check compile --emit dot`).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph gw {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for (u, up) in self.upstreams.iter().enumerate() {
            let targets: Vec<String> =
                up.targets.iter().map(|t| t.url.shown().unwrap_or("<unset>").to_string()).collect();
            out.push_str(&format!(
                "  u{u} [shape=cylinder, label={}];\n",
                dot_str(&format!("upstream {}\n{}", up.name, targets.join("\n")))
            ));
        }
        for r in &self.routes {
            let i = r.index;
            let when = if r.routable {
                let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
                let host = r.host.as_deref().map(|h| format!(" host {h}")).unwrap_or_default();
                let cond = if r.has_condition { " if …" } else { "" };
                format!("{} {}{host}{cond}", methods.join("|"), r.path)
            } else {
                "(no when: never selected)".to_string()
            };
            out.push_str(&format!(
                "  r{i} [shape=oval, label={}];\n",
                dot_str(&format!("route {} (#{i})\n{when}", r.name))
            ));
            let mut prev = format!("r{i}");
            if let Some(a) = &r.auth {
                let sources: Vec<String> = a
                    .sources
                    .iter()
                    .map(|s| match s {
                        CredentialSource::Header(h) => format!("header {h}"),
                        CredentialSource::Bearer => "bearer".to_string(),
                        CredentialSource::Query(q) => format!("query {q}"),
                    })
                    .collect();
                let opt = if a.optional { " (optional)" } else { "" };
                let id = format!("r{i}_auth");
                out.push_str(&format!(
                    "  {id} [label={}];\n",
                    dot_str(&format!("auth {}{opt}\nvia {}", a.keyset_name, sources.join(", ")))
                ));
                out.push_str(&format!("  {prev} -> {id} [label=\"401\"];\n"));
                prev = id;
            }
            for (g, guard) in r.guards.iter().enumerate() {
                let id = format!("r{i}_g{g}");
                out.push_str(&format!(
                    "  {id} [shape=diamond, label={}];\n",
                    dot_str(&format!("{} → {} {}", guard.kind, guard.status, guard.message))
                ));
                out.push_str(&format!("  {prev} -> {id};\n"));
                prev = id;
            }
            for l in &r.limits {
                if let Some(info) = self.limits.get(*l) {
                    let id = format!("r{i}_l{l}");
                    out.push_str(&format!("  {id} [shape=note, label={}];\n", dot_str(&info.id)));
                    out.push_str(&format!("  {prev} -> {id};\n"));
                    prev = id;
                }
            }
            match &r.action {
                ActionInfo::Forward { upstream: Some(u), .. } => out.push_str(&format!("  {prev} -> u{u};\n")),
                action => {
                    let label = match action {
                        ActionInfo::Forward { name, .. } => format!("to {name} (undefined)"),
                        ActionInfo::Respond => format!("respond {}", r.respond.as_ref().map(|x| x.status).unwrap_or(0)),
                        ActionInfo::Serve { builtin } => format!("serve {builtin}"),
                        ActionInfo::None => "no action (404)".to_string(),
                    };
                    let id = format!("r{i}_action");
                    out.push_str(&format!("  {id} [shape=plaintext, label={}];\n", dot_str(&label)));
                    out.push_str(&format!("  {prev} -> {id};\n"));
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

fn step(step: &str, detail: String) -> TraceStep {
    TraceStep { step: step.to_string(), detail }
}

fn body_note(body: &Body<'_>) -> String {
    match body.parsed.get() {
        Some(Ok(Some(_))) => "the body was read as JSON (once)".to_string(),
        Some(Ok(None)) => "the request has no body".to_string(),
        Some(Err(e)) => cat(&["the body was refused: ", &e.message]),
        None => "the body was not read".to_string(),
    }
}

/// Concatenate without the formatting machinery (the trace is built on the hot path).
fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

fn action_note(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Forward { upstream } => cat(&["forward to `", upstream, "`"]),
        Outcome::Respond { status } => format!("respond {status}"),
        Outcome::Serve { builtin } => format!("serve {builtin}"),
        Outcome::NoRoute => "the route has no action".to_string(),
        other => format!("{other:?}"),
    }
}

fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Serialize for Graph {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            settings: &'a Settings,
            routes: &'a [RouteInfo],
            upstreams: &'a [UpstreamInfo],
            limits: &'a [LimitInfo],
            tenants: &'a [TenantInfo],
            keysets: &'a [KeysetInfo],
            stats: GraphStats,
        }
        View {
            settings: &self.settings,
            routes: &self.routes,
            upstreams: &self.upstreams,
            limits: &self.limits,
            tenants: &self.tenants,
            keysets: &self.keysets,
            stats: self.stats(),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Program;
    use crate::source::FileId;

    fn program(text: &str) -> Program {
        let (parsed, diags) = crate::syntax::parse(FileId(0), text);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
        let keys = format!("{} acme k1\n", hex::encode(crate::keys::hash_key(None, "sk-1")));
        let (loaded, errors) = LoadedKeys::parse(&keys, None);
        assert!(errors.is_empty());
        let mut p = Program { items: parsed.file.items, ..Program::default() };
        p.keysets.insert("k".into(), loaded);
        p.env.insert("SECRET".into(), Some("hunter2".into()));
        p
    }

    fn graph(text: &str) -> (Program, Graph) {
        let p = program(text);
        let g = crate::lower::lower(&p).expect("lowers");
        (p, g)
    }

    fn req(method: &str, host: &str, path: &str) -> Request {
        let mut r = Request::new(method, path);
        r.host = host.to_string();
        r
    }

    /// Decide with the graph, check eval agrees, return the graph's decision.
    fn decide(p: &Program, g: &Graph, r: &Request) -> Decision {
        let d = g.decide(r);
        let e = eval::decide(p, r);
        assert!(d.same_decision(&e), "graph {d:#?}\neval {e:#?}");
        d
    }

    const ROUTES: &str = r#"
        upstream u { target "http://127.0.0.1:1" }
        route first { when GET "/a/{id}" to u }
        route second { when GET "/a/fixed" to u }
        route wide { when GET "/a/*" to u }
        route exact_host { when GET "/h" host "Api.Example.com" to u }
        route tenant_host { when GET "/h" host "*.example.com" to u }
        route any_host { when GET|POST "/h" to u }
        route put_only { when PUT "/m" to u }
        route cond { when DELETE "/m" if header["x"] == "1" to u }
        route patch_only { when PATCH|PUT "/m" to u }
    "#;

    #[test]
    fn the_first_route_in_policy_order_wins() {
        let (p, g) = graph(ROUTES);
        assert_eq!(decide(&p, &g, &req("GET", "", "/a/fixed")).route.as_deref(), Some("first"));
        assert_eq!(decide(&p, &g, &req("GET", "", "/a/x/y")).route.as_deref(), Some("wide"));
        assert_eq!(decide(&p, &g, &req("GET", "", "/a")).route.as_deref(), Some("wide"));
    }

    #[test]
    fn params_are_captured_in_pattern_order() {
        let (p, g) = graph(r#"upstream u { target "http://x" } route r { when GET "/t/{tenant}/m/{model}" to u }"#);
        let d = decide(&p, &g, &req("GET", "", "/t/acme/m/gpt-4o"));
        assert_eq!(d.params, vec![("tenant".into(), "acme".into()), ("model".into(), "gpt-4o".into())]);
        assert_eq!(decide(&p, &g, &req("GET", "", "/t//m/x")).outcome, Outcome::NoRoute);
    }

    #[test]
    fn host_wildcards_need_a_subdomain_and_exact_hosts_ignore_case_and_port() {
        let (p, g) = graph(ROUTES);
        assert_eq!(decide(&p, &g, &req("GET", "a.example.com", "/h")).route.as_deref(), Some("tenant_host"));
        assert_eq!(decide(&p, &g, &req("GET", "x.y.example.com", "/h")).route.as_deref(), Some("tenant_host"));
        assert_eq!(decide(&p, &g, &req("GET", "example.com", "/h")).route.as_deref(), Some("any_host"));
        assert_eq!(decide(&p, &g, &req("GET", ".example.com", "/h")).route.as_deref(), Some("any_host"));
        assert_eq!(decide(&p, &g, &req("GET", "API.example.COM:8443", "/h")).route.as_deref(), Some("exact_host"));
        let mut via_header = req("GET", "", "/h");
        via_header.headers.push(("host".into(), "b.example.com".into()));
        assert_eq!(decide(&p, &g, &via_header).route.as_deref(), Some("tenant_host"));
    }

    #[test]
    fn a_wrong_method_gets_405_with_the_methods_of_matching_routes_in_order() {
        let (p, g) = graph(ROUTES);
        let d = decide(&p, &g, &req("GET", "", "/m"));
        assert_eq!(
            d.outcome,
            Outcome::MethodNotAllowed { allowed: vec!["PUT".into(), "DELETE".into(), "PATCH".into()] }
        );
        // A route whose condition is false is skipped without adding to the list.
        let d = decide(&p, &g, &req("DELETE", "", "/m"));
        assert_eq!(d.outcome, Outcome::MethodNotAllowed { allowed: vec!["PUT".into(), "PATCH".into()] });
        let mut with_header = req("DELETE", "", "/m");
        with_header.headers.push(("x".into(), "1".into()));
        assert_eq!(decide(&p, &g, &with_header).route.as_deref(), Some("cond"));
        assert_eq!(decide(&p, &g, &req("GET", "", "/nowhere")).outcome, Outcome::NoRoute);
    }

    #[test]
    fn the_body_is_parsed_only_when_a_candidate_reads_it() {
        let (p, g) = graph(
            r#"upstream u { target "http://x" }
               route plain { when POST "/plain" to u }
               route reads { when POST "/reads" deny 400 "big" if body.max_tokens > 10 to u }"#,
        );
        let parsed = |d: &Decision| d.trace.iter().any(|s| s.step == "body");
        let mut r = req("POST", "", "/plain");
        r.body = Some(format!("{{\"max_tokens\": {}", "9".repeat(1 << 20)).into_bytes());
        let d = decide(&p, &g, &r);
        assert!(!parsed(&d), "{:?}", d.trace);
        assert!(!g.wants_body(&r));
        r.path = "/nowhere".into();
        assert!(!parsed(&decide(&p, &g, &r)));
        r.path = "/reads".into();
        assert!(g.wants_body(&r));
        let d = decide(&p, &g, &r);
        assert!(parsed(&d), "{:?}", d.trace);
        r.body = Some(b"{\"max_tokens\": 11}".to_vec());
        assert_eq!(decide(&p, &g, &r).outcome.status(), 400);
    }

    #[test]
    fn a_value_of_the_wrong_type_refuses_and_a_missing_one_compares_false() {
        let (p, g) = graph(
            r#"upstream u { target "http://x" }
               route r { when POST "/r"
                 deny 403 "big" if body.max_tokens > 4096
                 deny 403 "odd" if header["b"] == "1" and body.n > 1
                 allow if body.model != "x" or header["a"] == "1"
                 to u }"#,
        );
        let outcome = |body: &str, headers: &[(&str, &str)]| {
            let mut r = req("POST", "", "/r").with_body(body);
            r.headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            decide(&p, &g, &r).outcome
        };
        let invalid = |o: Outcome| matches!(o, Outcome::Invalid { code: value::INVALID_BODY, .. });
        let forward = Outcome::Forward { upstream: "u".into() };
        assert_eq!(outcome(r#"{"max_tokens": 9000}"#, &[]).status(), 403);
        assert!(invalid(outcome(r#"{"max_tokens": "9000"}"#, &[])));
        assert!(invalid(outcome(r#"{"max_tokens": null}"#, &[])));
        assert!(invalid(outcome(r#"{"max_tokens": [1]}"#, &[])));
        // Missing facts: `>` is false, `!=` is true.
        assert_eq!(outcome("{}", &[]), forward);
        assert_eq!(outcome("", &[]), forward);
        // An undecided side matters only when the other side does not settle it.
        assert_eq!(outcome(r#"{"model": 5}"#, &[("a", "1")]), forward);
        assert!(invalid(outcome(r#"{"model": 5}"#, &[])));
        assert_eq!(outcome(r#"{"n": "x"}"#, &[]), forward);
        assert!(invalid(outcome(r#"{"n": "x"}"#, &[("b", "1")])));
        // The route reads the body: a body the strict reader refuses is refused whatever the
        // guards would evaluate.
        assert!(invalid(outcome("\u{feff}{}", &[("a", "1")])));
        assert!(invalid(outcome(r#"{"n": 1, "n": 2}"#, &[])));
    }

    #[test]
    fn a_header_or_query_a_guard_reads_must_be_one_text_value() {
        let (p, g) = graph(
            r#"upstream u { target "http://x" }
               route r { when GET "/r" deny 403 "no" if header["x-user"] == "eve" or query["u"] == "eve" to u }"#,
        );
        let code = |r: &Request| match decide(&p, &g, r).outcome {
            Outcome::Invalid { code, .. } => code,
            o => {
                if o.status() == 403 {
                    "denied"
                } else {
                    "ok"
                }
            }
        };
        let mut r = req("GET", "", "/r?u=ev%65");
        assert_eq!(code(&r), "denied");
        r = req("GET", "", "/r?u=bob&u=eve");
        assert_eq!(code(&r), value::INVALID_QUERY);
        r = req("GET", "", "/r?u=%zz");
        assert_eq!(code(&r), value::INVALID_QUERY);
        r = req("GET", "", "/r?u=%ff");
        assert_eq!(code(&r), value::INVALID_QUERY);
        r = req("GET", "", "/r?u=bob");
        r.push_header_bytes("x-user", b"eve\xff");
        assert_eq!(code(&r), value::INVALID_HEADER);
        r = req("GET", "", "/r?u=bob");
        r.push_header_bytes("X-User", b"bob");
        r.push_header_bytes("x-user", b"eve");
        assert_eq!(code(&r), value::INVALID_HEADER);
        r = req("GET", "", "/r?u=bob");
        r.push_header_bytes("x-other", b"\xff");
        assert_eq!(code(&r), "ok");
    }

    #[test]
    fn the_path_and_params_a_guard_reads_are_decoded_as_the_upstream_decodes_them() {
        let (p, g) = graph(
            r#"upstream u { target "http://x" }
               route r { when GET "/*" deny 403 "no" if path starts_with "/admin" to u }
               route q { when POST "/u/{name}" deny 403 "no" if param.name == "root" to u }"#,
        );
        let outcome = |m: &str, path: &str| decide(&p, &g, &req(m, "", path)).outcome;
        assert_eq!(outcome("GET", "/%61dmin/x").status(), 403);
        assert_eq!(outcome("GET", "/a+dmin").status(), 200);
        assert!(matches!(outcome("GET", "/x/%zz"), Outcome::Invalid { code: value::INVALID_PATH, .. }));
        assert!(matches!(outcome("GET", "/x/%+1"), Outcome::Invalid { code: value::INVALID_PATH, .. }));
        assert!(matches!(outcome("GET", "/x/%ff"), Outcome::Invalid { code: value::INVALID_PATH, .. }));
        assert_eq!(outcome("POST", "/u/r%6Fot").status(), 403);
        assert_eq!(outcome("POST", "/u/alice").status(), 200);
    }

    #[test]
    fn a_matcher_used_by_many_routes_is_one_node() {
        let mut text = String::from(
            "upstream u { target \"http://x\" }\nmatcher m = header[\"x-a\"] == \"1\" and body.model matches /^gpt/\n",
        );
        for i in 0..50 {
            text.push_str(&format!("route r{i} {{ when GET \"/r{i}\" deny 403 \"no\" if m to u }}\n"));
        }
        let (p, g) = graph(&text);
        assert!(g.nodes.len() < 10, "{} nodes", g.nodes.len());
        assert_eq!(g.facts.len(), 2);
        assert_eq!(g.regexes.len(), 1);
        let mut r = req("GET", "", "/r7");
        r.headers.push(("x-a".into(), "1".into()));
        r.body = Some(b"{\"model\": \"gpt-4o\"}".to_vec());
        assert_eq!(decide(&p, &g, &r).outcome.status(), 403);
    }

    #[test]
    fn constants_are_folded_at_compile_time() {
        let (_, g) = graph(
            r#"upstream u { target "http://x" } route r { when GET "/" if 1 < 2 and "a" == "a" allow if not false to u }"#,
        );
        assert!(g.nodes.iter().all(|n| matches!(n, Node::Const(_))), "{:?}", g.nodes);
    }

    #[test]
    fn auth_limits_and_identity_follow_eval() {
        let (p, g) = graph(
            r#"upstream u { target "http://x" }
               tenant acme { rate 10/s burst 20; concurrent 2 }
               route r { when POST "/v1/chat" auth k
                 deny 403 "acme only" if tenant != "acme"
                 limit rate 5/s per key
                 limit tokens 1k/min per (body.model) model /^gpt/
                 to u }"#,
        );
        let mut r = req("POST", "", "/v1/chat");
        assert_eq!(decide(&p, &g, &r).outcome, Outcome::Unauthorized { message: eval::MISSING_KEY.into() });
        r.headers.push(("authorization".into(), "Bearer sk-2".into()));
        assert_eq!(decide(&p, &g, &r).outcome, Outcome::Unauthorized { message: eval::INVALID_KEY.into() });
        r.headers = vec![("x-api-key".into(), "sk-1".into())];
        r.body = Some(b"{\"model\": \"gpt-4o\"}".to_vec());
        let d = decide(&p, &g, &r);
        assert_eq!(d.identity.as_ref().map(|i| i.tenant.as_str()), Some("acme"));
        let keys: Vec<&str> = d.limits.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["k/k1", "gpt-4o", "acme", "acme"]);
        assert_eq!(d.limits.iter().map(|l| l.limit).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(g.limits().len(), 4);
    }

    #[test]
    fn the_graph_is_send_sync_and_serializes_without_secrets() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Graph>();
        let (_, g) = graph(
            r#"gateway { admin "127.0.0.1:9" token "literal-token" state redis env("SECRET") }
               upstream u { target "http://x" header "authorization" = "Bearer " + env("SECRET") }
               route r { when GET "/" set header "x-k" = env("SECRET") jwt secret "s3" to u }"#,
        );
        let json = serde_json::to_string(&g).expect("serializes");
        assert!(!json.contains("hunter2") && !json.contains("literal-token") && !json.contains("s3\""), "{json}");
        assert!(json.contains(REDACTED));
        assert!(!format!("{g:?}").contains("hunter2"));
        assert_eq!(g.upstreams()[0].headers[0].1.get(), Some("Bearer hunter2"));
        assert_eq!(g.settings().max_body, DEFAULT_MAX_BODY);
        let dot = g.to_dot();
        assert!(dot.starts_with("digraph gw {") && dot.contains("r0 -> u0") || dot.contains("-> u0"), "{dot}");
    }

    #[test]
    fn path_patterns_match_like_eval() {
        let patterns =
            ["/*", "/a/*", "/a/{x}", "a/*", "*", "/a/*/b", "", "/", "//*", "/{}/x", "/{a}{b}", "/{", "/a/{x}/*"];
        let paths = [
            "", "/", "/a", "/a/", "/a/b", "/a/b/c", "a", "a/b", "*", "/a/*/b", "//", "//x", "/x/x", "/{a}{b}", "/q",
            "/{",
        ];
        for pat in patterns {
            let compiled = PathPattern::parse(pat);
            for path in paths {
                assert_eq!(compiled.capture(path), eval::match_path(pat, path), "{pat:?} on {path:?}");
            }
        }
    }
}
