//! Stage 3: meaning. Types of expressions, ranges of values, regexes, path patterns, URLs and
//! header names; route rules (one `when`, one action, shadowed routes, contradictory guards,
//! facts used before they are known); env vars; key files; test blocks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::keys::LoadedKeys;
use crate::load::Loader;
use crate::resolve::{stmt_exprs, walk};
use crate::source::{Sources, Span};
use crate::value;

/// Longest chain of matchers referring to matchers.
pub const MAX_MATCHER_DEPTH: usize = 64;

/// How missing env vars are treated: a warning while checking, an error when serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Serve,
}

/// Static type of an expression. `Dyn` is a body field: any JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Num,
    Bool,
    List,
    Regex,
    Dyn,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Num => "a number",
            Ty::Bool => "a boolean",
            Ty::List => "a list",
            Ty::Regex => "a regex",
            Ty::Dyn => "a body value",
        }
    }

    fn is(self, other: Ty) -> bool {
        self == other || self == Ty::Dyn
    }
}

pub struct Checker<'a> {
    items: &'a [Item],
    matchers: HashMap<&'a str, &'a Matcher>,
    pub diags: Vec<Diag>,
}

pub fn check(items: &[Item]) -> Vec<Diag> {
    let mut c = Checker::new(items);
    c.run();
    c.diags
}

/// The static type the checker gives an expression of `items` (None if it is ill-typed): what
/// the typing property in `gw-fuzzing` holds the evaluator to.
pub fn static_type(items: &[Item], e: &Expr) -> Option<Ty> {
    Checker::new(items).ty(e)
}

impl<'a> Checker<'a> {
    fn new(items: &'a [Item]) -> Checker<'a> {
        let matchers = items
            .iter()
            .filter_map(|i| match i {
                Item::Matcher(m) => Some((m.name.name.as_str(), m)),
                _ => None,
            })
            .collect();
        Checker { items, matchers, diags: vec![] }
    }

    fn run(&mut self) {
        for item in self.items {
            match item {
                Item::Gateway(g) => self.gateway(g),
                Item::Upstream(u) => self.upstream(u),
                Item::Tenant(t) => self.tenant(t),
                Item::Matcher(m) => {
                    self.condition(&m.expr, "a matcher");
                }
                Item::Route(r) => self.route(r),
                Item::Test(t) => self.test(t),
                Item::Keys(_) | Item::Import(_) => {}
            }
        }
        self.shadowing();
        self.matcher_depth();
    }

    /// Matchers referring to matchers: evaluation recurses through them, so the chain is bounded.
    fn matcher_depth(&mut self) {
        let mut depth: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<&str> = self.matchers.keys().copied().collect();
        names.sort_unstable();
        for start in names {
            let mut stack = vec![start];
            while let Some(&name) = stack.last() {
                if depth.contains_key(name) {
                    stack.pop();
                    continue;
                }
                let Some(m) = self.matchers.get(name) else {
                    stack.pop();
                    continue;
                };
                let mut refs = vec![];
                walk(&m.expr, &mut |e| {
                    if let ExprKind::Ref(id) = &e.kind {
                        refs.push(id.name.as_str());
                    }
                });
                let pending: Vec<&str> =
                    refs.iter().copied().filter(|r| self.matchers.contains_key(r) && !depth.contains_key(r)).collect();
                if pending.is_empty() || stack.len() > self.matchers.len() {
                    let d = 1 + refs.iter().filter_map(|r| depth.get(r)).max().copied().unwrap_or(0);
                    depth.insert(name, d);
                    stack.pop();
                    if d == MAX_MATCHER_DEPTH + 1 {
                        self.err(
                            Diag::error(
                                Code::SyntaxTooDeep,
                                format!("matcher `{name}` nests matchers more than {MAX_MATCHER_DEPTH} levels deep"),
                            )
                            .primary(m.name.span, "too deep a chain of matchers")
                            .help(
                                "refer to fewer matchers in a chain; combine conditions with `and`/`or` in one matcher",
                            ),
                        );
                    }
                } else {
                    stack.extend(pending);
                }
            }
        }
    }

    fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    fn range(&mut self, q: Quantity, min: u64, max: u64, what: &str, help: &str) {
        if q.value < min || q.value > max {
            let msg = if q.value < min {
                format!("{what} must be at least {}", show_min(what, min))
            } else {
                format!("{what} is too large")
            };
            self.err(Diag::error(Code::OutOfRange, msg).primary(q.span, "out of range").help(help.to_string()));
        }
    }

    fn rate(&mut self, r: Rate, what: &str) {
        if r.count == 0 {
            self.err(
                Diag::error(Code::OutOfRange, format!("{what} of zero"))
                    .primary(r.span, "a rate must allow at least one per window")
                    .help("to refuse everything, use `deny` or `respond` instead"),
            );
        }
        if r.window_ns == 0 {
            self.err(
                Diag::error(Code::OutOfRange, format!("{what} with an empty window"))
                    .primary(r.span, "the window must be longer than zero")
                    .help("write a window like `/s` or `/10s`"),
            );
        }
    }

    fn status(&mut self, q: Quantity, min: u64, what: &str) {
        if q.value < min || q.value > 599 {
            self.err(
                Diag::error(Code::InvalidStatus, format!("{} is not a valid status for {what}", q.value))
                    .primary(q.span, "invalid status")
                    .help(format!("use a status from {min} to 599")),
            );
        }
    }

    fn header_name(&mut self, s: &Str) {
        let ok = !s.value.is_empty()
            && s.value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            self.err(
                Diag::error(
                    Code::InvalidHeaderName,
                    format!("`{}` is not a valid header name", s.value.escape_debug()),
                )
                .primary(s.span, "invalid header name")
                .help("header names are letters, digits and `-` (RFC 9110 token characters)"),
            );
        }
    }

