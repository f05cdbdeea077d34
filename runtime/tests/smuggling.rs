//! Issue 4, "What must show": malformed and smuggling-shaped HTTP/1.1 over raw TCP, slow
//! clients, header limits. Everything runs against the real `gw` binary and the mock upstream
//! (`gw mock`), so what is asserted is what a client and the upstream would actually see.
//!
//! The corpus (`corpus()`) is a table of cases: a name, the raw bytes, and what must happen.
//! Every smuggling-shaped case carries a marked second request, `GET /v1/models?smuggled=1`,
//! placed where a parser that frames the message differently from the strict reading would
//! find it. `/v1/models` is routed to the mock, so if gw ever parses the marked request as a
//! request of its own it is forwarded and the mock records it (path and query), which the
//! check catches.
//!
//! A case whose expectation gw does not meet yet carries `known_gap: Some("…")` (an
//! expected failure): it is still run and reported ("XFAIL"), but does not fail the test;
//! once gw is fixed it reports "XPASS", and the `known_gap` should be removed to tighten it.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{key_line, Gw, GwSpec, Mock};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Chat and models forwarded to the mock without auth; embeddings behind key auth (so a
/// request there is answered 401 before its body is read).
const POLICY: &str = r#"
gateway {
    listen         "{LISTEN}"
    admin          "{ADMIN}"
    header_timeout 3s
}

upstream mock {
    target  "{UPSTREAM}"
    timeout 2s
}

keys users from "keys/users.keys"

route chat {
    when POST "/v1/chat/completions"
    to   mock
}

route models {
    when GET "/v1/models"
    to   mock
}

route embeddings {
    when POST "/v1/embeddings"
    auth users
    to   mock
}
"#;

fn users_keys() -> String {
    key_line("sk-test-1", "alpha", "user-1")
}

// ---------------------------------------------------------------------------------------------
// Raw exchanges
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 response read off the wire.
#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// gw closed it (EOF), before or after our half-close.
    Closed,
    /// Reset (gw closed with unread input; a response may have been lost with it).
    Reset,
    /// Still open 3 s after we half-closed our side: gw neither answered nor hung up.
    StillOpen,
}

#[derive(Debug)]
struct Exchange {
    responses: Vec<Resp>,
    /// Bytes after the last complete response (an unparsable or partial answer).
    trailing: usize,
    end: End,
    /// We had to half-close (no EOF within the idle wait after sending everything).
    half_closed: bool,
    /// Writing the request failed (gw closed before reading all of it).
    write_failed: bool,
}

impl Exchange {
    fn finals(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).filter(|s| *s >= 200).collect()
    }

    fn describe(&self) -> String {
        let statuses: Vec<String> = self.responses.iter().map(|r| r.status.to_string()).collect();
        let mut s = format!("responses [{}]", statuses.join(", "));
        if self.trailing > 0 {
            let _ = write!(s, " +{} unparsed bytes", self.trailing);
        }
        let _ = write!(s, ", {:?}", self.end);
        if self.half_closed {
            s.push_str(" (after client half-close)");
        }
        if self.write_failed {
            s.push_str(" (write failed)");
        }
        s
    }
}

/// Send `bytes` on a fresh connection and read everything gw answers. When gw stays silent for
/// `idle` after the bytes are sent, our write side is shut down (as a client that has nothing
/// more to say), then reading goes on until EOF, a reset, or 3 s.
async fn exchange(addr: SocketAddr, bytes: &[u8], idle: Duration) -> Exchange {
    let mut s = TcpStream::connect(addr).await.expect("connect to gw");
    let _ = s.set_nodelay(true);
    let write_failed = s.write_all(bytes).await.is_err();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut half_closed = false;
    let end = loop {
        let wait = if half_closed { Duration::from_secs(3) } else { idle };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) => break End::Closed,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break End::Reset,
            Err(_) if !half_closed => {
                half_closed = true;
                let _ = s.shutdown().await;
            }
            Err(_) => break End::StillOpen,
        }
    };
    let (responses, trailing) = parse_responses(&raw);
    Exchange { responses, trailing, end, half_closed, write_failed }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Split a byte stream into HTTP/1.1 responses (1xx included); also how many bytes are left
