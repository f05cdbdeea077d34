//! The audit log on its own: the JSON line, the file sink (rotation, reopen), the writer
//! (prompt flush, drain on shutdown) and the bounded channel under a stalled writer.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use gw_runtime::audit::{Audit, AuditRecord, AuditSink, FileSink};
use prometheus::IntCounter;
use serde_json::Value;

fn counter() -> IntCounter {
    IntCounter::new("gw_audit_dropped_total", "Audit records dropped").expect("valid counter")
}

fn full_record(i: u64) -> AuditRecord {
    AuditRecord {
        time: UNIX_EPOCH + Duration::from_millis(1_795_446_245_123 + i),
        request_id: format!("req-{i}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        key_name: Some("alice".into()),
        tenant: Some("acme".into()),
        client_ip: "10.1.2.3".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        route: Some("chat".into()),
        upstream: Some("openai".into()),
        target: Some("api.openai.com:443".into()),
        status: 200,
        latency_ms: 12.5,
        upstream_ms: Some(10.25),
        request_bytes: 345,
        response_bytes: 6789,
        streamed: true,
        chunks: 42,
        cache: Some("hit"),
        prompt_tokens: Some(17),
        completion_tokens: Some(99),
        error: None,
        shadow_refused: vec![],
        policy_generation: 3,
    }
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("each line is one JSON object")).collect()
}

/// Wait until `path` holds `n` lines (the writer flushes when its queue is empty).
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = lines(path);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn one_line_per_record_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/nested/audit.jsonl");
    let sink = FileSink::open(&path, None).unwrap();
    let dropped = counter();
    let (audit, handle) = Audit::start(Box::new(sink), 16, dropped.clone());
    audit.record(full_record(0));
    let mut minimal = AuditRecord {
        request_id: "req-min".into(),
        client_ip: "::1".into(),
        method: "GET".into(),
        path: "/nope".into(),
        status: 404,
        latency_ms: 0.25,
        error: Some("no_route".into()),
        ..AuditRecord::default()
    };
    minimal.time = UNIX_EPOCH;
    audit.clone().record(minimal);
    handle.shutdown().await;

    let got = lines(&path);
    assert_eq!(got.len(), 2);
    let keys: Vec<&str> = got[0].as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "time",
        "request_id",
        "trace_id",
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
        "cache",
        "prompt_tokens",
        "completion_tokens",
        "error",
        "shadow_refused",
        "policy_generation",
    ];
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);

    let full = &got[0];
    assert_eq!(full["time"], "2026-11-23T15:04:05.123Z");
    assert_eq!(full["request_id"], "req-0");
    assert_eq!(full["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(full["cache"], "hit");
    assert_eq!(full["key_name"], "alice");
    assert_eq!(full["tenant"], "acme");
    assert_eq!(full["client_ip"], "10.1.2.3");
    assert_eq!(full["method"], "POST");
    assert_eq!(full["path"], "/v1/chat/completions");
    assert_eq!(full["route"], "chat");
    assert_eq!(full["upstream"], "openai");
    assert_eq!(full["target"], "api.openai.com:443");
    assert_eq!(full["status"], 200);
    assert_eq!(full["latency_ms"], 12.5);
    assert_eq!(full["upstream_ms"], 10.25);
    assert_eq!(full["request_bytes"], 345);
    assert_eq!(full["response_bytes"], 6789);
    assert_eq!(full["streamed"], true);
    assert_eq!(full["chunks"], 42);
    assert_eq!(full["prompt_tokens"], 17);
    assert_eq!(full["completion_tokens"], 99);
    assert_eq!(full["error"], Value::Null);
    assert_eq!(full["policy_generation"], 3);

    let min = &got[1];
    assert_eq!(min["time"], "1970-01-01T00:00:00.000Z");
    assert_eq!(min["status"], 404);
    assert_eq!(min["error"], "no_route");
    for absent in ["key_name", "tenant", "route", "upstream", "target", "upstream_ms", "prompt_tokens"] {
        assert_eq!(min[absent], Value::Null, "{absent}");
    }
    assert_eq!(min.as_object().unwrap().len(), expected.len(), "absent fields are written as null");
    assert_eq!(dropped.get(), 0);
}

#[test]
fn lines_reach_the_file_without_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (audit, _handle) = Audit::start(Box::new(FileSink::open(&path, None).unwrap()), 16, counter());
    audit.record(full_record(1));
    assert_eq!(wait_lines(&path, 1).len(), 1, "flushed once the queue is empty");
    audit.record(full_record(2));
    assert_eq!(wait_lines(&path, 2).len(), 2);
}

