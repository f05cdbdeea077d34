//! Runs a policy's `test` blocks: each `send` is decided (by the same decision function the
//! runtime uses), rate limits and token budgets are applied with the shared GCRA arithmetic
//! and token counting (`gcra`, `tokens`) on a simulated clock that `advance` moves, and each
//! `expect` is compared with what happened. There is no upstream in a test, so a forwarded
//! request's token reservation (prompt + requested completion) stands: it is never corrected
//! down to a reported usage. Requests end at once, so concurrency limits never refuse.
//! A route's `cache` is simulated on the test clock: a forwarded request counts as a 200
//! answer, stored when the cache stores 200s, and an identical request within the TTL is a
//! hit (keyed and bypassed by the same rules as `gw serve`, `gw_engine::cache`).

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::eval;
use crate::gcra::Gcra;
use crate::graph::Graph;
use crate::program::Program;
use crate::request::{Decision, Outcome, Request};
use crate::source::Span;
use crate::template::Facts;
use crate::tokens;

/// The result of one test block.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub name: String,
    pub span: Span,
    /// Empty when the test passed.
    pub failures: Vec<Diag>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What a sent request came to, as a test sees it.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    message: Option<String>,
    decision: Decision,
    /// The headers the route sets (`set header`) or answers with (`respond`), rendered, and
    /// those gw adds to its answer (CORS, `www-authenticate`); None when absent (removed, or
    /// not sent). Names lower-case.
    headers: Vec<(String, Option<String>)>,
    /// The body a `respond` answers with, rendered.
    body: Option<Vec<u8>>,
    /// What the route's cache did, on a route with a cache.
    cache: Option<CacheResult>,
}

/// A route's cache as the test runner simulates it: entries by key, with the time stored.
struct SimCache {
    ttl_ns: u64,
    shared: bool,
    stores_200: bool,
}

fn route_cache(program: &Program, route: &str) -> Option<SimCache> {
    let r = program.routes().find(|r| r.name.name == route)?;
    r.stmts.iter().find_map(|s| match &s.kind {
        RouteStmtKind::Cache { ttl, shared, statuses, .. } => Some(SimCache {
            ttl_ns: ttl.value,
            shared: *shared,
            stores_200: statuses.is_empty() || statuses.iter().any(|s| s.value == 200),
        }),
        _ => None,
    })
}

/// The cache key of a forwarded request, or None when it bypasses the cache.
fn sim_cache_key(
    send: &Send,
    req: &Request,
    path: &str,
    route: &str,
    cache: &SimCache,
    d: &Decision,
) -> Option<String> {
    let body = req.body.as_deref().unwrap_or_default();
    let canonical = crate::ijson::read(body).ok().flatten();
    if gw_engine::cache::bypass(&req.headers, canonical.as_ref()).is_some() {
        return None;
    }
    let tenant = if cache.shared { None } else { Some(d.identity.as_ref().map_or("-", |i| i.tenant.as_str())) };
    let query = send.path.value.split_once('?').map(|(_, q)| q);
    Some(gw_engine::cache::key(route, &req.method, path, query, tenant, body, canonical.as_ref()))
}

/// What a test's request id and trace id read as (there is no gateway to make them).
pub const TEST_REQUEST_ID: &str = "test-request-id";
pub const TEST_TRACE_ID: &str = "00000000000000000000000000000001";

/// Run every test block of `program`, deciding with `decide`.
pub fn run_tests(program: &Program, decide: &dyn Fn(&Request) -> Decision) -> Vec<TestResult> {
    let rates = rate_limits(program);
    // The templates a test renders are the graph's, as `gw serve` renders them.
    let graph = crate::lower::lower(program).ok();
    program.tests().map(|t| run_one(program, graph.as_ref(), t, decide, &rates)).collect()
}

