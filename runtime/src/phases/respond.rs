//! Phase 4, respond: what a route answers itself, without an upstream: its static
//! `respond`, or a builtin (`serve tokens|metrics|ready|upstreams|usage|health`).

use bytes::Bytes;
use gw_engine::graph::RouteInfo;
use gw_engine::request::{Decision, Outcome};
use http::header::HeaderValue;
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
    decision: &Decision,
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
            let counted = crate::budget::count_request_blocking(bytes)
                .await
                .map_err(|m| GwError::new(Code::BadTokenRequest, m))?;
            let mut resp = Response::new(full(counted.to_string()));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Outcome::Serve { builtin } => serve_builtin(gw, loaded, builtin),
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
