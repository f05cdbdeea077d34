//! The request pipeline: request id and trace context → framing and path checks → route
//! decision (the compiled graph) → limits → transforms → forward, streaming the answer back.
//! Every gateway-made answer uses the one error shape of `errors`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gw_compiler::graph::{CredentialSource, RewriteInfo, RouteInfo, TemplatePart};
use gw_compiler::request::{Decision, Outcome, Request as GwRequest};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use tracing::Instrument;

use crate::account::Account;
use crate::body::{empty, full, Body, BoxError};
use crate::budget::{Reconcile, TokenPlan};
use crate::errors::{bad_request, GwError};
use crate::gateway::{Gateway, Loaded};
use crate::headers;
use crate::idle::InFlight;
use crate::limits::{admitted, never_fits, Charge, LimitCheck, LimitKind, LimitResult};
use crate::server::{ConnInfo, ResponseFuture};
use crate::store::Held;
use crate::stream::{StreamEnd, Tracked};
use crate::traffic::TenantTraffic;
use crate::usage::{TapOptions, UsageTap};

/// What a request holds until its answer's last byte: concurrency slots, and its place in
/// the tenant's traffic. Dropping it gives everything back.
#[derive(Default)]
pub struct Hold {
    limits: Option<Held>,
    tenant: Option<TenantGuard>,
}

impl Hold {
    /// Give everything back, with the tokens the request used (for the tenant's traffic).
    pub fn release(mut self, tokens: Option<(u64, u64)>) {
        if let (Some(guard), Some((p, c))) = (self.tenant.as_mut(), tokens) {
            guard.prompt_tokens = p;
            guard.completion_tokens = c;
        }
    }
}

struct TenantGuard {
    tenant: Arc<TenantTraffic>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Drop for TenantGuard {
    fn drop(&mut self) {
        self.tenant.finished(self.prompt_tokens, self.completion_tokens);
    }
}

/// What the pipeline learns about a request, for metrics and the audit record written when
/// its answer ends.
#[derive(Default)]
pub struct Exchange {
    pub route: Option<String>,
    pub key_name: Option<String>,
    pub tenant: Option<String>,
    pub upstream: Option<String>,
    /// `host:port` of the target that answered.
    pub target: Option<String>,
    pub upstream_ms: Option<f64>,
    /// The code of a gateway-made error answer, or of an upstream failure.
    pub error: Option<&'static str>,
    /// Request body bytes read (counted as they stream).
    pub request_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub hold: Hold,
    /// Set when the request has token budgets: read the upstream's usage from the answer.
    pub usage: Option<UsagePlan>,
    /// Shadow limits that would have refused the request.
    pub shadow_refused: Vec<String>,
}

/// How to read an answer's token usage, and what to reconcile with it.
pub struct UsagePlan {
    pub reconcile: Reconcile,
    pub encoding: gw_compiler::tokens::Encoding,
    /// gw asked the upstream for a usage chunk the client did not ask for: remove it.
    pub strip_usage_chunk: bool,
}

/// The proxy service for one connection.
pub fn service(
    gw: Arc<Gateway>,
) -> impl Fn(ConnInfo, InFlight, Request<Incoming>) -> ResponseFuture + Clone + Send + Sync + 'static {
    move |info, in_flight, req| {
        let gw = gw.clone();
        Box::pin(async move { handle(gw, info, in_flight, req).await })
    }
}