fn run_one(
    program: &Program,
    graph: Option<&Graph>,
    test: &Test,
    decide: &dyn Fn(&Request) -> Decision,
    rates: &HashMap<String, Metered>,
) -> TestResult {
    let mut now: u64 = 0;
    // JWT times are checked against the wall clock at the test's start, moved by `advance`.
    let wall = Request::default().unix_now();
    let mut tats: HashMap<(String, String), u64> = HashMap::new();
    let mut last: Option<(Answer, Span)> = None;
    let mut cached: HashMap<String, u64> = HashMap::new();
    let mut failures = vec![];
    for stmt in &test.stmts {
        match &stmt.kind {
            TestStmtKind::Advance(d) => now = now.saturating_add(d.value),
            TestStmtKind::Send(send) => {
                let mut req = to_request(send);
                req.now = Some(wall + now / 1_000_000_000);
                // The path is put in normal form (or refused) before deciding, as `gw serve` does.
                let (decision, path) = match crate::path::normalize(&req.path) {
                    Ok(path) if path == req.path => (decide(&req), req.path.clone()),
                    Ok(path) => {
                        (decide(&Request { path: path.clone().into_owned(), ..req.clone() }), path.into_owned())
                    }
                    Err(why) => (
                        Decision::new(crate::request::Outcome::Invalid {
                            code: crate::value::INVALID_PATH,
                            message: why.to_string(),
                        }),
                        req.path.clone(),
                    ),
                };
                let headers = answer_headers(program, &req, &decision);
                let mut answer = Answer {
                    status: decision.outcome.status(),
                    message: refusal_message(&decision),
                    decision,
                    cache: None,
                    headers: headers.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                    body: None,
                };
                // The cache is asked after the decision, before the limits (a hit still passes
                // them, but costs no tokens), and a miss is stored once admitted.
                let forwarded = matches!(answer.decision.outcome, crate::request::Outcome::Forward { .. });
                let route = answer.decision.route.clone().unwrap_or_default();
                let cache = if forwarded && answer.status < 400 { route_cache(program, &route) } else { None };
                let key = cache.as_ref().and_then(|c| sim_cache_key(send, &req, &path, &route, c, &answer.decision));
                answer.cache = cache.as_ref().map(|c| match &key {
                    None => CacheResult::Bypass,
                    Some(k) if cached.get(k).is_some_and(|at| now < at.saturating_add(c.ttl_ns)) => CacheResult::Hit,
                    Some(_) => CacheResult::Miss,
                });
                if answer.status < 400 {
                    apply_rate_limits(&mut answer, &req, rates, &mut tats, now);
                }
                if answer.status >= 400 {
                    answer.cache = None;
                } else if let (Some(CacheResult::Miss), Some(k), Some(c)) = (answer.cache, key, &cache) {
                    if c.stores_200 {
                        cached.insert(k, now);
                    }
                }
                // As `gw serve`: templates are rendered after the limits are charged.
                if let Some(graph) = graph.filter(|_| answer.status < 400) {
                    render_headers(graph, &mut answer, &req);
                }
                last = Some((answer, stmt.span));
            }
            TestStmtKind::Expect(e) => {
                let Some((answer, sent_at)) = &last else { continue };
                if let Some(why) = mismatch(program, e, answer) {
                    failures.push(
                        Diag::error(Code::TestFailed, format!("test \"{}\" failed: {why}", test.name.value))
                            .primary(stmt.span, why)
                            .secondary(*sent_at, "for this request")
                            .help(explain_short(&answer.decision)),
                    );
                }
            }
        }
    }
    TestResult { name: test.name.value.clone(), span: test.name.span, failures }
}

/// The route's `set header` templates (forwarded) or its `respond` headers and body, rendered
/// as `gw serve` renders them; a value it would refuse (a control character, a header sent
/// twice) makes the answer that 400.
fn render_headers(graph: &Graph, answer: &mut Answer, req: &Request) {
    let Some(info) = answer.decision.route_index.and_then(|i| graph.routes().get(i)) else { return };
    let facts =
        Facts { request: req, decision: &answer.decision, request_id: TEST_REQUEST_ID, trace_id: TEST_TRACE_ID };
    let (templates, body) = match (&answer.decision.outcome, &info.respond) {
        (Outcome::Forward { .. }, _) => (&info.set_headers, None),
        (Outcome::Respond { .. }, Some(r)) => (&r.headers, Some(&r.body)),
        _ => return,
    };
    let mut headers: Vec<(String, Option<String>)> = vec![];
    let mut refused = None;
    for (name, t) in templates {
        match t.render_header(name, &facts) {
            Ok(v) => {
                headers.retain(|(n, _)| n != name);
                headers.push((name.clone(), v));
            }
            Err(u) => refused = refused.or(Some(u)),
        }
    }
    let body = match body.map(|b| b.render(&facts)).transpose() {
        Ok(b) => b,
        Err(u) => {
            refused = refused.or(Some(u));
            None
        }
    };
    match refused {
        Some(u) => {
            answer.status = 400;
            answer.message = Some(u.message);
        }
        None => {
            answer.headers.extend(headers);
            answer.body = body;
        }
    }
}

