//! Values of policy expressions at decision time and the meaning of every operator on them.
//! The reference evaluator and the decision graph both call these functions, so the two can
//! differ only in *which* expressions they evaluate, never in what an operator means.
//!
//! A fact that is absent (no such header, no body field) is `Missing`: every comparison with it
//! is false except `!=`, which is true; `exists` tells it apart. A present value of a kind the
//! operator cannot use (a string where `>` needs a number, an array where `==` compares a
//! string) is neither true nor false: it is `Error`, which propagates (Kleene logic: `false and
//! Error` is false, `true or Error` is true) and refuses the request wherever it decides one.
//! The checker rejects every combination whose static types can never meet, so at run time an
//! `Error` can only come from a body value (whose type the policy cannot know) or `number()`.

use std::cmp::Ordering;

use crate::lang::{BinOp, Func, PathSeg};

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Missing,
    /// A JSON `null` in the body: present, of no other kind.
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Val>),
    /// A JSON array or object from the body.
    Json(serde_json::Value),
    /// The expression cannot be decided for this request.
    Error(Undecided),
}

/// Why an expression could not be decided: the 400 the request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// `invalid_body`, `invalid_number`, `invalid_header`, `invalid_query`, `invalid_path`
    /// or `unsupported_content_encoding`.
    pub code: &'static str,
    pub message: String,
}

impl Undecided {
    pub fn body(message: String) -> Undecided {
        Undecided { code: INVALID_BODY, message }
    }
}

pub const INVALID_BODY: &str = "invalid_body";
pub const INVALID_NUMBER: &str = "invalid_number";
/// A header a guard reads is not UTF-8, or appears more than once.
pub const INVALID_HEADER: &str = "invalid_header";
/// A query parameter a guard reads does not decode cleanly, or appears more than once.
pub const INVALID_QUERY: &str = "invalid_query";
/// The path or a path parameter a guard reads does not decode cleanly.
pub const INVALID_PATH: &str = "invalid_path";
/// A body in a content coding gw does not read, on a route that reads the body (415).
pub const UNSUPPORTED_CONTENT_ENCODING: &str = "unsupported_content_encoding";

/// The kind of a present value, as the typing rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Num,
    Bool,
    Null,
    Array,
    Object,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Num => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

impl Val {
    pub fn from_json(v: &serde_json::Value) -> Val {
        use serde_json::Value as J;
        match v {
            J::Null => Val::Null,
            J::Bool(b) => Val::Bool(*b),
            // The strict reader admits only numbers a double holds (±(2^53−1), finite).
            J::Number(n) => n.as_f64().map(Val::Num).unwrap_or(Val::Missing),
            J::String(s) => Val::Str(s.clone()),
            J::Array(_) | J::Object(_) => Val::Json(v.clone()),
        }
    }

    /// The kind of a present value; None for `Missing` and `Error`.
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Val::Missing | Val::Error(_) => return None,
            Val::Null => Kind::Null,
            Val::Str(_) => Kind::Str,
            Val::Num(_) => Kind::Num,
            Val::Bool(_) => Kind::Bool,
            Val::List(_) | Val::Json(serde_json::Value::Array(_)) => Kind::Array,
            Val::Json(serde_json::Value::Object(_)) => Kind::Object,
            Val::Json(j) => return Val::from_json(j).kind(),
        })
    }

    /// A condition's value: a missing fact is false; anything but a boolean cannot decide.
    pub fn truth(&self) -> Result<bool, Undecided> {
        match self {
            Val::Bool(b) => Ok(*b),
            Val::Missing => Ok(false),
            Val::Error(u) => Err(u.clone()),
            other => Err(Undecided::body(format!(
                "a condition of the policy reads {} from the body where it needs true or false",
                other.kind().map(Kind::name).unwrap_or("a value")
            ))),
        }
    }

    /// Whether a value is known to be true (constant folding: false for anything undecided).
    pub fn truthy(&self) -> bool {
        self.truth() == Ok(true)
    }

    /// The counter key a limit uses for this value (`-` when missing).
    pub fn key_string(&self) -> String {
        match self {
            Val::Missing => "-".to_string(),
            Val::Null => "null".to_string(),
            Val::Str(s) => s.clone(),
            Val::Num(n) => format_num(*n),
            Val::Bool(b) => b.to_string(),
            Val::List(items) => items.iter().map(Val::key_string).collect::<Vec<_>>().join(","),
            Val::Json(j) => j.to_string(),
            Val::Error(_) => "-".to_string(),
        }
    }
}