/// over after the last complete one.
fn parse_responses(raw: &[u8]) -> (Vec<Resp>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let Some(head_len) = find(&raw[pos..], b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&raw[pos..pos + head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let Some(status) = status_line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else { break };
        if !status_line.starts_with("HTTP/1.") {
            break;
        }
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
            .collect();
        let mut p = pos + head_len + 4;
        let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if status < 200 || status == 204 || status == 304 {
            // no body
        } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            loop {
                let Some(line_len) = find(&raw[p..], b"\r\n") else { return (out, raw.len() - pos) };
                let size_text = String::from_utf8_lossy(&raw[p..p + line_len]).into_owned();
                let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
                let Ok(size) = usize::from_str_radix(&size_text, 16) else { return (out, raw.len() - pos) };
                p += line_len + 2;
                if size == 0 {
                    // trailers, then the blank line
                    let Some(end) = find(&raw[p..], b"\r\n") else { return (out, raw.len() - pos) };
                    p += end + 2;
                    break;
                }
                if raw.len() < p + size + 2 {
                    return (out, raw.len() - pos);
                }
                body.extend_from_slice(&raw[p..p + size]);
                p += size + 2;
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if raw.len() < p + len {
                return (out, raw.len() - pos);
            }
            body.extend_from_slice(&raw[p..p + len]);
            p += len;
        } else {
            body.extend_from_slice(&raw[p..]);
            p = raw.len();
        }
        out.push(Resp { status, headers, body });
        pos = p;
    }
    (out, raw.len() - pos)
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// What a case must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Refused: every final response is a 4xx (or there is none and the connection ends), and
    /// nothing at all reaches the upstream.
    Reject,
    /// The first request is a legitimate one and may be served (forwarded once, 2xx or 4xx);
    /// whatever follows it is refused (4xx or the connection ends) and never forwarded.
    FirstMayPass,
    /// N legitimate pipelined requests: each is forwarded exactly once and answered 2xx.
    Pipelined(usize),
    /// Both Transfer-Encoding and Content-Length (hyper lets Transfer-Encoding win, drops
    /// Content-Length and closes the connection after answering: RFC 9112 §6.3), or bare-LF
    /// line endings (read as line ends, then re-serialised): the request is read ONE way, at
    /// most N requests reach the upstream, never the marked one, and the connection ends.
    Normalised(usize),
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
    /// Expected failure: gw does not meet `expect` yet (the reason says what happens now).
    known_gap: Option<&'static str>,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case { name, bytes: bytes.into(), expect, known_gap: None }
}

impl Case {
    /// expected_failure: mark a case gw does not pass yet; remove once gw is fixed. (None is
    /// marked today; kept so a newly found gap can be recorded without losing the case.)
    #[allow(dead_code)]
    fn known_gap(mut self, why: &'static str) -> Case {
        self.known_gap = Some(why);
        self
    }
}

const HOST: &str = "Host: localhost\r\n";
/// A valid chat completion body.
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
/// The marked request: routed to the mock, so it is recorded if gw ever runs it.
const SMUGGLED: &str = "GET /v1/models?smuggled=1 HTTP/1.1\r\nHost: localhost\r\n\r\n";
const MARKER: &str = "smuggled";

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// A POST to the chat route with `extra` header lines (each ending in CRLF) and `body`.
fn post(extra: &str, body: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\n{HOST}Content-Type: application/json\r\n{extra}\r\n{body}")
}

/// A GET of the models route with `extra` header lines.
fn get(extra: &str) -> String {
    format!("GET /v1/models HTTP/1.1\r\n{HOST}{extra}\r\n")
}

/// CL.TE: a chunked body ending, then the marked request, all covered by Content-Length. A
/// Content-Length reader sees one request; a chunked reader sees the marked one next.
/// `te` holds the Transfer-Encoding line(s) (obfuscated or not).
fn cl_te(te: &str) -> String {
    let body = format!("{}0\r\n\r\n{SMUGGLED}", chunk(BODY));
    post(&format!("Content-Length: {}\r\n{te}", body.len()), &body)
}

/// TE.CL: the marked request inside a chunk; Content-Length covers only the chunk-size line,
/// so a Content-Length reader sees the marked request next.
fn te_cl(te: &str) -> String {
    let body = format!("{}0\r\n\r\n", chunk(SMUGGLED));
    let size_line = format!("{:x}\r\n", SMUGGLED.len()).len();
    post(&format!("{te}Content-Length: {size_line}\r\n"), &body)
}

/// The chat body, then the marked request right after it, with `cl` as the Content-Length
/// value: a reader taking BODY's length sees the marked request next.
fn cl_value(cl: &str) -> String {
    post(&format!("Content-Length: {cl}\r\n"), &format!("{BODY}{SMUGGLED}"))
}

/// Chunked POST with a raw (possibly broken) chunked body.
fn chunked(body: &str) -> String {
    post("Transfer-Encoding: chunked\r\n", body)
}

// Known gaps (expected failures), found by this corpus; see the cases marked `expected_failure`.

fn corpus() -> Vec<Case> {
    use Expect::*;
    let n = BODY.len();
    let s = SMUGGLED.len();
    vec![
        // --- Content-Length vs Transfer-Encoding ---------------------------------------------
        case("cl_te", cl_te("Transfer-Encoding: chunked\r\n"), Normalised(1)),
        case("te_cl", te_cl("Transfer-Encoding: chunked\r\n"), Normalised(1)),
        case("te_xchunked_with_cl", cl_te("Transfer-Encoding: xchunked\r\n"), Reject),
        case(
            "te_xchunked_alone",
            post("Transfer-Encoding: xchunked\r\n", &format!("{}0\r\n\r\n{SMUGGLED}", chunk(BODY))),
            Reject,
        ),
        case("te_tab_chunked_with_cl", cl_te("Transfer-Encoding:\tchunked\r\n"), Normalised(1)),
        case("te_leading_space_chunked_with_cl", cl_te("Transfer-Encoding:  chunked\r\n"), Normalised(1)),
        case("te_chunked_identity_with_cl", cl_te("Transfer-Encoding: chunked, identity\r\n"), Reject),
        case("te_chunked_identity_alone", post("Transfer-Encoding: chunked, identity\r\n", &chunk(SMUGGLED)), Reject),
        case(
            "te_duplicate_last_not_chunked",
            cl_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
            Reject,
        ),
        case(
            "te_duplicate_chunked_last_with_cl",
            cl_te("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"),
            Reject,
        ),
        case(
            "te_chunked_twice",
            post("Transfer-Encoding: chunked, chunked\r\n", &format!("{}0\r\n\r\n", chunk(SMUGGLED))),
            Reject,
        ),
        case("te_vertical_tab_with_cl", cl_te("Transfer-Encoding:\x0bchunked\r\n"), Reject),
        case("te_uppercase_with_cl", cl_te("TRANSFER-ENCODING: CHUNKED\r\n"), Normalised(1)),
        case("te_cl_expect_100", cl_te("Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n"), Normalised(1)),
        // --- Content-Length values -------------------------------------------------------------
        case(
            "cl_duplicate_conflicting",
            post(&format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + s), &format!("{BODY}{SMUGGLED}")),
            Reject,
        ),
        case("cl_list_conflicting", cl_value(&format!("{n}, {}", n + s)), Reject),
        case("cl_plus_sign", cl_value(&format!("+{n}")), Reject),
        case("cl_negative", cl_value("-1"), Reject),
        case("cl_hex", cl_value(&format!("0x{n:x}")), Reject),
        case("cl_inner_space", cl_value(&format!("{n} {s}")), Reject),
        // 2^64 + n: a parser that wraps reads n.
        case("cl_overflow", cl_value(&((1u128 << 64) + n as u128).to_string()), Reject),
        case("cl_empty", cl_value(""), Reject),
        // --- chunk framing ---------------------------------------------------------------------
        case("chunk_size_0x_prefix", chunked(&format!("0x{s:x}\r\n{SMUGGLED}\r\n0\r\n\r\n")), Reject),
        case("chunk_size_negative", chunked(&format!("-{s:x}\r\n{SMUGGLED}\r\n0\r\n\r\n")), Reject),
        case("chunk_size_overflow", chunked(&format!("ffffffffffffffffff{s:x}\r\n{SMUGGLED}\r\n0\r\n\r\n")), Reject),
        case("chunk_ext_bare_lf", chunked(&format!("{s:x};ext=1\n{SMUGGLED}\r\n0\r\n\r\n")), Reject),
        case(
            "chunk_ext_oversize",
            chunked(&format!("{s:x};{}\r\n{SMUGGLED}\r\n0\r\n\r\n", "a=b;".repeat(5000))),
            Reject,
        ),
        case("chunk_data_missing_crlf", chunked(&format!("{n:x}\r\n{BODY}0\r\n\r\n{SMUGGLED}")), Reject),
        // "0\r\n" then no blank line: the marked request is where the trailer section goes.
        case("chunk_missing_final_crlf", chunked(&format!("{}0\r\n{SMUGGLED}", chunk(BODY))), Reject),
        // --- line endings, folding, bad bytes in the head -------------------------------------
        case("bare_lf_in_headers", cl_te("X-Pad: a\nTransfer-Encoding: chunked\r\n"), Normalised(1)),
        case(
            "bare_lf_everywhere",
            format!("GET /v1/models HTTP/1.1\nHost: localhost\nContent-Length: {s}\n\n{SMUGGLED}"),
            Normalised(1),
        ),
        case("bare_cr_in_headers", cl_te("X-Pad: a\rTransfer-Encoding: chunked\r\n"), Reject),
        case("obs_fold_hides_te", cl_te("X-Pad: a\r\n Transfer-Encoding: chunked\r\n"), Reject),
        case("obs_fold_te_value", cl_te("Transfer-Encoding:\r\n\tchunked\r\n"), Reject),
        case("nul_in_header_value", get("X-Pad: a\0b\r\n"), Reject),
        case("nul_after_te_value", cl_te("Transfer-Encoding: chunked\0\r\n"), Reject),
        case("space_before_colon_te", cl_te("Transfer-Encoding : chunked\r\n"), Reject),
        case("header_name_with_space", cl_te("Transfer Encoding: chunked\r\n"), Reject),
        case("header_name_ctl_char", cl_te("Transfer-Encoding\x01: chunked\r\n"), Reject),
        case("header_without_colon", cl_te("X-Pad chunked\r\nTransfer-Encoding: chunked\r\n"), Reject),
        // --- request line, Host ------------------------------------------------------------------
        case("absolute_form_other_host", format!("GET http://evil.example/v1/models HTTP/1.1\r\n{HOST}\r\n"), Reject),
        case("host_duplicated", get("Host: evil.example\r\n"), Reject),
        case("host_missing_http11", "GET /v1/models HTTP/1.1\r\n\r\n", Reject),
        case(
            "http10_with_te",
            format!(
                "POST /v1/chat/completions HTTP/1.0\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n{SMUGGLED}",
                chunk(BODY)
            ),
            Reject,
        ),
        case("request_line_two_spaces", format!("GET  /v1/models HTTP/1.1\r\n{HOST}\r\n"), Reject),
        case("lowercase_method", format!("get /v1/models?{MARKER}=1 HTTP/1.1\r\n{HOST}\r\n"), Reject),
        case("invalid_version", format!("GET /v1/models HTTP/1.2\r\n{HOST}\r\n"), Reject),
        case("http09_request_line", "GET /v1/models\r\n\r\n", Reject),
        case("nul_in_request_target", format!("GET /v1/models\0 HTTP/1.1\r\n{HOST}\r\n"), Reject),
        case(
            "oversize_request_line",
            format!("GET /v1/models?pad={} HTTP/1.1\r\n{HOST}\r\n", "a".repeat(100_000)),
            Reject,
        ),
        // --- pipelining, Expect, early answers ---------------------------------------------------
        case(
            "pipelined_legit",
            format!("{}{}", post(&format!("Content-Length: {n}\r\n"), BODY), get("")),
            Pipelined(2),
        ),
        case("pipelined_then_cl_te", format!("{}{}", get(""), cl_te("Transfer-Encoding: chunked\r\n")), Normalised(2)),
        case(
            "pipelined_then_obs_fold",
            format!("{}{}", get(""), cl_te("X-Pad: a\r\n Transfer-Encoding: chunked\r\n")),
            FirstMayPass,
        ),
        // 401 before the body is read: the body (the marked request) must be drained, not run.
        case(
            "early_401_expect_100_body_is_request",
            format!(
                "POST /v1/embeddings HTTP/1.1\r\n{HOST}Expect: 100-continue\r\nContent-Length: {s}\r\n\r\n{SMUGGLED}"
            ),
            Reject,
        ),
        case(
            "early_401_body_is_request",
            format!("POST /v1/embeddings HTTP/1.1\r\n{HOST}Content-Length: {s}\r\n\r\n{SMUGGLED}"),
            Reject,
        ),
        // A GET whose Content-Length body is the marked request: it is body, never a request.
        case(
            "expect_100_get_body_is_request",
            format!("{}{SMUGGLED}", get(&format!("Expect: 100-continue\r\nContent-Length: {s}\r\n"))),
            FirstMayPass,
        ),
        case("expect_unknown_value", post(&format!("Expect: 200-ok\r\nContent-Length: {n}\r\n"), BODY), FirstMayPass),
    ]
}

