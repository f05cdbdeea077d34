//! The audit log: one JSON line per request, written off the request path.
//!
//! [`Audit::record`] is what the request pipeline calls: it hands the record to a bounded
//! channel with `try_send` and returns at once. A full (or closed) channel drops the record and
//! counts it in the `dropped` counter (exported as `gw_audit_dropped_total`); a request never
//! waits for the audit log.
//!
//! One background writer thread (`gw-audit`) owns the [`AuditSink`]: it serialises each record
//! to one JSON line, writes it, and flushes whenever the channel is momentarily empty, so lines
//! reach the file promptly when traffic is light without one syscall per record under load. It
//! is an OS thread rather than a tokio task because file I/O blocks: a slow disk must not hold a
//! runtime worker. [`AuditHandle::reopen`] asks it to reopen its file (SIGUSR1, after logrotate
//! moved the file away) and [`AuditHandle::shutdown`] drains what is queued and flushes.
//!
//! There is no field for a key: [`AuditRecord`] carries the key's *name* only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::{Serialize, Serializer};
use tokio::sync::{mpsc, oneshot};

/// Default capacity of the channel between the request path and the writer.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Rotated files kept by [`FileSink`] unless told otherwise (`audit.jsonl.1` … `.5`).
pub const DEFAULT_KEEP: usize = 5;

/// Write errors are logged at most once per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One request, as written to the audit log. Every field is always present in the JSON line
/// (absent values as `null`), in this order.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When the request began; written as RFC 3339 UTC with milliseconds
    /// (`2026-11-23T15:04:05.123Z`).
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    pub request_id: String,
    /// The W3C trace id (32 hex digits): the client's `traceparent` trace, or the one gw
    /// started and sent upstream. Every record has one.
    pub trace_id: String,
    /// The name of the key that authenticated the request, never the key itself.
    pub key_name: Option<String>,
    pub tenant: Option<String>,
    pub client_ip: String,
    pub method: String,
    /// The request path. Pass it without the query string: a query may carry credentials.
    pub path: String,
    pub route: Option<String>,
    pub upstream: Option<String>,
    /// The authority (`host:port`) of the upstream target that answered.
    pub target: Option<String>,
    pub status: u16,
    /// Total time, request head to the end of the response body, in milliseconds.
    pub latency_ms: f64,
    /// Time the upstream took to answer with a response head, in milliseconds.
    pub upstream_ms: Option<f64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub streamed: bool,
    pub chunks: u64,
    /// On a route with a `cache`: `hit` (answered from the cache, no upstream), `miss`
    /// (forwarded) or `bypass` (forwarded, the cache not consulted); else `null`.
    pub cache: Option<&'static str>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// An error kind such as `upstream_timeout`; never a message with request data in it.
    pub error: Option<String>,
    /// Ids of `shadow` limits that would have refused the request (it was not refused).
    pub shadow_refused: Vec<String>,
    pub policy_generation: u64,
}

impl Default for AuditRecord {
    /// An empty record stamped with the current time.
    fn default() -> Self {
        AuditRecord {
            time: SystemTime::now(),
            request_id: String::new(),
            trace_id: String::new(),
            key_name: None,
            tenant: None,
            client_ip: String::new(),
            method: String::new(),
            path: String::new(),
            route: None,
            upstream: None,
            target: None,
            status: 0,
            latency_ms: 0.0,
            upstream_ms: None,
            request_bytes: 0,
            response_bytes: 0,
            streamed: false,
            chunks: 0,
            cache: None,
            prompt_tokens: None,
            completion_tokens: None,
            error: None,
            shadow_refused: Vec::new(),
            policy_generation: 0,
        }
    }
}

fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(*t))
}

