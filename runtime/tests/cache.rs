//! The response cache end to end: the real `gw` in front of the mock upstream, whose request
//! log says how often the upstream was reached. Identical requests within the TTL reach it
//! once; tenants never share an entry; streamed requests, `no-cache` clients and error answers
//! are never served from the cache; the size bound evicts the least recently used entry; with
//! `state redis`, two gateways share one cache.

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod redis_server;
mod common;

use std::time::{Duration, Instant};

use common::{users_keys, Gw, GwSpec, Mock};
use redis_server::RedisServer;
use serde_json::Value;

fn policy(state: &str, chat_cache: &str, models_cache: &str) -> String {
    format!(
        r#"
gateway {{
    listen "{{LISTEN}}"
    admin  "{{ADMIN}}"
    audit  "audit.jsonl"
    {state}
}}
upstream mock {{ target "{{UPSTREAM}}" }}
keys users from "keys/users.keys"
route chat {{
    when  POST "/v1/chat/completions"
    auth  users
    limit rate 100/min per key
    limit tokens 100k/min per key
    {chat_cache}
    to    mock
}}
route models {{
    when  GET "/v1/models"
    auth  users
    limit rate 3/min per key
    {models_cache}
    to    mock
}}
"#
    )
}

fn start(mock: &Mock, text: &str, env: &[(&'static str, &'static str)]) -> Gw {
    let upstream = mock.url();
    let mut spec = GwSpec::new(text, &upstream).file("keys/users.keys", users_keys());
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    Gw::start(spec)
}