fn refusal_message(d: &Decision) -> Option<String> {
    use crate::request::Outcome::*;
    match &d.outcome {
        Unauthorized { message } | Denied { message, .. } | Invalid { message, .. } => Some(message.clone()),
        Preflight { allowed: false, message } => Some(message.clone()),
        NoRoute => Some("no route".into()),
        MethodNotAllowed { .. } => Some("method not allowed".into()),
        _ => None,
    }
}

/// The headers gw adds to the answer of a decided request: the route's CORS headers (a
/// preflight's, or those of every other answer), and `www-authenticate` on a 401 of a route
/// that accepts basic auth. The runtime adds the same (`phases/cors.rs`, `errors.rs`).
fn answer_headers(program: &Program, req: &Request, d: &Decision) -> Vec<(String, String)> {
    let mut out = vec![];
    let Some(route) = d.route_index.and_then(|i| program.routes().nth(i)) else { return out };
    if let Some(c) = route.cors() {
        let policy = program.cors_policy(route, c);
        let hs = match &d.outcome {
            crate::request::Outcome::Preflight { allowed: true, .. } => policy.preflight_headers(req),
            _ => policy.response_headers(req.header("origin")),
        };
        out.extend(hs.into_iter().map(|(k, v)| (k.to_string(), v)));
    }
    let basic = route.auth().is_some_and(|a| {
        a.methods.iter().any(|m| program.set_kind(&m.set.name) == Some(crate::program::SetKind::Basic))
    });
    if basic && matches!(d.outcome, crate::request::Outcome::Unauthorized { .. }) {
        out.push(("www-authenticate".to_string(), crate::request::BASIC_CHALLENGE.to_string()));
    }
    out
}

fn explain_short(d: &Decision) -> String {
    let steps: Vec<String> =
        d.trace.iter().filter(|s| s.step != "action").map(|s| format!("{}: {}", s.step, s.detail)).collect();
    format!("the decision was: {}; then {}", steps.join("; "), describe(&d.outcome, d.outcome.status()))
}

