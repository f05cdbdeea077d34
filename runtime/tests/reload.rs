//! Hot reload end to end: the real `gw` with a policy on disk, reloaded by file changes (the
//! policy, an import, a key file), SIGHUP and `POST /admin/reload`; failures keep the old
//! policy; and a long run under load with 100 rewrites and no failed request.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{key_line, Gw, GwSpec, Mock};
use futures_util::StreamExt;
use serde_json::Value;

fn policy(which: &str) -> String {
    format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
import "routes.gwp"
upstream mock {{ target "{{UPSTREAM}}" }}
keys users from "keys/users.keys"
route which {{
    when    GET "/which"
    respond 200 "{which}"
}}
route chat {{
    when POST "/v1/chat/completions"
    to   mock
}}
"#
    )
}

const ROUTES: &str = r#"
route models {
    when GET "/v1/models"
    auth users
    to   mock
}
"#;

fn keys() -> String {
    key_line("sk-a", "t", "a") + &key_line("sk-b", "t", "b")
}

struct Admin {
    client: reqwest::Client,
    gw_admin: String,
}

impl Admin {
    fn new(gw: &Gw) -> Admin {
        Admin { client: reqwest::Client::new(), gw_admin: gw.admin_url("") }
    }

    async fn policy(&self) -> Value {
        self.client.get(format!("{}/admin/policy", self.gw_admin)).send().await.unwrap().json().await.unwrap()
    }

    async fn generation(&self) -> u64 {
        self.policy().await["generation"].as_u64().unwrap()
    }

    /// The last reload's report, once it differs from `since` (its time), within 10 s.
    async fn next_reload(&self, since: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.policy().await;
            if p["last_reload"] != Value::Null && p["last_reload"]["at_unix_ms"] != since["at_unix_ms"] {
                return p["last_reload"].clone();
            }
            assert!(Instant::now() < deadline, "no reload within 10 s: {p}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn last_reload(&self) -> Value {
        self.policy().await["last_reload"].clone()
    }

    async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.gw_admin)).send().await.unwrap().text().await.unwrap()
    }
}

fn start(mock: &Mock, which: &str) -> Gw {
    let text = policy(which);
    Gw::start(GwSpec::new(&text, &mock.url()).file("routes.gwp", ROUTES).file("keys/users.keys", keys()))
}

