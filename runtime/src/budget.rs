//! Token budgets: what a request is charged before it is forwarded (its prompt's tokens + the
//! completion it asks for), and the reconciliation with what the upstream reports it used once
//! the answer has ended.
//!
//! Counting only when it matters: the prompt is first measured by its byte bound
//! (`tokens::prompt_bound`, never below the exact count in any encoding, and free of BPE work).
//! When every budget has room for the bound, the bound is reserved and the upstream's usage
//! settles it. The prompt is counted exactly (with tiktoken, in the model's encoding) only when
//! the bound does not fit (near a budget's edge, or larger than a whole budget) and when the
//! answer reports no usage. A model of no known family has no exact count: it is measured by
//! the bound throughout, so it can be over-charged but never under-charged.
//!
//! Overshoot bound: a budget is charged the full reservation up front, atomically with every
//! other limit of the request, so concurrent requests cannot all pass a nearly spent budget.
//! The only overshoot is a request whose real usage exceeds its reservation (a request naming
//! no `max_tokens` on a limit without `estimate`, or an upstream ignoring `max_tokens`): the
//! budget then goes over by at most that difference for each such request in flight.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gw_engine::gcra::Gcra;
use gw_engine::graph::{LimitInfo, LimitKindInfo};
use gw_engine::request::Decision;
use gw_engine::tokens::{self, Encoding, Meter};
use serde_json::Value;

use crate::limits::LimitResult;
use crate::store::{Limiter, Ticket};
use crate::usage::UsageReport;

/// The request's token facts, when one of its limits is a token budget.
pub struct TokenPlan {
    pub body: Arc<Value>,
    /// The body as received (shared, not copied), for an exact count after the answer.
    pub raw: Bytes,
    pub model: String,
    /// How the prompt is counted exactly: the model's encoding, or the bound for an unknown one.
    pub meter: Meter,
    pub stream: bool,
    /// The prompt's byte bound; `None` when the body has no prompt gw reads.
    bound: Option<u64>,
    /// The exact prompt count, once it was needed.
    exact: OnceLock<Option<u64>>,
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
        let raw = body?.clone();
        // The value the decision read (strictly) when it read the body; else read it now.
        let body: Arc<Value> = match &decision.body.0 {
            Some(read) => read.clone(),
            None => Arc::new(serde_json::from_slice(&raw).ok()?),
        };
        let model = body.get("model").and_then(Value::as_str).unwrap_or("").to_string();
        let meter = Meter::for_body(&body);
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let bound = tokens::prompt_bound(&body);
        Some(TokenPlan { body, raw, model, meter, stream, bound, exact: OnceLock::new() })
    }

    /// The prompt as reserved now: its exact count once counted, else its bound.
    fn prompt(&self) -> Option<u64> {
        self.exact.get().copied().unwrap_or(self.bound)
    }

    /// Tokens to reserve for a limit with this `estimate`: prompt (its bound until it is counted,
    /// see [`TokenPlan::count_exactly`]) + requested completion. Returns (prompt, total).
    pub fn cost(&self, estimate: Option<u64>) -> (u64, u64) {
        match self.prompt() {
            Some(prompt) => (prompt, prompt.saturating_add(tokens::completion_reserved(&self.body, estimate))),
            None => (0, estimate.unwrap_or(1)),
        }
    }

    /// Whether an exact count could lower the reservation: the bound is still in use and the
    /// model's encoding is known.
    pub fn may_shrink(&self) -> bool {
        matches!(self.meter, Meter::Exact(_)) && self.bound.is_some() && self.exact.get().is_none()
    }

    /// Count the prompt exactly, from now on reserved instead of its bound. A table not loaded
    /// yet is loaded on a blocking thread, never on the request's worker, and waited for.
    pub async fn count_exactly(&self) {
        if let Meter::Exact(enc) = self.meter {
            if !tokens::is_loaded(enc) {
                let _ = tokio::task::spawn_blocking(move || tokens::load(enc)).await;
            }
        }
        self.exact.get_or_init(|| tokens::measure_prompt(&self.body, self.meter));
    }

    /// Count the prompt exactly if the encoding's table is loaded; else start loading it and
    /// return false (the bound stands: a refusal that does not wait for a table).
    pub fn count_exactly_now(&self) -> bool {
        if self.meter.ready() != self.meter {
            return false;
        }
        self.exact.get_or_init(|| tokens::measure_prompt(&self.body, self.meter));
        true
    }

    /// The prompt to settle with when the answer reports no usage: counted already, or
    /// counted later from the body (only then).
    pub fn settle_prompt(&self) -> SettlePrompt {
        match self.exact.get() {
            Some(exact) => SettlePrompt::Counted(exact.unwrap_or(0)),
            None if self.meter == Meter::Bytes => SettlePrompt::Counted(self.bound.unwrap_or(0)),
            None => SettlePrompt::Later { raw: self.raw.clone(), meter: self.meter },
        }
    }
}