/// Judge one case; Err(reason) when it fails.
fn judge(case: &Case, ex: &Exchange, records: &[Value]) -> Result<(), String> {
    let recs: Vec<String> = records.iter().map(describe_record).collect();
    let smuggled: Vec<&String> = recs.iter().filter(|r| r.contains(MARKER)).collect();
    if !smuggled.is_empty() {
        return Err(format!("SMUGGLED: the marked request reached the upstream: {smuggled:?}"));
    }
    if ex.end == End::StillOpen {
        return Err("connection still open 3 s after the client half-closed".into());
    }
    let finals = ex.finals();
    match case.expect {
        Expect::Reject => {
            if !records.is_empty() {
                return Err(format!("not refused: {} request(s) forwarded upstream {recs:?}", records.len()));
            }
            if let Some(bad) = finals.iter().find(|s| !(400..500).contains(*s)) {
                return Err(format!("answered {bad}, not a 4xx"));
            }
        }
        Expect::FirstMayPass => {
            if records.len() > 1 {
                return Err(format!("{} requests forwarded upstream, at most 1 allowed: {recs:?}", records.len()));
            }
            if let Some(first) = finals.first() {
                if !(200..300).contains(first) && !(400..500).contains(first) {
                    return Err(format!("first request answered {first}"));
                }
            }
            if let Some(bad) = finals.iter().skip(1).find(|s| !(400..500).contains(*s)) {
                return Err(format!("a request after the first answered {bad}, not a 4xx"));
            }
        }
        Expect::Normalised(n) => {
            if records.len() > n {
                return Err(format!("{} requests forwarded upstream, at most {n} allowed: {recs:?}", records.len()));
            }
            if ex.end == End::StillOpen {
                return Err("the connection stayed open after an ambiguous request".into());
            }
        }
        Expect::Pipelined(n) => {
            if records.len() != n || finals.len() != n || finals.iter().any(|s| !(200..300).contains(s)) {
                return Err(format!(
                    "expected {n} forwarded and answered 2xx, got {} forwarded {recs:?}",
                    records.len()
                ));
            }
            for r in records {
                if r["method"] == "POST" && r["body"].as_str() != Some(BODY) {
                    return Err(format!("forwarded POST body differs from the framed one: {:?}", r["body"]));
                }
            }
        }
    }
    Ok(())
}

