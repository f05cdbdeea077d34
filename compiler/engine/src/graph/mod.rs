//! The decision graph: the immutable product of compilation and the only thing the runtime
//! reads. Route selection is one walk of a multi-pattern lazy DFA; everything after it is a
//! flat, hash-consed program over interned request facts. `decide` must agree with
//! `eval::decide` on every program and request (`Decision::same_decision`).
//!
//! Here the public data the runtime reads (settings, routes, upstreams, limits); `ir` the
//! decision-time program `gw-compiler` lowers into, `router` route selection, `decide` the
//! executor, `dot` the Graphviz view.

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::basic::Htpasswd;
use crate::cors::CorsPolicy;
use crate::jwt::JwtVerifier;
use crate::keys::LoadedKeys;
use crate::lang::{Builtin, Fact, ForwardedMode, Method, OnError, PathSeg};

mod decide;
mod dot;
pub mod ir;
pub mod router;

pub use ir::*;
pub use router::*;

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
/// Passing health checks in a row that bring a target back (`healthy N`).
pub const DEFAULT_HEALTHY_AFTER: u32 = 2;
/// Failing health checks in a row that take a target out (`unhealthy N`).
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 1;

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
    /// `Authorization: Basic` (a `basic` set's only source).
    Basic,
}

impl CredentialSource {
    /// `header "x-api-key", bearer`: what `auth K` means without `via`.
    pub fn defaults() -> Vec<CredentialSource> {
        vec![CredentialSource::Header("x-api-key".to_string()), CredentialSource::Bearer]
    }
}

/// The credential set an `auth` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum SetRef {
    /// Index into `Graph::keysets`.
    Keys(usize),
    /// Index into `Graph::jwtsets`.
    Jwt(usize),
    /// Index into `Graph::basicsets`.
    Basic(usize),
    /// No set of that name: nothing it is asked about is valid.
    Undefined,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthMethodInfo {
    pub set: SetRef,
    pub name: String,
    /// Where its credential may come from, in order (defaults filled in).
    pub sources: Vec<CredentialSource>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuthInfo {
    /// Tried in order; the first that accepts the request wins.
    pub methods: Vec<AuthMethodInfo>,
    /// Every source of every method: what is removed before forwarding.
    pub sources: Vec<CredentialSource>,
    pub optional: bool,
    /// The 401 messages (missing, invalid).
    pub missing: String,
    pub invalid: String,
}

impl AuthInfo {
    /// A `basic` set is tried: a 401 carries `WWW-Authenticate: Basic`.
    pub fn has_basic(&self) -> bool {
        self.methods.iter().any(|m| matches!(m.set, SetRef::Basic(_)))
    }
}

/// Which way a guard refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardKind {
    /// Refuses when the condition is false.
    Allow,
    /// Refuses when the condition is true.
    Deny,
}

impl fmt::Display for GuardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuardKind::Allow => "allow",
            GuardKind::Deny => "deny",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardInfo {
    pub kind: GuardKind,
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
    /// Rendered per request (`BodyTemplate::render`).
    pub body: crate::template::BodyTemplate,
    pub content_type: Option<&'static str>,
    /// `header "name" = TEMPLATE`, rendered per request (`Template::render_header`).
    pub headers: Vec<(String, crate::template::Template)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheInfo {
    pub ttl_ns: u64,
    pub max_bytes: Option<u64>,
    /// One entry for every tenant: the tenant is not part of the key.
    pub shared: bool,
    /// The answer statuses stored (`[200]` unless the policy lists others).
    pub statuses: Vec<u16>,
}

impl CacheInfo {
    /// What a route's cache may hold when the policy names no `max`.
    pub const DEFAULT_MAX_BYTES: u64 = 10_000_000;

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(Self::DEFAULT_MAX_BYTES)
    }
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
        builtin: Builtin,
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
    /// `set header NAME = TEMPLATE`, rendered per request (`Template::render_header`).
    pub set_headers: Vec<(String, crate::template::Template)>,
    pub strip_headers: Vec<String>,
    pub rewrite: Option<RewriteInfo>,
    pub respond: Option<RespondInfo>,
    pub cache: Option<CacheInfo>,
    pub websocket: bool,
    /// `idempotent`: the route's requests may be sent again (retries replay non-idempotent
    /// methods only on such a route).
    pub idempotent: bool,
    pub cors: Option<CorsPolicy>,
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
    /// The URL parsed once, at compile time; None only when an `env(...)` it reads is unset.
    #[serde(skip)]
    pub addr: Option<TargetAddr>,
    pub weight: u64,
    pub region: Option<String>,
}

/// A target URL as the runtime sends to it: `scheme://authority` and a base path without a
/// trailing `/` ("" for none) prefixed to every request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAddr {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub base_path: String,
}