impl AuditRecord {
    /// The record as one JSON object, exactly the bytes `serde_json::to_writer` writes for it
    /// (a test holds the two equal). Written by hand because serde_json escapes every key and
    /// value byte by byte, which was most of the writer thread's time per record; here a string
    /// without a byte to escape is copied whole, and anything else goes through serde_json.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let AuditRecord {
            time,
            request_id,
            trace_id,
            key_name,
            tenant,
            client_ip,
            method,
            path,
            route,
            upstream,
            target,
            status,
            latency_ms,
            upstream_ms,
            request_bytes,
            response_bytes,
            streamed,
            chunks,
            cache,
            prompt_tokens,
            completion_tokens,
            error,
            shadow_refused,
            policy_generation,
        } = self;
        out.extend_from_slice(b"{\"time\":");
        json_str(out, &rfc3339_millis(*time));
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, request_id);
        out.extend_from_slice(b",\"trace_id\":");
        json_str(out, trace_id);
        out.extend_from_slice(b",\"key_name\":");
        json_opt_str(out, key_name.as_deref());
        out.extend_from_slice(b",\"tenant\":");
        json_opt_str(out, tenant.as_deref());
        out.extend_from_slice(b",\"client_ip\":");
        json_str(out, client_ip);
        out.extend_from_slice(b",\"method\":");
        json_str(out, method);
        out.extend_from_slice(b",\"path\":");
        json_str(out, path);
        out.extend_from_slice(b",\"route\":");
        json_opt_str(out, route.as_deref());
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, upstream.as_deref());
        out.extend_from_slice(b",\"target\":");
        json_opt_str(out, target.as_deref());
        out.extend_from_slice(b",\"status\":");
        json_value(out, status);
        out.extend_from_slice(b",\"latency_ms\":");
        json_value(out, latency_ms);
        out.extend_from_slice(b",\"upstream_ms\":");
        json_value(out, upstream_ms);
        out.extend_from_slice(b",\"request_bytes\":");
        json_value(out, request_bytes);
        out.extend_from_slice(b",\"response_bytes\":");
        json_value(out, response_bytes);
        out.extend_from_slice(b",\"streamed\":");
        json_value(out, streamed);
        out.extend_from_slice(b",\"chunks\":");
        json_value(out, chunks);
        out.extend_from_slice(b",\"cache\":");
        json_opt_str(out, *cache);
        out.extend_from_slice(b",\"prompt_tokens\":");
        json_value(out, prompt_tokens);
        out.extend_from_slice(b",\"completion_tokens\":");
        json_value(out, completion_tokens);
        out.extend_from_slice(b",\"error\":");
        json_opt_str(out, error.as_deref());
        out.extend_from_slice(b",\"shadow_refused\":[");
        for (i, id) in shadow_refused.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, id);
        }
        out.extend_from_slice(b"],\"policy_generation\":");
        json_value(out, policy_generation);
        out.push(b'}');
    }
}

/// A JSON string as serde_json writes it: copied between quotes when no byte needs escaping
/// (serde_json escapes exactly the control bytes, `"` and `\\`), else written by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        json_value(out, s);
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A number, bool or escaped string, written by serde_json (its number formatting is the one
/// the serde path writes). Writing to a Vec cannot fail.
fn json_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Format a time as RFC 3339 in UTC with milliseconds: `2026-11-23T15:04:05.123Z`.
/// Times before 1970 are written as the epoch.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    // Digits written in place: `format!` cost more than the rest of an audit line's fields.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y.min(9999));
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(millis));
    String::from_utf8_lossy(&out).into_owned()
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Where audit lines go. `write` gets one complete line, newline included. Called from the
/// writer thread only, so an implementation may block.
pub trait AuditSink: Send + 'static {
    fn write(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// Close and reopen the destination (for a file: the same path, which logrotate may have
    /// moved away). Sinks without such a notion do nothing.
    fn reopen(&mut self) -> io::Result<()>;
}

/// A JSON-lines file, opened for appending (parent directories created), buffered, with
/// optional rotation by size: when a line would take the file past `rotate_bytes`, the file is
/// renamed `NAME.1` (an existing `.1` becomes `.2`, and so on, up to `keep` files) and a new
/// file is started.
pub struct FileSink {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    written: u64,
    rotate_bytes: Option<u64>,
    keep: usize,
    /// When rotation last failed: it is not tried again for [`WARN_EVERY`], and lines keep
    /// going to the current file meanwhile.
    rotate_failed: Option<Instant>,
}

const BUFFER: usize = 64 * 1024;

impl FileSink {
    /// Open (create) `path` for appending. `rotate_bytes` of `None` or 0 never rotates.
    pub fn open(path: impl Into<PathBuf>, rotate_bytes: Option<u64>) -> io::Result<FileSink> {
        let path = path.into();
        let mut sink = FileSink {
            path,
            file: None,
            written: 0,
            rotate_bytes: rotate_bytes.filter(|b| *b > 0),
            keep: DEFAULT_KEEP,
            rotate_failed: None,
        };
        sink.open_file()?;
        Ok(sink)
    }