    fn address(&mut self, v: &Value, what: &str) {
        let Some(lit) = literal_value(v) else { return };
        if lit.parse::<std::net::SocketAddr>().is_err() {
            self.err(
                Diag::error(Code::InvalidUrl, format!("`{lit}` is not a socket address"))
                    .primary(v.span, format!("{what} needs `ip:port`"))
                    .help("write an address like \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
        }
    }

    fn gateway(&mut self, g: &Gateway) {
        for s in &g.settings {
            match &s.kind {
                SettingKind::Listen(v) => self.address(v, "listen"),
                SettingKind::Admin { addr, .. } => self.address(addr, "admin"),
                SettingKind::MaxBody(q) => self.range(*q, 1, 1 << 32, "max_body", "use a size from 1B to 4GB"),
                SettingKind::MaxHeaderBytes(q) => {
                    self.range(*q, 1024, 1 << 24, "max_header_bytes", "use a size from 1KiB to 16MiB")
                }
                SettingKind::MaxHeaders(q) => self.range(*q, 1, 10_000, "max_headers", "use a count from 1 to 10000"),
                SettingKind::HeaderTimeout(q) | SettingKind::IdleTimeout(q) | SettingKind::DrainTimeout(q) => {
                    self.range(*q, 1_000_000, 86_400_000_000_000, s.kind.keyword(), "use a duration from 1ms to 1d")
                }
                SettingKind::Audit { rotate: Some(q), .. } => {
                    self.range(*q, 1024, u64::MAX, "rotate", "rotate at 1KiB or more")
                }
                _ => {}
            }
        }
    }

    fn upstream(&mut self, u: &Upstream) {
        let mut targets = 0;
        for s in &u.stmts {
            match &s.kind {
                UpstreamStmtKind::Target(t) => {
                    targets += 1;
                    if let Some(url) = literal_value(&t.url) {
                        if let Err(why) = check_url(&url) {
                            self.err(
                                Diag::error(Code::InvalidUrl, format!("`{url}` is not a valid upstream URL"))
                                    .primary(t.url.span, why)
                                    .help("write it as http://host:port or https://host[:port][/base-path]"),
                            );
                        }
                    }
                    if let Some(w) = t.weight {
                        self.range(
                            w,
                            1,
                            1000,
                            "weight",
                            "use a weight from 1 to 1000; remove the target to stop using it",
                        );
                    }
                }
                UpstreamStmtKind::Header { name, .. } => self.header_name(name),
                UpstreamStmtKind::Timeout(q) | UpstreamStmtKind::ConnectTimeout(q) => {
                    self.range(*q, 1_000_000, 86_400_000_000_000, s.kind.keyword(), "use a duration from 1ms to 1d")
                }
                UpstreamStmtKind::Health(h) => {
                    self.range(
                        h.every,
                        100_000_000,
                        86_400_000_000_000,
                        "health interval",
                        "check at most every 100ms",
                    );
                    if let Some(t) = h.timeout {
                        self.range(t, 1_000_000, 3_600_000_000_000, "health timeout", "use a duration from 1ms to 1h");
                    }
                    if !h.path.value.starts_with('/') {
                        self.err(
                            Diag::error(Code::InvalidPathPattern, "health check path must start with `/`")
                                .primary(h.path.span, "not an absolute path")
                                .help("write it like \"/health\""),
                        );
                    }
                }
                UpstreamStmtKind::Retry(r) => {
                    self.range(r.attempts, 0, 10, "retry", "retry at most 10 times");
                    for c in &r.on {
                        if let RetryCond::Status(q) = c {
                            self.status(*q, 500, "a retry condition");
                        }
                    }
                }
                UpstreamStmtKind::MaxConnections(q) => {
                    self.range(*q, 1, 1_000_000, "max_connections", "use a count from 1 to 1000000")
                }
                UpstreamStmtKind::Affinity(e) | UpstreamStmtKind::Balance(Balance::Hash(e)) => {
                    self.no_identity_facts(e, "an upstream");
                    self.ty(e);
                }
                UpstreamStmtKind::Balance(_) => {}
            }
        }
        if targets == 0 {
            self.err(
                Diag::error(Code::OutOfRange, format!("upstream `{}` has no target", u.name.name))
                    .primary(u.name.span, "no `target` in this upstream")
                    .help("add `target \"http://host:port\"`"),
            );
        }
    }

    fn tenant(&mut self, t: &Tenant) {
        for s in &t.stmts {
            match &s.kind {
                TenantStmtKind::Rate { rate, burst } => {
                    self.rate(*rate, "rate");
                    if let Some(b) = burst {
                        self.range(*b, 1, 1_000_000_000, "burst", "a burst must allow at least one request");
                    }
                }
                TenantStmtKind::Tokens(r) => self.rate(*r, "token budget"),
                TenantStmtKind::Concurrent(q) => {
                    self.range(*q, 1, 1_000_000, "concurrent", "allow at least one request at a time")
                }
                TenantStmtKind::Region(_) => {}
            }
        }
    }

    fn route(&mut self, r: &Route) {
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
        // `auth none` says the route is public: no identity is known on it.
        let has_auth = auth.is_some_and(|s| matches!(s.kind, RouteStmtKind::Auth(_)));
        let params = when.and_then(|w| match &w.kind {
            RouteStmtKind::When(w) => Some(self.path_pattern(&w.path)),
            _ => None,
        });

        for s in &r.stmts {
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
                RouteStmtKind::Auth(a) => {
                    for c in &a.via {
                        if let Credential::Header(h) = c {
                            self.header_name(h);
                        }
                    }
                }
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
                RouteStmtKind::Limit(l) => {
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
                                .primary(s.span, format!("no {what} is known on this route"))
                                .help("add `auth KEYSET` to the route, or limit `per client`"),
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
                RouteStmtKind::Respond { status, .. } => self.status(*status, 100, "a response"),
                RouteStmtKind::Cache { ttl, .. } => {
                    self.range(*ttl, 1_000_000_000, 30 * 86_400_000_000_000, "cache ttl", "cache for 1s to 30d")
                }
                _ => {}
            }
            for e in stmt_exprs(&s.kind) {
                if !has_auth {
                    self.no_identity_facts(e, "a route without `auth`");
                }
                if let Some(Some(params)) = &params {
                    self.params_known(e, params);
                }
            }
        }
        self.contradictions(r);
    }

    /// Validate a path pattern; the names of its params if it is valid.
    fn path_pattern(&mut self, p: &Str) -> Option<Vec<String>> {
        let bad = |msg: &str, help: &str| {
            Diag::error(Code::InvalidPathPattern, msg.to_string())
                .primary(p.span, "invalid path pattern")
                .help(help.to_string())
        };
        if !p.value.starts_with('/') {
            self.err(bad("a path pattern must start with `/`", "write it like \"/v1/chat/completions\""));
            return None;
        }
        if p.value.contains(['?', '#']) || p.value.chars().any(char::is_whitespace) {
            self.err(bad(
                "a path pattern cannot contain `?`, `#` or spaces",
                "match query parameters with `if query[\"name\"] == ...`",
            ));
            return None;
        }
        let segs: Vec<&str> = p.value.split('/').skip(1).collect();
        let mut names = vec![];
        for (i, seg) in segs.iter().enumerate() {
            if *seg == "*" {
                if i != segs.len() - 1 {
                    self.err(bad(
                        "`*` may only be the last segment",
                        "write `/prefix/*` to match everything under /prefix",
                    ));
                    return None;
                }
                continue;
            }
            if seg.contains(['{', '}', '*']) {
                let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                    self.err(bad(
                        "a parameter must be a whole segment like `{id}`",
                        "write `/jobs/{id}`, not `/jobs/job-{id}`",
                    ));
                    return None;
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.err(bad("a parameter name must be letters, digits or `_`", "write `{id}`"));
                    return None;
                }
                if names.iter().any(|n| n == name) {
                    self.err(bad(&format!("parameter `{name}` appears twice"), "give each parameter its own name"));
                    return None;
                }
                names.push(name.to_string());
            }
        }
        Some(names)
    }

    fn host_pattern(&mut self, h: &Str) {
        let host = h.value.strip_prefix("*.").unwrap_or(&h.value);
        let ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.contains('*');
        if !ok {
            self.err(
                Diag::error(Code::InvalidPathPattern, format!("`{}` is not a host pattern", h.value.escape_debug()))
                    .primary(h.span, "invalid host")
                    .help("write a host name like \"api.example.com\" or \"*.example.com\", without port"),
            );
        }
    }

    fn params_known(&mut self, e: &Expr, params: &[String]) {
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
    fn no_identity_facts(&mut self, e: &Expr, place: &str) {
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
    fn visit_with_matchers(&self, e: &'a Expr, f: &mut dyn FnMut(&'a Expr)) {
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

    fn regex(&mut self, r: &Regex) {
        if let Err(e) = value::build_regex(&r.pattern, r.case_insensitive) {
            let too_large = e.size_limit().is_some();
            let (code, msg) = if too_large {
                (Code::RegexTooLarge, "regex is too large".to_string())
            } else {
                (Code::RegexInvalid, "invalid regex".to_string())
            };
            let detail =
                e.syntax_error().map(|s| first_line(&s.to_string())).unwrap_or_else(|| first_line(&e.to_string()));
            let help = if too_large {
                format!(
                    "a compiled regex may use at most {} bytes; simplify it or split it with `or`",
                    value::REGEX_SIZE_LIMIT
                )
            } else {
                detail
            };
            self.err(
                Diag::error(code, msg)
                    .primary(r.span, if too_large { "compiles too large" } else { "does not compile" })
                    .help(help),
            );
        }
    }

    /// A condition must be a boolean.
    fn condition(&mut self, e: &Expr, place: &str) {
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

    /// The type of an expression; None if an error was already reported inside it.
    fn ty(&mut self, e: &Expr) -> Option<Ty> {
        Some(match &e.kind {
            ExprKind::Lit(Lit::Str(_)) => Ty::Str,
            ExprKind::Lit(Lit::Int(_) | Lit::Float(_)) => Ty::Num,
            ExprKind::Lit(Lit::Bool(_)) => Ty::Bool,
            ExprKind::Lit(Lit::Regex(r)) => {
                self.regex(r);
                Ty::Regex
            }
            ExprKind::List(items) => {
                for i in items {
                    let t = self.ty(i)?;
                    if t == Ty::Regex {
                        self.err(
                            Diag::error(Code::TypeMismatch, "a regex cannot be a list element")
                                .primary(i.span, "regex here")
                                .help("use `matches` with one regex, or `or` between several"),
                        );
                    }
                }
                Ty::List
            }
            ExprKind::Fact(Fact::Body(_)) => Ty::Dyn,
            ExprKind::Fact(_) => Ty::Str,
            ExprKind::Ref(_) => Ty::Bool,
            ExprKind::Not(inner) => {
                let t = self.ty(inner)?;
                self.expect(inner, t, Ty::Bool, "`not`")?;
                Ty::Bool
            }
            ExprKind::Exists(inner) => {
                self.ty(inner)?;
                if !matches!(inner.kind, ExprKind::Fact(_)) {
                    self.err(
                        Diag::error(Code::TypeMismatch, "`exists` applies to request facts")
                            .primary(inner.span, "not a fact")
                            .help("write e.g. `header[\"x-tenant\"] exists`"),
                    );
                    return None;
                }
                Ty::Bool
            }
            ExprKind::Call { func, args } => {
                if args.len() != 1 {
                    self.err(
                        Diag::error(
                            Code::TypeMismatch,
                            format!("`{}` takes one argument, given {}", func.as_str(), args.len()),
                        )
                        .primary(e.span, "wrong number of arguments")
                        .help(format!("write `{}(value)`", func.as_str())),
                    );
                    return None;
                }
                let t = self.ty(&args[0])?;
                let (ok, out) = match func {
                    Func::Lower | Func::Upper => (t.is(Ty::Str), Ty::Str),
                    Func::Number => (t.is(Ty::Str) || t == Ty::Num, Ty::Num),
                    Func::Len => (t.is(Ty::Str) || t == Ty::List, Ty::Num),
                };
                if !ok {
                    self.err(
                        Diag::error(Code::TypeMismatch, format!("`{}` cannot take {}", func.as_str(), t.name()))
                            .primary(args[0].span, format!("this is {}", t.name()))
                            .help(format!("`{}` takes a string", func.as_str())),
                    );
                    return None;
                }
                out
            }
            ExprKind::Binary { op, op_span, lhs, rhs } => {
                let l = self.ty(lhs);
                let r = self.ty(rhs);
                let (l, r) = (l?, r?);
                self.binary(*op, *op_span, lhs, l, rhs, r)?
            }
        })
    }

    fn expect(&mut self, e: &Expr, t: Ty, want: Ty, what: &str) -> Option<()> {
        if t.is(want) {
            return Some(());
        }
        self.err(
            Diag::error(Code::TypeMismatch, format!("{what} needs {}, found {}", want.name(), t.name()))
                .primary(e.span, format!("this is {}", t.name()))
                .help(if want == Ty::Bool {
                    "use a comparison here, e.g. `x == \"v\"`".to_string()
                } else {
                    format!("give {what} {}", want.name())
                }),
        );
        None
    }

    fn binary(&mut self, op: BinOp, op_span: Span, lhs: &Expr, l: Ty, rhs: &Expr, r: Ty) -> Option<Ty> {
        let mismatch = |this: &mut Self, help: &str| {
            this.err(
                Diag::error(
                    Code::TypeMismatch,
                    format!("`{}` cannot compare {} with {}", op.as_str(), l.name(), r.name()),
                )
                .primary(op_span, "mismatched operands")
                .secondary(lhs.span, l.name())
                .secondary(rhs.span, r.name())
                .help(help.to_string()),
            );
            None
        };
        if op != BinOp::Matches && (l == Ty::Regex || r == Ty::Regex) {
            let help = "a regex can only follow `matches`: write `x matches /re/`";
            return mismatch(self, help);
        }
        match op {
            BinOp::And | BinOp::Or => {
                self.expect(lhs, l, Ty::Bool, &format!("`{}`", op.as_str()))?;
                self.expect(rhs, r, Ty::Bool, &format!("`{}`", op.as_str()))?;
            }
            BinOp::Eq | BinOp::Ne | BinOp::BadAssign => {
                if !(l == r || l == Ty::Dyn || r == Ty::Dyn) {
                    let help = if (l, r) == (Ty::Str, Ty::Num) {
                        "convert the string first: `number(header[\"x\"]) == 5`"
                    } else {
                        "compare values of the same type"
                    };
                    return mismatch(self, help);
                }
            }
            BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => {
                // Numbers only: ordering text is lexicographic ("9000" < "5"), never what a
                // policy means, and a quoted number is the usual slip.
                if !(l.is(Ty::Num) && r.is(Ty::Num)) {
                    let quoted = [lhs, rhs].into_iter().find_map(|e| match &e.kind {
                        ExprKind::Lit(Lit::Str(s)) if value::plain_number(s).is_some() => Some(s.clone()),
                        _ => None,
                    });
                    let help = match quoted {
                        Some(n) => format!("write the number without quotes: `{n}`"),
                        None if l == Ty::Str || r == Ty::Str => {
                            "order comparisons take numbers; convert text first: `number(header[\"x\"]) > 5`"
                                .to_string()
                        }
                        None => "order comparisons take two numbers".to_string(),
                    };
                    return mismatch(self, &help);
                }
            }
            BinOp::Contains => {
                let ok = match l {
                    Ty::Str => r.is(Ty::Str),
                    Ty::List | Ty::Dyn => true,
                    _ => false,
                };
                if !ok {
                    return mismatch(self, "`contains` looks for a substring in a string, or an element in a list");
                }
                if !elements_meet(lhs, rhs) {
                    return mismatch(
                        self,
                        "no element of this list has the right side's type: it can never contain it",
                    );
                }
            }
            BinOp::In => {
                if !(r == Ty::List || r == Ty::Dyn) {
                    return mismatch(self, "`in` needs a list on its right: `x in [\"a\", \"b\"]`");
                }
                if !elements_meet(rhs, lhs) {
                    return mismatch(self, "no element of this list has the left side's type: it can never be in it");
                }
            }
            BinOp::StartsWith | BinOp::EndsWith => {
                if !(l.is(Ty::Str) && r.is(Ty::Str)) {
                    return mismatch(self, "this operator takes two strings");
                }
            }
            BinOp::Matches => {
                if r != Ty::Regex || !matches!(rhs.kind, ExprKind::Lit(Lit::Regex(_))) {
                    return mismatch(self, "write the regex after `matches` as a literal: `x matches /^gpt-4/`");
                }
                if !l.is(Ty::Str) {
                    return mismatch(self, "only strings can match a regex; convert numbers with a comparison instead");
                }
            }
        }
        Some(Ty::Bool)
    }

    /// Guards that refuse every request.
    fn contradictions(&mut self, r: &Route) {
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
    fn shadowing(&mut self) {
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

    fn test(&mut self, t: &Test) {
        let mut sent = false;
        for s in &t.stmts {
            match &s.kind {
                TestStmtKind::Send(send) => {
                    sent = true;
                    if !send.path.value.starts_with('/') {
                        self.err(
                            Diag::error(Code::TestInvalid, "a test request path must start with `/`")
                                .primary(send.path.span, "not an absolute path")
                                .help("write it like \"/v1/chat/completions\""),
                        );
                    }
                }
                TestStmtKind::Expect(e) => {
                    if !sent {
                        self.err(
                            Diag::error(Code::TestInvalid, "`expect` before any `send`")
                                .primary(s.span, "nothing was sent yet")
                                .help("put a `send` before the first `expect`"),
                        );
                    }
                    if let Expectation::Status { status, .. } = e {
                        self.status(*status, 100, "an expectation");
                    }
                }
                TestStmtKind::Advance(_) => {}
            }
        }
        if !sent {
            self.err(
                Diag::error(Code::TestInvalid, format!("test \"{}\" sends nothing", t.name.value))
                    .primary(t.name.span, "empty test")
                    .help("add `send METHOD \"/path\"` and an `expect`"),
            );
        }
    }
}

fn show_min(what: &str, min: u64) -> String {
    if what.contains("timeout") || what.contains("interval") || what.contains("ttl") {
        format!("{}ms", min / 1_000_000)
    } else {
        min.to_string()
    }
}

fn first_line(s: &str) -> String {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

fn always_refuses(span: Span, what: &str) -> Diag {
    Diag::error(Code::GuardContradiction, format!("{what} refuses every request"))
        .primary(span, "this guard always refuses")
        .help("to answer every request the same way, use `respond STATUS` as the route's action")
}

/// A `Value` made only of literals, joined; None if it names env vars.
fn literal_value(v: &Value) -> Option<String> {
    let mut out = String::new();
    for p in &v.parts {
        match p {
            ValuePart::Lit(s) => out.push_str(&s.value),
            ValuePart::Env(_) => return None,
        }
    }
    Some(out)
}

pub fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("no host");
    }
    if authority.contains('@') {
        return Err("credentials in the URL are not allowed; inject them with `header`");
    }
    if rest.contains(['?', '#', ' ']) {
        return Err("no query, fragment or spaces allowed");
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        if !authority.ends_with(']') && port.parse::<u16>().is_err() {
            return Err("the port is not a number from 0 to 65535");
        }
    }
    Ok(())
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

/// The static type of a literal or a fact (None for anything else: not known without checking).
fn simple_ty(e: &Expr) -> Option<Ty> {
    Some(match &e.kind {
        ExprKind::Lit(Lit::Str(_)) => Ty::Str,
        ExprKind::Lit(Lit::Int(_) | Lit::Float(_)) => Ty::Num,
        ExprKind::Lit(Lit::Bool(_)) => Ty::Bool,
        ExprKind::List(_) => Ty::List,
        ExprKind::Fact(Fact::Body(_)) => Ty::Dyn,
        ExprKind::Fact(_) => Ty::Str,
        _ => return None,
    })
}

/// For `list contains x` / `x in list` with a list literal: can `x` ever equal an element?
/// False only when every element's type is known and none is `x`'s (or a body value).
fn elements_meet(list: &Expr, needle: &Expr) -> bool {
    let (ExprKind::List(items), Some(n)) = (&list.kind, simple_ty(needle)) else { return true };
    if n == Ty::Dyn || items.is_empty() {
        return true;
    }
    items.iter().any(|i| simple_ty(i).is_none_or(|t| t == n || t == Ty::Dyn))
}

fn fact_eq_lit(e: &Expr) -> Option<(&Fact, &Lit)> {
    match &e.kind {
        ExprKind::Binary { op: BinOp::Eq, lhs, rhs, .. } => match (&lhs.kind, &rhs.kind) {
            (ExprKind::Fact(f), ExprKind::Lit(l)) | (ExprKind::Lit(l), ExprKind::Fact(f)) => Some((f, l)),
            _ => None,
        },
        _ => None,
    }
}

/// Does `a` match every request `b` matches (ignoring `b`'s condition)?
fn covers(a: &When, b: &When) -> bool {
    let methods =
        a.methods.contains(&Method::Any) || b.methods.iter().all(|m| *m != Method::Any && a.methods.contains(m));
    let host = match (&a.host, &b.host) {
        (None, _) => true,
        (Some(x), Some(y)) => x.value.eq_ignore_ascii_case(&y.value),
        _ => false,
    };
    methods && host && path_covers(&a.path.value, &b.path.value)
}

fn path_covers(a: &str, b: &str) -> bool {
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

/// Collect env vars the program names, read them, and report unset ones.
pub fn env_vars(
    items: &[Item],
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> (BTreeMap<String, Option<String>>, Vec<Diag>) {
    let mut values = BTreeMap::new();
    let mut diags = vec![];
    let mut visit = |v: &Value| {
        for p in &v.parts {
            if let ValuePart::Env(name) = p {
                if values.contains_key(&name.value) {
                    continue;
                }
                let val = env(&name.value);
                if val.is_none() {
                    let d = match mode {
                        Mode::Check => {
                            Diag::warning(Code::EnvUnset, format!("environment variable `{}` is not set", name.value))
                        }
                        Mode::Serve => {
                            Diag::error(Code::EnvUnset, format!("environment variable `{}` is not set", name.value))
                        }
                    };
                    diags.push(
                        d.primary(name.span, "read here")
                            .help(format!("set `{}` in the gateway's environment before `gw serve`", name.value)),
                    );
                }
                values.insert(name.value.clone(), val);
            }
        }
    };
    for item in items {
        match item {
            Item::Gateway(g) => {
                for s in &g.settings {
                    match &s.kind {
                        SettingKind::Listen(v) | SettingKind::Audit { path: v, .. } => visit(v),
                        SettingKind::Admin { addr, token } => {
                            visit(addr);
                            if let Some(t) = token {
                                visit(t);
                            }
                        }
                        SettingKind::State(StateStore::Redis { url, .. }) => visit(url),
                        SettingKind::Tls { cert, key } => {
                            visit(cert);
                            visit(key);
                        }
                        _ => {}
                    }
                }
            }
            Item::Upstream(u) => {
                for s in &u.stmts {
                    match &s.kind {
                        UpstreamStmtKind::Target(t) => visit(&t.url),
                        UpstreamStmtKind::Header { value, .. } => visit(value),
                        _ => {}
                    }
                }
            }
            Item::Keys(k) => {
                if let Some(s) = &k.salt {
                    visit(s);
                }
            }
            Item::Route(r) => {
                for s in &r.stmts {
                    match &s.kind {
                        RouteStmtKind::SetHeader { value, .. } => visit(value),
                        RouteStmtKind::Jwt { secret, .. } => visit(secret),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (values, diags)
}

/// Read every key set's file (relative to the file that declares it).
pub fn key_files(
    items: &[Item],
    sources: &mut Sources,
    loader: &dyn Loader,
    env: &BTreeMap<String, Option<String>>,
) -> (BTreeMap<String, LoadedKeys>, Vec<std::path::PathBuf>, Vec<Diag>) {
    let mut sets = BTreeMap::new();
    let mut files = vec![];
    let mut diags = vec![];
    for item in items {
        let Item::Keys(k) = item else { continue };
        let base = sources.get(k.span.file).and_then(|f| f.path.parent().map(Path::to_path_buf)).unwrap_or_default();
        let path = base.join(&k.file.value);
        files.push(path.clone());
        let salt = match &k.salt {
            Some(v) => {
                let mut out = String::new();
                let mut ok = true;
                for p in &v.parts {
                    match p {
                        ValuePart::Lit(s) => out.push_str(&s.value),
                        ValuePart::Env(n) => match env.get(&n.value).and_then(|v| v.as_deref()) {
                            Some(val) => out.push_str(val),
                            None => ok = false,
                        },
                    }
                }
                // An unset salt is reported as an env error; the set is loaded unsalted meanwhile.
                ok.then_some(out)
            }
            None => None,
        };
        let bytes = match loader.read(&path) {
            Ok(b) => b,
            Err(e) => {
                diags.push(
                    Diag::error(Code::KeysFileMissing, format!("cannot read key file `{}`", path.display()))
                        .primary(
                            k.file.span,
                            if e.kind() == std::io::ErrorKind::NotFound {
                                "no such file".to_string()
                            } else {
                                e.to_string()
                            },
                        )
                        .help("key file paths are relative to the policy file that names them"),
                );
                sets.insert(k.name.name.clone(), LoadedKeys::default());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (keys, errors) = LoadedKeys::parse(&text, salt);
        if !errors.is_empty() {
            let id = sources.add(&path, path.display().to_string(), text.into());
            for e in errors.iter().take(20) {
                diags.push(
                    Diag::error(Code::KeysFileMalformed, format!("line {} of key file `{}`: {}", e.line, path.display(), e.reason))
                        .primary(Span::new(id, e.start, e.end), "malformed entry")
                        .secondary(k.file.span, "key file named here")
                        .help("each line is `<sha256-hex> <tenant> <key-name>`; make a hash with `printf '%s' \"$KEY\" | sha256sum`"),
                );
            }
        }
        sets.insert(k.name.name.clone(), keys);
    }
    (sets, files, diags)
}

/// Lints: warnings about a policy that compiles but likely does not do what was meant. They
/// run only on a policy without errors (until then they would be noise), after the key files
/// are read.
pub fn lints(items: &[Item], keysets: &BTreeMap<String, LoadedKeys>) -> Vec<Diag> {
    let mut out = vec![];
    for item in items {
        if let Item::Route(r) = item {
            auth_unspecified(r, &mut out);
        }
    }
    unknown_identities(items, keysets, &mut out);
    out
}

/// A route that forwards must say who may call it: `auth KEYSET`, or `auth none` when it is
/// public on purpose. (`jwt` counts as saying so; serve mode refuses it on its own.)
fn auth_unspecified(r: &Route, out: &mut Vec<Diag>) {
    let says = r
        .stmts
        .iter()
        .any(|s| matches!(s.kind, RouteStmtKind::Auth(_) | RouteStmtKind::AuthNone | RouteStmtKind::Jwt { .. }));
    let Some(to) = r.stmts.iter().find(|s| matches!(s.kind, RouteStmtKind::To(_))).filter(|_| !says) else {
        return;
    };
    out.push(
        Diag::warning(
            Code::AuthUnspecified,
            format!("route `{}` forwards without saying who may call it", r.name.name),
        )
        .primary(r.name.span, "no `auth` in this route")
        .secondary(to.span, "anyone who can reach the gateway is forwarded here")
        .help("add `auth KEYSET` to require a key, or `auth none` if this route is public on purpose"),
    );
}

/// `tenant == "nobody"` where no key file and no `tenant` block names `nobody` is a typo that
/// silently disables a rule; so is a key name no key file lists. (Lints run once every key
/// file was read without error, so the names they list are all there are.)
fn unknown_identities(items: &[Item], keysets: &BTreeMap<String, LoadedKeys>, out: &mut Vec<Diag>) {
    let mut tenants: Vec<&str> = keysets.values().flat_map(|k| k.tenants()).collect();
    tenants.extend(items.iter().filter_map(|i| match i {
        Item::Tenant(t) => Some(t.name.name.as_str()),
        _ => None,
    }));
    tenants.sort_unstable();
    tenants.dedup();
    let mut keys: Vec<&str> = keysets.values().flat_map(|k| k.key_names()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut exprs: Vec<&Expr> = vec![];
    for item in items {
        match item {
            Item::Matcher(m) => exprs.push(&m.expr),
            Item::Route(r) => r.stmts.iter().for_each(|s| exprs.extend(stmt_exprs(&s.kind))),
            _ => {}
        }
    }
    for e in exprs {
        walk(e, &mut |sub| {
            let ExprKind::Binary { op, lhs, rhs, .. } = &sub.kind else { return };
            if !matches!(op, BinOp::Eq | BinOp::Ne | BinOp::In) {
                return;
            }
            let (fact, names) = match (&lhs.kind, &rhs.kind) {
                (ExprKind::Fact(f @ (Fact::Tenant | Fact::Key)), _) => (f, &**rhs),
                (_, ExprKind::Fact(f @ (Fact::Tenant | Fact::Key))) if *op != BinOp::In => (f, &**lhs),
                _ => return,
            };
            let literals: Vec<&Expr> = match &names.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![names],
            };
            let (what, known, source) = match fact {
                Fact::Tenant => ("tenant", &tenants, "no key file and no `tenant` block names it"),
                _ => ("key", &keys, "no key file lists a key by that name"),
            };
            for lit in literals {
                let ExprKind::Lit(Lit::Str(name)) = &lit.kind else { continue };
                if known.binary_search(&name.as_str()).is_ok() {
                    continue;
                }
                let known_list = if known.is_empty() {
                    format!("no {what} is known")
                } else {
                    let shown: Vec<&str> = known.iter().take(10).copied().collect();
                    format!("known {what}s: {}{}", shown.join(", "), if known.len() > 10 { ", ..." } else { "" })
                };
                let help = match crate::diagnostics::did_you_mean(name, known.iter().copied()) {
                    Some(dym) => format!("{dym} ({known_list})"),
                    None => format!("{known_list}; a typo here silently disables the rule"),
                };
                out.push(
                    Diag::warning(Code::UnknownIdentity, format!("no {what} is named `{name}`"))
                        .primary(
                            lit.span,
                            if *op == BinOp::Ne {
                                format!("{source}, so this is always true")
                            } else {
                                format!("{source}, so this never matches")
                            },
                        )
                        .help(help),
                );
            }
        });
    }
}
