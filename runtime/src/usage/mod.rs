//! Reading the token usage an upstream reports out of its response as it streams to the client,
//! for reconciling token budgets. Nothing is buffered before forwarding: every frame passes on
//! as it arrives, and the tap reads a side copy.
//!
//! - `application/json` (and `+json`): a side copy of the body, bounded by
//!   [`TapOptions::max_json_bytes`] (beyond that the tap gives up and reports no usage), parsed
//!   at the end for `usage.prompt_tokens` / `usage.completion_tokens` (or the Responses API's
//!   `input_tokens` / `output_tokens`). When it has no usage, the completion is counted from
//!   `choices[].message` (or `choices[].text`) into `streamed_completion_estimate`.
//! - `text/event-stream`: events parsed incrementally (an event may be split across chunks or
//!   several may share one; `\n`, `\r\n` and `\r` line ends; `data:` lines joined; comments and
//!   other fields ignored). `usage` is taken from the event that carries it (OpenAI's final
//!   `"choices": []` chunk when `stream_options.include_usage` is set), and every streamed delta
//!   (`choices[].delta.content`, `refusal`, `reasoning_content`, tool-call names and arguments;
//!   `choices[].text`; Responses-API `*.delta` events) is counted with the model's encoding into
//!   `streamed_completion_estimate`, the fallback when no usage arrives or the stream is cut
//!   short. An event whose data exceeds [`TapOptions::max_event_bytes`] is passed on unread.
//! - Anything else (or a compressed body, see [`Format::of_response`]): passed through, counted
//!   in frames and bytes only.
//!
//! With [`TapOptions::strip_usage_chunk`] (gw added `include_usage` itself, see
//! [`add_include_usage`]) the usage-only event is removed from what the client receives: every
//! other byte passes unchanged, and only an incomplete trailing event is held back until its
//! end arrives (at most `max_event_bytes`; a larger event is forwarded as it comes and never
//! stripped). The body's length changes, so the caller must drop any `content-length` header.
//!
//! When the body ends — cleanly, with an error, or dropped because the client left — the
//! callback runs exactly once with a [`UsageReport`].

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use gw_engine::tokens::Meter;
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde_json::Value;

use crate::body::{Body, BoxError};

mod numbers;
mod sse;
use sse::{Sse, SseCtx};

/// Default bound of the side copy of a JSON response.
pub const DEFAULT_MAX_JSON_BYTES: usize = 8 << 20;
/// Default bound of one server-sent event (its data, and what strip mode may hold back).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// How a response body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON document.
    Json,
    /// Server-sent events.
    Sse,
    /// Not read: frames and bytes are counted only.
    Other,
}

impl Format {
    /// The format of a `Content-Type` value: `application/json` or any `+json` type is JSON,
    /// `text/event-stream` is SSE (parameters and case ignored).
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        let Some(ct) = content_type else { return Format::Other };
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media == "text/event-stream" {
            Format::Sse
        } else if media == "application/json" || (media.starts_with("application/") && media.ends_with("+json")) {
            Format::Json
        } else {
            Format::Other
        }
    }

    /// The format of a response with these headers: by `Content-Type`, but [`Format::Other`]
    /// when a `Content-Encoding` other than `identity` makes the bytes unreadable here.
    pub fn of_response(headers: &http::HeaderMap) -> Format {
        let encoded = headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .any(|v| v.to_str().map_or(true, |s| !s.trim().eq_ignore_ascii_case("identity")));
        if encoded {
            return Format::Other;
        }
        Format::from_content_type(headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
    }
}

/// What the tap reads and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOptions {
    pub format: Format,
    /// How streamed deltas are counted: the model's encoding (the byte bound for a model of no
    /// known family).
    pub meter: Meter,
    /// Remove the usage-only SSE event from what the client receives.
    pub strip_usage_chunk: bool,
    /// Bound of the JSON side copy; a larger body is passed on unread.
    pub max_json_bytes: usize,
    /// Bound of one SSE event; a larger one is passed on unread (and never stripped).
    pub max_event_bytes: usize,
}

