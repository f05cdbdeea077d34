//! Phase 3, cache: on a route with a `cache`, the request's entry is looked up before its
//! limits are charged. A hit is answered from the entry, after the limits (it still needs its
//! credential and counts against rate and concurrency limits) but charging no token budget:
//! no model ran. A miss is forwarded and its answer stored as it streams back, when the answer
//! is one the cache keeps. `x-gw-cache` says which on every answer of the route.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gw_engine::graph::{CacheInfo, RouteInfo};
use gw_engine::request::Decision;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{full, Body};
use crate::cache::{now_ms, Entry, ResponseCache};
use crate::errors::GwError;
use crate::exchange::Exchange;
use crate::phases::inspect::read_body;
use crate::phases::Ctx;
use crate::store::Limiter;
use crate::stream::Tracked;

/// What the cache said about a request of a route with a cache.
pub struct Lookup {
    route: String,
    info: CacheInfo,
    /// None when the request bypasses the cache.
    key: Option<String>,
    pub hit: Option<Arc<Entry>>,
}

impl Lookup {
    fn result(&self) -> &'static str {
        match (&self.key, &self.hit) {
            (None, _) => "bypass",
            (Some(_), Some(_)) => "hit",
            (Some(_), None) => "miss",
        }
    }
}

/// Look the request up, reading its body (within `max_body`) if the decision did not: the
/// body is part of the key. None on a route without a cache.
pub async fn lookup(
    ctx: Ctx<'_>,
    route: &RouteInfo,
    decision: &Decision,
    parts: &http::request::Parts,
    buffered: &mut Option<Bytes>,
    body: &mut Option<Incoming>,
    x: &mut Exchange,
) -> Result<Option<Lookup>, GwError> {
    let Some(info) = &route.cache else { return Ok(None) };
    let bytes = match buffered {
        Some(b) => b.clone(),
        None => {
            let b = read_body(body.take(), ctx.loaded.policy.graph.settings().max_body).await?;
            *buffered = Some(b.clone());
            b
        }
    };
    let canonical = gw_engine::ijson::read(&bytes).ok().flatten();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let key = match gw_engine::cache::bypass(&headers, canonical.as_ref()) {
        Some(_) => None,
        None => {
            let tenant =
                if info.shared { None } else { Some(decision.identity.as_ref().map_or("-", |i| i.tenant.as_str())) };
            let (path, query) = (parts.uri.path(), parts.uri.query());
            Some(gw_engine::cache::key(
                &route.name,
                parts.method.as_str(),
                path,
                query,
                tenant,
                &bytes,
                canonical.as_ref(),
            ))
        }
    };
    let hit = match &key {
        Some(k) => ctx.gw.cache.backend(&ctx.gw.limiter).get(&route.name, k).await,
        None => None,
    };
    let lookup = Lookup { route: route.name.clone(), info: info.clone(), key, hit };
    x.cache = Some(lookup.result());
    ctx.gw.metrics.cache.with_label_values(&[&lookup.route, lookup.result()]).inc();
    Ok(Some(lookup))
}

/// The answer to a hit: the stored status, headers and body, with `x-gw-cache: hit` and its
/// `age` in seconds.
pub fn answer(entry: &Entry) -> Response<Body> {
    let mut resp = Response::new(full(entry.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    for (name, value) in &entry.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }
    h.insert("x-gw-cache", HeaderValue::from_static("hit"));
    let age = now_ms().saturating_sub(entry.stored_at_ms) / 1000;
    h.insert(http::header::AGE, HeaderValue::from(age));
    resp
}

/// A forwarded answer of a route with a cache: marked `miss` or `bypass`, and on a miss
/// stored once its last byte has passed, if the cache keeps it.
pub fn store(ctx: Ctx<'_>, lookup: Lookup, resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert("x-gw-cache", HeaderValue::from_static(lookup.result()));
    let Some(key) = lookup.key.filter(|_| keeps(&lookup.info, parts.status, &parts.headers)) else {
        return Response::from_parts(parts, body);
    };
    let max = lookup.info.max_bytes();
    let headers = stored_headers(&parts.headers);
    let (status, ttl_ms) = (parts.status.as_u16(), lookup.info.ttl_ns / 1_000_000);
    let seen: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(Some(Vec::new())));
    let copy = seen.clone();
    // Copy what passes, giving up past the bound (the answer still streams on, unstored).
    let teed = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            let mut guard = copy.lock().unwrap_or_else(|p| p.into_inner());
            if guard.as_ref().is_some_and(|b| (b.len() + data.len()) as u64 > max) {
                *guard = None;
            }
            if let Some(b) = guard.as_mut() {
                b.extend_from_slice(data);
            }
        }
        frame
    });
    let (cache, limiter) = (ctx.gw.cache.clone(), ctx.gw.limiter.clone());
    let (stored, evicted) = (ctx.gw.metrics.cache_stored.clone(), ctx.gw.metrics.cache_evicted.clone());
    let route = lookup.route;
    let tracked = Tracked::new(teed.boxed(), move |end| {
        let body = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(body) = body.filter(|_| end.complete) else { return };
        let now = now_ms();
        let entry = Entry { status, headers, body: Bytes::from(body), stored_at_ms: now, expires_at_ms: now + ttl_ms };
        tokio::spawn(put(cache, limiter, route, key, entry, max, (stored, evicted)));
    });
    Response::from_parts(parts, BodyExt::boxed(tracked))
}

async fn put(
    cache: Arc<ResponseCache>,
    limiter: Arc<Limiter>,
    route: String,
    key: String,
    entry: Entry,
    max: u64,
    (stored, evicted): (prometheus::IntCounterVec, prometheus::IntCounterVec),
) {
    if let Some(n) = cache.backend(&limiter).put(&route, &key, entry, max).await {
        stored.with_label_values(&[&route]).inc();
        evicted.with_label_values(&[&route]).inc_by(n);
    }
}

/// An answer the cache keeps: a status it stores, a known length within the bound, not a
/// stream, no cookie, and nothing from the upstream forbidding it. An answer that varies by a
/// request header (`Vary`) or comes in a content coding is not kept either: the key holds no
/// header, so another client's `Accept-Encoding` or `Accept-Language` could get it.
fn keeps(info: &CacheInfo, status: StatusCode, h: &HeaderMap) -> bool {
    let length = h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let event_stream =
        h.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let forbidden = h.get_all(http::header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|d| {
            let d = d.trim();
            d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private")
        })
    });
    info.statuses.contains(&status.as_u16())
        && length.is_some_and(|l| l <= info.max_bytes())
        && !event_stream
        && !forbidden
        && !h.contains_key(http::header::SET_COOKIE)
        && !h.contains_key(http::header::VARY)
        && h.get(http::header::CONTENT_ENCODING).is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// The headers a stored answer replays: the upstream's, without those of one connection or
/// one request: gw sets its own (request id, rate headers of the request's limits) on every
/// answer, and a stored rate header would be stale.
fn stored_headers(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut h = h.clone();
    crate::headers::remove_hop_by_hop(&mut h);
    for name in ["x-request-id", "x-gw-cache", "x-gw-policy", "age", "retry-after"] {
        h.remove(name);
    }
    h.iter()
        .filter(|(k, _)| !k.as_str().starts_with("x-ratelimit-"))
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}
