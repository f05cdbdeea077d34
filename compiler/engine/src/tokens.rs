//! Token counting for token budgets: which BPE encoding a model uses, how many prompt tokens a
//! request body costs, and what a budget is charged before the request is forwarded.
//!
//! Free of tokio and of any I/O so `gw-check`'s test runner counts exactly as the runtime does.
//! The BPE tables are embedded in `tiktoken-rs` (no download at run time); each encoding is
//! loaded once, on first use (or by [`load`]), and only the encodings actually used are: a
//! table costs tens of MB and tens to hundreds of ms to load (see [`warm_up`]).
//!
//! A token budget needs an exact count only near its edge: [`prompt_bound`] bounds the prompt
//! in every encoding without any BPE work, and the runtime reserves that bound when the budget
//! has room for it, settling with the upstream's usage (see `runtime/src/budget.rs`).
//!
//! # Accounting choices
//!
//! Counts follow OpenAI's cookbook ("How to count tokens with tiktoken"); where the cookbook
//! says nothing, the choice made here is stated:
//!
//! - Text is encoded as *ordinary* text: a special-token string such as `<|endoftext|>` inside
//!   user content counts as the plain text it is (as the API treats it), never as one token.
//! - Chat messages: [`TOKENS_PER_MESSAGE`] (3) per message, plus the tokens of every string
//!   field (`role`, `content`, `name`, `tool_call_id`, `refusal`, …), plus [`TOKENS_PER_NAME`]
//!   (1) when `name` is present, plus [`REPLY_PRIMING`] (3) once for the assistant's reply.
//! - `content` as an array of parts: parts carrying a `text` string (`text`, `input_text`,
//!   `output_text`) count their text, a `refusal` part its refusal text; image parts
//!   (`image_url`, `input_image`) cost a fixed [`IMAGE_PART_TOKENS`] (85, the documented
//!   low-detail cost: high detail costs more and depends on the image, which gw does not fetch);
//!   any other part (audio, files) counts as the tokens of its compact JSON text — an
//!   approximation, usually an overestimate.
//! - `tool_calls` (and legacy `function_call`) in assistant messages: the tokens of each call's
//!   `function.name` and `function.arguments`, plus [`FUNCTION_CALL_OVERHEAD`] (1) per call.
//!   Any other non-string message field counts as its compact JSON text.
//! - `tools` / `functions` definitions: the tokens of their compact JSON text. OpenAI renders
//!   them into a TypeScript-like form internally, so this is an approximation that can be off
//!   by a few tokens per property either way — acceptable for a budget reservation, which is
//!   reconciled with the reported usage afterwards.
//! - Completions `prompt` and embeddings `input`: a string counts its tokens, an array of
//!   strings the sum, a token array (integers) its length, an array of token arrays the sum of
//!   lengths. No per-request overhead is added (the API reports none for these).
//! - A Responses-API `input` given as an array of message items (or as a string next to
//!   `instructions`, taken as one user message) is counted with the chat accounting above,
//!   plus `instructions` as text: an approximation for that API. A bare string `input` is
//!   counted as embeddings input (no overhead).

use std::sync::OnceLock;

use serde_json::Value;

pub mod memo;
use tiktoken_rs::CoreBPE;

/// Tokens every chat message costs beyond its fields (`<|start|>{role}\n … <|end|>\n`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Extra tokens when a message has a `name`.
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens priming the assistant's reply (`<|start|>assistant<|message|>`), once per request.
pub const REPLY_PRIMING: u64 = 3;
/// Fixed cost of one image part (OpenAI's documented low-detail image cost).
pub const IMAGE_PART_TOKENS: u64 = 85;
/// Extra tokens per tool/function call in an assistant message (a heuristic, as tiktoken-rs).
pub const FUNCTION_CALL_OVERHEAD: u64 = 1;

