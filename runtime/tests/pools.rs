//! Upstream pools that survive failures, with real processes: the seed 004 (polyagent) and
//! seed 003 (gpu-inference `pools.gwp`) examples served as written, in front of several
//! `gw mock` targets that are killed and restarted; balancing figures; the retry budget in a
//! total outage. Figures are printed (`--nocapture`).

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod redis_server;
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, Gw, GwSpec, Mock};
use serde_json::Value;

const POLYAGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/polyagent");
const GPU: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gpu-inference");

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// The example's text with its addresses moved to the test's. Lines with `cors` are left
/// out: CORS is another change's, and gw serve refuses it until then (nothing here is CORS).
fn example(dir: &str, file: &str, moves: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
    text = text.lines().filter(|l| !l.trim_start().starts_with("cors ")).collect::<Vec<_>>().join("\n");
    for (from, to) in moves {
        assert!(text.contains(from), "{file} has no {from}");
        text = text.replace(from, to);
    }
    text
}

async fn upstreams(gw: &Gw, token: &str) -> Value {
    let c = reqwest::Client::new();
    c.get(gw.admin_url("/admin/upstreams")).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// The view of one target, by its address.
async fn target_view(gw: &Gw, token: &str, target: SocketAddr) -> Value {
    let view = upstreams(gw, token).await;
    for u in view["upstreams"].as_array().unwrap() {
        for t in u["targets"].as_array().unwrap() {
            if t["target"].as_str().unwrap().contains(&target.to_string()) {
                return t.clone();
            }
        }
    }
    panic!("no target {target} in {view}");
}

async fn metric(gw: &Gw, token: &str, name_and_labels: &str) -> f64 {
    let c = reqwest::Client::new();
    let text = c.get(gw.admin_url("/metrics")).bearer_auth(token).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn polyagent(cores: &[SocketAddr]) -> Gw {
    let policy = example(
        POLYAGENT,
        "gateway.gwp",
        &[
            ("127.0.0.1:8084", "{LISTEN}".into()),
            ("127.0.0.1:9185", "{ADMIN}".into()),
            ("127.0.0.1:9106", cores[0].to_string()),
            ("127.0.0.1:9107", cores[1].to_string()),
            ("127.0.0.1:9108", cores[2].to_string()),
        ],
    );
    let read = |name: &str| std::fs::read_to_string(format!("{POLYAGENT}/keys/{name}")).unwrap();
    Gw::start(
        GwSpec::new(&policy, "")
            .file("keys/clients.keys", read("clients.keys"))
            .file("keys/issuer.pem", read("issuer.pem"))
            .file("keys/operators.htpasswd", read("operators.htpasswd"))
            .env("GW_ADMIN_TOKEN", "admin"),
    )
}

/// Requests from `workers` loops until stopped: (ok, errors, first error seen).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Option<String>>>,
    started: Instant,
}

impl Load {
    fn start(url: String, token: &'static str, workers: usize) -> Load {
        let (stop, ok, errors) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let client = reqwest::Client::builder().pool_max_idle_per_host(workers).build().unwrap();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, errors, client, url) =
                    (stop.clone(), ok.clone(), errors.clone(), client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut first = None;
                    while !stop.load(Relaxed) {
                        match client.get(&url).bearer_auth(token).send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                ok.fetch_add(1, Relaxed);
                            }
                            Ok(r) => {
                                errors.fetch_add(1, Relaxed);
                                first.get_or_insert(format!("{} {}", r.status(), r.text().await.unwrap_or_default()));
                            }
                            Err(e) => {
                                errors.fetch_add(1, Relaxed);
                                first.get_or_insert(e.to_string());
                            }
                        }
                    }
                    first
                })
            })
            .collect();
        Load { stop, ok, errors, tasks, started: Instant::now() }
    }

    async fn finish(self) -> (u64, u64, f64, Option<String>) {
        self.stop.store(true, Relaxed);
        let mut first = None;
        for t in self.tasks {
            first = first.or(t.await.unwrap());
        }
        let ok = self.ok.load(Relaxed);
        (ok, self.errors.load(Relaxed), ok as f64 / self.started.elapsed().as_secs_f64(), first)
    }
}

