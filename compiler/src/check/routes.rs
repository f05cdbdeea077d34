//! Route rules: one `when`, one action, facts used before they are known, contradictory
//! guards, and routes shadowed by earlier ones.

use std::collections::HashMap;

use crate::diagnostics::{Code, Diag};
use crate::resolve::{stmt_exprs, stmt_templates, walk};
use crate::source::Span;

use super::*;

impl<'a> Checker<'a> {
    pub(super) fn route(&mut self, r: &Route) {
        let (when, auth) = self.route_clauses(r);
        // `auth none` says the route is public: no identity is known on it.
        let has_auth = auth.is_some_and(|s| matches!(s.kind, RouteStmtKind::Auth(_)));
        let has_jwt = self.auth_has_jwt(r.auth());
        let params = when.and_then(|w| match &w.kind {
            RouteStmtKind::When(w) => Some(self.path_pattern(&w.path)),
            _ => None,
        });
        for s in &r.stmts {
            self.route_stmt(s, has_auth);
            for e in stmt_exprs(&s.kind) {
                if !has_auth {
                    self.no_identity_facts(e, "a route without `auth`");
                }
                if matches!(s.kind, RouteStmtKind::When(_)) {
                    self.no_claim_facts(e, "a `when` condition (routes are chosen before `auth`)");
                } else if !has_jwt {
                    self.no_claim_facts(e, "a route whose `auth` tries no `jwt` set");
                }
                if let Some(Some(params)) = &params {
                    self.params_known(e, params);
                }
            }
            for v in stmt_templates(&s.kind) {
                self.template(v, has_auth, params.as_ref().and_then(|p| p.as_deref()));
            }
        }
        self.contradictions(r);
        self.route_cache(r);
        self.shared_limits_used_once(r);
    }

    /// `limit use NAME` twice in one route would charge each request twice: the limit would
    /// hold half of what it says.
    fn shared_limits_used_once(&mut self, r: &Route) {
        let mut seen: Vec<&Ident> = vec![];
        for s in &r.stmts {
            let RouteStmtKind::LimitUse { name, .. } = &s.kind else { continue };
            match seen.iter().find(|first| first.name == name.name) {
                Some(first) => {
                    let d = Diag::error(
                        Code::DuplicateSetting,
                        format!("`limit use {}` twice in route `{}`", name.name, r.name.name),
                    )
                    .primary(name.span, "used again here: every request would be charged twice")
                    .secondary(first.span, "first used here")
                    .help(format!("keep one `limit use {}`: one use charges each request once", name.name));
                    self.err(d);
                }
                None => seen.push(name),
            }
        }
    }

    /// The facts a template reads: known on this route, and never the body (which may be
    /// streamed to the upstream unread).
    fn template(&mut self, v: &Value, has_auth: bool, params: Option<&[String]>) {
        for p in &v.parts {
            let ValuePart::Fact(f, span) = p else { continue };
            let e = Expr { kind: ExprKind::Fact(f.clone()), span: *span };
            if !has_auth {
                self.no_identity_facts(&e, "a route without `auth`");
            }
            if let Some(params) = params {
                self.params_known(&e, params);
            }
            if matches!(f, Fact::Body(_)) {
                self.err(
                    Diag::error(Code::FactUnavailable, "a template cannot read the body")
                        .primary(*span, "the body may reach the upstream unread")
                        .help("read a header, query or path parameter instead, or test the body in a guard"),
                );
            }
        }
    }

