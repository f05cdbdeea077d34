//! Body guards fail closed (issue 10 §1): on a route whose decision reads the body, gw forwards
//! only a body every mainstream JSON parser reads the same way, and a guard never lets a body
//! value of the wrong type through. The differential test runs a corpus of tricky bodies
//! (`tests/bodies/corpus.txt`) through the real `gw` in front of two upstreams, one reading
//! with Python's `json.loads(bytes)` (`tests/bodies/py_upstream.py`), one with serde_json.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{free_port, require_tool, Gw, GwSpec, Mock};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// The guards of every route under test: what tests/bodies/corpus.txt's expectations assume.
const GUARDS: &str = r#"
    deny 400 "too many tokens"   if body.max_tokens > 4096
    deny 403 "model not allowed" if body.model == "gpt-4-32k"
    deny 403 "no streaming"      if body.stream == true
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

async fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client().post(url).header("content-type", "application/json").body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_python_reads_past_a_guard_are_refused_before_the_upstream() {
    let mock = Mock::start(&[]);
    let policy = format!(
        "gateway {{ listen \"{{LISTEN}}\" admin \"{{ADMIN}}\" }}\nupstream mock {{ target \"{{UPSTREAM}}\" }}\n\
         route chat {{ when POST \"/v1/chat/completions\" {GUARDS} to mock }}\n\
         route plain {{ when POST \"/v1/files\" to mock }}\n"
    );
    let gw = Gw::start(GwSpec::new(&policy, &mock.url()));
    let chat = gw.url("/v1/chat/completions");
    let json = r#"{"model":"gpt-4o","max_tokens":9000}"#;
    // The three bodies of the issue: each read by json.loads(bytes) with max_tokens 9000.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(json.as_bytes());
    let nan = br#"{"model":"gpt-4o","max_tokens":9000,"temperature":NaN}"#.to_vec();
    for (name, body) in [("bom", bom.clone()), ("utf-16", utf16le(json)), ("nan", nan)] {
        let (status, answer) = post(&chat, &body, &[]).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_body", "{name}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{name}: {answer}");
    }
    // A fact of the wrong type refuses instead of comparing false.
    let (status, answer) = post(&chat, br#"{"max_tokens":"9000"}"#, &[]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_body")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("`>` compares numbers"), "{answer}");
    // A compressed body on a body-reading route is one gw cannot read: 415.
    let (status, answer) = post(&chat, b"\x1f\x8b\x08\x00garbage", &[("content-encoding", "gzip")]).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (415, Some("unsupported_content_encoding")), "{answer}");
    assert!(mock.requests().await.is_empty(), "a refused body reached the upstream");

    // The same bodies pass untouched where no decision reads the body.
    let (status, answer) = post(&gw.url("/v1/files"), &bom, &[]).await;
    assert_ne!(answer["error"]["code"], "invalid_body", "{status} {answer}");
    let (status, _) = post(&chat, br#"{"model":"gpt-4o","max_tokens":4096}"#, &[]).await;
    assert_eq!(status, 200);
    let recorded = mock.requests().await;
    assert_eq!(recorded.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_or_query_a_guard_reads_is_refused_when_readers_could_read_it_differently() {
    let mock = Mock::start(&[]);
    let policy = "gateway { listen \"{LISTEN}\" admin \"{ADMIN}\" }\nupstream mock { target \"{UPSTREAM}\" }\n\
        route chat { when POST \"/v1/chat/completions\" deny 403 \"no\" if header[\"x-user\"] == \"eve\" or query[\"user\"] == \"eve\" to mock }\n\
        route files { when GET \"/files/*\" deny 403 \"no\" if path starts_with \"/files/secret\" to mock }\n";
    let gw = Gw::start(GwSpec::new(policy, &mock.url()));
    let send = |query: &'static str, headers: Vec<(&'static str, &'static [u8])>| {
        let url = gw.url(&format!("/v1/chat/completions{query}"));
        async move {
            let mut req = client().post(url).body("{}");
            for (k, v) in headers {
                req = req.header(k, reqwest::header::HeaderValue::from_bytes(v).unwrap());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body["error"]["code"].as_str().unwrap_or("").to_string())
        }
    };
    // Each of these is read as "eve" by some upstream (the last value, or a lossy decoding).
    assert_eq!(send("", vec![("x-user", b"bob"), ("x-user", b"eve")]).await, (400, "invalid_header".into()));
    assert_eq!(send("", vec![("x-user", b"eve\xff")]).await, (400, "invalid_header".into()));
    assert_eq!(send("?user=bob&user=eve", vec![]).await, (400, "invalid_query".into()));
    assert_eq!(send("?user=%65ve%zz", vec![]).await, (400, "invalid_query".into()));
    assert_eq!(send("?user=ev%65", vec![]).await, (403, "denied".into()));
    // The path a guard reads is decoded as the upstream decodes it.
    let files = |path: &str| client().get(gw.url(path)).send();
    assert_eq!(files("/files/%73ecret.txt").await.unwrap().status().as_u16(), 403);
    assert_eq!(files("/files/%zz").await.unwrap().status().as_u16(), 400);
    assert!(mock.requests().await.is_empty(), "an ambiguous request reached the upstream");
    // Facts no guard reads are not checked.
    let (status, _) = send("?other=%zz&other=1", vec![("x-other", b"\xff"), ("x-user", b"bob")]).await;
    assert_eq!(status, 200);
}

/// One body of the corpus.
struct Case {
    name: String,
    expect: char,
    body: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bodies/corpus.txt")).unwrap();
    let mut cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (name, expect, body) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            Case { name: name.into(), expect: expect.chars().next().unwrap(), body: decode(body) }
        })
        .collect();
    // Nesting: the reader's bound is 64 levels (the top-level object is the first).
    let nest = |levels: usize| format!("{{\"a\":{}1{}}}", "[".repeat(levels - 1), "]".repeat(levels - 1)).into_bytes();
    cases.push(Case { name: "nesting_64".into(), expect: 'F', body: nest(64) });
    cases.push(Case { name: "nesting_65".into(), expect: 'R', body: nest(65) });
    cases.push(Case { name: "nesting_5000".into(), expect: 'R', body: nest(5000) });
    cases
}