#[test]
fn file_sink_appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "{\"old\":1}\n").unwrap();
    let mut sink = FileSink::open(&path, None).unwrap();
    sink.write(b"{\"new\":2}\n").unwrap();
    sink.flush().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"old\":1}\n{\"new\":2}\n");
}

#[test]
fn file_sink_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut sink = FileSink::open(&path, Some(1000)).unwrap().keep(3);
    let line = |i: usize| format!("{{\"n\":{i:04},\"pad\":\"{}\"}}\n", "x".repeat(80));
    let len = line(0).len();
    assert_eq!(len, 100);
    for i in 0..55 {
        sink.write(line(i).as_bytes()).unwrap();
    }
    sink.flush().unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let rotated = |n: usize| dir.path().join(format!("audit.jsonl.{n}"));
    // 10 lines fit in 1000 bytes: files of lines 50..55 (current), 40..50, 30..40, 20..30.
    assert_eq!(read(&path), (50..55).map(line).collect::<String>());
    assert_eq!(read(&rotated(1)), (40..50).map(line).collect::<String>());
    assert_eq!(read(&rotated(2)), (30..40).map(line).collect::<String>());
    assert_eq!(read(&rotated(3)), (20..30).map(line).collect::<String>());
    assert!(!rotated(4).exists(), "keeps 3 rotated files");
}

