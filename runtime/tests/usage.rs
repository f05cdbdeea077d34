//! The usage tap driven with hand-made response bodies: SSE split at every awkward place, with
//! and without stripping the usage chunk, JSON bodies, errors mid-stream and early drops.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gw_engine::tokens::{count_text, Encoding};
use gw_runtime::body::{Body, BoxError};
use gw_runtime::usage::{add_include_usage, ask_for_usage, Format, TapOptions, UsageReport, UsageTap};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody};
use serde_json::{json, Value};

const ENC: Encoding = Encoding::O200kBase;

/// A piece of a hand-made body: data, trailers, or an error.
enum Part {
    Data(Vec<u8>),
    Trailers,
    Error,
}

fn body(parts: Vec<Part>) -> Body {
    let frames = parts.into_iter().map(|p| match p {
        Part::Data(d) => Ok(Frame::data(Bytes::from(d))),
        Part::Trailers => {
            let mut t = http::HeaderMap::new();
            t.insert("x-trailer", http::HeaderValue::from_static("yes"));
            Ok(Frame::trailers(t))
        }
        Part::Error => Err::<Frame<Bytes>, BoxError>("upstream reset".into()),
    });
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut start = 0;
    for &c in cuts {
        parts.push(Part::Data(bytes[start..c].to_vec()));
        start = c;
    }
    parts.push(Part::Data(bytes[start..].to_vec()));
    parts
}

type Reports = Arc<Mutex<Vec<UsageReport>>>;

fn tap(parts: Vec<Part>, opts: TapOptions) -> (UsageTap, Reports) {
    // Loaded first: before its table is loaded, the tap counts by the byte bound.
    gw_engine::tokens::load(ENC);
    let reports: Reports = Arc::default();
    let r = reports.clone();
    let tap = UsageTap::new(body(parts), opts, move |report| r.lock().unwrap().push(report));
    (tap, reports)
}

/// What the client receives: the data frames, whether trailers came, and the error if any.
struct Received {
    frames: Vec<Bytes>,
    trailers: bool,
    error: Option<String>,
}

impl Received {
    fn bytes(&self) -> Vec<u8> {
        self.frames.concat()
    }
}

async fn drive(mut tap: UsageTap) -> Received {
    let mut got = Received { frames: Vec::new(), trailers: false, error: None };
    while let Some(frame) = tap.frame().await {
        match frame {
            Ok(f) if f.is_trailers() => got.trailers = true,
            Ok(f) => got.frames.push(f.into_data().unwrap()),
            Err(e) => {
                got.error = Some(e.to_string());
                break;
            }
        }
    }
    got
}

fn one(reports: &Reports) -> UsageReport {
    let r = reports.lock().unwrap();
    assert_eq!(r.len(), 1, "the callback runs exactly once: {r:?}");
    r[0]
}

fn chunk(delta: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
    format!(
        r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"usage":null}}"#
    )
}

const USAGE_EVENT: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#;

const WORDS: [&str; 4] = ["Hello", " world", ", tiktoken", " is great!"];

/// An OpenAI stream with `include_usage`, lines ended by `eol`; returns it and the same stream
/// without the usage event.
fn openai_stream(eol: &str) -> (Vec<u8>, Vec<u8>) {
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, None)];
    for w in WORDS {
        events.push(chunk(&json!({ "content": w }).to_string(), None));
    }
    events.push(": keep-alive".to_string());
    events.push(chunk("{}", Some("stop")));
    let mut full = String::new();
    let mut stripped = String::new();
    for e in &events {
        full.push_str(&format!("{e}{eol}{eol}"));
        stripped.push_str(&format!("{e}{eol}{eol}"));
    }
    full.push_str(&format!("{USAGE_EVENT}{eol}{eol}"));
    full.push_str(&format!("data: [DONE]{eol}{eol}"));
    stripped.push_str(&format!("data: [DONE]{eol}{eol}"));
    (full.into_bytes(), stripped.into_bytes())
}

fn words_estimate() -> u64 {
    WORDS.iter().map(|w| count_text(w, ENC)).sum()
}

fn sse() -> TapOptions {
    TapOptions::new(Format::Sse, ENC)
}