/// A corpus body: `\xNN` escapes and the encoding prefixes of corpus.txt.
fn decode(text: &str) -> Vec<u8> {
    let (prefix, rest) = match text.split_once(':') {
        Some((p @ ("utf16le" | "utf16be" | "utf32le" | "bom16le"), rest)) => (p, rest),
        _ if text == "empty" => return vec![],
        _ => ("", text),
    };
    let mut bytes = vec![];
    let mut i = 0;
    let b = rest.as_bytes();
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                bytes.push(v);
                i += 4;
                continue;
            }
        }
        bytes.push(b[i]);
        i += 1;
    }
    let s = String::from_utf8(bytes.clone());
    match (prefix, s) {
        ("utf16le", Ok(s)) => utf16le(&s),
        ("bom16le", Ok(s)) => [vec![0xFF, 0xFE], utf16le(&s)].concat(),
        ("utf16be", Ok(s)) => s.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ("utf32le", Ok(s)) => s.chars().flat_map(|c| (c as u32).to_le_bytes()).collect(),
        _ => bytes,
    }
}

/// What serde_json (the way a Rust upstream reads a body) reads for the policy's facts.
fn serde_readings(raw: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => {
            let facts: serde_json::Map<String, Value> = ["max_tokens", "model", "stream"]
                .iter()
                .map(|f| (f.to_string(), m.get(*f).map(|v| json!(["value", v])).unwrap_or(json!(["absent"]))))
                .collect();
            json!({"ok": true, "facts": facts})
        }
        _ => json!({"ok": false}),
    }
}

/// A serde_json upstream inside the test: answers every POST with its readings.
async fn serde_upstream(posts: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let posts = posts.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let posts = posts.clone();
                    async move {
                        posts.fetch_add(1, Ordering::SeqCst);
                        let raw = req.into_body().collect().await?.to_bytes();
                        let out = serde_readings(&raw).to_string();
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(out))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    addr
}

/// The Python upstream, killed on drop.
struct PyUpstream {
    child: Child,
    port: u16,
}

