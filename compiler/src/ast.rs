//! The typed syntax tree of a policy. Every node keeps the span it came from, so every later
//! stage can point at the source. Built by `syntax`, read by `resolve`, `check`, `lower`,
//! `eval` and `fmt`; nothing here knows about pest.

use crate::source::Span;
pub use gw_engine::lang::{BinOp, Builtin, Fact, ForwardedMode, Func, GatewayFact, Method, OnError, PathSeg};

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `serve BUILTIN`: which handler, and where it is named.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinRef {
    pub builtin: Builtin,
    pub span: Span,
}

/// A whole policy file after parsing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Import(Import),
    Gateway(Gateway),
    Upstream(Upstream),
    Keys(KeySet),
    Jwt(JwtSet),
    Basic(BasicSet),
    Tenant(Tenant),
    Matcher(Matcher),
    Limit(SharedLimit),
    Route(Route),
    Test(Test),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Import(i) => i.span,
            Item::Gateway(g) => g.span,
            Item::Upstream(u) => u.span,
            Item::Keys(k) => k.span,
            Item::Jwt(j) => j.span,
            Item::Basic(b) => b.span,
            Item::Tenant(t) => t.span,
            Item::Matcher(m) => m.span,
            Item::Limit(l) => l.span,
            Item::Route(r) => r.span,
            Item::Test(t) => t.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub path: Str,
    pub span: Span,
}

/// A string literal; `value` is unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Str {
    pub value: String,
    pub span: Span,
}

/// A string-valued setting: literals and `env("NAME")` joined with `+`. A template (`set
/// header`, `respond`) may also read the request: its facts and what only the gateway knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub parts: Vec<ValuePart>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValuePart {
    Lit(Str),
    Env(Str),
    /// Only in a template.
    Fact(Fact, Span),
    /// `request_id` or `trace_id`, only in a template.
    Gateway(GatewayFact, Span),
}

/// A literal with a unit, already converted to its base unit; `span` covers the literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    /// Nanoseconds for durations, bytes for sizes, the plain number for counts.
    pub value: u64,
    pub span: Span,
}

/// `count / window`, e.g. `100k/min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub window_ns: u64,
    pub span: Span,
}

// ------------------------------------------------------------------ gateway

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub kind: SettingKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SettingKind {
    Listen(Value),
    Admin { addr: Value, token: Option<Value> },
    State(StateStore),
    Audit { path: Value, rotate: Option<Quantity> },
    MaxBody(Quantity),
    MaxHeaderBytes(Quantity),
    MaxHeaders(Quantity),
    HeaderTimeout(Quantity),
    IdleTimeout(Quantity),
    DrainTimeout(Quantity),
    Tls { cert: Value, key: Value },
    PolicyHeader(bool),
    Forwarded(ForwardedMode),
}

