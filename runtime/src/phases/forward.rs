//! Phase 7, forward: the request sent to a target of the pool (within the upstream's
//! connection slots and timeout), tried again on another target by the upstream's `retry`
//! (`pool::retry` says when), failures mapped to gateway errors and recorded in the
//! target's health, and the answer streamed back, or a websocket spliced.

use std::sync::atomic::Ordering;
use std::time::Instant;

use gw_engine::graph::RouteInfo;
use gw_engine::request::{Decision, Request as GwRequest};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{empty, Body, BoxError};
use crate::client::Driven;
use crate::errors::{Code, GwError};
use crate::exchange::{Exchange, Hold};
use crate::headers;
use crate::metrics::TargetMetrics;
use crate::phases::inspect::too_large;
use crate::phases::target::{self, Picked, Selected};
use crate::phases::upstream_request::{self, ClientBodyError, UpBody};
use crate::phases::Ctx;
use crate::pool::health::Outcome;
use crate::pool::retry;
use crate::upstream::describe;

/// Try the request on a target of the pool and stream the answer back; by the upstream's
/// `retry`, try again on another target while nothing of the answer reached the client.
///
/// The upstream's `timeout` bounds the whole exchange, every try included. A try gets the
/// time left, or, when `timeout` is a retry condition, an equal share of the timeout per
/// allowed try (so a timed-out try leaves time for the next).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ctx: Ctx<'_>,
    route: &RouteInfo,
    (greq, decision): (&GwRequest, &Decision),
    parts: &http::request::Parts,
    sel: &Selected<'_>,
    mut body: UpBody,
    websocket: bool,
    mut client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    x: &mut Exchange,
) -> Result<Response<Body>, GwError> {
    let upstream = sel.upstream;
    let deadline = Instant::now() + upstream.timeout;
    // A websocket upgrade is never replayed: the client waits on one handshake.
    let policy = upstream.retry.as_ref().filter(|_| !websocket);
    let attempts = policy.map_or(0, |r| r.attempts as usize);
    let per_try = match policy {
        Some(r) if r.on_timeout => upstream.timeout / (attempts as u32 + 1),
        _ => upstream.timeout,
    };
    let replay_safe = retry::idempotent(&parts.method) || route.idempotent;
    if policy.is_some() {
        upstream.pool.budget.deposit();
    }
    let mut tried: Vec<usize> = vec![];
    loop {
        let Some(to) = target::pick(sel, &tried)? else {
            return Err(GwError::new(
                Code::NoHealthyUpstream,
                format!("no target of upstream `{}` could take the request", upstream.name),
            ));
        };
        let Some(try_body) = body.for_try() else {
            return Err(GwError::new(Code::Internal, "the request body was already sent"));
        };
        let up_req = upstream_request::build(ctx, route, (greq, decision), parts, try_body, &to, websocket)?;
        x.upstream = Some(upstream.name.clone());
        x.target = Some(to.target.addr.authority.to_string());
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The exchange's time is spent: no try is started that could only time out.
            return Err(GwError::new(Code::UpstreamTimeout, "the upstream did not answer in time"));
        }
        let sent = try_once(ctx, &to, up_req, per_try.min(left), websocket, x).await;
        let outcome = outcome_of(&sent);
        let again = policy.is_some_and(|r| {
            tried.len() < attempts && matches!(body, UpBody::Replayable(_)) && retry::retryable(r, outcome, replay_safe)
        });
        if again {
            if upstream.pool.budget.withdraw() {
                ctx.gw.metrics.retries.with_label_values(&[&upstream.name, &to.target.id]).inc();
                tracing::info!(upstream = %upstream.name, target = %to.target.id, kind = outcome.kind(), "retrying on another target");
                tried.push(to.index);
                continue;
            }
            ctx.gw.metrics.retries_refused.with_label_values(&[&upstream.name, &to.target.id]).inc();
        }
        return match sent {
            Ok(resp) => Ok(relay(ctx, &to, resp, websocket, client_upgrade.take(), x)),
            Err(Failed::Final(e) | Failed::Upstream(_, e)) => Err(e),
        };
    }
}

/// Why a try gave no answer: the target's failure (counted against its health, maybe
/// retried), or one no other target would change (the client's body, no free slot).
enum Failed {
    Upstream(Outcome, GwError),
    Final(GwError),
}

