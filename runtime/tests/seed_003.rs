//! Seed 003 end to end: the shipped `examples/gpu-inference` policy (salted token auth, a rate
//! limit and a response cache shared through Redis by two gateway replicas, health, metrics,
//! the configuration and worker views, trace context propagation), served by two real `gw`
//! processes and a real `redis-server`.

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod redis_server;
mod common;

use common::{Gw, GwSpec, Mock};
use redis_server::RedisServer;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gpu-inference");

fn start(mock: &Mock, redis: &RedisServer) -> Gw {
    let read = |f: &str| std::fs::read_to_string(format!("{EXAMPLE}/{f}")).unwrap();
    let policy = read("gateway.gwp")
        .replace("127.0.0.1:3000", "{LISTEN}")
        .replace("127.0.0.1:9184", "{ADMIN}")
        .replace("http://127.0.0.1:9109", "{UPSTREAM}");
    Gw::start(
        GwSpec::new(&policy, &mock.url())
            .file("teams.gwp", read("teams.gwp"))
            .file("keys/tokens.keys", read("keys/tokens.keys"))
            .env("GW_REDIS_URL", Box::leak(redis.url().into_boxed_str()))
            .env("GW_ADMIN_TOKEN", "admin"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_the_job_limit_through_redis() {
    require_redis!();
    let redis = RedisServer::start();
    let mock = Mock::start(&[]);
    let (a, b) = (start(&mock, &redis), start(&mock, &redis));
    let c = reqwest::Client::new();
    let submit = |gw: &Gw, token: &str| {
        // x-mock-echo: the mock (standing for FastAPI) answers 200 with what it received.
        c.post(gw.url("/api/v1/jobs"))
            .bearer_auth(token)
            .header("x-mock-echo", "1")
            .body(r#"{"model":"sdxl","prompt":"a lighthouse"}"#)
            .send()
    };
    // 20/min with a burst of 5 per token, wherever the requests land.
    let mut statuses = vec![];
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(submit(gw, "tok-lab-1").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429, 429], "one limit across both replicas");
    assert_eq!(submit(&b, "tok-lab-2").await.unwrap().status(), 200, "each token has its own counter");
    assert_eq!(submit(&a, "tok-nope").await.unwrap().status(), 401);
    let by_header = c.get(a.url("/api/v1/jobs/job-42")).header("x-api-key", "tok-batch-1").send().await.unwrap();
    assert_eq!(by_header.status(), 404, "forwarded (the mock knows no jobs)");
    let bad_id = c.get(a.url("/api/v1/jobs/job:42")).header("x-api-key", "tok-batch-1").send().await.unwrap();
    assert_eq!(bad_id.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_workers_and_trace_context() {
    require_redis!();
    let redis = RedisServer::start();
    let mock = Mock::start(&[]);
    let gw = start(&mock, &redis);
    let c = reqwest::Client::new();
    assert_eq!(c.get(gw.url("/gateway/health")).send().await.unwrap().status(), 200);

    // A trace is started when the client sends none, and continued when it does.
    let job = |token: &str| c.post(gw.url("/api/v1/jobs")).bearer_auth(token).header("x-mock-echo", "1");
    job("tok-lab-1").body(r#"{"model":"sdxl"}"#).send().await.unwrap();
    job("tok-lab-2")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(r#"{"model":"sdxl"}"#)
        .send()
        .await
        .unwrap();
    let seen = mock.requests().await;
    let trace = |i: usize| common::header_of(&seen[i], "traceparent")[0].to_string();
    let started = trace(0);
    assert_eq!(started.len(), 55, "{started}");
    assert!(started.starts_with("00-"));
    assert!(trace(1).starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "the client's trace is continued");

    let metrics = c.get(gw.url("/gateway/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"gw_requests_total{route="submit_job",status="200"} 2"#), "{metrics}");
    assert!(metrics.contains("gw_redis_duration_seconds"), "Redis latency is exported");
    let workers: serde_json::Value =
        c.get(gw.url("/api/v1/workers")).bearer_auth("tok-lab-1").send().await.unwrap().json().await.unwrap();
    let target = &workers["upstreams"][0]["targets"][0];
    assert_eq!(target["health"], "ok", "{workers}");
    assert_eq!(target["requests"], 2);
}

/// The seed's cache-plugin: queue stats cached for 5 s per team, in Redis, so what one replica
/// stored the other answers; the seed's `/gateway/config`, with no secret in it.
#[tokio::test(flavor = "multi_thread")]
async fn queue_stats_are_cached_across_replicas_and_the_config_is_served() {
    require_redis!();
    let redis = RedisServer::start();
    let mock = Mock::start(&[]);
    let (a, b) = (start(&mock, &redis), start(&mock, &redis));
    let c = reqwest::Client::new();
    // x-mock-echo: the mock (standing for FastAPI) answers 200 with what it received.
    let stats = |gw: &Gw, token: &str| {
        c.get(gw.url("/api/v1/queue/stats")).header("x-api-key", token.to_string()).header("x-mock-echo", "1").send()
    };
    let cache_of = |r: &reqwest::Response| r.headers()["x-gw-cache"].to_str().unwrap().to_string();
    let first = stats(&a, "tok-lab-1").await.unwrap();
    assert_eq!((first.status().as_u16(), cache_of(&first)), (200, "miss".to_string()));
    let first = first.text().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let second = stats(&b, "tok-lab-2").await.unwrap();
    assert_eq!(cache_of(&second), "hit", "the other replica, the same team");
    assert_eq!(second.text().await.unwrap(), first);
    let other_team = stats(&b, "tok-batch-1").await.unwrap();
    assert_eq!(cache_of(&other_team), "miss", "teams never share an answer");
    let seen = mock.requests().await;
    assert_eq!(seen.iter().filter(|r| r["path"] == "/api/v1/queue/stats").count(), 2);

    let config = c.get(a.url("/gateway/config")).header("x-api-key", "tok-lab-1").send().await.unwrap();
    assert_eq!(config.status(), 200);
    let text = config.text().await.unwrap();
    // The Redis URL, the salt and the tokens never show; the admin token only as `true`.
    for secret in [redis.url().as_str(), "gw-example-salt", "tok-lab-1"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let stats_route = v["routes"].as_array().unwrap().iter().find(|r| r["name"] == "queue_stats").unwrap();
    assert_eq!(stats_route["cache"]["ttl_ns"], 5_000_000_000u64);
    assert_eq!(v["settings"]["admin"]["token"], true);
    assert_eq!(c.get(a.url("/gateway/config")).send().await.unwrap().status(), 401);
}
