//! Phase 7, forward: the request sent to the picked target (within the upstream's connection
//! slots and timeout), failures mapped to gateway errors, and the answer streamed back, or a
//! websocket spliced.

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{empty, Body, BoxError};
use crate::errors::{Code, GwError};
use crate::exchange::{Exchange, Hold};
use crate::headers;
use crate::phases::inspect::too_large;
use crate::phases::target::Picked;
use crate::phases::upstream_request::ClientBodyError;
use crate::phases::Ctx;

/// Send the request to the picked target and stream the answer back.
pub async fn send(
    ctx: Ctx<'_>,
    to: &Picked<'_>,
    up_req: Request<Body>,
    websocket: bool,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    x: &mut Exchange,
) -> Result<Response<Body>, GwError> {
    let (gw, upstream, target) = (ctx.gw, to.upstream, to.target);
    let _slot = match &upstream.slots {
        Some(sem) => match tokio::time::timeout(upstream.queue_timeout, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => return Err(GwError::new(Code::UpstreamBusy, "the upstream has no free connection")),
        },
        None => None,
    };
    target.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    target.stats.requests.fetch_add(1, Ordering::Relaxed);
    let up_started = Instant::now();
    let sent = tokio::time::timeout(upstream.timeout, upstream.client().request(up_req)).await;
    target.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    match &sent {
        Ok(Ok(r)) if !r.status().is_server_error() => target.stats.succeeded(),
        _ => target.stats.failed(),
    }
    let upstream_secs = up_started.elapsed().as_secs_f64();
    x.upstream_ms = Some(upstream_secs * 1e3);
    gw.metrics.upstream_duration.with_label_values(&[&upstream.name]).observe(upstream_secs);
    let resp = match sent {
        Err(_) => {
            gw.metrics.upstream_errors.with_label_values(&[&upstream.name, "timeout"]).inc();
            return Err(GwError::new(Code::UpstreamTimeout, "the upstream did not answer in time"));
        }
        Ok(Err(e)) => {
            match client_body_error(&e) {
                Some(ClientFault::TooLarge) => {
                    return Err(too_large(ctx.loaded.policy.graph.settings().max_body).closing())
                }
                Some(ClientFault::Malformed) => {
                    return Err(GwError::new(Code::BadBody, "the request body is malformed or was cut off").closing())
                }
                None => {}
            }
            let kind = if e.is_connect() { "connect" } else { "protocol" };
            gw.metrics.upstream_errors.with_label_values(&[&upstream.name, kind]).inc();
            tracing::warn!(upstream = %upstream.name, kind, error = %e, "upstream request failed");
            return Err(GwError::new(Code::UpstreamUnavailable, "the upstream could not be reached"));
        }
        Ok(Ok(resp)) => resp,
    };

    if websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // An open session keeps its concurrency slots until it closes.
        return Ok(splice_websocket(resp, client_upgrade, std::mem::take(&mut x.hold)));
    }
    if resp.status().is_server_error() {
        gw.metrics.upstream_errors.with_label_values(&[&upstream.name, "status_5xx"]).inc();
    }
    let (mut parts, incoming) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    let up_name = upstream.name.clone();
    let errors = gw.metrics.upstream_errors.clone();
    // Chunks pass through as they arrive. An upstream failing mid-body surfaces as a body
    // error, which makes hyper abort the client's response instead of ending it cleanly.
    let body = incoming.map_err(move |e| {
        errors.with_label_values(&[&up_name, "stream"]).inc();
        BoxError::from(e)
    });
    Ok(Response::from_parts(parts, body.boxed()))
}

enum ClientFault {
    TooLarge,
    Malformed,
}

/// Whether a failed upstream request failed on the client's body, and how.
fn client_body_error(e: &hyper_util::client::legacy::Error) -> Option<ClientFault> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut from_client = false;
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return Some(ClientFault::TooLarge);
        }
        from_client |= s.is::<ClientBodyError>();
        source = s.source();
    }
    from_client.then_some(ClientFault::Malformed)
}

/// Answer the client's upgrade with the upstream's 101 and splice the two connections.
fn splice_websocket(
    mut up_resp: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    hold: Hold,
) -> Response<Body> {
    let upstream_upgrade = hyper::upgrade::on(&mut up_resp);
    let (parts, _) = up_resp.into_parts();
    if let Some(client_upgrade) = client_upgrade {
        tokio::spawn(async move {
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                return;
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            drop(hold);
        });
    }
    Response::from_parts(parts, empty())
}
