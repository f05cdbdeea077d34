//! Phase 4, respond: what a route answers itself, without an upstream: its static
//! `respond`, or a builtin (`serve tokens|metrics|ready|upstreams|usage|health`).

use bytes::Bytes;
use gw_engine::graph::{RespondInfo, RouteInfo};
use gw_engine::request::{Decision, Outcome, Request as GwRequest};
use gw_engine::template::Facts;
use gw_engine::value::Undecided;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{empty, full, Body};
use crate::errors::{Code, GwError};
use crate::gateway::{Gateway, Loaded};
use crate::phases::inspect::read_body;
use crate::phases::Ctx;

/// The answer of a route that answers itself. `buffered` is the body if the decision read it.
pub async fn answer(
    ctx: Ctx<'_>,
    (greq, decision): (&GwRequest, &Decision),
    route: &RouteInfo,
    buffered: Option<Bytes>,
    body: &mut Option<Incoming>,
) -> Result<Response<Body>, GwError> {
    let (gw, loaded) = (ctx.gw, ctx.loaded);
    let settings = loaded.policy.graph.settings();
    let resp = match &decision.outcome {
        Outcome::Serve { builtin } if builtin == "tokens" => {
            let bytes = match buffered {
                Some(b) => b,
                None => read_body(body.take(), settings.max_body).await?,
            };
            let counted = crate::budget::count_request(&bytes).map_err(|m| GwError::new(Code::BadTokenRequest, m))?;
            let mut resp = Response::new(full(counted.to_string()));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Outcome::Serve { builtin } => serve_builtin(gw, loaded, builtin),
        _ => {
            // The trace id a `respond` template reads: the client's trace continued, or a new one.
            let mut incoming = http::HeaderMap::new();
            if let Some(v) = greq.header("traceparent").and_then(|v| HeaderValue::from_str(v).ok()) {
                incoming.insert("traceparent", v);
            }
            let traceparent = crate::headers::traceparent(&incoming);
            let trace_id = crate::headers::trace_id(&traceparent);
            let facts = Facts { request: greq, decision, request_id: ctx.request_id, trace_id };
            respond(route.respond.as_ref(), &facts)?
        }
    };
    Ok(resp)
}

/// A route's own answer: its status, its body and headers rendered from the request. A
/// value that cannot be rendered (a control character in a header, a header sent twice)
/// refuses the request with 400 instead.
fn respond(info: Option<&RespondInfo>, facts: &Facts<'_>) -> Result<Response<Body>, GwError> {
    let Some(info) = info else { return Ok(Response::new(empty())) };
    let refused = |u: Undecided| GwError::new(Code::of_refusal(u.code).unwrap_or(Code::InvalidHeader), u.message);
    let body = info.body.render(facts).map_err(refused)?;
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(info.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = info.content_type {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (name, template) in &info.headers {
        let Some(text) = template.render_header(name, facts).map_err(refused)? else { continue };
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_str(&text);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(GwError::new(Code::InvalidHeader, "a header the route answers with is not valid"));
        };
        resp.headers_mut().insert(name, value);
    }
    Ok(resp)
}

fn serve_builtin(gw: &Gateway, loaded: &Loaded, builtin: &str) -> Response<Body> {
    let (content_type, body) = match builtin {
        "metrics" => ("text/plain; version=0.0.4", gw.metrics.render()),
        "ready" => (
            "application/json",
            serde_json::json!({"status": "ready", "generation": loaded.policy.generation}).to_string(),
        ),
        "upstreams" => ("application/json", crate::views::upstreams_view(gw).to_string()),
        "usage" => ("application/json", crate::views::usage_view(gw).to_string()),
        _ => ("application/json", r#"{"status":"ok"}"#.to_string()),
    };
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
