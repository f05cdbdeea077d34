//! The decision-time program: the expression DAG and each route's auth, guards, limits and
//! action, as `gw-compiler`'s `lower` builds them. Public so the compiler can build it; only
//! the graph's own executor reads it.

use crate::lang::{BinOp, Func};
use crate::request::{Outcome, Request};
use crate::value::{self, Val};

use super::*;

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
    /// The credential sets, tried in order.
    pub methods: Vec<AuthMethodRt>,
    /// `auth optional`: a request without a credential passes unauthenticated.
    pub optional: bool,
    /// The 401 messages (missing, invalid).
    pub missing: String,
    pub invalid: String,
}

#[derive(Debug, Clone)]
pub struct AuthMethodRt {
    pub set: SetRef,
    /// The set's name, for the identity.
    pub name: String,
    /// Where the credential may come from, in order (the defaults filled in).
    pub via: Vec<CredentialSource>,
}

impl AuthMethodRt {
    /// The credential the client presented, from the first source that has one.
    pub(super) fn credential<'r>(&self, req: &'r Request) -> Option<&'r str> {
        self.via.iter().find_map(|c| match c {
            CredentialSource::Basic => req
                .header("authorization")
                .map(str::trim)
                .filter(|v| v.split_once(' ').is_some_and(|(s, _)| s.eq_ignore_ascii_case("basic"))),
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
    pub id: std::sync::Arc<str>,
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
    pub(super) fn method_ok(&self, bit: u8) -> bool {
        self.any_method || self.method_mask & bit != 0
    }
}