#[tokio::test]
async fn sse_passes_bytes_through_and_reads_usage() {
    let (full, _) = openai_stream("\n");
    // An event split mid-`data:` line, two events in one chunk, the usage event split.
    let split_data = full.windows(5).position(|w| w == b"data:").unwrap() + 3;
    let cuts = [split_data, 400, 401, full.len() - 60];
    let (t, reports) = tap(chunks(&full, &cuts), sse());
    let got = drive(t).await;
    assert_eq!(got.bytes(), full);
    assert_eq!(got.frames.len(), cuts.len() + 1, "frames are forwarded as they come");
    let r = one(&reports);
    assert_eq!(r.prompt, Some(9));
    assert_eq!(r.completion, Some(4));
    assert_eq!(r.streamed_completion_estimate, 0, "the deltas are not counted when usage reports the completion");
    assert!(r.complete);
    assert_eq!(r.chunks, cuts.len() as u64 + 1);
    assert_eq!(r.bytes, full.len() as u64);
    assert_eq!(r.completion_or_estimate(), 4);
}

#[tokio::test]
async fn sse_strip_removes_exactly_the_usage_event() {
    for eol in ["\n", "\r\n", "\r"] {
        let (full, stripped) = openai_stream(eol);
        let (t, reports) = tap(chunks(&full, &[]), sse().strip_usage_chunk(true));
        let got = drive(t).await;
        assert_eq!(String::from_utf8(got.bytes()).unwrap(), String::from_utf8(stripped.clone()).unwrap(), "{eol:?}");
        let r = one(&reports);
        assert_eq!(r.prompt, Some(9));
        assert_eq!(r.completion, Some(4));
        assert!(r.complete);
        assert_eq!(r.bytes, stripped.len() as u64);
        assert_eq!(r.streamed_completion_estimate, 0);
    }
}

/// Every single split point, for both modes and every line ending, plus byte-by-byte.
#[tokio::test]
async fn sse_every_split_point() {
    for eol in ["\n", "\r\n", "\r"] {
        let (full, stripped) = openai_stream(eol);
        let mut splits: Vec<Vec<usize>> = (1..full.len()).map(|k| vec![k]).collect();
        splits.push((1..full.len()).collect());
        // A few pseudo-random multi-way splits.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200 {
            let mut cuts: Vec<usize> = (0..5)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    1 + (x as usize % (full.len() - 1))
                })
                .collect();
            cuts.sort();
            cuts.dedup();
            splits.push(cuts);
        }
        for cuts in &splits {
            for strip in [false, true] {
                let (t, reports) = tap(chunks(&full, cuts), sse().strip_usage_chunk(strip));
                let got = drive(t).await;
                let expected = if strip { &stripped } else { &full };
                assert!(got.bytes() == *expected, "eol {eol:?} strip {strip} cuts {cuts:?}");
                let r = one(&reports);
                assert_eq!(
                    (r.prompt, r.completion, r.streamed_completion_estimate, r.complete),
                    (Some(9), Some(4), 0, true),
                    "eol {eol:?} strip {strip} cuts {cuts:?}"
                );
                assert_eq!(r.bytes, expected.len() as u64);
            }
        }
    }
}

