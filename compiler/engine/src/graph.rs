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

use crate::ijson::{self, BodyError};
use crate::keys::LoadedKeys;
use crate::lang::{BinOp, Fact, ForwardedMode, Func, Method, OnError, PathSeg};
use crate::request::{
    refused_before_body_note, AppliedLimit, Decision, Identity, Outcome, Request, TraceStep, INVALID_KEY, MISSING_KEY,
};
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

pub type NodeId = u32;

/// One operation of the flat expression program. Children always have smaller ids.
#[derive(Debug, Clone)]
pub enum Node {
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
    pub fn children(&self) -> Vec<NodeId> {
        match self {
            Node::Const(_) | Node::Fact(_) => vec![],
            Node::List(xs) | Node::Call(_, xs) => xs.to_vec(),
            Node::Not(x) | Node::Exists(x) | Node::Truthy(x) | Node::Match(x, _) => vec![*x],
            Node::And(a, b) | Node::Or(a, b) | Node::Bin(_, a, b) => vec![*a, *b],
        }
    }

    /// Whether the node always yields a `Val::Bool` (or the `Val::Error` of an undecided one).
    pub fn is_boolean(&self) -> bool {
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
    pub fn apply(
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
pub struct NodeMeta {
    /// Used by more than one parent or root: memoized per request.
    pub shared: bool,
    /// Depends on path params or the identity, which change between candidates and after auth.
    pub contextual: bool,
}

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

/// Method bits: one per `ast::Method` except `ANY`.
pub fn method_bit(method: &str) -> u8 {
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
pub struct AuthRt {
    pub keyset: Option<usize>,
    /// The key set's name, for the identity.
    pub keys: String,
    /// Where the credential may come from, in order (the defaults filled in).
    pub via: Vec<CredentialSource>,
    /// `auth optional`: a request without a credential passes unauthenticated.
    pub optional: bool,
}

impl AuthRt {
    /// The credential the client presented, from the first source that has one.
    fn credential<'r>(&self, req: &'r Request) -> Option<&'r str> {
        self.via.iter().find_map(|c| match c {
            CredentialSource::Header(h) => req.header(h).map(str::trim).filter(|v| !v.is_empty()),
            CredentialSource::Bearer => req
                .header("authorization")
                .and_then(|v| v.trim().split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .filter(|t| !t.is_empty()),
            CredentialSource::Query(q) => req.query_param(q).filter(|v| !v.is_empty()),
        })
    }
}

#[derive(Debug, Clone)]
pub struct GuardRt {
    pub cond: NodeId,
    /// `deny` refuses when the condition holds, `allow` when it does not.
    pub refuse_when: bool,
    pub status: u16,
    pub message: String,
}

#[derive(Debug, Clone)]
pub enum KeyRt {
    Route,
    Key,
    Tenant,
    Client,
    Header(String),
    Expr(NodeId),
}

#[derive(Debug, Clone)]
pub enum ModelRt {
    None,
    /// The `model` regex did not compile: the limit never applies (as in eval).
    Never,
    Regex(regex_automata::meta::Regex),
}

#[derive(Debug, Clone)]
pub struct LimitRt {
    /// Index into the limit table of the first limit with this id (None: not in the table).
    pub table: Option<usize>,
    pub id: String,
    pub cond: Option<NodeId>,
    pub model: ModelRt,
    pub key: KeyRt,
}

/// The decision-time half of a route.
#[derive(Debug, Clone)]
pub struct RouteRt {
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
    pub settings: Settings,
    pub routes: Vec<RouteInfo>,
    pub upstreams: Vec<UpstreamInfo>,
    pub limits: Vec<LimitInfo>,
    pub tenants: Vec<TenantInfo>,
    pub keysets: Vec<KeysetInfo>,

    pub rt: Vec<RouteRt>,
    pub router: Router,
    pub nodes: Vec<Node>,
    pub meta: Vec<NodeMeta>,
    pub facts: Vec<Fact>,
    pub regexes: Vec<Option<regex_automata::meta::Regex>>,
    /// Tenant name (first tenant of that name) → its limits as (table index, id).
    pub tenant_limits: HashMap<String, Vec<(usize, String)>>,
    /// Upstream index → the node of its `hash(EXPR)`.
    pub balance_keys: Vec<Option<NodeId>>,
    /// `body.model`, read by `limit ... model /re/`.
    pub model_path: Vec<PathSeg>,
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
            let message = match auth.credential(req) {
                None if auth.optional => return None,
                None => MISSING_KEY,
                Some(presented) => {
                    let keys = auth.keyset.and_then(|k| self.keysets.get(k));
                    if keys.and_then(|k| k.keys.lookup(presented)).is_some() {
                        return None;
                    }
                    INVALID_KEY
                }
            };
            refusals.push((index, message));
            if route.cond.is_none() {
                break;
            }
        }
        let &(index, message) = refusals.iter().find(|(_, m)| *m == INVALID_KEY).or(refusals.first())?;
        let route = self.rt.get(index)?;
        let mut d = Decision::new(Outcome::Unauthorized { message: message.to_string() });
        d.trace = vec![step("auth", refused_before_body_note(message))];
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
                    Decision::invalid(u)
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
            match auth.credential(req) {
                None if auth.optional => trace.push(step("auth", "no credential; auth is optional".to_string())),
                None => {
                    trace.push(step("auth", MISSING_KEY.to_string()));
                    return Decision::new(Outcome::Unauthorized { message: MISSING_KEY.to_string() });
                }
                Some(presented) => {
                    let entry = auth.keyset.and_then(|k| self.keysets.get(k)).and_then(|k| k.keys.lookup(presented));
                    let Some(entry) = entry else {
                        trace.push(step("auth", INVALID_KEY.to_string()));
                        return Decision::new(Outcome::Unauthorized { message: INVALID_KEY.to_string() });
                    };
                    trace.push(step("auth", cat(&["key `", &entry.name, "` of tenant `", &entry.tenant, "`"])));
                    identity = Some(Identity {
                        keys: auth.keys.clone(),
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
            let mut d = Decision::invalid(u);
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