/// A BPE encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1/o3/o4 families.
    O200kBase,
    /// GPT-4, GPT-3.5, text-embedding-3, text-embedding-ada-002; the default fallback.
    #[default]
    Cl100kBase,
    /// Codex and text-davinci-002/003.
    P50kBase,
    /// GPT-3 (`davinci`, …), also known as `gpt2`.
    R50kBase,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 4] = [Encoding::O200kBase, Encoding::Cl100kBase, Encoding::P50kBase, Encoding::R50kBase];

    /// The tiktoken name, e.g. `o200k_base`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::P50kBase => "p50k_base",
            Encoding::R50kBase => "r50k_base",
        }
    }

    /// The encoding a tiktoken name denotes (`gpt2` is accepted for `r50k_base`).
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "o200k_base" => Some(Encoding::O200kBase),
            "cl100k_base" => Some(Encoding::Cl100kBase),
            "p50k_base" => Some(Encoding::P50kBase),
            "r50k_base" | "gpt2" => Some(Encoding::R50kBase),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Encoding::O200kBase => 0,
            Encoding::Cl100kBase => 1,
            Encoding::P50kBase => 2,
            Encoding::R50kBase => 3,
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Encoding, String> {
        Encoding::from_name(s).ok_or_else(|| format!("unknown token encoding `{s}`"))
    }
}

/// Model-name prefixes (lower case) and their encodings, first match wins: the `o`-suffixed and
/// dotted GPT-4 families come before plain `gpt-4`.
const PREFIXES: &[(&str, Encoding)] = &[
    ("gpt-4o", Encoding::O200kBase),
    ("chatgpt-4o", Encoding::O200kBase),
    ("gpt-4.1", Encoding::O200kBase),
    ("gpt-4.5", Encoding::O200kBase),
    ("gpt-5", Encoding::O200kBase),
    ("gpt-oss", Encoding::O200kBase),
    ("o1", Encoding::O200kBase),
    ("o3", Encoding::O200kBase),
    ("o4", Encoding::O200kBase),
    ("gpt-4", Encoding::Cl100kBase),
    ("gpt-3.5", Encoding::Cl100kBase),
    ("gpt-35", Encoding::Cl100kBase),
    ("text-embedding-3", Encoding::Cl100kBase),
    ("text-embedding-ada-002", Encoding::Cl100kBase),
    ("davinci-002", Encoding::Cl100kBase),
    ("babbage-002", Encoding::Cl100kBase),
    ("text-davinci-002", Encoding::P50kBase),
    ("text-davinci-003", Encoding::P50kBase),
    ("code-davinci", Encoding::P50kBase),
    ("code-cushman", Encoding::P50kBase),
];

/// Model names (lower case, the whole name before any `:`) of the GPT-3 era and their
/// encodings, as tiktoken maps them.
const NAMES: &[(&str, Encoding)] = &[
    ("gpt2", Encoding::R50kBase),
    ("gpt-2", Encoding::R50kBase),
    ("davinci", Encoding::R50kBase),
    ("curie", Encoding::R50kBase),
    ("babbage", Encoding::R50kBase),
    ("ada", Encoding::R50kBase),
];

/// Prefixes of the GPT-3 era (checked after [`PREFIXES`], so `text-davinci-002` stays p50k).
const LEGACY_PREFIXES: &[(&str, Encoding)] = &[
    ("text-davinci-edit", Encoding::P50kBase),
    ("text-davinci-001", Encoding::R50kBase),
    ("text-curie-", Encoding::R50kBase),
    ("text-babbage-", Encoding::R50kBase),
    ("text-ada-", Encoding::R50kBase),
    ("text-similarity-", Encoding::R50kBase),
    ("text-search-", Encoding::R50kBase),
    ("code-search-", Encoding::R50kBase),
];