/// The prompt tokens a request is settled with when its answer reports none.
pub enum SettlePrompt {
    Counted(u64),
    /// Count the body when (and only if) it is needed.
    Later {
        raw: Bytes,
        meter: Meter,
    },
}

impl SettlePrompt {
    fn count(&self) -> u64 {
        match self {
            SettlePrompt::Counted(n) => *n,
            // Counted where the answer ends, which must not wait for a table to load.
            SettlePrompt::Later { raw, meter } => serde_json::from_slice::<Value>(raw)
                .ok()
                .and_then(|body| tokens::measure_prompt(&body, meter.ready()))
                .unwrap_or(0),
        }
    }
}

/// What to reconcile when the answer ends.
pub struct Reconcile {
    pub limiter: Arc<Limiter>,
    pub ticket: Ticket,
    /// (limit id, counter key, GCRA, tokens reserved) of each token limit charged.
    pub charged: Vec<(std::sync::Arc<str>, String, Gcra, u64)>,
    /// Prompt tokens, for an answer that reports none.
    pub prompt: SettlePrompt,
    pub model: String,
}

impl Reconcile {
    /// Only the limits that were charged: an admitted request charged every limit that allowed it.
    pub fn keep_charged(mut self, results: &[LimitResult]) -> Reconcile {
        self.charged.retain(|(id, _, _, _)| results.iter().any(|r| r.id == *id && r.allowed));
        self
    }

