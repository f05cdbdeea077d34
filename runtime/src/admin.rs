//! The admin listener: liveness, readiness, Prometheus metrics, the policy being served,
//! dry-run explanations and reloads. With a token in the policy every endpoint but
//! `/health` and `/ready` needs `Authorization: Bearer TOKEN`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;

use crate::body::{full, Body, BoxError};
use crate::errors::{Code, GwError};
use crate::gateway::Gateway;
use crate::server::ConnInfo;
use crate::views::{policy_view, upstreams_view, usage_view};

const MAX_ADMIN_BODY: usize = 1 << 20;

pub async fn handle(
    gw: Arc<Gateway>,
    _conn: ConnInfo,
    _in_flight: crate::idle::InFlight,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let request_id = crate::headers::request_id(req.headers());
    let mut resp = match route(&gw, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(&request_id),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    Ok(resp)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn authorized(gw: &Gateway, req: &Request<Incoming>) -> bool {
    let policy = gw.policy();
    let Some(token) = policy.policy.graph.settings().admin.as_ref().and_then(|a| a.token.as_ref()) else {
        return true;
    };
    let Some(expected) = token.get() else { return false };
    // `Authorization: Bearer TOKEN`, or `?token=TOKEN` for tools that can only set a URL (the
    // header is better: URLs end up in logs).
    let from_query = req
        .uri()
        .query()
        .and_then(|q| gw_engine::request::parse_query(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    let from_header =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let presented = from_header.map(str::to_string).or(from_query).unwrap_or_default();
    // Compare hashes so neither the length nor the content leaks through timing.
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    bool::from(a.ct_eq(&b))
}

async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> Result<Response<Body>, GwError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match path.as_str() {
        "/health" => return Ok(json(StatusCode::OK, serde_json::json!({"status": "ok"}))),
        "/ready" => {
            let p = gw.policy();
            return Ok(json(StatusCode::OK, serde_json::json!({"status": "ready", "generation": p.policy.generation})));
        }
        _ => {}
    }
    if !authorized(gw, &req) {
        return Err(GwError::new(Code::InvalidAdminToken, "the admin token is missing or wrong"));
    }
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => {
            let mut resp = Response::new(full(gw.render_metrics()));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            Ok(resp)
        }
        (Method::GET, "/admin/policy") => Ok(json(StatusCode::OK, policy_view(gw))),
        (Method::GET, "/admin/usage") => Ok(json(StatusCode::OK, usage_view(gw))),
        (Method::GET, "/admin/upstreams") => Ok(json(StatusCode::OK, upstreams_view(gw))),
        (Method::GET, "/admin/config") => Ok(json(StatusCode::OK, crate::config_view::config_view(gw))),
        (Method::GET, "/admin/requests") => {
            let filter = crate::recent::Filter::parse(req.uri().query())
                .map_err(|m| GwError::new(Code::BadRequestDescription, m))?;
            let records = gw.recent.query(&filter);
            Ok(json(StatusCode::OK, serde_json::json!({"count": records.len(), "requests": records})))
        }
        (Method::POST, "/admin/explain") => {
            let body = read(req).await?;
            let text = std::str::from_utf8(&body).map_err(|_| GwError::new(Code::BadBody, "the body is not UTF-8"))?;
            let request = gw_compile::parse_request(text).map_err(|e| GwError::new(Code::BadRequestDescription, e))?;
            let policy = gw.policy();
            let decision = policy.policy.graph.decide_traced(&request);
            Ok(json(
                StatusCode::OK,
                serde_json::json!({
                    "generation": policy.policy.generation,
                    "status": decision.outcome.status(),
                    "decision": decision,
                    "text": gw_compile::explain_text(&request, &decision),
                }),
            ))
        }
        (Method::POST, "/admin/tokens") => {
            let body = read(req).await?;
            let counted = crate::budget::count_request_blocking(body)
                .await
                .map_err(|m| GwError::new(Code::BadTokenRequest, m))?;
            Ok(json(StatusCode::OK, counted))
        }
        (Method::POST, "/admin/reload") => {
            let report = gw.reload().await;
            let status = if report.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            Ok(json(status, serde_json::to_value(&report).unwrap_or_default()))
        }
        (
            _,
            "/metrics" | "/admin/policy" | "/admin/usage" | "/admin/upstreams" | "/admin/config" | "/admin/requests"
            | "/admin/explain" | "/admin/tokens" | "/admin/reload",
        ) => Err(GwError::new(Code::MethodNotAllowed, "wrong method for this admin endpoint")),
        _ => Err(GwError::new(Code::NoRoute, format!("no admin endpoint {path}"))),
    }
}

async fn read(req: Request<Incoming>) -> Result<Bytes, GwError> {
    Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| GwError::new(Code::RequestTooLarge, "admin request bodies are limited to 1 MiB"))
}