/// The encoding of `model`'s family, or `None` for a model of no family gw knows.
///
/// o200k_base for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5, chatgpt-4o, gpt-oss and o1/o3/o4
/// families; cl100k_base for gpt-4 (not `o`), gpt-3.5 (`gpt-35` too), text-embedding-3,
/// text-embedding-ada-002, davinci-002 and babbage-002; p50k_base for text-davinci-002/003,
/// text-davinci-edit and codex (`code-davinci`, `code-cushman`); r50k_base (`gpt2`) for `gpt2`,
/// the GPT-3 base models (`davinci`, `curie`, `babbage`, `ada`), text-davinci-001,
/// text-curie/babbage/ada-001 and the text-similarity/search and code-search models.
///
/// Names are compared case-insensitively; a fine-tune `ft:BASE:…` (or a legacy `BASE:ft-…`)
/// maps as `BASE`, and a provider prefix (`openai/gpt-4o`, `azure/gpt-4o`) is ignored (the part
/// after the last `/`).
pub fn model_encoding(model: &str) -> Option<Encoding> {
    let mut name = model.trim();
    if let Some(rest) = name.strip_prefix("ft:") {
        name = rest.split(':').next().unwrap_or(rest);
    }
    if let Some((_, last)) = name.rsplit_once('/') {
        name = last;
    }
    let starts = |prefix: &str| {
        name.len() >= prefix.len() && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    if let Some((_, enc)) = PREFIXES.iter().chain(LEGACY_PREFIXES).find(|(prefix, _)| starts(prefix)) {
        return Some(*enc);
    }
    let base = name.split(':').next().unwrap_or(name);
    NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(base)).map(|(_, enc)| *enc)
}

/// The encoding `model` uses ([`model_encoding`]), `default` for a model of no known family.
pub fn encoding_for_model(model: &str, default: Encoding) -> Encoding {
    model_encoding(model).unwrap_or(default)
}

/// How texts are measured: exactly, in an encoding, or by a bound no encoding exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    /// Tokens of the encoding, as tiktoken counts them.
    Exact(Encoding),
    /// The text's UTF-8 length in bytes: never fewer than its tokens in any of the encodings,
    /// which are byte-level BPEs where every token stands for at least one byte.
    Bytes,
}

impl From<Encoding> for Meter {
    fn from(enc: Encoding) -> Meter {
        Meter::Exact(enc)
    }
}

impl Meter {
    /// The meter a token budget uses for a request body: its model's encoding, or the byte
    /// bound when the body names no model of a known family. An unknown model is never counted
    /// in the encoding of another family: that could count fewer tokens than it really uses.
    pub fn for_body(body: &Value) -> Meter {
        match body.get("model").and_then(Value::as_str).and_then(model_encoding) {
            Some(enc) => Meter::Exact(enc),
            None => Meter::Bytes,
        }
    }

    /// This meter if it can measure now without loading a table; else the byte bound, with the
    /// table loading on a thread of its own for the next time. For counts that must not wait
    /// (a request's worker settling an answer): the bound over-counts, never under-counts.
    pub fn ready(self) -> Meter {
        match self {
            Meter::Exact(enc) if !is_loaded(enc) => {
                load_in_background(enc);
                Meter::Bytes
            }
            other => other,
        }
    }

    /// What `text` measures.
    pub fn text(self, text: &str) -> u64 {
        match self {
            Meter::Exact(enc) => count_text(text, enc),
            Meter::Bytes => text.len() as u64,
        }
    }
}

static BPES: [OnceLock<Option<CoreBPE>>; 4] = [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];

/// The loaded BPE of `enc` (loaded on first use). `None` only if the embedded table failed to
/// load, which a build of tiktoken-rs that passed its tests cannot do.
fn bpe(enc: Encoding) -> Option<&'static CoreBPE> {
    BPES[enc.index()]
        .get_or_init(|| {
            let loaded = match enc {
                Encoding::O200kBase => tiktoken_rs::o200k_base(),
                Encoding::Cl100kBase => tiktoken_rs::cl100k_base(),
                Encoding::P50kBase => tiktoken_rs::p50k_base(),
                Encoding::R50kBase => tiktoken_rs::r50k_base(),
            };
            loaded.ok()
        })
        .as_ref()
}

/// Whether `enc` is loaded already (counting with it costs no load time).
pub fn is_loaded(enc: Encoding) -> bool {
    BPES[enc.index()].get().is_some()
}

