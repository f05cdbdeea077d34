//! Values of policy expressions at decision time and the meaning of every operator on them.
//! The reference evaluator and the decision graph both call these functions, so the two can
//! differ only in *which* expressions they evaluate, never in what an operator means.
//!
//! A fact that is absent (no such header, no body field) is `Missing`: every comparison with it
//! is false except `!=`, which is true; `exists` tells it apart.

use std::cmp::Ordering;

use crate::ast::{BinOp, Func, PathSeg};

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Missing,
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Val>),
    /// A JSON array or object from the body.
    Json(serde_json::Value),
}

impl Val {
    pub fn from_json(v: &serde_json::Value) -> Val {
        use serde_json::Value as J;
        match v {
            J::Null => Val::Missing,
            J::Bool(b) => Val::Bool(*b),
            J::Number(n) => n.as_f64().map(Val::Num).unwrap_or(Val::Missing),
            J::String(s) => Val::Str(s.clone()),
            J::Array(_) | J::Object(_) => Val::Json(v.clone()),
        }
    }

    pub fn truthy(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    /// The counter key a limit uses for this value (`-` when missing).
    pub fn key_string(&self) -> String {
        match self {
            Val::Missing => "-".to_string(),
            Val::Str(s) => s.clone(),
            Val::Num(n) => format_num(*n),
            Val::Bool(b) => b.to_string(),
            Val::List(items) => items.iter().map(Val::key_string).collect::<Vec<_>>().join(","),
            Val::Json(j) => j.to_string(),
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

/// Equality without coercion: a number never equals a string.
pub fn equals(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Missing, _) | (_, Val::Missing) => false,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::List(x), Val::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equals(p, q)),
        (Val::Json(x), Val::Json(y)) => x == y,
        (Val::Json(serde_json::Value::Array(x)), Val::List(y))
        | (Val::List(y), Val::Json(serde_json::Value::Array(x))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equals(&Val::from_json(p), q))
        }
        _ => false,
    }
}

fn order(a: &Val, b: &Val) -> Option<Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn contains(hay: &Val, needle: &Val) -> bool {
    match (hay, needle) {
        (Val::Str(h), Val::Str(n)) => h.contains(n.as_str()),
        (Val::List(items), n) => items.iter().any(|i| equals(i, n)),
        (Val::Json(serde_json::Value::Array(items)), n) => items.iter().any(|i| equals(&Val::from_json(i), n)),
        (Val::Json(serde_json::Value::Object(m)), Val::Str(k)) => m.contains_key(k),
        _ => false,
    }
}

/// Apply a non-boolean binary operator (`and`/`or` short-circuit in the callers; `matches`
/// takes a compiled regex and is applied with `regex_match`).
pub fn binary(op: BinOp, a: &Val, b: &Val) -> Val {
    let r = match op {
        BinOp::Eq | BinOp::BadAssign => equals(a, b),
        BinOp::Ne => !equals(a, b),
        BinOp::Gt => order(a, b) == Some(Ordering::Greater),
        BinOp::Ge => matches!(order(a, b), Some(Ordering::Greater | Ordering::Equal)),
        BinOp::Lt => order(a, b) == Some(Ordering::Less),
        BinOp::Le => matches!(order(a, b), Some(Ordering::Less | Ordering::Equal)),
        BinOp::Contains => contains(a, b),
        BinOp::In => contains(b, a),
        BinOp::StartsWith => matches!((a, b), (Val::Str(x), Val::Str(y)) if x.starts_with(y.as_str())),
        BinOp::EndsWith => matches!((a, b), (Val::Str(x), Val::Str(y)) if x.ends_with(y.as_str())),
        BinOp::And => a.truthy() && b.truthy(),
        BinOp::Or => a.truthy() || b.truthy(),
        BinOp::Matches => false,
    };
    Val::Bool(r)
}

/// `value matches /re/`: only strings can match.
pub fn regex_match(re: &regex_automata::meta::Regex, v: &Val) -> Val {
    Val::Bool(match v {
        Val::Str(s) => re.is_match(s.as_str()),
        _ => false,
    })
}

pub fn call(func: Func, args: &[Val]) -> Val {
    match (func, args) {
        (Func::Lower, [Val::Str(s)]) => Val::Str(s.to_lowercase()),
        (Func::Upper, [Val::Str(s)]) => Val::Str(s.to_uppercase()),
        (Func::Number, [Val::Str(s)]) => {
            s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Val::Num).unwrap_or(Val::Missing)
        }
        (Func::Number, [Val::Num(n)]) => Val::Num(*n),
        (Func::Len, [Val::Str(s)]) => Val::Num(s.chars().count() as f64),
        (Func::Len, [Val::List(l)]) => Val::Num(l.len() as f64),
        (Func::Len, [Val::Json(serde_json::Value::Array(a))]) => Val::Num(a.len() as f64),
        (Func::Len, [Val::Json(serde_json::Value::Object(m))]) => Val::Num(m.len() as f64),
        _ => Val::Missing,
    }
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
