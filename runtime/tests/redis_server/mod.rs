//! A real `redis-server` for tests: started on a free loopback port (or a given one, to bring
//! a killed server back), without persistence, killed when the handle drops.
//!
//! When `redis-server` is missing, one `apt-get install -y redis-server` is tried (as the
//! other tests' `require_tool` does); if that fails, under CI (`CI=true`) the test fails with
//! a clear message, elsewhere the tests print a loud skip message and pass without running
//! (`require_redis!()`).
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Return from the test (after a loud message) when no `redis-server` can be had.
macro_rules! require_redis {
    () => {
        if !crate::redis_server::available() {
            return;
        }
    };
}

fn installed() -> Option<String> {
    let out = Command::new("redis-server").arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `redis-server` can be run (installing it once if allowed).
pub fn available() -> bool {
    static VERSION: OnceLock<Option<String>> = OnceLock::new();
    VERSION.get_or_init(find_or_install).is_some()
}

fn find_or_install() -> Option<String> {
    if let Some(v) = installed() {
        return Some(v);
    }
    eprintln!("redis-server not found: trying `apt-get install -y redis-server` once");
    let _ = Command::new("sh")
        .args([
            "-c",
            "apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 \
             || (apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1)",
        ])
        .status();
    if let Some(v) = installed() {
        return Some(v);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "redis-server is not installed and `apt-get install redis-server` failed: the Redis limit store \
             tests need it under CI (install the Debian package redis-server in the CI setup)"
        );
    }
    // Straight to the process's stderr, past the test harness's capture: seen in every run.
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: redis-server is not installed and could not be installed:    !!!\n\
         !!! the Redis limit store tests did NOT run (apt-get install redis-server) !!!\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    None
}

/// The server's major version (DEBUG needs `--enable-debug-command` from 7 on).
fn major_version() -> u32 {
    let v = installed().unwrap_or_default();
    v.split("v=").nth(1).and_then(|s| s.split('.').next()).and_then(|m| m.parse().ok()).unwrap_or(0)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    /// Start on `port` (a killed server's, to test recovery).
    pub fn start_on(port: u16) -> RedisServer {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]).args([
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]);
        if major_version() >= 7 {
            cmd.args(["--enable-debug-command", "yes"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(port) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut out = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                panic!("redis-server on port {port} exited with {status}:\n{out}");
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} not answering after 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drain its output so a full pipe never blocks it.
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            std::thread::spawn(move || for _ in BufReader::new(stream).lines().map_while(Result::ok) {});
        }
        RedisServer { child: Some(child), port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill the server (SIGKILL, as a crash) and wait until the port is closed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a server answers PING on `port`.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}