impl TargetAddr {
    /// Parse an upstream URL: `http(s)://host[:port][/base-path]`, no credentials, query or
    /// fragment. `check` reports the same reasons for literal URLs (`gw::invalid_url`).
    pub fn parse(url: &str) -> Result<TargetAddr, &'static str> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or("must start with http:// or https://")?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err("no host");
        }
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed; inject them with `header`");
        }
        if rest.contains(['?', '#', ' ']) {
            return Err("no query, fragment or spaces allowed");
        }
        if let Some((_, port)) = authority.rsplit_once(':') {
            if !authority.ends_with(']') && port.parse::<u16>().is_err() {
                return Err("the port is not a number from 0 to 65535");
            }
        }
        let uri: http::Uri = url.parse().map_err(|_| "not a valid URI")?;
        let scheme = uri.scheme().cloned().ok_or("must start with http:// or https://")?;
        let authority = uri.authority().cloned().ok_or("no host")?;
        if authority.host().is_empty() {
            return Err("no host");
        }
        Ok(TargetAddr { scheme, authority, base_path: uri.path().trim_end_matches('/').to_string() })
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BalanceInfo {
    RoundRobin,
    Weighted,
    LeastConn,
    /// Power of two choices over a peak-EWMA latency.
    LeastLatency,
    /// `hash(EXPR)`: the key comes from `Graph::balance_key`.
    Hash,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthInfo {
    pub method: Method,
    pub path: String,
    pub every_ns: u64,
    pub timeout_ns: u64,
    /// `expect N`; None: any 2xx passes.
    pub expect_status: Option<u16>,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
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
    /// The upstream declares `affinity`: its value comes from `Graph::affinity_key`.
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

impl LimitKindInfo {
    /// What the limit counts, as its identity spells it.
    fn id_part(&self) -> String {
        match self {
            LimitKindInfo::Rate { count, window_ns, burst } => {
                format!("rate:{count}/{window_ns}ns:b{}", burst.unwrap_or(0))
            }
            LimitKindInfo::Tokens { count, window_ns, .. } => format!("tokens:{count}/{window_ns}ns"),
            LimitKindInfo::Concurrent { max } => format!("concurrent:{max}"),
        }
    }
}

/// The stable identity of a route's `ordinal`-th limit: the counter key, Redis key part and
/// metric label. It changes exactly when the limit's meaning changes, so a reload keeps the
/// counters of every limit it did not change.
pub fn route_limit_id(route: &str, ordinal: usize, kind: &LimitKindInfo, per: &LimitPer) -> String {
    format!("route:{route}#{ordinal}:{}:per:{}", kind.id_part(), per_part(per))
}

/// The stable identity of a shared limit (`limit NAME ...`): its name and meaning, never the
/// routes that use it, so a route that starts or stops using it keeps everyone's counters.
pub fn shared_limit_id(name: &str, kind: &LimitKindInfo, per: &LimitPer) -> String {
    format!("shared:{name}:{}:per:{}", kind.id_part(), per_part(per))
}

fn per_part(per: &LimitPer) -> String {
    match per {
        LimitPer::Route => "route".to_string(),
        LimitPer::Key => "key".to_string(),
        LimitPer::Tenant => "tenant".to_string(),
        LimitPer::Client => "client".to_string(),
        LimitPer::Header(h) => format!("header:{h}"),
        LimitPer::Expr => "expr".to_string(),
    }
}

/// The stable identity of a tenant's limit (see `route_limit_id`).
pub fn tenant_limit_id(tenant: &str, kind: &LimitKindInfo) -> String {
    format!("tenant:{tenant}:{}", kind.id_part())
}

/// Who declared a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimitOwner {
    Route {
        route: usize,
        name: String,
    },
    Tenant {
        name: String,
    },
    /// `limit NAME ...`, charged by every route that says `limit use NAME`.
    Shared {
        name: String,
    },
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

/// A `jwt` set for the runtime (keys and secrets are never serialized).
#[derive(Debug, Clone, Serialize)]
pub struct JwtSetInfo {
    pub name: String,
    #[serde(skip)]
    pub verifier: std::sync::Arc<JwtVerifier>,
}

/// A `basic` set for the runtime (the hashes are never serialized).
#[derive(Debug, Clone, Serialize)]
pub struct BasicSetInfo {
    pub name: String,
    pub tenant: String,
    pub users: usize,
    #[serde(skip)]
    pub htpasswd: std::sync::Arc<Htpasswd>,
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
    pub jwtsets: Vec<JwtSetInfo>,
    pub basicsets: Vec<BasicSetInfo>,

    pub rt: Vec<RouteRt>,
    pub router: Router,
    pub nodes: Vec<Node>,
    pub meta: Vec<NodeMeta>,
    pub facts: Vec<Fact>,
    pub regexes: Vec<Option<regex_automata::meta::Regex>>,
    /// Tenant name (first tenant of that name) → its limits as (table index, id).
    pub tenant_limits: HashMap<String, Vec<(usize, std::sync::Arc<str>)>>,
    /// The limits of a tenant no `tenant` block names: those of `tenant *` (empty without one).
    pub default_tenant_limits: Vec<(usize, std::sync::Arc<str>)>,
    /// Upstream index → the node of its `hash(EXPR)`.
    pub balance_keys: Vec<Option<NodeId>>,
    /// Upstream index → the node of its `affinity EXPR`.
    pub affinity_keys: Vec<Option<NodeId>>,
    /// `body.model`, read by `limit ... model /re/`.
    pub model_path: Vec<PathSeg>,
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
            jwtsets: &'a [JwtSetInfo],
            basicsets: &'a [BasicSetInfo],
            stats: GraphStats,
        }
        View {
            settings: &self.settings,
            routes: &self.routes,
            upstreams: &self.upstreams,
            limits: &self.limits,
            tenants: &self.tenants,
            keysets: &self.keysets,
            jwtsets: &self.jwtsets,
            basicsets: &self.basicsets,
            stats: self.stats(),
        }
        .serialize(s)
    }
}
