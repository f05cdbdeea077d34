//! The language's plain vocabulary that the decision graph executes: request facts, operators,
//! functions, methods and the few gateway modes. The compiler's AST uses these same types
//! (re-exported from `gw_compiler::ast`), so lowering copies them instead of translating.

/// A handler built into the gateway (`serve BUILTIN`). The grammar's `builtin` rule lists the
/// same names (a test pins them), and the runtime matches on this type with no catch-all arm,
/// so a builtin added to the language cannot be answered by another one's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    Health,
    Ready,
    Metrics,
    Tokens,
    Usage,
    Upstreams,
    Config,
}

impl Builtin {
    pub const ALL: [Builtin; 7] = [
        Builtin::Health,
        Builtin::Ready,
        Builtin::Metrics,
        Builtin::Tokens,
        Builtin::Usage,
        Builtin::Upstreams,
        Builtin::Config,
    ];

    pub fn parse(s: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Builtin::Health => "health",
            Builtin::Ready => "ready",
            Builtin::Metrics => "metrics",
            Builtin::Tokens => "tokens",
            Builtin::Usage => "usage",
            Builtin::Upstreams => "upstreams",
            Builtin::Config => "config",
        }
    }
}

impl std::fmt::Display for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    Local,
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedMode {
    Strip,
    Append,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
    Any,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "ANY" => Method::Any,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Any => "ANY",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    Matches,
    In,
    StartsWith,
    EndsWith,
    /// `=` written where `==` was meant: parsed only so that `check` can say so.
    BadAssign,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Contains => "contains",
            BinOp::Matches => "matches",
            BinOp::In => "in",
            BinOp::StartsWith => "starts_with",
            BinOp::EndsWith => "ends_with",
            BinOp::BadAssign => "=",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            _ => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    Lower,
    Upper,
    Number,
    Len,
}

impl Func {
    pub fn as_str(self) -> &'static str {
        match self {
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Number => "number",
            Func::Len => "len",
        }
    }
}

/// A fact about the request: `method`, `header["x"]`, `body.messages[0].role`, ...
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fact {
    Method,
    Path,
    Host,
    ClientIp,
    /// The authenticated tenant's name.
    Tenant,
    /// The authenticated key's name (never the key itself).
    Key,
    /// Header by lower-cased name.
    Header(String),
    Query(String),
    Param(String),
    /// A JSON pointer into the request body; empty means the whole body.
    Body(Vec<PathSeg>),
    /// A claim of the verified JWT the request authenticated with (`claim["sub"]`); empty
    /// means every claim. Missing unless a `jwt` set authenticated the request.
    Claim(Vec<PathSeg>),
}

/// What only the gateway knows about a request, readable in a template (never in a guard: the
/// decision does not depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayFact {
    /// The request's `x-request-id` (kept from the client when sane, else generated).
    RequestId,
    /// The W3C trace id of the request's `traceparent` (continued or started).
    TraceId,
}

impl GatewayFact {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayFact::RequestId => "request_id",
            GatewayFact::TraceId => "trace_id",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    Field(String),
    Index(usize),
}
