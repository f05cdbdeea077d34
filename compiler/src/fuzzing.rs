//! The properties the fuzz targets in `fuzz/` check, kept here so that the fuzz targets and the
//! regression replay (`compiler/tests/fuzz_regressions.rs`) run exactly the same code. Each
//! function takes the fuzzer's raw bytes and panics when its property does not hold.
//!
//! - [`parse`]: any bytes as a policy file: the whole pipeline never panics, every diagnostic
//!   span lies inside its file on char boundaries, and every diagnostic renders.
//! - [`compile_structured`]: a policy generated from an `arbitrary` structure, printed and
//!   compiled (and lowered, and its tests run, when it is valid).
//! - [`roundtrip`]: formatting a policy that parses keeps its meaning and is idempotent.
//! - [`differential`]: a generated policy and requests: the decision graph and the reference
//!   evaluator agree on every request; and every expression of the policy evaluates within the
//!   types the checker gave it (see [`typed_evaluation`]).
//!
//! Not a stable API: it exists for the fuzzers and their regression tests.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

use crate::ast::Method;
use crate::diagnostics::{self, Diag, Severity, Style};
use crate::fmt as gwfmt;
use crate::keys::hash_key;
use crate::load::MemLoader;
use crate::request::Request;
use crate::source::{FileId, Sources};
use crate::{eval, lower, syntax, testing, value, Mode, Options, Output};

// ====================================================================== shared helpers

/// The environment every fuzzed compile sees: names starting with `UNSET` are unset, every
/// other name has a value (so `env("X")` in a generated policy mostly resolves).
fn fuzz_env(name: &str) -> Option<String> {
    if name == "SALT" {
        Some(SALT.to_string())
    } else if name.starts_with("UNSET") {
        None
    } else {
        Some(format!("v-{}", name.to_ascii_lowercase()))
    }
}

/// Keys the generated key files hold: (key, tenant, key name).
const KEYS: &[(&str, &str, &str)] = &[
    ("sk-a-1", "t0", "a-1"),
    ("sk-a-2", "t0", "a-2"),
    ("sk-b-1", "t1", "b-1"),
    ("sk-c-1", "t2", "c-1"),
    ("sk-x-1", "nobody", "x-1"),
];

/// The salt `salt "pepper"` adds.
const SALT: &str = "pepper";

fn key_file(salt: Option<&str>) -> String {
    KEYS.iter().map(|(k, t, n)| format!("{} {t} {n}\n", hex::encode(hash_key(salt, k)))).collect()
}

/// A loader holding the policy, a module it may import and key files it may name.
fn loader_with(policy: impl Into<Vec<u8>>) -> MemLoader {
    MemLoader::default()
        .with("policy.gwp", policy)
        .with(
            "lib.gwp",
            "upstream lib_up { target \"http://127.0.0.1:9\" }\nmatcher lib_m = header[\"x-lib\"] == \"1\"\n",
        )
        .with("k.keys", key_file(None))
        .with("keys/k.keys", key_file(None))
        .with("s.keys", key_file(Some(SALT)))
        .with("bad.keys", "not-hex t n\n\u{e9}\u{e9} x\n")
}

fn compile_with(loader: &MemLoader, mode: Mode) -> Output {
    let opts = Options { mode, env: &fuzz_env };
    crate::compile(loader, Path::new("policy.gwp"), &opts)
}

/// Every label of every diagnostic lies inside its file, on char boundaries, and every
/// diagnostic renders (plain, and as JSON).
fn check_diagnostics(sources: &Sources, diags: &[Diag]) {
    for d in diags {
        for l in &d.labels {
            let Some(file) = sources.get(l.span.file) else {
                panic!("diagnostic {:?} points into unknown file {:?}: {d:#?}", d.code, l.span.file)
            };
            let (start, end) = (l.span.start as usize, l.span.end as usize);
            let text = &file.text;
            assert!(
                start <= end && end <= text.len(),
                "diagnostic {:?} span {start}..{end} outside `{}` ({} bytes): {d:#?}",
                d.code,
                file.name,
                text.len()
            );
            assert!(
                text.is_char_boundary(start) && text.is_char_boundary(end),
                "diagnostic {:?} span {start}..{end} not on char boundaries of `{}`: {d:#?}",
                d.code,
                file.name
            );
        }
        let out = diagnostics::render(d, sources, Style::Plain);
        assert!(!out.is_empty(), "diagnostic {:?} rendered as nothing", d.code);
        let _ = diagnostics::to_json(d, sources);
    }
}

/// Compile through `loader`, check the diagnostics, and when the policy is valid lower it,
/// and run its tests with both deciders. Returns the output.
fn compile_and_check(loader: &MemLoader, mode: Mode) -> Output {
    let out = compile_with(loader, mode);
    check_diagnostics(&out.sources, &out.diagnostics);
    if let Some(program) = &out.program {
        assert!(!out.has_errors(), "a program was produced despite errors");
        match lower::lower(program) {
            Ok(graph) => {
                let _ = graph.stats();
                let _ = graph.to_dot();
                let by_eval = testing::run_tests(program, &testing::eval_decider(program));
                let by_graph = testing::run_tests(program, &|r: &Request| graph.decide(r));
                for (e, g) in by_eval.iter().zip(&by_graph) {
                    assert_eq!(
                        e.passed(),
                        g.passed(),
                        "test {:?} passes with one decider and fails with the other:\neval: {:#?}\ngraph: {:#?}",
                        e.name,
                        e.failures,
                        g.failures
                    );
                }
                for r in by_eval.iter().chain(&by_graph) {
                    check_diagnostics(&program.sources, &r.failures);
                }
            }
            Err(d) => {
                assert!(d.severity != Severity::Bug, "lowering a valid program failed with a bug: {d:#?}");
                check_diagnostics(&program.sources, std::slice::from_ref(&d));
            }
        }
    }
    out
}

