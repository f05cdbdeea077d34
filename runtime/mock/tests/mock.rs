//! The mock OpenAI-compatible upstream over real HTTP: completions (JSON and SSE), embeddings,
//! models, request recording, fault injection, WebSocket echo and h2c.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gw_mock::{serve, MockConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// A running mock; dropping it stops the server.
struct Mock {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    async fn start(cfg: MockConfig) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, cfg));
        Mock { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn requests(&self) -> Vec<Value> {
        let v: Value = reqwest::get(self.url("/mock/requests")).await.unwrap().json().await.unwrap();
        v.as_array().unwrap().clone()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there world"}]},
        ],
    })
}

/// The `data:` payloads of an SSE body.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_owned())
        .collect()
}

#[tokio::test]
async fn json_completion_with_usage() {
    let mock = Mock::start(MockConfig::default()).await;
    for path in ["/v1/chat/completions", "/miniai/v2/chat/completions/"] {
        let resp = client().post(mock.url(path)).json(&chat_body(false)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-4o-mini");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
        let choice = &v["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["finish_reason"], "stop");
        let content = choice["message"]["content"].as_str().unwrap();
        assert_eq!(content.split_whitespace().count(), 8);
        // 2 words + 3 words + 4 per message.
        assert_eq!(v["usage"]["prompt_tokens"], 13);
        assert_eq!(v["usage"]["completion_tokens"], 8);
        assert_eq!(v["usage"]["total_tokens"], 21);
    }
    // Deterministic.
    let a: Value = client()
        .post(mock.url("/v1/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = client()
        .post(mock.url("/v1/chat/completions"))
        .header("x-mock-chunks", "3")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(b["usage"]["completion_tokens"], 3);
    let full = a["choices"][0]["message"]["content"].as_str().unwrap();
    let short = b["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(full.starts_with(short));
}

#[tokio::test]
async fn invalid_json_is_400_openai_error() {
    let mock = Mock::start(MockConfig::default()).await;
    for body in ["{not json", "", "[1,2]", r#"{"stream":"yes"}"#] {
        let resp = client()
            .post(mock.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
        assert!(v["error"]["code"].is_null());
    }
}

#[tokio::test]
async fn sse_stream_arrives_in_chunks_over_time() {
    let mock = Mock::start(MockConfig { stream_chunks: 5, chunk_delay_ms: 60, ..MockConfig::default() }).await;
    let started = Instant::now();
    let resp = client().post(mock.url("/v1/chat/completions")).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().get("content-length").is_none());
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        arrivals.push(started.elapsed());
        body.extend_from_slice(&piece);
    }
    assert!(arrivals.len() >= 4, "arrived in {} pieces", arrivals.len());
    let (first, last) = (arrivals[0], *arrivals.last().unwrap());
    assert!(last - first >= Duration::from_millis(200), "first piece at {first:?}, last at {last:?}");

    let body = String::from_utf8(body).unwrap();
    let events = sse_events(&body);
    assert_eq!(events.len(), 5 + 2, "{body}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let mut text = String::new();
    let mut id = None;
    for (i, e) in events[..5].iter().enumerate() {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["choices"][0]["index"], 0);
        assert!(v["choices"][0]["finish_reason"].is_null());
        if i == 0 {
            assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        }
        text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap());
        let this_id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(id.get_or_insert_with(|| this_id.clone()), &this_id);
    }
    assert_eq!(text.split_whitespace().count(), 5);
    let fin: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    assert!(fin.get("usage").is_none());
}

#[tokio::test]
async fn stream_include_usage_chunk() {
    let mock = Mock::start(MockConfig::default()).await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = client()
        .post(mock.url("/v1/chat/completions"))
        .header("x-mock-chunks", "3")
        .header("x-mock-chunk-delay-ms", "0")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 3 + 3, "{text}");
    assert_eq!(events[5], "[DONE]");
    let fin: Value = serde_json::from_str(&events[3]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(usage["object"], "chat.completion.chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16}));
}

#[tokio::test]
async fn embeddings_models_health_404() {
    let mock = Mock::start(MockConfig::default()).await;
    let one: Value = client()
        .post(mock.url("/v1/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": "hello world"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "text-embedding-3-small");
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["index"], 0);
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(one["usage"], json!({"prompt_tokens": 2, "total_tokens": 2}));

    let many: Value = client()
        .post(mock.url("/openai/v1/embeddings"))
        .json(&json!({"model": "m", "input": ["hello world", "a b c"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(many["data"].as_array().unwrap().len(), 2);
    assert_eq!(many["data"][1]["index"], 1);
    assert_eq!(many["usage"]["prompt_tokens"], 5);
    // Same input, same vector.
    assert_eq!(many["data"][0]["embedding"], one["data"][0]["embedding"]);
    assert_ne!(many["data"][1]["embedding"], one["data"][0]["embedding"]);

    let missing = client().post(mock.url("/v1/embeddings")).json(&json!({"model": "m"})).send().await.unwrap();
    assert_eq!(missing.status(), 400);

    let models: Value = reqwest::get(mock.url("/v1/models")).await.unwrap().json().await.unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "text-embedding-3-small"]);

    let health = reqwest::get(mock.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let nf = reqwest::get(mock.url("/v1/nope")).await.unwrap();
    assert_eq!(nf.status(), 404);
    let v: Value = nf.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/nope"));

    let wrong_method = reqwest::get(mock.url("/v1/chat/completions")).await.unwrap();
    assert_eq!(wrong_method.status(), 405);
}

#[tokio::test]
async fn records_requests() {
    let mock = Mock::start(MockConfig::default()).await;
    let c = client();
    c.post(mock.url("/v1/chat/completions?a=1&b=2"))
        .header("x-first", "1")
        .header("authorization", "Bearer sk-test")
        .header("x-last", "z")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    c.get(mock.url("/v1/models")).send().await.unwrap();
    // Neither health checks nor /mock/ requests are recorded.
    c.get(mock.url("/health")).send().await.unwrap();

    let log = mock.requests().await;
    assert_eq!(log.len(), 2, "{log:#?}");
    let first = &log[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions");
    assert_eq!(first["query"], "a=1&b=2");
    assert_eq!(first["version"], "HTTP/1.1");
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    assert_eq!(first["body_len"], body.len());
    assert_eq!(first["body"], body.as_str());
    let headers: Vec<(String, String)> = first["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().to_owned(), h[1].as_str().unwrap().to_owned()))
        .collect();
    let pos = |name: &str| headers.iter().position(|(n, _)| n == name).unwrap();
    assert!(pos("x-first") < pos("authorization") && pos("authorization") < pos("x-last"));
    assert_eq!(headers[pos("authorization")].1, "Bearer sk-test");
    assert!(headers.iter().any(|(n, _)| n == "host"));
    assert_eq!(log[1]["method"], "GET");
    assert_eq!(log[1]["path"], "/v1/models");
    assert_eq!(log[1]["query"], "");
    assert_eq!(log[1]["body_len"], 0);

    let cleared: Value = c.delete(mock.url("/mock/requests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cleared, json!({"cleared": 2}));
    assert!(mock.requests().await.is_empty());

    // Binary and large bodies: length only.
    c.post(mock.url("/v1/embeddings")).body(vec![0xffu8, 0xfe, 0x00]).send().await.unwrap();
    let log = mock.requests().await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["body_len"], 3);
    assert!(log[0]["body"].is_null());

    // --record=false keeps nothing.
    let quiet = Mock::start(MockConfig { record: false, ..MockConfig::default() }).await;
    c.get(quiet.url("/v1/models")).send().await.unwrap();
    assert!(quiet.requests().await.is_empty());
}

#[tokio::test]
async fn injected_status_delay_and_echo() {
    let mock = Mock::start(MockConfig::default()).await;
    let c = client();
    let resp = c
        .post(mock.url("/v1/chat/completions"))
        .header("x-mock-status", "429")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let resp = c.get(mock.url("/v1/models")).header("x-mock-status", "503").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");

    let bad = c.get(mock.url("/v1/models")).header("x-mock-delay-ms", "soon").send().await.unwrap();
    assert_eq!(bad.status(), 400);

    let t = Instant::now();
    let resp = c.get(mock.url("/v1/models")).header("x-mock-delay-ms", "150").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    let echo: Value = c
        .post(mock.url("/anything/here?x=y"))
        .header("x-mock-echo", "1")
        .header("x-custom", "v")
        .body("hi")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/anything/here");
    assert_eq!(echo["query"], "x=y");
    assert_eq!(echo["body"], "hi");
    assert!(echo["headers"].as_array().unwrap().contains(&json!(["x-custom", "v"])));

    // fail_rate 1.0 fails everything but health checks and /mock/.
    let failing = Mock::start(MockConfig { fail_rate: 1.0, fail_status: 502, ..MockConfig::default() }).await;
    for _ in 0..5 {
        let r = c.post(failing.url("/v1/chat/completions")).json(&chat_body(false)).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    assert_eq!(c.get(failing.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(failing.requests().await.len(), 5);
}

async fn die_after_is_an_error(c: &reqwest::Client, url: &str, die_after: usize, delay_ms: u64) {
    let resp = c
        .post(url)
        .header("x-mock-die-after", die_after.to_string())
        .header("x-mock-chunk-delay-ms", delay_ms.to_string())
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let mut failed = false;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let got = String::from_utf8(got).unwrap();
    assert!(failed, "clean end after {got:?}");
    assert_eq!(sse_events(&got).len(), die_after, "{got}");
    assert!(!got.contains("[DONE]"));
}

#[tokio::test]
async fn die_after_aborts_the_response() {
    let mock = Mock::start(MockConfig::default()).await;
    let url = mock.url("/v1/chat/completions");
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for c in [client(), h2] {
        for (die_after, delay_ms) in [(2, 5), (3, 0), (0, 0)] {
            die_after_is_an_error(&c, &url, die_after, delay_ms).await;
        }
    }

    // Non-streamed: a content-length promising more than arrives.
    let resp = client()
        .post(mock.url("/v1/chat/completions"))
        .header("x-mock-die-after", "10")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert!(resp.content_length().unwrap() > 10);
    assert!(resp.bytes().await.is_err());

    // The server is still fine afterwards.
    let ok = client().post(mock.url("/v1/chat/completions")).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn websocket_echo() {
    let mock = Mock::start(MockConfig::default()).await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/realtime?model=x", mock.addr)).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("hello".into()));
    ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(vec![1, 2, 3]));
    ws.send(Message::Ping(vec![9])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Pong(vec![9]));
    ws.close(None).await.unwrap();
    // The server acknowledges the close and the stream ends.
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    let log = mock.requests().await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["path"], "/v1/realtime");
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let mock = Mock::start(MockConfig { chunk_delay_ms: 1, ..MockConfig::default() }).await;
    let c = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = c.post(mock.url("/v1/chat/completions")).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 8);

    let sse = c.post(mock.url("/v1/chat/completions")).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(sse.version(), reqwest::Version::HTTP_2);
    let text = sse.text().await.unwrap();
    assert_eq!(sse_events(&text).len(), 8 + 2);

    let log = mock.requests().await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["version"], "HTTP/2.0");
    assert_eq!(log[0]["authority"], mock.addr.to_string());
}

#[tokio::test]
async fn dropping_serve_ends_connections() {
    let mock = Mock::start(MockConfig { stream_chunks: 50, chunk_delay_ms: 100, ..MockConfig::default() }).await;
    let url = mock.url("/v1/chat/completions");
    let resp = client().post(&url).json(&chat_body(true)).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(mock);
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        let mut failed = false;
        while let Some(piece) = stream.next().await {
            if piece.is_err() {
                failed = true;
            }
        }
        failed
    })
    .await
    .expect("the stream should end soon after the server is dropped");
    assert!(rest, "the cut stream should end with an error");
    assert!(client().get(&url).send().await.is_err());
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    mock: MockConfig,
}

#[test]
fn command_line() {
    let d = Cli::try_parse_from(["mock"]).unwrap().mock;
    let def = MockConfig::default();
    assert_eq!(format!("{d:?}"), format!("{def:?}"), "clap defaults and Default agree");
    assert!(d.record);
    let c = Cli::try_parse_from([
        "mock",
        "--listen",
        "0.0.0.0:1",
        "--delay-ms",
        "5",
        "--fail-rate",
        "0.25",
        "--fail-status",
        "503",
        "--stream-chunks",
        "3",
        "--chunk-delay-ms",
        "0",
        "--record=false",
    ])
    .unwrap()
    .mock;
    assert_eq!(c.listen, "0.0.0.0:1");
    assert_eq!(c.delay_ms, 5);
    assert_eq!(c.fail_rate, 0.25);
    assert_eq!(c.fail_status, 503);
    assert_eq!(c.stream_chunks, 3);
    assert_eq!(c.chunk_delay_ms, 0);
    assert!(!c.record);
    assert!(Cli::try_parse_from(["mock", "--record"]).unwrap().mock.record);
    assert!(Cli::try_parse_from(["mock", "--fail-rate", "1.5"]).is_err());
    assert!(Cli::try_parse_from(["mock", "--fail-status", "99"]).is_err());
}