/// Serve one request. Never fails: every problem becomes an error response. The request is
/// accounted by an `Account` guard, whatever ends it.
pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    in_flight: InFlight,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    // The policy this request is decided and forwarded under, even if a reload happens meanwhile.
    let loaded = gw.policy();
    let request_id = headers::request_id(req.headers());
    let (head, body) = req.into_parts();
    let mut account = Account::start(gw.clone(), conn, in_flight, &head, request_id.clone(), loaded.policy.generation);
    let h1 = head.version <= http::Version::HTTP_11;
    let expects_continue = head.headers.contains_key(http::header::EXPECT);
    let had_body = !body.is_end_stream();
    // The pipeline takes the body when it reads or forwards it; one it leaves was never read.
    let mut body = Some(body);
    // Every log line of the request carries its id.
    let span = tracing::info_span!("request", request_id = %request_id);
    let result = pipeline(&gw, &loaded, conn, Request::from_parts(head, ()), &mut body, &request_id, &mut account.x)
        .instrument(span)
        .await;
    let upstream_failed = matches!(&result, Err(e) if e.status.is_server_error());
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            account.x.error = Some(e.code);
            e.into_response(&request_id)
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    if loaded.policy.graph.settings().policy_header {
        let version = format!("{}-{}", loaded.policy.generation, loaded.policy.short_hash());
        if let Ok(v) = HeaderValue::from_str(&version) {
            h.insert("x-gw-policy", v);
        }
    }
    drop(loaded);
    if h1 && !says_close(resp.headers()) {
        let reusable = match body.take() {
            Some(unread) => discard_unread(unread, expects_continue).await,
            // A body handed to the upstream, which then failed, may not have been read to its end.
            None => !(had_body && upstream_failed),
        };
        if !reusable {
            resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    let streamed =
        resp.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
            || resp.headers().get(http::header::CONTENT_LENGTH).is_none();
    let status = resp.status().as_u16();
    account.answered(status, streamed);
    // When the answer ends (or the client leaves), token budgets are reconciled and the
    // account drops: in-flight counts, concurrency slots, the audit record.
    let (mut parts, body) = resp.into_parts();
    let usage_plan = account.x.usage.take();
    let metric_tenant = account.x.tenant.clone().unwrap_or_else(|| "-".to_string());
    let format = crate::usage::Format::of_response(&parts.headers);
    let body = match usage_plan {
        Some(plan) if format != crate::usage::Format::Other => {
            if plan.strip_usage_chunk {
                // The body will be shorter than the upstream said.
                parts.headers.remove(http::header::CONTENT_LENGTH);
            }
            let opts = TapOptions::new(format, plan.encoding).strip_usage_chunk(plan.strip_usage_chunk);
            let tap = UsageTap::new(body, opts, move |report| {
                let model = plan.reconcile.model.clone();
                let (p, c) = plan.reconcile.finish(&report, status);
                gw.metrics.count_tokens(&metric_tenant, &model, p, c);
                let end = StreamEnd { chunks: report.chunks, bytes: report.bytes, complete: report.complete };
                account.ended(end, Some((p, c)));
            });
            BodyExt::boxed(tap)
        }
        Some(plan) => {
            // A compressed or unknown answer cannot be read: the reservation stands.
            drop(plan);
            BodyExt::boxed(Tracked::new(body, move |end| account.ended(end, None)))
        }
        None => BodyExt::boxed(Tracked::new(body, move |end| account.ended(end, None))),
    };
    Ok(Response::from_parts(parts, body))
}

/// An unread request body is discarded, so the connection can carry the next request, when
/// it is small and arrives promptly; otherwise the answer closes the connection.
/// Reading is cheap next to reconnecting; nothing read is kept.
const DISCARD_MAX_BYTES: usize = 1024 * 1024;
const DISCARD_MAX_TIME: Duration = Duration::from_secs(2);

fn says_close(h: &HeaderMap) -> bool {
    h.get_all(http::header::CONNECTION).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Read and drop a body gw answered without reading: true when the connection can be reused.
/// A client waiting for `100 Continue` is never invited to send a body only to have it
/// thrown away: its connection closes instead.
async fn discard_unread(mut body: Incoming, expects_continue: bool) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if expects_continue || body.size_hint().lower() > DISCARD_MAX_BYTES as u64 {
        return false;
    }
    let discard = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DISCARD_MAX_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DISCARD_MAX_TIME, discard).await.unwrap_or(false)
}

