//! The headers gw adds to every answer of a decided request, whoever made it (the upstream,
//! a `respond`, a refusal): the route's CORS headers (`Vary: Origin` included), and
//! `WWW-Authenticate: Basic` on a 401 of a route that accepts basic auth. A CORS preflight
//! is answered here, without reaching the upstream or reading credentials.

use gw_engine::graph::RouteInfo;
use gw_engine::request::{Decision, Outcome, Request as GwRequest, BASIC_CHALLENGE};
use http::header::{HeaderMap, HeaderName, HeaderValue, VARY};
use http::{Response, StatusCode};

use crate::body::full;
use crate::errors::{Code, GwError};
use crate::phases::Stop;

/// The headers to add to the answer of `decision` on `route`.
pub fn answer_headers(route: &RouteInfo, greq: &GwRequest, decision: &Decision) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    if let Some(policy) = &route.cors {
        out = match &decision.outcome {
            Outcome::Preflight { allowed: true, .. } => policy.preflight_headers(greq),
            _ => policy.response_headers(greq.header("origin")),
        };
    }
    if matches!(decision.outcome, Outcome::Unauthorized { .. }) && route.auth.as_ref().is_some_and(|a| a.has_basic()) {
        out.push(("www-authenticate", BASIC_CHALLENGE.to_string()));
    }
    out
}

/// The answer to a preflight: 204 when allowed, else 403 `cors_preflight_refused`.
pub fn preflight(decision: &Decision) -> Stop {
    match &decision.outcome {
        Outcome::Preflight { allowed: true, .. } => {
            let mut resp = Response::new(full(""));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Stop::Answer(resp)
        }
        Outcome::Preflight { message, .. } => GwError::new(Code::CorsPreflightRefused, message.clone()).into(),
        _ => GwError::new(Code::Internal, "not a preflight").into(),
    }
}

/// Add `headers` to an answer; `Vary` is merged with the one it has.
pub fn apply(headers: &mut HeaderMap, add: &[(&'static str, String)]) {
    for (name, value) in add {
        let Ok(v) = HeaderValue::from_str(value) else { continue };
        if *name == "vary" {
            let merged = match headers.get(VARY).and_then(|h| h.to_str().ok()) {
                Some(old) if !old.is_empty() => format!("{old}, {value}"),
                _ => value.clone(),
            };
            if let Ok(v) = HeaderValue::from_str(&merged) {
                headers.insert(VARY, v);
            }
            continue;
        }
        headers.insert(HeaderName::from_static(name), v);
    }
}
