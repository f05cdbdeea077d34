//! The accounting of one request, as a guard. Whatever ends a request (its answer's last byte,
//! an error, the client leaving, the server's shutdown), dropping its `Account` counts it once
//! in the metrics, gives back what it holds, and writes it once to the audit log with why it
//! ended. Nothing has to remember to call it: a dropped future drops it too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::audit::AuditRecord;
use crate::exchange::Exchange;
use crate::gateway::Gateway;
use crate::idle::InFlight;
use crate::server::ConnInfo;
use crate::stream::StreamEnd;

/// The status counted for a request that ended before its answer began (nginx's convention
/// for "client closed request").
pub const NO_ANSWER: u16 = 499;

pub struct Account {
    gw: Arc<Gateway>,
    conn: ConnInfo,
    /// The connection's in-flight count, given back when the account drops.
    in_flight: InFlight,
    started: Instant,
    time: SystemTime,
    request_id: String,
    trace_id: String,
    method: String,
    path: String,
    generation: u64,
    /// What the pipeline learns about the request.
    pub x: Exchange,
    /// The answer's status, once its head is ready.
    status: Option<u16>,
    streamed: bool,
    end: Option<StreamEnd>,
    tokens: Option<(u64, u64)>,
}

impl Account {
    /// A request begins: it is in flight until the account drops.
    pub fn start(
        gw: Arc<Gateway>,
        conn: ConnInfo,
        in_flight: InFlight,
        head: &http::request::Parts,
        request_id: &str,
        trace: &crate::headers::Trace,
        generation: u64,
    ) -> Account {
        gw.metrics.in_flight.inc();
        Account {
            gw,
            conn,
            in_flight,
            started: Instant::now(),
            time: SystemTime::now(),
            request_id: request_id.to_string(),
            trace_id: trace.id.clone(),
            method: head.method.as_str().to_string(),
            path: head.uri.path().to_string(),
            generation,
            x: Exchange::default(),
            status: None,
            streamed: false,
            end: None,
            tokens: None,
        }
    }

    /// The answer's head is ready: count the request by its status.
    pub fn answered(&mut self, status: u16, streamed: bool) {
        self.count(status);
        self.status = Some(status);
        self.streamed = streamed;
    }

    /// The answer's body ended (or was dropped), with the token usage read from it.
    pub fn ended(mut self, end: StreamEnd, tokens: Option<(u64, u64)>) {
        self.end = Some(end);
        self.tokens = tokens;
    }

    fn count(&self, status: u16) {
        let metrics = &self.gw.metrics;
        let route = self.x.route.as_deref().unwrap_or("-");
        // The status's text without formatting it (every status gw answers is 100..=999).
        let code = http::StatusCode::from_u16(status).ok();
        let code = code.as_ref().map_or("invalid", http::StatusCode::as_str);
        metrics.requests.with_label_values(&[route, code]).inc();
        metrics.duration.with_label_values(&[route]).observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.gw.metrics.in_flight.dec();
        let error = match self.status {
            Some(_) => self
                .x
                .error
                .map(str::to_string)
                .or_else(|| (!self.end.is_some_and(|e| e.complete)).then(|| "response_incomplete".to_string())),
            None => {
                self.count(NO_ANSWER);
                let reason = if self.in_flight.aborted() { "shutdown" } else { "client_closed" };
                Some(reason.to_string())
            }
        };
        std::mem::take(&mut self.x.hold).release(self.tokens);
        let x = &mut self.x;
        let end = self.end.unwrap_or(StreamEnd { chunks: 0, bytes: 0, complete: false });
        let record = AuditRecord {
            time: self.time,
            request_id: std::mem::take(&mut self.request_id),
            trace_id: std::mem::take(&mut self.trace_id),
            key_name: x.key_name.take(),
            tenant: x.tenant.take(),
            client_ip: crate::headers::ip_text(self.conn.peer.ip()),
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            route: x.route.take(),
            upstream: x.upstream.take(),
            target: x.target.take(),
            status: self.status.unwrap_or(NO_ANSWER),
            latency_ms: self.started.elapsed().as_secs_f64() * 1e3,
            upstream_ms: x.upstream_ms,
            request_bytes: x.request_bytes.load(Ordering::Relaxed),
            response_bytes: end.bytes,
            streamed: self.streamed,
            chunks: end.chunks,
            cache: x.cache,
            prompt_tokens: self.tokens.map(|t| t.0),
            completion_tokens: self.tokens.map(|t| t.1),
            error,
            shadow_refused: std::mem::take(&mut x.shadow_refused),
            policy_generation: self.generation,
        };
        // The recent-requests view keeps every record; the audit file, when there is one, too.
        let record = std::sync::Arc::new(record);
        if let Some(audit) = &self.gw.audit {
            audit.record(record.clone());
        }
        self.gw.recent.push(record);
    }
}
