//! Every request is counted exactly once, whatever ends it: an answer, an error, an upstream
//! timeout, the client leaving before or during the answer, or the server's shutdown. Each is
//! one `gw_requests_total` count and one audit line with its reason, and nothing stays in
//! `gw_requests_in_flight`.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{users_keys, Gw, GwSpec, Mock};
use serde_json::Value;

const POLICY: &str = r#"
gateway {
    listen        "{LISTEN}"
    admin         "{ADMIN}"
    audit         "audit.jsonl"
    drain_timeout 500ms
}
upstream mock { target "{UPSTREAM}" timeout 1s }
keys users from "keys/users.keys"
route chat {
    when POST "/v1/chat/completions"
    auth users
    to   mock
}
"#;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn start() -> (Mock, Gw) {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    (mock, gw)
}

/// A chat request as raw bytes, with extra header lines.
fn chat(id: &str, key: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-api-key: {key}\r\nx-request-id: {id}\r\n{extra}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Send a request on its own connection and read until gw closes it (`connection: close`).
fn exchange(addr: SocketAddr, mut req: Vec<u8>) -> String {
    let at = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    req.splice(at + 2..at + 2, b"connection: close\r\n".iter().copied());
    let mut s = connect(addr);
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Send a request, wait `wait` (reading the first `read` bytes of the answer, if any), leave.
fn leave_early(addr: SocketAddr, req: &[u8], read: usize, wait: Duration) {
    let mut s = connect(addr);
    s.write_all(req).unwrap();
    if read > 0 {
        let mut buf = vec![0u8; read];
        s.read_exact(&mut buf).unwrap();
    }
    std::thread::sleep(wait);
    drop(s);
}

fn admin_get(gw: &Gw, path: &str) -> String {
    exchange(gw.admin, format!("GET {path} HTTP/1.1\r\nhost: admin\r\n\r\n").into_bytes())
}

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Wait until `done` holds for the audit log (or 10 s pass), and return it.
fn wait_audit(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = audit_lines(path);
        if done(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait for `gw_requests_in_flight 0` (or 10 s), and return the metrics.
fn settled_metrics(gw: &Gw) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = admin_get(gw, "/metrics");
        if metric(&m, "gw_requests_in_flight") == Some(0.0) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_way_a_request_ends_is_counted_once_and_audited_with_its_reason() {
    let (_mock, gw) = start();
    let addr = gw.addr;
    assert!(exchange(addr, chat("end-ok", "sk-test-1", CHAT, "")).starts_with("HTTP/1.1 200"));
    assert!(exchange(addr, chat("end-401", "wrong", CHAT, "")).starts_with("HTTP/1.1 401"));
    let timeout = exchange(addr, chat("end-504", "sk-test-1", CHAT, "x-mock-delay-ms: 3000\r\n"));
    assert!(timeout.starts_with("HTTP/1.1 504"), "{timeout}");
    // Gone before the upstream's first byte.
    leave_early(addr, &chat("end-gone", "sk-test-1", CHAT, "x-mock-delay-ms: 800\r\n"), 0, Duration::from_millis(300));
    // Gone in the middle of a streamed answer.
    let stream = chat("end-mid-stream", "sk-test-1", STREAM, "x-mock-chunks: 100\r\nx-mock-chunk-delay-ms: 50\r\n");
    leave_early(addr, &stream, 12, Duration::from_millis(200));

    let ids = ["end-ok", "end-401", "end-504", "end-gone", "end-mid-stream"];
    let lines = wait_audit(&gw.path("audit.jsonl"), |l| ids.iter().all(|id| l.iter().any(|r| r["request_id"] == *id)));
    let by_id = |id: &str| -> Vec<&Value> { lines.iter().filter(|r| r["request_id"] == id).collect() };
    let want: [(&str, u64, Value); 5] = [
        ("end-ok", 200, Value::Null),
        ("end-401", 401, "invalid_api_key".into()),
        ("end-504", 504, "upstream_timeout".into()),
        ("end-gone", 499, "client_closed".into()),
        ("end-mid-stream", 200, "response_incomplete".into()),
    ];
    for (id, status, error) in want {
        let records = by_id(id);
        assert_eq!(records.len(), 1, "{id}: one audit line, got {records:#?}");
        assert_eq!(records[0]["status"], status, "{id}: {}", records[0]);
        assert_eq!(records[0]["error"], error, "{id}: {}", records[0]);
        assert_eq!(records[0]["route"], "chat", "{id}");
    }
    assert_eq!(by_id("end-gone")[0]["key_name"], "user-1", "what was learnt before the client left is kept");

    let m = settled_metrics(&gw);
    assert_eq!(metric(&m, "gw_requests_in_flight"), Some(0.0), "{m}");
    for (status, n) in [("200", 2.0), ("401", 1.0), ("504", 1.0), ("499", 1.0)] {
        let name = format!("gw_requests_total{{route=\"chat\",status=\"{status}\"}}");
        assert_eq!(metric(&m, &name), Some(n), "{name}:\n{m}");
    }
}

#[test]
fn a_thousand_early_aborts_leave_nothing_in_flight() {
    let (_mock, gw) = start();
    let addr = gw.addr;
    let req = chat("abort", "sk-test-1", CHAT, "x-mock-delay-ms: 2000\r\n");
    // 1,000 clients, 50 at a time, each leaving 100 ms after sending its request.
    std::thread::scope(|scope| {
        for batch in 0..50 {
            let req = &req;
            scope.spawn(move || {
                for _ in 0..20 {
                    leave_early(addr, req, 0, Duration::from_millis(100));
                }
                batch
            });
        }
    });
    let m = settled_metrics(&gw);
    assert_eq!(metric(&m, "gw_requests_in_flight"), Some(0.0), "requests leaked in flight:\n{m}");
    let counted = metric(&m, "gw_requests_total{route=\"chat\",status=\"499\"}").unwrap_or(0.0) as usize;
    let lines = wait_audit(&gw.path("audit.jsonl"), |l| l.len() >= counted);
    let audited = lines.iter().filter(|r| r["error"] == "client_closed").count();
    println!("1000 early aborts: {counted} counted as 499, {audited} audited as client_closed");
    // A client can leave before gw has read its head: that is no request.
    assert!(counted >= 950, "only {counted} of 1000 aborted requests counted");
    let all: f64 = m
        .lines()
        .filter(|l| l.starts_with("gw_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(all as usize, counted, "every aborted request is a 499:\n{m}");
    assert_eq!(audited, counted, "each counted request has one audit line");
    assert_eq!(lines.len(), counted, "and nothing else was audited");
}

#[test]
fn a_request_cut_off_by_shutdown_is_audited_as_shutdown() {
    let (_mock, mut gw) = start();
    let addr = gw.addr;
    let waiting = std::thread::spawn(move || {
        // The upstream answers after 900 ms, the drain lasts 500 ms.
        exchange(addr, chat("end-shutdown", "sk-test-1", CHAT, "x-mock-delay-ms: 900\r\n"))
    });
    std::thread::sleep(Duration::from_millis(200));
    gw.proc.signal(15);
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(10)), Some(0), "{}", gw.proc.log());
    let answer = waiting.join().unwrap();
    assert!(answer.is_empty(), "the cut-off request got {answer:?}");
    let lines = audit_lines(&gw.path("audit.jsonl"));
    let records: Vec<&Value> = lines.iter().filter(|r| r["request_id"] == "end-shutdown").collect();
    assert_eq!(records.len(), 1, "one audit line for the cut-off request: {lines:#?}");
    assert_eq!(records[0]["error"], "shutdown", "{}", records[0]);
    assert_eq!(records[0]["status"], 499, "{}", records[0]);
}
