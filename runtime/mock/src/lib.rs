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

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rand::Rng;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Settings of the mock upstream (`gw mock …` flags).
#[derive(clap::Args, Debug, Clone)]
pub struct MockConfig {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: String,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Share of requests (0.0..=1.0) answered with --fail-status.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Status of the answers --fail-rate picks.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub fail_status: u16,
    /// Chunks in a streamed completion (and words in a non-streamed one).
    #[arg(long, default_value_t = 8)]
    pub stream_chunks: usize,
    /// Pause between the chunks of a streamed completion, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub chunk_delay_ms: u64,
    /// Keep a log of received requests for GET /mock/requests (the last 1000); --record=false
    /// turns it off.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub record: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: "127.0.0.1:9100".to_owned(),
            delay_ms: 0,
            fail_rate: 0.0,
            fail_status: 500,
            stream_chunks: 8,
            chunk_delay_ms: 20,
            record: true,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be between 0.0 and 1.0".to_owned())
    }
}

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

const LOG_CAPACITY: usize = 1000;
const MAX_BODY: usize = 32 << 20;
const BODY_TEXT_LIMIT: usize = 64 << 10;

/// The words of every completion, cycled.
const WORDS: [&str; 8] = ["Hello!", "This", "is", "the", "gw", "mock", "upstream", "speaking."];

const MODELS_JSON: &str = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},"#,
    r#"{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},"#,
    r#"{"id":"gpt-3.5-turbo","object":"model","created":1677610602,"owned_by":"openai"},"#,
    r#"{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}"#,
    r#"]}"#
);

struct State {
    cfg: MockConfig,
    log: Mutex<VecDeque<Record>>,
    next_id: AtomicU64,
    stop: watch::Receiver<()>,
}

impl State {
    fn push(&self, record: Record) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// One received request, as `/mock/requests` and `x-mock-echo` show it.
struct Record {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("method", self.method.as_str())?;
        m.serialize_entry("path", self.uri.path())?;
        m.serialize_entry("query", self.uri.query().unwrap_or(""))?;
        m.serialize_entry("authority", &self.uri.authority().map(|a| a.as_str()))?;
        m.serialize_entry("version", version_str(self.version))?;
        m.serialize_entry("headers", &HeadersSer(&self.headers))?;
        m.serialize_entry("body_len", &self.body.len())?;
        let text = if self.body.len() < BODY_TEXT_LIMIT { std::str::from_utf8(&self.body).ok() } else { None };
        m.serialize_entry("body", &text)?;
        m.end()
    }
}

struct HeadersSer<'a>(&'a HeaderMap);

impl Serialize for HeadersSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0 {
            seq.serialize_element(&(name.as_str(), String::from_utf8_lossy(value.as_bytes())))?;
        }
        seq.end()
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "?",
    }
}

/// Fault injection asked for by `x-mock-*` request headers.
#[derive(Default)]
struct Faults {
    delay_ms: Option<u64>,
    status: Option<StatusCode>,
    chunks: Option<usize>,
    chunk_delay_ms: Option<u64>,
    die_after: Option<usize>,
    echo: bool,
}

impl Faults {
    fn parse(h: &HeaderMap) -> Result<Faults, String> {
        let status = match header_num::<u16>(h, "x-mock-status")? {
            None => None,
            Some(n) if (200..=599).contains(&n) => StatusCode::from_u16(n).ok(),
            Some(_) => return Err("x-mock-status must be between 200 and 599".to_owned()),
        };
        let echo = match h.get("x-mock-echo").map(|v| v.as_bytes()) {
            None => false,
            Some(b"1" | b"true" | b"yes") => true,
            Some(b"0" | b"false" | b"no") => false,
            Some(_) => return Err("invalid x-mock-echo header (use 1 or 0)".to_owned()),
        };
        Ok(Faults {
            delay_ms: header_num(h, "x-mock-delay-ms")?,
            status,
            chunks: header_num(h, "x-mock-chunks")?,
            chunk_delay_ms: header_num(h, "x-mock-chunk-delay-ms")?,
            die_after: header_num(h, "x-mock-die-after")?,
            echo,
        })
    }
}