impl SettingKind {
    /// The keyword that starts the setting, used for duplicate detection and messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            SettingKind::Listen(_) => "listen",
            SettingKind::Admin { .. } => "admin",
            SettingKind::State(_) => "state",
            SettingKind::Audit { .. } => "audit",
            SettingKind::MaxBody(_) => "max_body",
            SettingKind::MaxHeaderBytes(_) => "max_header_bytes",
            SettingKind::MaxHeaders(_) => "max_headers",
            SettingKind::HeaderTimeout(_) => "header_timeout",
            SettingKind::IdleTimeout(_) => "idle_timeout",
            SettingKind::DrainTimeout(_) => "drain_timeout",
            SettingKind::Tls { .. } => "tls",
            SettingKind::PolicyHeader(_) => "policy_header",
            SettingKind::Forwarded(_) => "forwarded",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StateStore {
    Local,
    Redis { url: Value, on_error: OnError },
}

// ------------------------------------------------------------------ upstream

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: Ident,
    pub stmts: Vec<UpstreamStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamStmt {
    pub kind: UpstreamStmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamStmtKind {
    Target(Target),
    Balance(Balance),
    Header { name: Str, value: Value },
    Timeout(Quantity),
    ConnectTimeout(Quantity),
    Health(HealthCheck),
    Retry(Retry),
    MaxConnections(Quantity),
    Affinity(Expr),
}

impl UpstreamStmtKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            UpstreamStmtKind::Target(_) => "target",
            UpstreamStmtKind::Balance(_) => "balance",
            UpstreamStmtKind::Header { .. } => "header",
            UpstreamStmtKind::Timeout(_) => "timeout",
            UpstreamStmtKind::ConnectTimeout(_) => "connect_timeout",
            UpstreamStmtKind::Health(_) => "health",
            UpstreamStmtKind::Retry(_) => "retry",
            UpstreamStmtKind::MaxConnections(_) => "max_connections",
            UpstreamStmtKind::Affinity(_) => "affinity",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: Value,
    pub weight: Option<Quantity>,
    pub region: Option<Str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Balance {
    RoundRobin,
    Weighted,
    LeastConn,
    /// Power of two choices over a peak-EWMA latency.
    LeastLatency,
    Hash(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub method: Method,
    pub path: Str,
    pub every: Quantity,
    pub timeout: Option<Quantity>,
    /// `expect N`: the status a passing check answers with (any 2xx without it).
    pub expect: Option<Quantity>,
    /// `healthy N`: passing checks in a row that bring a target back.
    pub healthy: Option<Quantity>,
    /// `unhealthy N`: failing checks in a row that take it out.
    pub unhealthy: Option<Quantity>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub attempts: Quantity,
    pub on: Vec<RetryCond>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryCond {
    ConnectError(Span),
    Timeout(Span),
    Status(Quantity),
}

// ------------------------------------------------------------------ keys, tenants, matchers

/// `keys NAME from "file" [salt VALUE]`: a file of `<sha256-hex> <tenant> <key-name>` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    pub name: Ident,
    pub file: Str,
    pub salt: Option<Value>,
    /// The 401 message of every refusal by this set (`message "..."`).
    pub message: Option<Str>,
    pub span: Span,
}

/// `jwt NAME { alg ...; secret VALUE | key "pem" | jwks "file"; issuer; audience; leeway; tenant }`:
/// bearer JWTs verified with a pinned algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSet {
    pub name: Ident,
    pub stmts: Vec<JwtStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtStmt {
    pub kind: JwtStmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwtStmtKind {
    /// The algorithm name as written; `check` says whether it is one gw verifies.
    Alg(Ident),
    Secret(Value),
    /// A PEM file of the issuer's public key, relative to the policy file.
    Key(Str),
    /// A JWKS (JSON Web Key Set) file, relative to the policy file.
    Jwks(Str),
    Issuer(Str),
    Audience(Str),
    Leeway(Quantity),
    /// `tenant claim["org"]` (an expression, checked to be a claim) or `tenant "name"`.
    TenantClaim(Expr),
    TenantName(Str),
    Message(Str),
}

impl JwtStmtKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            JwtStmtKind::Alg(_) => "alg",
            JwtStmtKind::Secret(_) => "secret",
            JwtStmtKind::Key(_) => "key",
            JwtStmtKind::Jwks(_) => "jwks",
            JwtStmtKind::Issuer(_) => "issuer",
            JwtStmtKind::Audience(_) => "audience",
            JwtStmtKind::Leeway(_) => "leeway",
            JwtStmtKind::TenantClaim(_) | JwtStmtKind::TenantName(_) => "tenant",
            JwtStmtKind::Message(_) => "message",
        }
    }
}

/// `basic NAME from "file" [tenant "t"] [message "..."]`: users of an htpasswd file.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicSet {
    pub name: Ident,
    pub file: Str,
    pub tenant: Option<Str>,
    pub message: Option<Str>,
    pub span: Span,
}

/// The name of `tenant *`, the block of every tenant's default limits.
pub const EVERY_TENANT: &str = "*";

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: Ident,
    pub stmts: Vec<TenantStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantStmt {
    pub kind: TenantStmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TenantStmtKind {
    Rate { rate: Rate, burst: Option<Quantity> },
    Tokens(Rate),
    Concurrent(Quantity),
    Region(Str),
}

impl TenantStmtKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            TenantStmtKind::Rate { .. } => "rate",
            TenantStmtKind::Tokens(_) => "tokens",
            TenantStmtKind::Concurrent(_) => "concurrent",
            TenantStmtKind::Region(_) => "region",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: Ident,
    pub expr: Expr,
    pub span: Span,
}

