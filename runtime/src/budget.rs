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
use gw_engine::gcra::Gcra;
use gw_engine::graph::{LimitInfo, LimitKindInfo};
use gw_engine::request::Decision;
use gw_engine::tokens::{self, Encoding};
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
/// `{"model", "text"}`, or of a request's prompt (`messages`, `prompt` or `input`, with the
/// `tools`, `functions` and `instructions` counted with it), for its model. A field it does not
/// read is refused, not ignored: `{"encoding": ...}` must not look as if it chose the encoding.
pub fn count_request(body: &[u8]) -> Result<Value, String> {
    const SOURCES: [&str; 4] = ["text", "messages", "prompt", "input"];
    const COUNTED_WITH: [&str; 3] = ["tools", "functions", "instructions"];
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let fields = body.as_object().ok_or("the body must be a JSON object")?;
    let expected = "the token service reads `model` and one of `text`, `messages`, `prompt`, `input` \
                    (with `tools`, `functions`, `instructions`)";
    if let Some(unknown) =
        fields.keys().find(|k| *k != "model" && !SOURCES.contains(&k.as_str()) && !COUNTED_WITH.contains(&k.as_str()))
    {
        return Err(format!("unknown field `{unknown}`: {expected}"));
    }
    let model = match fields.get("model") {
        None => "",
        Some(Value::String(m)) => m,
        Some(_) => return Err("`model` must be a string".to_string()),
    };
    let given: Vec<&str> = SOURCES.into_iter().filter(|f| fields.contains_key(*f)).collect();
    let encoding = tokens::encoding_for_model(model, Encoding::Cl100kBase);
    let count = match given.as_slice() {
        ["text"] => match fields.get("text") {
            Some(Value::String(text)) if COUNTED_WITH.iter().all(|f| !fields.contains_key(*f)) => {
                tokens::count_text(text, encoding)
            }
            Some(Value::String(_)) => return Err(format!("`text` is counted alone: {expected}")),
            _ => return Err("`text` must be a string".to_string()),
        },
        [_] => tokens::count_prompt(&body, encoding).ok_or("the prompt is not in a shape gw counts")?,
        [] => return Err(format!("nothing to count: {expected}")),
        _ => return Err(format!("give only one of {}: {expected}", given.join(", "))),
    };
    Ok(serde_json::json!({ "model": model, "encoding": encoding.name(), "tokens": count }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::count_request;

    #[test]
    fn the_token_service_refuses_what_it_does_not_read() {
        let ok = count_request(br#"{"model": "gpt-4o", "text": "hello world"}"#).unwrap();
        assert_eq!((ok["tokens"].as_u64(), ok["encoding"].as_str()), (Some(2), Some("o200k_base")));
        assert!(count_request(br#"{"text": "hello"}"#).unwrap()["encoding"] == "cl100k_base");
        let chat = br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;
        assert!(count_request(chat).unwrap()["tokens"].as_u64().unwrap() > 1);
        for (body, says) in [
            (r#"{"model": "gpt-4o", "text": "hi", "encoding": "cl100k_base"}"#, "unknown field `encoding`"),
            (r#"{"model": "gpt-4o", "messages": [], "temperature": 1}"#, "unknown field `temperature`"),
            (r#"{"model": "gpt-4o", "text": "hi", "prompt": "ho"}"#, "only one of"),
            (r#"{"model": "gpt-4o", "text": "hi", "tools": []}"#, "`text` is counted alone"),
            (r#"{"model": "gpt-4o", "text": 5}"#, "`text` must be a string"),
            (r#"{"model": 4, "text": "hi"}"#, "`model` must be a string"),
            (r#"{"model": "gpt-4o"}"#, "nothing to count"),
            (r#"["text"]"#, "a JSON object"),
            (r#"{"text": "#, "not JSON"),
        ] {
            let err = count_request(body.as_bytes()).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
    }
}