// ====================================================================== parse

/// Any bytes as `policy.gwp`: never panics, valid spans, every diagnostic renders.
pub fn parse(data: &[u8]) {
    let loader = loader_with(data.to_vec());
    compile_and_check(&loader, Mode::Check);
}

// ====================================================================== roundtrip

/// For text that parses without errors: the formatted text parses to the same tree (spans
/// erased), and formatting the formatted text changes nothing.
pub fn roundtrip(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    roundtrip_text(&text);
}

fn roundtrip_text(text: &str) {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    if diags.iter().any(Diag::is_error) {
        return;
    }
    let once = match gwfmt::format_source(text) {
        Ok(s) => s,
        Err(e) => panic!("format_source failed on a policy that parses: {e}\n--- input:\n{text}"),
    };
    let (again, diags2) = syntax::parse(FileId(0), &once);
    if let Some(d) = diags2.iter().find(|d| d.is_error()) {
        panic!("the formatted text does not parse: {d:#?}\n--- input:\n{text}\n--- formatted:\n{once}");
    }
    let before = gwfmt::strip_spans(&parsed.file);
    let after = gwfmt::strip_spans(&again.file);
    assert!(before == after, "formatting changed the tree\n--- input:\n{text}\n--- formatted:\n{once}");
    let twice = match gwfmt::format_source(&once) {
        Ok(s) => s,
        Err(e) => panic!("format_source failed on formatted text: {e}\n--- formatted:\n{once}"),
    };
    assert!(once == twice, "formatting is not idempotent\n--- once:\n{once}\n--- twice:\n{twice}");
}

// ====================================================================== generated policies

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

/// What an expression may refer to: how many matchers are visible, and whether the route
/// authenticates (so `tenant` and `key` are available).
#[derive(Clone, Copy)]
struct Scope {
    matchers: usize,
    auth: bool,
}