/// Seed 004 as written: round robin over three cores, `health GET "/health" every 10s`,
/// `retry 3 on connect_error, 502, 503`. One core killed under load: no client sees an
/// error, the core is ejected at once, and it takes traffic again after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_004_fails_over_without_client_errors_and_takes_a_restarted_core_back() {
    let cores = [addr(), addr(), addr()];
    let mut mocks: Vec<Option<Mock>> = cores.iter().map(|a| Some(Mock::start_at(*a, &[]))).collect();
    let gw = polyagent(&cores);
    let load = Load::start(gw.url("/api/v1/models"), "pa-web-1", 32);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed_at = Instant::now();
    mocks[1] = None;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = target_view(&gw, "admin", cores[1]).await;
    assert_eq!(view["health"], "failing", "{view}");
    assert!(["ejected", "down"].contains(&view["state"].as_str().unwrap()), "{view}");
    let failures = view["failures"].as_u64().unwrap();
    println!("killed core: {failures} failed tries before it left the rotation; view: {view}");
    assert!(failures <= 3 + 32, "ejected after 3 consecutive failures (plus tries in flight): {failures}");

    mocks[1] = Some(Mock::start_at(cores[1], &[]));
    let restarted = Instant::now();
    let mut back = None;
    while restarted.elapsed() < Duration::from_secs(35) {
        let view = target_view(&gw, "admin", cores[1]).await;
        if view["health"] == "ok" && !mocks[1].as_ref().unwrap().requests().await.is_empty() {
            back = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (ok, errors, rate, first) = load.finish().await;
    println!(
        "seed 004 failover: {ok} requests at {rate:.0} req/s, {errors} client errors; killed {:.1}s, back in rotation {:.1}s after restart",
        killed_at.elapsed().as_secs_f64(),
        back.map_or(-1.0, |d| d.as_secs_f64())
    );
    println!("retries: {}", metric(&gw, "admin", "gw_target_retries_total").await);
    assert_eq!(errors, 0, "first error: {first:?}");
    assert!(back.is_some(), "the restarted core never came back");
}

/// Every core down: 503 `no_healthy_upstream` at once (connect errors are fast; once the
/// health checks saw it, without trying), never a hang.
#[tokio::test(flavor = "multi_thread")]
async fn all_cores_down_is_a_503_within_the_connect_timeout() {
    let cores = [addr(), addr(), addr()];
    let gw = polyagent(&cores);
    // The first health checks run within a second of the start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let resp = c.get(gw.url("/api/v1/models")).bearer_auth("pa-web-1").send().await.unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "no_healthy_upstream", "{body}");
    }
    println!("all targets down: slowest 503 in {:.1}ms", slowest.as_secs_f64() * 1e3);
    assert!(slowest < Duration::from_secs(5), "the connect timeout is 5s: {slowest:?}");
}

/// In a total outage the budget caps retries at about a fifth of the requests (plus a few a
/// second), instead of every request trying every target.
#[tokio::test(flavor = "multi_thread")]
async fn the_retry_budget_caps_retries_in_a_total_outage() {
    let dead = [addr(), addr(), addr()];
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream dead {{
    target "http://{}"
    target "http://{}"
    target "http://{}"
    retry  3 on connect_error, 502, 503
}}
route r {{
    when GET "/x"
    to   dead
}}
"#,
        dead[0], dead[1], dead[2]
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let c = reqwest::Client::new();
    let requests = 1000;
    let started = Instant::now();
    for _ in 0..requests {
        let status = c.get(gw.url("/x")).send().await.unwrap().status().as_u16();
        assert!([502, 503].contains(&status), "{status}");
    }
    let secs = started.elapsed().as_secs_f64();
    let retries = metric(&gw, "", "gw_target_retries_total").await;
    let refused = metric(&gw, "", "gw_target_retries_refused_total").await;
    println!(
        "total outage: {requests} requests in {secs:.1}s, {retries} retries ({:.2} per request), {refused} refused by the budget",
        retries / requests as f64
    );
    // Without a budget: 2 or 3 tries after the first for every request.
    assert!(retries <= 0.2 * requests as f64 + 3.0 * secs + 25.0, "{retries}");
    assert!(refused > 0.0);
}