fn header_num<T: FromStr>(h: &HeaderMap, name: &str) -> Result<Option<T>, String> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| format!("invalid {name} header (expected a non-negative integer)")),
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

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::thread_rng().gen::<f64>() < rate
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

// ---------------------------------------------------------------------------------------------
// Responses

fn to_json<T: Serialize + ?Sized>(value: &T) -> Bytes {
    match serde_json::to_vec(value) {
        Ok(v) => Bytes::from(v),
        Err(e) => {
            tracing::error!(error = %e, "mock upstream: cannot serialize a response");
            Bytes::from_static(br#"{"error":{"message":"mock upstream: serialization failed","type":"server_error","param":null,"code":null}}"#)
        }
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let no_body = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut resp = Response::new(MockBody::full(if no_body { Bytes::new() } else { body }));
    *resp.status_mut() = status;
    if !no_body {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// An OpenAI error answer: `{"error":{"message","type","param":null,"code"}}`.
fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response<MockBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    error_of_type(status, message, kind, code)
}

fn error_of_type(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response<MockBody> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    json_response(status, to_json(&body))
}

fn injected(status: StatusCode) -> Response<MockBody> {
    let code = (status == StatusCode::TOO_MANY_REQUESTS).then_some("rate_limit_exceeded");
    error(status, &format!("mock upstream: injected status {}", status.as_u16()), code)
}

fn not_found(parts: &Parts) -> Response<MockBody> {
    // OpenAI's own answer for an unknown URL.
    error_of_type(
        StatusCode::NOT_FOUND,
        &format!("Unknown request URL: {} {}. Please check the URL for typos.", parts.method, parts.uri.path()),
        "invalid_request_error",
        Some("unknown_url"),
    )
}

fn method_not_allowed(parts: &Parts, allow: &'static str) -> Response<MockBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("mock upstream: {} {} is not supported (use {allow})", parts.method, parts.uri.path()),
        None,
    );
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Chat completions

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: PromptWords,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Words,
}

/// The prompt-token estimate of a `messages` array: words of the contents plus 4 per message.
#[derive(Default)]
struct PromptWords(u64);

impl<'de> Deserialize<'de> for PromptWords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PromptWords;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_unit<E>(self) -> Result<PromptWords, E> {
                Ok(PromptWords(0))
            }
            fn visit_none<E>(self) -> Result<PromptWords, E> {
                Ok(PromptWords(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptWords, A::Error> {
                let mut n = 0u64;
                while let Some(m) = seq.next_element::<ChatMessage>()? {
                    n += m.content.0 + 4;
                }
                Ok(PromptWords(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whitespace-separated words in a message content: a string, or an array of parts whose `text`
/// fields are counted; anything else counts 0. Parsed without allocating.
#[derive(Default)]
struct Words(u64);

fn count_words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Words;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("message content")
            }
            fn visit_str<E>(self, s: &str) -> Result<Words, E> {
                Ok(Words(count_words(s)))
            }
            fn visit_unit<E>(self) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_none<E>(self) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
                let mut n = 0;
                while let Some(w) = seq.next_element::<Words>()? {
                    n += w.0;
                }
                Ok(Words(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Words, A::Error> {
                let mut n = 0;
                while let Some(TextKey(is_text)) = map.next_key()? {
                    if is_text {
                        n += map.next_value::<Words>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Words(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map key: is it `text`?
struct TextKey(bool);

impl<'de> Deserialize<'de> for TextKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TextKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, s: &str) -> Result<TextKey, E> {
                Ok(TextKey(s == "text"))
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<TextKey, E> {
                Ok(TextKey(b == b"text"))
            }
        }
        d.deserialize_identifier(V)
    }
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

fn completion_text(words: usize) -> String {
    let mut s = String::with_capacity(words * 8);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[i % WORDS.len()]);
    }
    s
}

fn chat(state: &State, faults: &Faults, body: &[u8]) -> Response<MockBody> {
    let req: ChatRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request. ({e})"),
                None,
            )
        }
    };
    let model: &str = if req.model.is_empty() { "mock" } else { &req.model };
    let chunks = faults.chunks.unwrap_or(state.cfg.stream_chunks);
    let prompt_tokens = req.messages.0;
    let completion_tokens = chunks as u64;
    let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    let id = format!("chatcmpl-mock{:010}", state.next_id());
    let created = now_secs();

    if req.stream == Some(true) {
        let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
        let model_json = serde_json::to_string(model).unwrap_or_else(|_| "\"mock\"".to_owned());
        let sse = Sse {
            prefix: format!(
                r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":{model_json}"#
            ),
            chunks,
            next: 0,
            delay: Duration::from_millis(faults.chunk_delay_ms.unwrap_or(state.cfg.chunk_delay_ms)),
            die_after: faults.die_after,
            usage: include_usage.then_some(usage),
            sleep: None,
            armed: false,
            flushed: false,
            done: false,
        };
        let mut resp = Response::new(MockBody::Sse(sse));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return resp;
    }

    let content = completion_text(chunks);
    let body = to_json(&Completion {
        id: &id,
        object: "chat.completion",
        created,
        model,
        choices: [CompletionChoice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: &content },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage,
    });
    match faults.die_after {
        None => json_response(StatusCode::OK, body),
        Some(n) => {
            let len = body.len();
            let cut = n.min(len.saturating_sub(1));
            let mut resp = Response::new(MockBody::Truncated {
                data: Some(body.slice(..cut)).filter(|b| !b.is_empty()),
                len: len as u64,
                flushed: false,
            });
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
    }
}

/// A streamed completion: `chunks` content chunks `delay` apart, then the final chunk, the usage
/// chunk (if asked for) and `[DONE]` together.
struct Sse {
    /// `data: {"id":…,"object":…,"created":…,"model":…` (no closing brace).
    prefix: String,
    chunks: usize,
    next: usize,
    delay: Duration,
    die_after: Option<usize>,
    usage: Option<Usage>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Whether the abort asked for by `die_after` was preceded by a `Pending` (so a flush).
    flushed: bool,
    done: bool,
}

impl Sse {
    fn chunk(&self, i: usize) -> Bytes {
        let word = WORDS[i % WORDS.len()];
        let mut s = String::with_capacity(self.prefix.len() + 96);
        s.push_str(&self.prefix);
        s.push_str(r#","choices":[{"index":0,"delta":{"#);
        if i == 0 {
            s.push_str(r#""role":"assistant","#);
        }
        s.push_str(r#""content":""#);
        s.push_str(word);
        s.push_str(" \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
        Bytes::from(s)
    }

    fn tail(&self) -> Bytes {
        let mut s = String::with_capacity(2 * self.prefix.len() + 220);
        s.push_str(&self.prefix);
        s.push_str(r#","choices":[{"index":0,"delta":{"#);
        if self.chunks == 0 {
            s.push_str(r#""role":"assistant","content":"""#);
        }
        s.push_str("},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
        if let Some(u) = self.usage {
            s.push_str(&self.prefix);
            s.push_str(&format!(
                ",\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
                u.prompt_tokens, u.completion_tokens, u.total_tokens
            ));
        }
        s.push_str("data: [DONE]\n\n");
        Bytes::from(s)
    }

    fn arm(&mut self) {
        let deadline = Instant::now() + self.delay;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.armed {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
            }
            self.armed = false;
        }
        let i = self.next;
        if self.die_after.is_some_and(|n| n.min(self.chunks) == i) {
            if !self.flushed {
                // Let hyper flush what it has buffered (head, earlier chunks) before the abort.
                self.flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.done = true;
            return Poll::Ready(Some(Err(io::Error::other("mock upstream: x-mock-die-after, aborting the response"))));
        }
        if i < self.chunks {
            let frame = self.chunk(i);
            self.next += 1;
            if self.next < self.chunks && !self.delay.is_zero() {
                self.arm();
            }
            Poll::Ready(Some(Ok(Frame::data(frame))))
        } else {
            self.done = true;
            Poll::Ready(Some(Ok(Frame::data(self.tail()))))
        }
    }
}

/// The body of every mock answer.
enum MockBody {
    Full(Option<Bytes>),
    /// Announces `len` bytes, sends `data`, returns `Pending` once (so hyper flushes), then fails
    /// (aborting the connection or stream).
    Truncated {
        data: Option<Bytes>,
        len: u64,
        flushed: bool,
    },
    Sse(Sse),
}

impl MockBody {
    fn full(b: Bytes) -> MockBody {
        MockBody::Full(Some(b).filter(|b| !b.is_empty()))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Truncated { data, len, flushed } => match data.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if !*flushed => {
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None if *len > 0 => {
                    *len = 0;
                    Poll::Ready(Some(Err(io::Error::other("mock upstream: x-mock-die-after, aborting the response"))))
                }
                None => Poll::Ready(None),
            },
            MockBody::Sse(sse) => sse.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Truncated { .. } => false,
            MockBody::Sse(sse) => sse.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            MockBody::Truncated { len, .. } => SizeHint::with_exact(*len),
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[derive(Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic unit vector of 8 components derived from the input's hash.
fn embedding(seed: u64) -> [f32; 8] {
    let mut v = [0f64; 8];
    for (k, x) in v.iter_mut().enumerate() {
        let r = splitmix64(seed.wrapping_add(k as u64));
        *x = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    v.map(|x| (x / norm) as f32)
}

fn embeddings(body: &[u8]) -> Response<MockBody> {
    use serde_json::Value;
    let req: EmbeddingRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request. ({e})"),
                None,
            )
        }
    };
    // (hash, token estimate) per input.
    let items: Vec<(u64, u64)> = match &req.input {
        Some(Value::String(s)) => vec![(fnv1a(s.as_bytes()), count_words(s))],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            vec![(fnv1a(Value::Array(a.clone()).to_string().as_bytes()), a.len() as u64)]
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| match v {
                Value::String(s) => (fnv1a(s.as_bytes()), count_words(s)),
                Value::Array(t) => (fnv1a(v.to_string().as_bytes()), t.len() as u64),
                other => (fnv1a(other.to_string().as_bytes()), 1),
            })
            .collect(),
        Some(Value::Array(_)) => return error(StatusCode::BAD_REQUEST, "'input' cannot be an empty array", None),
        Some(_) => return error(StatusCode::BAD_REQUEST, "'input' must be a string or an array", None),
        None => return error(StatusCode::BAD_REQUEST, "'input' is a required property", None),
    };
    let tokens: u64 = items.iter().map(|&(_, t)| t).sum();
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, &(seed, _))| serde_json::json!({"object": "embedding", "index": i, "embedding": embedding(seed)}))
        .collect();
    let model: &str = if req.model.is_empty() { "text-embedding-3-small" } else { &req.model };
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    json_response(StatusCode::OK, to_json(&body))
}

// ---------------------------------------------------------------------------------------------
// WebSocket echo

fn websocket(state: &State, parts: &mut Parts) -> Response<MockBody> {
    let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "mock upstream: websocket upgrade without sec-websocket-key", None);
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "mock upstream: bad sec-websocket-accept", None);
    };
    // Select the first offered subprotocol, as a client offering some expects one chosen.
    let protocol = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.split(',').map(str::trim).find(|p| !p.is_empty()))
        .and_then(|p| HeaderValue::from_str(p).ok());
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return error(StatusCode::BAD_REQUEST, "mock upstream: this connection cannot be upgraded", None);
    };
    let mut stop = state.stop.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "mock upstream: websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tokio::select! {
            () = echo(ws) => {}
            _ = stop.changed() => {}
        }
    });
    let mut resp = Response::new(MockBody::Full(None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // Pings are answered and closes acknowledged by tungstenite itself.
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