impl TapOptions {
    pub fn new(format: Format, meter: impl Into<Meter>) -> TapOptions {
        TapOptions {
            format,
            meter: meter.into(),
            strip_usage_chunk: false,
            max_json_bytes: DEFAULT_MAX_JSON_BYTES,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }

    pub fn strip_usage_chunk(mut self, strip: bool) -> TapOptions {
        self.strip_usage_chunk = strip;
        self
    }
}

/// What the upstream used, read when the body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageReport {
    /// `usage.prompt_tokens` (or `input_tokens`), if the response reported it.
    pub prompt: Option<u64>,
    /// `usage.completion_tokens` (or `output_tokens`), if the response reported it.
    pub completion: Option<u64>,
    /// Completion tokens counted from the content the response carried (streamed deltas; for a
    /// JSON body without usage, its messages): the fallback when `completion` is `None`, and
    /// counted only then (0 otherwise). Counted in the model's encoding once its table is
    /// loaded, by the byte bound before (see `Meter::ready`).
    pub streamed_completion_estimate: u64,
    /// False when the body ended with an error or was dropped before its end.
    pub complete: bool,
    /// Data frames passed on to the client.
    pub chunks: u64,
    /// Bytes passed on to the client.
    pub bytes: u64,
}

impl UsageReport {
    /// The completion tokens to charge: the reported ones, else the counted estimate.
    pub fn completion_or_estimate(&self) -> u64 {
        self.completion.unwrap_or(self.streamed_completion_estimate)
    }
}

/// The body to send instead of `raw` so that a streamed answer reports its usage, or `None`
/// when `body` (the value read from `raw`) is not a stream or already asks for it. When the
/// body has no `stream_options` at all, the field is inserted after the object's opening
/// brace and every byte the client sent goes on as sent (numbers beyond f64, key order,
/// spacing); otherwise the value is rewritten ([`add_include_usage`]) and serialized.
pub fn ask_for_usage(body: &Value, raw: &[u8]) -> Option<Vec<u8>> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let obj = body.as_object()?;
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let open = raw.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if !obj.contains_key("stream_options") && open.is_some_and(|i| raw[i] == b'{') {
        // The object holds "stream", so the inserted field is followed by another.
        let at = open.unwrap_or(0) + 1;
        let mut out = Vec::with_capacity(raw.len() + FIELD.len());
        out.extend_from_slice(&raw[..at]);
        out.extend_from_slice(FIELD);
        out.extend_from_slice(&raw[at..]);
        return Some(out);
    }
    let mut rewritten = body.clone();
    if !add_include_usage(&mut rewritten) {
        return None;
    }
    serde_json::to_vec(&rewritten).ok()
}

/// For a request with `"stream": true` that does not already ask for
/// `stream_options.include_usage: true`, ask for it and return true: the caller then strips the
/// usage chunk from the response ([`TapOptions::strip_usage_chunk`]) so the client sees what it
/// asked for. Any other body is left alone (false).
pub fn add_include_usage(body: &mut Value) -> bool {
    let Some(obj) = body.as_object_mut() else { return false };
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return false;
    }
    let options = obj.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
    if !options.is_object() {
        *options = Value::Object(Default::default());
    }
    let Some(options) = options.as_object_mut() else { return false };
    if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    options.insert("include_usage".to_string(), Value::Bool(true));
    true
}

/// Completion text held uncounted at most (per answer): beyond it the texts are counted.
const PENDING_MAX_BYTES: usize = 64 << 10;

/// Usage read so far. Completion texts are held, not counted: they are counted only when the
/// answer ends without reporting its completion (the BPE work, and the encoding's table, are
/// then needed at all), each text on its own as it came.
///
/// SSE events that cannot carry usage (their data has no `"usage"`) are not even parsed as
/// they pass: their data is held and read only when the answer ends without usage.
#[derive(Debug, Default)]
struct Accounting {
    prompt: Option<u64>,
    completion: Option<u64>,
    estimate: u64,
    pending: Vec<String>,
    pending_bytes: usize,
    deferred: Vec<Vec<u8>>,
    deferred_bytes: usize,
}