#[tokio::test]
async fn writer_rotates_the_file_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = FileSink::open(&path, Some(2_000)).unwrap().keep(50);
    let (audit, handle) = Audit::start(Box::new(sink), 64, counter());
    for i in 0..40 {
        audit.record(full_record(i));
    }
    handle.shutdown().await;
    assert!(dir.path().join("audit.jsonl.1").exists(), "rotated to .1");
    // Oldest first: the highest number, down to .1, then the current file.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    let rank = |p: &PathBuf| p.extension().and_then(|e| e.to_str()?.parse::<u32>().ok()).unwrap_or(0);
    files.sort_by_key(|p| std::cmp::Reverse(rank(p)));
    assert!(files.len() > 2);
    let mut ids = Vec::new();
    for p in &files {
        assert!(std::fs::metadata(p).unwrap().len() <= 2_000, "{} within the limit", p.display());
        ids.extend(lines(p).iter().map(|l| l["request_id"].as_str().unwrap().to_string()));
    }
    // No line is lost or cut at a rotation.
    assert_eq!(ids, (0..40).map(|i| format!("req-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn reopen_after_the_file_was_moved_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let moved = dir.path().join("audit.jsonl.old");
    let (audit, handle) = Audit::start(Box::new(FileSink::open(&path, None).unwrap()), 16, counter());
    audit.record(full_record(1));
    assert_eq!(wait_lines(&path, 1).len(), 1);

    // logrotate: move the file away, then SIGUSR1.
    std::fs::rename(&path, &moved).unwrap();
    handle.reopen();
    audit.record(full_record(2));
    audit.record(full_record(3));
    handle.shutdown().await;

    let old = lines(&moved);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["request_id"], "req-1");
    let new = lines(&path);
    assert_eq!(new.iter().map(|l| l["request_id"].as_str().unwrap()).collect::<Vec<_>>(), ["req-2", "req-3"]);
}

/// A sink that keeps lines in memory, optionally slowly.
#[derive(Clone, Default)]
struct MemSink {
    lines: Arc<Mutex<Vec<Vec<u8>>>>,
    delay: Duration,
}

impl AuditSink for MemSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.lines.lock().unwrap().push(line.to_vec());
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn shutdown_drains_the_queue() {
    let sink = MemSink { delay: Duration::from_micros(500), ..MemSink::default() };
    let dropped = counter();
    let (audit, handle) = Audit::start(Box::new(sink.clone()), 1000, dropped.clone());
    for i in 0..500 {
        audit.record(full_record(i));
    }
    assert!(sink.lines.lock().unwrap().len() < 500, "the slow writer is behind");
    handle.shutdown().await;
    let written = sink.lines.lock().unwrap().clone();
    assert_eq!(written.len(), 500);
    for (i, line) in written.iter().enumerate() {
        assert_eq!(line.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["request_id"], format!("req-{i}"), "in order");
    }
    assert_eq!(dropped.get(), 0);

    // After shutdown records are dropped and counted, and a second shutdown returns at once.
    audit.record(full_record(9));
    assert_eq!(dropped.get(), 1);
    handle.shutdown().await;
}

/// A sink whose first write blocks until released.
struct StalledSink {
    entered: std_mpsc::Sender<()>,
    release: std_mpsc::Receiver<()>,
    stalled: bool,
    lines: Arc<Mutex<usize>>,
}

impl AuditSink for StalledSink {
    fn write(&mut self, _line: &[u8]) -> io::Result<()> {
        if self.stalled {
            self.stalled = false;
            let _ = self.entered.send(());
            let _ = self.release.recv();
        }
        *self.lines.lock().unwrap() += 1;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stalled_writer_never_slows_record_and_drops_are_counted() {
    const CAPACITY: usize = 1024;
    const RECORDS: usize = 100_000;
    let (entered_tx, entered_rx) = std_mpsc::channel();
    let (release_tx, release_rx) = std_mpsc::channel();
    let written = Arc::new(Mutex::new(0));
    let sink = StalledSink { entered: entered_tx, release: release_rx, stalled: true, lines: written.clone() };
    let dropped = counter();
    let (audit, handle) = Audit::start(Box::new(sink), CAPACITY, dropped.clone());

    audit.record(full_record(0));
    entered_rx.recv_timeout(Duration::from_secs(5)).expect("the writer took the first record and stalled");

    let records: Vec<AuditRecord> = (1..=RECORDS as u64).map(full_record).collect();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for r in records {
        let t = Instant::now();
        audit.record(r);
        slowest = slowest.max(t.elapsed());
    }
    let elapsed = start.elapsed();
    eprintln!("{RECORDS} records with a stalled writer: {elapsed:?} in all, slowest {slowest:?}");
    assert!(elapsed < Duration::from_millis(900), "record() stayed fast: {elapsed:?}");
    assert_eq!(dropped.get(), (RECORDS - CAPACITY) as u64, "everything past the channel's capacity is dropped");

    release_tx.send(()).unwrap();
    handle.shutdown().await;
    assert_eq!(*written.lock().unwrap(), 1 + CAPACITY, "the queued records were written");
    assert_eq!(dropped.get(), (RECORDS - CAPACITY) as u64);
}

/// A sink whose writes fail: records are counted as dropped, nothing panics.
struct FailingSink;

impl AuditSink for FailingSink {
    fn write(&mut self, _line: &[u8]) -> io::Result<()> {
        Err(io::Error::other("disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::other("disk full"))
    }
    fn reopen(&mut self) -> io::Result<()> {
        Err(io::Error::other("no such directory"))
    }
}

#[tokio::test]
async fn write_errors_count_as_dropped_and_do_not_stop_the_writer() {
    let dropped = counter();
    let (audit, handle) = Audit::start(Box::new(FailingSink), 16, dropped.clone());
    for i in 0..10 {
        audit.record(full_record(i));
    }
    handle.reopen();
    handle.shutdown().await;
    assert_eq!(dropped.get(), 10);
}
