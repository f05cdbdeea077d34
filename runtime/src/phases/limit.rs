//! Phase 3, limit: the limits the decision applies, charged in the store (local or Redis).
//! A refused request gets 429 in the policy's words (503 when the store could not be asked
//! and the policy denies); every answer carries OpenAI's `x-ratelimit-*` headers. A request
//! with token budgets also gets the plan its answer's usage is reconciled with.

use bytes::Bytes;
use gw_engine::request::Decision;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::budget::{Reconcile, TokenPlan};
use crate::errors::{Code, GwError};
use crate::exchange::{Exchange, UsagePlan};
use crate::gateway::{Gateway, Loaded};
use crate::limits::{admitted, never_fits, Charge, LimitCheck, LimitKind, LimitResult};
use crate::phases::{Ctx, Stop};
use crate::store::{Held, Ticket};

/// A request its limits admitted: what was charged, and where.
pub struct Admitted {
    pub checks: Vec<LimitCheck>,
    pub results: Vec<LimitResult>,
    pub ticket: Ticket,
}

/// Charge the decision's limits. Admitted, the request holds its concurrency slots until
/// its answer ends; refused, its answer is the refusal. Without `charge_tokens` (a cache hit:
/// no model runs) its token budgets are neither charged nor consulted.
///
/// A token budget is first charged the prompt's byte bound; the prompt is counted exactly only
/// when the bound does not fit (see `budget`): larger than a whole budget (waiting for the
/// encoding's table if it is loading), or refused by a budget and nothing else (if the table is
/// loaded). A refused check charged nothing, so the exact one is a fresh try.
pub async fn check(
    ctx: Ctx<'_>,
    decision: &Decision,
    plan: Option<&TokenPlan>,
    charge_tokens: bool,
    x: &mut Exchange,
) -> Result<Admitted, Stop> {
    let (gw, graph) = (ctx.gw, &ctx.loaded.policy.graph);
    let mut checks = limit_checks(ctx.loaded, decision, ctx.request_id, plan);
    if !charge_tokens {
        checks.retain(|c| !matches!(c.charge, Charge::Tokens { .. }));
    }
    if let Some(plan) = plan.filter(|p| p.may_shrink() && never_fits(&checks).is_some()) {
        plan.count_exactly().await;
        checks = limit_checks(ctx.loaded, decision, ctx.request_id, Some(plan));
    }
    if let Some((check, cost)) = never_fits(&checks) {
        // No wait would let it pass: not a 429 (clients retry those), and nothing charged.
        gw.metrics.limit_decisions.with_label_values(&[&check.id, "too_large"]).inc();
        let budget = describe_limit(graph, &check.id);
        return Err(GwError::new(
            Code::RequestTooLargeForBudget,
            format!(
                "this request reserves {cost} tokens, more than {budget} can ever admit at once; \
                 lower max_tokens or shorten the prompt"
            ),
        )
        .into());
    }
    let (mut limit_results, mut ticket) = gw.limiter.check(&checks).await;
    // Near the edge: counted exactly if the table is loaded (the first refusals after a start
    // do not wait for it: the bound judges them while it loads).
    if let Some(plan) = plan.filter(|p| p.may_shrink() && only_budgets_refused(&limit_results) && p.count_exactly_now())
    {
        let exact = limit_checks(ctx.loaded, decision, ctx.request_id, Some(plan));
        if costs_differ(&checks, &exact) {
            (limit_results, ticket) = gw.limiter.check(&exact).await;
            checks = exact;
        }
    }
    count_limit_decisions(gw, &limit_results);
    x.shadow_refused = limit_results.iter().filter(|r| r.shadow && !r.allowed).map(|r| r.id.to_string()).collect();
    if !admitted(&limit_results) {
        let mut resp = refusal(graph, &limit_results).into_response(ctx.request_id);
        rate_headers(resp.headers_mut(), &limit_results);
        return Err(Stop::Answer(resp));
    }
    x.hold.limits = Some(Held::new(gw.limiter.clone(), ticket, &checks));
    Ok(Admitted { checks, results: limit_results, ticket })
}

/// Whether the request was refused by token budgets alone (an exact count could admit it),
/// not by a rate or concurrency limit or a store fallback (a smaller count changes nothing).
fn only_budgets_refused(results: &[LimitResult]) -> bool {
    let mut refused = results.iter().filter(|r| !r.allowed && !r.shadow).peekable();
    refused.peek().is_some() && refused.all(|r| r.kind == LimitKind::Tokens && !r.fallback)
}

fn costs_differ(a: &[LimitCheck], b: &[LimitCheck]) -> bool {
    let cost = |c: &LimitCheck| match c.charge {
        Charge::Tokens { cost, .. } => Some(cost),
        _ => None,
    };
    a.iter().zip(b).any(|(x, y)| cost(x) != cost(y))
}