/// Send and read the whole answer: (status, x-gw-cache, headers, body).
async fn send(req: reqwest::RequestBuilder) -> (u16, String, reqwest::header::HeaderMap, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let cache = headers.get("x-gw-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, cache, headers, resp.text().await.unwrap())
}

fn chat(c: &reqwest::Client, gw: &Gw, key: &str, body: &str) -> reqwest::RequestBuilder {
    c.post(gw.url("/v1/chat/completions"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
}

async fn upstream_hits(mock: &Mock, path: &str) -> usize {
    mock.requests().await.iter().filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(path))).count()
}

/// The miss's answer is stored once its body has passed: give the store a moment.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn audit_lines(gw: &Gw, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(gw.path("audit.jsonl")).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_calls_within_the_ttl_reach_the_upstream_once() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy("", "cache 2s", ""), &[]);
    let c = reqwest::Client::new();
    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}"#;
    let (status, cache, _, first) = send(chat(&c, &gw, "sk-test-1", body)).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    settle().await;
    for _ in 0..4 {
        let (status, cache, headers, again) = send(chat(&c, &gw, "sk-test-1", body)).await;
        assert_eq!((status, cache.as_str()), (200, "hit"));
        assert_eq!(again, first, "a hit answers the stored body");
        assert!(headers.contains_key("age") && headers.contains_key("x-request-id"));
    }
    // The same JSON with its keys in another order and other spacing is the same request.
    let reordered = r#"{"temperature":0,"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o"}"#;
    assert_eq!(send(chat(&c, &gw, "sk-test-1", reordered)).await.1, "hit");
    assert_eq!(upstream_hits(&mock, "/v1/chat").await, 1, "five identical calls, one upstream request");
    // Another body is another request.
    let other = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "ho"}]}"#;
    assert_eq!(send(chat(&c, &gw, "sk-test-1", other)).await.1, "miss");
    assert_eq!(upstream_hits(&mock, "/v1/chat").await, 2);
    // After the TTL, the entry is gone.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(send(chat(&c, &gw, "sk-test-1", body)).await.1, "miss");
    assert_eq!(upstream_hits(&mock, "/v1/chat").await, 3);

    let lines = audit_lines(&gw, 8).await;
    let said: Vec<&str> = lines.iter().map(|l| l["cache"].as_str().unwrap_or("-")).collect();
    assert_eq!(said, ["miss", "hit", "hit", "hit", "hit", "hit", "miss", "miss"]);
    assert!(lines[1]["upstream"].is_null(), "a hit reaches no upstream: {}", lines[1]);
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, "gw_cache_requests_total", "result=\"hit\""), 5.0, "{metrics}");
    assert_eq!(metric(&metrics, "gw_cache_requests_total", "result=\"miss\""), 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_never_share_an_entry_unless_the_cache_is_shared() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy("", "", "cache 30s"), &[]);
    let c = reqwest::Client::new();
    let models = |key: &str| c.get(gw.url("/v1/models")).header("x-api-key", key.to_string());
    assert_eq!(send(models("sk-test-1")).await.1, "miss");
    settle().await;
    assert_eq!(send(models("sk-test-2")).await.1, "miss", "another tenant's entry is never served");
    settle().await;
    assert_eq!(send(models("sk-test-1")).await.1, "hit");
    assert_eq!(send(models("sk-test-2")).await.1, "hit");
    assert_eq!(upstream_hits(&mock, "/v1/models").await, 2);

    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy("", "", "cache 30s shared"), &[]);
    let models = |key: &str| c.get(gw.url("/v1/models")).header("x-api-key", key.to_string());
    assert_eq!(send(models("sk-test-1")).await.1, "miss");
    settle().await;
    assert_eq!(send(models("sk-test-2")).await.1, "hit", "`shared`: one entry for every tenant");
    assert_eq!(upstream_hits(&mock, "/v1/models").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_no_cache_clients_and_errors_are_never_served_from_the_cache() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy("", "cache 30s", ""), &[]);
    let c = reqwest::Client::new();
    let stream = r#"{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}"#;
    for _ in 0..2 {
        let (status, cache, headers, body) = send(chat(&c, &gw, "sk-test-1", stream)).await;
        assert_eq!((status, cache.as_str()), (200, "bypass"));
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream") && body.contains("data:"));
        settle().await;
    }
    assert_eq!(upstream_hits(&mock, "/v1/chat").await, 2, "a streamed request is never cached");

    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;
    let (status, cache, _, _) = send(chat(&c, &gw, "sk-test-1", body).header("x-mock-status", "500")).await;
    assert_eq!((status, cache.as_str()), (500, "miss"));
    settle().await;
    assert_eq!(send(chat(&c, &gw, "sk-test-1", body)).await.1, "miss", "an error answer is not stored");
    settle().await;
    assert_eq!(send(chat(&c, &gw, "sk-test-1", body)).await.1, "hit");
    for directive in ["no-cache", "no-store", "max-age=0, no-cache"] {
        let (_, cache, _, _) = send(chat(&c, &gw, "sk-test-1", body).header("cache-control", directive)).await;
        assert_eq!(cache, "bypass", "{directive}");
    }
    assert_eq!(send(chat(&c, &gw, "sk-test-1", body).header("pragma", "no-cache")).await.1, "bypass");
    assert_eq!(upstream_hits(&mock, "/v1/chat").await, 2 + 2 + 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hit_passes_the_rate_limit_but_costs_no_tokens() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy("", "cache 30s", "cache 30s"), &[]);
    let c = reqwest::Client::new();
    let body = r#"{"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}"#;
    let (_, cache, miss, _) = send(chat(&c, &gw, "sk-test-1", body)).await;
    assert_eq!(cache, "miss");
    assert!(miss.contains_key("x-ratelimit-remaining-tokens"), "the miss is charged tokens");
    settle().await;
    let (_, cache, hit, _) = send(chat(&c, &gw, "sk-test-1", body)).await;
    assert_eq!(cache, "hit");
    assert!(!hit.contains_key("x-ratelimit-remaining-tokens"), "a hit consults no token budget: {hit:?}");
    assert!(hit.contains_key("x-ratelimit-remaining-requests"), "but it counts against the rate");
    // models: 3 a minute, hits included.
    let models = || c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-2");
    assert_eq!(send(models()).await.1, "miss");
    settle().await;
    assert_eq!(send(models()).await.1, "hit");
    assert_eq!(send(models()).await.1, "hit");
    let (status, _, _, _) = send(models()).await;
    assert_eq!(status, 429, "a cache never lets a client past its rate");
    // A request without a valid key never reaches the cache.
    let (status, cache, _, _) = send(c.get(gw.url("/v1/models")).header("x-api-key", "sk-nope")).await;
    assert_eq!((status, cache.as_str()), (401, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_size_bound_evicts_the_least_recently_used_entry() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy("", "cache 60s max 2KB", ""), &[]);
    let c = reqwest::Client::new();
    let body = |i: usize| format!(r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "q{i}"}}]}}"#);
    // Each answer is a few hundred bytes: 2KB holds a few, not ten.
    for i in 0..10 {
        assert_eq!(send(chat(&c, &gw, "sk-test-1", &body(i))).await.1, "miss");
        settle().await;
        // Keep entry 0 the most recently used.
        assert_eq!(send(chat(&c, &gw, "sk-test-1", &body(0))).await.1, "hit");
    }
    assert_eq!(send(chat(&c, &gw, "sk-test-1", &body(9))).await.1, "hit", "the newest stays");
    assert_eq!(send(chat(&c, &gw, "sk-test-1", &body(1))).await.1, "miss", "the least recently used went");
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric(&metrics, "gw_cache_evicted_total", "route=\"chat\"") >= 5.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_cache_in_redis() {
    require_redis!();
    let redis = RedisServer::start();
    let url: &'static str = Box::leak(redis.url().into_boxed_str());
    let mock = Mock::start(&[]);
    let text = policy("state redis env(\"T_REDIS_URL\")", "", "cache 30s");
    let a = start(&mock, &text, &[("T_REDIS_URL", url)]);
    let b = start(&mock, &text, &[("T_REDIS_URL", url)]);
    let c = reqwest::Client::new();
    let models = |gw: &Gw, key: &str| c.get(gw.url("/v1/models")).header("x-api-key", key.to_string());
    let (_, cache, _, first) = send(models(&a, "sk-test-1")).await;
    assert_eq!(cache, "miss");
    settle().await;
    let (_, cache, _, second) = send(models(&b, "sk-test-1")).await;
    assert_eq!(cache, "hit", "gw b reads what gw a stored");
    assert_eq!(first, second);
    assert_eq!(send(models(&b, "sk-test-2")).await.1, "miss", "tenants apart in Redis too");
    assert_eq!(upstream_hits(&mock, "/v1/models").await, 2);
}

