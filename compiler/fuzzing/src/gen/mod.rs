//! Generated policies: `arbitrary` structures that print as policy text, well-typed by
//! construction, with names drawn from small pools shared with the generated requests so that
//! requests hit routes.

mod policy;
mod request;

use std::fmt::Write as _;

use arbitrary::Arbitrary;

use gw_compiler::fmt as gwfmt;

pub use policy::*;
pub use request::*;

/// Words shared by generated policies and generated requests, so requests hit routes.
const WORDS: &[&str] = &[
    "v1",
    "chat",
    "completions",
    "models",
    "x",
    "a",
    "gpt-4o",
    "gpt-3.5",
    "enterprise",
    "free",
    "on",
    "1",
    "42",
    "é",
    "",
    "a b",
    "*",
    "..",
    "%20",
    "Bearer sk-a-1",
    "sk-a-1",
    "sk-b-1",
];
const HEADERS: &[&str] =
    &["x-api-key", "x-tenant", "x-flag", "authorization", "content-type", "x-user", "host", "X-Mixed", "x-lib"];
const QUERIES: &[&str] = &["q", "limit", "key", "debug"];
const PARAMS: &[&str] = &["id", "model", "x"];
const FIELDS: &[&str] = &["model", "max_tokens", "messages", "stream", "n", "temperature", "user", "role"];
const HOSTS: &[&str] = &[
    "api.example.com",
    "example.com",
    "a.b.example.com",
    "localhost",
    "api.example.com",
    "example.com",
    "API.Example.COM",
];
const REGEXES: &[&str] = &["^gpt-4", "o[1-9]", "^/v1/", "a|b", ".*", "[a-z]+$", "\\d+", "^$", "(?i)GPT", "é+"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"];
const UPSTREAMS: usize = 4;
const TENANTS: &[&str] = &["t0", "t1", "t2", "t3"];

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[i as usize % pool.len()]
}

/// Most of the time a word of the shared pool, sometimes any string.
#[derive(Arbitrary, Debug, Clone)]
pub enum GenStr {
    Pool(u8),
    Any(String),
}