/// One try: within the upstream's connection slots and `timeout`; its outcome recorded in
/// the target's health and metrics.
async fn try_once(
    ctx: Ctx<'_>,
    to: &Picked<'_>,
    up_req: Request<Body>,
    timeout: std::time::Duration,
    websocket: bool,
    x: &mut Exchange,
) -> Result<Response<Driven>, Failed> {
    let (gw, upstream, target) = (ctx.gw, to.upstream, to.target);
    let _slot = match &upstream.slots {
        Some(sem) => match tokio::time::timeout(upstream.queue_timeout, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => return Err(Failed::Final(GwError::new(Code::UpstreamBusy, "the upstream has no free connection"))),
        },
        None => None,
    };
    let labels = [upstream.name.as_str(), target.id.as_str()];
    let health = &target.health;
    health.in_flight.fetch_add(1, Ordering::Relaxed);
    health.requests.fetch_add(1, Ordering::Relaxed);
    let series = target.metrics.get_or_init(|| TargetMetrics::new(&gw.metrics, labels[0], labels[1]));
    series.requests.inc();
    let up_started = Instant::now();
    let client = upstream.client();
    let sent = match websocket {
        true => tokio::time::timeout(timeout, client.upgrade(up_req)).await,
        false => tokio::time::timeout(timeout, client.request(up_req)).await,
    };
    health.in_flight.fetch_sub(1, Ordering::Relaxed);
    let elapsed = up_started.elapsed();
    x.upstream_ms = Some(elapsed.as_secs_f64() * 1e3);
    series.upstream_duration.observe(elapsed.as_secs_f64());
    series.duration.observe(elapsed.as_secs_f64());
    let result = match sent {
        Err(_) => Err(Failed::Upstream(
            Outcome::Timeout,
            GwError::new(Code::UpstreamTimeout, "the upstream did not answer in time"),
        )),
        Ok(Err(e)) => match client_body_error(&e) {
            Some(ClientFault::TooLarge) => {
                return Err(Failed::Final(too_large(ctx.loaded.policy.graph.settings().max_body).closing()))
            }
            Some(ClientFault::Malformed) => {
                let e = GwError::new(Code::BadBody, "the request body is malformed or was cut off");
                return Err(Failed::Final(e.closing()));
            }
            None => {
                let outcome = if e.is_connect() { Outcome::Connect } else { Outcome::Reset };
                tracing::warn!(upstream = %upstream.name, target = %target.id, error = %describe(&e, e.is_connect()), "upstream request failed");
                Err(Failed::Upstream(
                    outcome,
                    GwError::new(Code::UpstreamUnavailable, "the upstream could not be reached"),
                ))
            }
        },
        Ok(Ok(resp)) => Ok(resp),
    };
    if matches!(result, Err(Failed::Final(_))) {
        return result;
    }
    let outcome = outcome_of(&result);
    if outcome != Outcome::Success {
        gw.metrics.upstream_errors.with_label_values(&[&upstream.name, outcome.kind()]).inc();
        gw.metrics.target_errors.with_label_values(&[labels[0], labels[1], outcome.kind()]).inc();
    }
    if upstream.pool.record(to.index, outcome, elapsed) {
        gw.metrics.target_ejections.with_label_values(&labels).inc();
    }
    result
}

/// What a try means for the target's health and for a retry: a 5xx answer is a failure; a
/// failure that is not the target's (`Final`) counts as nothing.
fn outcome_of(sent: &Result<Response<Driven>, Failed>) -> Outcome {
    match sent {
        Ok(resp) if resp.status().is_server_error() => Outcome::Status(resp.status().as_u16()),
        Ok(_) | Err(Failed::Final(_)) => Outcome::Success,
        Err(Failed::Upstream(outcome, _)) => *outcome,
    }
}

/// The answer passed back: a websocket spliced, or the head and a streamed body.
fn relay(
    ctx: Ctx<'_>,
    to: &Picked<'_>,
    resp: Response<Driven>,
    websocket: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    x: &mut Exchange,
) -> Response<Body> {
    if websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // An open session keeps its concurrency slots until it closes.
        return splice_websocket(resp, client_upgrade, std::mem::take(&mut x.hold));
    }
    let (mut parts, incoming) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    let up_name = to.upstream.name.clone();
    let errors = ctx.gw.metrics.upstream_errors.clone();
    // Chunks pass through as they arrive. An upstream failing mid-body surfaces as a body
    // error, which makes hyper abort the client's response instead of ending it cleanly.
    let body = incoming.map_err(move |e| {
        errors.with_label_values(&[&up_name, "stream"]).inc();
        BoxError::from(e)
    });
    Response::from_parts(parts, body.boxed())
}

enum ClientFault {
    TooLarge,
    Malformed,
}

/// Whether a failed upstream request failed on the client's body, and how.
fn client_body_error(e: &crate::client::Error) -> Option<ClientFault> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut from_client = false;
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return Some(ClientFault::TooLarge);
        }
        from_client |= s.is::<ClientBodyError>();
        source = s.source();
    }
    from_client.then_some(ClientFault::Malformed)
}

/// Answer the client's upgrade with the upstream's 101 and splice the two connections.
fn splice_websocket(
    mut up_resp: Response<Driven>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    hold: Hold,
) -> Response<Body> {
    let upstream_upgrade = hyper::upgrade::on(&mut up_resp);
    let (parts, _) = up_resp.into_parts();
    if let Some(client_upgrade) = client_upgrade {
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            drop(hold);
        });
    }
    Response::from_parts(parts, empty())
}