impl PyUpstream {
    fn start(python: &std::path::Path) -> PyUpstream {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bodies/py_upstream.py");
        let mut child = Command::new(python)
            .args([script, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        PyUpstream { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn posts(&self) -> u64 {
        let v: Value = client().get(self.url()).send().await.unwrap().json().await.unwrap();
        v["posts"].as_u64().unwrap()
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Facts as two readers read them agree: numbers by value (Python's 4096.0 is serde's 4096.0),
/// everything else exactly.
fn same_reading(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_reading(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_reading(v, w)))
        }
        _ => a == b,
    }
}

/// Which guard the readings violate, if any (the policy's guards, read as the upstream reads).
fn violated(facts: &Value) -> Option<&'static str> {
    let value = |f: &str| (facts[f][0] == "value").then(|| &facts[f][1]);
    if value("max_tokens").and_then(Value::as_f64).is_some_and(|n| n > 4096.0) {
        return Some("too many tokens");
    }
    if value("model").is_some_and(|m| m == "gpt-4-32k") {
        return Some("model not allowed");
    }
    if value("stream").is_some_and(|s| *s == Value::Bool(true)) {
        return Some("no streaming");
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn what_gw_forwards_every_parser_reads_alike_and_the_guards_saw_it() {
    let Some(python) = require_tool("python3", "python3") else { return };
    let py = PyUpstream::start(&python);
    let rs_posts = Arc::new(AtomicUsize::new(0));
    let rs = serde_upstream(rs_posts.clone()).await;
    let policy = format!(
        "gateway {{ listen \"{{LISTEN}}\" admin \"{{ADMIN}}\" }}\n\
         upstream py {{ target \"{{UPSTREAM}}\" }}\nupstream rs {{ target \"http://{rs}\" }}\n\
         route via_py {{ when POST \"/py\" {GUARDS} to py }}\n\
         route via_rs {{ when POST \"/rs\" {GUARDS} to rs }}\n"
    );
    let gw = Gw::start(GwSpec::new(&policy, &py.url()));

    let cases = corpus();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut failures = vec![];
    let (mut forwarded, mut denied, mut refused, mut python_reads_refused, mut disagree_refused) = (0, 0, 0, 0, 0);
    for case in &cases {
        let name = &case.name;
        // What each upstream reads of the body when it gets it directly.
        let (_, direct_py) = post(&py.url(), &case.body, &[]).await;
        let direct_rs = serde_readings(&case.body);
        let (py_before, rs_before) = (py.posts().await, rs_posts.load(Ordering::SeqCst));
        let (py_status, via_py) = post(&gw.url("/py"), &case.body, &[]).await;
        let (rs_status, via_rs) = post(&gw.url("/rs"), &case.body, &[]).await;
        let reached = (py.posts().await - py_before, rs_posts.load(Ordering::SeqCst) - rs_before);
        let got = match (py_status, &via_py["error"]["code"]) {
            (200, _) => 'F',
            (_, code) if code == "invalid_body" => 'R',
            (_, code) if code == "denied" => 'D',
            _ => '?',
        };
        if got != case.expect || rs_status != py_status {
            failures.push(format!("{name}: expected {}, got {py_status}/{rs_status} {via_py}", case.expect));
            continue;
        }
        match got {
            'F' => {
                forwarded += 1;
                if reached != (1, 1) {
                    failures.push(format!("{name}: forwarded, but the upstreams saw {reached:?}"));
                }
                // gw forwarded the bytes it decided on: each upstream reads what it reads directly.
                if !same_reading(&via_py, &direct_py) || !same_reading(&via_rs, &direct_rs) {
                    failures.push(format!("{name}: through gw {via_py} / {via_rs}, direct {direct_py} / {direct_rs}"));
                }
                // Both parsers read the same facts, and no guard should have refused them.
                if !same_reading(&direct_py, &direct_rs) {
                    failures.push(format!("{name}: forwarded, but python read {direct_py} and serde {direct_rs}"));
                } else if let Some(g) = violated(&direct_py["facts"]) {
                    failures.push(format!("{name}: forwarded although the upstream reads a `{g}` request"));
                }
            }
            'D' => {
                denied += 1;
                if reached != (0, 0) || !same_reading(&direct_py, &direct_rs) || violated(&direct_py["facts"]).is_none()
                {
                    failures
                        .push(format!("{name}: denied; reached {reached:?}; python {direct_py}, serde {direct_rs}"));
                }
            }
            _ => {
                refused += 1;
                if reached != (0, 0) {
                    failures.push(format!("{name}: refused, but an upstream saw it: {reached:?}"));
                }
                python_reads_refused += usize::from(direct_py["ok"] == true);
                disagree_refused += usize::from(!same_reading(&direct_py, &direct_rs));
            }
        }
    }
    eprintln!(
        "{} bodies: {forwarded} forwarded, {denied} denied by a guard, {refused} refused as invalid_body \
         ({python_reads_refused} of them read by python's json.loads, {disagree_refused} read differently by \
         python and serde_json)",
        cases.len()
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