/// Load `enc` now rather than on the first request that needs it. Returns false if it could not
/// be loaded (counting then falls back to an estimate of one token per 4 bytes).
pub fn load(enc: Encoding) -> bool {
    bpe(enc).is_some()
}

/// Start loading `enc` on a thread of its own (once; nothing when it is loaded or loading).
pub fn load_in_background(enc: Encoding) {
    static STARTED: [std::sync::atomic::AtomicBool; 4] = [const { std::sync::atomic::AtomicBool::new(false) }; 4];
    if is_loaded(enc) || STARTED[enc.index()].swap(true, std::sync::atomic::Ordering::AcqRel) {
        return;
    }
    std::thread::spawn(move || load(enc));
}

/// Load the encodings chat models use (o200k_base and cl100k_base). Measured on the 2-core
/// development machine (busy with other builds) in a release build: 0.25–0.4 s for o200k_base
/// and 0.06–0.17 s for cl100k_base, once per process; debug builds are several times slower.
pub fn warm_up() {
    load(Encoding::O200kBase);
    load(Encoding::Cl100kBase);
}

/// Tokens of `text` in `enc`, encoded as ordinary text (special-token strings count as text).
/// A text of [`memo::MIN_BYTES`] or more is counted once and remembered ([`memo`]).
pub fn count_text(text: &str, enc: Encoding) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match bpe(enc) {
        Some(bpe) => memo::count(enc.index() as u8, text, || bpe.encode_ordinary(text).len() as u64),
        None => (text.len() as u64).div_ceil(4),
    }
}

/// The exact meter for `body`: its model's encoding, `default` when it names no known model.
fn exact_meter(body: &Value, default: Encoding) -> Meter {
    match body.get("model").and_then(Value::as_str) {
        Some(model) => Meter::Exact(encoding_for_model(model, default)),
        None => Meter::Exact(default),
    }
}

/// Tokens of a value's compact JSON text.
fn count_json(value: &Value, m: Meter) -> u64 {
    match value {
        Value::Null => 0,
        Value::String(s) => m.text(s),
        other => m.text(&other.to_string()),
    }
}

/// Tokens of a message `content`: a string, or an array of parts.
fn count_content(content: &Value, m: Meter) -> u64 {
    match content {
        Value::Null => 0,
        Value::String(s) => m.text(s),
        Value::Array(parts) => parts.iter().map(|p| count_part(p, m)).fold(0, u64::saturating_add),
        other => count_json(other, m),
    }
}

fn count_part(part: &Value, m: Meter) -> u64 {
    if let Value::String(s) = part {
        return m.text(s);
    }
    if let Some(text) = part.get("text").and_then(Value::as_str) {
        return m.text(text);
    }
    match part.get("type").and_then(Value::as_str) {
        Some("image_url" | "input_image" | "image") => IMAGE_PART_TOKENS,
        Some("refusal") => part.get("refusal").map_or(0, |r| count_json(r, m)),
        _ => count_json(part, m),
    }
}

/// Tokens of the calls in `tool_calls` or a single `function_call`.
fn count_call(call: &Value, m: Meter) -> u64 {
    let f = call.get("function").unwrap_or(call);
    let name = f.get("name").map_or(0, |v| count_json(v, m));
    let args = f.get("arguments").map_or(0, |v| count_json(v, m));
    name.saturating_add(args).saturating_add(FUNCTION_CALL_OVERHEAD)
}

/// Tokens of one chat message, its per-message overhead included.
fn count_message(message: &Value, m: Meter) -> u64 {
    let mut n = TOKENS_PER_MESSAGE;
    match message {
        Value::Object(fields) => {
            for (key, value) in fields {
                let cost = match key.as_str() {
                    "content" => count_content(value, m),
                    "name" => count_json(value, m).saturating_add(TOKENS_PER_NAME),
                    "tool_calls" => match value {
                        Value::Array(calls) => calls.iter().map(|c| count_call(c, m)).fold(0, u64::saturating_add),
                        other => count_json(other, m),
                    },
                    "function_call" if value.is_object() => count_call(value, m),
                    // Responses-API item discriminator (`"type": "message"`): framing, not text.
                    "type" if value.as_str() == Some("message") => 0,
                    _ => count_json(value, m),
                };
                n = n.saturating_add(cost);
            }
        }
        other => n = n.saturating_add(count_json(other, m)),
    }
    n
}