/// `balance weighted` with weights 10:5: two to one over 3,000 requests, within ±3%.
#[tokio::test(flavor = "multi_thread")]
async fn weights_10_to_5_split_3000_requests_two_to_one() {
    let (a, b) = (Mock::start(&[]), Mock::start(&[]));
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream w {{
    balance weighted
    target "{}" weight 10
    target "{}" weight 5
}}
route r {{
    when GET "/v1/models"
    to   w
}}
"#,
        a.url(),
        b.url()
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let c = reqwest::Client::new();
    for _ in 0..3000 {
        assert_eq!(c.get(gw.url("/v1/models")).send().await.unwrap().status(), 200);
    }
    let heavy = target_view(&gw, "", a.addr).await["requests"].as_u64().unwrap();
    let light = target_view(&gw, "", b.addr).await["requests"].as_u64().unwrap();
    let share = heavy as f64 / 3000.0;
    println!("weighted 10:5 over 3000 requests: {heavy} / {light} ({share:.3} to the heavier)");
    assert_eq!(heavy + light, 3000);
    assert!((share - 2.0 / 3.0).abs() <= 0.03, "{share}");
}

/// `balance least_latency` (P2C over peak EWMA): a target answering 40ms slower than its
/// peers gets much less of the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_target_gets_less_traffic_under_least_latency() {
    let fast = [Mock::start(&[]), Mock::start(&[])];
    let slow = Mock::start(&["--delay-ms", "40"]);
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream p {{
    balance least_latency
    target "{}"
    target "{}"
    target "{}"
}}
route r {{
    when GET "/v1/models"
    to   p
}}
"#,
        fast[0].url(),
        fast[1].url(),
        slow.url()
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let load = Load::start(gw.url("/v1/models"), "none", 8);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, errors, rate, first) = load.finish().await;
    assert_eq!(errors, 0, "{first:?}");
    let mut counts = vec![];
    for m in [&fast[0], &fast[1], &slow] {
        counts.push(target_view(&gw, "", m.addr).await["requests"].as_u64().unwrap());
    }
    let slow_share = counts[2] as f64 / counts.iter().sum::<u64>() as f64;
    println!(
        "least_latency: {ok} requests at {rate:.0} req/s; fast {} and {}, slow (+40ms) {} ({:.1}% of the traffic)",
        counts[0],
        counts[1],
        counts[2],
        slow_share * 100.0
    );
    assert!(counts[2] * 4 < counts[0].min(counts[1]), "{counts:?}");
}

