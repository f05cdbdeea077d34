//! A mock OpenAI-compatible upstream.
//!
//! Used by the quickstart (`gw serve` starts it in-process when running the default policy), by
//! integration tests and by the load benchmark, so the hot path is kept cheap: no sleeping unless
//! asked to, request bodies parsed without building a JSON tree, streamed answers produced by a
//! hand-written body rather than a task and a channel.
//!
//! Endpoints (the OpenAI ones match on the path's suffix, so `/miniai/v2/chat/completions` works
//! like `/v1/chat/completions`; one trailing `/` is ignored):
//!
//! - `POST …/chat/completions`: a chat completion, streamed as server-sent events with
//!   `"stream": true` (a usage chunk is added with `"stream_options": {"include_usage": true}`).
//! - `POST …/embeddings`: deterministic 8-dimensional embeddings for a string or array `input`.
//! - `GET …/models`: a fixed list of models.
//! - `GET …/health`: `{"status":"ok"}`.
//! - `GET /mock/requests`: the recorded requests, oldest first; `DELETE /mock/requests` clears them.
//! - any path with `Upgrade: websocket` (HTTP/1.1): a WebSocket echoing text and binary messages.
//! - anything else: 404 with an OpenAI error body.
//!
//! Requests to `/mock/…` and health checks are not recorded, so they never disturb counts.
//!
//! Per-request fault injection through request headers (not applied to `/mock/…`):
//!
//! - `x-mock-delay-ms: N`: wait N ms before answering (overrides `--delay-ms`).
//! - `x-mock-status: N` (200..=599): answer with that status and an OpenAI error body.
//! - `x-mock-chunks: N`: content chunks in a streamed completion (words in a non-streamed one).
//! - `x-mock-chunk-delay-ms: N`: pause between streamed chunks.
//! - `x-mock-die-after: N`: a streamed completion aborts the connection after N content chunks
//!   (without the final chunk, `[DONE]` or the terminating 0-length chunk); a non-streamed one
//!   announces its full `content-length` and aborts after N bytes (at most all but the last).
//! - `x-mock-echo: 1`: answer 200 with the request as `/mock/requests` records it.
//!
//! A malformed `x-mock-*` value is answered with 400.

mod answers;
mod body;
mod chat;
mod config;
mod embeddings;
mod state;
mod websocket;

pub use config::MockConfig;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::answers::{error, injected, json_response, method_not_allowed, not_found, to_json};
use crate::body::MockBody;
use crate::chat::chat;
use crate::embeddings::embeddings;
use crate::state::{roll, Faults, Record, State, MAX_BODY, MODELS_JSON};
use crate::websocket::websocket;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Bind `cfg.listen` and serve.
pub async fn run(cfg: MockConfig) -> io::Result<()> {
    let listener = TcpListener::bind(&cfg.listen).await?;
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "mock upstream listening"),
        Err(_) => tracing::info!(listen = %cfg.listen, "mock upstream listening"),
    }
    serve(listener, cfg).await
}

/// Serve until the future is dropped. Sets TCP_NODELAY on accepted sockets; HTTP/1.1 and h2c
/// (`hyper_util::server::conn::auto`). Dropping the future also ends the connections (and
/// WebSockets) it accepted.
pub async fn serve(listener: TcpListener, cfg: MockConfig) -> io::Result<()> {
    // Never sent on: the receivers see `changed()` fail when this future (and so the sender) is
    // dropped, which ends every connection task.
    let (_stop_tx, stop_rx) = watch::channel(());
    let state = Arc::new(State { cfg, log: Mutex::new(VecDeque::new()), next_id: AtomicU64::new(1), stop: stop_rx });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Per-connection failures (ECONNABORTED) and resource exhaustion (EMFILE) alike:
                // back off a little rather than spin or give up.
                tracing::warn!(error = %e, "mock upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "mock upstream: cannot set TCP_NODELAY");
        }
        let state = Arc::clone(&state);
        let mut stop = state.stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                res = conn => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "mock upstream: connection ended with an error");
                    }
                }
                _ = stop.changed() => {}
            }
        });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    ChatCompletions,
    Embeddings,
    Models,
    Health,
    WebSocket,
    NotFound,
}

impl Route {
    fn of(parts: &Parts) -> Route {
        if is_websocket(parts) {
            return Route::WebSocket;
        }
        let path = parts.uri.path();
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.ends_with("/chat/completions") {
            Route::ChatCompletions
        } else if path.ends_with("/embeddings") {
            Route::Embeddings
        } else if path.ends_with("/models") {
            Route::Models
        } else if path.ends_with("/health") {
            Route::Health
        } else {
            Route::NotFound
        }
    }
}

fn is_websocket(parts: &Parts) -> bool {
    parts.version == Version::HTTP_11
        && parts
            .headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("websocket"))))
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<MockBody> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path();
    if path == "/mock/requests" {
        return mock_requests(&state, &parts.method);
    }
    if path == "/mock" || path.starts_with("/mock/") {
        return not_found(&parts);
    }
    let faults = match Faults::parse(&parts.headers) {
        Ok(f) => f,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg, None),
    };
    let route = Route::of(&parts);
    let body = if route == Route::WebSocket {
        Bytes::new()
    } else {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("mock upstream: request body larger than {MAX_BODY} bytes"),
                    None,
                )
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("mock upstream: could not read the request body: {e}"),
                    None,
                )
            }
        }
    };

    let keep = state.cfg.record && route != Route::Health;
    let mut echo_body = None;
    if keep || faults.echo {
        let record = Record {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: body.clone(),
        };
        if faults.echo {
            echo_body = Some(to_json(&record));
        }
        if keep {
            state.push(record);
        }
    }

    let delay = faults.delay_ms.unwrap_or(state.cfg.delay_ms);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(status) = faults.status {
        return injected(status);
    }
    if route != Route::Health && roll(state.cfg.fail_rate) {
        return injected(StatusCode::from_u16(state.cfg.fail_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    }
    if let Some(echo) = echo_body {
        return json_response(StatusCode::OK, echo);
    }

    let method = &parts.method;
    match route {
        Route::ChatCompletions if method == Method::POST => chat(&state, &faults, &body),
        Route::Embeddings if method == Method::POST => embeddings(&body),
        Route::Models if method == Method::GET || method == Method::HEAD => {
            json_response(StatusCode::OK, Bytes::from_static(MODELS_JSON.as_bytes()))
        }
        Route::Health if method == Method::GET || method == Method::HEAD => {
            json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
        }
        Route::ChatCompletions | Route::Embeddings => method_not_allowed(&parts, "POST"),
        Route::Models | Route::Health => method_not_allowed(&parts, "GET, HEAD"),
        Route::WebSocket => websocket(&state, &mut parts),
        Route::NotFound => not_found(&parts),
    }
}

fn mock_requests(state: &State, method: &Method) -> Response<MockBody> {
    if method == Method::GET {
        let log = state.log.lock().unwrap_or_else(|e| e.into_inner());
        let body = to_json(&*log);
        drop(log);
        json_response(StatusCode::OK, body)
    } else if method == Method::DELETE {
        let mut log = state.log.lock().unwrap_or_else(|e| e.into_inner());
        let cleared = log.len();
        log.clear();
        drop(log);
        json_response(StatusCode::OK, Bytes::from(format!(r#"{{"cleared":{cleared}}}"#)))
    } else {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("mock upstream: {method} /mock/requests is not supported (GET, DELETE)"),
            None,
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, DELETE"));
        resp
    }
}