    /// How many rotated files to keep (at least 1).
    #[must_use]
    pub fn keep(mut self, keep: usize) -> FileSink {
        self.keep = keep.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_file(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(BufWriter::with_capacity(BUFFER, file));
        Ok(())
    }

    fn close_file(&mut self) -> io::Result<()> {
        match self.file.take() {
            Some(mut f) => f.flush(),
            None => Ok(()),
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let flushed = self.close_file();
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.path.exists() {
            fs::rename(&self.path, self.rotated(1))?;
        }
        self.open_file()?;
        flushed
    }
}

impl AuditSink for FileSink {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if let Some(limit) = self.rotate_bytes {
            let due = self.written > 0 && self.written + len > limit;
            let backing_off = self.rotate_failed.is_some_and(|t| t.elapsed() < WARN_EVERY);
            if due && !backing_off {
                match self.rotate() {
                    Ok(()) => self.rotate_failed = None,
                    Err(e) => {
                        self.rotate_failed = Some(Instant::now());
                        tracing::warn!("audit log: rotating {} failed: {e}", self.path.display());
                    }
                }
            }
        }
        if self.file.is_none() {
            // A failed reopen or rotation left no file: try again, at most once per line.
            self.open_file()?;
        }
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("audit file is not open"))?;
        file.write_all(line)?;
        self.written += len;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        let flushed = self.close_file();
        self.open_file()?;
        flushed
    }
}

enum Msg {
    Record(Arc<AuditRecord>),
    /// Wakes the writer to look at its flags (a reopen request).
    Wake,
    Shutdown(oneshot::Sender<()>),
}

/// How long the writer lets records gather after writing a batch: lines reach the file at
/// most this much later than they would one by one.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// The request path's handle on the audit log: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    dropped: IntCounter,
}

/// Control of the writer: reopen on SIGUSR1, drain and flush at exit. Cheap to clone.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    reopen: Arc<AtomicBool>,
}

impl Audit {
    /// Start the writer thread for `sink` with a channel of `capacity` records (at least 1).
    /// Records that find the channel full, or the writer gone, are counted in `dropped`.
    pub fn start(sink: Box<dyn AuditSink>, capacity: usize, dropped: IntCounter) -> (Audit, AuditHandle) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer =
            Writer { sink, rx, reopen: reopen.clone(), dropped: dropped.clone(), warn: WarnLimiter::default() };
        let spawned = std::thread::Builder::new().name("gw-audit".into()).spawn(move || writer.run());
        if let Err(e) = spawned {
            // The receiver went with the failed closure: every record will count as dropped.
            tracing::error!("cannot start the audit writer thread: {e}; audit records will be dropped");
        }
        (Audit { tx: tx.clone(), dropped }, AuditHandle { tx, reopen })
    }

    /// Queue one record for the writer. Never blocks: when the channel is full (or the writer
    /// has shut down) the record is dropped and counted.
    pub fn record(&self, r: impl Into<Arc<AuditRecord>>) {
        if self.tx.try_send(Msg::Record(r.into())).is_err() {
            self.dropped.inc();
        }
    }

    /// Records dropped so far (channel full, writer gone, or a failed write).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

impl AuditHandle {
    /// Ask the writer to reopen its sink (the file at the same path) before its next line.
    /// Does not wait; records already queued go to the new file.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // If the channel is full the writer is busy and sees the flag after its current line.
        let _ = self.tx.try_send(Msg::Wake);
    }

    /// Write everything queued, flush, and stop the writer; records sent after this are
    /// dropped and counted. Waits for the sink: wrap it in a timeout if the sink may hang.
    /// Calling it again (or from a clone) returns at once.
    pub async fn shutdown(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

#[derive(Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    fn warn(&mut self, what: &str, e: &io::Error) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        self.last = Some(now);
        tracing::warn!(suppressed, "audit log: {what} failed: {e}");
    }
}

struct Writer {
    sink: Box<dyn AuditSink>,
    rx: mpsc::Receiver<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: IntCounter,
    warn: WarnLimiter,
}

impl Writer {
    fn run(mut self) {
        let mut line = Vec::with_capacity(1024);
        while let Some(mut msg) = self.rx.blocking_recv() {
            // Handle messages back to back while there are any; flush once the queue is empty.
            loop {
                self.check_reopen();
                match msg {
                    Msg::Record(r) => self.write(&r, &mut line),
                    Msg::Wake => {}
                    Msg::Shutdown(done) => {
                        self.drain(&mut line);
                        let _ = done.send(());
                        return;
                    }
                }
                match self.rx.try_recv() {
                    Ok(next) => msg = next,
                    Err(_) => break,
                }
            }
            self.flush();
            // Linger before waiting again: under load records then arrive in batches, and
            // the request path does not pay a thread wake-up per record.
            std::thread::sleep(LINGER);
        }
        // Every sender is gone.
        self.flush();
    }