    /// One `when`, at most one `auth`, one action: reports the rest, returns `when` and `auth`.
    fn route_clauses<'r>(&mut self, r: &'r Route) -> (Option<&'r RouteStmt>, Option<&'r RouteStmt>) {
        let mut when: Option<&RouteStmt> = None;
        let mut action: Option<&RouteStmt> = None;
        let mut auth: Option<&RouteStmt> = None;
        for s in &r.stmts {
            let slot = match &s.kind {
                RouteStmtKind::When(_) => Some(&mut when),
                RouteStmtKind::Auth(_) | RouteStmtKind::AuthNone => Some(&mut auth),
                RouteStmtKind::To(_) | RouteStmtKind::Respond { .. } | RouteStmtKind::Serve(_) => Some(&mut action),
                _ => None,
            };
            if let Some(slot) = slot {
                match slot {
                    Some(first) => {
                        let (a, b) = (first.kind.keyword(), s.kind.keyword());
                        let msg = if a == b {
                            format!("route `{}` has two `{a}` clauses", r.name.name)
                        } else {
                            format!("route `{}` has both `{a}` and `{b}`", r.name.name)
                        };
                        self.err(
                            Diag::error(Code::RouteConflictingActions, msg)
                                .primary(s.span, "conflicts with the earlier clause")
                                .secondary(first.span, "first given here")
                                .help("a route has one `when`, at most one `auth`, and one action: `to`, `respond` or `serve`"),
                        );
                    }
                    None => *slot = Some(s),
                }
            }
        }
        if when.is_none() {
            self.err(
                Diag::error(Code::RouteMissingWhen, format!("route `{}` has no `when`", r.name.name))
                    .primary(r.name.span, "this route can never match")
                    .help("add `when METHOD \"/path\"`"),
            );
        }
        if action.is_none() {
            self.err(
                Diag::error(Code::RouteMissingAction, format!("route `{}` does nothing with a request", r.name.name))
                    .primary(r.name.span, "no `to`, `respond` or `serve`")
                    .help("add `to UPSTREAM`, `respond STATUS` or `serve health`"),
            );
        }
        (when, auth)
    }

    /// The values of one route statement: headers, statuses, conditions, limits, rewrites.
    fn route_stmt(&mut self, s: &RouteStmt, has_auth: bool) {
        match &s.kind {
            RouteStmtKind::When(w) => {
                if let Some(h) = &w.host {
                    self.host_pattern(h);
                }
                if let Some(c) = &w.cond {
                    self.no_identity_facts(c, "a `when` condition (routes are chosen before `auth`)");
                    self.condition(c, "a `when` condition");
                }
            }
            RouteStmtKind::Auth(a) => self.auth(a),
            RouteStmtKind::Cors(c) => self.cors(c),
            RouteStmtKind::Allow { cond, status, .. } => {
                self.condition(cond, "`allow`");
                if let Some(st) = status {
                    self.status(*st, 400, "a refusal");
                }
            }
            RouteStmtKind::Deny { status, cond, .. } => {
                self.status(*status, 400, "a refusal");
                self.condition(cond, "`deny`");
            }
            RouteStmtKind::Limit(l) => self.route_limit(l, s.span, has_auth),
            RouteStmtKind::LimitUse { name, cond, .. } => {
                if let Some(c) = cond {
                    self.condition(c, "a limit's `if`");
                }
                let shared = self.items.iter().find_map(|i| match i {
                    Item::Limit(l) if l.name.name == name.name => Some(l),
                    _ => None,
                });
                if let Some(l) = shared.filter(|l| !has_auth && matches!(l.per, LimitKey::Key | LimitKey::Tenant)) {
                    let what = if l.per == LimitKey::Key { "key" } else { "tenant" };
                    self.err(
                        Diag::error(
                            Code::FactUnavailable,
                            format!("`limit use {}` in a route without `auth`", name.name),
                        )
                        .primary(name.span, format!("counts per {what}, and no {what} is known on this route"))
                        .secondary(l.name.span, "declared here")
                        .help("add `auth KEYSET` to the route, or share a limit `per client`"),
                    );
                }
            }
            RouteStmtKind::SetHeader { name, .. } => self.header_name(name),
            RouteStmtKind::StripHeaders(names) => names.iter().for_each(|n| self.header_name(n)),
            RouteStmtKind::Rewrite(Rewrite::Prefix { from, .. }) if !from.value.starts_with('/') => {
                self.err(
                    Diag::error(Code::InvalidPathPattern, "a rewritten prefix must start with `/`")
                        .primary(from.span, "not an absolute path")
                        .help("write it like \"/proxy\""),
                );
            }
            RouteStmtKind::Rewrite(Rewrite::Path(p)) if !p.value.starts_with('/') => {
                self.err(
                    Diag::error(Code::InvalidPathPattern, "a rewritten path must start with `/`")
                        .primary(p.span, "not an absolute path")
                        .help("write it like \"/v2/{id}\""),
                );
            }
            RouteStmtKind::Respond { status, headers, .. } => {
                self.status(*status, 100, "a response");
                headers.iter().for_each(|(name, _)| self.header_name(name));
            }
            _ => {}
        }
    }

    /// A shared limit's rate or count and key, as a route limit's.
    pub(super) fn shared_limit(&mut self, l: &SharedLimit) {
        let as_limit = Limit { kind: l.kind.clone(), per: l.per.clone(), model: None, cond: None, shadow: false };
        self.route_limit(&as_limit, l.span, true);
    }

    /// A limit's rate or count, condition, model regex and key.
    fn route_limit(&mut self, l: &Limit, span: Span, has_auth: bool) {
        match &l.kind {
            LimitKind::Rate { rate, burst } => {
                self.rate(*rate, "rate limit");
                if let Some(b) = burst {
                    self.range(*b, 1, 1_000_000_000, "burst", "a burst must allow at least one request");
                }
            }
            LimitKind::Tokens { rate, .. } => self.rate(*rate, "token budget"),
            LimitKind::Concurrent(q) => {
                self.range(*q, 1, 1_000_000, "concurrent", "allow at least one request at a time")
            }
        }
        if let Some(c) = &l.cond {
            self.condition(c, "a limit's `if`");
        }
        if let Some(m) = &l.model {
            self.regex(m);
        }
        if let LimitKey::Expr(e) = &l.per {
            self.ty(e);
        }
        if let LimitKey::Header(h) = &l.per {
            self.header_name(h);
        }
        if !has_auth && matches!(l.per, LimitKey::Key | LimitKey::Tenant) {
            let what = if l.per == LimitKey::Key { "key" } else { "tenant" };
            self.err(
                Diag::error(Code::FactUnavailable, format!("`per {what}` in a route without `auth`"))
                    .primary(span, format!("no {what} is known on this route"))
                    .help("add `auth KEYSET` to the route, or limit `per client`"),
            );
        }
    }

    pub(super) fn params_known(&mut self, e: &Expr, params: &[String]) {
        let mut bad = vec![];
        walk(e, &mut |sub| {
            if let ExprKind::Fact(Fact::Param(p)) = &sub.kind {
                if !params.contains(p) {
                    bad.push((p.clone(), sub.span));
                }
            }
        });
        for (p, span) in bad {
            let help = if params.is_empty() {
                "this route's path has no parameters".to_string()
            } else {
                format!("this route's parameters: {}", params.join(", "))
            };
            self.err(
                Diag::error(Code::FactUnavailable, format!("no path parameter `{p}`"))
                    .primary(span, "not in the route's path")
                    .help(help),
            );
        }
    }

    /// `tenant` and `key` are known only after `auth`.
    pub(super) fn no_identity_facts(&mut self, e: &Expr, place: &str) {
        let mut found = vec![];
        self.visit_with_matchers(e, &mut |sub| {
            if let ExprKind::Fact(f @ (Fact::Tenant | Fact::Key)) = &sub.kind {
                found.push((if *f == Fact::Tenant { "tenant" } else { "key" }, sub.span));
            }
        });
        for (what, span) in found {
            self.err(
                Diag::error(Code::FactUnavailable, format!("`{what}` is not known in {place}"))
                    .primary(span, format!("`{what}` is only known after authentication"))
                    .help("move this test into a guard (`allow`/`deny`) of a route with `auth`, or route on a header instead"),
            );
        }
    }

    /// Visit an expression and the matchers it refers to (each matcher once).
    pub(super) fn visit_with_matchers(&self, e: &'a Expr, f: &mut dyn FnMut(&'a Expr)) {
        let mut stack = vec![e];
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        while let Some(e) = stack.pop() {
            walk(e, &mut |sub| {
                f(sub);
                if let ExprKind::Ref(id) = &sub.kind {
                    if let Some(m) = self.matchers.get(id.name.as_str()) {
                        if seen.insert(m.name.name.as_str()) {
                            stack.push(&m.expr);
                        }
                    }
                }
            });
        }
    }

    /// A condition must be a boolean.
    pub(super) fn condition(&mut self, e: &Expr, place: &str) {
        let t = self.ty(e);
        if let Some(t) = t {
            if !t.is(Ty::Bool) {
                self.err(
                    Diag::error(Code::TypeMismatch, format!("{place} needs a condition, found {}", t.name()))
                        .primary(e.span, format!("this is {}, not a condition", t.name()))
                        .help("compare it, e.g. `header[\"x\"] == \"v\"`, or test presence with `exists`"),
                );
            }
        }
    }

    /// Guards that refuse every request.
    pub(super) fn contradictions(&mut self, r: &Route) {
        let mut allows: Vec<(&Expr, Span)> = vec![];
        let mut denies: Vec<(&Expr, Span)> = vec![];
        for s in &r.stmts {
            match &s.kind {
                RouteStmtKind::Allow { cond, .. } => {
                    if matches!(cond.kind, ExprKind::Lit(Lit::Bool(false))) {
                        self.err(always_refuses(s.span, "`allow if false`"));
                    }
                    allows.push((cond, s.span));
                }
                RouteStmtKind::Deny { cond, .. } => {
                    if matches!(cond.kind, ExprKind::Lit(Lit::Bool(true))) {
                        self.err(always_refuses(s.span, "`deny ... if true`"));
                    }
                    denies.push((cond, s.span));
                }
                _ => {}
            }
        }
        for (a, aspan) in &allows {
            for (d, dspan) in &denies {
                if same_expr(a, d) {
                    self.err(
                        Diag::error(Code::GuardContradiction, "these guards refuse every request")
                            .primary(*dspan, "denies exactly what the `allow` lets through")
                            .secondary(*aspan, "allows only this")
                            .help("one of the two conditions is probably wrong; if the route should answer nothing, use `respond`"),
                    );
                }
            }
        }
        // Two `allow`s that require one fact to equal two different values.
        for (i, (a, aspan)) in allows.iter().enumerate() {
            for (b, bspan) in allows.iter().skip(i + 1) {
                if let (Some((fa, va)), Some((fb, vb))) = (fact_eq_lit(a), fact_eq_lit(b)) {
                    if fa == fb && va != vb {
                        self.err(
                            Diag::error(Code::GuardContradiction, "these `allow` guards can never both hold")
                                .primary(*bspan, "requires a different value")
                                .secondary(*aspan, "than this guard")
                                .help("to accept either value, write one guard: `allow if x in [\"a\", \"b\"]`"),
                        );
                    }
                }
            }
        }
    }

    /// A route that can never match because an earlier one always matches first.
    pub(super) fn shadowing(&mut self) {
        let routes: Vec<(&Route, &When)> = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Route(r) => r.when().map(|w| (r, w)),
                _ => None,
            })
            .collect();
        // An earlier route can only cover a later one if its literal path prefix (the segments
        // before its first `{param}` or `*`) is a prefix of the later route's literal segments;
        // indexing earlier routes by that prefix keeps this pass near-linear.
        fn literal_prefix(path: &str) -> Vec<&str> {
            path.split('/').skip(1).take_while(|s| !(s.starts_with('{') || *s == "*")).collect()
        }
        fn key(segments: &[&str]) -> String {
            segments.iter().map(|s| format!("/{s}")).collect()
        }
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        for (j, (later, lw)) in routes.iter().enumerate() {
            let segments = literal_prefix(&lw.path.value);
            let mut candidates: Vec<usize> = (0..=segments.len())
                .flat_map(|k| by_prefix.get(&key(&segments[..k])).into_iter().flatten().copied())
                .collect();
            candidates.sort_unstable();
            if lw.cond.is_none() {
                by_prefix.entry(key(&segments)).or_default().push(j);
            }
            for (earlier, ew) in candidates.into_iter().filter_map(|i| routes.get(i)) {
                if ew.cond.is_none() && covers(ew, lw) {
                    self.err(
                        Diag::error(Code::RouteShadowed, format!("route `{}` can never match", later.name.name))
                            .primary(later.name.span, "unreachable route")
                            .secondary(earlier.name.span, "this earlier route matches every request it would")
                            .help(format!(
                                "move `{}` above `{}`, or make `{}` narrower",
                                later.name.name, earlier.name.name, earlier.name.name
                            )),
                    );
                    break;
                }
            }
        }
    }
}

