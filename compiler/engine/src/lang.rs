//! The language's plain vocabulary that the decision graph executes: request facts, operators,
//! functions, methods and the few gateway modes. The compiler's AST uses these same types
//! (re-exported from `gw_compiler::ast`), so lowering copies them instead of translating.

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    Field(String),
    Index(usize),
}