pub fn format_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Walk a JSON pointer-like path into a parsed body.
pub fn body_lookup<'a>(body: &'a serde_json::Value, path: &[PathSeg]) -> Option<&'a serde_json::Value> {
    let mut cur = body;
    for seg in path {
        cur = match (seg, cur) {
            (PathSeg::Field(f), serde_json::Value::Object(m)) => m.get(f)?,
            (PathSeg::Index(i), serde_json::Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// `v` as a condition: `Bool`, or the `Error` that keeps it undecided.
pub fn cond(v: &Val) -> Val {
    match v.truth() {
        Ok(b) => Val::Bool(b),
        Err(u) => Val::Error(u),
    }
}

/// `x exists`: present (even `null`); a fact that cannot be read stays undecided.
pub fn exists(v: &Val) -> Val {
    match v {
        Val::Missing => Val::Bool(false),
        Val::Error(_) => v.clone(),
        _ => Val::Bool(true),
    }
}

pub fn not(v: &Val) -> Val {
    match v.truth() {
        Ok(b) => Val::Bool(!b),
        Err(u) => Val::Error(u),
    }
}

/// `a and b`, evaluating `b` only when `a` is not false. An undecided side matters only if
/// the other is not false.
pub fn and(a: &Val, b: impl FnOnce() -> Val) -> Val {
    match a.truth() {
        Ok(false) => Val::Bool(false),
        Ok(true) => cond(&b()),
        Err(u) => match b().truth() {
            Ok(false) => Val::Bool(false),
            _ => Val::Error(u),
        },
    }
}

/// `a or b`, evaluating `b` only when `a` is not true.
pub fn or(a: &Val, b: impl FnOnce() -> Val) -> Val {
    match a.truth() {
        Ok(true) => Val::Bool(true),
        Ok(false) => cond(&b()),
        Err(u) => match b().truth() {
            Ok(true) => Val::Bool(true),
            _ => Val::Error(u),
        },
    }
}

/// A list literal: undecided if an element is.
pub fn list(items: Vec<Val>) -> Val {
    match items.iter().find(|v| matches!(v, Val::Error(_))) {
        Some(e) => e.clone(),
        None => Val::List(items),
    }
}

/// Structural equality of two values of one kind; elements of another kind are unequal.
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Json(serde_json::Value::Object(x)), Val::Json(serde_json::Value::Object(y))) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(&Val::from_json(v), &Val::from_json(w))))
        }
        _ => match (elements(a), elements(b)) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| same(p, q)),
            _ => false,
        },
    }
}

/// The elements of a list or a body array.
fn elements(v: &Val) -> Option<Vec<Val>> {
    match v {
        Val::List(items) => Some(items.clone()),
        Val::Json(serde_json::Value::Array(items)) => Some(items.iter().map(Val::from_json).collect()),
        _ => None,
    }
}

/// `a == b` for two present values: defined only when they are of one kind.
fn equals(a: &Val, b: &Val) -> Option<bool> {
    (a.kind() == b.kind()).then(|| same(a, b))
}

/// Ordering: numbers only.
fn order(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        _ => None,
    }
}

/// `hay contains needle`: a substring of a string, a key of an object, or an element of a
/// list of which at least one present element has the needle's kind.
fn contains(hay: &Val, needle: &Val) -> Option<bool> {
    match (hay, needle) {
        (Val::Str(h), Val::Str(n)) => Some(h.contains(n.as_str())),
        (Val::Json(serde_json::Value::Object(m)), Val::Str(k)) => Some(m.contains_key(k)),
        _ => {
            let items = elements(hay)?;
            let kind = needle.kind();
            let comparable: Vec<&Val> = items.iter().filter(|i| i.kind() == kind).collect();
            if comparable.is_empty() && items.iter().any(|i| i.kind().is_some()) {
                return None;
            }
            Some(comparable.iter().any(|i| same(i, needle)))
        }
    }
}

fn type_error(op: BinOp, a: &Val, b: &Val) -> Val {
    let (a, b) = (a.kind().map(Kind::name).unwrap_or("nothing"), b.kind().map(Kind::name).unwrap_or("nothing"));
    let what = match op {
        BinOp::Contains => format!("`contains` cannot look for {b} in {a}"),
        BinOp::In => format!("`in` cannot look for {a} in {b}"),
        BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => {
            format!("`{}` compares numbers, not {a} with {b}", op.as_str())
        }
        _ => format!("`{}` cannot compare {a} with {b}", op.as_str()),
    };
    Val::Error(Undecided::body(format!("a body value has a type the policy cannot use: {what}")))
}