fn describe_record(r: &Value) -> String {
    let q = r["query"].as_str().unwrap_or("");
    let hosts: Vec<&str> = r["headers"]
        .as_array()
        .map(|hs| hs.iter().filter(|h| h[0] == "host").filter_map(|h| h[1].as_str()).collect())
        .unwrap_or_default();
    let te = r["headers"].as_array().is_some_and(|hs| hs.iter().any(|h| h[0] == "transfer-encoding"));
    format!(
        "{} {}{}{} (authority {}, host {hosts:?}, {}body {} bytes)",
        r["method"].as_str().unwrap_or("?"),
        r["path"].as_str().unwrap_or("?"),
        if q.is_empty() { "" } else { "?" },
        q,
        r["authority"],
        if te { "chunked " } else { "" },
        r["body_len"]
    )
}

fn printable(bytes: &[u8]) -> String {
    let text: String = bytes.escape_ascii().to_string();
    if text.len() > 300 {
        format!("{}…({} bytes)", &text[..300], bytes.len())
    } else {
        text
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_corpus() {
    let started = Instant::now();
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));

    // Sanity: the policy forwards a plain request.
    let ok = exchange(gw.addr, get("Connection: close\r\n").as_bytes(), Duration::from_millis(400)).await;
    assert_eq!(ok.finals(), vec![200], "a plain GET /v1/models must be served: {}", ok.describe());

    let cases = corpus();
    assert!(cases.len() >= 20);
    let (mut pass, mut xfail, mut xpass) = (0, 0, 0);
    // Cases where more requests reached the upstream than the legitimate one(s), or the marked one.
    let mut loose_violations = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        mock.clear().await;
        let ex = exchange(gw.addr, &case.bytes, Duration::from_millis(400)).await;
        // Let anything gw might still be forwarding land in the mock's log.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let records = mock.requests().await;
        let verdict = judge(case, &ex, &records);
        let allowed = match case.expect {
            Expect::Pipelined(n) | Expect::Normalised(n) => n,
            _ => 1,
        };
        if records.len() > allowed || records.iter().any(|r| describe_record(r).contains(MARKER)) {
            loose_violations.push(case.name);
        }
        let recs: Vec<String> = records.iter().map(describe_record).collect();
        let line = format!(
            "{:<40} {:<14} {} | upstream got {}",
            case.name,
            format!("{:?}", case.expect),
            ex.describe(),
            recs.len()
        );
        match (&verdict, case.known_gap) {
            (Ok(()), None) => {
                pass += 1;
                println!("PASS  {line}");
            }
            (Ok(()), Some(gap)) => {
                xpass += 1;
                println!("XPASS {line}\n      known gap no longer shows, remove `known_gap` to tighten: {gap}");
            }
            (Err(why), Some(gap)) if !why.starts_with("SMUGGLED") => {
                xfail += 1;
                println!("XFAIL {line}\n      {why}\n      known gap: {gap}");
            }
            (Err(why), _) => {
                println!(
                    "FAIL  {line}\n      {why}\n      bytes: {}\n      upstream: {recs:?}",
                    printable(&case.bytes)
                );
                failures.push(format!("{}: {why}", case.name));
            }
        }
    }
    println!(
        "smuggling corpus: {} cases, {pass} passed, {} failed, {xfail} expected failures (known gaps), {xpass} unexpectedly passed; \
         more than the legitimate request(s) upstream in {} case(s) {loose_violations:?}; in {:.1} s",
        cases.len(),
        failures.len(),
        loose_violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} corpus case(s) failed:\n  {}", failures.len(), failures.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------------