/// Prompt tokens of a chat-completions body (`messages`, with `tools`/`functions`): the
/// per-message accounting OpenAI documents (see the module doc). `None` when the body has no
/// `messages` array.
pub fn count_chat_prompt(body: &Value, default: Encoding) -> Option<u64> {
    let messages = body.get("messages")?.as_array()?;
    let m = exact_meter(body, default);
    Some(count_messages(messages, m).saturating_add(count_tools(body, m)))
}

fn count_messages(messages: &[Value], m: Meter) -> u64 {
    messages.iter().map(|msg| count_message(msg, m)).fold(REPLY_PRIMING, u64::saturating_add)
}

/// Tokens of the `tools` and legacy `functions` definitions (compact JSON text).
fn count_tools(body: &Value, m: Meter) -> u64 {
    let tools = body.get("tools").map_or(0, |t| count_json(t, m));
    let functions = body.get("functions").map_or(0, |f| count_json(f, m));
    tools.saturating_add(functions)
}

/// Tokens of a completions `prompt` or embeddings `input`: a string, an array of strings, a
/// token array, or an array of token arrays. `None` for any other shape.
fn count_texts(value: &Value, m: Meter) -> Option<u64> {
    match value {
        Value::String(s) => Some(m.text(s)),
        Value::Array(items) => {
            let mut n: u64 = 0;
            for item in items {
                let cost = match item {
                    Value::String(s) => m.text(s),
                    // One element of a token array is one token.
                    Value::Number(_) => 1,
                    Value::Array(tokens) => tokens.len() as u64,
                    _ => return None,
                };
                n = n.saturating_add(cost);
            }
            Some(n)
        }
        _ => None,
    }
}

/// Prompt tokens of a request body, by which field it has: `messages` (chat completions, see
/// [`count_chat_prompt`]), `prompt` (completions) or `input` (embeddings; a Responses-API
/// `input` array of message items is counted as chat messages, plus `instructions`). `None` when
/// the body has none of them or the field has an unexpected shape.
pub fn count_prompt(body: &Value, default: Encoding) -> Option<u64> {
    measure_prompt(body, exact_meter(body, default))
}

/// The prompt of `body` measured with `m`: [`count_prompt`]'s accounting, every text measured by
/// the meter. With [`Meter::Bytes`] this is [`prompt_bound`].
pub fn measure_prompt(body: &Value, m: Meter) -> Option<u64> {
    if let Some(messages) = body.get("messages") {
        return Some(count_messages(messages.as_array()?, m).saturating_add(count_tools(body, m)));
    }
    if let Some(prompt) = body.get("prompt") {
        return count_texts(prompt, m);
    }
    let input = body.get("input")?;
    match input {
        Value::Array(items) if items.iter().any(Value::is_object) => {
            let instructions = body.get("instructions").map_or(0, |i| count_json(i, m));
            Some(count_messages(items, m).saturating_add(instructions).saturating_add(count_tools(body, m)))
        }
        Value::String(_) if body.get("instructions").is_some() => {
            // A Responses-API request: the input is one user message.
            let instructions = body.get("instructions").map_or(0, |i| count_json(i, m));
            let message = serde_json::json!({"role": "user", "content": input});
            Some(count_messages(std::slice::from_ref(&message), m).saturating_add(instructions))
        }
        other => count_texts(other, m),
    }
}

