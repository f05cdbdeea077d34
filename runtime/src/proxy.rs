//! The request pipeline: the phases of `phases`, called in order. Every request is
//! accounted by an `Account` guard, and every gateway-made answer uses the one error shape
//! of `errors`.

use std::sync::Arc;

use gw_engine::request::Outcome;
use http::{Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::account::Account;
use crate::body::{Body, BoxError};
use crate::budget::TokenPlan;
use crate::exchange::{Exchange, TenantGuard};
use crate::gateway::Gateway;
use crate::headers;
use crate::idle::InFlight;
use crate::phases::{
    cache, cors, decide, finish, forward, inspect, limit, respond, target, upstream_request, Ctx, Stop,
};
use crate::server::{ConnInfo, ResponseFuture};

/// The proxy service for one connection.
pub fn service(
    gw: Arc<Gateway>,
) -> impl Fn(ConnInfo, InFlight, Request<Incoming>) -> ResponseFuture + Clone + Send + Sync + 'static {
    move |info, in_flight, req| {
        let gw = gw.clone();
        Box::pin(async move { handle(gw, info, in_flight, req).await })
    }
}

/// Serve one request. Never fails: every problem becomes an error response. The request is
/// accounted by an `Account` guard, whatever ends it.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    in_flight: InFlight,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    // The policy this request is decided and forwarded under, even if a reload happens meanwhile.
    let loaded = gw.policy();
    let request_id = headers::request_id(req.headers());
    let trace = headers::Trace::of(req.headers());
    let (head, body) = req.into_parts();
    let mut account = Account::start(gw.clone(), conn, in_flight, &head, &request_id, &trace, loaded.policy.generation);
    let reuse = finish::Reuse::of(&head, &body);
    // The pipeline takes the body when it reads or forwards it; one it leaves was never read.
    let mut body = Some(body);
    // Every log line of the request carries its id.
    let span = tracing::info_span!("request", request_id = %request_id, trace_id = %trace.id);
    let ctx = Ctx { gw: &gw, loaded: &loaded, conn, request_id: &request_id, trace: &trace };
    let result = pipeline(ctx, Request::from_parts(head, ()), &mut body, &mut account.x).instrument(span).await;
    let upstream_failed = matches!(&result, Err(Stop::Error(e)) if e.status.is_server_error());
    let mut resp = match result {
        Ok(resp) | Err(Stop::Answer(resp)) => resp,
        Err(Stop::Error(e)) => {
            account.x.error = Some(e.code.as_str());
            e.into_response(&request_id)
        }
    };
    cors::apply(resp.headers_mut(), &account.x.answer_headers);
    finish::stamp(resp.headers_mut(), &request_id, &loaded.policy);
    drop(loaded);
    reuse.settle(&mut resp, body.take(), upstream_failed).await;
    Ok(finish::account_body(gw, resp, account))
}

/// The phases in order: inspect → decide → limit → respond, or build the upstream request
/// and forward it. Each phase may end the request (`Stop`).
async fn pipeline(
    ctx: Ctx<'_>,
    mut req: Request<()>,
    body: &mut Option<Incoming>,
    x: &mut Exchange,
) -> Result<Response<Body>, Stop> {
    let (gw, graph) = (ctx.gw, &ctx.loaded.policy.graph);
    inspect::check(ctx.loaded, &mut req)?;
    let greq = inspect::request_view(&req, ctx.conn.peer);
    let client_upgrade = inspect::is_websocket_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, ()) = req.into_parts();

    let decide::Decided { decision, route, mut buffered, request: greq } = decide::decide(ctx, greq, body, x).await?;

    let forwarding = matches!(decision.outcome, Outcome::Forward { .. });
    let cached = match forwarding {
        true => cache::lookup(ctx, route, &decision, &parts, &mut buffered, body, x).await?,
        false => None,
    };
    let hit = cached.as_ref().and_then(|c| c.hit.clone());
    let plan = match forwarding && hit.is_none() {
        true => TokenPlan::new(&decision, graph.limits(), buffered.as_ref()),
        false => None,
    };
    let admitted = limit::check(ctx, &decision, plan.as_ref(), hit.is_none(), x).await?;
    if !forwarding {
        let mut resp = respond::answer(ctx, (&greq, &decision), route, buffered, body).await?;
        limit::rate_headers(resp.headers_mut(), &admitted.results);
        return Ok(resp);
    }
    // The request counts in its tenant's and its route's traffic until its answer ends.
    if let Some(id) = &decision.identity {
        x.hold.tenant = Some(TenantGuard::start(gw.traffic.tenant(&id.tenant)));
    }
    x.hold.route = Some(TenantGuard::start(gw.traffic.route(&route.name)));
    if let Some(entry) = hit {
        let mut resp = cache::answer(&entry);
        limit::rate_headers(resp.headers_mut(), &admitted.results);
        return Ok(resp);
    }
    if let Some(plan) = plan {
        x.usage = Some(limit::usage_plan(gw, plan, &admitted, &mut buffered, &mut parts.headers));
    }

    let sel = target::select(ctx.loaded, route, &decision, &parts, ctx.conn.peer)?;
    let retries = sel.upstream.retry.is_some();
    let up_body = upstream_request::body(buffered, body.take(), graph.settings().max_body, retries, x).await?;
    let websocket = route.websocket && client_upgrade.is_some();
    // Boxed: its state is the largest of the pipeline's, and every request's future is moved
    // whole into its box; kept out of line, that move copies kilobytes less.
    let mut resp =
        Box::pin(forward::run(ctx, route, (&greq, &decision), &parts, &sel, up_body, websocket, client_upgrade, x))
            .await?;
    limit::rate_headers(resp.headers_mut(), &admitted.results);
    if let Some(lookup) = cached {
        resp = cache::store(ctx, lookup, resp);
    }
    Ok(resp)
}
