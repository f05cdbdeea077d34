//! Test harness: the real `gw` binary and the mock upstream (`gw mock`), each a child process
//! on free loopback ports, killed when the handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub fn gw_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gw"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A key-file line for `key`: `<sha256(salt + key)> <tenant> <name>`.
pub fn key_line(key: &str, tenant: &str, name: &str) -> String {
    format!("{} {tenant} {name}\n", hex::encode(Sha256::digest(key.as_bytes())))
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, log: &Arc<Mutex<String>>) {
    if let Err(why) = try_wait_for_port(addr, child, log) {
        panic!("{why}");
    }
}

/// Wait until `addr` accepts connections; Err (with the process's stderr) if it exits first.
fn try_wait_for_port(addr: SocketAddr, child: &mut Child, log: &Arc<Mutex<String>>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Let the stderr reader catch up, so the message says why.
            std::thread::sleep(Duration::from_millis(200));
            return Err(format!("process exited with {status} before listening on {addr}:\n{}", log.lock().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listens on {addr} after 20 s:\n{}", log.lock().unwrap()))
}

/// Collect a child's stderr in the background (tests read it, and a full pipe never blocks it).
fn capture_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    log
}

pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (SIGTERM = 15, SIGHUP = 1, SIGKILL = 9).
    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success());
    }

    /// Wait for exit up to `timeout`; the exit code, or None if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mock upstream, `gw mock`, on a free port.
pub struct Mock {
    pub addr: SocketAddr,
    pub proc: Proc,
}

impl Mock {
    pub fn start(extra: &[&str]) -> Mock {
        // A port `free_port` found free can be taken by a parallel test before the mock binds
        // it: then it is tried again on another port; any other failure is the test's.
        let mut attempts = 0;
        loop {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut child = Command::new(gw_bin())
                .args(["mock", "--listen", &addr.to_string()])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start gw mock");
            let log = capture_stderr(&mut child);
            match try_wait_for_port(addr, &mut child, &log) {
                Ok(()) => return Mock { addr, proc: Proc { child, log } },
                Err(why) if why.contains("in use") && attempts < 3 => attempts += 1,
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// The mock on a given address (a target restarted where it was).
    pub fn start_at(addr: SocketAddr, extra: &[&str]) -> Mock {
        let mut child = Command::new(gw_bin())
            .args(["mock", "--listen", &addr.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gw mock");
        let log = capture_stderr(&mut child);
        wait_for_port(addr, &mut child, &log);
        Mock { addr, proc: Proc { child, log } }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests the mock received (GET /mock/requests).
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        let body = reqwest::get(format!("{}/mock/requests", self.url())).await.unwrap().text().await.unwrap();
        serde_json::from_str(&body).unwrap()
    }

    pub async fn clear(&self) {
        reqwest::Client::new().delete(format!("{}/mock/requests", self.url())).send().await.unwrap();
    }
}

/// A running `gw serve` on a policy written into its own temporary folder.
pub struct Gw {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub proc: Proc,
}

/// What to put around a policy: `{LISTEN}`, `{ADMIN}` and `{UPSTREAM}` in its text are
/// replaced with free loopback addresses and the given upstream URL.
pub struct GwSpec<'a> {
    pub policy: &'a str,
    pub upstream: &'a str,
    /// Other files next to the policy (imports, key files), by relative path.
    pub files: Vec<(&'a str, String)>,
    pub env: Vec<(&'a str, &'a str)>,
}

impl<'a> GwSpec<'a> {
    pub fn new(policy: &'a str, upstream: &'a str) -> GwSpec<'a> {
        GwSpec { policy, upstream, files: vec![], env: vec![] }
    }

    pub fn file(mut self, path: &'a str, text: impl Into<String>) -> Self {
        self.files.push((path, text.into()));
        self
    }

    pub fn env(mut self, k: &'a str, v: &'a str) -> Self {
        self.env.push((k, v));
        self
    }
}

impl Gw {
    pub fn start(spec: GwSpec<'_>) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = spec
            .policy
            .replace("{LISTEN}", &addr.to_string())
            .replace("{ADMIN}", &admin.to_string())
            .replace("{UPSTREAM}", spec.upstream);
        let policy = dir.path().join("gateway.gwp");
        std::fs::write(&policy, text).unwrap();
        for (rel, content) in &spec.files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let proc = Self::spawn(&policy, &spec.env, addr, admin);
        Gw { addr, admin, dir, proc }
    }

    fn spawn(policy: &Path, env: &[(&str, &str)], addr: SocketAddr, admin: SocketAddr) -> Proc {
        Self::spawn_with(policy, &[], env, addr, admin)
    }

    /// `gw serve POLICY ARGS...`, waited for until `addr` and `admin` accept connections.
    pub fn spawn_with(policy: &Path, args: &[&str], env: &[(&str, &str)], addr: SocketAddr, admin: SocketAddr) -> Proc {
        let mut child = Command::new(gw_bin())
            .arg("serve")
            .arg(policy)
            .args(args)
            .envs(env.iter().copied())
            .env("GW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gw serve");
        let log = capture_stderr(&mut child);
        wait_for_port(addr, &mut child, &log);
        wait_for_port(admin, &mut child, &log);
        Proc { child, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// Run `gw serve POLICY` expecting it to refuse to start: its exit code and stderr.
pub fn serve_fails(policy_text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("gateway.gwp");
    std::fs::write(&policy, policy_text).unwrap();
    let mut child = Command::new(gw_bin())
        .arg("serve")
        .arg(&policy)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A policy that unexpectedly starts serving would otherwise hang the test forever.
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`gw serve` was expected to refuse the policy but is still running:\n{policy_text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A minimal policy forwarding everything under /v1 to {UPSTREAM} with key auth.
pub const BASIC_POLICY: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}

upstream mock {
    target  "{UPSTREAM}"
    header  "authorization" = "Bearer backend-secret"
    timeout 2s
}

keys users from "keys/users.keys"

route chat {
    when  POST "/v1/chat/completions"
    auth  users
    to    mock
}

route models {
    when  GET "/v1/models"
    auth  users
    to    mock
}
"#;

pub fn users_keys() -> String {
    key_line("sk-test-1", "alpha", "user-1") + &key_line("sk-test-2", "beta", "user-2")
}

/// A tool from a Debian package the test needs. Installed with apt-get when missing; under CI
/// (`CI=true`) a tool that cannot be had fails the test, elsewhere the test is skipped loudly.
pub fn require_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let find = || {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.is_file()))
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Some(p) = find() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} (Debian package {package}) is required under CI and could not be installed");
    }
    eprintln!("SKIPPED: {tool} is not installed (apt-get install {package})");
    None
}

/// The values of header `name` in a request the mock recorded (`/mock/requests`).
pub fn header_of<'a>(rec: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    rec["headers"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .filter_map(|h| h[1].as_str())
                .collect()
        })
        .unwrap_or_default()
}