async fn pipeline(
    gw: &Gateway,
    loaded: &Loaded,
    conn: ConnInfo,
    mut req: Request<()>,
    body: &mut Option<Incoming>,
    request_id: &str,
    x: &mut Exchange,
) -> Result<Response<Body>, GwError> {
    let settings = loaded.policy.graph.settings();
    check_head(req.headers(), settings.max_headers, settings.max_header_bytes)?;
    check_framing(&req)?;
    // Two credentials where one is read: which one counts would depend on the reader.
    if loaded.credential_headers.iter().any(|h| req.headers().get_all(h).iter().nth(1).is_some()) {
        return Err(bad_request("ambiguous_credentials", "a credential header appears more than once"));
    }
    let path = req.uri().path().to_string();
    check_path(&path)?;
    if let Some(len) = content_length(req.headers())? {
        if len > settings.max_body {
            return Err(too_large(settings.max_body));
        }
    }

    let mut greq = gw_request(&req, conn.peer);
    let graph = &loaded.policy.graph;
    let client_upgrade = is_websocket_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, ()) = req.into_parts();
    // Read the body only when a candidate route needs it (body predicates, token counting),
    // and only once the credential is known to be good: `wants_body` is false when every
    // route the body could select refuses the credential (decided without the body).
    let mut buffered: Option<Bytes> = None;
    if graph.wants_body(&greq) {
        let bytes = read_body(body.take(), settings.max_body).await?;
        greq.body = String::from_utf8(bytes.to_vec()).ok();
        buffered = Some(bytes);
    }

    let decision = graph.decide(&greq);
    if let Some(r) = &decision.route {
        x.route = Some(r.clone());
    }
    let route = decision.route_index.and_then(|i| graph.routes().get(i));
    if let Some(id) = &decision.identity {
        x.key_name = Some(id.key_name.clone());
        x.tenant = Some(id.tenant.clone());
    }
    match &decision.outcome {
        Outcome::NoRoute => Err(GwError::new(404, "no_route", format!("no route for {} {}", greq.method, greq.path))),
        Outcome::MethodNotAllowed { allowed } => {
            let mut resp = GwError::new(405, "method_not_allowed", format!("{} is not allowed here", greq.method))
                .into_response(request_id);
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(http::header::ALLOW, v);
            }
            Ok(resp)
        }
        Outcome::Unauthorized { message } => {
            let code = if message == gw_compiler::eval::MISSING_KEY { "missing_api_key" } else { "invalid_api_key" };
            Err(GwError::new(401, code, message.clone()))
        }
        Outcome::Denied { status, message } => Err(GwError::new(*status, "denied", message.clone())),
        // Everything a route answers itself or forwards is subject to its limits.
        Outcome::Respond { .. } | Outcome::Serve { .. } | Outcome::Forward { .. } => {
            let route = route.ok_or_else(|| GwError::new(500, "internal", "route lost"))?;
            let forwarding = matches!(decision.outcome, Outcome::Forward { .. });
            let plan = if forwarding { TokenPlan::new(&decision, graph.limits(), buffered.as_ref()) } else { None };
            let checks = limit_checks(loaded, &decision, request_id, plan.as_ref());
            if let Some((check, cost)) = never_fits(&checks) {
                // No wait would let it pass: not a 429 (clients retry those), and nothing charged.
                gw.metrics.limit_decisions.with_label_values(&[&check.id, "too_large"]).inc();
                let budget = describe_limit(graph, &check.id);
                return Err(GwError::new(
                    400,
                    "request_too_large_for_budget",
                    format!(
                        "this request reserves {cost} tokens, more than {budget} can ever admit at once; \
                         lower max_tokens or shorten the prompt"
                    ),
                ));
            }
            let (limit_results, ticket) = gw.limiter.check(&checks).await;
            count_limit_decisions(gw, &limit_results);
            x.shadow_refused = limit_results.iter().filter(|r| r.shadow && !r.allowed).map(|r| r.id.clone()).collect();
            if !admitted(&limit_results) {
                let mut resp = refusal(graph, &limit_results).into_response(request_id);
                rate_headers(resp.headers_mut(), &limit_results);
                return Ok(resp);
            }
            x.hold.limits = Some(Held::new(gw.limiter.clone(), ticket, &checks));
            if !forwarding {
                let mut resp = match &decision.outcome {
                    Outcome::Serve { builtin } if builtin == "tokens" => {
                        let bytes = match buffered {
                            Some(b) => b,
                            None => read_body(body.take(), settings.max_body).await?,
                        };
                        let counted =
                            crate::budget::count_request(&bytes).map_err(|m| bad_request("bad_token_request", m))?;
                        let mut resp = Response::new(full(counted.to_string()));
                        resp.headers_mut()
                            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        resp
                    }
                    Outcome::Serve { builtin } => serve_builtin(gw, loaded, builtin),
                    _ => respond(Some(route)),
                };
                rate_headers(resp.headers_mut(), &limit_results);
                return Ok(resp);
            }
            let mut parts = parts;
            if let Some(mut plan) = plan {
                // A streamed answer is always charged: ask for the usage chunk when the client
                // did not, and remove it from what the client receives.
                let strip_usage_chunk = plan.stream && crate::usage::add_include_usage(&mut plan.body);
                if strip_usage_chunk {
                    if let Ok(rewritten) = serde_json::to_vec(&plan.body) {
                        buffered = Some(Bytes::from(rewritten));
                        parts.headers.remove(http::header::CONTENT_LENGTH);
                    }
                }
                let charged = checks
                    .iter()
                    .filter_map(|c| match &c.charge {
                        Charge::Tokens { gcra, cost } => Some((c.id.clone(), c.key.clone(), *gcra, *cost)),
                        _ => None,
                    })
                    .collect();
                let reconcile = Reconcile {
                    limiter: gw.limiter.clone(),
                    ticket,
                    charged,
                    prompt: plan.cost(None).0,
                    model: plan.model.clone(),
                }
                .keep_charged(&limit_results);
                x.usage = Some(UsagePlan { reconcile, encoding: plan.encoding, strip_usage_chunk });
            }
            if let Some(id) = &decision.identity {
                let tenant = gw.traffic.tenant(&id.tenant);
                tenant.started();
                x.hold.tenant = Some(TenantGuard { tenant, prompt_tokens: 0, completion_tokens: 0 });
            }
            let body = match buffered {
                Some(bytes) => {
                    x.request_bytes.store(bytes.len() as u64, Ordering::Relaxed);
                    full(bytes)
                }
                None => match body.take() {
                    Some(incoming) => {
                        let counted = x.request_bytes.clone();
                        Limited::new(incoming, settings.max_body as usize)
                            .map_err(|e| BoxError::from(ClientBodyError(e)))
                            .map_frame(move |frame| {
                                if let Some(data) = frame.data_ref() {
                                    counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                                }
                                frame
                            })
                            .boxed()
                    }
                    None => empty(),
                },
            };
            let mut resp =
                forward(gw, loaded, conn, route, &decision, parts, body, client_upgrade, request_id, x).await?;
            rate_headers(resp.headers_mut(), &limit_results);
            Ok(resp)
        }
    }
}

