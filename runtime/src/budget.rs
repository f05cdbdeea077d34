//! Token budgets: what a request is charged before it is forwarded (prompt tokens counted with
//! tiktoken + the completion it asks for), and the reconciliation with what the upstream
//! reports it used once the answer has ended.
//!
//! Overshoot bound: a budget is charged the full reservation up front, atomically with every
//! other limit of the request, so concurrent requests cannot all pass a nearly spent budget.
//! The only overshoot is a request whose real usage exceeds its reservation (a request naming
//! no `max_tokens` on a limit without `estimate`, or an upstream ignoring `max_tokens`): the
//! budget then goes over by at most that difference for each such request in flight.

use std::sync::Arc;

use bytes::Bytes;
use gw_compiler::gcra::Gcra;
use gw_compiler::graph::{LimitInfo, LimitKindInfo};
use gw_compiler::request::Decision;
use gw_compiler::tokens::{self, Encoding};
use serde_json::Value;

use crate::limits::LimitResult;
use crate::store::{Limiter, Ticket};
use crate::usage::UsageReport;

/// The request's token facts, when one of its limits is a token budget.
pub struct TokenPlan {
    pub body: Value,
    pub model: String,
    pub encoding: Encoding,
    pub stream: bool,
}

impl TokenPlan {
    /// Read the buffered body when the decision applies a token limit; None otherwise, or when
    /// the body is not JSON (such a request is charged its limits' `estimate`, or 1).
    pub fn new(decision: &Decision, table: &[LimitInfo], body: Option<&Bytes>) -> Option<TokenPlan> {
        let has_tokens = decision
            .limits
            .iter()
            .any(|a| table.get(a.limit).is_some_and(|l| matches!(l.kind, LimitKindInfo::Tokens { .. })));
        if !has_tokens {
            return None;
        }
        let body: Value = serde_json::from_slice(body?).ok()?;
        let model = body.get("model").and_then(Value::as_str).unwrap_or("").to_string();
        let encoding = tokens::encoding_for_model(&model, Encoding::Cl100kBase);
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        Some(TokenPlan { body, model, encoding, stream })
    }

    /// Tokens to reserve for a limit with this `estimate`: prompt + requested completion.
    pub fn cost(&self, estimate: Option<u64>) -> (u64, u64) {
        match tokens::reservation(&self.body, self.encoding, estimate) {
            Some(r) => (r.prompt, r.total()),
            None => (0, estimate.unwrap_or(1)),
        }
    }
}

/// What to reconcile when the answer ends.
pub struct Reconcile {
    pub limiter: Arc<Limiter>,
    pub ticket: Ticket,
    /// (limit id, counter key, GCRA, tokens reserved) of each token limit charged.
    pub charged: Vec<(String, String, Gcra, u64)>,
    /// Prompt tokens counted before forwarding.
    pub prompt: u64,
    pub model: String,
}

impl Reconcile {
    /// Only the limits that were charged: an admitted request charged every limit that allowed it.
    pub fn keep_charged(mut self, results: &[LimitResult]) -> Reconcile {
        self.charged.retain(|(id, _, _, _)| results.iter().any(|r| &r.id == id && r.allowed));
        self
    }

    /// The tokens the request really used, given the upstream's report and status, and the
    /// budgets corrected by the difference from what was reserved. Returns (prompt, completion).
    pub fn finish(self, report: &UsageReport, status: u16) -> (u64, u64) {
        let (prompt, completion) = match (report.prompt, report.completion) {
            (Some(p), Some(c)) => (p, c),
            // No usage reported: a successful or cut-short answer is charged the prompt counted
            // here and the completion counted from what was streamed; a refusal, nothing.
            _ if (200..300).contains(&status) => {
                (report.prompt.unwrap_or(self.prompt), report.completion.unwrap_or(report.streamed_completion_estimate))
            }
            _ => (0, 0),
        };
        let used = prompt.saturating_add(completion);
        for (id, key, gcra, reserved) in &self.charged {
            let delta = used as i64 - *reserved as i64;
            self.limiter.adjust(self.ticket, id, key, *gcra, delta);
        }
        (prompt, completion)
    }
}

/// A model name fit for a metric label: bounded, and only plain characters.
pub fn model_label(model: &str) -> &str {
    let plain = !model.is_empty()
        && model.len() <= 64
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-/".contains(&b));
    if plain {
        model
    } else {
        "other"
    }
}

/// The token service (`serve tokens`, `POST /admin/tokens`): count the tokens of
/// `{"model", "text"}`, or of a request body (`messages`, `prompt` or `input`), for its model.
pub fn count_request(body: &[u8]) -> Result<Value, String> {
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let encoding = tokens::encoding_for_model(model, Encoding::Cl100kBase);
    let count = match body.get("text").and_then(Value::as_str) {
        Some(text) => tokens::count_text(text, encoding),
        None => tokens::count_prompt(&body, encoding)
            .ok_or("give `text`, `messages`, `prompt` or `input` to count, and a `model`")?,
    };
    Ok(serde_json::json!({ "model": model, "encoding": encoding.name(), "tokens": count }))
}