fn mismatch(program: &Program, e: &Expectation, a: &Answer) -> Option<String> {
    match e {
        Expectation::Status { status, message } => {
            if u64::from(a.status) != status.value {
                let why = a.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default();
                return Some(format!("expected status {}, got {}{why}", status.value, a.status));
            }
            if let Some(m) = message {
                if a.message.as_deref() != Some(m.value.as_str()) {
                    return Some(format!(
                        "expected message \"{}\", got {:?}",
                        m.value,
                        a.message.as_deref().unwrap_or("none")
                    ));
                }
            }
            None
        }
        Expectation::Route(r) => match &a.decision.route {
            Some(got) if *got == r.name => None,
            Some(got) => Some(format!("expected route `{}`, got `{got}`", r.name)),
            None => Some(format!("expected route `{}`, but no route matched", r.name)),
        },
        Expectation::Upstream(u) => match &a.decision.outcome {
            crate::request::Outcome::Forward { upstream } if *upstream == u.name && a.status < 400 => None,
            other => Some(format!("expected forwarding to `{}`, got {}", u.name, describe(other, a.status))),
        },
        Expectation::Claim { name, value } => {
            let claims = a.decision.identity.as_ref().and_then(|i| i.claims.as_ref());
            let Some(claims) = claims else {
                return Some(format!("expected claim `{}`, but no token authenticated the request", name.value));
            };
            let got = match claims.get(&name.value) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => return Some(format!("expected claim `{}`, but the token has none", name.value)),
            };
            (got != value.value)
                .then(|| format!("expected claim `{}` = \"{}\", got \"{got}\"", name.value, value.value))
        }
        Expectation::Cache { result, .. } => match a.cache {
            Some(got) if got == *result => None,
            Some(got) => Some(format!("expected a cache {}, got a cache {}", result.as_str(), got.as_str())),
            None if a.status >= 400 => {
                Some(format!("expected a cache {}, got {}", result.as_str(), describe(&a.decision.outcome, a.status)))
            }
            None => Some(format!("expected a cache {}, but the route has no cache", result.as_str())),
        },
        Expectation::Limit { tenant, name } => {
            let prefix = if *tenant { format!("tenant:{}:", name.name) } else { format!("shared:{}:", name.name) };
            let what =
                if *tenant { format!("a limit of `tenant {}`", name.name) } else { format!("limit `{}`", name.name) };
            if a.decision.limits.iter().any(|l| l.id.starts_with(&prefix)) {
                None
            } else {
                let applied: Vec<&str> = a.decision.limits.iter().map(|l| &*l.id).collect();
                Some(format!("expected {what} to apply, got [{}]", applied.join(", ")))
            }
        }
        Expectation::Body(want) => {
            let got = a.body.as_deref().unwrap_or_default();
            let got_text = String::from_utf8_lossy(got);
            let same = match want {
                ResponseBody::Json(j) => {
                    serde_json::from_slice::<serde_json::Value>(got).ok().as_ref() == Some(&j.value)
                }
                ResponseBody::Text(t) => Some(got_text.as_ref()) == program.value(t).as_deref(),
                ResponseBody::JsonTemplate(_) => false,
            };
            (!same).then(|| format!("expected the body {}, got {got_text:?}", crate::fmt::body_to_string(want)))
        }
        Expectation::Header { name, value } => {
            let got = a.headers.iter().find(|(n, _)| *n == name.value).and_then(|(_, v)| v.as_deref());
            match (value, got) {
                (Some(want), Some(got)) if want.value == got => None,
                (None, None) => None,
                (Some(want), got) => Some(format!(
                    "expected header `{}` = \"{}\", got {}",
                    name.value,
                    want.value,
                    got.map(|g| format!("{g:?}")).unwrap_or_else(|| "none".into())
                )),
                (None, Some(got)) => Some(format!("expected header `{}` absent, got {got:?}", name.value)),
            }
        }
        Expectation::Tenant(t) => match &a.decision.identity {
            Some(id) if id.tenant == t.name => None,
            Some(id) => Some(format!("expected tenant `{}`, got `{}`", t.name, id.tenant)),
            None => Some(format!("expected tenant `{}`, but the request was not authenticated", t.name)),
        },
    }
}

fn describe(o: &crate::request::Outcome, status: u16) -> String {
    use crate::request::Outcome::*;
    match o {
        Forward { upstream } if status >= 400 => format!("status {status} before reaching `{upstream}`"),
        Forward { upstream } => format!("forwarding to `{upstream}`"),
        Respond { .. } => format!("a static response with status {status}"),
        Serve { builtin } => format!("the built-in `{builtin}` handler"),
        Denied { message, .. } | Unauthorized { message } => format!("status {status} ({message})"),
        Preflight { allowed: true, .. } => "a CORS preflight answered 204".to_string(),
        Preflight { message, .. } => format!("status 403 ({message})"),
        Invalid { code, message } => format!("status 400 ({code}: {message})"),
        NoRoute => "status 404 (no route)".to_string(),
        MethodNotAllowed { allowed } => format!("status 405 (allowed: {})", allowed.join(", ")),
    }
}

fn to_request(send: &Send) -> Request {
    let mut req = Request::new(send.method.as_str(), &send.path.value);
    req.headers = send.headers.iter().map(|(k, v)| (k.value.clone(), v.value.clone())).collect();
    req.body = send.body.as_ref().map(|b| b.value.to_string().into_bytes());
    req.client_ip = Some(send.client.as_ref().map(|c| c.value.clone()).unwrap_or_else(|| "127.0.0.1".into()));
    req
}

/// A limit the test runner meters: its GCRA, whether it is shadow-only, and what a request
/// costs it.
struct Metered {
    gcra: Gcra,
    shadow: bool,
    /// None for a rate limit (cost 1); for a token budget, its `estimate`.
    tokens: Option<Option<u64>>,
}

impl Metered {
    /// What `req` costs: 1 request, or the runtime's token reservation for it.
    fn cost(&self, req: &Request) -> u64 {
        let Some(estimate) = self.tokens else { return 1 };
        let body = req.body.as_deref().and_then(|b| crate::ijson::read(b).ok().flatten());
        let Some(body) = body else { return estimate.unwrap_or(1) };
        // After the answer the runtime's charge is the exact count (in the model's encoding, or
        // the byte bound for a model of no known family): what the next request meets.
        let meter = tokens::Meter::for_body(&body);
        tokens::reservation_measured(&body, meter, estimate).map(|r| r.total()).unwrap_or(estimate.unwrap_or(1))
    }
}