const SLOW_POLICY: &str = r#"
gateway {
    listen         "{LISTEN}"
    admin          "{ADMIN}"
    header_timeout 1s
}

upstream mock {
    target  "{UPSTREAM}"
    timeout 2s
}

route models {
    when GET "/v1/models"
    to   mock
}
"#;

/// What happened to a client trickling `bytes` one per `every`.
#[derive(Debug)]
struct Trickle {
    /// When gw closed the connection (None: still open at the deadline).
    closed_after: Option<Duration>,
    /// How many bytes were written before it closed.
    sent: usize,
    answer: Vec<u8>,
}

async fn trickle(addr: SocketAddr, bytes: &'static [u8], every: Duration, deadline: Duration) -> Trickle {
    let started = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = s.into_split();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent2 = sent.clone();
    let writer = tokio::spawn(async move {
        for b in bytes {
            if wr.write_all(std::slice::from_ref(b)).await.is_err() {
                return;
            }
            sent2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(every).await;
        }
        // Everything sent: keep the write side open, like a client waiting for its answer.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(deadline, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let closed_after = read.is_ok().then(|| started.elapsed());
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    writer.abort();
    Trickle { closed_after, sent, answer }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_off_while_others_are_served() {
    let started = Instant::now();
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(SLOW_POLICY, &mock.url()));
    let addr = gw.addr;

    const HEAD: &[u8] = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Slow: one-byte-per-second\r\n\r\n";
    let slow = tokio::spawn(trickle(addr, HEAD, Duration::from_secs(1), Duration::from_secs(8)));

    // A normal client, concurrently, on a kept-alive connection: answered 200 throughout.
    let client = reqwest::Client::new();
    let mut served = 0;
    let mut errors = Vec::new();
    // Before, during and after the slow client's cut-off: at least 3 s, every 200 ms.
    while !slow.is_finished() || started.elapsed() < Duration::from_secs(3) {
        match client.get(gw.url("/v1/models")).send().await {
            Ok(r) if r.status() == 200 => served += 1,
            Ok(r) => errors.push(format!("status {}", r.status())),
            Err(e) => errors.push(format!("error {e}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slow = slow.await.unwrap();
    let answer = String::from_utf8_lossy(&slow.answer).into_owned();
    println!(
        "slow client: closed after {:?}, {} of {} head bytes sent, answer {:?}; normal client: {served} served, errors {errors:?}; {:.1} s",
        slow.closed_after,
        slow.sent,
        HEAD.len(),
        answer,
        started.elapsed().as_secs_f64()
    );
    let closed_after = slow.closed_after.expect("the slow client must be cut off within 8 s");
    assert!(closed_after < Duration::from_secs(4), "cut off only after {closed_after:?} (header_timeout 1s)");
    assert!(slow.sent < HEAD.len(), "the slow client managed to send its whole head");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "slow client got {answer:?}");
    assert!(errors.is_empty(), "the normal client was disturbed: {errors:?}");
    assert!(served >= 8, "the normal client was served only {served} times in 3 s");
    assert!(mock.requests().await.len() == served, "only the normal client's requests may reach the upstream");
}

// protocol sniffing (HTTP/1.1 or the HTTP/2 preface), which `header_timeout` does not cover.
const SILENT_GAP: Option<&str> = None;

/// Clients that never get to an HTTP/1.1 head: one silent after connecting, one trickling the
/// HTTP/2 preface. `header_timeout` should cut both off too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_preface_clients_are_cut_off() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(SLOW_POLICY, &mock.url()));
    let silent = tokio::spawn(trickle(gw.addr, b"", Duration::from_secs(1), Duration::from_secs(6)));
    let preface = tokio::spawn(trickle(
        gw.addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Duration::from_secs(1),
        Duration::from_secs(6),
    ));
    let (silent, preface) = (silent.await.unwrap(), preface.await.unwrap());
    println!("silent client: {silent:?}\nslow h2 preface: {preface:?}");
    let mut problems = Vec::new();
    match silent.closed_after {
        Some(t) if t < Duration::from_secs(4) => {}
        other => problems.push(format!("silent client closed after {other:?}")),
    }
    match preface.closed_after {
        Some(t) if t < Duration::from_secs(4) => {}
        other => problems.push(format!("slow HTTP/2 preface closed after {other:?} ({} bytes sent)", preface.sent)),
    }
    match (problems.is_empty(), SILENT_GAP) {
        (true, None) => {}
        (true, Some(gap)) => println!("XPASS known gap no longer shows, set SILENT_GAP to None: {gap}"),
        (false, Some(gap)) => println!("XFAIL {problems:?}\n      known gap: {gap}"),
        (false, None) => panic!("{problems:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Header limits
// ---------------------------------------------------------------------------------------------

const LIMITS_POLICY: &str = r#"
gateway {
    listen           "{LISTEN}"
    admin            "{ADMIN}"
    max_headers      20
    max_header_bytes 2KiB
}

upstream mock {
    target  "{UPSTREAM}"
    timeout 2s
}

route models {
    when GET "/v1/models"
    to   mock
}
"#;

/// GET /v1/models with `count` headers in all (Host included), each `X-Hn: <value_len bytes>`.
fn many_headers(count: usize, value_len: usize) -> String {
    let mut head = format!("GET /v1/models HTTP/1.1\r\n{HOST}");
    for i in 1..count {
        let _ = write!(head, "X-H{i}: {}\r\n", "v".repeat(value_len));
    }
    head.push_str("\r\n");
    head
}

fn is_json_error(r: &Resp) -> bool {
    serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["error"].is_object())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_answer_431() {
    let started = Instant::now();
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(LIMITS_POLICY, &mock.url()));

    // (name, request, must the 431 be gw's JSON shape?)
    let over: Vec<(&str, String, bool)> = vec![
        // Just over the policy's limits: hyper lets them through, gw's own check answers.
        ("21 headers (max_headers 20)", many_headers(21, 4), true),
        ("one 3000-byte header (max_header_bytes 2KiB)", many_headers(2, 3000), true),
        ("10 x 300-byte headers", many_headers(10, 300), true),
        // Far over: hyper's cap just above the limits may answer first (bare 431).
        ("200 headers", many_headers(200, 4), false),
        ("one 40000-byte header", many_headers(2, 40_000), false),
    ];
    let mut problems = Vec::new();
    for (name, req, json) in &over {
        mock.clear().await;
        let ex = exchange(gw.addr, req.as_bytes(), Duration::from_millis(400)).await;
        let first = ex.responses.iter().find(|r| r.status >= 200);
        let status = first.map(|r| r.status);
        let shape = first.map(|r| if is_json_error(r) { "json" } else { "bare" });
        println!(
            "{name}: {} shape {shape:?} content-type {:?}",
            ex.describe(),
            first.and_then(|r| r.header("content-type"))
        );
        if status != Some(431) && !(status.is_none() && !*json && ex.end == End::Reset) {
            problems.push(format!("{name}: expected 431, {}", ex.describe()));
        }
        if *json && status == Some(431) && shape != Some("json") {
            problems.push(format!("{name}: 431 without the JSON error shape"));
        }
        let got = mock.requests().await.len();
        if got != 0 {
            problems.push(format!("{name}: {got} request(s) reached the upstream"));
        }
    }
    // Just under the limits: served.
    for (name, req) in [("20 headers", many_headers(20, 4)), ("one 1500-byte header", many_headers(2, 1500))] {
        let ex = exchange(gw.addr, req.as_bytes(), Duration::from_millis(400)).await;
        println!("{name}: {}", ex.describe());
        if ex.finals().first() != Some(&200) {
            problems.push(format!("{name} (within the limits): expected 200, {}", ex.describe()));
        }
    }
    println!("header limits: {:.1} s", started.elapsed().as_secs_f64());
    assert!(problems.is_empty(), "{problems:#?}");
}