#[tokio::test]
async fn strip_holds_back_only_the_incomplete_trailing_event() {
    let first = format!("{}\n\n", chunk(r#"{"content":"Hello"}"#, None));
    let second = chunk(r#"{"content":" world"}"#, None);
    let (a, b) = second.split_at(20);
    let parts = vec![
        Part::Data(format!("{first}{a}").into_bytes()),
        Part::Data(format!("{b}\n\n{USAGE_EVENT}\n").into_bytes()),
        Part::Data(b"\ndata: [DONE]\n\n".to_vec()),
    ];
    let (mut t, reports) = tap(parts, sse().strip_usage_chunk(true));
    // First frame: the complete first event, nothing of the incomplete second one.
    let f1 = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(f1, first.as_bytes());
    // Second: the second event completed; the usage event is held (its blank line is not in yet).
    let f2 = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(f2, format!("{second}\n\n").as_bytes());
    // Third: the usage event ends and is dropped; [DONE] passes.
    let f3 = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(f3, &b"data: [DONE]\n\n"[..]);
    assert!(t.frame().await.is_none());
    assert!(t.is_end_stream());
    let r = one(&reports);
    assert_eq!(r.chunks, 3);
    assert_eq!(r.completion, Some(4));
}

#[tokio::test]
async fn strip_never_holds_more_than_the_event_bound() {
    // A 300-byte event with a 64-byte bound: forwarded as it comes, never stripped, not read.
    let big = format!("data: {{\"usage\":{{\"prompt_tokens\":1}},\"choices\":[],\"pad\":\"{}\"}}\n\n", "x".repeat(250));
    let mut opts = sse().strip_usage_chunk(true);
    opts.max_event_bytes = 64;
    let bytes = big.as_bytes();
    let (mut t, reports) = tap(chunks(bytes, &[100, 200]), opts);
    let f1 = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(f1, &bytes[..100]);
    let got = drive(t).await;
    assert_eq!([f1.to_vec(), got.bytes()].concat(), bytes);
    let r = one(&reports);
    assert_eq!(r.prompt, None, "an event over the bound is not read");
}

#[tokio::test]
async fn sse_without_usage_counts_deltas() {
    let (full, stripped) = openai_stream("\n");
    // `stripped` is the stream as a client that did not ask for usage receives it.
    let (t, reports) = tap(chunks(&stripped, &[17, 230]), sse());
    let got = drive(t).await;
    assert_eq!(got.bytes(), stripped);
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion), (None, None));
    assert_eq!(r.streamed_completion_estimate, words_estimate());
    assert_eq!(r.completion_or_estimate(), words_estimate());
    assert!(r.complete);
    assert!(full.len() > stripped.len());
}

#[tokio::test]
async fn sse_error_mid_stream_reports_what_was_sent() {
    let (full, _) = openai_stream("\n");
    // Cut after the third event (role chunk, "Hello", " world").
    let mut end = 0;
    for _ in 0..3 {
        end += full[end..].windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    }
    for strip in [false, true] {
        let mut parts = chunks(&full[..end + 30], &[end - 5]);
        parts.push(Part::Error);
        parts.push(Part::Data(b"never seen".to_vec()));
        let (t, reports) = tap(parts, sse().strip_usage_chunk(strip));
        let got = drive(t).await;
        assert_eq!(got.error.as_deref(), Some("upstream reset"));
        // Not stripping, every byte went on; stripping, the incomplete fourth event was held.
        let sent = if strip { &full[..end] } else { &full[..end + 30] };
        assert_eq!(got.bytes(), sent, "strip {strip}");
        let r = one(&reports);
        assert!(!r.complete);
        assert_eq!((r.prompt, r.completion), (None, None));
        assert_eq!(r.streamed_completion_estimate, count_text("Hello", ENC) + count_text(" world", ENC));
        assert_eq!(r.bytes, sent.len() as u64);
    }
}

#[tokio::test]
async fn dropped_by_the_client_reports_once() {
    let (full, _) = openai_stream("\n");
    // The first frame holds the role chunk, "Hello" and the start of " world".
    let pat = b"\"Hello\"}";
    let hello_end = full.windows(pat.len()).position(|w| w == pat).unwrap();
    let cut = hello_end + full[hello_end..].windows(2).position(|w| w == b"\n\n").unwrap() + 20;
    let (mut t, reports) = tap(chunks(&full, &[cut, cut + 300]), sse());
    let first = t.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first.len(), cut);
    assert!(reports.lock().unwrap().is_empty());
    drop(t);
    let r = one(&reports);
    assert!(!r.complete);
    assert_eq!((r.chunks, r.bytes), (1, cut as u64));
    assert_eq!(r.streamed_completion_estimate, count_text("Hello", ENC));

    // Dropped before it was ever polled.
    let (t, reports) = tap(chunks(&full, &[]), sse());
    drop(t);
    let r = one(&reports);
    assert_eq!((r.complete, r.chunks, r.bytes, r.prompt), (false, 0, 0, None));
}

#[tokio::test]
async fn report_runs_once_after_a_clean_end_and_drop() {
    let (full, _) = openai_stream("\n");
    let (mut t, reports) = tap(chunks(&full, &[]), sse());
    while t.frame().await.is_some() {}
    assert!(t.frame().await.is_none());
    drop(t);
    assert!(one(&reports).complete);
}

