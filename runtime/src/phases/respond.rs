//! Phase 4, respond: what a route answers itself, without an upstream: its static
//! `respond`, or a builtin (`serve tokens|metrics|ready|upstreams|usage|health|config`).

use bytes::Bytes;
use gw_engine::graph::RouteInfo;
use gw_engine::lang::Builtin;
use gw_engine::request::{Decision, Outcome};
use http::header::HeaderValue;
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{empty, full, Body};
use crate::errors::{Code, GwError};
use crate::phases::inspect::read_body;
use crate::phases::Ctx;

/// The answer of a route that answers itself. `buffered` is the body if the decision read it.
pub async fn answer(
    ctx: Ctx<'_>,
    decision: &Decision,
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
                    let counted =
                        crate::budget::count_request(&bytes).map_err(|m| GwError::new(Code::BadTokenRequest, m))?;
                    ("application/json", counted.to_string())
                }
                Builtin::Metrics => ("text/plain; version=0.0.4", gw.metrics.render()),
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
        _ => respond(Some(route)),
    };
    Ok(resp)
}

fn respond(route: Option<&RouteInfo>) -> Response<Body> {
    let Some(info) = route.and_then(|r| r.respond.as_ref()) else {
        return Response::new(empty());
    };
    let mut resp = Response::new(full(info.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(info.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = info.content_type {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}