/// Structural equality ignoring spans.
pub fn same_expr(a: &Expr, b: &Expr) -> bool {
    match (&a.kind, &b.kind) {
        (ExprKind::Lit(x), ExprKind::Lit(y)) => match (x, y) {
            (Lit::Regex(p), Lit::Regex(q)) => p.pattern == q.pattern && p.case_insensitive == q.case_insensitive,
            _ => x == y,
        },
        (ExprKind::List(x), ExprKind::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_expr(p, q)),
        (ExprKind::Fact(x), ExprKind::Fact(y)) => x == y,
        (ExprKind::Ref(x), ExprKind::Ref(y)) => x.name == y.name,
        (ExprKind::Not(x), ExprKind::Not(y)) | (ExprKind::Exists(x), ExprKind::Exists(y)) => same_expr(x, y),
        (ExprKind::Binary { op: o1, lhs: l1, rhs: r1, .. }, ExprKind::Binary { op: o2, lhs: l2, rhs: r2, .. }) => {
            o1 == o2 && same_expr(l1, l2) && same_expr(r1, r2)
        }
        (ExprKind::Call { func: f1, args: a1 }, ExprKind::Call { func: f2, args: a2 }) => {
            f1 == f2 && a1.len() == a2.len() && a1.iter().zip(a2).all(|(p, q)| same_expr(p, q))
        }
        _ => false,
    }
}

