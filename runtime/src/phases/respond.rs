//! Phase 4, respond: what a route answers itself, without an upstream: its static
//! `respond`, or a builtin (`serve tokens|metrics|ready|upstreams|usage|health|config`).

use bytes::Bytes;
use gw_engine::graph::{RespondInfo, RouteInfo};
use gw_engine::lang::Builtin;
use gw_engine::request::{Decision, Outcome, Request as GwRequest};
use gw_engine::template::Facts;
use gw_engine::value::Undecided;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{empty, full, Body};
use crate::errors::{Code, GwError};
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
        Outcome::Serve { builtin } => {
            // No catch-all arm: a builtin the language gains must get its handler here before
            // the runtime compiles.
            let (content_type, body) = match builtin {
                Builtin::Tokens => {
                    let bytes = match buffered {
                        Some(b) => b,
                        None => read_body(body.take(), settings.max_body).await?,
                    };
                    let counted = crate::budget::count_request_blocking(bytes)
                        .await
                        .map_err(|m| GwError::new(Code::BadTokenRequest, m))?;
                    ("application/json", counted.to_string())
                }
                Builtin::Metrics => ("text/plain; version=0.0.4", gw.render_metrics()),
                Builtin::Ready => (
                    "application/json",
                    serde_json::json!({"status": "ready", "generation": loaded.policy.generation}).to_string(),
                ),
                Builtin::Upstreams => ("application/json", crate::views::upstreams_view(gw).to_string()),
                Builtin::Usage => ("application/json", crate::views::usage_view(gw).to_string()),
                Builtin::Config => ("application/json", crate::config_view::config_view(gw).to_string()),
                Builtin::Health => ("application/json", r#"{"status":"ok"}"#.to_string()),
            };
            let mut resp = Response::new(full(body));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        _ => {
            let facts = Facts { request: greq, decision, request_id: ctx.request_id, trace_id: &ctx.trace.id };
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