/// What the answer's token usage is reconciled with. A streamed answer is always charged:
/// the upstream is asked for the usage chunk when the client did not, and it is removed
/// from what the client receives (the body is rewritten, so its length header goes).
pub fn usage_plan(
    gw: &Gateway,
    plan: TokenPlan,
    admitted: &Admitted,
    buffered: &mut Option<Bytes>,
    headers: &mut HeaderMap,
) -> UsagePlan {
    let asked = match buffered.as_deref() {
        Some(raw) if plan.stream => crate::usage::ask_for_usage(&plan.body, raw),
        _ => None,
    };
    let strip_usage_chunk = asked.is_some();
    if let Some(rewritten) = asked {
        *buffered = Some(Bytes::from(rewritten));
        headers.remove(http::header::CONTENT_LENGTH);
    }
    let charged = admitted
        .checks
        .iter()
        .filter_map(|c| match &c.charge {
            Charge::Tokens { gcra, cost } => Some((c.id.clone(), c.key.clone(), *gcra, *cost)),
            _ => None,
        })
        .collect();
    let reconcile = Reconcile {
        limiter: gw.limiter.clone(),
        ticket: admitted.ticket,
        charged,
        prompt: plan.settle_prompt(),
        model: plan.model.clone(),
    }
    .keep_charged(&admitted.results);
    UsagePlan { reconcile, meter: plan.meter, strip_usage_chunk }
}

/// The limits the decision applies, as store checks. A token limit costs the request's
/// reservation (prompt + requested completion), or its `estimate` (else 1) when the body
/// cannot be counted.
fn limit_checks(loaded: &Loaded, decision: &Decision, request_id: &str, plan: Option<&TokenPlan>) -> Vec<LimitCheck> {
    use gw_engine::gcra::Gcra;
    use gw_engine::graph::LimitKindInfo;
    let table = loaded.policy.graph.limits();
    decision
        .limits
        .iter()
        .filter_map(|applied| {
            let info = table.get(applied.limit)?;
            let charge = match info.kind {
                LimitKindInfo::Rate { count, window_ns, burst } => {
                    Charge::Rate { gcra: Gcra::new(count, window_ns, burst), count }
                }
                LimitKindInfo::Tokens { count, window_ns, estimate } => {
                    let cost = plan.map(|p| p.cost(estimate).1).unwrap_or(estimate.unwrap_or(1));
                    Charge::Tokens { gcra: Gcra::new(count, window_ns, None), cost }
                }
                LimitKindInfo::Concurrent { max } => Charge::Concurrent { max, lease: request_id.to_string() },
            };
            Some(LimitCheck { id: applied.id.clone(), key: applied.key.clone(), shadow: info.shadow, charge })
        })
        .collect()
}

/// The answer to a request its limits refused: 429 in the policy's words, or 503 when the
/// limit store could not be asked and `on_error deny` refused. The limit's id goes to the log.
fn refusal(graph: &gw_engine::graph::Graph, results: &[LimitResult]) -> GwError {
    let Some(r) = results.iter().find(|r| !r.allowed && !r.shadow) else {
        return GwError::new(Code::RateLimitExceeded, "rate limit exceeded");
    };
    tracing::debug!(limit = %r.id, fallback = r.fallback, "limit refused the request");
    if r.fallback {
        return GwError::new(
            Code::LimitStoreUnavailable,
            "the limit store is unavailable and the policy refuses requests it cannot count; retry later",
        );
    }
    let limit = describe_limit(graph, &r.id);
    match r.kind {
        LimitKind::Concurrent => GwError::new(Code::ConcurrencyLimitExceeded, format!("{limit} is reached")),
        LimitKind::Tokens => GwError::new(Code::TokenLimitExceeded, format!("{limit} is spent for now")),
        LimitKind::Requests => GwError::new(Code::RateLimitExceeded, format!("{limit} is exceeded")),
    }
}

/// The limit with this id in the policy's words.
fn describe_limit(graph: &gw_engine::graph::Graph, id: &str) -> String {
    graph.limits().iter().find(|l| l.id == id).map(crate::limits::describe).unwrap_or_else(|| "a limit".into())
}

fn count_limit_decisions(gw: &Gateway, results: &[LimitResult]) {
    for r in results {
        let outcome = match (r.allowed, r.shadow) {
            (true, _) => "allowed",
            (false, true) => "shadow_refused",
            (false, false) => "refused",
        };
        gw.metrics.limit_decisions.with_label_values(&[&r.id, outcome]).inc();
    }
}

/// The `x-ratelimit-*` headers OpenAI clients read, with OpenAI's meanings, for requests and
/// for tokens from the tightest enforced limit of each kind: `limit` the requests (tokens) per
/// window as the policy states it, `remaining` what would be admitted right now, `reset` the
/// time until the counter is full again (`1s`, `6m0s`, `20ms`); `Retry-After` when refused.
pub fn rate_headers(h: &mut HeaderMap, results: &[LimitResult]) {
    // Names made once (a `&str` name is parsed again on every insert).
    const NAMES: [(LimitKind, [HeaderName; 3]); 2] = [
        (
            LimitKind::Requests,
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
        ),
        (
            LimitKind::Tokens,
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ),
    ];
    for (kind, [limit, remaining, reset]) in NAMES {
        // A fallback's numbers are made up (the store was not asked): no headers from them.
        let tightest = results
            .iter()
            .filter(|r| !r.shadow && !r.fallback && r.kind == kind)
            .min_by_key(|r| (r.allowed, r.remaining));
        if let Some(t) = tightest {
            h.insert(limit, HeaderValue::from(t.limit));
            h.insert(remaining, HeaderValue::from(t.remaining));
            if let Ok(v) = HeaderValue::from_str(&crate::limits::openai_duration(t.reset_after_ns)) {
                h.insert(reset, v);
            }
        }
    }
    let retry = results.iter().filter(|r| !r.allowed && !r.shadow).map(|r| r.retry_after_ns).max();
    if let Some(ns) = retry {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(ns.div_ceil(1_000_000_000).max(1)));
    }
}