#[tokio::test]
async fn sse_event_without_final_blank_line_is_still_read() {
    let text = format!("{}\n\n{USAGE_EVENT}", chunk(r#"{"content":"Hello"}"#, None));
    for strip in [false, true] {
        let (t, reports) = tap(chunks(text.as_bytes(), &[10]), sse().strip_usage_chunk(strip));
        let got = drive(t).await;
        let expected = if strip { format!("{}\n\n", chunk(r#"{"content":"Hello"}"#, None)) } else { text.clone() };
        assert_eq!(got.bytes(), expected.as_bytes());
        let r = one(&reports);
        assert_eq!((r.prompt, r.completion), (Some(9), Some(4)));
    }
}

#[tokio::test]
async fn sse_multi_line_data_and_other_fields() {
    let text = "id: 1\nevent: chunk\ndata: {\"choices\":[{\"delta\":\ndata: {\"content\":\"Hello\"}}],\ndata: \"usage\":null}\nretry: 10\n\n\
                \u{FEFF}: comment\n\ndata:{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    let (t, reports) = tap(chunks(text.as_bytes(), &[]), sse().strip_usage_chunk(true));
    let got = drive(t).await;
    let kept = &text[..text.find("data:{").unwrap()];
    assert_eq!(got.bytes(), kept.as_bytes());
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion), (Some(3), Some(1)));
    assert_eq!(r.streamed_completion_estimate, 0, "not counted: the usage reports the completion");
    // Without the usage event the deltas are what is charged.
    let (t, reports) = tap(chunks(kept.as_bytes(), &[]), sse());
    drive(t).await;
    assert_eq!(one(&reports).streamed_completion_estimate, count_text("Hello", ENC));
}

#[tokio::test]
async fn sse_tool_calls_legacy_text_and_responses_api() {
    let text = concat!(
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"text\":\" world\",\"index\":0}]}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":7}}}\n\n",
    );
    let (t, reports) = tap(chunks(text.as_bytes(), &[50]), sse().strip_usage_chunk(true));
    let got = drive(t).await;
    assert_eq!(got.bytes(), text.as_bytes(), "nothing here is a usage-only chat chunk");
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion), (Some(12), Some(7)));
    assert_eq!(r.streamed_completion_estimate, 0, "not counted: the usage reports the completion");
    // Without the usage event the deltas are what is charged.
    let without_usage = &text[..text.find("event: response.completed").unwrap()];
    let (t, reports) = tap(chunks(without_usage.as_bytes(), &[50]), sse());
    drive(t).await;
    let expected = count_text("get_weather", ENC)
        + count_text("{\"city\":", ENC)
        + count_text(" world", ENC)
        + count_text("Hello", ENC);
    assert_eq!(one(&reports).streamed_completion_estimate, expected);
}

#[tokio::test]
async fn sse_trailers_come_after_flushed_bytes() {
    let text = format!("{}\n\n{}", chunk(r#"{"content":"Hello"}"#, None), chunk(r#"{"content":" world"}"#, None));
    let mut parts = chunks(text.as_bytes(), &[]);
    parts.push(Part::Trailers);
    let (t, reports) = tap(parts, sse().strip_usage_chunk(true));
    let got = drive(t).await;
    assert_eq!(got.bytes(), text.as_bytes());
    assert!(got.trailers);
    let r = one(&reports);
    assert!(r.complete);
    assert_eq!(r.streamed_completion_estimate, count_text("Hello", ENC) + count_text(" world", ENC));
}

fn json_response(usage: bool) -> Vec<u8> {
    let mut v = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}],
    });
    if usage {
        v["usage"] = json!({"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23});
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

fn json_opts() -> TapOptions {
    TapOptions::new(Format::Json, ENC)
}

#[tokio::test]
async fn json_usage_read_at_the_end() {
    let bytes = json_response(true);
    let (t, reports) = tap(chunks(&bytes, &[1, 40, 41, 120]), json_opts());
    let got = drive(t).await;
    assert_eq!(got.bytes(), bytes);
    assert_eq!(got.frames.len(), 5);
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion, r.complete), (Some(21), Some(2), true));
    assert_eq!((r.chunks, r.bytes), (5, bytes.len() as u64));
}

#[tokio::test]
async fn json_without_usage_counts_the_message() {
    let bytes = json_response(false);
    let (t, reports) = tap(chunks(&bytes, &[64]), json_opts());
    drive(t).await;
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion), (None, None));
    assert_eq!(r.streamed_completion_estimate, count_text("Hello world", ENC));
}