pub(super) fn fact_eq_lit(e: &Expr) -> Option<(&Fact, &Lit)> {
    match &e.kind {
        ExprKind::Binary { op: BinOp::Eq, lhs, rhs, .. } => match (&lhs.kind, &rhs.kind) {
            (ExprKind::Fact(f), ExprKind::Lit(l)) | (ExprKind::Lit(l), ExprKind::Fact(f)) => Some((f, l)),
            _ => None,
        },
        _ => None,
    }
}

/// Does `a` match every request `b` matches (ignoring `b`'s condition)?
pub(super) fn covers(a: &When, b: &When) -> bool {
    let methods =
        a.methods.contains(&Method::Any) || b.methods.iter().all(|m| *m != Method::Any && a.methods.contains(m));
    let host = match (&a.host, &b.host) {
        (None, _) => true,
        (Some(x), Some(y)) => x.value.eq_ignore_ascii_case(&y.value),
        _ => false,
    };
    methods && host && path_covers(&a.path.value, &b.path.value)
}

pub(super) fn path_covers(a: &str, b: &str) -> bool {
    if a == "/*" {
        return true;
    }
    let pa: Vec<&str> = a.split('/').collect();
    let pb: Vec<&str> = b.split('/').collect();
    for (i, sa) in pa.iter().enumerate() {
        if *sa == "*" && i == pa.len() - 1 && i > 0 {
            // `/x/*` covers `/x` and everything below it: b must agree on the segments before.
            return pb.len() >= i;
        }
        let Some(sb) = pb.get(i) else { return false };
        let a_param = sa.starts_with('{');
        if *sb == "*" && i == pb.len() - 1 {
            return false;
        }
        if !(a_param && !sb.is_empty() || sa == sb) {
            return false;
        }
    }
    pa.len() == pb.len()
}