/// Seed 003's `pools.gwp` as written (its `cache` line aside, another change's): a client
/// naming its region goes to that region's target while it is up, to the other when it is
/// down, and back when it returns.
#[tokio::test(flavor = "multi_thread")]
async fn affinity_prefers_the_named_region_and_fails_over() {
    require_redis!();
    let redis = redis_server::RedisServer::start();
    let (east_at, north_at) = (addr(), addr());
    let mut east = Some(Mock::start_at(east_at, &[]));
    let north = Mock::start_at(north_at, &[]);
    let read = |f: &str| std::fs::read_to_string(format!("{GPU}/{f}")).unwrap();
    let policy = example(
        GPU,
        "pools.gwp",
        &[
            ("127.0.0.1:3001", "{LISTEN}".into()),
            ("127.0.0.1:9186", "{ADMIN}".into()),
            ("127.0.0.1:9109", east_at.to_string()),
            ("127.0.0.1:9110", north_at.to_string()),
            ("    cache 5s max 1MB\n", String::new()),
        ],
    );
    let gw = Gw::start(
        GwSpec::new(&policy, "")
            .file("teams.gwp", read("teams.gwp"))
            .file("keys/tokens.keys", read("keys/tokens.keys"))
            .env("GW_REDIS_URL", Box::leak(redis.url().into_boxed_str()))
            .env("GW_ADMIN_TOKEN", "admin"),
    );
    let c = reqwest::Client::new();
    let job = |region: &'static str| {
        c.get(gw.url("/api/v1/jobs/job-1")).bearer_auth("tok-lab-1").header("x-region", region).send()
    };
    let served_by = |m: &Mock| {
        let url = m.url();
        async move { reqwest::get(format!("{url}/mock/requests")).await.unwrap().json::<Vec<Value>>().await.unwrap().len() }
    };
    for _ in 0..4 {
        assert_eq!(job("cn-east").await.unwrap().status(), 404, "forwarded: the mock knows no jobs");
    }
    assert_eq!((served_by(east.as_ref().unwrap()).await, served_by(&north).await), (4, 0));
    assert_eq!(job("cn-north").await.unwrap().status(), 404);
    assert_eq!(served_by(&north).await, 1);

    drop(east.take());
    for _ in 0..4 {
        assert_eq!(job("cn-east").await.unwrap().status(), 404, "failed over to cn-north");
    }
    assert_eq!(served_by(&north).await, 5);

    let restarted = Instant::now();
    east = Some(Mock::start_at(east_at, &[]));
    while target_view(&gw, "admin", east_at).await["health"] != "ok" {
        assert!(restarted.elapsed() < Duration::from_secs(35), "cn-east never came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("affinity: cn-east back in rotation {:.1}s after its restart", restarted.elapsed().as_secs_f64());
    for _ in 0..3 {
        assert_eq!(job("cn-east").await.unwrap().status(), 404);
    }
    assert_eq!((served_by(east.as_ref().unwrap()).await, served_by(&north).await), (3, 5));
}

/// A POST is tried again after a 503 only on a route that declares it `idempotent`; the
/// retry sends the same body to the other target. Without it, only a connect error (nothing
/// sent) is retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_post_is_replayed_only_on_an_idempotent_route() {
    let failing = Mock::start(&["--fail-rate", "1", "--fail-status", "503"]);
    let healthy = Mock::start(&[]);
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream p {{
    target "{}"
    target "{}"
    retry  1 on connect_error, 503
}}
route completions {{
    when POST "/v1/chat/completions"
    idempotent
    to   p
}}
route jobs {{
    when POST "/v2/chat/completions"
    to   p
}}
"#,
        failing.url(),
        healthy.url()
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let c = reqwest::Client::new();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"replay me"}]}"#;
    let post = |path: &'static str| c.post(gw.url(path)).header("content-type", "application/json").body(body).send();
    // Round robin: one of two goes to the failing target, and is not tried again.
    let mut statuses = vec![];
    for _ in 0..2 {
        statuses.push(post("/v2/chat/completions").await.unwrap().status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 503]);
    healthy.clear().await;
    for _ in 0..6 {
        assert_eq!(post("/v1/chat/completions").await.unwrap().status(), 200);
    }
    let seen = healthy.requests().await;
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|r| r["body"].to_string().contains("replay me")), "{seen:?}");
    assert!(metric(&gw, "", "gw_target_retries_total").await >= 1.0);
}

/// What was learnt about a target survives a reload that keeps it: an ejected target stays
/// ejected, its ejection count kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_target_health() {
    let live = Mock::start(&[]);
    let dead = addr();
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream p {{
    target "{}"
    target "http://{}"
    retry  1 on connect_error
}}
route r {{
    when GET "/v1/models"
    to   p
}}
"#,
        live.url(),
        dead
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let c = reqwest::Client::new();
    for _ in 0..8 {
        assert_eq!(c.get(gw.url("/v1/models")).send().await.unwrap().status(), 200);
    }
    let before = target_view(&gw, "", dead).await;
    assert_eq!(before["state"], "ejected", "{before}");
    std::fs::write(gw.path("gateway.gwp"), std::fs::read_to_string(gw.path("gateway.gwp")).unwrap() + "\n# edited\n")
        .unwrap();
    let report: Value = c.post(gw.admin_url("/admin/reload")).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let after = target_view(&gw, "", dead).await;
    assert_eq!(after["state"], "ejected", "{after}");
    assert_eq!(after["ejections"], before["ejections"]);
    assert_eq!(after["since_unix_ms"], before["since_unix_ms"]);
}