/// An upper bound of the prompt tokens of `body` in every encoding: the same accounting with
/// each text measured by its UTF-8 length. The accounting only adds up text measures and fixed
/// costs, and no text has more tokens than bytes in a byte-level BPE, so no encoding counts more
/// (`tests/tokens.rs` checks it over adversarial text for all four encodings). It costs a walk
/// of the parsed body and no BPE work, so a budget with room for it needs no exact count.
pub fn prompt_bound(body: &Value) -> Option<u64> {
    measure_prompt(body, Meter::Bytes)
}

/// The completion tokens a request asks for: `max_completion_tokens`, else `max_tokens`, else
/// (Responses API) `max_output_tokens`. Per choice: see [`choices`].
pub fn requested_completion(body: &Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|field| body.get(*field).and_then(Value::as_u64))
}

/// How many completions the request generates: the larger of `n` and (completions API)
/// `best_of`, at least 1. Every one of them is billed.
pub fn choices(body: &Value) -> u64 {
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let best_of = body.get("best_of").and_then(Value::as_u64).unwrap_or(1);
    n.max(best_of).max(1)
}

/// What a token budget is charged before a request is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    /// Counted prompt tokens.
    pub prompt: u64,
    /// Completion tokens reserved: requested (or estimated) per choice × [`choices`].
    pub completion: u64,
}

impl Reservation {
    /// Prompt plus completion.
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// The reservation for `body`: its prompt tokens plus the completion tokens it requests
/// ([`requested_completion`]; when it names none, the limit's declared `estimate`, else 0),
/// multiplied by the number of choices. `None` when the body has no prompt ([`count_prompt`]).
///
/// For an embeddings request pass `estimate: None`: it generates no completion.
pub fn reservation(body: &Value, default_enc: Encoding, estimate: Option<u64>) -> Option<Reservation> {
    reservation_measured(body, exact_meter(body, default_enc), estimate)
}

/// [`reservation`] with the prompt measured by `m` (with [`Meter::Bytes`], a bound of it).
pub fn reservation_measured(body: &Value, m: Meter, estimate: Option<u64>) -> Option<Reservation> {
    let prompt = measure_prompt(body, m)?;
    Some(Reservation { prompt, completion: completion_reserved(body, estimate) })
}

/// The completion tokens reserved for `body`: requested (else `estimate`, else 0) per choice,
/// times [`choices`].
pub fn completion_reserved(body: &Value, estimate: Option<u64>) -> u64 {
    let per_choice = requested_completion(body).or(estimate).unwrap_or(0);
    per_choice.saturating_mul(choices(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_counts() {
        assert_eq!(count_text("hello world", Encoding::Cl100kBase), 2);
        assert_eq!(count_text("hello world", Encoding::O200kBase), 2);
        assert_eq!(count_text("", Encoding::O200kBase), 0);
        // Special-token text is ordinary text.
        assert!(count_text("<|endoftext|>", Encoding::Cl100kBase) > 1);
    }

    #[test]
    fn model_families() {
        let d = Encoding::Cl100kBase;
        for m in ["gpt-4o", "gpt-4o-mini", "o1-mini", "o3", "o4-mini", "gpt-4.1-nano", "gpt-5", "chatgpt-4o-latest"] {
            assert_eq!(encoding_for_model(m, d), Encoding::O200kBase, "{m}");
        }
        for m in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-ada-002"] {
            assert_eq!(encoding_for_model(m, Encoding::O200kBase), Encoding::Cl100kBase, "{m}");
        }
        assert_eq!(encoding_for_model("llama-3-70b", Encoding::O200kBase), Encoding::O200kBase);
        assert_eq!(encoding_for_model("ft:gpt-4o-mini:org::abc", d), Encoding::O200kBase);
        assert_eq!(encoding_for_model("openai/GPT-4o", d), Encoding::O200kBase);
    }

    #[test]
    fn chat_overhead() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]});
        // 3 (message) + 1 ("user") + 2 ("hello world") + 3 (priming)
        assert_eq!(count_chat_prompt(&body, Encoding::Cl100kBase), Some(9));
        assert_eq!(count_prompt(&json!({"model": "x"}), Encoding::Cl100kBase), None);
    }
}