    /// The tokens the request really used, given the upstream's report and status, and the
    /// budgets corrected by the difference from what was reserved. Returns (prompt, completion).
    pub fn finish(self, report: &UsageReport, status: u16) -> (u64, u64) {
        let (prompt, completion) = match (report.prompt, report.completion) {
            (Some(p), Some(c)) => (p, c),
            // No usage reported: a successful or cut-short answer is charged the prompt counted
            // here and the completion counted from what was streamed; a refusal, nothing.
            _ if (200..300).contains(&status) => (
                report.prompt.unwrap_or_else(|| self.prompt.count()),
                report.completion.unwrap_or(report.streamed_completion_estimate),
            ),
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
/// `tools`, `functions` and `instructions` counted with it), in the encoding `encoding` names,
/// else the one of the model's family. A model of no known family (or no model) without an
/// `encoding` is refused: counting it in another family's encoding would answer a wrong number
/// as if it were right. A field it does not read is refused, not ignored.
pub fn count_request(body: &[u8]) -> Result<Value, String> {
    const SOURCES: [&str; 4] = ["text", "messages", "prompt", "input"];
    const COUNTED_WITH: [&str; 3] = ["tools", "functions", "instructions"];
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let fields = body.as_object().ok_or("the body must be a JSON object")?;
    let expected = "the token service reads `model` and/or `encoding`, and one of `text`, `messages`, `prompt`, \
                    `input` (with `tools`, `functions`, `instructions`)";
    let known = |k: &str| k == "model" || k == "encoding" || SOURCES.contains(&k) || COUNTED_WITH.contains(&k);
    if let Some(unknown) = fields.keys().find(|k| !known(k)) {
        return Err(format!("unknown field `{unknown}`: {expected}"));
    }
    let model = match fields.get("model") {
        None => "",
        Some(Value::String(m)) => m,
        Some(_) => return Err("`model` must be a string".to_string()),
    };
    let encoding = service_encoding(model, fields.get("encoding"))?;
    let given: Vec<&str> = SOURCES.into_iter().filter(|f| fields.contains_key(*f)).collect();
    let count = match given.as_slice() {
        ["text"] => match fields.get("text") {
            Some(Value::String(text)) if COUNTED_WITH.iter().all(|f| !fields.contains_key(*f)) => {
                tokens::count_text(text, encoding)
            }
            Some(Value::String(_)) => return Err(format!("`text` is counted alone: {expected}")),
            _ => return Err("`text` must be a string".to_string()),
        },
        [_] => tokens::measure_prompt(&body, Meter::Exact(encoding)).ok_or("the prompt is not in a shape gw counts")?,
        [] => return Err(format!("nothing to count: {expected}")),
        _ => return Err(format!("give only one of {}: {expected}", given.join(", "))),
    };
    Ok(serde_json::json!({ "model": model, "encoding": encoding.name(), "tokens": count }))
}

/// [`count_request`] on a blocking thread: a long text, or the first use of an encoding (its
/// table loads then, tens of MB and up to a few hundred ms), never stalls a request worker.
pub async fn count_request_blocking(body: impl AsRef<[u8]> + Send + 'static) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || count_request(body.as_ref()))
        .await
        .unwrap_or_else(|_| Err("the token count failed".to_string()))
}

/// The encoding the token service counts in: `encoding` when given, else the model's family's.
fn service_encoding(model: &str, explicit: Option<&Value>) -> Result<Encoding, String> {
    let names = "o200k_base, cl100k_base, p50k_base, r50k_base (or gpt2)";
    match explicit {
        Some(Value::String(name)) => {
            Encoding::from_name(name).ok_or_else(|| format!("unknown encoding `{name}`: gw counts in {names}"))
        }
        Some(_) => Err("`encoding` must be a string".to_string()),
        None => tokens::model_encoding(model).ok_or_else(|| {
            let which = if model.is_empty() {
                "no `model` is given".to_string()
            } else {
                format!("`{model}` is of no model family gw knows")
            };
            format!("{which}: name the encoding in `encoding` ({names})")
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::count_request;

    #[test]
    fn the_token_service_refuses_what_it_does_not_read() {
        let ok = count_request(br#"{"model": "gpt-4o", "text": "hello world"}"#).unwrap();
        assert_eq!((ok["tokens"].as_u64(), ok["encoding"].as_str()), (Some(2), Some("o200k_base")));
        let explicit = count_request(br#"{"text": "hello", "encoding": "gpt2"}"#).unwrap();
        assert_eq!((explicit["encoding"].as_str(), explicit["tokens"].as_u64()), (Some("r50k_base"), Some(1)));
        let davinci = count_request(br#"{"model": "davinci", "text": "hello world"}"#).unwrap();
        assert_eq!(davinci["encoding"], "r50k_base");
        // The explicit encoding wins over the model's.
        let chosen = count_request(br#"{"model": "gpt-4o", "text": "hi", "encoding": "p50k_base"}"#).unwrap();
        assert_eq!(chosen["encoding"], "p50k_base");
        let chat = br#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;
        assert!(count_request(chat).unwrap()["tokens"].as_u64().unwrap() > 1);
        for (body, says) in [
            (r#"{"model": "gpt-4o", "text": "hi", "encodings": "cl100k_base"}"#, "unknown field `encodings`"),
            (r#"{"model": "gpt-4o", "text": "hi", "encoding": "o300k"}"#, "unknown encoding `o300k`"),
            (r#"{"model": "gpt-4o", "text": "hi", "encoding": 1}"#, "`encoding` must be a string"),
            (r#"{"model": "llama-3-8b", "text": "hi"}"#, "`llama-3-8b` is of no model family"),
            (r#"{"text": "hi"}"#, "no `model` is given"),
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