impl Accounting {
    /// Take `usage` (or a Responses-API `response.usage`) from a parsed event or body.
    fn read_usage(&mut self, v: &Value) {
        let usage = v
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| v.get("response").and_then(|r| r.get("usage")).filter(|u| u.is_object()));
        let Some(u) = usage else { return };
        let field = |a: &str, b: &str| u.get(a).and_then(Value::as_u64).or_else(|| u.get(b).and_then(Value::as_u64));
        if let Some(p) = field("prompt_tokens", "input_tokens") {
            self.prompt = Some(p);
        }
        if let Some(c) = field("completion_tokens", "output_tokens") {
            self.completion = Some(c);
        }
    }

    fn add(&mut self, text: Option<&Value>, enc: Meter) {
        let Some(s) = text.and_then(Value::as_str).filter(|s| !s.is_empty()) else { return };
        self.pending_bytes += s.len();
        self.pending.push(s.to_string());
        if self.pending_bytes > PENDING_MAX_BYTES {
            self.count_pending(enc);
        }
    }

    fn count_pending(&mut self, enc: Meter) {
        let enc = enc.ready();
        for s in self.pending.drain(..) {
            self.estimate = self.estimate.saturating_add(enc.text(&s));
        }
        self.pending_bytes = 0;
    }

    /// Hold an SSE event's data without usage, to be read only if no usage comes.
    fn defer(&mut self, data: &[u8], enc: Meter) {
        self.deferred_bytes += data.len();
        self.deferred.push(data.to_vec());
        if self.deferred_bytes > PENDING_MAX_BYTES {
            self.read_deferred(enc);
        }
    }

    fn read_deferred(&mut self, enc: Meter) {
        for data in std::mem::take(&mut self.deferred) {
            if let Ok(v) = serde_json::from_slice::<Value>(&data) {
                self.read_usage(&v);
                self.add_deltas(&v, enc);
            }
        }
        self.deferred_bytes = 0;
    }

    /// The completion counted from the texts, when the answer reported none (else 0: the texts
    /// are never counted).
    fn estimate(&mut self, enc: Meter) -> u64 {
        if self.completion.is_none() {
            self.read_deferred(enc);
        }
        if self.completion.is_some() {
            return 0;
        }
        self.count_pending(enc);
        self.estimate
    }

    /// Count the text of a message or delta: content, refusal, reasoning, tool calls.
    fn add_message(&mut self, m: &Value, enc: Meter) {
        for field in ["content", "refusal", "reasoning_content"] {
            self.add(m.get(field), enc);
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                if let Some(f) = call.get("function") {
                    self.add(f.get("name"), enc);
                    self.add(f.get("arguments"), enc);
                }
            }
        }
        if let Some(f) = m.get("function_call") {
            self.add(f.get("name"), enc);
            self.add(f.get("arguments"), enc);
        }
    }

    /// Count the completion text of one parsed SSE event.
    fn add_deltas(&mut self, v: &Value, enc: Meter) {
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for choice in choices {
                if let Some(delta) = choice.get("delta") {
                    self.add_message(delta, enc);
                }
                self.add(choice.get("text"), enc);
            }
        } else if v.get("type").and_then(Value::as_str).is_some_and(|t| t.ends_with(".delta")) {
            self.add(v.get("delta"), enc);
        }
    }

    /// Count the completion text of a whole JSON response (used when it has no usage).
    fn add_response(&mut self, v: &Value, enc: Meter) {
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for choice in choices {
                if let Some(message) = choice.get("message") {
                    self.add_message(message, enc);
                }
                self.add(choice.get("text"), enc);
            }
        }
    }
}

enum Reader {
    Json { copy: Vec<u8>, over: bool },
    Sse(Box<Sse>),
    Other,
}

type OnEnd = Box<dyn FnOnce(UsageReport) + Send + Sync>;

/// Everything but the inner body (unpinned).
struct Tap {
    reader: Reader,
    acc: Accounting,
    opts: TapOptions,
    chunks: u64,
    bytes: u64,
    /// A trailers frame waiting behind the data flushed at the end.
    stashed: Option<Frame<Bytes>>,
    /// Nothing more to read from the inner body.
    ended: bool,
    on_end: Option<OnEnd>,
}

impl Tap {
    fn ctx(&self) -> SseCtx {
        SseCtx { enc: self.opts.meter, strip: self.opts.strip_usage_chunk, max: self.opts.max_event_bytes }
    }

    fn feed(&mut self, data: Bytes) -> Bytes {
        let ctx = self.ctx();
        match &mut self.reader {
            Reader::Json { copy, over } => {
                if !*over {
                    if copy.len() + data.len() > self.opts.max_json_bytes {
                        *over = true;
                        *copy = Vec::new();
                    } else {
                        copy.extend_from_slice(&data);
                    }
                }
                data
            }
            Reader::Sse(sse) => sse.feed(data, &mut self.acc, ctx),
            Reader::Other => data,
        }
    }