/// `limit NAME KIND [per KEY]`: one counter, declared once, that every route saying
/// `limit use NAME` charges (its `per` is `key`, `tenant`, `client` or a header).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedLimit {
    pub name: Ident,
    pub kind: LimitKind,
    pub per: LimitKey,
    pub span: Span,
}

// ------------------------------------------------------------------ routes

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: Ident,
    pub stmts: Vec<RouteStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteStmt {
    pub kind: RouteStmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteStmtKind {
    When(When),
    Auth(Auth),
    /// `auth none`: the route is public on purpose.
    AuthNone,
    /// `allow if EXPR [else STATUS "message"]`: requests for which EXPR is false are denied.
    Allow {
        cond: Expr,
        status: Option<Quantity>,
        message: Option<Str>,
    },
    /// `deny STATUS "message" if EXPR`.
    Deny {
        status: Quantity,
        message: Str,
        cond: Expr,
    },
    Limit(Limit),
    /// `limit use NAME [if EXPR]`: the shared limit NAME applies here too.
    LimitUse {
        name: Ident,
        cond: Option<Expr>,
    },
    SetHeader {
        name: Str,
        value: Value,
    },
    StripHeaders(Vec<Str>),
    Rewrite(Rewrite),
    Respond {
        status: Quantity,
        body: Option<ResponseBody>,
        /// `header "name" = TEMPLATE`: headers of the answer.
        headers: Vec<(Str, Value)>,
    },
    Cache {
        ttl: Quantity,
        max: Option<Quantity>,
        /// `shared`: one entry for every tenant (the tenant is not part of the key).
        shared: bool,
        /// `status S, ...`: the answer statuses stored (default: 200 only).
        statuses: Vec<Quantity>,
    },
    Websocket,
    /// `idempotent`: the route's requests may be sent twice (retries replay them whatever
    /// their method).
    Idempotent,
    Cors(Cors),
    Serve(BuiltinRef),
    To(Ident),
}

impl RouteStmtKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            RouteStmtKind::When(_) => "when",
            RouteStmtKind::Auth(_) | RouteStmtKind::AuthNone => "auth",
            RouteStmtKind::Allow { .. } => "allow",
            RouteStmtKind::Deny { .. } => "deny",
            RouteStmtKind::Limit(_) | RouteStmtKind::LimitUse { .. } => "limit",
            RouteStmtKind::SetHeader { .. } => "set",
            RouteStmtKind::StripHeaders(_) => "strip",
            RouteStmtKind::Rewrite(_) => "rewrite",
            RouteStmtKind::Respond { .. } => "respond",
            RouteStmtKind::Cache { .. } => "cache",
            RouteStmtKind::Websocket => "websocket",
            RouteStmtKind::Idempotent => "idempotent",
            RouteStmtKind::Cors(_) => "cors",
            RouteStmtKind::Serve(_) => "serve",
            RouteStmtKind::To(_) => "to",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseBody {
    /// JSON without a template in it.
    Json(Json),
    /// JSON with templates among its values, rendered per request.
    JsonTemplate(JsonTemplate),
    Text(Value),
}

/// A `respond` JSON body whose values may read the request.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate {
    pub value: JsonT,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonT {
    /// A number, `true`, `false` or `null`.
    Scalar(serde_json::Value),
    /// A string, or a template rendered to one.
    Text(Value),
    Array(Vec<JsonT>),
    Object(Vec<(Str, JsonT)>),
}

impl JsonT {
    /// The plain JSON, when no value is a template (env values and facts included).
    pub fn as_literal(&self) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        Some(match self {
            JsonT::Scalar(v) => v.clone(),
            JsonT::Text(v) => {
                let mut s = String::new();
                for p in &v.parts {
                    let ValuePart::Lit(l) = p else { return None };
                    s.push_str(&l.value);
                }
                J::String(s)
            }
            JsonT::Array(items) => J::Array(items.iter().map(JsonT::as_literal).collect::<Option<_>>()?),
            JsonT::Object(kv) => {
                J::Object(kv.iter().map(|(k, v)| Some((k.value.clone(), v.as_literal()?))).collect::<Option<_>>()?)
            }
        })
    }
}