/// Active checks: a target answering its check with another status than `expect` leaves the
/// rotation after `unhealthy` checks in a row (every target down: 503 at once, the reason in
/// the view); an upstream no route uses is never probed.
#[tokio::test(flavor = "multi_thread")]
async fn active_checks_follow_expect_and_thresholds_and_skip_unused_upstreams() {
    let used = Mock::start(&[]);
    let unused = Mock::start(&[]);
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream used {{
    target "{}"
    health GET "/health" every 200ms expect 204 unhealthy 2
}}
upstream unused {{
    target "{}"
    health GET "/v1/models" every 100ms
}}
route r {{
    when GET "/v1/models"
    to   used
}}
"#,
        used.url(),
        unused.url()
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let started = Instant::now();
    loop {
        let view = target_view(&gw, "", used.addr).await;
        if view["state"] == "down" {
            assert!(view["reason"].as_str().unwrap().contains("status 200 (204 expected)"), "{view}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never marked down: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("expect 204 against a 200: down after {:.2}s", started.elapsed().as_secs_f64());
    assert!(started.elapsed() >= Duration::from_millis(150), "two checks ~200ms apart are needed");
    let resp = reqwest::get(gw.url("/v1/models")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "no_healthy_upstream");
    assert!(used.requests().await.is_empty(), "a down target gets no request");
    assert!(unused.requests().await.is_empty(), "an upstream no route uses is not probed");
    let text = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    let healthy: Vec<&str> = text.lines().filter(|l| l.starts_with("gw_target_healthy{")).collect();
    assert!(healthy.iter().any(|l| l.contains(r#"upstream="used""#) && l.ends_with(" 0")), "{healthy:?}");
    assert!(healthy.iter().any(|l| l.contains(r#"upstream="unused""#) && l.ends_with(" 1")), "{healthy:?}");
}

/// `retry 1 on timeout` with `timeout 1s`: each try gets half the timeout, so a GET stuck on
/// a slow target is answered by the other within the upstream's timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_try_leaves_time_for_the_next() {
    let slow = Mock::start(&["--delay-ms", "3000"]);
    let fast = Mock::start(&[]);
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream p {{
    target  "{}"
    target  "{}"
    timeout 1s
    retry   1 on timeout
}}
route r {{
    when GET "/v1/models"
    to   p
}}
"#,
        slow.url(),
        fast.url()
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let c = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        let started = Instant::now();
        assert_eq!(c.get(gw.url("/v1/models")).send().await.unwrap().status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    println!("retry on timeout: slowest answer {:.0}ms (a try gets 500ms)", slowest.as_secs_f64() * 1e3);
    assert!(slowest >= Duration::from_millis(450) && slowest < Duration::from_millis(1000), "{slowest:?}");
    let view = target_view(&gw, "", slow.addr).await;
    assert!(view["failures"].as_u64().unwrap() >= 1, "{view}");
}

/// `balance hash(header["x-session"])`: every request of a session goes to one target; when
/// that target dies its sessions move (retried at once, then ejected) and stay together.
#[tokio::test(flavor = "multi_thread")]
async fn a_hashed_session_sticks_to_one_target_and_moves_as_a_whole() {
    let at = [addr(), addr(), addr()];
    let mut mocks: Vec<Option<Mock>> = at.iter().map(|a| Some(Mock::start_at(*a, &[]))).collect();
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream p {{
    balance hash(header["x-session"])
    target  "http://{}"
    target  "http://{}"
    target  "http://{}"
    retry   2 on connect_error
}}
route r {{
    when GET "/v1/models"
    to   p
}}
"#,
        at[0], at[1], at[2]
    );
    let gw = Gw::start(GwSpec::new(&policy, ""));
    let c = reqwest::Client::new();
    let counts = || async {
        let mut v = vec![];
        for a in at {
            v.push(target_view(&gw, "", a).await["requests"].as_u64().unwrap());
        }
        v
    };
    // Which target serves each session, by the counts it moved.
    let mut home = vec![];
    for s in 0..12 {
        let before = counts().await;
        for _ in 0..5 {
            let r = c.get(gw.url("/v1/models")).header("x-session", format!("s{s}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let after = counts().await;
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(moved.iter().filter(|&&m| m == 5).count(), 1, "session s{s} split: {moved:?}");
        home.push(moved.iter().position(|&m| m == 5).unwrap());
    }
    println!("hash: 12 sessions over 3 targets: {home:?}");
    assert!(home.iter().any(|&h| h != home[0]), "every session on one target: {home:?}");

    let dead = home[0];
    mocks[dead] = None;
    for _ in 0..6 {
        let r = c.get(gw.url("/v1/models")).header("x-session", "s0").send().await.unwrap();
        assert_eq!(r.status(), 200, "retried on another target");
    }
    let before = counts().await;
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/v1/models")).header("x-session", "s0").send().await.unwrap().status(), 200);
    }
    let after = counts().await;
    let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(moved[dead], 0, "the ejected target gets none: {moved:?}");
    assert_eq!(moved.iter().filter(|&&m| m == 5).count(), 1, "the session moved as a whole: {moved:?}");
    drop(mocks);
}