/// Headers as the decision graph reads them: lower-case names, values as text.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// The request as the decision graph sees it.
fn gw_request<B>(req: &Request<B>, peer: SocketAddr) -> GwRequest {
    let uri = req.uri();
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    GwRequest {
        method: req.method().as_str().to_string(),
        host: gw_compiler::request::normalize_host(&host),
        path: uri.path().to_string(),
        query: uri.query().map(gw_compiler::request::parse_query).unwrap_or_default(),
        headers: header_pairs(req.headers()),
        body: None,
        client_ip: Some(peer.ip().to_string()),
    }
}

/// Header count and size limits (431). hyper enforces a hard cap just above these.
fn check_head(headers: &HeaderMap, max_headers: u64, max_bytes: u64) -> Result<(), GwError> {
    let count = headers.len() as u64;
    let bytes: u64 = headers.iter().map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64).sum();
    if count > max_headers || bytes > max_bytes {
        return Err(GwError::new(431, "headers_too_large", "request headers are too large or too many").closing());
    }
    Ok(())
}

/// A request must have one reading. hyper already refuses most malformed heads; what it lets
/// through and another parser could read differently is refused here, and the connection is
/// closed after the answer.
fn check_framing<B>(req: &Request<B>) -> Result<(), GwError> {
    let headers = req.headers();
    let ambiguous = |message: &str| Err(bad_request("ambiguous_framing", message).closing());
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
        return Err(bad_request("invalid_host", "more than one Host header").closing());
    }
    if req.version() == http::Version::HTTP_11 && hosts.is_empty() && req.uri().authority().is_none() {
        return Err(bad_request("invalid_host", "an HTTP/1.1 request needs a Host header").closing());
    }
    // An absolute-form target naming another host than `Host` would be routed on one and
    // read as the other by the next hop.
    if let (Some(authority), Some(host)) = (req.uri().authority(), hosts.first()) {
        if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
            return Err(bad_request("invalid_host", "the request target and Host name different hosts").closing());
        }
    }
    for (name, value) in headers {
        if value.as_bytes().iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(bad_request("invalid_header", format!("header `{name}` holds a control character")).closing());
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
            .ok_or_else(|| bad_request("invalid_content_length", "Content-Length is not a number")),
    }
}

