//! The reference evaluator: the meaning of a policy, written for clarity, not speed. It walks
//! the validated program's routes in order and evaluates expressions by plain recursion. The
//! decision graph must give the same `Decision` for every request (see `Decision::same_decision`);
//! property tests and a fuzz target hold it to that.

use crate::ast::*;
use crate::ijson::{self, BodyError};
use crate::program::{Program, SetKind};
pub use crate::request::{refused_before_body_note, DEFAULT_ALLOW_MESSAGE, INVALID_KEY, MISSING_KEY};
use crate::request::{AppliedLimit, Decision, Identity, Outcome, Request, TraceStep};
use crate::value::{self, Undecided, Val};
use gw_engine::cors;

/// Decide what the policy does with `req`.
pub fn decide(program: &Program, req: &Request) -> Decision {
    if let Some(refused) = refused_before_body(program, req) {
        return refused;
    }
    let host = req.routing_host();
    let body = parse_body(req);
    let mut trace = vec![];
    let mut allowed_methods: Vec<String> = vec![];
    let asked = cors::is_preflight(req).then(|| req.header("access-control-request-method").unwrap_or("").trim());

    for (index, route) in program.routes().enumerate() {
        let Some(when) = route.when() else { continue };
        if !host_matches(when.host.as_ref().map(|h| h.value.as_str()), &host) {
            continue;
        }
        let Some(params) = match_path(&when.path.value, &req.path) else { continue };
        // A CORS preflight is answered by the first route with `cors` that accepts the method
        // it asks about (or OPTIONS itself), before its condition and without credentials.
        if let (Some(asked), Some(c)) = (asked, route.cors()) {
            if method_matches(&when.methods, asked) || method_matches(&when.methods, &req.method) {
                let (allowed, message) = match program.cors_policy(route, c).check_preflight(req) {
                    Ok(()) => (true, String::new()),
                    Err(m) => (false, m),
                };
                trace.push(step("route", format!("`{}` answers the CORS preflight", route.name.name)));
                let mut d = Decision::new(Outcome::Preflight { allowed, message });
                d.route = Some(route.name.name.clone());
                d.route_index = Some(index);
                d.params = params;
                d.trace = trace;
                return d;
            }
        }
        if !method_matches(&when.methods, &req.method) {
            for m in &when.methods {
                let m = m.as_str().to_string();
                if !allowed_methods.contains(&m) {
                    allowed_methods.push(m);
                }
            }
            continue;
        }
        let ctx = Ctx { program, req, host: &host, body: &body, params: &params, identity: None };
        let mut d = match when.cond.as_ref().map(|c| eval(&ctx, c).truth()) {
            Some(Ok(false)) => {
                trace.push(step("route", format!("`{}` matches the path but its condition is false", route.name.name)));
                continue;
            }
            Some(Err(u)) => {
                trace
                    .push(step("route", format!("`{}`'s condition cannot be decided: {}", route.name.name, u.message)));
                Decision::invalid(u)
            }
            _ => {
                trace.push(step("route", format!("`{}` matches", route.name.name)));
                decide_route(program, route, ctx, &mut trace)
            }
        };
        d.route = Some(route.name.name.clone());
        d.route_index = Some(index);
        d.params = params;
        d.trace = trace;
        return d;
    }
    let mut d = if allowed_methods.is_empty() {
        trace.push(step("route", "no route matches".to_string()));
        Decision::new(Outcome::NoRoute)
    } else {
        trace.push(step("route", format!("the path matches routes for {} only", allowed_methods.join(", "))));
        Decision::new(Outcome::MethodNotAllowed { allowed: allowed_methods })
    };
    d.trace = trace;
    d
}

