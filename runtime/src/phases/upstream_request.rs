//! Phase 6, the upstream request: the path and query the upstream sees, the client's
//! credential removed, the route's and upstream's headers set, forwarded and trace headers,
//! and the body (the one read, or the client's stream, bounded and counted).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use gw_engine::graph::{CredentialSource, RewriteInfo, RouteInfo, TemplatePart};
use gw_engine::request::{Decision, Request as GwRequest};
use gw_engine::template::{Facts, Template};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::{full, Body, BoxError};
use crate::errors::{Code, GwError};
use crate::exchange::Exchange;
use crate::headers;
use crate::phases::inspect::read_body;
use crate::phases::target::Picked;
use crate::phases::Ctx;

/// A request body kept whole for retries up to this size; a larger (or chunked) body is
/// streamed once, and a request whose body was streamed is not tried again.
pub const REPLAY_MAX: u64 = 1 << 20;

/// The body each try sends.
pub enum UpBody {
    /// Bytes every try sends again.
    Replayable(Bytes),
    /// The client's stream: the first try takes it.
    Stream(Option<Body>),
}

impl UpBody {
    /// The body for the next try; None when it was streamed to an earlier one.
    pub fn for_try(&mut self) -> Option<Body> {
        match self {
            UpBody::Replayable(bytes) => Some(full(bytes.clone())),
            UpBody::Stream(body) => body.take(),
        }
    }
}

/// The body the upstream gets: the bytes already read, or the client's body streamed
/// through, bounded by `max_body`. Either way its bytes are counted in the exchange. When
/// the upstream retries, a body declared no larger than `REPLAY_MAX` is read first, so
/// that a retry can send it again.
pub async fn body(
    buffered: Option<Bytes>,
    unread: Option<Incoming>,
    max_body: u64,
    retries: bool,
    x: &Exchange,
) -> Result<UpBody, GwError> {
    if let Some(bytes) = buffered {
        x.request_bytes.store(bytes.len() as u64, Ordering::Relaxed);
        return Ok(UpBody::Replayable(bytes));
    }
    let Some(incoming) = unread else { return Ok(UpBody::Replayable(Bytes::new())) };
    let declared = hyper::body::Body::size_hint(&incoming).exact();
    if retries && declared.is_some_and(|n| n <= REPLAY_MAX) {
        let bytes = read_body(Some(incoming), max_body).await?;
        x.request_bytes.store(bytes.len() as u64, Ordering::Relaxed);
        return Ok(UpBody::Replayable(bytes));
    }
    let counted = x.request_bytes.clone();
    let stream = Limited::new(incoming, max_body as usize)
        .map_err(|e| BoxError::from(ClientBodyError(e)))
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counted.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed();
    Ok(UpBody::Stream(Some(stream)))
}

/// The request for the picked target: its URI, the transformed headers, the body.
pub fn build(
    ctx: Ctx<'_>,
    route: &RouteInfo,
    (greq, decision): (&GwRequest, &Decision),
    parts: &http::request::Parts,
    body: Body,
    to: &Picked<'_>,
    websocket: bool,
) -> Result<Request<Body>, GwError> {
    let target = &to.target.addr;
    // The path and query the upstream sees.
    let path = rewrite_path(route, parts.uri.path(), &decision.params);
    let query = forwarded_query(route, parts.uri.query());
    let path_and_query = match query {
        Some(q) if !q.is_empty() => format!("{}{}?{}", target.base_path, path, q),
        _ => format!("{}{}", target.base_path, path),
    };
    let uri = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| GwError::new(Code::InvalidPath, "the rewritten path is not a valid URI"))?;

    let mut h = parts.headers.clone();
    headers::remove_hop_by_hop(&mut h);
    h.remove(http::header::HOST);
    remove_credentials(&mut h, route);
    for name in &route.strip_headers {
        h.remove(name.as_str());
    }
    let facts = Facts { request: greq, decision, request_id: ctx.request_id, trace_id: &ctx.trace.id };
    for (name, template) in &route.set_headers {
        set_template(&mut h, name, template, &facts)?;
    }
    headers::apply_forwarded(
        &mut h,
        ctx.loaded.policy.graph.settings().forwarded,
        &headers::ip_text(ctx.conn.peer.ip()),
    );
    for (name, value) in &to.info.headers {
        set_header(&mut h, name, value.get());
    }
    if let Ok(id) = HeaderValue::from_str(ctx.request_id) {
        h.insert(HeaderName::from_static("x-request-id"), id);
    }
    if let Ok(trace) = HeaderValue::from_str(&ctx.trace.traceparent()) {
        h.insert(HeaderName::from_static("traceparent"), trace);
    }
    if websocket {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    let mut up_req = Request::new(body);
    *up_req.method_mut() = parts.method.clone();
    *up_req.uri_mut() = uri;
    *up_req.headers_mut() = h;
    if parts.method == Method::CONNECT {
        return Err(GwError::new(Code::MethodNotAllowed, "CONNECT is not proxied"));
    }
    Ok(up_req)
}