/// Write `text` with the gateway's ports filled in, as an editor would: to a temporary file,
/// then renamed over the original.
fn write_policy(gw: &Gw, mock: &Mock, rel: &str, text: &str) {
    let text = text
        .replace("{LISTEN}", &gw.addr.to_string())
        .replace("{ADMIN}", &gw.admin.to_string())
        .replace("{UPSTREAM}", &mock.url());
    let path = gw.path(rel);
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

async fn which(gw: &Gw) -> (u16, String, String) {
    let resp = reqwest::get(gw.url("/which")).await.unwrap();
    let status = resp.status().as_u16();
    let version = resp.headers().get("x-gw-policy").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, resp.text().await.unwrap(), version)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_is_picked_up_and_a_broken_one_is_not_served() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, "A");
    let admin = Admin::new(&gw);
    assert_eq!(which(&gw).await.1, "A");
    let before = admin.last_reload().await;

    write_policy(&gw, &mock, "gateway.gwp", &policy("B"));
    let report = admin.next_reload(&before).await;
    assert_eq!(report["ok"], true, "{report}");
    let (_, body, version) = which(&gw).await;
    assert_eq!(body, "B");
    assert!(version.starts_with("2-"), "{version}");

    // A broken policy: reported, and the previous one keeps serving.
    write_policy(&gw, &mock, "gateway.gwp", "route broken {\n    when GET \"/x\"\n    to   nowhere\n}\n");
    let report = admin.next_reload(&report).await;
    assert_eq!(report["ok"], false);
    assert!(report["diagnostics"].as_str().unwrap().contains("gw::undefined_upstream"), "{report}");
    assert_eq!(which(&gw).await.1, "B");
    assert_eq!(admin.generation().await, 2);
    assert!(gw.proc.log().contains("gw::undefined_upstream"), "the diagnostics are logged");

    // Deleted: the old policy keeps serving and the error says so.
    std::fs::remove_file(gw.path("gateway.gwp")).unwrap();
    let report = admin.next_reload(&report).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(which(&gw).await.1, "B");

    write_policy(&gw, &mock, "gateway.gwp", &policy("C"));
    let report = admin.next_reload(&report).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(which(&gw).await.1, "C");
    assert_eq!(admin.generation().await, 3);
    let metrics = admin.metrics().await;
    assert!(metrics.contains(r#"gw_policy_reloads_total{result="failed"} 2"#), "{metrics}");
    assert!(metrics.contains("gw_policy_generation 3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn import_and_key_file_changes_reload_and_a_revoked_key_is_refused_at_once() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, "A");
    let admin = Admin::new(&gw);
    let c = reqwest::Client::new();
    let models = |key: &'static str| c.get(gw.url("/v1/models")).header("x-api-key", key).send();
    assert_eq!(models("sk-b").await.unwrap().status(), 200);

    // Revoke sk-b by rewriting the key file.
    let before = admin.last_reload().await;
    write_policy(&gw, &mock, "keys/users.keys", &key_line("sk-a", "t", "a"));
    assert_eq!(admin.next_reload(&before).await["ok"], true);
    assert_eq!(models("sk-b").await.unwrap().status(), 401, "a revoked key is refused right after the reload");
    assert_eq!(models("sk-a").await.unwrap().status(), 200);

    // Change the imported module: /v1/models goes away.
    let before = admin.last_reload().await;
    write_policy(&gw, &mock, "routes.gwp", "route other {\n    when GET \"/v1/other\"\n    to   mock\n}\n");
    assert_eq!(admin.next_reload(&before).await["ok"], true);
    assert_eq!(models("sk-a").await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_the_admin_endpoint_reload() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, "A");
    let admin = Admin::new(&gw);
    gw.proc.signal(1);
    let report = admin.next_reload(&Value::Null).await;
    assert_eq!(report["ok"], true);
    assert_eq!(admin.generation().await, 2);

    let resp = reqwest::Client::new().post(gw.admin_url("/admin/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert_eq!(body["generation"], 3);

    // A listener address cannot change live: reported, not applied.
    let moved = policy("A").replace("{LISTEN}", "127.0.0.1:1");
    write_policy(&gw, &mock, "gateway.gwp", &moved);
    let report = admin.next_reload(&admin.last_reload().await).await;
    assert_eq!(report["ok"], false);
    assert!(report["diagnostics"].as_str().unwrap().contains("restart"), "{report}");
}

/// Signal handlers are in place before the ports open: a SIGHUP sent the moment gw answers
/// reloads it (the default action, exit, once killed gw in CI when handlers came later).
#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_sent_the_moment_gw_answers_reloads_it() {
    let mock = Mock::start(&[]);
    for round in 0..20 {
        let mut gw = start(&mock, "A");
        gw.proc.signal(1);
        assert_eq!(gw.proc.wait_exit(Duration::from_millis(200)), None, "round {round}: gw exited on SIGHUP");
        let report = Admin::new(&gw).next_reload(&Value::Null).await;
        assert_eq!(report["ok"], true, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_writes_is_one_reload() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, "A");
    let admin = Admin::new(&gw);
    for i in 0..20 {
        write_policy(&gw, &mock, "gateway.gwp", &policy(&format!("burst-{i}")));
        std::thread::sleep(Duration::from_millis(3));
    }
    let report = admin.next_reload(&Value::Null).await;
    assert_eq!(report["ok"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(admin.generation().await, 2, "20 writes within 60 ms must be one reload");
    assert_eq!(which(&gw).await.1, "burst-19");
}

/// 100 rewrites (two valid policies routing differently, and broken versions) under steady
/// load with long SSE streams: no request fails, each is answered by a policy that was current
/// while it ran, broken versions are never served, and generations count every valid write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_reloads_under_load_lose_nothing() {
    let mock = Mock::start(&[]);
    let gw = Arc::new(start(&mock, "A"));
    let admin = Admin::new(&gw);
    // The generation known to be current: raised by the writer once a reload is confirmed.
    let confirmed = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(AtomicU64::new(0));

    let mut tasks = vec![];
    for _ in 0..24 {
        let (gw, confirmed, stop, answers, failures, count) =
            (gw.clone(), confirmed.clone(), stop.clone(), answers.clone(), failures.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let low = confirmed.load(Ordering::SeqCst);
                let resp = client.get(gw.url("/which")).send().await;
                let high = confirmed.load(Ordering::SeqCst) + 1;
                count.fetch_add(1, Ordering::Relaxed);
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let version = r.headers()["x-gw-policy"].to_str().unwrap().to_string();
                        let body = r.text().await.unwrap_or_default();
                        let gen: u64 = version.split('-').next().unwrap().parse().unwrap();
                        if gen < low || gen > high {
                            failures.lock().unwrap().push(format!("generation {gen} outside [{low}, {high}]"));
                        }
                        answers.lock().unwrap().push((version, body));
                    }
                    Ok(r) => failures.lock().unwrap().push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("request error {e}")),
                }
            }
        }));
    }
    // Long streams across many swaps.
    for _ in 0..4 {
        let (gw, stop, failures, count) = (gw.clone(), stop.clone(), failures.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let resp = client
                    .post(gw.url("/v1/chat/completions"))
                    .header("x-mock-chunks", "20")
                    .header("x-mock-chunk-delay-ms", "100")
                    .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
                    .send()
                    .await;
                count.fetch_add(1, Ordering::Relaxed);
                let Ok(resp) = resp else {
                    failures.lock().unwrap().push("stream request failed".into());
                    continue;
                };
                let mut text = String::new();
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("stream cut: {e}"));
                            break;
                        }
                    }
                }
                if !text.trim_end().ends_with("data: [DONE]") || text.matches("chat.completion.chunk").count() < 20 {
                    failures.lock().unwrap().push("a stream ended incomplete".into());
                }
            }
        }));
    }

    let started = Instant::now();
    let mut last = admin.last_reload().await;
    let (mut valid, mut invalid) = (0u64, 0u64);
    for i in 0..100 {
        let text = match i % 5 {
            4 => {
                invalid += 1;
                format!("route broken{i} {{\n    when GET \"/which\"\n    respond 200 \"BROKEN\"\n    to mock\n}}\n")
            }
            n if n % 2 == 0 => {
                valid += 1;
                policy("A")
            }
            _ => {
                valid += 1;
                policy("B")
            }
        };
        write_policy(&gw, &mock, "gateway.gwp", &text);
        last = admin.next_reload(&last).await;
        assert_eq!(last["ok"], i % 5 != 4, "write {i}: {last}");
        if last["ok"] == true {
            confirmed.store(last["generation"].as_u64().unwrap(), Ordering::SeqCst);
        }
        // Spread the 100 rewrites over at least 20 s of load.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let answers = answers.lock().unwrap().clone();
    let total = count.load(Ordering::Relaxed);
    println!(
        "{total} requests ({:.0}/s) over {:.1} s with 100 rewrites ({valid} valid, {invalid} broken); {} failures",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} failures, first: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert_eq!(admin.generation().await, 1 + valid);
    // Every answer came from one of the two valid policies, consistently with its version.
    let mut by_version = std::collections::HashMap::new();
    for (version, body) in &answers {
        assert!(body == "A" || body == "B", "answered {body:?} under {version}");
        let seen = by_version.entry(version.clone()).or_insert_with(|| body.clone());
        assert_eq!(seen, body, "one policy version gave two answers");
    }
    assert!(by_version.len() > 50, "only {} policy versions answered", by_version.len());
    let metrics = admin.metrics().await;
    assert!(metrics.contains(&format!(r#"gw_policy_reloads_total{{result="failed"}} {invalid}"#)), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_state_survives_a_reload_unless_the_limit_changed() {
    let mock = Mock::start(&[]);
    let limited = |rate: &str, which: &str| {
        policy(which).replace(
            "route chat {",
            &format!("route limited {{\n    when  GET \"/limited\"\n    limit rate {rate} per client\n    respond 200 \"ok\"\n}}\nroute chat {{"),
        )
    };
    let text = limited("2/min", "A");
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("routes.gwp", ROUTES).file("keys/users.keys", keys()));
    let admin = Admin::new(&gw);
    let get = || async { reqwest::get(gw.url("/limited")).await.unwrap().status().as_u16() };
    assert_eq!([get().await, get().await, get().await], [200, 200, 429]);

    // Another part of the policy changes: the limit's identity does not, its counter stays.
    write_policy(&gw, &mock, "gateway.gwp", &limited("2/min", "B"));
    let report = admin.next_reload(&Value::Null).await;
    assert_eq!(report["ok"], true);
    assert_eq!(which(&gw).await.1, "B");
    assert_eq!(get().await, 429, "the counter survived the reload");

    // The limit itself changes: it starts fresh.
    write_policy(&gw, &mock, "gateway.gwp", &limited("3/min", "B"));
    assert_eq!(admin.next_reload(&report).await["ok"], true);
    assert_eq!(get().await, 200, "a changed limit starts with a full bucket");
}
