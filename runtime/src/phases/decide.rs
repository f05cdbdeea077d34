//! Phase 2, decide: the compiled graph picks the route and its outcome. The body is read
//! first when a candidate route needs it. A decision that refuses (no route, wrong method,
//! bad credential, a guard) ends the pipeline here.

use bytes::Bytes;
use gw_engine::graph::RouteInfo;
use gw_engine::request::{Decision, Outcome, Request as GwRequest};
use http::header::HeaderValue;
use hyper::body::Incoming;

use crate::errors::{Code, GwError};
use crate::exchange::Exchange;
use crate::phases::inspect::read_body;
use crate::phases::{cors, Ctx, Stop};

/// A request the graph routed to a route that answers or forwards it.
pub struct Decided<'a> {
    pub decision: Decision,
    pub route: &'a RouteInfo,
    /// The request body, when deciding read it.
    pub buffered: Option<Bytes>,
    /// The request as the graph read it: what `set header` and `respond` templates read.
    pub request: GwRequest,
}

/// Decide the request (`greq`, its view from `inspect`), reading its body if a route needs it.
pub async fn decide<'a>(
    ctx: Ctx<'a>,
    mut greq: GwRequest,
    body: &mut Option<Incoming>,
    x: &mut Exchange,
) -> Result<Decided<'a>, Stop> {
    let graph = &ctx.loaded.policy.graph;
    let settings = graph.settings();
    // Read the body only when a candidate route needs it (body predicates, token counting),
    // and only once the credential is known to be good: `wants_body` is false when every
    // route the body could select refuses the credential (decided without the body).
    if graph.needs_password_check(&greq) {
        greq = check_passwords(ctx, greq).await?;
    }
    let mut buffered: Option<Bytes> = None;
    if graph.wants_body(&greq) {
        let bytes = read_body(body.take(), settings.max_body).await?;
        // The decision reads these bytes with the strict reader (gw_engine::ijson) and
        // answers `Outcome::Invalid` for a body it refuses, before any limit or upstream.
        greq.body = Some(bytes.to_vec());
        buffered = Some(bytes);
    }

    let decision = graph.decide(&greq);
    if let Some(r) = &decision.route {
        x.route = Some(r.clone());
    }
    let route = decision.route_index.and_then(|i| graph.routes().get(i));
    if let Some(r) = route {
        x.answer_headers = cors::answer_headers(r, &greq, &decision);
    }
    if let Some(id) = &decision.identity {
        x.key_name = Some(id.key_name.clone());
        x.tenant = Some(id.tenant.clone());
    }
    match &decision.outcome {
        Outcome::NoRoute => {
            Err(GwError::new(Code::NoRoute, format!("no route for {} {}", greq.method, greq.path)).into())
        }
        Outcome::MethodNotAllowed { allowed } => {
            let mut resp = GwError::new(Code::MethodNotAllowed, format!("{} is not allowed here", greq.method))
                .into_response(ctx.request_id);
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
            Err(Stop::Answer(resp))
        }
        Outcome::Unauthorized { message } => {
            let code = match message.as_str() {
                gw_engine::request::MISSING_KEY => Code::MissingApiKey,
                gw_engine::request::INVALID_KEY => Code::InvalidApiKey,
                _ => Code::Unauthorized,
            };
            Err(GwError::new(code, message.clone()).into())
        }
        Outcome::Preflight { .. } => Err(cors::preflight(&decision)),
        Outcome::Denied { status, message } => {
            Err(GwError::new(Code::Denied, message.clone()).with_status(*status).into())
        }
        Outcome::Invalid { code, message } => {
            let code = Code::of_refusal(code).unwrap_or(Code::Internal);
            Err(GwError::new(code, message.clone()).into())
        }
        // Everything a route answers itself or forwards is subject to its limits.
        Outcome::Respond { .. } | Outcome::Serve { .. } | Outcome::Forward { .. } => {
            let route = route.ok_or_else(|| GwError::new(Code::Internal, "route lost"))?;
            Ok(Decided { decision, route, buffered, request: greq })
        }
    }
}

/// Run the slow password hashes a basic credential needs on a blocking thread (bcrypt takes
/// tens of milliseconds, which on the event loop would stall every connection it serves); the
/// outcomes land in the request's auth memo, which `wants_body` and `decide` then read.
async fn check_passwords(ctx: Ctx<'_>, greq: GwRequest) -> Result<GwRequest, Stop> {
    let failed = || GwError::new(Code::Internal, "the password check failed");
    // The semaphore is never closed; a failure to acquire it is refused all the same.
    let _permit = ctx.gw.password_checks.acquire().await.map_err(|_| failed())?;
    let loaded = ctx.loaded.clone();
    let checked = tokio::task::spawn_blocking(move || {
        loaded.policy.graph.check_passwords(&greq);
        greq
    });
    checked.await.map_err(|_| failed().into())
}
