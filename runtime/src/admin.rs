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
use crate::errors::GwError;
use crate::gateway::{unix_ms, Gateway};
use crate::proxy::ConnInfo;

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
        .and_then(|q| gw_compiler::request::parse_query(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
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
        return Err(GwError::new(401, "invalid_admin_token", "the admin token is missing or wrong"));
    }
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => {
            let mut resp = Response::new(full(gw.metrics.render()));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            Ok(resp)
        }
        (Method::GET, "/admin/policy") => Ok(json(StatusCode::OK, policy_view(gw))),
        (Method::GET, "/admin/usage") => Ok(json(StatusCode::OK, usage_view(gw))),
        (Method::GET, "/admin/upstreams") => Ok(json(StatusCode::OK, upstreams_view(gw))),
        (Method::POST, "/admin/explain") => {
            let body = read(req).await?;
            let text =
                std::str::from_utf8(&body).map_err(|_| GwError::new(400, "bad_body", "the body is not UTF-8"))?;
            let request =
                gw_compiler::cli::parse_request(text).map_err(|e| GwError::new(400, "bad_request_description", e))?;
            let policy = gw.policy();
            let decision = policy.policy.graph.decide_traced(&request);
            Ok(json(
                StatusCode::OK,
                serde_json::json!({
                    "generation": policy.policy.generation,
                    "status": decision.outcome.status(),
                    "decision": decision,
                    "text": gw_compiler::cli::explain_text(&request, &decision),
                }),
            ))
        }
        (Method::POST, "/admin/tokens") => {
            let body = read(req).await?;
            let counted = crate::budget::count_request(&body).map_err(|m| GwError::new(400, "bad_token_request", m))?;
            Ok(json(StatusCode::OK, counted))
        }
        (Method::POST, "/admin/reload") => {
            let report = gw.reload().await;
            let status = if report.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            Ok(json(status, serde_json::to_value(&report).unwrap_or_default()))
        }
        (
            _,
            "/metrics" | "/admin/policy" | "/admin/usage" | "/admin/upstreams" | "/admin/explain" | "/admin/tokens"
            | "/admin/reload",
        ) => Err(GwError::new(405, "method_not_allowed", "wrong method for this admin endpoint")),
        _ => Err(GwError::new(404, "no_route", format!("no admin endpoint {path}"))),
    }
}

fn policy_view(gw: &Gateway) -> serde_json::Value {
    let p = gw.policy();
    let last = gw.last_reload.lock().map(|l| l.clone()).unwrap_or(None);
    serde_json::json!({
        "source": gw.source.describe(),
        "generation": p.policy.generation,
        "hash": p.policy.hash,
        "short_hash": p.policy.short_hash(),
        "loaded_at_unix_ms": unix_ms(p.policy.loaded_at),
        "files": p.policy.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "warnings": p.policy.warnings,
        "routes": p.policy.graph.routes().iter().map(|r| &r.name).collect::<Vec<_>>(),
        "upstreams": p.policy.graph.upstreams().iter().map(|u| &u.name).collect::<Vec<_>>(),
        "last_reload": last,
    })
}

/// Per tenant: traffic now, and the tenant's limits as declared.
pub fn usage_view(gw: &Gateway) -> serde_json::Value {
    let p = gw.policy();
    let graph = &p.policy.graph;
    let traffic = gw.traffic.view();
    let tenants: Vec<serde_json::Value> = graph
        .tenants()
        .iter()
        .map(|t| {
            let seen = traffic.iter().find(|v| v.tenant == t.name);
            let limits: Vec<serde_json::Value> =
                t.limits.iter().filter_map(|&i| graph.limits().get(i)).map(|l| limit_state(gw, l, &t.name)).collect();
            serde_json::json!({
                "tenant": t.name,
                "traffic": seen,
                "limits": limits,
            })
        })
        .collect();
    // Tenants seen in traffic but no longer (or never) declared, e.g. after a reload.
    let undeclared: Vec<_> = traffic.iter().filter(|v| !graph.tenants().iter().any(|t| t.name == v.tenant)).collect();
    serde_json::json!({
        "generation": p.policy.generation,
        "tenants": tenants,
        "undeclared_tenants": undeclared,
    })
}

/// A tenant limit as declared, with its counter's state now (in this process's store: with
/// `state redis`, the shared counters are in Redis and `state` is `null`).
fn limit_state(gw: &Gateway, l: &gw_compiler::graph::LimitInfo, tenant: &str) -> serde_json::Value {
    use gw_compiler::gcra::Gcra;
    use gw_compiler::graph::LimitKindInfo;
    let local = gw.limiter.redis().is_none();
    let state = match (&l.kind, local) {
        (_, false) => serde_json::Value::Null,
        (LimitKindInfo::Rate { count, window_ns, burst }, true) => {
            let gcra = Gcra::new(*count, *window_ns, *burst);
            serde_json::json!({"capacity": gcra.burst(), "remaining": gw.limiter.local.remaining(&l.id, tenant, gcra)})
        }
        (LimitKindInfo::Tokens { count, window_ns, .. }, true) => {
            let gcra = Gcra::new(*count, *window_ns, None);
            serde_json::json!({"capacity": gcra.burst(), "remaining": gw.limiter.local.remaining(&l.id, tenant, gcra)})
        }
        (LimitKindInfo::Concurrent { max }, true) => {
            serde_json::json!({"capacity": max, "in_use": gw.limiter.local.held(&l.id, tenant)})
        }
    };
    serde_json::json!({"limit": l, "state": state})
}

/// Each upstream and what the gateway has seen of its targets.
pub fn upstreams_view(gw: &Gateway) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let p = gw.policy();
    let upstreams: Vec<serde_json::Value> = p
        .upstreams
        .iter()
        .map(|u| {
            let targets: Vec<serde_json::Value> = u
                .targets
                .iter()
                .map(|t| {
                    let s = &t.stats;
                    let consecutive = s.consecutive_failures.load(Relaxed);
                    serde_json::json!({
                        // Host and port only: a target URL may carry credentials.
                        "target": match t.authority.port_u16() {
                            Some(port) => format!("{}://{}:{port}", t.scheme, t.authority.host()),
                            None => format!("{}://{}", t.scheme, t.authority.host()),
                        },
                        "weight": t.weight,
                        "health": if consecutive == 0 { "ok" } else { "failing" },
                        "in_flight": s.in_flight.load(Relaxed),
                        "requests": s.requests.load(Relaxed),
                        "failures": s.failures.load(Relaxed),
                        "consecutive_failures": consecutive,
                        "last_failure_unix_ms": match s.last_failure_unix_ms.load(Relaxed) { 0 => None, ms => Some(ms) },
                    })
                })
                .collect();
            serde_json::json!({
                "name": u.name,
                "balance": u.balance,
                "timeout_ms": u.timeout.as_millis() as u64,
                "health_checks": "passive",
                "targets": targets,
            })
        })
        .collect();
    serde_json::json!({ "generation": p.policy.generation, "upstreams": upstreams })
}

async fn read(req: Request<Incoming>) -> Result<Bytes, GwError> {
    Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| GwError::new(413, "request_too_large", "admin request bodies are limited to 1 MiB"))
}
