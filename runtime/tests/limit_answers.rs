//! Answers that tell the truth, with the real `gw`: a request too large for a whole token budget
//! is not a 429 to retry; the `x-ratelimit-*` headers mean what OpenAI's mean; a Redis outage
//! under `on_error deny` is a 503, not a rate limit; refusals speak the policy's words, not
//! internal ids; and a streamed body cut at `max_body` never reaches the upstream as whole.

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod redis_server;
mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{users_keys, Gw, GwSpec, Mock};
use redis_server::RedisServer;
use serde_json::Value;

const POLICY: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route chat {
    when  POST "/v1/chat/completions"
    auth  users
    limit tokens 12500/min per key
    to    mock
}
route translate {
    when  GET "/v1/models"
    auth  users
    limit rate 60/min burst 10 per tenant
    to    mock
}
"#;

fn chat(max_tokens: u64) -> String {
    serde_json::json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

async fn post(gw: &Gw, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn models(gw: &Gw) -> reqwest::Response {
    reqwest::Client::new().get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_larger_than_the_whole_budget_is_refused_as_such_and_not_charged() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));

    let refused = post(&gw, chat(13_000)).await;
    assert_eq!(refused.status(), 400, "waiting cannot help: not a 429 clients retry");
    assert!(refused.headers().get("retry-after").is_none(), "no retry-after for a request that never fits");
    let e: Value = refused.json().await.unwrap();
    assert_eq!(e["error"]["code"], "request_too_large_for_budget", "{e}");
    assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("12500 tokens per minute per key") && message.contains("route `chat`"), "{message}");
    assert!(mock.requests().await.is_empty(), "no upstream work");

    // Nothing was charged: a request reserving almost the whole budget still fits.
    let fits = post(&gw, chat(12_400)).await;
    assert_eq!(fits.status(), 200);
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"result="too_large"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_headers_mean_what_openais_mean() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));

    // `rate 60/min burst 10`: the limit is 60 requests per minute, not the burst; 9 of the
    // burst are left; the bucket is full again one interval (1 s) later.
    let first = models(&gw).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit-requests"), "60");
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "9");
    assert_eq!(header(&first, "x-ratelimit-reset-requests"), "1s", "OpenAI's duration format");

    // Tokens: 12500 per minute; the reservation is reconciled, the reset is in Go notation.
    let answered = post(&gw, chat(100)).await;
    assert_eq!(header(&answered, "x-ratelimit-limit-tokens"), "12500");
    let remaining: u64 = header(&answered, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!((12_300..12_500).contains(&remaining), "{remaining}");
    // About 110 tokens reserved at 4.8 ms each: `5..ms`, not `0.5..s`.
    let reset = header(&answered, "x-ratelimit-reset-tokens");
    assert!(reset.strip_suffix("ms").is_some_and(|ms| ms.parse::<u64>().is_ok()), "{reset}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_speak_the_policys_words_not_internal_ids() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    // Spend the burst: the 429 says which limit, in the policy's words, never its internal id.
    for _ in 0..10 {
        assert_eq!(models(&gw).await.status(), 200);
    }
    let limited = models(&gw).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "x-ratelimit-remaining-requests"), "0");
    assert!(!header(&limited, "retry-after").is_empty());
    let e: Value = limited.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    let message = e["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "the rate limit of route `translate` (60 requests per minute, bursts of 10, per tenant) is exceeded"
    );
    assert!(!message.contains("route:translate#"), "{message}");
    // The id stays for operators.
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("route:translate#0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_under_on_error_deny_is_a_503_with_retry_after() {
    require_redis!();
    let mut redis = RedisServer::start();
    let mock = Mock::start(&[]);
    let policy = POLICY
        .replace("admin  \"{ADMIN}\"\n", "admin  \"{ADMIN}\"\n    state  redis env(\"T_REDIS_URL\") on_error deny\n");
    let url = redis.url();
    let gw =
        Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/users.keys", users_keys()).env("T_REDIS_URL", &url));
    assert_eq!(models(&gw).await.status(), 200, "Redis answers: admitted");

    redis.kill();
    let mut last = None;
    for _ in 0..3 {
        let resp = models(&gw).await;
        assert_eq!(resp.status(), 503, "not a rate limit: the store could not be asked");
        assert_eq!(header(&resp, "retry-after"), "1");
        assert!(resp.headers().get("x-ratelimit-remaining-requests").is_none(), "no made-up numbers");
        last = Some(resp.json::<Value>().await.unwrap());
    }
    let e = last.unwrap();
    assert_eq!(e["error"]["code"], "limit_store_unavailable", "{e}");
    assert!(!e["error"]["message"].as_str().unwrap().contains("redis://"), "{e}");
}