/// Paths are routed as sent, so a path another server would read differently (dot segments,
/// encoded slashes or dots, backslashes) is refused rather than matched one way and served
/// another.
fn check_path(path: &str) -> Result<(), GwError> {
    let bad = || Err(bad_request("invalid_path", "the request path is not in normal form"));
    if !path.starts_with('/') {
        return bad();
    }
    if path.contains('\\') {
        return bad();
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"].iter().any(|enc| lower.contains(enc)) {
        return bad();
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return bad();
    }
    Ok(())
}

fn too_large(max: u64) -> GwError {
    GwError::new(413, "request_too_large", format!("the request body is larger than {max} bytes"))
}

async fn read_body(body: Option<Incoming>, max: u64) -> Result<Bytes, GwError> {
    let Some(body) = body else { return Ok(Bytes::new()) };
    match Limited::new(body, max as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        // The rest of the body is unread: the connection cannot carry another request.
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max).closing()),
        Err(_) => Err(bad_request("bad_body", "the request body could not be read").closing()),
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
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

fn respond(route: Option<&RouteInfo>) -> Response<Body> {
    let Some(info) = route.and_then(|r| r.respond.as_ref()) else {
        return Response::new(empty());
    };
    let mut resp = Response::new(full(info.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(info.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = info.content_type {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

fn serve_builtin(gw: &Gateway, loaded: &Loaded, builtin: &str) -> Response<Body> {
    let (content_type, body) = match builtin {
        "metrics" => ("text/plain; version=0.0.4", gw.metrics.render()),
        "ready" => (
            "application/json",
            serde_json::json!({"status": "ready", "generation": loaded.policy.generation}).to_string(),
        ),
        "upstreams" => ("application/json", crate::admin::upstreams_view(gw).to_string()),
        "usage" => ("application/json", crate::admin::usage_view(gw).to_string()),
        _ => ("application/json", r#"{"status":"ok"}"#.to_string()),
    };
    let mut resp = Response::new(full(body));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The limits the decision applies, as store checks. A token limit costs the request's
/// reservation (prompt + requested completion), or its `estimate` (else 1) when the body
/// cannot be counted.
fn limit_checks(loaded: &Loaded, decision: &Decision, request_id: &str, plan: Option<&TokenPlan>) -> Vec<LimitCheck> {
    use gw_compiler::gcra::Gcra;
    use gw_compiler::graph::LimitKindInfo;
    let table = loaded.policy.graph.limits();
    decision
        .limits
        .iter()
        .filter_map(|applied| {
            let info = table.get(applied.limit)?;
            let charge = match info.kind {
                LimitKindInfo::Rate { count, window_ns, burst } => {
                    Charge::Rate { gcra: Gcra::new(count, window_ns, burst), count }
                }
                LimitKindInfo::Tokens { count, window_ns, estimate } => {
                    let cost = plan.map(|p| p.cost(estimate).1).unwrap_or(estimate.unwrap_or(1));
                    Charge::Tokens { gcra: Gcra::new(count, window_ns, None), cost }
                }
                LimitKindInfo::Concurrent { max } => Charge::Concurrent { max, lease: request_id.to_string() },
            };
            Some(LimitCheck { id: applied.id.clone(), key: applied.key.clone(), shadow: info.shadow, charge })
        })
        .collect()
}

/// The answer to a request its limits refused: 429 in the policy's words, or 503 when the
/// limit store could not be asked and `on_error deny` refused. The limit's id goes to the log.
fn refusal(graph: &gw_compiler::graph::Graph, results: &[LimitResult]) -> GwError {
    let Some(r) = results.iter().find(|r| !r.allowed && !r.shadow) else {
        return GwError::new(429, "rate_limit_exceeded", "rate limit exceeded");
    };
    tracing::debug!(limit = %r.id, fallback = r.fallback, "limit refused the request");
    if r.fallback {
        return GwError::new(
            503,
            "limit_store_unavailable",
            "the limit store is unavailable and the policy refuses requests it cannot count; retry later",
        );
    }
    let limit = describe_limit(graph, &r.id);
    match r.kind {
        LimitKind::Concurrent => GwError::new(429, "concurrency_limit_exceeded", format!("{limit} is reached")),
        LimitKind::Tokens => GwError::new(429, "token_limit_exceeded", format!("{limit} is spent for now")),
        LimitKind::Requests => GwError::new(429, "rate_limit_exceeded", format!("{limit} is exceeded")),
    }
}

/// The limit with this id in the policy's words.
fn describe_limit(graph: &gw_compiler::graph::Graph, id: &str) -> String {
    graph.limits().iter().find(|l| l.id == id).map(crate::limits::describe).unwrap_or_else(|| "a limit".into())
}

fn count_limit_decisions(gw: &Gateway, results: &[LimitResult]) {
    for r in results {
        let outcome = match (r.allowed, r.shadow) {
            (true, _) => "allowed",
            (false, true) => "shadow_refused",
            (false, false) => "refused",
        };
        gw.metrics.limit_decisions.with_label_values(&[&r.id, outcome]).inc();
    }
}

/// The `x-ratelimit-*` headers OpenAI clients read, with OpenAI's meanings, for requests and
/// for tokens from the tightest enforced limit of each kind: `limit` the requests (tokens) per
/// window as the policy states it, `remaining` what would be admitted right now, `reset` the
/// time until the counter is full again (`1s`, `6m0s`, `20ms`); `Retry-After` when refused.
fn rate_headers(h: &mut HeaderMap, results: &[LimitResult]) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    const NAMES: [(LimitKind, [&str; 3]); 2] = [
        (
            LimitKind::Requests,
            ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"],
        ),
        (LimitKind::Tokens, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]),
    ];
    for (kind, [limit, remaining, reset]) in NAMES {
        // A fallback's numbers are made up (the store was not asked): no headers from them.
        let tightest = results
            .iter()
            .filter(|r| !r.shadow && !r.fallback && r.kind == kind)
            .min_by_key(|r| (r.allowed, r.remaining));
        if let Some(t) = tightest {
            put(limit, t.limit.to_string());
            put(remaining, t.remaining.to_string());
            put(reset, crate::limits::openai_duration(t.reset_after_ns));
        }
    }
    let retry = results.iter().filter(|r| !r.allowed && !r.shadow).map(|r| r.retry_after_ns).max();
    if let Some(ns) = retry {
        put("retry-after", ns.div_ceil(1_000_000_000).max(1).to_string());
    }
}

/// Send the request to the route's upstream and stream the answer back.
#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    loaded: &Loaded,
    conn: ConnInfo,
    route: &RouteInfo,
    decision: &Decision,
    parts: http::request::Parts,
    body: Body,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    request_id: &str,
    x: &mut Exchange,
) -> Result<Response<Body>, GwError> {
    let graph = &loaded.policy.graph;
    let up_index = route.upstream.ok_or_else(|| GwError::new(502, "no_upstream", "the route has no upstream"))?;
    let upstream = &loaded.upstreams[up_index];
    let up_info = &graph.upstreams()[up_index];
    let hash_key = match upstream.balance {
        gw_compiler::graph::BalanceInfo::Hash => {
            graph.balance_key(up_index, &gw_request_light(&parts, conn.peer), decision)
        }
        _ => None,
    };
    let target = upstream.pick(hash_key.as_deref());
    x.upstream = Some(upstream.name.clone());
    x.target = Some(
        target.authority.host().to_string() + &target.authority.port().map(|p| format!(":{p}")).unwrap_or_default(),
    );
    let websocket = route.websocket && client_upgrade.is_some();

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
        .map_err(|_| bad_request("invalid_path", "the rewritten path is not a valid URI"))?;

    let mut h = parts.headers;
    headers::remove_hop_by_hop(&mut h);
    h.remove(http::header::HOST);
    remove_credentials(&mut h, route);
    for name in &route.strip_headers {
        h.remove(name.as_str());
    }
    for (name, value) in &route.set_headers {
        set_header(&mut h, name, value.get());
    }
    headers::apply_forwarded(&mut h, graph.settings().forwarded, &conn.peer.ip().to_string());
    for (name, value) in &up_info.headers {
        set_header(&mut h, name, value.get());
    }
    set_header(&mut h, "x-request-id", Some(request_id));
    let trace = headers::traceparent(&h);
    set_header(&mut h, "traceparent", Some(&trace));
    if websocket {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    let mut up_req = Request::new(body);
    *up_req.method_mut() = parts.method.clone();
    *up_req.uri_mut() = uri;
    *up_req.headers_mut() = h;
    if parts.method == Method::CONNECT {
        return Err(GwError::new(405, "method_not_allowed", "CONNECT is not proxied"));
    }

    let _slot = match &upstream.slots {
        Some(sem) => match tokio::time::timeout(upstream.queue_timeout, sem.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => return Err(GwError::new(503, "upstream_busy", "the upstream has no free connection")),
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
            return Err(GwError::new(504, "upstream_timeout", "the upstream did not answer in time"));
        }
        Ok(Err(e)) => {
            match client_body_error(&e) {
                Some(ClientFault::TooLarge) => return Err(too_large(graph.settings().max_body).closing()),
                Some(ClientFault::Malformed) => {
                    return Err(bad_request("bad_body", "the request body is malformed or was cut off").closing())
                }
                None => {}
            }
            let kind = if e.is_connect() { "connect" } else { "protocol" };
            gw.metrics.upstream_errors.with_label_values(&[&upstream.name, kind]).inc();
            tracing::warn!(upstream = %upstream.name, kind, error = %e, "upstream request failed");
            return Err(GwError::new(502, "upstream_unavailable", "the upstream could not be reached"));
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

/// An error reading the client's request body while it streams upstream: the client's fault,
/// not the upstream's.
#[derive(Debug)]
struct ClientBodyError(BoxError);

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

/// A minimal request for `balance hash(...)` expressions, which read headers and the path.
fn gw_request_light(parts: &http::request::Parts, peer: SocketAddr) -> GwRequest {
    GwRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(gw_compiler::request::parse_query).unwrap_or_default(),
        headers: header_pairs(&parts.headers),
        client_ip: Some(peer.ip().to_string()),
        ..GwRequest::default()
    }
}

fn set_header(h: &mut HeaderMap, name: &str, value: Option<&str>) {
    let (Ok(name), Some(Ok(value))) = (HeaderName::from_bytes(name.as_bytes()), value.map(HeaderValue::from_str))
    else {
        return;
    };
    h.insert(name, value);
}

/// The client's credential never reaches the upstream.
fn remove_credentials(h: &mut HeaderMap, route: &RouteInfo) {
    let Some(auth) = &route.auth else { return };
    for source in &auth.sources {
        match source {
            CredentialSource::Header(name) => {
                h.remove(name.as_str());
            }
            CredentialSource::Bearer => {
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
            !secret_params.iter().any(|p| gw_compiler::request::parse_query(key).first().is_some_and(|(k, _)| k == p))
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

/// How long the header timeout and friends are, as `Duration`s.
pub fn ns(v: u64) -> Duration {
    Duration::from_nanos(v)
}
