//! Phase 8, finish: the headers every answer carries, whether the connection can carry the
//! next request, and the answer's body wired to the request's accounting: token budgets
//! reconciled and the `Account` dropped when its last byte leaves (or the client does).

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use crate::account::Account;
use crate::body::Body;
use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::stream::{StreamEnd, Tracked};
use crate::usage::{TapOptions, UsageTap};

/// `x-request-id`, and `x-gw-policy` when the policy asks for it.
pub fn stamp(h: &mut HeaderMap, request_id: &str, policy: &Policy) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if policy.graph.settings().policy_header {
        let version = format!("{}-{}", policy.generation, policy.short_hash());
        if let Ok(v) = HeaderValue::from_str(&version) {
            h.insert("x-gw-policy", v);
        }
    }
}

/// What decides whether an HTTP/1 connection carries another request after this answer.
pub struct Reuse {
    h1: bool,
    expects_continue: bool,
    had_body: bool,
}

impl Reuse {
    pub fn of(head: &http::request::Parts, body: &Incoming) -> Reuse {
        Reuse {
            h1: head.version <= http::Version::HTTP_11,
            expects_continue: head.headers.contains_key(http::header::EXPECT),
            had_body: !body.is_end_stream(),
        }
    }

    /// Close the connection after `resp` unless the request's body was read to its end (or
    /// can be discarded now). `unread` is the body the pipeline left.
    pub async fn settle(self, resp: &mut Response<Body>, unread: Option<Incoming>, upstream_failed: bool) {
        if self.h1 && !says_close(resp.headers()) {
            let reusable = match unread {
                Some(unread) => discard_unread(unread, self.expects_continue).await,
                // A body handed to the upstream, which then failed, may not have been read to its end.
                None => !(self.had_body && upstream_failed),
            };
            if !reusable {
                resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
    }
}

/// Count the answer, and end the account when its body ends: with the token usage read from
/// it when the request has token budgets (then reconciled), else as it is.
pub fn account_body(gw: Arc<Gateway>, resp: Response<Body>, mut account: Account) -> Response<Body> {
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
            let opts = TapOptions::new(format, plan.meter).strip_usage_chunk(plan.strip_usage_chunk);
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
    Response::from_parts(parts, body)
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
