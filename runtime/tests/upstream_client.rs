//! gw's upstream client, end to end: connections are reused, a connection the target closed
//! while it waited in the pool costs the next request nothing (it is neither lost nor sent
//! twice), and an answer the client abandons closes its upstream connection instead of
//! returning it to the pool. The upstream is a small HTTP/1 server written here, so the
//! test sees every connection and every request.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Gw, GwSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POLICY: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}

upstream raw { target "{UPSTREAM}" }

route all {
    when GET "/*"
    auth none
    to   raw
}
"#;

/// What the raw upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTP/1 upstream answering GETs. `/close` answers keep-alive, then closes the connection
/// 100 ms later (as a server whose idle timeout is short does); `/stream` sends a chunked
/// answer slowly, forever; `/slow` answers after 300 ms; `/junk` sends a second, unasked-for answer behind its own;
/// anything else answers `ok` and keeps the connection.
async fn raw_upstream() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            counts.connections.fetch_add(1, Ordering::SeqCst);
            counts.open.fetch_add(1, Ordering::SeqCst);
            let counts = counts.clone();
            tokio::spawn(async move {
                serve(sock, counts.clone()).await;
                counts.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, seen)
}

async fn serve(mut sock: TcpStream, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        seen.requests.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        if path == "/stream" {
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            loop {
                if sock.write_all(b"6\r\nchunk\n\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if path == "/slow" {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if path == "/junk" {
            // A second answer nobody asked for, right behind the first: whoever reads it as the
            // answer to the next request serves one client another's response.
            let both = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
                        HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil";
            if sock.write_all(both.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok";
        if sock.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if path == "/close" {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    }
}

/// GET `path` on an open keep-alive connection to gw; the status and body of the answer.
async fn get_on(sock: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= i + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gw closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_reused_and_one_closed_while_idle_costs_nothing() {
    let (url, seen) = raw_upstream().await;
    let gw = Gw::start(GwSpec::new(POLICY, &url));
    // One client connection: its requests are served by one worker thread, whose pool holds
    // one upstream connection.
    let mut sock = TcpStream::connect(gw.addr).await.unwrap();
    for _ in 0..20 {
        assert_eq!(get_on(&mut sock, "/keep").await, (200, "ok".to_string()));
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "20 requests, one upstream connection");

    // The target closes each connection 100 ms after answering: the next request finds its
    // pooled connection closed, and goes on a new one, once.
    for i in 0..5 {
        assert_eq!(get_on(&mut sock, "/close").await, (200, "ok".to_string()), "request {i}");
        // Well after the target's close (100 ms), so the connection is closed while pooled.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 25, "no request lost or sent twice");
    // The first went on the kept connection; each later one on a new connection.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 5, "one new connection per closed one");
    assert!(!gw.proc.log().contains("upstream request failed"), "{}", gw.proc.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_the_client_abandons_closes_its_upstream_connection() {
    let (url, seen) = raw_upstream().await;
    let gw = Gw::start(GwSpec::new(POLICY, &url));
    let c = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
    // Read a little of an endless answer, then hang up.
    let mut r = c.get(gw.url("/stream")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"chunk"), "{first:?}");
    drop(r);
    drop(c);
    // The half-read connection must not serve the next request (its answer would be the
    // rest of the stream): the next one goes on a new connection and gets its own answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c.get(gw.url("/after")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 4);
    assert!(seen.connections.load(Ordering::SeqCst) >= 2, "the abandoned stream's connection was reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unasked_for_answer_is_never_taken_for_the_next_ones() {
    let (url, seen) = raw_upstream().await;
    let gw = Gw::start(GwSpec::new(POLICY, &url));
    let mut sock = TcpStream::connect(gw.addr).await.unwrap();
    for i in 0..5 {
        assert_eq!(get_on(&mut sock, "/junk").await, (200, "ok".to_string()), "junk {i}");
        // Right away, and after the pool had time to hold the connection.
        assert_eq!(get_on(&mut sock, "/next").await, (200, "ok".to_string()), "next {i}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get_on(&mut sock, "/next").await, (200, "ok".to_string()), "later {i}");
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 15, "every request reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_burst_the_pool_keeps_a_few_warm_connections_and_closes_the_rest() {
    let (url, seen) = raw_upstream().await;
    let gw = Gw::start(GwSpec::new(POLICY, &url));
    // 40 requests at once, each held 300 ms by the target: 40 upstream connections.
    let c = reqwest::Client::new();
    let burst = (0..40).map(|_| {
        let c = c.clone();
        let url = gw.url("/slow");
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let answers = futures_util::future::join_all(burst).await;
    assert!(answers.iter().all(|a| a == "ok"));
    let opened = seen.connections.load(Ordering::SeqCst);
    assert!(opened >= 20, "the burst needed many connections ({opened})");
    let ended = std::time::Instant::now();
    // Unused for 5 s, all but 4 per worker thread close (gw runs one worker per CPU).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spare = 4 * workers;
    while seen.open.load(Ordering::SeqCst) > spare {
        assert!(ended.elapsed() < Duration::from_secs(15), "{} still open", seen.open.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended.elapsed() >= Duration::from_secs(4), "closed before 5 s unused: {:?}", ended.elapsed());
    // The warm ones stay, and serve the next requests without a new connection.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(seen.open.load(Ordering::SeqCst) >= 1, "every connection closed");
    let before = seen.connections.load(Ordering::SeqCst);
    let mut sock = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get_on(&mut sock, "/keep").await, (200, "ok".to_string()));
    assert_eq!(seen.connections.load(Ordering::SeqCst), before, "a warm connection was used");
}