/// A bare upstream answering each path with the headers its name says, counting requests.
fn header_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap_or(0);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = first.split(' ').nth(1).unwrap_or("/").to_string();
            log.lock().unwrap().push(path.clone());
            let extra = match path.as_str() {
                "/vary" => "Vary: Accept-Language\r\n",
                "/gzip" => "Content-Encoding: gzip\r\n",
                "/cookie" => "Set-Cookie: session=abc\r\n",
                "/private" => "Cache-Control: private, max-age=60\r\n",
                _ => "",
            };
            let body = r#"{"ok":true}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_the_key_cannot_tell_apart_are_not_stored() {
    let (upstream, seen) = header_upstream();
    let text = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream bare { target "{UPSTREAM}" }
route any {
    when  GET "/*"
    auth  none
    cache 30s
    to    bare
}
"#;
    let gw = Gw::start(GwSpec::new(text, &upstream));
    let c = reqwest::Client::new();
    for path in ["/plain", "/vary", "/gzip", "/cookie", "/private"] {
        let want = if path == "/plain" { ["miss", "hit"] } else { ["miss", "miss"] };
        for w in want {
            let resp = c.get(gw.url(path)).send().await.unwrap();
            assert_eq!(resp.headers()["x-gw-cache"], w, "{path}");
            resp.bytes().await.unwrap();
            settle().await;
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, ["/plain", "/vary", "/vary", "/gzip", "/gzip", "/cookie", "/cookie", "/private", "/private"]);
}