#[tokio::test]
async fn json_over_the_bound_gives_up() {
    let bytes = json_response(true);
    let mut opts = json_opts();
    opts.max_json_bytes = 100;
    let (t, reports) = tap(chunks(&bytes, &[50]), opts);
    let got = drive(t).await;
    assert_eq!(got.bytes(), bytes, "still passed through whole");
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion, r.streamed_completion_estimate, r.complete), (None, None, 0, true));
}

#[tokio::test]
async fn json_cut_short_reads_nothing() {
    let bytes = json_response(true);
    let mut parts = chunks(&bytes[..100], &[50]);
    parts.push(Part::Error);
    let (t, reports) = tap(parts, json_opts());
    let got = drive(t).await;
    assert!(got.error.is_some());
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion, r.complete, r.bytes), (None, None, false, 100));
}

#[tokio::test]
async fn empty_and_unread_bodies() {
    let reports: Reports = Arc::default();
    let r2 = reports.clone();
    let t = UsageTap::new(gw_runtime::body::empty(), json_opts(), move |r| r2.lock().unwrap().push(r));
    // An empty body is finished at once: hyper may never poll it.
    assert!(t.is_end_stream());
    assert_eq!(one(&reports), UsageReport { complete: true, ..UsageReport::default() });
    drop(t);
    assert_eq!(reports.lock().unwrap().len(), 1);

    let bytes = json_response(true);
    let (t, reports) = tap(chunks(&bytes, &[7]), TapOptions::new(Format::Other, ENC));
    let got = drive(t).await;
    assert_eq!(got.bytes(), bytes);
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion, r.chunks, r.complete), (None, None, 2, true));
}

#[test]
fn formats_from_headers() {
    assert_eq!(Format::from_content_type(Some("application/json")), Format::Json);
    assert_eq!(Format::from_content_type(Some("Application/JSON; charset=utf-8")), Format::Json);
    assert_eq!(Format::from_content_type(Some("application/problem+json")), Format::Json);
    assert_eq!(Format::from_content_type(Some("text/event-stream; charset=utf-8")), Format::Sse);
    assert_eq!(Format::from_content_type(Some("text/plain")), Format::Other);
    assert_eq!(Format::from_content_type(None), Format::Other);
    let mut h = http::HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    assert_eq!(Format::of_response(&h), Format::Sse);
    h.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("identity"));
    assert_eq!(Format::of_response(&h), Format::Sse);
    h.insert(http::header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
    assert_eq!(Format::of_response(&h), Format::Other);
}

#[test]
fn include_usage_added_only_when_missing() {
    let mut b = json!({"model": "gpt-4o", "stream": true, "messages": []});
    assert!(add_include_usage(&mut b));
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
    // Already there: nothing to do, nothing to strip.
    assert!(!add_include_usage(&mut b));

    let mut b = json!({"stream": true, "stream_options": {"include_usage": false, "other": 1}});
    assert!(add_include_usage(&mut b));
    assert_eq!(b["stream_options"], json!({"include_usage": true, "other": 1}));

    let mut b = json!({"stream": true, "stream_options": null});
    assert!(add_include_usage(&mut b));
    assert_eq!(b["stream_options"], json!({"include_usage": true}));

    for mut b in [json!({"stream": false}), json!({"messages": []}), json!({"stream": "true"}), Value::Null, json!([])]
    {
        let before = b.clone();
        assert!(!add_include_usage(&mut b));
        assert_eq!(b, before);
    }
}

