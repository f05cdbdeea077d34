//! Client connections end to end, over raw TCP: the credential is checked before a body is
//! read, keep-alive connections survive the answers gw makes itself, `header_timeout` and
//! `idle_timeout` each mean what they say, and closes are counted by reason.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{users_keys, Gw, GwSpec, Mock};

const POLICY: &str = r#"
gateway {
    listen         "{LISTEN}"
    admin          "{ADMIN}"
    max_body       4MB
    header_timeout 1s
    idle_timeout   3s
    max_headers    20
}
upstream mock { target "{UPSTREAM}" timeout 2s }
keys users from "keys/users.keys"
route chat {
    when POST "/v1/chat/completions"
    auth users
    deny 400 "max_tokens too large" if body.max_tokens > 1000
    to   mock
}
route models {
    when GET|POST "/v1/models"
    auth users
    to   mock
}
route denied {
    when POST "/v1/denied"
    deny 403 "never" if path == "/v1/denied"
    to   mock
}
route limited {
    when POST "/v1/limited"
    limit rate 1/min per client
    respond 200 json {"ok": true}
}
route canned {
    when POST "/v1/canned"
    respond 200 json {"ok": true}
}
route health {
    when POST|GET "/health"
    serve health
}
"#;

fn start() -> (Mock, Gw) {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    (mock, gw)
}

/// One answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "") == "connection:close")
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read one answer (a head, then a `Content-Length` body); Err describes what went wrong.
fn read_answer(s: &mut TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return Err(format!("closed after {} head bytes: {:?}", buf.len(), String::from_utf8_lossy(&buf))),
            Ok(_) => buf.push(byte[0]),
            Err(e) => return Err(format!("reading the head: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {head:?}"))?;
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .ok_or_else(|| format!("no content-length in {head:?}"))?
        .map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("reading the body: {e}"))?;
    Ok(Answer { status, head, body })
}

