//! The validated program: every file's items merged in import order, env values and key files
//! loaded. Produced by `resolve` + `check`; read by `lower` (to build the graph), by `eval`
//! (the reference evaluator) and by the test runner. Lookups by name are here so no later
//! stage re-implements them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Arc;

use gw_engine::basic::Htpasswd;
use gw_engine::cors::{CorsPolicy, OriginPattern};
use gw_engine::jwt::JwtVerifier;

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
    /// `jwt` sets by name, keys loaded (a set whose keys are unusable verifies nothing).
    pub jwtsets: BTreeMap<String, Arc<JwtVerifier>>,
    /// `basic` sets by name: (tenant, users).
    pub basicsets: BTreeMap<String, (String, Arc<Htpasswd>)>,
}

/// The kind of credential set a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Keys,
    Jwt,
    Basic,
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

    pub fn cors(&self) -> Option<&Cors> {
        self.stmts.iter().find_map(|s| match &s.kind {
            RouteStmtKind::Cors(c) => Some(c),
            _ => None,
        })
    }
}

/// What `auth` means, read the same way by `eval` and `lower`.
impl Program {
    /// The kind of the credential set `name`, as declared (whether or not it loaded).
    pub fn set_kind(&self, name: &str) -> Option<SetKind> {
        self.items.iter().find_map(|i| match i {
            Item::Keys(k) if k.name.name == name => Some(SetKind::Keys),
            Item::Jwt(j) if j.name.name == name => Some(SetKind::Jwt),
            Item::Basic(b) if b.name.name == name => Some(SetKind::Basic),
            _ => None,
        })
    }

    /// Where a method's credential comes from: its `via`, else the set kind's default.
    pub fn auth_sources(&self, m: &AuthMethod) -> Vec<Credential> {
        if !m.via.is_empty() {
            return m.via.clone();
        }
        let span = m.set.span;
        match self.set_kind(&m.set.name) {
            Some(SetKind::Jwt) => vec![Credential::Bearer(span)],
            Some(SetKind::Basic) => vec![Credential::Basic(span)],
            _ => vec![Credential::Header(Str { value: "x-api-key".into(), span }), Credential::Bearer(span)],
        }
    }

    /// The 401 messages (missing, invalid): the route's `message`, else the first of its sets
    /// that declares one, else the defaults.
    pub fn auth_messages(&self, auth: &Auth) -> (String, String) {
        // The set's own `message`: find the set first, so a set without one ends the search
        // (scanning on would cost every route a walk over every item).
        let set_message = |name: &str| {
            let set = self.items.iter().find(|i| match i {
                Item::Keys(k) => k.name.name == name,
                Item::Basic(b) => b.name.name == name,
                Item::Jwt(j) => j.name.name == name,
                _ => false,
            });
            match set? {
                Item::Keys(k) => k.message.as_ref(),
                Item::Basic(b) => b.message.as_ref(),
                Item::Jwt(j) => j.stmts.iter().find_map(|s| match &s.kind {
                    JwtStmtKind::Message(m) => Some(m),
                    _ => None,
                }),
                _ => None,
            }
        };
        let message = auth.message.as_ref().or_else(|| auth.methods.iter().find_map(|m| set_message(&m.set.name)));
        let keys_only =
            auth.methods.iter().all(|m| !matches!(self.set_kind(&m.set.name), Some(SetKind::Jwt | SetKind::Basic)));
        gw_engine::request::auth_messages(message.map(|m| m.value.as_str()), keys_only)
    }

    /// A route's `cors` as the engine asks it. The methods a preflight may ask for default to
    /// the route's own; `OPTIONS` is never listed.
    pub fn cors_policy(&self, route: &Route, c: &Cors) -> CorsPolicy {
        let methods = if c.methods.is_empty() {
            route.when().map(|w| w.methods.clone()).unwrap_or_default()
        } else {
            c.methods.clone()
        };
        let mut names: Vec<String> = vec![];
        for m in methods {
            let list: Vec<&str> =
                if m == Method::Any { vec!["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] } else { vec![m.as_str()] };
            for n in list {
                if n != "OPTIONS" && !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
        }
        CorsPolicy {
            origins: c.origins.iter().filter_map(|o| OriginPattern::parse(&o.value)).collect(),
            methods: names,
            headers: c.headers.iter().map(|h| h.value.to_ascii_lowercase()).collect(),
            expose: c.expose.iter().map(|h| h.value.clone()).collect(),
            credentials: c.credentials.is_some(),
            max_age_s: c.max_age.map(|d| d.value / 1_000_000_000),
        }
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
