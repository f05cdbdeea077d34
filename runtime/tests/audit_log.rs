//! The audit log end to end: the real `gw` writing one JSON line per request, with no key
//! material anywhere, and a stalled writer that never slows requests down.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{users_keys, Gw, GwSpec, Mock};
use futures_util::StreamExt;
use serde_json::Value;

fn policy(audit: &str) -> String {
    format!(
        r#"
gateway {{
    listen "{{LISTEN}}"
    admin  "{{ADMIN}}"
    audit  "{audit}"
}}
upstream mock {{
    target "{{UPSTREAM}}"
    header "authorization" = "Bearer backend-secret-key"
}}
keys users from "keys/users.keys"
route chat {{
    when POST "/v1/chat/completions"
    auth users
    to   mock
}}
route models {{
    when GET "/v1/models"
    auth users
    to   mock
}}
"#
    )
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn wait_lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = lines(path);
        if l.len() >= n || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_gives_one_line_and_no_key_is_ever_written() {
    let mock = Mock::start(&[]);
    let text = policy("logs/audit.jsonl");
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    let c = reqwest::Client::new();
    let ok = c
        .post(gw.url("/v1/chat/completions?api_key=sk-test-2"))
        .header("x-api-key", "sk-test-1")
        .header("x-request-id", "audit-req-1")
        .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    ok.text().await.unwrap();
    let stream = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-test-2")
        .header("x-mock-chunks", "4")
        .header("x-mock-chunk-delay-ms", "10")
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let mut body = stream.bytes_stream();
    while body.next().await.is_some() {}
    assert_eq!(c.get(gw.url("/v1/models")).header("x-api-key", "sk-wrong-key").send().await.unwrap().status(), 401);
    assert_eq!(c.get(gw.url("/nope")).send().await.unwrap().status(), 404);

    let path = gw.path("logs/audit.jsonl");
    let records = wait_lines(&path, 4).await;
    assert_eq!(records.len(), 4, "{records:?}");
    let first = &records[0];
    for field in [
        "time",
        "request_id",
        "key_name",
        "tenant",
        "client_ip",
        "method",
        "path",
        "route",
        "upstream",
        "target",
        "status",
        "latency_ms",
        "upstream_ms",
        "request_bytes",
        "response_bytes",
        "streamed",
        "chunks",
        "prompt_tokens",
        "completion_tokens",
        "error",
        "policy_generation",
    ] {
        assert!(first.get(field).is_some(), "no `{field}` in {first}");
    }
    assert_eq!(first["request_id"], "audit-req-1");
    assert_eq!(first["key_name"], "user-1");
    assert_eq!(first["tenant"], "alpha");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions", "no query string: it may hold credentials");
    assert_eq!(first["route"], "chat");
    assert_eq!(first["upstream"], "mock");
    assert_eq!(first["status"], 200);
    assert_eq!(first["streamed"], false);
    assert!(first["request_bytes"].as_u64().unwrap() > 40);
    assert!(first["response_bytes"].as_u64().unwrap() > 100);
    assert!(first["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(first["policy_generation"], 1);
    let streamed = &records[1];
    assert_eq!(streamed["streamed"], true);
    assert!(streamed["chunks"].as_u64().unwrap() >= 4, "{streamed}");
    assert_eq!(streamed["key_name"], "user-2");
    assert_eq!(records[2]["status"], 401);
    assert_eq!(records[2]["error"], "invalid_api_key");
    assert_eq!(records[3]["status"], 404);
    assert_eq!(records[3]["error"], "no_route");

    let raw = std::fs::read_to_string(&path).unwrap();
    for secret in ["sk-test-1", "sk-test-2", "sk-wrong-key", "backend-secret-key"] {
        assert!(!raw.contains(secret), "{secret} is in the audit log");
        assert!(!gw.proc.log().contains(secret), "{secret} is in gw's log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_the_log_after_rotation() {
    let mock = Mock::start(&[]);
    let text = policy("audit.jsonl");
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    let c = reqwest::Client::new();
    let get = || c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send();
    get().await.unwrap();
    let path = gw.path("audit.jsonl");
    assert_eq!(wait_lines(&path, 1).await.len(), 1);
    std::fs::rename(&path, gw.path("audit.jsonl.old")).unwrap();
    gw.proc.signal(10); // SIGUSR1
    tokio::time::sleep(Duration::from_millis(300)).await;
    get().await.unwrap();
    get().await.unwrap();
    assert_eq!(wait_lines(&path, 2).await.len(), 2, "new lines go to a new file at the path");
    assert_eq!(lines(&gw.path("audit.jsonl.old")).len(), 1);
}

/// Time `n` requests from `workers` concurrent clients; the mean latency.
async fn mean_latency(gw: &Gw, n: usize, workers: usize) -> Duration {
    let per = n / workers;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let url = gw.url("/v1/models");
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let started = Instant::now();
                for _ in 0..per {
                    let r = c.get(&url).header("x-api-key", "sk-test-1").send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                }
                started.elapsed()
            })
        })
        .collect();
    let mut total = Duration::ZERO;
    for t in tasks {
        total += t.await.unwrap();
    }
    total / (per * workers) as u32
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_audit_writer_drops_records_and_never_slows_requests() {
    let mock = Mock::start(&["--record=false"]);
    let n = 12_000;

    // Baseline: a normal file.
    let text = policy("audit.jsonl");
    let normal = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    mean_latency(&normal, 1000, 8).await;
    let base = mean_latency(&normal, n, 8).await;
    drop(normal);

    // Stalled: the audit "file" is a FIFO whose reader never reads: the writer blocks once the
    // pipe buffer is full, and the queue behind it fills.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    use std::os::unix::fs::OpenOptionsExt;
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(0o4000 /* O_NONBLOCK */).open(&fifo).unwrap();
    let text = policy(fifo.to_str().unwrap());
    let stalled = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    mean_latency(&stalled, 1000, 8).await;
    let slow = mean_latency(&stalled, n, 8).await;
    let metrics = reqwest::get(stalled.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gw_audit_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    println!("mean latency: {base:?} with a working audit log, {slow:?} with a stalled one; {dropped} records dropped");
    assert!(dropped > 1000, "the stalled writer's overflow is counted: {dropped}");
    assert!(
        slow < base * 3 + Duration::from_millis(2),
        "requests slowed down by a stalled audit writer: {slow:?} against {base:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_limit_is_recorded_but_never_refuses() {
    let mock = Mock::start(&[]);
    let text = policy("audit.jsonl").replace(
        "    when GET \"/v1/models\"\n    auth users\n",
        "    when GET \"/v1/models\"\n    auth users\n    limit rate 1/min per key shadow\n",
    );
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap();
        assert_eq!(r.status(), 200, "a shadow limit never refuses");
    }
    let records = wait_lines(&gw.path("audit.jsonl"), 3).await;
    let shadowed: Vec<usize> = records.iter().map(|r| r["shadow_refused"].as_array().unwrap().len()).collect();
    assert_eq!(shadowed, vec![0, 1, 1], "{records:?}");
    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"result="shadow_refused"} 2"#), "{metrics}");
}

/// Every audit line names its W3C trace: the client's trace when it sent a `traceparent`
/// (the same trace the upstream was sent), a trace gw started otherwise, refusals included.
#[tokio::test(flavor = "multi_thread")]
async fn every_audit_line_names_its_trace() {
    let mock = Mock::start(&[]);
    let text = policy("logs/audit.jsonl");
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    let c = reqwest::Client::new();
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = c
        .get(gw.url("/v1/models"))
        .header("x-api-key", "sk-test-1")
        .header("traceparent", format!("00-{client_trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    traced.text().await.unwrap();
    let fresh = c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap();
    fresh.text().await.unwrap();
    assert_eq!(c.get(gw.url("/v1/models")).header("x-api-key", "sk-wrong").send().await.unwrap().status(), 401);
    assert_eq!(c.get(gw.url("/nope")).header("traceparent", "garbage").send().await.unwrap().status(), 404);

    let records = wait_lines(&gw.path("logs/audit.jsonl"), 4).await;
    assert_eq!(records.len(), 4, "{records:?}");
    let hex32 = |v: &Value| v.as_str().is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    for r in &records {
        assert!(hex32(&r["trace_id"]), "no trace id in {r}");
    }
    assert_eq!(records[0]["trace_id"], client_trace);
    assert_ne!(records[1]["trace_id"], client_trace);
    // The upstream was sent the trace the audit line names.
    let seen = mock.requests().await;
    let sent = common::header_of(&seen[1], "traceparent");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains(records[1]["trace_id"].as_str().unwrap()), "{sent:?} vs {}", records[1]);
    assert_ne!(records[2]["trace_id"], records[3]["trace_id"]);
}
