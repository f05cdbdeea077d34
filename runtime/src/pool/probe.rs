//! Active health checks: `health METHOD "/path" every D [timeout D]` sends the request to
//! each target of a pool that a route uses, at the interval with ±10% jitter (the first
//! check within the first second, or the interval if shorter, at a random point), so
//! replicas and targets are not probed in lock-step. A check passes on a 2xx answer (or the
//! `expect` status) within its timeout; anything else (connect error, timeout, another
//! status) fails it. `unhealthy` failures in a row take a target out, `healthy` passes in a
//! row bring it back.
//!
//! A policy generation's checks stop when it is replaced: they hold only a `Weak` of its
//! liveness token. The next generation's checks start on the same shared health, so a
//! reload keeps what was learnt.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use gw_engine::graph::{HealthInfo, TargetAddr};
use http::{Request, StatusCode, Uri};

use crate::body::{empty, Body};
use crate::pool::health::TargetHealth;

/// Start the checks of one pool's targets. `send` sends a request and says its status.
pub fn start<F, Fut>(
    upstream: &str,
    targets: Vec<(TargetAddr, Arc<TargetHealth>)>,
    spec: &HealthInfo,
    alive: Weak<()>,
    send: F,
) where
    F: Fn(Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<StatusCode, String>> + Send + 'static,
{
    // Checks run on the gateway's runtime; without one (a tool embedding the library) there
    // is nothing to run them on, and passive health still applies.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(%upstream, "no async runtime: health checks not started");
        return;
    };
    let every = Duration::from_nanos(spec.every_ns);
    let timeout = Duration::from_nanos(spec.timeout_ns);
    let method = http::Method::from_bytes(spec.method.as_str().as_bytes()).unwrap_or(http::Method::GET);
    let (expect, healthy, unhealthy) = (spec.expect_status, spec.healthy_after, spec.unhealthy_after);
    for (addr, health) in targets {
        let (alive, send, method, upstream) = (alive.clone(), send.clone(), method.clone(), upstream.to_string());
        let uri = Uri::builder()
            .scheme(addr.scheme.clone())
            .authority(addr.authority.clone())
            .path_and_query(format!("{}{}", addr.base_path, spec.path))
            .build();
        runtime.spawn(async move {
            let first = every.min(Duration::from_secs(1)).mul_f64(rand::random::<f64>());
            tokio::time::sleep(first).await;
            while alive.upgrade().is_some() {
                let (passed, detail) = match &uri {
                    Ok(uri) => check(&send, &method, uri.clone(), timeout, expect).await,
                    Err(e) => (false, format!("the check URL is invalid: {e}")),
                };
                if let Some(up) = health.checked(passed, &detail, healthy, unhealthy) {
                    let target = addr.to_string();
                    if up {
                        tracing::info!(%upstream, %target, "target back in rotation: health checks pass");
                    } else {
                        tracing::warn!(%upstream, %target, %detail, "target out of rotation: health check failed");
                    }
                }
                tokio::time::sleep(every.mul_f64(0.9 + 0.2 * rand::random::<f64>())).await;
            }
        });
    }
}

async fn check<F, Fut>(
    send: &F,
    method: &http::Method,
    uri: Uri,
    timeout: Duration,
    expect: Option<u16>,
) -> (bool, String)
where
    F: Fn(Request<Body>) -> Fut,
    Fut: Future<Output = Result<StatusCode, String>>,
{
    let mut req = Request::new(empty());
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    req.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static("gw-health-check"));
    match tokio::time::timeout(timeout, send(req)).await {
        Ok(Ok(status)) if expect.map_or(status.is_success(), |e| status.as_u16() == e) => {
            (true, format!("status {}", status.as_u16()))
        }
        Ok(Ok(status)) => {
            let wanted = expect.map_or("2xx".to_string(), |e| e.to_string());
            (false, format!("status {} ({wanted} expected)", status.as_u16()))
        }
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("no answer within {}ms", timeout.as_millis())),
    }
}