/// `when METHODS "path" [host "pattern"] [if EXPR]`.
#[derive(Debug, Clone, PartialEq)]
pub struct When {
    pub methods: Vec<Method>,
    pub methods_span: Span,
    pub path: Str,
    pub host: Option<Str>,
    pub cond: Option<Expr>,
}

/// `auth SET [via ...] [or SET [via ...]]... [optional] [message "..."]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// The credential sets tried in order; the first that accepts the request wins.
    pub methods: Vec<AuthMethod>,
    /// `optional`: a request without a credential passes unauthenticated.
    pub optional: bool,
    /// The 401 message of every refusal on this route, whatever failed.
    pub message: Option<Str>,
}

/// One credential set of an `auth`: a key set, a `jwt` set or a `basic` set.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthMethod {
    pub set: Ident,
    /// Where the credential may come from, in order; empty means the set's default
    /// (`header "x-api-key", bearer` for keys, `bearer` for JWTs, `Authorization: Basic`).
    pub via: Vec<Credential>,
}

/// `cors origins [...] [methods M|M] [headers [...]] [expose [...]] [credentials] [max_age D]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    pub origins: Vec<Str>,
    pub methods: Vec<Method>,
    pub headers: Vec<Str>,
    pub expose: Vec<Str>,
    pub credentials: Option<Span>,
    pub max_age: Option<Quantity>,
    /// Each clause's keyword and span, for duplicate detection.
    pub clauses: Vec<(&'static str, Span)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Header(Str),
    Bearer(Span),
    Query(Str),
    /// `Authorization: Basic` (only ever a `basic` set's default; not written in a policy).
    Basic(Span),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub kind: LimitKind,
    pub per: LimitKey,
    pub model: Option<Regex>,
    pub cond: Option<Expr>,
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LimitKind {
    Rate { rate: Rate, burst: Option<Quantity> },
    Tokens { rate: Rate, estimate: Option<Quantity> },
    Concurrent(Quantity),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LimitKey {
    /// No `per`: one counter for the whole route.
    Route,
    Key,
    Tenant,
    Client,
    Header(Str),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    Prefix { from: Str, to: Str },
    Path(Str),
}

// ------------------------------------------------------------------ tests

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub name: Str,
    pub stmts: Vec<TestStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestStmt {
    pub kind: TestStmtKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestStmtKind {
    Send(Send),
    Advance(Quantity),
    Expect(Expectation),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    pub method: Method,
    pub path: Str,
    pub headers: Vec<(Str, Str)>,
    pub body: Option<Json>,
    pub client: Option<Str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    Status {
        status: Quantity,
        message: Option<Str>,
    },
    Route(Ident),
    Upstream(Ident),
    Tenant(Ident),
    /// `expect claim "name" = "value"`: the authenticated token's claim, as text.
    Claim {
        name: Str,
        value: Str,
    },
    /// `header "name" = "value"`, or `absent` (`value` None): the header the upstream gets
    /// from the route's `set header`, or the one its `respond` answers with.
    Header {
        name: Str,
        value: Option<Str>,
    },
    /// `body {json}` (equal as JSON) or `body "text"`: what the route's `respond` answers.
    Body(ResponseBody),
    /// `limit NAME` (a shared limit) or `limit tenant NAME|*`: that limit applies to the request.
    Limit {
        tenant: bool,
        name: Ident,
    },
    /// `expect cache hit|miss|bypass`: what the route's cache did with the last request.
    Cache {
        result: CacheResult,
        span: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Bypass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

/// A JSON literal written in the policy, with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Json {
    pub value: serde_json::Value,
    pub span: Span,
}

// ------------------------------------------------------------------ expressions

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    List(Vec<Expr>),
    Fact(Fact),
    /// A reference to a named matcher.
    Ref(Ident),
    Not(Box<Expr>),
    Exists(Box<Expr>),
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        func: Func,
        args: Vec<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Regex(Regex),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regex {
    pub pattern: String,
    pub case_insensitive: bool,
    pub span: Span,
}