/// True when the peer closes the connection within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn metrics(gw: &Gw) -> String {
    let mut s = connect(gw.admin);
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn closes_by(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("gw_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn a_wrong_key_is_refused_before_the_body_is_read() {
    let (mock, gw) = start();
    // `Expect: 100-continue` and a 1 MB body declared but never sent: the 401 must come at once,
    // with no `100 Continue` inviting the body first.
    for key in ["x-api-key: wrong\r\n", "authorization: Bearer wrong\r\n", ""] {
        let mut s = connect(gw.addr);
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n{key}content-type: application/json\r\n\
             content-length: 1048576\r\nexpect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let started = Instant::now();
        let answer = read_answer(&mut s).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(answer.status, 401, "{key:?}: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{key:?}: the 401 waited for the body");
        assert!(answer.closes(), "{key:?}: the unread body makes the connection unusable: {}", answer.head);
        assert!(closed_within(&mut s, Duration::from_secs(2)), "{key:?}: the connection stayed open");
    }
    // The same without `Expect`: answered without waiting for the declared body.
    let mut s = connect(gw.addr);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-api-key: wrong\r\ncontent-length: 1048576\r\n\r\n{",
    )
    .unwrap();
    let answer = read_answer(&mut s).unwrap();
    assert_eq!(answer.status, 401, "{answer:?}");
    // A good key still gets its body read and checked by the guard.
    let mut s = connect(gw.addr);
    let body = r#"{"model":"gpt-4o","max_tokens":5000}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-api-key: sk-test-1\r\ncontent-length: {}\r\n\
         expect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut cont = [0u8; 25];
    s.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let answer = read_answer(&mut s).unwrap();
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(!answer.closes(), "a read body leaves the connection usable");
    let seen = tokio::runtime::Runtime::new().unwrap().block_on(mock.requests());
    assert!(seen.is_empty(), "nothing reaches the upstream: {seen:?}");
}

/// One request gw answers itself, with one of the bodies under test.
fn gw_made_request(i: usize) -> (Vec<u8>, u16) {
    const BIG: usize = 100 * 1024;
    let (path, extra, want) = match i % 6 {
        0 => ("/v1/chat/completions", "x-api-key: wrong\r\n", 401),
        1 => ("/v1/nowhere", "", 404),
        2 => ("/v1/denied", "", 403),
        3 => ("/v1/limited", "", if i < 6 { 200 } else { 429 }),
        4 => ("/v1/canned", "", 200),
        _ => ("/health", "", 200),
    };
    let mut req = format!("POST {path} HTTP/1.1\r\nhost: gw\r\n{extra}").into_bytes();
    match (i / 6) % 4 {
        0 => req.extend_from_slice(b"content-length: 0\r\n\r\n"),
        1 => req.extend_from_slice(b"content-length: 2\r\n\r\n{}"),
        2 => {
            req.extend_from_slice(format!("content-length: {BIG}\r\n\r\n").as_bytes());
            req.extend(std::iter::repeat_n(b'x', BIG));
        }
        _ => req.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    }
    (req, want)
}

#[test]
fn keep_alive_connections_survive_the_answers_gw_makes_itself() {
    let (mock, gw) = start();
    let mut s = connect(gw.addr);
    let (mut failures, mut reconnects) = (Vec::new(), 0);
    for i in 0..1000 {
        let (req, want) = gw_made_request(i);
        let result = s.write_all(&req).map_err(|e| format!("writing: {e}")).and_then(|()| read_answer(&mut s));
        match result {
            Ok(a) if a.status == want => {
                if a.closes() {
                    reconnects += 1;
                    s = connect(gw.addr);
                }
            }
            Ok(a) => failures.push(format!("request {i}: status {} (want {want}): {}", a.status, a.head)),
            Err(e) => {
                failures.push(format!("request {i}: {e}"));
                s = connect(gw.addr);
            }
        }
    }
    println!("1000 requests on one keep-alive connection: {} failures, {reconnects} reconnects", failures.len());
    assert!(failures.is_empty(), "{} failures: {:#?}", failures.len(), &failures[..failures.len().min(10)]);
    assert_eq!(reconnects, 0, "every body here is small enough to be discarded");
    let seen = tokio::runtime::Runtime::new().unwrap().block_on(mock.requests());
    assert!(seen.is_empty(), "gw answered every request itself: {seen:?}");
}

#[test]
fn a_large_unread_body_closes_the_connection_with_connection_close() {
    let (_mock, gw) = start();
    let mut s = connect(gw.addr);
    // Declared larger than gw discards: the answer says it closes, and it does.
    s.write_all(b"POST /v1/canned HTTP/1.1\r\nhost: gw\r\ncontent-length: 3000000\r\n\r\n").unwrap();
    let a = read_answer(&mut s).unwrap();
    assert_eq!(a.status, 200);
    assert!(a.closes(), "{}", a.head);
    assert!(closed_within(&mut s, Duration::from_secs(2)));
    // A small body that never finishes arriving: given up after a bounded wait, then closed.
    let mut s = connect(gw.addr);
    s.write_all(b"POST /v1/canned HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n{").unwrap();
    let started = Instant::now();
    let a = read_answer(&mut s).unwrap();
    assert!(a.closes(), "{}", a.head);
    assert!(started.elapsed() < Duration::from_secs(4), "waited {:?} for the body", started.elapsed());
}

#[test]
fn a_431_closes_the_connection() {
    let (_mock, gw) = start();
    let mut s = connect(gw.addr);
    let mut head = String::from("GET /health HTTP/1.1\r\nhost: gw\r\n");
    for i in 0..25 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let a = read_answer(&mut s).unwrap();
    assert_eq!(a.status, 431, "{a:?}");
    assert!(a.closes(), "{}", a.head);
    assert!(closed_within(&mut s, Duration::from_secs(2)), "the connection stayed open after a 431");
    assert!(String::from_utf8_lossy(&a.body).contains("headers_too_large"));
}

#[test]
fn idle_timeout_and_header_timeout_each_mean_what_they_say() {
    let (_mock, gw) = start();
    // header_timeout 1s, idle_timeout 3s: a connection idle for 2 s still serves a request.
    let mut s = connect(gw.addr);
    let get = b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n";
    s.write_all(get).unwrap();
    assert_eq!(read_answer(&mut s).unwrap().status, 200);
    std::thread::sleep(Duration::from_secs(2));
    s.write_all(get).expect("the connection is still open after 2 s idle");
    assert_eq!(read_answer(&mut s).expect("served after 2 s idle (idle_timeout 3s)").status, 200);
    // Then it is closed about idle_timeout after its last answer.
    let idle_from = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(6)), "not closed 6 s after going idle");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(2500), "closed after {idle:?} idle (idle_timeout 3s)");

    // header_timeout runs from the first byte of a head, also on a kept-alive connection.
    let mut s = connect(gw.addr);
    s.write_all(get).unwrap();
    assert_eq!(read_answer(&mut s).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    // A trickle within idle_timeout but slower than header_timeout allows.
    let mut cut = false;
    for b in b"host: gw\r\nx-slow: yes\r\n\r\n" {
        std::thread::sleep(Duration::from_millis(300));
        if s.write_all(std::slice::from_ref(b)).is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut || closed_within(&mut s, Duration::from_secs(2)), "a head trickled over 7 s was served");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "cut off after {took:?} (header_timeout 1s)");

    let m = metrics(&gw);
    assert!(closes_by(&m, "idle") >= 1, "{m}");
    assert!(closes_by(&m, "header_timeout") >= 1, "{m}");
    assert!(!m.contains("gw_connection_errors_total"), "{m}");
}

#[test]
fn closes_are_counted_by_reason() {
    let (_mock, gw) = start();
    let before = metrics(&gw);
    // Not HTTP: hyper answers 400 and closes.
    let mut s = connect(gw.addr);
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)));
    // The client leaves in the middle of a head.
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    // The client closes after its answer: the normal end.
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut s).unwrap().status, 200);
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    let grew = |m: &str, reason: &str| closes_by(m, reason) > closes_by(&before, reason);
    loop {
        let m = metrics(&gw);
        let all = ["protocol_error", "client_reset", "done"].iter().all(|r| grew(&m, r));
        if all || Instant::now() > deadline {
            for reason in ["protocol_error", "client_reset", "done"] {
                assert!(grew(&m, reason), "no close counted as {reason}:\n{m}");
            }
            assert_eq!(closes_by(&m, "idle"), 0, "{m}");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