/// Whether `got` holds a whole request: a chunked body up to its last chunk, or as many bytes
/// as its `content-length` says.
fn whole(got: &[u8]) -> bool {
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => got.len() - (end + 4) >= n,
        None => got.ends_with(b"\r\n0\r\n\r\n"),
    }
}

/// What a raw upstream received of one request (the bytes, and whether the request was whole)
/// once its connection ended; and a signal when the body's first bytes arrived.
struct RawUpstream {
    url: String,
    done: std::sync::mpsc::Receiver<(Vec<u8>, bool)>,
    started: std::sync::mpsc::Receiver<()>,
}

/// A raw upstream that records what it receives of one request until the connection ends.
fn raw_upstream() -> RawUpstream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (done_tx, done) = std::sync::mpsc::channel();
    let (started_tx, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        let complete = loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let body_started = got.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|h| got.len() > h + 4);
            if body_started && !told {
                told = true;
                let _ = started_tx.send(());
            }
            if whole(&got) {
                // A whole request: answer it, as an upstream would.
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                break true;
            }
        };
        let _ = done_tx.send((got, complete));
    });
    RawUpstream { url, done, started }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_cut_at_max_body_never_reaches_the_upstream_as_whole() {
    let RawUpstream { url: upstream, done, started } = raw_upstream();
    let policy = r#"
gateway {
    listen   "{LISTEN}"
    admin    "{ADMIN}"
    max_body 4KB
}
upstream raw { target "{UPSTREAM}" timeout 10s }
route upload {
    when POST "/upload"
    to   raw
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &upstream));
    let addr = gw.addr;
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let chunk = |n: usize| format!("{n:x}\r\n{}\r\n", "a".repeat(n));
        s.write_all(
            format!("POST /upload HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n{}", chunk(3000))
                .as_bytes(),
        )
        .unwrap();
        // Only once the upstream has part of the body does the rest (over 4 KB in all) follow.
        started.recv_timeout(Duration::from_secs(10)).expect("the first part was forwarded");
        let _ = s.write_all(format!("{}0\r\n\r\n", chunk(3000)).as_bytes());
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    let (got, complete) = done.recv_timeout(Duration::from_secs(15)).expect("the upstream connection ended");
    let answer = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains(&"a".repeat(3000)), "part of the body was forwarded first");
    assert!(!complete, "the upstream saw a whole request: {got}");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_the_client_cuts_short_never_reaches_the_upstream_as_whole() {
    let RawUpstream { url: upstream, done, started } = raw_upstream();
    let policy = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}
upstream raw { target "{UPSTREAM}" timeout 10s }
route upload {
    when POST "/upload"
    to   raw
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &upstream));
    let addr = gw.addr;
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = "POST /upload HTTP/1.1\r\nhost: gw\r\ncontent-length: 6000\r\n\r\n";
        s.write_all(format!("{head}{}", "a".repeat(3000)).as_bytes()).unwrap();
        started.recv_timeout(Duration::from_secs(10)).expect("the first part was forwarded");
        // The client goes away with half of the declared body sent.
        drop(s);
    });
    let (got, complete) = done.recv_timeout(Duration::from_secs(15)).expect("the upstream connection ended");
    tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains(&"a".repeat(3000)), "part of the body was forwarded first");
    assert!(!complete, "the upstream saw a whole request: {got}");
}
