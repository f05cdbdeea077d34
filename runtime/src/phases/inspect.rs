//! Phase 1, inspect: what every request must satisfy before it is decided (header count and
//! size, one reading of its framing and host, a path in normal form, a body within bounds),
//! and the request as the decision graph reads it.

use std::net::SocketAddr;

use bytes::Bytes;
use gw_engine::request::Request as GwRequest;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::errors::{Code, GwError};
use crate::gateway::Loaded;

/// The checks on a request's head, in order: size, framing, credentials, path, length.
pub fn check(loaded: &Loaded, req: &mut Request<()>) -> Result<(), GwError> {
    let settings = loaded.policy.graph.settings();
    check_head(req.headers(), settings.max_headers, settings.max_header_bytes)?;
    check_framing(req)?;
    // Two credentials where one is read: which one counts would depend on the reader.
    if loaded.credential_headers.iter().any(|h| req.headers().get_all(h).iter().nth(1).is_some()) {
        return Err(GwError::new(Code::AmbiguousCredentials, "a credential header appears more than once"));
    }
    normalize_path(req)?;
    if let Some(len) = content_length(req.headers())? {
        if len > settings.max_body {
            return Err(too_large(settings.max_body));
        }
    }
    Ok(())
}

/// Headers and query as the decision graph reads them: lower-case names, values as text; a
/// value that is not text is noted, so a guard that reads it refuses the request.
fn with_facts(mut greq: GwRequest, headers: &HeaderMap, query: Option<&str>) -> GwRequest {
    for (k, v) in headers {
        greq.push_header_bytes(k.as_str(), v.as_bytes());
    }
    greq.set_query(query.unwrap_or(""));
    greq
}

/// The request as the decision graph sees it.
pub fn request_view<B>(req: &Request<B>, peer: SocketAddr) -> GwRequest {
    let uri = req.uri();
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    let greq = GwRequest {
        method: req.method().as_str().to_string(),
        host: gw_engine::request::normalize_host(&host),
        path: uri.path().to_string(),
        client_ip: Some(crate::headers::ip_text(peer.ip())),
        ..GwRequest::default()
    };
    with_facts(greq, req.headers(), uri.query())
}

/// A minimal request for `balance hash(...)` expressions, which read headers and the path.
pub fn balance_view(parts: &http::request::Parts, peer: SocketAddr) -> GwRequest {
    let greq = GwRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        client_ip: Some(crate::headers::ip_text(peer.ip())),
        ..GwRequest::default()
    };
    with_facts(greq, &parts.headers, parts.uri.query())
}

/// Header count and size limits (431). hyper enforces a hard cap just above these.
fn check_head(headers: &HeaderMap, max_headers: u64, max_bytes: u64) -> Result<(), GwError> {
    let count = headers.len() as u64;
    let bytes: u64 = headers.iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum();
    if count > max_headers || bytes > max_bytes {
        return Err(GwError::new(Code::HeadersTooLarge, "request headers are too large or too many").closing());
    }
    Ok(())
}

/// A request must have one reading. hyper already refuses most malformed heads; what it lets
/// through and another parser could read differently is refused here, and the connection is
/// closed after the answer.
fn check_framing<B>(req: &Request<B>) -> Result<(), GwError> {
    let headers = req.headers();
    let ambiguous = |message: &str| Err(GwError::new(Code::AmbiguousFraming, message).closing());
    let te: Vec<&HeaderValue> = headers.get_all(http::header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<&HeaderValue> = headers.get_all(http::header::CONTENT_LENGTH).iter().collect();
    if !te.is_empty() && !cl.is_empty() {
        return ambiguous("a request may not carry both Transfer-Encoding and Content-Length");
    }
    // Only a single, plain `chunked` coding: `chunked, chunked`, `gzip, chunked` and the like
    // are read differently by different servers.
    if te.len() > 1 || te.first().is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked")) {
        return ambiguous("only `Transfer-Encoding: chunked` is accepted");
    }
    if cl.len() > 1 && cl.windows(2).any(|w| w[0] != w[1]) {
        return ambiguous("conflicting Content-Length headers");
    }
    let hosts: Vec<&HeaderValue> = headers.get_all(http::header::HOST).iter().collect();
    if hosts.len() > 1 {
        return Err(GwError::new(Code::InvalidHost, "more than one Host header").closing());
    }
    if req.version() == http::Version::HTTP_11 && hosts.is_empty() && req.uri().authority().is_none() {
        return Err(GwError::new(Code::InvalidHost, "an HTTP/1.1 request needs a Host header").closing());
    }
    // An absolute-form target naming another host than `Host` would be routed on one and
    // read as the other by the next hop.
    if let (Some(authority), Some(host)) = (req.uri().authority(), hosts.first()) {
        if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
            return Err(GwError::new(Code::InvalidHost, "the request target and Host name different hosts").closing());
        }
    }
    for (name, value) in headers {
        if value.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(
                GwError::new(Code::InvalidHeader, format!("header `{name}` holds a control character")).closing()
            );
        }
    }
    Ok(())
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, GwError> {
    match headers.get(http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| GwError::new(Code::InvalidContentLength, "Content-Length is not a number")),
    }
}

/// Put the request path in the normal form routes, guards and the upstream all read
/// (`gw_engine::path`: escapes of plain characters decoded), or refuse a path another server
/// could read differently (dot segments, encoded slashes or dots, backslashes).
fn normalize_path<B>(req: &mut Request<B>) -> Result<(), GwError> {
    let bad = |why: &str| GwError::new(Code::InvalidPath, why.to_string());
    let normal = match gw_engine::path::normalize(req.uri().path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(p)) => p,
        Err(why) => return Err(bad(why)),
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| bad(gw_engine::path::NOT_NORMAL))?);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| bad(gw_engine::path::NOT_NORMAL))?;
    Ok(())
}

pub fn too_large(max: u64) -> GwError {
    GwError::new(Code::RequestTooLarge, format!("the request body is larger than {max} bytes"))
}

pub async fn read_body(body: Option<Incoming>, max: u64) -> Result<Bytes, GwError> {
    let Some(body) = body else { return Ok(Bytes::new()) };
    match Limited::new(body, max as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        // The rest of the body is unread: the connection cannot carry another request.
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max).closing()),
        Err(_) => Err(GwError::new(Code::BadBody, "the request body could not be read").closing()),
    }
}

pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has_token(http::header::CONNECTION, "upgrade") && has_token(http::header::UPGRADE, "websocket")
}