/// What `ask_for_usage` sends reads as the value `add_include_usage` makes, and, when the body
/// had no `stream_options`, is the client's bytes with the one field inserted: a number beyond
/// f64 and the client's spacing and key order reach the upstream as sent.
#[test]
fn usage_asked_for_by_splicing_the_clients_bytes() {
    let field = br#""stream_options":{"include_usage":true},"#;
    let spliced = [
        &br#"{"model":"gpt-4o","stream":true,"seed":123456789012345678901234567890}"#[..],
        b" \t\r\n{ \"stream\" : true }\n",
        br#"{"stream":false,"stream":true}"#,
    ];
    for raw in spliced {
        let body: Value = serde_json::from_slice(raw).unwrap();
        let sent = ask_for_usage(&body, raw).unwrap();
        let at = raw.iter().position(|&b| b == b'{').unwrap() + 1;
        assert_eq!(&sent[..at], &raw[..at]);
        assert_eq!(&sent[at..at + field.len()], &field[..]);
        assert_eq!(&sent[at + field.len()..], &raw[at..]);
        let mut want = body.clone();
        assert!(add_include_usage(&mut want));
        assert_eq!(serde_json::from_slice::<Value>(&sent).unwrap(), want, "{}", String::from_utf8_lossy(raw));
    }
    // A body that already has stream_options is rewritten as a value.
    for raw in [
        &br#"{"stream":true,"stream_options":{"include_usage":false,"other":1}}"#[..],
        br#"{"stream":true,"stream_options":null}"#,
        br#"{"stream":true,"stream_options":[1]}"#,
    ] {
        let body: Value = serde_json::from_slice(raw).unwrap();
        let mut want = body.clone();
        assert!(add_include_usage(&mut want));
        assert_eq!(serde_json::from_slice::<Value>(&ask_for_usage(&body, raw).unwrap()).unwrap(), want);
    }
    // Nothing to ask: not a stream, or already asked.
    for raw in [
        &br#"{"stream":true,"stream_options":{"include_usage":true}}"#[..],
        br#"{"stream":"true"}"#,
        br#"{"messages":[]}"#,
        br#"[{"stream":true}]"#,
    ] {
        let body: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(ask_for_usage(&body, raw), None, "{}", String::from_utf8_lossy(raw));
    }
}

proptest::proptest! {
    /// Over generated bodies, spacing and key orders, the bytes sent read as the rewritten value.
    #[test]
    fn usage_asked_for_reads_as_the_rewritten_value(
        fields in proptest::collection::vec(("[a-z_]{1,8}", leaf()), 0..6),
        options in proptest::option::of(leaf()),
        stream_at in 0usize..6,
        pretty in proptest::bool::ANY,
        lead in "[ \t\r\n]{0,3}",
    ) {
        let mut map = serde_json::Map::new();
        for (k, v) in fields {
            map.insert(k, v);
        }
        if let Some(o) = options {
            map.insert("stream_options".into(), o);
        }
        let mut entries: Vec<(String, Value)> = map.into_iter().collect();
        entries.retain(|(k, _)| k != "stream");
        entries.insert(stream_at.min(entries.len()), ("stream".into(), Value::Bool(true)));
        let body = Value::Object(entries.into_iter().collect());
        let text = if pretty { serde_json::to_vec_pretty(&body).unwrap() } else { serde_json::to_vec(&body).unwrap() };
        let raw = [lead.as_bytes(), &text].concat();
        let mut want = body.clone();
        let asks = add_include_usage(&mut want);
        let sent = ask_for_usage(&body, &raw);
        proptest::prop_assert_eq!(sent.is_some(), asks);
        if let Some(sent) = sent {
            proptest::prop_assert_eq!(serde_json::from_slice::<Value>(&sent).unwrap(), want);
        }
    }
}

fn leaf() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~é\n\"\\\\]{0,6}".prop_map(Value::String),
        Just(json!({"include_usage": true})),
        Just(json!({"include_usage": false, "x": [1, {"y": null}]})),
        Just(json!([])),
    ]
}

/// Events without usage are held unparsed and read only at the end: a usage the upstream
/// spelled with an escaped key (`"\u0075sage"`) is still found then, and the deltas of a stream
/// longer than what is held (64 KiB) are all counted.
#[tokio::test]
async fn sse_events_without_usage_are_read_at_the_end() {
    let escaped = "data: {\"choices\":[],\"\\u0075sage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n";
    let text = format!("{}\n\n{escaped}", chunk(r#"{"content":"Hello"}"#, None));
    let (t, reports) = tap(chunks(text.as_bytes(), &[]), sse());
    drive(t).await;
    let r = one(&reports);
    assert_eq!((r.prompt, r.completion, r.streamed_completion_estimate), (Some(5), Some(2), 0));

    let word = "lorem ipsum dolor sit amet ".repeat(40);
    let many: String =
        (0..120).map(|_| format!("{}\n\n", chunk(&format!(r#"{{"content":"{word}"}}"#), None))).collect();
    let (t, reports) = tap(chunks(many.as_bytes(), &[1000, 70_000]), sse());
    drive(t).await;
    assert_eq!(one(&reports).streamed_completion_estimate, 120 * count_text(&word, ENC));
}