    /// Refuse new records, then write what is already queued and flush.
    fn drain(&mut self, line: &mut Vec<u8>) {
        self.rx.close();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Record(r) => self.write(&r, line),
                Msg::Shutdown(done) => {
                    let _ = done.send(());
                }
                Msg::Wake => {}
            }
        }
        self.check_reopen();
        self.flush();
    }

    fn check_reopen(&mut self) {
        if self.reopen.load(Ordering::Acquire) && self.reopen.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.sink.reopen() {
                self.warn.warn("reopen", &e);
            }
        }
    }

    fn write(&mut self, r: &AuditRecord, line: &mut Vec<u8>) {
        line.clear();
        r.write_json(line);
        line.push(b'\n');
        if let Err(e) = self.sink.write(line) {
            self.warn.warn("write", &e);
            self.dropped.inc();
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.sink.flush() {
            self.warn.warn("flush", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strings with every kind of byte serde_json treats specially, and some it does not.
    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9./:-]{0,40}",
            "[\\x00-\\x1f\"\\\\ \\x7f]{1,8}",
            any::<String>(),
            Just("caf\u{e9} \u{2028}\u{2029} \u{1F600} \\u0000 </script>".to_string()),
        ]
    }

    fn record() -> impl Strategy<Value = AuditRecord> {
        let strings = (
            hostile(),
            hostile(),
            proptest::option::of(hostile()),
            proptest::option::of(hostile()),
            hostile(),
            hostile(),
            hostile(),
        );
        let more = (
            proptest::option::of(hostile()),
            proptest::option::of(hostile()),
            proptest::option::of(hostile()),
            proptest::option::of(hostile()),
            proptest::collection::vec(hostile(), 0..3),
        );
        let numbers = (
            any::<u16>(),
            any::<f64>(),
            proptest::option::of(any::<f64>()),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
        );
        let rest = (
            proptest::option::of(prop_oneof![Just("hit"), Just("miss"), Just("bypass")]),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            any::<u64>(),
            0u64..5_000_000_000_000,
        );
        (strings, more, numbers, rest).prop_map(|(s, m, n, r)| AuditRecord {
            time: UNIX_EPOCH + Duration::from_millis(r.4),
            request_id: s.0,
            trace_id: s.1,
            key_name: s.2,
            tenant: s.3,
            client_ip: s.4,
            method: s.5,
            path: s.6,
            route: m.0,
            upstream: m.1,
            target: m.2,
            status: n.0,
            latency_ms: n.1,
            upstream_ms: n.2,
            request_bytes: n.3,
            response_bytes: n.4,
            streamed: n.5,
            chunks: n.6,
            cache: r.0,
            prompt_tokens: r.1,
            completion_tokens: r.2,
            error: m.3,
            shadow_refused: m.4,
            policy_generation: r.3,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The hand-written line is the serde line, byte for byte, whatever the record holds.
        #[test]
        fn the_written_line_is_what_serde_writes(r in record()) {
            let mut fast = Vec::new();
            r.write_json(&mut fast);
            let serde = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&serde));
        }
    }

    #[test]
    fn a_typical_line_is_what_serde_writes() {
        let r = AuditRecord {
            request_id: "req-1".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            key_name: Some("alpha".into()),
            tenant: Some("acme \"quoted\"\n".into()),
            client_ip: "127.0.0.1".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: 200,
            latency_ms: 1.25,
            upstream_ms: Some(f64::NAN),
            shadow_refused: vec!["route:a#0".into(), "tab\there".into()],
            cache: Some("miss"),
            ..AuditRecord::default()
        };
        let mut fast = Vec::new();
        r.write_json(&mut fast);
        assert_eq!(String::from_utf8(fast).unwrap(), serde_json::to_string(&r).unwrap());
    }

    #[test]
    fn formats_rfc3339_millis() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(at(1_700_000_000, 123)), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_millis(at(951_782_400, 7)), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339_millis(at(951_868_799, 999)), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_millis(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(at(1_795_446_245, 123)), "2026-11-23T15:04:05.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z");
    }
}