/// The credential is checked before the body is read: when every route the request's method,
/// host and path could select, whatever its body, refuses its credential, the answer is that
/// 401 without looking further. The candidates run in order up to the first without a
/// condition (nothing after it can be selected); the refusal given is the first `invalid API
/// key` among them, else the first. None when a candidate accepts the credential, has no
/// `auth`, or has `auth optional` and no credential was sent.
pub fn refused_before_body(program: &Program, req: &Request) -> Option<Decision> {
    let host = req.routing_host();
    let candidates = || {
        program.routes().enumerate().filter_map(|(index, route)| {
            let when = route.when()?;
            if !host_matches(when.host.as_ref().map(|h| h.value.as_str()), &host) {
                return None;
            }
            let params = match_path(&when.path.value, &req.path)?;
            Some((index, route, when, params))
        })
    };
    // A preflight to a CORS route is answered without credentials.
    if cors::is_preflight(req) && candidates().any(|(_, r, _, _)| r.cors().is_some()) {
        return None;
    }
    // (route index, its path params, whether a credential was refused, the message) of each
    // candidate, in order.
    let mut refusals = vec![];
    for (index, route, when, params) in candidates() {
        if !method_matches(&when.methods, &req.method) {
            continue;
        }
        let (invalid, message) = match authenticate(program, route.auth()?, req) {
            Ok(_) => return None,
            Err(refusal) => refusal,
        };
        refusals.push((index, params, invalid, message));
        if when.cond.is_none() {
            break;
        }
    }
    let pick = refusals.iter().position(|r| r.2).unwrap_or(0);
    let (index, params, _, message) = refusals.into_iter().nth(pick)?;
    let route = program.routes().nth(index)?;
    let mut d = Decision::new(Outcome::Unauthorized { message: message.clone() });
    d.trace = vec![step("auth", refused_before_body_note(&message))];
    d.route = Some(route.name.name.clone());
    d.route_index = Some(index);
    d.params = params;
    Some(d)
}

fn step(step: &str, detail: String) -> TraceStep {
    TraceStep { step: step.to_string(), detail }
}

/// Everything after the route is chosen: auth, guards, limits, action.
fn decide_route<'a>(program: &'a Program, route: &'a Route, mut ctx: Ctx<'a>, trace: &mut Vec<TraceStep>) -> Decision {
    if let Some(auth) = route.auth() {
        match authenticate(program, auth, ctx.req) {
            Ok(Some(id)) => {
                trace.push(step("auth", format!("`{}` of `{}`, tenant `{}`", id.key_name, id.keys, id.tenant)));
                ctx.identity = Some(id);
            }
            Ok(None) => trace.push(step("auth", "no credential; auth is optional".to_string())),
            Err((_, message)) => {
                trace.push(step("auth", message.clone()));
                return Decision::new(Outcome::Unauthorized { message });
            }
        }
    }
    let identity = ctx.identity.clone().map(std::sync::Arc::new);
    let with_identity = |mut d: Decision| {
        d.identity = identity.clone();
        d
    };
    let undecided = |trace: &mut Vec<TraceStep>, what: &str, u: Undecided| {
        trace.push(step(what, format!("cannot be decided: {}", u.message)));
        with_identity(Decision::invalid(u))
    };

    // A route whose decision reads the body takes only a body the strict reader accepts,
    // whichever of its expressions this request happens to evaluate.
    if let Err(e) = ctx.body {
        if route_needs_body(program, route) {
            return undecided(trace, "body", e.clone());
        }
    }

    for stmt in &route.stmts {
        match &stmt.kind {
            RouteStmtKind::Deny { status, message, cond } => match eval(&ctx, cond).truth() {
                Ok(false) => {}
                Ok(true) => {
                    trace.push(step("guard", format!("deny {} \"{}\": condition holds", status.value, message.value)));
                    return with_identity(Decision::new(Outcome::Denied {
                        status: status.value as u16,
                        message: message.value.clone(),
                    }));
                }
                Err(u) => return undecided(trace, "guard", u),
            },
            RouteStmtKind::Allow { cond, status, message } => match eval(&ctx, cond).truth() {
                Ok(true) => {}
                Ok(false) => {
                    let status = status.map(|s| s.value as u16).unwrap_or(403);
                    let message =
                        message.as_ref().map(|m| m.value.clone()).unwrap_or_else(|| DEFAULT_ALLOW_MESSAGE.to_string());
                    trace.push(step("guard", format!("allow: condition is false, refused with {status}")));
                    return with_identity(Decision::new(Outcome::Denied { status, message }));
                }
                Err(u) => return undecided(trace, "guard", u),
            },
            _ => {}
        }
    }

    let mut limits = vec![];
    // The ordinal of a route's own limit among its own limits (its identity).
    let mut ordinal = 0;
    for stmt in &route.stmts {
        let limit = match &stmt.kind {
            RouteStmtKind::Limit(limit) => limit,
            RouteStmtKind::LimitUse { name, cond } => {
                let Some(shared) = program.shared_limit(&name.name) else { continue };
                if let Some(cond) = cond {
                    match eval(&ctx, cond).truth() {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(u) => return undecided(trace, "limit", u),
                    }
                }
                match limit_key(&ctx, &shared.per) {
                    Ok(key) => limits.push((shared_limit_id(shared), key)),
                    Err(u) => return undecided(trace, "limit", u),
                }
                continue;
            }
            _ => continue,
        };
        let i = ordinal;
        ordinal += 1;
        if let Some(cond) = &limit.cond {
            match eval(&ctx, cond).truth() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(u) => return undecided(trace, "limit", u),
            }
        }
        if let Some(model) = &limit.model {
            let m = fact(&ctx, &Fact::Body(vec![PathSeg::Field("model".into())]));
            let Ok(re) = value::build_regex(&model.pattern, model.case_insensitive) else { continue };
            match value::regex_match(&re, &m).truth() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(u) => return undecided(trace, "limit", u),
            }
        }
        let key = match limit_key(&ctx, &limit.per) {
            Ok(k) => k,
            Err(u) => return undecided(trace, "limit", u),
        };
        limits.push((route_limit_id(&route.name.name, i, limit), key));
    }
    if let Some(id) = &ctx.identity {
        limits.extend(tenant_limits(program, &id.tenant).into_iter().map(|lid| (lid, id.tenant.clone())));
    }
    let table = limit_table(program);
    let applied: Vec<AppliedLimit> = limits
        .into_iter()
        .filter_map(|(id, key)| {
            table.iter().position(|t| *t == id).map(|limit| AppliedLimit { limit, id: id.into(), key })
        })
        .collect();
    for l in &applied {
        trace.push(step("limit", format!("{} keyed by `{}`", l.id, l.key)));
    }

    let outcome = route
        .stmts
        .iter()
        .find_map(|s| match &s.kind {
            RouteStmtKind::To(u) => Some(Outcome::Forward { upstream: u.name.clone() }),
            RouteStmtKind::Respond { status, .. } => Some(Outcome::Respond { status: status.value as u16 }),
            RouteStmtKind::Serve(b) => Some(Outcome::Serve { builtin: b.builtin }),
            _ => None,
        })
        .unwrap_or(Outcome::NoRoute);
    trace.push(step("action", format!("{outcome:?}")));
    let mut d = with_identity(Decision::new(outcome));
    d.limits = applied;
    d
}

