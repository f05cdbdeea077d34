//! Runs a policy's `test` blocks: each `send` is decided (by the same decision function the
//! runtime uses), rate limits and token budgets are applied with the shared GCRA arithmetic
//! and token counting (`gcra`, `tokens`) on a simulated clock that `advance` moves, and each
//! `expect` is compared with what happened. There is no upstream in a test, so a forwarded
//! request's token reservation (prompt + requested completion) stands: it is never corrected
//! down to a reported usage. Requests end at once, so concurrency limits never refuse.

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::eval;
use crate::gcra::Gcra;
use crate::program::Program;
use crate::request::{Decision, Request};
use crate::source::Span;
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
}

/// Run every test block of `program`, deciding with `decide`.
pub fn run_tests(program: &Program, decide: &dyn Fn(&Request) -> Decision) -> Vec<TestResult> {
    let rates = rate_limits(program);
    program.tests().map(|t| run_one(program, t, decide, &rates)).collect()
}

fn run_one(
    program: &Program,
    test: &Test,
    decide: &dyn Fn(&Request) -> Decision,
    rates: &HashMap<String, Metered>,
) -> TestResult {
    let mut now: u64 = 0;
    let mut tats: HashMap<(String, String), u64> = HashMap::new();
    let mut last: Option<(Answer, Span)> = None;
    let mut failures = vec![];
    for stmt in &test.stmts {
        match &stmt.kind {
            TestStmtKind::Advance(d) => now = now.saturating_add(d.value),
            TestStmtKind::Send(send) => {
                let req = to_request(send);
                // The path is put in normal form (or refused) before deciding, as `gw serve` does.
                let decision = match crate::path::normalize(&req.path) {
                    Ok(path) if path == req.path => decide(&req),
                    Ok(path) => decide(&Request { path: path.into_owned(), ..req.clone() }),
                    Err(why) => Decision::new(crate::request::Outcome::Invalid {
                        code: crate::value::INVALID_PATH,
                        message: why.to_string(),
                    }),
                };
                let mut answer =
                    Answer { status: decision.outcome.status(), message: refusal_message(&decision), decision };
                if answer.status < 400 {
                    apply_rate_limits(&mut answer, &req, rates, &mut tats, now);
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

fn refusal_message(d: &Decision) -> Option<String> {
    use crate::request::Outcome::*;
    match &d.outcome {
        Unauthorized { message } | Denied { message, .. } | Invalid { message, .. } => Some(message.clone()),
        NoRoute => Some("no route".into()),
        MethodNotAllowed { .. } => Some("method not allowed".into()),
        _ => None,
    }
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
        Expectation::Tenant(t) => {
            let _ = program;
            match &a.decision.identity {
                Some(id) if id.tenant == t.name => None,
                Some(id) => Some(format!("expected tenant `{}`, got `{}`", t.name, id.tenant)),
                None => Some(format!("expected tenant `{}`, but the request was not authenticated", t.name)),
            }
        }
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
    for l in &answer.decision.limits {
        let Some(m) = rates.get(&l.id) else { continue };
        if m.tokens.is_some() && !m.shadow && m.cost(req) > m.gcra.burst() {
            answer.status = 400;
            answer.message = Some(format!("request too large for token budget {}", l.id));
            return;
        }
    }
    let mut updates = vec![];
    for l in &answer.decision.limits {
        let Some(m) = rates.get(&l.id) else { continue };
        let slot = (l.id.clone(), l.key.clone());
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
