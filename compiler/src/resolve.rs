//! Stage 2: names. Duplicate definitions and settings, references to things that do not
//! exist (with did-you-mean), matcher cycles, and definitions nothing uses.

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::diagnostics::{did_you_mean, Code, Diag};
use crate::source::Span;

/// Names defined by the program, by kind.
#[derive(Debug, Default)]
pub struct Names {
    pub upstreams: HashMap<String, Span>,
    pub keysets: HashMap<String, Span>,
    pub tenants: HashMap<String, Span>,
    pub matchers: HashMap<String, Span>,
    pub limits: HashMap<String, Span>,
    pub routes: HashMap<String, Span>,
}

pub fn resolve(items: &[Item]) -> (Names, Vec<Diag>) {
    let (names, mut diags) = define(items);
    let used = references(items, &names, &mut diags);
    diags.extend(matcher_cycles(items));
    diags.extend(unused(items, &used));
    diags.retain(|d| !(d.code == Code::Unused && d.message.contains("`_")));
    (names, diags)
}

/// The definitions something refers to, by (kind, name): what the unused-definition check reads.
type Used = HashSet<(&'static str, String)>;

/// Pass 1: the name table, with duplicate definitions and duplicate settings reported.
fn define(items: &[Item]) -> (Names, Vec<Diag>) {
    let mut names = Names::default();
    let mut diags = vec![];
    let mut tests: HashMap<String, Span> = HashMap::new();
    let mut gateway: Option<Span> = None;

    for item in items {
        let (table, kind, ident) = match item {
            Item::Upstream(u) => (&mut names.upstreams, "upstream", &u.name),
            // Key, `jwt` and `basic` sets share one namespace: `auth NAME` names any of them.
            Item::Keys(k) => (&mut names.keysets, "key set", &k.name),
            Item::Jwt(j) => (&mut names.keysets, "jwt set", &j.name),
            Item::Basic(b) => (&mut names.keysets, "basic set", &b.name),
            Item::Tenant(t) => (&mut names.tenants, "tenant", &t.name),
            Item::Matcher(m) => (&mut names.matchers, "matcher", &m.name),
            Item::Limit(l) => (&mut names.limits, "limit", &l.name),
            Item::Route(r) => (&mut names.routes, "route", &r.name),
            Item::Test(t) => {
                if let Some(first) = tests.get(&t.name.value) {
                    diags.push(duplicate("test", &t.name.value, t.name.span, *first));
                } else {
                    tests.insert(t.name.value.clone(), t.name.span);
                }
                continue;
            }
            Item::Gateway(g) => {
                match gateway {
                    Some(first) => diags.push(
                        Diag::error(Code::DuplicateGateway, "more than one `gateway` block")
                            .primary(head(g.span, 7), "second `gateway` block")
                            .secondary(head(first, 7), "first `gateway` block")
                            .help("merge the settings into one `gateway` block"),
                    ),
                    None => gateway = Some(g.span),
                }
                diags.extend(duplicate_settings(g.settings.iter().map(|s| (s.kind.keyword(), s.span)), "gateway"));
                continue;
            }
            Item::Import(_) => continue,
        };
        match table.get(&ident.name) {
            Some(first) => diags.push(duplicate(kind, &ident.name, ident.span, *first)),
            None => {
                table.insert(ident.name.clone(), ident.span);
            }
        }
        match item {
            Item::Upstream(u) => diags.extend(duplicate_settings(
                u.stmts
                    .iter()
                    .filter(|s| !matches!(s.kind, UpstreamStmtKind::Target(_) | UpstreamStmtKind::Header { .. }))
                    .map(|s| (s.kind.keyword(), s.span)),
                "upstream",
            )),
            Item::Tenant(t) => {
                diags.extend(duplicate_settings(t.stmts.iter().map(|s| (s.kind.keyword(), s.span)), "tenant"))
            }
            Item::Jwt(j) => diags.extend(duplicate_settings(j.stmts.iter().map(|s| (s.kind.keyword(), s.span)), "jwt")),
            _ => {}
        }
    }

    (names, diags)
}

/// Pass 2: every reference checked against the table (with did-you-mean); returns what is used.
fn references(items: &[Item], names: &Names, diags: &mut Vec<Diag>) -> Used {
    let mut used = Used::new();
    for item in items {
        match item {
            Item::Route(r) => {
                for stmt in &r.stmts {
                    match &stmt.kind {
                        RouteStmtKind::To(u) => {
                            used.insert(("upstream", u.name.clone()));
                            check_ref(&names.upstreams, u, Code::UndefinedUpstream, "upstream", diags);
                        }
                        RouteStmtKind::Auth(a) => {
                            for m in &a.methods {
                                used.insert(("keys", m.set.name.clone()));
                                check_ref(&names.keysets, &m.set, Code::UndefinedKeys, "key set", diags);
                            }
                        }
                        RouteStmtKind::Cors(c) => {
                            diags.extend(duplicate_settings(c.clauses.iter().copied(), "cors"));
                        }
                        RouteStmtKind::LimitUse { name, .. } => {
                            used.insert(("limit", name.name.clone()));
                            check_ref(&names.limits, name, Code::UndefinedLimit, "shared limit", diags);
                        }
                        _ => {}
                    }
                    for e in stmt_exprs(&stmt.kind) {
                        refs(e, names, &mut used, diags);
                    }
                }
            }
            Item::Matcher(m) => refs(&m.expr, names, &mut used, diags),
            Item::Upstream(u) => {
                for s in &u.stmts {
                    match &s.kind {
                        UpstreamStmtKind::Affinity(e) | UpstreamStmtKind::Balance(Balance::Hash(e)) => {
                            refs(e, names, &mut used, diags)
                        }
                        _ => {}
                    }
                }
            }
            Item::Test(t) => {
                for s in &t.stmts {
                    let TestStmtKind::Expect(e) = &s.kind else { continue };
                    let (table, kind, id) = match e {
                        Expectation::Route(id) => (&names.routes, "route", id),
                        Expectation::Upstream(id) => (&names.upstreams, "upstream", id),
                        Expectation::Tenant(id) => (&names.tenants, "tenant", id),
                        Expectation::Limit { tenant: false, name } => (&names.limits, "shared limit", name),
                        Expectation::Status { .. }
                        | Expectation::Cache { .. }
                        | Expectation::Claim { .. }
                        | Expectation::Header { .. }
                        | Expectation::Body(_)
                        | Expectation::Limit { tenant: true, .. } => continue,
                    };
                    // A tenant named only in key files is still a tenant: tests may name it.
                    if kind == "tenant" {
                        continue;
                    }
                    let code = if kind == "shared limit" { Code::UndefinedLimit } else { Code::UndefinedName };
                    check_ref(table, id, code, kind, diags);
                }
            }
            _ => {}
        }
    }

    used
}

/// Pass 3: definitions of the root policy that nothing uses.
fn unused(items: &[Item], used: &Used) -> Vec<Diag> {
    let mut diags = vec![];
    // A policy without routes is a library module meant for `import`: its definitions are
    // used by the policies that import it, so none is reported as unused.
    let is_module = !items.iter().any(|i| matches!(i, Item::Route(_)));
    // Definitions of imported files are a library's offer, not the root policy's own: only the
    // root file's (always the first file read) unused definitions are reported.
    let root = crate::source::FileId(0);
    for item in items.iter().filter(|i| !is_module && i.span().file == root) {
        let (kind, key, ident) = match item {
            Item::Upstream(u) => ("upstream", "upstream", &u.name),
            Item::Keys(k) => ("key set", "keys", &k.name),
            Item::Jwt(j) => ("jwt set", "keys", &j.name),
            Item::Basic(b) => ("basic set", "keys", &b.name),
            Item::Matcher(m) => ("matcher", "matcher", &m.name),
            Item::Limit(l) => ("shared limit", "limit", &l.name),
            _ => continue,
        };
        if !used.contains(&(key, ident.name.clone())) {
            diags.push(
                Diag::warning(Code::Unused, format!("{kind} `{}` is never used", ident.name))
                    .primary(ident.span, "defined here, used nowhere")
                    .help("remove it, or refer to it from a route; a name starting with `_` is exempt"),
            );
        }
    }
    diags
}

/// The span of an item's leading keyword.
fn head(span: Span, len: u32) -> Span {
    Span { end: (span.start + len).min(span.end), ..span }
}

fn duplicate(kind: &str, name: &str, span: Span, first: Span) -> Diag {
    Diag::error(Code::Duplicate, format!("{kind} `{name}` is defined twice"))
        .primary(span, "defined again here")
        .secondary(first, "first defined here")
        .help("rename one of them, or remove the second definition")
}

fn duplicate_settings(stmts: impl Iterator<Item = (&'static str, Span)>, block: &str) -> Vec<Diag> {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut diags = vec![];
    for (kw, span) in stmts {
        match seen.get(kw) {
            Some(first) => diags.push(
                Diag::error(Code::DuplicateSetting, format!("`{kw}` is set twice in this {block} block"))
                    .primary(span, "set again here")
                    .secondary(*first, "first set here")
                    .help(format!("keep one `{kw}`")),
            ),
            None => {
                seen.insert(kw, span);
            }
        }
    }
    diags
}

fn check_ref(table: &HashMap<String, Span>, id: &Ident, code: Code, kind: &str, diags: &mut Vec<Diag>) {
    if table.contains_key(&id.name) {
        return;
    }
    let mut d =
        Diag::error(code, format!("no {kind} named `{}`", id.name)).primary(id.span, format!("undefined {kind}"));
    d = match did_you_mean(&id.name, table.keys().map(String::as_str)) {
        Some(h) => d.help(h),
        None if table.is_empty() => d.help(format!("define it with `{}`", define_hint(kind, &id.name))),
        None => {
            let mut known: Vec<&str> = table.keys().map(String::as_str).collect();
            known.sort_unstable();
            d.help(format!("defined {kind}s: {}", known.join(", ")))
        }
    };
    diags.push(d);
}

fn define_hint(kind: &str, name: &str) -> String {
    match kind {
        "upstream" => format!("upstream {name} {{ target \"http://127.0.0.1:8000\" }}"),
        "key set" => format!("keys {name} from \"keys/{name}.keys\""),
        "matcher" => format!("matcher {name} = EXPR"),
        "shared limit" => format!("limit {name} rate 10/s per tenant"),
        "route" => format!("route {name} {{ ... }}"),
        _ => format!("{kind} {name} {{ ... }}"),
    }
}

/// The expressions in a route statement.
pub fn stmt_exprs(kind: &RouteStmtKind) -> Vec<&Expr> {
    match kind {
        RouteStmtKind::When(w) => w.cond.iter().collect(),
        RouteStmtKind::Allow { cond, .. } | RouteStmtKind::Deny { cond, .. } => vec![cond],
        RouteStmtKind::LimitUse { cond, .. } => cond.iter().collect(),
        RouteStmtKind::Limit(l) => {
            let mut v: Vec<&Expr> = l.cond.iter().collect();
            if let LimitKey::Expr(e) = &l.per {
                v.push(e);
            }
            v
        }
        _ => vec![],
    }
}

/// The templates of a route statement (values that may read the request).
pub fn stmt_templates(kind: &RouteStmtKind) -> Vec<&Value> {
    fn json<'a>(j: &'a JsonT, out: &mut Vec<&'a Value>) {
        match j {
            JsonT::Scalar(_) => {}
            JsonT::Text(v) => out.push(v),
            JsonT::Array(items) => items.iter().for_each(|i| json(i, out)),
            JsonT::Object(kv) => kv.iter().for_each(|(_, v)| json(v, out)),
        }
    }
    match kind {
        RouteStmtKind::SetHeader { value, .. } => vec![value],
        RouteStmtKind::Respond { body, headers, .. } => {
            let mut out: Vec<&Value> = headers.iter().map(|(_, v)| v).collect();
            match body {
                Some(ResponseBody::Text(v)) => out.push(v),
                Some(ResponseBody::JsonTemplate(j)) => json(&j.value, &mut out),
                Some(ResponseBody::Json(_)) | None => {}
            }
            out
        }
        _ => vec![],
    }
}

/// Visit every sub-expression, outermost first.
pub fn walk<'a>(e: &'a Expr, f: &mut dyn FnMut(&'a Expr)) {
    f(e);
    match &e.kind {
        ExprKind::List(items) => items.iter().for_each(|i| walk(i, f)),
        ExprKind::Not(i) | ExprKind::Exists(i) => walk(i, f),
        ExprKind::Binary { lhs, rhs, .. } => {
            walk(lhs, f);
            walk(rhs, f);
        }
        ExprKind::Call { args, .. } => args.iter().for_each(|a| walk(a, f)),
        ExprKind::Lit(_) | ExprKind::Fact(_) | ExprKind::Ref(_) => {}
    }
}

fn refs(e: &Expr, names: &Names, used: &mut HashSet<(&'static str, String)>, diags: &mut Vec<Diag>) {
    walk(e, &mut |sub| {
        if let ExprKind::Ref(id) = &sub.kind {
            used.insert(("matcher", id.name.clone()));
            check_ref(&names.matchers, id, Code::UndefinedMatcher, "matcher", diags);
        }
    });
}

fn matcher_cycles(items: &[Item]) -> Vec<Diag> {
    let matchers: HashMap<&str, &Matcher> = items
        .iter()
        .filter_map(|i| match i {
            Item::Matcher(m) => Some((m.name.name.as_str(), m)),
            _ => None,
        })
        .collect();
    let mut diags = vec![];
    let mut done: HashSet<&str> = HashSet::new();
    let mut names: Vec<&str> = matchers.keys().copied().collect();
    names.sort_unstable();
    for start in names {
        // Iterative DFS with an explicit path, so long chains cannot overflow the stack.
        let mut path: Vec<(&str, Vec<(&str, Span)>)> = vec![];
        let deps = |name: &str| -> Vec<(&str, Span)> {
            let mut out = vec![];
            if let Some(m) = matchers.get(name) {
                walk(&m.expr, &mut |e| {
                    if let ExprKind::Ref(id) = &e.kind {
                        if let Some((k, _)) = matchers.get_key_value(id.name.as_str()) {
                            out.push((*k, id.span));
                        }
                    }
                });
            }
            out
        };
        if done.contains(start) {
            continue;
        }
        path.push((start, deps(start)));
        while let Some((name, pending)) = path.last_mut() {
            let name = *name;
            match pending.pop() {
                None => {
                    done.insert(name);
                    path.pop();
                }
                Some((next, span)) => {
                    if let Some(pos) = path.iter().position(|(n, _)| *n == next) {
                        let cycle: Vec<&str> = path[pos..].iter().map(|(n, _)| *n).chain([next]).collect();
                        diags.push(
                            Diag::error(Code::MatcherCycle, format!("matcher `{next}` refers to itself"))
                                .primary(span, "this reference closes the cycle")
                                .help(format!("the cycle is {}; a matcher cannot depend on itself", cycle.join(" → "))),
                        );
                        done.insert(next);
                    } else if !done.contains(next) {
                        path.push((next, deps(next)));
                    }
                }
            }
        }
    }
    diags
}