/// The credential the client presented to one set, from the first source that has one.
pub fn credential<'r>(via: &[Credential], req: &'r Request) -> Option<&'r str> {
    via.iter().find_map(|c| match c {
        Credential::Basic(_) => req.header("authorization").map(str::trim).filter(|v| {
            let scheme = v.split(' ').next().unwrap_or("");
            v.contains(' ') && scheme.eq_ignore_ascii_case("basic")
        }),
        Credential::Header(h) => req.header(&h.value).map(str::trim).filter(|v| !v.is_empty()),
        Credential::Bearer(_) => req
            .header("authorization")
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty()),
        Credential::Query(q) => req.query_param(&q.value).filter(|v| !v.is_empty()),
    })
}

/// Try the route's credential sets in order: the first that accepts the request gives the
/// identity; with none, the refusal (whether a credential was presented, and the message).
fn authenticate(program: &Program, auth: &Auth, req: &Request) -> Result<Option<Identity>, (bool, String)> {
    let (missing, invalid) = program.auth_messages(auth);
    let mut presented = false;
    for m in &auth.methods {
        let Some(c) = credential(&program.auth_sources(m), req) else { continue };
        presented = true;
        if let Some(id) = verify(program, &m.set.name, c, req) {
            return Ok(Some(id));
        }
    }
    if presented {
        Err((true, invalid))
    } else if auth.optional {
        Ok(None)
    } else {
        Err((false, missing))
    }
}

