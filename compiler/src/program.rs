//! The validated program: every file's items merged in import order, env values and key files
//! loaded. Produced by `resolve` + `check`; read by `lower` (to build the graph), by `eval`
//! (the reference evaluator) and by the test runner. Lookups by name are here so no later
//! stage re-implements them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ast::*;
use crate::keys::LoadedKeys;
use crate::resolve::{stmt_exprs, walk};
use crate::source::Sources;

#[derive(Debug, Clone, Default)]
pub struct Program {
    pub sources: Sources,
    /// Every file the policy reads (policy files and key files), for reload watching.
    pub files: Vec<PathBuf>,
    /// All items of all files, the root file's imports first, in source order.
    pub items: Vec<Item>,
    /// Every `env("NAME")` the policy names, with its value at load time (None: unset).
    pub env: BTreeMap<String, Option<String>>,
    /// Key sets by name, loaded from their files.
    pub keysets: BTreeMap<String, LoadedKeys>,
}

impl Program {
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.items.iter().filter_map(|i| match i {
            Item::Route(r) => Some(r),
            _ => None,
        })
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        self.items.iter().filter_map(|i| match i {
            Item::Upstream(u) => Some(u),
            _ => None,
        })
    }

    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.items.iter().filter_map(|i| match i {
            Item::Tenant(t) => Some(t),
            _ => None,
        })
    }

    /// The shared limits (`limit NAME ...`), in order.
    pub fn shared_limits(&self) -> impl Iterator<Item = &SharedLimit> {
        self.items.iter().filter_map(|i| match i {
            Item::Limit(l) => Some(l),
            _ => None,
        })
    }

    pub fn shared_limit(&self, name: &str) -> Option<&SharedLimit> {
        self.shared_limits().find(|l| l.name.name == name)
    }

    pub fn matchers(&self) -> impl Iterator<Item = &Matcher> {
        self.items.iter().filter_map(|i| match i {
            Item::Matcher(m) => Some(m),
            _ => None,
        })
    }

    pub fn tests(&self) -> impl Iterator<Item = &Test> {
        self.items.iter().filter_map(|i| match i {
            Item::Test(t) => Some(t),
            _ => None,
        })
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        self.items.iter().find_map(|i| match i {
            Item::Gateway(g) => Some(g),
            _ => None,
        })
    }

    pub fn matcher(&self, name: &str) -> Option<&Matcher> {
        self.matchers().find(|m| m.name.name == name)
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants().find(|t| t.name.name == name)
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams().find(|u| u.name.name == name)
    }

    /// A setting's string value with env parts filled in; None if an env var is unset.
    pub fn value(&self, v: &Value) -> Option<String> {
        let mut out = String::new();
        for part in &v.parts {
            match part {
                ValuePart::Lit(s) => out.push_str(&s.value),
                ValuePart::Env(name) => out.push_str(self.env.get(&name.value)?.as_deref()?),
                // Known only per request: a setting never has one (the grammar says so).
                ValuePart::Fact(..) | ValuePart::Gateway(..) => return None,
            }
        }
        Some(out)
    }
}

impl Route {
    /// The route's `when` clause (check guarantees exactly one in a valid program).
    pub fn when(&self) -> Option<&When> {
        self.stmts.iter().find_map(|s| match &s.kind {
            RouteStmtKind::When(w) => Some(w),
            _ => None,
        })
    }

    pub fn auth(&self) -> Option<&Auth> {
        self.stmts.iter().find_map(|s| match &s.kind {
            RouteStmtKind::Auth(a) => Some(a),
            _ => None,
        })
    }
}

/// What the body-need analysis of a route reads: the AST, not the evaluator, so both `eval`
/// and `lower` can ask it.
impl Program {
    /// Whether an expression of the route reads a body field, or a limit picks by `model`.
    pub fn route_reads_body(&self, route: &Route) -> bool {
        route.stmts.iter().any(|s| {
            matches!(&s.kind, RouteStmtKind::Limit(l) if l.model.is_some())
                || stmt_exprs(&s.kind).into_iter().any(|e| self.expr_reads_body(e, &mut vec![]))
        })
    }

    /// Whether an expression reads a body fact, following matcher references (each once).
    fn expr_reads_body<'a>(&'a self, e: &'a Expr, seen: &mut Vec<&'a str>) -> bool {
        let mut found = false;
        let mut refs = vec![];
        walk(e, &mut |sub| match &sub.kind {
            ExprKind::Fact(Fact::Body(_)) => found = true,
            ExprKind::Ref(name) => refs.push(name.name.as_str()),
            _ => {}
        });
        found
            || refs.into_iter().any(|name| {
                if seen.contains(&name) {
                    return false;
                }
                seen.push(name);
                self.matcher(name).is_some_and(|m| self.expr_reads_body(&m.expr, seen))
            })
    }
}
