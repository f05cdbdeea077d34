//! Expressions → the graph's hash-consed node DAG, with constants folded.

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::program::Program;
use crate::value::{self, Val};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ConstKey {
    Missing,
    Str(String),
    Num(u64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Const(ConstKey),
    Fact(u32),
    List(Box<[NodeId]>),
    Not(NodeId),
    Exists(NodeId),
    Truthy(NodeId),
    And(NodeId, NodeId),
    Or(NodeId, NodeId),
    Bin(BinOp, NodeId, NodeId),
    Match(NodeId, u32),
    Call(Func, Box<[NodeId]>),
}

fn key_of(node: &Node) -> Option<Key> {
    Some(match node {
        Node::Const(v) => Key::Const(match v {
            Val::Missing => ConstKey::Missing,
            Val::Str(s) => ConstKey::Str(s.clone()),
            Val::Num(n) => ConstKey::Num(n.to_bits()),
            Val::Bool(b) => ConstKey::Bool(*b),
            Val::List(_) | Val::Json(_) | Val::Null | Val::Error(_) => return None,
        }),
        Node::Fact(f) => Key::Fact(*f),
        Node::List(xs) => Key::List(xs.clone()),
        Node::Not(x) => Key::Not(*x),
        Node::Exists(x) => Key::Exists(*x),
        Node::Truthy(x) => Key::Truthy(*x),
        Node::And(a, b) => Key::And(*a, *b),
        Node::Or(a, b) => Key::Or(*a, *b),
        Node::Bin(op, a, b) => Key::Bin(*op, *a, *b),
        Node::Match(x, r) => Key::Match(*x, *r),
        Node::Call(f, xs) => Key::Call(*f, xs.clone()),
    })
}

/// The expression DAG under construction: every distinct sub-expression once, children
/// before parents (so the Vec is in topological order).
#[derive(Default)]
pub(super) struct Nodes {
    nodes: Vec<Node>,
    refs: Vec<u32>,
    contextual: Vec<bool>,
    body: Vec<bool>,
    intern: HashMap<Key, NodeId>,
    facts: Vec<Fact>,
    fact_ix: HashMap<Fact, u32>,
    regexes: Vec<Option<regex_automata::meta::Regex>>,
    regex_ix: HashMap<(String, bool), u32>,
    matchers: HashMap<String, NodeId>,
    visiting: Vec<String>,
}

type Finished = (Vec<Node>, Vec<NodeMeta>, Vec<Fact>, Vec<Option<regex_automata::meta::Regex>>);

impl Nodes {
    pub(super) fn finish(self) -> Finished {
        let meta = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeMeta {
                shared: !matches!(n, Node::Const(_)) && self.refs.get(i).copied().unwrap_or(0) >= 2,
                contextual: self.contextual.get(i).copied().unwrap_or(true),
            })
            .collect();
        (self.nodes, meta, self.facts, self.regexes)
    }

    /// Lower an expression used directly by a route (condition, guard, limit).
    pub(super) fn root(&mut self, program: &Program, e: &Expr) -> Result<NodeId, Diag> {
        let id = self.expr(program, e)?;
        self.count(id);
        Ok(id)
    }

    pub(super) fn count(&mut self, id: NodeId) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r = r.saturating_add(1);
        }
    }

    pub(super) fn reads_body(&self, id: NodeId) -> bool {
        self.body.get(id as usize).copied().unwrap_or(false)
    }

    pub(super) fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    pub(super) fn const_of(&self, id: NodeId) -> Option<&Val> {
        match self.node(id) {
            Some(Node::Const(v)) => Some(v),
            _ => None,
        }
    }

    pub(super) fn push(&mut self, node: Node) -> Result<NodeId, Diag> {
        let id = u32::try_from(self.nodes.len()).map_err(|_| Diag::bug("too many expression nodes"))?;
        let children = node.children();
        let (mut contextual, mut body) = match &node {
            Node::Fact(f) => match self.facts.get(*f as usize) {
                Some(Fact::Param(_) | Fact::Tenant | Fact::Key | Fact::Claim(_)) => (true, false),
                Some(Fact::Body(_)) => (false, true),
                _ => (false, false),
            },
            _ => (false, false),
        };
        for c in &children {
            contextual |= self.contextual.get(*c as usize).copied().unwrap_or(true);
            body |= self.reads_body(*c);
            self.count(*c);
        }
        if let Some(k) = key_of(&node) {
            self.intern.insert(k, id);
        }
        self.nodes.push(node);
        self.refs.push(0);
        self.contextual.push(contextual);
        self.body.push(body);
        Ok(id)
    }

    pub(super) fn konst(&mut self, v: Val) -> Result<NodeId, Diag> {
        let node = Node::Const(v);
        if let Some(id) = key_of(&node).and_then(|k| self.intern.get(&k)) {
            return Ok(*id);
        }
        self.push(node)
    }

    /// Intern a node, folding what is constant: `and`/`or` with a constant side, operators
    /// over constants, `truthy` of what is already a boolean.
    pub(super) fn mk(&mut self, node: Node) -> Result<NodeId, Diag> {
        let is_const = |s: &Self, id: NodeId| s.const_of(id).map(Val::truthy);
        match &node {
            Node::Truthy(x) if self.node(*x).is_some_and(Node::is_boolean) => return Ok(*x),
            Node::And(a, b) => match (is_const(self, *a), is_const(self, *b)) {
                (Some(false), _) | (_, Some(false)) => return self.konst(Val::Bool(false)),
                (Some(true), _) => return self.mk(Node::Truthy(*b)),
                (_, Some(true)) => return self.mk(Node::Truthy(*a)),
                _ => {}
            },
            Node::Or(a, b) => match (is_const(self, *a), is_const(self, *b)) {
                (Some(true), _) | (_, Some(true)) => return self.konst(Val::Bool(true)),
                (Some(false), _) => return self.mk(Node::Truthy(*b)),
                (_, Some(false)) => return self.mk(Node::Truthy(*a)),
                _ => {}
            },
            _ => {}
        }
        if !matches!(node, Node::Fact(_) | Node::Const(_))
            && node.children().iter().all(|c| self.const_of(*c).is_some())
        {
            let folded = node.apply(&self.regexes, |c| self.const_of(c).cloned().unwrap_or(Val::Missing));
            if let Some(v @ (Val::Missing | Val::Str(_) | Val::Num(_) | Val::Bool(_))) = folded {
                return self.konst(v);
            }
        }
        if let Some(id) = key_of(&node).and_then(|k| self.intern.get(&k)) {
            return Ok(*id);
        }
        self.push(node)
    }

    pub(super) fn fact(&mut self, f: &Fact) -> Result<NodeId, Diag> {
        let slot = match self.fact_ix.get(f) {
            Some(s) => *s,
            None => {
                let s = u32::try_from(self.facts.len()).map_err(|_| Diag::bug("too many facts"))?;
                self.facts.push(f.clone());
                self.fact_ix.insert(f.clone(), s);
                s
            }
        };
        self.mk(Node::Fact(slot))
    }

    pub(super) fn regex(&mut self, r: &Regex) -> u32 {
        let key = (r.pattern.clone(), r.case_insensitive);
        if let Some(ix) = self.regex_ix.get(&key) {
            return *ix;
        }
        let ix = self.regexes.len() as u32;
        self.regexes.push(value::build_regex(&r.pattern, r.case_insensitive).ok());
        self.regex_ix.insert(key, ix);
        ix
    }

    pub(super) fn matcher(&mut self, program: &Program, m: &Matcher) -> Result<NodeId, Diag> {
        if let Some(id) = self.matchers.get(&m.name.name) {
            return Ok(*id);
        }
        if self.visiting.contains(&m.name.name) {
            return Err(
                Diag::bug(format!("matcher `{}` refers to itself", m.name.name)).primary(m.name.span, "in this cycle")
            );
        }
        self.visiting.push(m.name.name.clone());
        let id = self.expr(program, &m.expr);
        self.visiting.pop();
        let id = id?;
        self.matchers.insert(m.name.name.clone(), id);
        Ok(id)
    }

    pub(super) fn expr(&mut self, program: &Program, e: &Expr) -> Result<NodeId, Diag> {
        match &e.kind {
            ExprKind::Lit(Lit::Str(s)) => self.konst(Val::Str(s.clone())),
            ExprKind::Lit(Lit::Int(n)) => self.konst(Val::Num(*n as f64)),
            ExprKind::Lit(Lit::Float(f)) => self.konst(Val::Num(*f)),
            ExprKind::Lit(Lit::Bool(b)) => self.konst(Val::Bool(*b)),
            ExprKind::Lit(Lit::Regex(_)) => self.konst(Val::Missing),
            ExprKind::List(items) => {
                let ids = items.iter().map(|i| self.expr(program, i)).collect::<Result<Vec<_>, _>>()?;
                self.mk(Node::List(ids.into()))
            }
            ExprKind::Fact(f) => self.fact(f),
            ExprKind::Ref(name) => match program.matcher(&name.name) {
                Some(m) => {
                    let x = self.matcher(program, m)?;
                    self.mk(Node::Truthy(x))
                }
                None => self.konst(Val::Missing),
            },
            ExprKind::Not(x) => {
                let x = self.expr(program, x)?;
                self.mk(Node::Not(x))
            }
            ExprKind::Exists(x) => {
                let x = self.expr(program, x)?;
                self.mk(Node::Exists(x))
            }
            ExprKind::Binary { op: BinOp::Matches, lhs, rhs, .. } => {
                let ExprKind::Lit(Lit::Regex(r)) = &rhs.kind else { return self.konst(Val::Bool(false)) };
                let re = self.regex(r);
                if self.regexes.get(re as usize).is_none_or(Option::is_none) {
                    return self.konst(Val::Bool(false));
                }
                let x = self.expr(program, lhs)?;
                self.mk(Node::Match(x, re))
            }
            ExprKind::Binary { op, lhs, rhs, .. } => {
                let a = self.expr(program, lhs)?;
                let b = self.expr(program, rhs)?;
                self.mk(match op {
                    BinOp::And => Node::And(a, b),
                    BinOp::Or => Node::Or(a, b),
                    op => Node::Bin(*op, a, b),
                })
            }
            ExprKind::Call { func, args } => {
                let ids = args.iter().map(|a| self.expr(program, a)).collect::<Result<Vec<_>, _>>()?;
                self.mk(Node::Call(*func, ids.into()))
            }
        }
    }
}