fn verify(program: &Program, set: &str, credential: &str, req: &Request) -> Option<Identity> {
    let keys = set.to_string();
    match program.set_kind(set).unwrap_or(SetKind::Keys) {
        SetKind::Keys => {
            let e = program.keysets.get(set)?.lookup(credential)?;
            Some(Identity { keys, tenant: e.tenant.clone(), key_name: e.name.clone(), claims: None })
        }
        SetKind::Jwt => {
            let v = program.jwtsets.get(set)?.verify(credential, req.unix_now())?;
            Some(Identity { keys, tenant: v.tenant, key_name: v.subject, claims: Some(std::sync::Arc::new(v.claims)) })
        }
        SetKind::Basic => {
            let (tenant, users) = program.basicsets.get(set)?;
            let (user, password) = gw_engine::basic::basic_credential(credential)?;
            users.verify(&user, &password).then(|| Identity {
                keys,
                tenant: tenant.clone(),
                key_name: user,
                claims: None,
            })
        }
    }
}

/// The stable identity of a route limit: changes when the limit's meaning changes.
pub fn route_limit_id(route: &str, index: usize, limit: &Limit) -> String {
    let kind = match &limit.kind {
        LimitKind::Rate { rate, burst } => {
            format!("rate:{}/{}ns:b{}", rate.count, rate.window_ns, burst.map(|b| b.value).unwrap_or(0))
        }
        LimitKind::Tokens { rate, .. } => format!("tokens:{}/{}ns", rate.count, rate.window_ns),
        LimitKind::Concurrent(n) => format!("concurrent:{}", n.value),
    };
    let per = match &limit.per {
        LimitKey::Route => "route".to_string(),
        LimitKey::Key => "key".to_string(),
        LimitKey::Tenant => "tenant".to_string(),
        LimitKey::Client => "client".to_string(),
        LimitKey::Header(h) => format!("header:{}", h.value),
        LimitKey::Expr(_) => "expr".to_string(),
    };
    format!("route:{route}#{index}:{kind}:per:{per}")
}

pub fn tenant_limit_id(tenant: &str, stmt: &TenantStmtKind) -> Option<String> {
    Some(match stmt {
        TenantStmtKind::Rate { rate, burst } => {
            format!("tenant:{tenant}:rate:{}/{}ns:b{}", rate.count, rate.window_ns, burst.map(|b| b.value).unwrap_or(0))
        }
        TenantStmtKind::Tokens(rate) => format!("tenant:{tenant}:tokens:{}/{}ns", rate.count, rate.window_ns),
        TenantStmtKind::Concurrent(n) => format!("tenant:{tenant}:concurrent:{}", n.value),
        TenantStmtKind::Region(_) => return None,
    })
}

/// The limit ids a tenant is charged to: its own block's, then those of `tenant *` for each
/// kind of limit (rate, tokens, concurrent) its own block does not set.
pub fn tenant_limits(program: &Program, tenant: &str) -> Vec<String> {
    let mut ids = vec![];
    let mut own_kinds = vec![];
    if let Some(t) = program.tenant(tenant) {
        for stmt in &t.stmts {
            if let Some(lid) = tenant_limit_id(&t.name.name, &stmt.kind) {
                own_kinds.push(stmt.kind.keyword());
                ids.push(lid);
            }
        }
    }
    if let Some(every) = program.tenant(EVERY_TENANT) {
        for stmt in every.stmts.iter().filter(|s| !own_kinds.contains(&s.kind.keyword())) {
            ids.extend(tenant_limit_id(EVERY_TENANT, &stmt.kind));
        }
    }
    ids
}

/// The stable identity of a shared limit: its name and what it counts, per what (never the
/// routes that use it).
pub fn shared_limit_id(l: &SharedLimit) -> String {
    let kind = match &l.kind {
        LimitKind::Rate { rate, burst } => {
            format!("rate:{}/{}ns:b{}", rate.count, rate.window_ns, burst.map(|b| b.value).unwrap_or(0))
        }
        LimitKind::Tokens { rate, .. } => format!("tokens:{}/{}ns", rate.count, rate.window_ns),
        LimitKind::Concurrent(n) => format!("concurrent:{}", n.value),
    };
    let per = match &l.per {
        LimitKey::Key => "key".to_string(),
        LimitKey::Tenant => "tenant".to_string(),
        LimitKey::Client => "client".to_string(),
        LimitKey::Header(h) => format!("header:{}", h.value),
        // The grammar offers neither for a shared limit.
        LimitKey::Route => "route".to_string(),
        LimitKey::Expr(_) => "expr".to_string(),
    };
    format!("shared:{}:{kind}:per:{per}", l.name.name)
}