/// Apply a binary operator (`and`/`or` short-circuit in the callers; `matches` takes a
/// compiled regex and is applied with `regex_match`).
pub fn binary(op: BinOp, a: &Val, b: &Val) -> Val {
    match op {
        BinOp::And => return and(a, || b.clone()),
        BinOp::Or => return or(a, || b.clone()),
        BinOp::Matches => return Val::Bool(false),
        _ => {}
    }
    for v in [a, b] {
        if let Val::Error(_) = v {
            return v.clone();
        }
    }
    if *a == Val::Missing || *b == Val::Missing {
        return Val::Bool(op == BinOp::Ne);
    }
    let r = match op {
        BinOp::Eq | BinOp::BadAssign => equals(a, b),
        BinOp::Ne => equals(a, b).map(|e| !e),
        BinOp::Gt => order(a, b).map(|o| o == Ordering::Greater),
        BinOp::Ge => order(a, b).map(|o| o != Ordering::Less),
        BinOp::Lt => order(a, b).map(|o| o == Ordering::Less),
        BinOp::Le => order(a, b).map(|o| o != Ordering::Greater),
        BinOp::Contains => contains(a, b),
        BinOp::In => contains(b, a),
        BinOp::StartsWith | BinOp::EndsWith => match (a, b) {
            (Val::Str(x), Val::Str(y)) => {
                Some(if op == BinOp::StartsWith { x.starts_with(y.as_str()) } else { x.ends_with(y.as_str()) })
            }
            _ => None,
        },
        BinOp::And | BinOp::Or | BinOp::Matches => None,
    };
    match r {
        Some(b) => Val::Bool(b),
        None => type_error(op, a, b),
    }
}

/// `value matches /re/`: only strings can match.
pub fn regex_match(re: &regex_automata::meta::Regex, v: &Val) -> Val {
    match v {
        Val::Str(s) => Val::Bool(re.is_match(s.as_str())),
        Val::Missing => Val::Bool(false),
        Val::Error(_) => v.clone(),
        other => Val::Error(Undecided::body(format!(
            "a body value has a type the policy cannot use: `matches` needs a string, not {}",
            other.kind().map(Kind::name).unwrap_or("this")
        ))),
    }
}

pub fn call(func: Func, args: &[Val]) -> Val {
    if let Some(e) = args.iter().find(|a| matches!(a, Val::Error(_))) {
        return e.clone();
    }
    match (func, args) {
        (_, [Val::Missing]) => Val::Missing,
        (Func::Lower, [Val::Str(s)]) => Val::Str(s.to_lowercase()),
        (Func::Upper, [Val::Str(s)]) => Val::Str(s.to_uppercase()),
        (Func::Number, [Val::Str(s)]) => match plain_number(s) {
            Some(n) => Val::Num(n),
            None => Val::Error(Undecided {
                code: INVALID_NUMBER,
                message: format!("`number` cannot read {} as a plain decimal number", shown(s)),
            }),
        },
        (Func::Number, [Val::Num(n)]) => Val::Num(*n),
        (Func::Len, [Val::Str(s)]) => Val::Num(s.chars().count() as f64),
        (Func::Len, [Val::List(l)]) => Val::Num(l.len() as f64),
        (Func::Len, [Val::Json(serde_json::Value::Array(a))]) => Val::Num(a.len() as f64),
        (Func::Len, [Val::Json(serde_json::Value::Object(m))]) => Val::Num(m.len() as f64),
        (_, [v]) => Val::Error(Undecided::body(format!(
            "a body value has a type the policy cannot use: `{}` cannot take {}",
            func.as_str(),
            v.kind().map(Kind::name).unwrap_or("this")
        ))),
        _ => Val::Missing,
    }
}

/// Client text quoted in a message, cut to a readable length.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{:?}…", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// A number written as JSON writes it, nothing else (no spaces, `+`, hex, `_`, `inf`), within
/// ±(2^53−1): text every reader of the same header or field reads as the same number.
pub fn plain_number(s: &str) -> Option<f64> {
    if s.is_empty() || s.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let n: serde_json::Number = serde_json::from_str(s).ok()?;
    n.as_f64().filter(|f| f.is_finite() && f.abs() <= crate::ijson::MAX_SAFE_INTEGER as f64)
}

/// Compile a policy regex with the limits every stage uses.
pub fn build_regex(
    pattern: &str,
    case_insensitive: bool,
) -> Result<regex_automata::meta::Regex, Box<regex_automata::meta::BuildError>> {
    regex_automata::meta::Builder::new()
        .configure(
            regex_automata::meta::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)).hybrid_cache_capacity(2 << 20),
        )
        .syntax(regex_automata::util::syntax::Config::new().case_insensitive(case_insensitive).nest_limit(64))
        .build(pattern)
        .map_err(Box::new)
}

/// Largest compiled NFA one policy regex may have, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