/// Every rate limit and token budget of the program by id.
fn rate_limits(program: &Program) -> HashMap<String, Metered> {
    let mut out = HashMap::new();
    for route in program.routes() {
        for (i, stmt) in route.stmts.iter().filter(|s| matches!(s.kind, RouteStmtKind::Limit(_))).enumerate() {
            if let RouteStmtKind::Limit(l) = &stmt.kind {
                let metered = match &l.kind {
                    LimitKind::Rate { rate, burst } => Metered {
                        gcra: Gcra::new(rate.count, rate.window_ns, burst.map(|b| b.value)),
                        shadow: l.shadow,
                        tokens: None,
                    },
                    LimitKind::Tokens { rate, estimate } => Metered {
                        gcra: Gcra::new(rate.count, rate.window_ns, None),
                        shadow: l.shadow,
                        tokens: Some(estimate.map(|e| e.value)),
                    },
                    LimitKind::Concurrent(_) => continue,
                };
                out.insert(eval::route_limit_id(&route.name.name, i, l), metered);
            }
        }
    }
    for shared in program.shared_limits() {
        let metered = match &shared.kind {
            LimitKind::Rate { rate, burst } => Metered {
                gcra: Gcra::new(rate.count, rate.window_ns, burst.map(|b| b.value)),
                shadow: false,
                tokens: None,
            },
            LimitKind::Tokens { rate, estimate } => Metered {
                gcra: Gcra::new(rate.count, rate.window_ns, None),
                shadow: false,
                tokens: Some(estimate.map(|e| e.value)),
            },
            LimitKind::Concurrent(_) => continue,
        };
        out.insert(eval::shared_limit_id(shared), metered);
    }
    for tenant in program.tenants() {
        for stmt in &tenant.stmts {
            let metered = match &stmt.kind {
                TenantStmtKind::Rate { rate, burst } => Metered {
                    gcra: Gcra::new(rate.count, rate.window_ns, burst.map(|b| b.value)),
                    shadow: false,
                    tokens: None,
                },
                TenantStmtKind::Tokens(rate) => {
                    Metered { gcra: Gcra::new(rate.count, rate.window_ns, None), shadow: false, tokens: Some(None) }
                }
                _ => continue,
            };
            if let Some(id) = eval::tenant_limit_id(&tenant.name.name, &stmt.kind) {
                out.insert(id, metered);
            }
        }
    }
    out
}

/// All-or-nothing: when one limit refuses, none is charged.
fn apply_rate_limits(
    answer: &mut Answer,
    req: &Request,
    rates: &HashMap<String, Metered>,
    tats: &mut HashMap<(String, String), u64>,
    now: u64,
) {
    // A reservation larger than a whole budget can never pass: 400, as gw serve answers it,
    // before any limit is counted.
    // A cache hit costs no tokens: its token budgets are not charged.
    let hit = answer.cache == Some(CacheResult::Hit);
    for l in &answer.decision.limits {
        let Some(m) = rates.get(&*l.id).filter(|m| !(hit && m.tokens.is_some())) else { continue };
        if m.tokens.is_some() && !m.shadow && m.cost(req) > m.gcra.burst() {
            answer.status = 400;
            answer.message = Some(format!("request too large for token budget {}", l.id));
            return;
        }
    }
    let mut updates = vec![];
    for l in &answer.decision.limits {
        let Some(m) = rates.get(&*l.id).filter(|m| !(hit && m.tokens.is_some())) else { continue };
        let slot = (l.id.to_string(), l.key.clone());
        let v = m.gcra.check(tats.get(&slot).copied().unwrap_or(0), now, m.cost(req));
        if !v.allowed && !m.shadow {
            answer.status = 429;
            let what = if m.tokens.is_some() { "token budget" } else { "rate limit" };
            answer.message = Some(format!("{what} {} exceeded", l.id));
            return;
        }
        if v.allowed {
            updates.push((slot, v.tat));
        }
    }
    tats.extend(updates);
}