/// Every limit of the program, in a fixed order: route limits in route order, then tenants'.
/// `AppliedLimit::limit` indexes this table.
pub fn limit_table(program: &Program) -> Vec<String> {
    let mut ids = vec![];
    for route in program.routes() {
        for (i, stmt) in route.stmts.iter().filter(|s| matches!(s.kind, RouteStmtKind::Limit(_))).enumerate() {
            if let RouteStmtKind::Limit(l) = &stmt.kind {
                ids.push(route_limit_id(&route.name.name, i, l));
            }
        }
    }
    for tenant in program.tenants() {
        for stmt in &tenant.stmts {
            if let Some(id) = tenant_limit_id(&tenant.name.name, &stmt.kind) {
                ids.push(id);
            }
        }
    }
    ids.extend(program.shared_limits().map(shared_limit_id));
    ids
}

fn limit_key(ctx: &Ctx<'_>, per: &LimitKey) -> Result<String, Undecided> {
    let id = ctx.identity.as_ref();
    Ok(match per {
        LimitKey::Route => String::new(),
        LimitKey::Key => id.map(|i| format!("{}/{}", i.keys, i.key_name)).unwrap_or_else(|| "-".into()),
        LimitKey::Tenant => id.map(|i| i.tenant.clone()).unwrap_or_else(|| "-".into()),
        LimitKey::Client => ctx.req.client_ip.clone().unwrap_or_else(|| "-".into()),
        LimitKey::Header(h) => ctx.req.header(&h.value).unwrap_or("-").to_string(),
        LimitKey::Expr(e) => match eval(ctx, e) {
            Val::Error(u) => return Err(u),
            v => v.key_string(),
        },
    })
}

/// The body as the strict reader reads it: `Ok(None)` when there is none (or it is empty).
pub fn parse_body(req: &Request) -> Result<Option<serde_json::Value>, BodyError> {
    ijson::read_request(req)
}

/// Whether deciding a request on this route reads its body: an expression of the route (its
/// `when` condition, a guard, a limit's condition or key, directly or through matchers)
/// reads a body field, a limit picks by `model`, or the route counts tokens (a token limit, or
/// `auth` while some tenant has a token budget). Such a route refuses a body the strict
/// reader refuses. Written over the syntax, before constant folding, so `false and body.x`
/// still counts.
pub fn route_needs_body(program: &Program, route: &Route) -> bool {
    let tenant_tokens =
        || program.tenants().any(|t| t.stmts.iter().any(|s| matches!(s.kind, TenantStmtKind::Tokens(_))));
    let token_limit = route.stmts.iter().any(|s| match &s.kind {
        RouteStmtKind::Limit(l) => matches!(l.kind, LimitKind::Tokens { .. }),
        RouteStmtKind::LimitUse { name, .. } => {
            program.shared_limit(&name.name).is_some_and(|l| matches!(l.kind, LimitKind::Tokens { .. }))
        }
        _ => false,
    });
    program.route_reads_body(route) || token_limit || (route.auth().is_some() && tenant_tokens())
}

/// `*.example.com` matches any subdomain; otherwise exact, case-insensitive.
pub fn host_matches(pattern: Option<&str>, host: &str) -> bool {
    match pattern {
        None => true,
        Some(p) => match p.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            }
            None => p.eq_ignore_ascii_case(host),
        },
    }
}

pub fn method_matches(methods: &[Method], method: &str) -> bool {
    methods.iter().any(|m| *m == Method::Any || m.as_str() == method)
}

/// Match a path pattern; on success, the captured `{params}` in order.
pub fn match_path(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let mut params = vec![];
    if pattern == "/*" {
        return path.starts_with('/').then_some(params);
    }
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    for (i, p) in pat.iter().enumerate() {
        if *p == "*" && i == pat.len() - 1 && i > 0 {
            // `/a/*` matches `/a` and anything under `/a/`.
            return Some(params);
        }
        let seg = segs.get(i)?;
        if let Some(name) = p.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            if seg.is_empty() {
                return None;
            }
            params.push((name.to_string(), seg.to_string()));
        } else if p != seg {
            return None;
        }
    }
    (segs.len() == pat.len()).then_some(params)
}