    /// The body ended cleanly: finish reading; returns bytes still to forward.
    fn eof(&mut self) -> Bytes {
        let ctx = self.ctx();
        match &mut self.reader {
            Reader::Json { copy, over } => {
                if !*over {
                    // Most answers report their usage: read just that, without building the document.
                    if let Some((prompt, completion)) = numbers::usage_of(copy) {
                        self.acc.prompt = prompt.or(self.acc.prompt);
                        self.acc.completion = Some(completion);
                    } else if let Ok(v) = serde_json::from_slice::<Value>(copy) {
                        self.acc.read_usage(&v);
                        if self.acc.completion.is_none() {
                            self.acc.add_response(&v, ctx.enc);
                        }
                    }
                }
                *copy = Vec::new();
                Bytes::new()
            }
            Reader::Sse(sse) => sse.eof(&mut self.acc, ctx),
            Reader::Other => Bytes::new(),
        }
    }

    fn sent(&mut self, data: &Bytes) {
        self.chunks += 1;
        self.bytes += data.len() as u64;
    }

    fn finish(&mut self, complete: bool) {
        self.ended = true;
        if let Some(f) = self.on_end.take() {
            // First: reading the held events may still find a usage.
            let estimate = self.acc.estimate(self.opts.meter);
            f(UsageReport {
                prompt: self.acc.prompt,
                completion: self.acc.completion,
                streamed_completion_estimate: estimate,
                complete,
                chunks: self.chunks,
                bytes: self.bytes,
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body passed through while its token usage is read (see the module doc).
    pub struct UsageTap {
        #[pin]
        inner: Body,
        tap: Tap,
    }

    impl PinnedDrop for UsageTap {
        fn drop(this: Pin<&mut Self>) {
            this.project().tap.finish(false);
        }
    }
}

impl UsageTap {
    /// Wrap `inner`; `on_end` runs exactly once when the body ends, fails or is dropped.
    pub fn new(inner: Body, opts: TapOptions, on_end: impl FnOnce(UsageReport) + Send + Sync + 'static) -> UsageTap {
        let reader = match opts.format {
            Format::Json => {
                let over = inner.size_hint().lower() > opts.max_json_bytes as u64;
                Reader::Json { copy: Vec::new(), over }
            }
            Format::Sse => Reader::Sse(Box::new(Sse::new())),
            Format::Other => Reader::Other,
        };
        let tap = Tap {
            reader,
            acc: Accounting::default(),
            opts,
            chunks: 0,
            bytes: 0,
            stashed: None,
            ended: false,
            on_end: Some(Box::new(on_end)),
        };
        let mut t = UsageTap { inner, tap };
        // An empty body may never be polled: finish it now.
        if t.inner.is_end_stream() {
            t.tap.finish(true);
        }
        t
    }
}

impl HttpBody for UsageTap {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let tap = this.tap;
        loop {
            if let Some(frame) = tap.stashed.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if tap.ended {
                return Poll::Ready(None);
            }
            match ready!(inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let was_empty = data.is_empty();
                        let mut out = tap.feed(data);
                        // hyper stops polling a body that says it has ended: finish now.
                        let end = inner.is_end_stream();
                        if end {
                            let rest = tap.eof();
                            if !rest.is_empty() {
                                out = concat(out, rest);
                            }
                        }
                        if out.is_empty() && !was_empty {
                            // Everything was held back or stripped.
                            if end {
                                tap.finish(true);
                            }
                            continue;
                        }
                        tap.sent(&out);
                        if end {
                            tap.finish(true);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(frame) => {
                        // Trailers end the data.
                        let rest = tap.eof();
                        if rest.is_empty() {
                            tap.finish(true);
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        tap.sent(&rest);
                        tap.finish(true);
                        tap.stashed = Some(frame);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                },
                Some(Err(e)) => {
                    tap.finish(false);
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let rest = tap.eof();
                    if rest.is_empty() {
                        tap.finish(true);
                        return Poll::Ready(None);
                    }
                    tap.sent(&rest);
                    tap.finish(true);
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.tap.ended && self.tap.stashed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.tap.opts.strip_usage_chunk && matches!(self.tap.reader, Reader::Sse(_)) {
            // Bytes may be removed: only the upper bound still holds.
            let mut hint = SizeHint::new();
            if let Some(upper) = self.inner.size_hint().upper() {
                hint.set_upper(upper);
            }
            hint
        } else {
            self.inner.size_hint()
        }
    }
}

fn concat(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    let mut buf = BytesMut::with_capacity(a.len() + b.len());
    buf.extend_from_slice(&a);
    buf.extend_from_slice(&b);
    buf.freeze()
}