impl Scope {
    const NONE: Scope = Scope { matchers: 0, auth: false };
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

#[derive(Arbitrary, Debug, Clone)]
pub enum GenSetting {
    Listen(GenValue),
    Admin(GenValue, Option<GenValue>),
    StateLocal,
    StateRedis(GenValue, u8),
    Audit(GenValue, Option<u16>),
    MaxBody(u16, u8),
    MaxHeaders(u16),
    HeaderTimeout(GenDuration),
    IdleTimeout(GenDuration),
    DrainTimeout(GenDuration),
    PolicyHeader(bool),
    Forwarded(u8),
}

impl GenSetting {
    fn print(&self) -> String {
        const SIZES: &[&str] = &["B", "KB", "MB", "GB", "KiB", "MiB", "GiB"];
        match self {
            GenSetting::Listen(GenValue::Lit(GenStr::Pool(p))) => format!("listen \"127.0.0.1:{}\"", 8000 + *p as u32),
            GenSetting::Listen(v) => format!("listen {}", v.print()),
            GenSetting::Admin(v, t) => match t {
                Some(t) => format!("admin {} token {}", v.print(), t.print()),
                None => format!("admin {}", v.print()),
            },
            GenSetting::StateLocal => "state local".into(),
            GenSetting::StateRedis(v, m) => {
                format!("state redis {} on_error {}", v.print(), pick(&["local", "allow", "deny"], *m))
            }
            GenSetting::Audit(v, r) => match r {
                Some(r) => format!("audit {} rotate {r}MB", v.print()),
                None => format!("audit {}", v.print()),
            },
            GenSetting::MaxBody(n, u) => format!("max_body {n}{}", pick(SIZES, *u)),
            GenSetting::MaxHeaders(n) => format!("max_headers {}", n % 1024),
            GenSetting::HeaderTimeout(d) => format!("header_timeout {}", d.print()),
            GenSetting::IdleTimeout(d) => format!("idle_timeout {}", d.print()),
            GenSetting::DrainTimeout(d) => format!("drain_timeout {}", d.print()),
            GenSetting::PolicyHeader(b) => format!("policy_header {b}"),
            GenSetting::Forwarded(m) => format!("forwarded {}", pick(&["strip", "append", "keep"], *m)),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenUpstreamStmt {
    Target(Option<u8>, Option<u8>),
    Balance(u8),
    BalanceHash(GenStrExpr),
    Header(u8, GenValue),
    Timeout(GenDuration),
    ConnectTimeout(GenDuration),
    Health(u8, GenDuration, Option<GenDuration>),
    Retry(u8, Vec<u16>),
    MaxConnections(u16),
    Affinity(GenStrExpr),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenUpstream {
    stmts: Vec<GenUpstreamStmt>,
}

impl GenUpstream {
    fn print(&self, name: &str) -> String {
        let mut out = format!("upstream {name} {{\n    target \"http://127.0.0.1:9000\"\n");
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.stmts.iter().take(6).enumerate() {
            let line = match s {
                GenUpstreamStmt::Target(w, r) => {
                    let mut t = "target \"http://10.0.0.2:80\"".to_string();
                    if let Some(w) = w {
                        let _ = write!(t, " weight {w}");
                    }
                    if let Some(r) = r {
                        let _ = write!(t, " region \"r{}\"", r % 3);
                    }
                    t
                }
                GenUpstreamStmt::Balance(m) => {
                    format!("balance {}", pick(&["round_robin", "weighted", "least_conn"], *m))
                }
                GenUpstreamStmt::BalanceHash(e) => format!("balance hash({})", e.print(Scope::NONE, 0)),
                GenUpstreamStmt::Header(h, v) => format!("header {} = {}", gwfmt::quote(pick(HEADERS, *h)), v.print()),
                GenUpstreamStmt::Timeout(d) => format!("timeout {}", d.print()),
                GenUpstreamStmt::ConnectTimeout(d) => format!("connect_timeout {}", d.print()),
                GenUpstreamStmt::Health(m, d, t) => {
                    let mut h = format!("health {} \"/health\" every {}", pick(METHODS, *m), d.print());
                    if let Some(t) = t {
                        let _ = write!(h, " timeout {}", t.print());
                    }
                    h
                }
                GenUpstreamStmt::Retry(n, on) => {
                    let mut r = format!("retry {}", n % 6);
                    if !on.is_empty() {
                        let conds: Vec<String> = on
                            .iter()
                            .take(4)
                            .map(|c| match c % 4 {
                                0 => "connect_error".to_string(),
                                1 => "timeout".to_string(),
                                3 if c % 64 == 63 => (c / 64 % 1000).to_string(),
                                _ => (500 + c % 100).to_string(),
                            })
                            .collect();
                        let _ = write!(r, " on {}", conds.join(", "));
                    }
                    r
                }
                GenUpstreamStmt::MaxConnections(n) => format!("max_connections {n}"),
                GenUpstreamStmt::Affinity(e) => format!("affinity {}", e.print(Scope::NONE, 0)),
            };
            // Each statement once (but `target`), except that a seventh of the time a repeat is kept.
            let keyword = line.split(' ').next().unwrap_or_default().to_string();
            if keyword != "target" && !seen.insert(keyword) && i % 7 != 6 {
                continue;
            }
            let _ = writeln!(out, "    {line}");
        }
        out.push_str("}\n");
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenKeys {
    file: u8,
    salt: Option<u8>,
}

impl GenKeys {
    fn print(&self, name: &str) -> String {
        let file = match self.file % 32 {
            30 => "bad.keys",
            31 => "missing.keys",
            n => pick(&["k.keys", "keys/k.keys", "s.keys"], n),
        };
        // s.keys holds hashes salted with "pepper", which env("SALT") also gives.
        let salt = match (file, self.salt) {
            ("s.keys", Some(s)) if s % 2 == 0 => " salt env(\"SALT\")",
            ("s.keys", _) => " salt \"pepper\"",
            (_, Some(s)) if s % 16 == 1 => " salt \"pep\" + env(\"PER\")",
            (_, Some(s)) if s % 16 == 2 => " salt env(\"UNSET_SALT\")",
            _ => "",
        };
        format!("keys {name} from \"{file}\"{salt}\n")
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenTenantStmt {
    Rate(GenRate, Option<u8>),
    Tokens(GenRate),
    Concurrent(u8),
    Region(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenTenant {
    /// Rarely (1 in 16) a name from the pool, which may repeat an earlier tenant.
    name: u8,
    stmts: Vec<GenTenantStmt>,
}

impl GenTenant {
    fn print(&self, index: usize) -> String {
        let mut seen = std::collections::HashSet::new();
        let stmts: Vec<String> = self
            .stmts
            .iter()
            .take(5)
            .filter(|s| seen.insert(std::mem::discriminant(*s)) || self.name % 8 == 7)
            .map(|s| match s {
                GenTenantStmt::Rate(r, b) => match b {
                    Some(b) => format!("rate {} burst {b}", r.print()),
                    None => format!("rate {}", r.print()),
                },
                GenTenantStmt::Tokens(r) => format!("tokens {}", r.print()),
                GenTenantStmt::Concurrent(n) => format!("concurrent {n}"),
                GenTenantStmt::Region(r) => format!("region \"r{}\"", r % 3),
            })
            .collect();
        let name = if self.name % 16 == 15 { pick(TENANTS, self.name / 16) } else { pick(TENANTS, index as u8) };
        format!("tenant {name} {{ {} }}\n", stmts.join("; "))
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenSeg {
    Word(u8),
    Param(u8),
    Star,
    Any(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenPath {
    segs: Vec<GenSeg>,
    trailing_slash: bool,
    /// 1 in 16: no leading `/`.
    relative: u8,
}

impl GenPath {
    fn print(&self) -> String {
        let mut out = String::new();
        let n = self.segs.len().min(5);
        for (i, s) in self.segs.iter().take(n).enumerate() {
            if i > 0 || self.relative % 16 != 15 {
                out.push('/');
            }
            match s {
                GenSeg::Star if i + 1 < n => out.push('x'),
                GenSeg::Word(w) => out.push_str(pick(WORDS, *w)),
                GenSeg::Param(p) => {
                    let _ = write!(out, "{{{}}}", pick(PARAMS, *p));
                }
                GenSeg::Star => out.push('*'),
                GenSeg::Any(s) => out.push_str(s),
            }
        }
        if self.trailing_slash || out.is_empty() {
            out.push('/');
        }
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenHost {
    Exact(u8),
    Wildcard(u8),
    Any(String),
}

impl GenHost {
    fn print(&self) -> String {
        match self {
            GenHost::Exact(i) => pick(HOSTS, *i).to_string(),
            GenHost::Wildcard(i) => format!("*.{}", pick(HOSTS, *i)),
            GenHost::Any(s) if s.len() % 8 == 7 => s.clone(),
            GenHost::Any(s) => format!("{}.example.com", s.len()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenWhen {
    methods: Vec<u8>,
    path: GenPath,
    host: Option<GenHost>,
    /// Written only 1 in 4 times: most random conditions are false, and hide the route.
    cond: Option<(u8, GenBool)>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenCred {
    Header(u8),
    Bearer,
    Query(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenAuth {
    keyset: u8,
    via: Vec<GenCred>,
    optional: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenPer {
    Key,
    Tenant,
    Route,
    Client,
    Header(u8),
    Expr(GenStrExpr),
    List(GenStrExpr, GenBody),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenLimitKind {
    Rate(GenRate, Option<u8>),
    Tokens(GenRate, Option<u16>),
    Concurrent(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenLimit {
    kind: GenLimitKind,
    per: Option<GenPer>,
    model: Option<GenRegex>,
    cond: Option<GenBool>,
    shadow: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenRouteStmt {
    Allow(GenBool, Option<(u16, GenStr)>),
    Deny(u16, GenStr, GenBool),
    Limit(GenLimit),
    Set(u8, GenValue),
    Strip(Vec<u8>),
    RewritePrefix(GenPath, GenPath),
    RewritePath(GenPath),
    Cache(GenDuration, Option<u16>),
    Websocket,
    Cors(Vec<u8>, Vec<u8>),
    Jwt(GenValue, Option<u8>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenAction {
    To(u8),
    Respond(u16, Option<GenJson>, Option<GenStr>),
    Serve(u8),
    To2(u8),
    /// Only with a rare byte: no action at all.
    Nothing(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenRoute {
    when: GenWhen,
    /// 1 in 16: no `when`.
    no_when: u8,
    auth: Option<GenAuth>,
    stmts: Vec<GenRouteStmt>,
    action: GenAction,
    /// 1 in 16: the same name as the previous route.
    same_name_as_previous: u8,
}

fn status(n: u16) -> String {
    // Mostly statuses that mean something; sometimes anything three digits long.
    match n % 16 {
        0 => format!("{:03}", n % 1000),
        1 => "200".into(),
        2 => "401".into(),
        3 => "429".into(),
        4 => "400".into(),
        5 => "402".into(),
        _ => "403".into(),
    }
}

/// What requests need to know about a generated route.
#[derive(Debug, Clone, Default)]
struct RouteShape {
    methods: Vec<String>,
    path: String,
    host: Option<String>,
}

impl GenRoute {
    fn print(&self, name: &str, sc: Scope, keysets: usize, shapes: &mut Vec<RouteShape>) -> String {
        let mut out = format!("route {name} {{\n");
        // The `when` condition is decided before `auth`; guards and limits after it.
        let when_sc = Scope { auth: false, ..sc };
        let sc = Scope { auth: self.auth.is_some(), ..sc };
        if self.no_when % 16 != 15 {
            let w = &self.when;
            let mut methods: Vec<&str> = w.methods.iter().take(3).map(|m| pick(METHODS, *m)).collect();
            if methods.is_empty() {
                methods.push("GET");
            }
            let path = w.path.print();
            let host = w.host.as_ref().map(GenHost::print);
            let _ = write!(out, "    when {} {}", methods.join("|"), gwfmt::quote(&path));
            if let Some(h) = &host {
                let _ = write!(out, " host {}", gwfmt::quote(h));
            }
            if let Some((_, c)) = w.cond.as_ref().filter(|(n, _)| n % 4 == 0) {
                let _ = write!(out, " if {}", c.print(when_sc, 0));
            }
            out.push('\n');
            shapes.push(RouteShape { methods: methods.iter().map(|m| m.to_string()).collect(), path, host });
        }
        if let Some(a) = &self.auth {
            let _ = write!(out, "    auth k{}", if keysets == 0 { 0 } else { a.keyset as usize % keysets });
            if !a.via.is_empty() {
                let via: Vec<String> = a
                    .via
                    .iter()
                    .take(3)
                    .map(|c| match c {
                        GenCred::Header(h) => format!("header {}", gwfmt::quote(pick(HEADERS, *h))),
                        GenCred::Bearer => "bearer".into(),
                        GenCred::Query(q) => format!("query {}", gwfmt::quote(pick(QUERIES, *q))),
                    })
                    .collect();
                let _ = write!(out, " via {}", via.join(", "));
            }
            if a.optional {
                out.push_str(" optional");
            }
            out.push('\n');
        }
        for s in self.stmts.iter().take(6) {
            let line = match s {
                GenRouteStmt::Allow(c, e) => match e {
                    Some((st, msg)) => {
                        format!("allow if {} else {} {}", c.print(sc, 0), status(*st), gwfmt::quote(&msg.get()))
                    }
                    None => format!("allow if {}", c.print(sc, 0)),
                },
                GenRouteStmt::Deny(st, msg, c) => {
                    format!("deny {} {} if {}", status(*st), gwfmt::quote(&msg.get()), c.print(sc, 0))
                }
                GenRouteStmt::Limit(l) => {
                    let mut t = match &l.kind {
                        GenLimitKind::Rate(r, b) => match b {
                            Some(b) => format!("limit rate {} burst {b}", r.print()),
                            None => format!("limit rate {}", r.print()),
                        },
                        GenLimitKind::Tokens(r, e) => match e {
                            Some(e) => format!("limit tokens {} estimate {e}", r.print()),
                            None => format!("limit tokens {}", r.print()),
                        },
                        GenLimitKind::Concurrent(n) => format!("limit concurrent {n}"),
                    };
                    if let Some(p) = &l.per {
                        let per = match p {
                            GenPer::Key | GenPer::Tenant if !sc.auth => "client".to_string(),
                            GenPer::Key => "key".to_string(),
                            GenPer::Tenant => "tenant".to_string(),
                            GenPer::Route => "route".to_string(),
                            GenPer::Client => "client".to_string(),
                            GenPer::Header(h) => format!("header {}", gwfmt::quote(pick(HEADERS, *h))),
                            GenPer::Expr(e) => format!("({})", e.print(sc, 0)),
                            GenPer::List(e, b) => format!("([{}, {}])", e.print(sc, 0), b.print()),
                        };
                        let _ = write!(t, " per {per}");
                    }
                    if let Some(m) = &l.model {
                        let _ = write!(t, " model {}", m.print());
                    }
                    if let Some(c) = &l.cond {
                        let _ = write!(t, " if {}", c.print(sc, 0));
                    }
                    if l.shadow {
                        t.push_str(" shadow");
                    }
                    t
                }
                GenRouteStmt::Set(h, v) => format!("set header {} = {}", gwfmt::quote(pick(HEADERS, *h)), v.print()),
                GenRouteStmt::Strip(hs) => {
                    let mut names: Vec<String> = hs.iter().take(3).map(|h| gwfmt::quote(pick(HEADERS, *h))).collect();
                    if names.is_empty() {
                        names.push("\"cookie\"".into());
                    }
                    format!("strip header {}", names.join(", "))
                }
                GenRouteStmt::RewritePrefix(a, b) => {
                    format!("rewrite prefix {} => {}", gwfmt::quote(&a.print()), gwfmt::quote(&b.print()))
                }
                GenRouteStmt::RewritePath(p) => format!("rewrite path {}", gwfmt::quote(&p.print())),
                GenRouteStmt::Cache(d, m) => match m {
                    Some(m) => format!("cache {} max {m}KB", d.print()),
                    None => format!("cache {}", d.print()),
                },
                GenRouteStmt::Websocket => "websocket".into(),
                GenRouteStmt::Cors(origins, methods) => {
                    let o: Vec<String> = origins
                        .iter()
                        .take(3)
                        .map(|o| gwfmt::quote(pick(&["*", "https://app.example.com", "http://x"], *o)))
                        .collect();
                    let mut t = format!("cors origins [{}]", o.join(", "));
                    if !methods.is_empty() {
                        let m: Vec<&str> = methods.iter().take(3).map(|m| pick(METHODS, *m)).collect();
                        let _ = write!(t, " methods {}", m.join("|"));
                    }
                    t
                }
                GenRouteStmt::Jwt(v, iss) => match iss {
                    Some(i) => format!("jwt secret {} issuer \"iss{}\"", v.print(), i % 2),
                    None => format!("jwt secret {}", v.print()),
                },
            };
            let _ = writeln!(out, "    {line}");
        }
        match &self.action {
            GenAction::To(u) | GenAction::To2(u) => {
                let _ = writeln!(out, "    to u{}", *u as usize % UPSTREAMS);
            }
            GenAction::Respond(st, json, text) => {
                let _ = write!(out, "    respond {}", status(*st));
                match (json, text) {
                    (Some(j), _) => {
                        let _ = write!(out, " json {}", j.print_json(0));
                    }
                    (None, Some(t)) => {
                        let _ = write!(out, " {}", gwfmt::quote(&t.get()));
                    }
                    (None, None) => {}
                }
                out.push('\n');
            }
            GenAction::Serve(b) => {
                let b = pick(&["health", "ready", "metrics", "tokens", "usage", "upstreams"], *b);
                let _ = writeln!(out, "    serve {b}");
            }
            GenAction::Nothing(n) if n % 16 == 15 => {}
            GenAction::Nothing(n) => {
                let _ = writeln!(out, "    to u{}", *n as usize % UPSTREAMS);
            }
        }
        out.push_str("}\n");
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenExpect {
    Status(u16, Option<GenStr>),
    Route(u8),
    Upstream(u8),
    Tenant(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenTestStmt {
    Send(GenRequest),
    Expect(GenExpect),
    Advance(GenDuration),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenTest {
    first: GenRequest,
    stmts: Vec<GenTestStmt>,
}

/// A whole generated policy.
#[derive(Arbitrary, Debug, Clone)]
pub struct GenPolicy {
    // Decoded in this order: routes first, so that short inputs still make routes.
    routes: Vec<GenRoute>,
    matchers: Vec<GenBool>,
    keysets: Vec<GenKeys>,
    tenants: Vec<GenTenant>,
    upstreams: Vec<GenUpstream>,
    gateway: Option<Vec<GenSetting>>,
    tests: Vec<GenTest>,
    import_lib: bool,
}

/// A printed policy and what requests need to know about it.
#[derive(Debug, Clone, Default)]
struct Printed {
    text: String,
    routes: Vec<RouteShape>,
}

impl GenPolicy {
    fn print(&self) -> Printed {
        let mut p = Printed::default();
        let out = &mut p.text;
        if self.import_lib {
            out.push_str("import \"lib.gwp\"\n\n");
        }
        if let Some(settings) = &self.gateway {
            out.push_str("gateway {\n");
            let mut seen = std::collections::HashSet::new();
            for (i, s) in settings.iter().take(6).enumerate() {
                let line = s.print();
                let keyword = line.split(' ').next().unwrap_or_default().to_string();
                // Each setting once, except that a seventh of the time a repeat is kept.
                if seen.insert(keyword) || i % 7 == 6 {
                    let _ = writeln!(out, "    {line}");
                }
            }
            out.push_str("}\n\n");
        }
        // Routes name upstreams u0..u3: always declare all four, with generated statements for
        // the first ones.
        for i in 0..UPSTREAMS {
            match self.upstreams.get(i) {
                Some(u) => out.push_str(&u.print(&format!("u{i}"))),
                None => {
                    let _ = writeln!(out, "upstream u{i} {{ target \"http://127.0.0.1:900{i}\" }}");
                }
            }
        }
        out.push('\n');
        // Routes name key sets k0..: there is always a k0.
        let keysets = self.keysets.len().clamp(1, 3);
        for i in 0..keysets {
            match self.keysets.get(i) {
                Some(k) => out.push_str(&k.print(&format!("k{i}"))),
                None => out.push_str("keys k0 from \"k.keys\"\n"),
            }
        }
        for (i, t) in self.tenants.iter().take(4).enumerate() {
            out.push_str(&t.print(i));
        }
        let matchers = self.matchers.len().min(5);
        for (i, m) in self.matchers.iter().take(matchers).enumerate() {
            // A matcher refers only to earlier ones, so there are no cycles.
            let _ = writeln!(out, "matcher m{i} = {}", m.print(Scope { matchers: i, auth: false }, 0));
        }
        out.push('\n');
        let sc = Scope { matchers, auth: false };
        let mut name = 0;
        for (i, r) in self.routes.iter().take(8).enumerate() {
            if !(r.same_name_as_previous % 16 == 15 && i > 0) {
                name = i;
            }
            out.push_str(&r.print(&format!("r{name}"), sc, keysets, &mut p.routes));
            out.push('\n');
        }
        let routes = p.routes.clone();
        for (i, t) in self.tests.iter().take(3).enumerate() {
            let _ = writeln!(out, "test \"t{i}\" {{");
            let _ = writeln!(out, "    {}", t.first.print_send(&routes));
            for s in t.stmts.iter().take(6) {
                let line = match s {
                    GenTestStmt::Send(r) => r.print_send(&routes),
                    GenTestStmt::Expect(GenExpect::Status(st, msg)) => match msg {
                        Some(m) => format!("expect {} {}", status(*st), gwfmt::quote(&m.get())),
                        None => format!("expect {}", status(*st)),
                    },
                    GenTestStmt::Expect(GenExpect::Route(r)) => {
                        format!("expect route r{}", *r as usize % self.routes.len().clamp(1, 8))
                    }
                    GenTestStmt::Expect(GenExpect::Upstream(u)) => {
                        format!("expect upstream u{}", *u as usize % UPSTREAMS)
                    }
                    GenTestStmt::Expect(GenExpect::Tenant(t)) => format!("expect tenant {}", pick(TENANTS, *t)),
                    GenTestStmt::Advance(d) => format!("advance {}", d.print()),
                };
                let _ = writeln!(out, "    {line}");
            }
            out.push_str("}\n");
        }
        p
    }
}

// ---------------------------------------------------------------- requests

#[derive(Arbitrary, Debug, Clone)]
pub enum GenPathSeg {
    Word(u8),
    Num(u16),
    Any(String),
}

impl GenPathSeg {
    fn get(&self) -> String {
        match self {
            GenPathSeg::Word(w) => pick(WORDS, *w).to_string(),
            GenPathSeg::Num(n) => format!("p{n}"),
            GenPathSeg::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenReqPath {
    /// A path the aimed-at route's pattern matches (when there is one).
    Instance(Vec<GenPathSeg>, u8),
    Instance2(Vec<GenPathSeg>, u8),
    Instance3(Vec<GenPathSeg>, u8),
    Words(Vec<GenPathSeg>),
    Any(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenReqHost {
    Route(u8),
    Route2(u8),
    Route3(u8),
    None,
    Pool(u8),
    Any(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenCredStyle {
    ApiKey,
    Bearer,
    OddBearer,
    Header(u8),
    Query(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenRequest {
    route: u8,
    /// 1 in 4: a method from a pool instead of the route's.
    method: u8,
    path: GenReqPath,
    /// Mostly the aimed-at route's host (if it has one).
    host: GenReqHost,
    host_as_header: bool,
    key: Option<(u8, GenCredStyle)>,
    headers: Vec<(u8, GenStr)>,
    query: Vec<(u8, GenStr)>,
    body: Option<GenJson>,
    raw_body: Option<String>,
    client: Option<u8>,
}

fn instantiate(pattern: &str, segs: &[GenPathSeg], tail: u8) -> String {
    let mut fill = segs.iter().map(GenPathSeg::get);
    let mut out = vec![];
    for seg in pattern.split('/') {
        if seg.starts_with('{') && seg.ends_with('}') && seg.len() >= 2 {
            out.push(fill.next().unwrap_or_else(|| "p1".into()));
        } else if seg == "*" {
            for _ in 0..tail % 3 {
                out.push(fill.next().unwrap_or_default());
            }
        } else {
            out.push(seg.to_string());
        }
    }
    let mut p = out.join("/");
    match tail / 3 % 16 {
        0 => p.push('/'),
        1 => {
            p.pop();
        }
        2 => p = p.to_ascii_uppercase(),
        _ => {}
    }
    if p.is_empty() && tail.is_multiple_of(2) {
        p.push('/');
    }
    p
}

impl GenRequest {
    fn build(&self, routes: &[RouteShape]) -> Request {
        let shape =
            if routes.is_empty() { RouteShape::default() } else { routes[self.route as usize % routes.len()].clone() };
        let mut req = Request::default();
        let m = self.method;
        req.method = match shape.methods.get(m as usize / 4 % shape.methods.len().max(1)) {
            Some(route_method) if m % 4 != 3 && route_method != "ANY" => route_method.clone(),
            _ => pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "BREW", ""], m / 4).into(),
        };
        let path = match &self.path {
            GenReqPath::Instance(segs, tail)
            | GenReqPath::Instance2(segs, tail)
            | GenReqPath::Instance3(segs, tail) => instantiate(&shape.path, segs, *tail),
            GenReqPath::Words(segs) if segs.is_empty() => "/".to_string(),
            GenReqPath::Words(segs) => segs.iter().take(4).map(|s| format!("/{}", s.get())).collect(),
            GenReqPath::Any(s) => s.clone(),
        };
        match path.split_once('?') {
            Some((p, q)) => {
                req.path = p.to_string();
                req.query = crate::request::parse_query(q);
            }
            None => req.path = path,
        }
        let host = match &self.host {
            GenReqHost::None => String::new(),
            GenReqHost::Route(i) | GenReqHost::Route2(i) | GenReqHost::Route3(i) => match &shape.host {
                Some(h) => match h.strip_prefix("*.") {
                    Some(rest) => format!("{}.{rest}", pick(WORDS, *i)),
                    None if i % 4 == 0 => format!("{h}:8443"),
                    None if i % 4 == 1 => h.to_ascii_uppercase(),
                    None => h.clone(),
                },
                None if i % 2 == 0 => String::new(),
                None => pick(HOSTS, *i).to_string(),
            },
            GenReqHost::Pool(i) => pick(HOSTS, *i).to_string(),
            GenReqHost::Any(s) => s.clone(),
        };
        if self.host_as_header {
            if !host.is_empty() {
                req.headers.push(("host".into(), host));
            }
        } else {
            req.host = host;
        }
        if let Some((k, style)) = &self.key {
            let key =
                if *k as usize % 8 < KEYS.len() { KEYS[*k as usize % 8].0.to_string() } else { "sk-wrong".into() };
            match style {
                GenCredStyle::ApiKey => req.headers.push(("x-api-key".into(), key)),
                GenCredStyle::Bearer => req.headers.push(("authorization".into(), format!("Bearer {key}"))),
                GenCredStyle::OddBearer => req.headers.push(("Authorization".into(), format!("bearer  {key} "))),
                GenCredStyle::Header(h) => req.headers.push((pick(HEADERS, *h).into(), key)),
                GenCredStyle::Query(q) => req.query.push((pick(QUERIES, *q).into(), key)),
            }
        }
        for (h, v) in self.headers.iter().take(4) {
            req.headers.push((pick(HEADERS, *h).into(), v.get()));
        }
        for (q, v) in self.query.iter().take(3) {
            req.query.push((pick(QUERIES, *q).into(), v.get()));
        }
        req.body = match (&self.body, &self.raw_body) {
            (Some(j), _) => Some(j.to_value(0).to_string().into_bytes()),
            (None, Some(raw)) => Some(raw.clone().into_bytes()),
            (None, None) => None,
        };
        req.client_ip = self.client.map(|c| format!("10.0.0.{}", c % 4));
        req
    }

    /// As a test's `send` statement (which has no host field: the host is a header).
    fn print_send(&self, routes: &[RouteShape]) -> String {
        let req = self.build(routes);
        let method = if Method::parse(&req.method).is_some() { req.method.clone() } else { "GET".to_string() };
        let mut path = req.path.clone();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !req.query.is_empty() {
            let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            path = format!("{path}?{}", q.join("&"));
        }
        let mut out = format!("send {method} {}", gwfmt::quote(&path));
        if !req.host.is_empty() {
            let _ = write!(out, " header \"host\" = {}", gwfmt::quote(&req.host));
        }
        for (k, v) in &req.headers {
            let _ = write!(out, " header {} = {}", gwfmt::quote(k), gwfmt::quote(v));
        }
        if let Some(j) = &self.body {
            let _ = write!(out, " body {}", j.print_json(0));
        }
        if let Some(c) = &req.client_ip {
            let _ = write!(out, " client {}", gwfmt::quote(c));
        }
        out
    }
}

// ====================================================================== compile_structured

/// A policy generated from the fuzzer's bytes, printed and compiled: never panics, valid
/// spans, and when valid it lowers and its tests give the same verdicts with the graph and
/// with the evaluator.
pub fn compile_structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(policy) = GenPolicy::arbitrary(&mut u) else { return };
    let serve = bool::arbitrary(&mut u).unwrap_or(false);
    let printed = policy.print();
    let loader = loader_with(printed.text.clone());
    compile_and_check(&loader, if serve { Mode::Serve } else { Mode::Check });
}

/// The text `compile_structured` and `differential` compile for `data` (for reproducing a
/// failure by hand).
pub fn structured_policy_text(data: &[u8]) -> Option<String> {
    let mut u = Unstructured::new(data);
    GenPolicy::arbitrary(&mut u).ok().map(|p| p.print().text)
}

// ====================================================================== differential

/// A generated policy and a batch of generated requests: when the policy compiles, the
/// decision graph and the reference evaluator make the same decision for every request.
pub fn differential(data: &[u8]) {
    differential_outcomes(data);
}

/// The generated policy text and requests `differential` checks for `data` (for reproducing
/// a failure by hand, and for measuring the generator).
pub fn differential_case(data: &[u8]) -> Option<(String, Vec<Request>)> {
    let mut u = Unstructured::new(data);
    let policy = GenPolicy::arbitrary(&mut u).ok()?;
    let mut requests = vec![];
    while requests.len() < 32 {
        match GenRequest::arbitrary(&mut u) {
            Ok(r) => requests.push(r),
            Err(_) => break,
        }
        if u.is_empty() {
            break;
        }
    }
    let printed = policy.print();
    let requests = requests.iter().map(|r| r.build(&printed.routes)).collect();
    Some((printed.text, requests))
}

/// `differential`, returning what happened: `None` when the generated policy did not compile
/// (or lower), else each request's status and whether it reached a route. For measuring how
/// much of the generated input gets past the compiler and route selection.
pub fn differential_outcomes(data: &[u8]) -> Option<Vec<(u16, bool)>> {
    let (text, requests) = differential_case(data)?;
    let loader = loader_with(text.clone());
    let out = compile_with(&loader, Mode::Check);
    let program = out.program.as_ref()?;
    let graph = match lower::lower(program) {
        Ok(g) => g,
        Err(d) => {
            assert!(d.severity != Severity::Bug, "lowering a valid program failed with a bug: {d:#?}");
            return None;
        }
    };
    let mut outcomes = vec![];
    for req in &requests {
        let want = eval::decide(program, req);
        let got = graph.decide(req);
        assert!(
            want.same_decision(&got),
            "graph and eval disagree\n--- policy:\n{text}\n--- request: {req:#?}\n--- eval: {want:#?}\n--- graph: {got:#?}"
        );
        // The runtime reads a body only when `wants_body` says so: otherwise it cannot matter.
        if !graph.wants_body(req) {
            let blind = graph.decide(&Request { body: None, ..req.clone() });
            assert!(
                blind.same_decision(&got),
                "a body `wants_body` said is not needed changed the decision\n--- policy:\n{text}\n--- request: {req:#?}\n--- with it: {got:#?}\n--- without: {blind:#?}"
            );
        }
        if let crate::request::Outcome::Invalid { code, .. } = &want.outcome {
            assert!(
                [
                    value::INVALID_BODY,
                    value::INVALID_NUMBER,
                    value::INVALID_HEADER,
                    value::INVALID_QUERY,
                    value::UNSUPPORTED_CONTENT_ENCODING
                ]
                .contains(code),
                "unknown refusal code {code}"
            );
        }
        typed_evaluation(program, req, &text);
        outcomes.push((want.outcome.status(), want.route.is_some()));
    }
    Some(outcomes)
}

/// "Compiles ⇒ evaluates without type surprises", for one request whose body facts have any
/// JSON type. For every sub-expression of every route statement and matcher:
/// - its value is of the kind its static type says (or missing, or undecided);
/// - an operator or function whose operands the checker typed exactly (no body value) never
///   meets operands it cannot use: it yields true/false or a value, never a type error;
/// - an operator applied to present values yields a type error exactly when the typing table
///   in grammar/README.md says the kinds do not meet (`accepts`), never a silent false.
pub fn typed_evaluation(program: &crate::program::Program, req: &Request, text: &str) {
    use crate::ast::{BinOp, ExprKind, Item};
    use crate::check::{static_type, Ty};
    use crate::value::Val;

    let mut exprs = vec![];
    for item in &program.items {
        match item {
            Item::Route(r) => r.stmts.iter().for_each(|s| exprs.extend(crate::resolve::stmt_exprs(&s.kind))),
            Item::Matcher(m) => exprs.push(&m.expr),
            _ => {}
        }
    }
    let case = format!("\n--- policy:\n{text}\n--- request: {req:#?}");
    for root in exprs {
        let mut subs = vec![];
        crate::resolve::walk(root, &mut |e| subs.push(e));
        for e in subs {
            let Some(ty) = static_type(&program.items, e) else {
                panic!("a compiled policy has an ill-typed expression at {:?}{case}", e.span);
            };
            let v = eval::eval_expr(program, req, e);
            let kind_ok = matches!(
                (&v, ty),
                (Val::Missing | Val::Error(_), _)
                    | (_, Ty::Dyn | Ty::Regex)
                    | (Val::Str(_), Ty::Str)
                    | (Val::Num(_), Ty::Num)
                    | (Val::Bool(_), Ty::Bool)
                    | (Val::List(_), Ty::List)
            );
            if !kind_ok {
                panic!("{:?} of static type {ty:?} evaluated to {v:?}{case}", e.span);
            }
            let operands: Vec<&crate::ast::Expr> = match &e.kind {
                ExprKind::Binary { op: BinOp::And | BinOp::Or, .. } => continue,
                ExprKind::Binary { lhs, op: BinOp::Matches, .. } => vec![lhs],
                ExprKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
                ExprKind::Call { func: crate::ast::Func::Number, .. } => continue,
                ExprKind::Call { args, .. } => args.iter().collect(),
                _ => continue,
            };
            let vals: Vec<Val> = operands.iter().map(|o| eval::eval_expr(program, req, o)).collect();
            if vals.iter().any(|x| matches!(x, Val::Missing | Val::Error(_))) {
                continue;
            }
            let exact = operands.iter().all(|o| static_type(&program.items, o).is_some_and(|t| t != Ty::Dyn));
            let undecided = matches!(v, Val::Error(_));
            if exact && undecided {
                panic!("{:?}: well-typed operands {vals:?} gave a type error {v:?}{case}", e.span);
            }
            let accepted = match (&e.kind, vals.as_slice()) {
                (ExprKind::Binary { op: BinOp::Matches, .. }, [a]) => matches!(a, Val::Str(_)),
                (ExprKind::Binary { op, .. }, [a, b]) => accepts(*op, a, b),
                _ => !undecided,
            };
            if accepted == undecided {
                panic!("{:?}: operands {vals:?} gave {v:?}, against the typing table{case}", e.span);
            }
        }
    }
}

/// The typing table of grammar/README.md for present values, written independently of
/// `value::binary`: which kinds an operator accepts.
fn accepts(op: crate::ast::BinOp, a: &crate::value::Val, b: &crate::value::Val) -> bool {
    use crate::ast::BinOp::*;
    use crate::value::{Kind, Val};
    let members = |list: &Val| -> Option<Vec<Kind>> {
        match list {
            Val::List(items) => Some(items.iter().filter_map(Val::kind).collect()),
            Val::Json(serde_json::Value::Array(items)) => {
                Some(items.iter().filter_map(|i| Val::from_json(i).kind()).collect())
            }
            _ => None,
        }
    };
    let holds = |hay: &Val, needle: &Val| match (hay.kind(), needle.kind()) {
        (Some(Kind::Str), Some(Kind::Str)) | (Some(Kind::Object), Some(Kind::Str)) => true,
        _ => members(hay).is_some_and(|ks| ks.is_empty() || ks.iter().any(|k| Some(*k) == needle.kind())),
    };
    match op {
        Eq | Ne | BadAssign => a.kind() == b.kind(),
        Gt | Ge | Lt | Le => a.kind() == Some(Kind::Num) && b.kind() == Some(Kind::Num),
        StartsWith | EndsWith => a.kind() == Some(Kind::Str) && b.kind() == Some(Kind::Str),
        Contains => holds(a, b),
        In => holds(b, a),
        Matches => a.kind() == Some(Kind::Str),
        And | Or => true,
    }
}