struct Ctx<'a> {
    program: &'a Program,
    req: &'a Request,
    host: &'a str,
    body: &'a Result<Option<serde_json::Value>, BodyError>,
    params: &'a [(String, String)],
    identity: Option<Identity>,
}

/// The value of one expression of `program` for `req`, outside any route (no path params, no
/// identity): for properties that look inside a decision.
pub fn eval_expr(program: &Program, req: &Request, e: &Expr) -> Val {
    let host = req.routing_host();
    let body = parse_body(req);
    eval(&Ctx { program, req, host: &host, body: &body, params: &[], identity: None }, e)
}

fn eval(ctx: &Ctx<'_>, e: &Expr) -> Val {
    match &e.kind {
        ExprKind::Lit(Lit::Str(s)) => Val::Str(s.clone()),
        ExprKind::Lit(Lit::Int(n)) => Val::Num(*n as f64),
        ExprKind::Lit(Lit::Float(f)) => Val::Num(*f),
        ExprKind::Lit(Lit::Bool(b)) => Val::Bool(*b),
        ExprKind::Lit(Lit::Regex(_)) => Val::Missing,
        ExprKind::List(items) => value::list(items.iter().map(|i| eval(ctx, i)).collect()),
        ExprKind::Fact(f) => fact(ctx, f),
        ExprKind::Ref(name) => match ctx.program.matcher(&name.name) {
            Some(m) => value::cond(&eval(ctx, &m.expr)),
            None => Val::Missing,
        },
        ExprKind::Not(inner) => value::not(&eval(ctx, inner)),
        ExprKind::Exists(inner) => value::exists(&eval(ctx, inner)),
        ExprKind::Binary { op: BinOp::And, lhs, rhs, .. } => value::and(&eval(ctx, lhs), || eval(ctx, rhs)),
        ExprKind::Binary { op: BinOp::Or, lhs, rhs, .. } => value::or(&eval(ctx, lhs), || eval(ctx, rhs)),
        ExprKind::Binary { op: BinOp::Matches, lhs, rhs, .. } => {
            let ExprKind::Lit(Lit::Regex(r)) = &rhs.kind else { return Val::Bool(false) };
            match value::build_regex(&r.pattern, r.case_insensitive) {
                Ok(re) => value::regex_match(&re, &eval(ctx, lhs)),
                Err(_) => Val::Bool(false),
            }
        }
        ExprKind::Binary { op, lhs, rhs, .. } => value::binary(*op, &eval(ctx, lhs), &eval(ctx, rhs)),
        ExprKind::Call { func, args } => {
            let args: Vec<Val> = args.iter().map(|a| eval(ctx, a)).collect();
            value::call(*func, &args)
        }
    }
}

fn fact(ctx: &Ctx<'_>, f: &Fact) -> Val {
    let s = |v: Option<&str>| v.map(|v| Val::Str(v.to_string())).unwrap_or(Val::Missing);
    match f {
        Fact::Method => Val::Str(ctx.req.method.clone()),
        Fact::Path => crate::request::path_fact(&ctx.req.path),
        Fact::Host => Val::Str(ctx.host.to_string()),
        Fact::ClientIp => s(ctx.req.client_ip.as_deref()),
        Fact::Tenant => s(ctx.identity.as_ref().map(|i| i.tenant.as_str())),
        Fact::Key => s(ctx.identity.as_ref().map(|i| i.key_name.as_str())),
        Fact::Header(h) => ctx.req.header_fact(h),
        Fact::Query(q) => ctx.req.query_fact(q),
        Fact::Param(p) => match ctx.params.iter().find(|(k, _)| k == p) {
            Some((_, v)) => crate::request::path_fact(v),
            None => Val::Missing,
        },
        Fact::Body(path) => match ctx.body {
            Ok(Some(b)) => value::body_lookup(b, path).map(Val::from_json).unwrap_or(Val::Missing),
            Ok(None) => Val::Missing,
            Err(e) => Val::Error(e.clone()),
        },
        Fact::Claim(path) => gw_engine::jwt::claim_fact(ctx.identity.as_ref().and_then(|i| i.claims.as_deref()), path),
    }
}