impl GenStr {
    fn get(&self) -> String {
        match self {
            GenStr::Pool(i) => pick(WORDS, *i).to_string(),
            GenStr::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GenUnit {
    Ms,
    S,
    Min,
    M,
    H,
    D,
}

impl GenUnit {
    fn as_str(self) -> &'static str {
        match self {
            GenUnit::Ms => "ms",
            GenUnit::S => "s",
            GenUnit::Min => "min",
            GenUnit::M => "m",
            GenUnit::H => "h",
            GenUnit::D => "d",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct GenDuration {
    n: u16,
    unit: GenUnit,
}

impl GenDuration {
    fn print(self) -> String {
        // Mostly small; 1 in 32 the raw (possibly zero or out of range) number.
        let n = if self.n % 32 == 31 { self.n / 32 } else { self.n % 30 + 1 };
        format!("{n}{}", self.unit.as_str())
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct GenRate {
    count: u16,
    suffix: u8,
    window_n: Option<u8>,
    window: GenUnit,
}

impl GenRate {
    fn print(self) -> String {
        let suffix = match self.suffix % 8 {
            0 => "k",
            1 => "M",
            _ => "",
        };
        let n = self.window_n.map(|n| n.to_string()).unwrap_or_default();
        format!("{}{suffix}/{n}{}", self.count, self.window.as_str())
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenValue {
    Lit(GenStr),
    Env(u8),
    Concat(GenStr, u8),
}

impl GenValue {
    fn print(&self) -> String {
        let env =
            |i: u8| if i.is_multiple_of(5) { format!("env(\"UNSET_{i}\")") } else { format!("env(\"E{}\")", i % 4) };
        match self {
            GenValue::Lit(s) => gwfmt::quote(&s.get()),
            GenValue::Env(i) => env(*i),
            GenValue::Concat(s, i) => format!("{} + {}", gwfmt::quote(&s.get()), env(*i)),
        }
    }
}

// ---------------------------------------------------------------- expressions

#[derive(Arbitrary, Debug, Clone)]
pub enum GenStrFact {
    Header(u8),
    Method,
    Path,
    Host,
    ClientIp,
    Tenant,
    Key,
    HeaderDot(u8),
    Query(u8),
    Param(u8),
}

impl GenStrFact {
    fn print(&self, sc: Scope) -> String {
        match self {
            // `tenant` and `key` need `auth`: mostly written only where there is one.
            GenStrFact::Tenant | GenStrFact::Key if !sc.auth => "host".into(),
            GenStrFact::Header(i) => format!("header[{}]", gwfmt::quote(pick(HEADERS, *i))),
            // Claims where the route tries the JWT set (a high byte, so layouts keep their meaning).
            GenStrFact::HeaderDot(i) if sc.jwt && *i >= 192 => {
                pick(&["claim.org", "claim[\"sub\"]", "claim.role", "claim.n", "claim.role[0]", "claim.missing"], *i)
                    .to_string()
            }
            GenStrFact::HeaderDot(i) => format!("header.{}", pick(HEADERS, *i)),
            GenStrFact::Method => "method".into(),
            GenStrFact::Path => "path".into(),
            GenStrFact::Host => "host".into(),
            GenStrFact::ClientIp => "client_ip".into(),
            GenStrFact::Tenant => "tenant".into(),
            GenStrFact::Key => "key".into(),
            GenStrFact::Query(i) => format!("query[{}]", gwfmt::quote(pick(QUERIES, *i))),
            GenStrFact::Param(i) => format!("param.{}", pick(PARAMS, *i)),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenBodySeg {
    Field(u8),
    Index(u8),
    Quoted(GenStr),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenBody(Vec<GenBodySeg>);

impl GenBody {
    fn print(&self) -> String {
        let mut out = "body".to_string();
        for seg in self.0.iter().take(4) {
            match seg {
                GenBodySeg::Field(i) => {
                    let _ = write!(out, ".{}", pick(FIELDS, *i));
                }
                GenBodySeg::Index(i) => {
                    let _ = write!(out, "[{}]", i % 4);
                }
                GenBodySeg::Quoted(s) => {
                    let _ = write!(out, "[{}]", gwfmt::quote(&s.get()));
                }
            }
        }
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenStrExpr {
    Fact(GenStrFact),
    Lit(GenStr),
    Lower(Box<GenStrExpr>),
    Upper(Box<GenStrExpr>),
}

impl GenStrExpr {
    fn print(&self, sc: Scope, depth: u32) -> String {
        match self {
            GenStrExpr::Fact(f) => f.print(sc),
            GenStrExpr::Lit(s) => gwfmt::quote(&s.get()),
            GenStrExpr::Lower(e) | GenStrExpr::Upper(e) if depth > 4 => e.leaf(),
            GenStrExpr::Lower(e) => format!("lower({})", e.print(sc, depth + 1)),
            GenStrExpr::Upper(e) => format!("upper({})", e.print(sc, depth + 1)),
        }
    }

    fn leaf(&self) -> String {
        "path".into()
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenNumExpr {
    Int(i16),
    Float(i16, u8),
    Number(GenStrExpr),
    Len(GenStrExpr),
    Body(GenBody),
    LenBody(GenBody),
}

impl GenNumExpr {
    fn print(&self, sc: Scope, depth: u32) -> String {
        match self {
            GenNumExpr::Int(n) => n.to_string(),
            GenNumExpr::Float(a, b) => format!("{a}.{}", b % 100),
            GenNumExpr::Number(e) => format!("number({})", e.print(sc, depth + 1)),
            GenNumExpr::Len(e) => format!("len({})", e.print(sc, depth + 1)),
            GenNumExpr::Body(b) => b.print(),
            GenNumExpr::LenBody(b) => format!("len({})", b.print()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GenCmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl GenCmp {
    fn as_str(self) -> &'static str {
        match self {
            GenCmp::Eq => "==",
            GenCmp::Ne => "!=",
            GenCmp::Lt => "<",
            GenCmp::Le => "<=",
            GenCmp::Gt => ">",
            GenCmp::Ge => ">=",
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum GenStrOp {
    Cmp(GenCmp),
    Contains,
    StartsWith,
    EndsWith,
}

impl GenStrOp {
    fn as_str(self) -> &'static str {
        match self {
            GenStrOp::Cmp(c) => c.as_str(),
            GenStrOp::Contains => "contains",
            GenStrOp::StartsWith => "starts_with",
            GenStrOp::EndsWith => "ends_with",
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenJson {
    Null,
    Bool(bool),
    Int(i32),
    Float(i16, u8),
    Str(GenStr),
    Array(Vec<GenJson>),
    Object(Vec<(u8, GenJson)>),
}

impl GenJson {
    fn to_value(&self, depth: u32) -> serde_json::Value {
        use serde_json::Value as V;
        match self {
            GenJson::Null => V::Null,
            GenJson::Bool(b) => V::Bool(*b),
            GenJson::Int(n) => V::from(*n),
            GenJson::Float(a, b) => V::from(f64::from(*a) + f64::from(*b) / 256.0),
            GenJson::Str(s) => V::String(s.get()),
            GenJson::Array(_) | GenJson::Object(_) if depth > 3 => V::Null,
            GenJson::Array(items) => V::Array(items.iter().take(4).map(|j| j.to_value(depth + 1)).collect()),
            GenJson::Object(fields) => V::Object(
                fields.iter().take(6).map(|(k, v)| (pick(FIELDS, *k).to_string(), v.to_value(depth + 1))).collect(),
            ),
        }
    }

    /// As JSON text the grammar reads (its string escapes are the language's, not JSON's).
    fn print_json(&self, depth: u32) -> String {
        match self {
            GenJson::Str(s) => gwfmt::quote(&s.get()),
            GenJson::Array(_) | GenJson::Object(_) if depth > 3 => "null".into(),
            GenJson::Array(items) => {
                let items: Vec<String> = items.iter().take(4).map(|j| j.print_json(depth + 1)).collect();
                format!("[{}]", items.join(", "))
            }
            GenJson::Object(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .take(6)
                    .map(|(k, v)| format!("{}: {}", gwfmt::quote(pick(FIELDS, *k)), v.print_json(depth + 1)))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }
            other => other.to_value(depth).to_string(),
        }
    }

    /// As an expression literal: scalars only (the language has no object literals).
    fn print_lit(&self) -> String {
        match self {
            GenJson::Null | GenJson::Array(_) | GenJson::Object(_) => "\"\"".into(),
            GenJson::Bool(b) => b.to_string(),
            GenJson::Int(n) => n.to_string(),
            GenJson::Float(a, b) => format!("{a}.{}", b % 100),
            GenJson::Str(s) => gwfmt::quote(&s.get()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenRegex {
    pattern: GenStr,
    pool: Option<u8>,
    case_insensitive: bool,
}

impl GenRegex {
    fn print(&self) -> String {
        let p = match self.pool {
            Some(i) => pick(REGEXES, i).to_string(),
            None => self.pattern.get(),
        };
        let p: String = p.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        // The grammar reads `\` + any char and stops at an unescaped `/`.
        let mut out = String::new();
        let mut chars = p.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '/' => out.push_str("\\/"),
                '\\' => match chars.next() {
                    Some(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    None => out.push_str("\\\\"),
                },
                c => out.push(c),
            }
        }
        if out.is_empty() {
            out.push('x');
        }
        format!("/{out}/{}", if self.case_insensitive { "i" } else { "" })
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenBool {
    Lit(bool),
    Ref(u8),
    Exists(GenStrFact),
    StrCmp(GenStrExpr, GenStrOp, GenStrExpr),
    NumCmp(GenNumExpr, GenCmp, GenNumExpr),
    BodyCmp(GenBody, GenCmp, GenJson),
    BodyExists(GenBody),
    BodyContains(GenBody, GenStr),
    Matches(GenStrExpr, GenRegex),
    In(GenStrExpr, Vec<GenStr>),
    Not(Box<GenBool>),
    And(Box<GenBool>, Box<GenBool>),
    Or(Box<GenBool>, Box<GenBool>),
    Paren(Box<GenBool>),
}

/// What an expression may refer to: how many matchers are visible, whether the route
/// authenticates (so `tenant` and `key` are available), and whether its `auth` tries the
/// `j0` JWT set (so `claim` is).
#[derive(Clone, Copy)]
struct Scope {
    matchers: usize,
    auth: bool,
    jwt: bool,
}

impl Scope {
    const NONE: Scope = Scope { matchers: 0, auth: false, jwt: false };
}

impl GenBool {
    fn print(&self, sc: Scope, depth: u32) -> String {
        let deep = depth > 5;
        match self {
            GenBool::Lit(b) => b.to_string(),
            GenBool::Ref(i) => {
                if sc.matchers == 0 {
                    "true".into()
                } else {
                    format!("m{}", *i as usize % sc.matchers)
                }
            }
            GenBool::Exists(f) => format!("{} exists", f.print(sc)),
            // Strings have no order: `<`/`>` print as `==`/`!=`, so the policy stays well-typed.
            GenBool::StrCmp(a, op, b) => {
                let op = match op {
                    GenStrOp::Cmp(GenCmp::Lt | GenCmp::Le) => "==",
                    GenStrOp::Cmp(GenCmp::Gt | GenCmp::Ge) => "!=",
                    op => op.as_str(),
                };
                format!("{} {op} {}", a.print(sc, depth), b.print(sc, depth))
            }
            GenBool::NumCmp(a, op, b) => format!("{} {} {}", a.print(sc, depth), op.as_str(), b.print(sc, depth)),
            // An order comparison takes a number; with any other literal it is an equality.
            GenBool::BodyCmp(b, op, j) => {
                let ordering = !matches!(op, GenCmp::Eq | GenCmp::Ne);
                let op =
                    if ordering && !matches!(j, GenJson::Int(_) | GenJson::Float(..)) { "==" } else { op.as_str() };
                format!("{} {op} {}", b.print(), j.print_lit())
            }
            GenBool::BodyExists(b) => format!("{} exists", b.print()),
            GenBool::BodyContains(b, s) => format!("{} contains {}", b.print(), gwfmt::quote(&s.get())),
            GenBool::Matches(e, r) => format!("{} matches {}", e.print(sc, depth), r.print()),
            GenBool::In(e, items) => {
                let items: Vec<String> = items.iter().take(5).map(|s| gwfmt::quote(&s.get())).collect();
                format!("{} in [{}]", e.print(sc, depth), items.join(", "))
            }
            GenBool::Not(_) | GenBool::And(..) | GenBool::Or(..) | GenBool::Paren(_) if deep => "false".into(),
            GenBool::Not(e) => format!("not ({})", e.print(sc, depth + 1)),
            GenBool::And(a, b) => format!("({}) and ({})", a.print(sc, depth + 1), b.print(sc, depth + 1)),
            GenBool::Or(a, b) => format!("{} or {}", a.print(sc, depth + 1), b.print(sc, depth + 1)),
            GenBool::Paren(e) => format!("({})", e.print(sc, depth + 1)),
        }
    }
}

// ---------------------------------------------------------------- items