/// An error reading the client's request body while it streams upstream: the client's fault,
/// not the upstream's.
#[derive(Debug)]
pub struct ClientBodyError(BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

fn set_header(h: &mut HeaderMap, name: &str, value: Option<&str>) {
    let (Ok(name), Some(Ok(value))) = (HeaderName::from_bytes(name.as_bytes()), value.map(HeaderValue::from_str))
    else {
        return;
    };
    h.insert(name, value);
}

/// A `set header` from its template. Absent (no tenant, a header the client did not send),
/// the header is removed, so the client's own copy never passes for the policy's; a value
/// that cannot be one header's (a control character, a header sent twice) refuses the request.
fn set_template(h: &mut HeaderMap, name: &str, template: &Template, facts: &Facts<'_>) -> Result<(), GwError> {
    let refused = |message: String| GwError::new(Code::InvalidHeader, message);
    let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
        return Err(refused(format!("`{name}` is not a header name")));
    };
    match template.render_header(name, facts) {
        Ok(Some(text)) => {
            let value = HeaderValue::from_str(&text).map_err(|_| refused(format!("header `{name}` is not valid")))?;
            h.insert(header, value);
        }
        Ok(None) => {
            h.remove(header);
        }
        Err(u) => return Err(GwError::new(Code::of_refusal(u.code).unwrap_or(Code::InvalidHeader), u.message)),
    }
    Ok(())
}

/// The client's credential never reaches the upstream.
fn remove_credentials(h: &mut HeaderMap, route: &RouteInfo) {
    let Some(auth) = &route.auth else { return };
    for source in &auth.sources {
        match source {
            CredentialSource::Header(name) => {
                h.remove(name.as_str());
            }
            // A bearer token (an API key or a JWT) and a basic-auth password alike.
            CredentialSource::Bearer | CredentialSource::Basic => {
                h.remove(http::header::AUTHORIZATION);
            }
            CredentialSource::Query(_) => {}
        }
    }
}

fn forwarded_query(route: &RouteInfo, query: Option<&str>) -> Option<String> {
    let query = query?;
    let secret_params: Vec<&str> = route
        .auth
        .iter()
        .flat_map(|a| &a.sources)
        .filter_map(|s| match s {
            CredentialSource::Query(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    if secret_params.is_empty() {
        return Some(query.to_string());
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            !secret_params.iter().any(|p| gw_engine::request::parse_query(key).first().is_some_and(|(k, _)| k == p))
        })
        .collect();
    Some(kept.join("&"))
}

fn rewrite_path(route: &RouteInfo, path: &str, params: &[(String, String)]) -> String {
    match &route.rewrite {
        None => path.to_string(),
        Some(RewriteInfo::Prefix { from, to }) => match path.strip_prefix(from.as_str()) {
            Some(rest) => {
                let joined = format!("{to}{rest}");
                if joined.starts_with('/') {
                    joined
                } else {
                    format!("/{joined}")
                }
            }
            None => path.to_string(),
        },
        Some(RewriteInfo::Path { parts, .. }) => parts
            .iter()
            .map(|p| match p {
                TemplatePart::Lit(s) => s.as_str(),
                TemplatePart::Param(name) => {
                    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
                }
            })
            .collect(),
    }
}
