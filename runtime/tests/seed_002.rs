//! Seed 002 end to end: the shipped `examples/namespaces` policy (namespaces chosen by header,
//! matcher rules, per-namespace QPS, per-model token windows, the token service and usage),
//! served by the real `gw` in front of the mock.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{Gw, GwSpec, Mock};
use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/namespaces");

fn start(mock: &Mock) -> Gw {
    let policy = std::fs::read_to_string(format!("{EXAMPLE}/gateway.gwp")).unwrap();
    let policy = policy
        .replace("127.0.0.1:8082", "{LISTEN}")
        .replace("127.0.0.1:9183", "{ADMIN}")
        .replace("http://127.0.0.1:9103", "{UPSTREAM}")
        .replace("http://127.0.0.1:9104", "{UPSTREAM}")
        .replace("http://127.0.0.1:9105", "{UPSTREAM}");
    let keys = std::fs::read_to_string(format!("{EXAMPLE}/keys/namespaces.keys")).unwrap();
    Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/namespaces.keys", keys).env("GW_ADMIN_TOKEN", "t"))
}

fn chat(gw: &Gw, tenant: &str, key: &str, body: Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("host", "gateway.ai-gateway.local")
        .header("x-tenant", tenant)
        .header("x-api-key", key)
        .body(body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_route_by_header_and_keep_their_limits() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let ent =
        serde_json::json!({"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(chat(&gw, "enterprise", "sk-ent-1", ent.clone()).send().await.unwrap().status(), 200);
    assert_eq!(
        chat(&gw, "enterprise", "sk-dev-1", ent.clone()).send().await.unwrap().status(),
        403,
        "not its namespace"
    );
    let big = serde_json::json!({"model": "gpt-4o", "max_tokens": 8192, "messages": []});
    assert_eq!(chat(&gw, "enterprise", "sk-ent-1", big).send().await.unwrap().status(), 400);
    let gpt_in_dev = serde_json::json!({"model": "gpt-4o", "messages": []});
    assert_eq!(chat(&gw, "dev", "sk-dev-1", gpt_in_dev).send().await.unwrap().status(), 403);

    // dev's token window for llama/qwen: 5k tokens a minute per key.
    let too_big =
        serde_json::json!({"model": "llama-3-8b", "max_tokens": 6000, "messages": [{"role": "user", "content": "hi"}]});
    let refused = chat(&gw, "dev", "sk-dev-1", too_big).send().await.unwrap();
    assert_eq!(refused.status(), 400, "more than the whole window: never fits, not a 429 to retry");
    assert!(refused.headers().get("retry-after").is_none());
    let e: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(e["error"]["code"], "request_too_large_for_budget", "{e}");

    // dev's QPS: 5 a second (the refused requests above were charged to none).
    let llama =
        serde_json::json!({"model": "llama-3-8b", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = vec![];
    for _ in 0..8 {
        statuses.push(chat(&gw, "dev", "sk-dev-1", llama.clone()).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.iter().filter(|s| **s == 200).count() <= 5, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_service_and_usage_endpoints_answer() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::new();
    let counted: Value = c
        .post(gw.url("/calculate"))
        .header("host", "tokens.ai-gateway.local")
        .header("x-api-key", "sk-ent-1")
        .body(r#"{"model": "gpt-4o", "text": "hello world"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counted["tokens"], 2);
    assert_eq!(counted["encoding"], "o200k_base");

    let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    chat(&gw, "enterprise", "sk-ent-2", body).send().await.unwrap();
    let usage = c
        .get(gw.url("/api/v1/namespaces/usage/overview"))
        .header("host", "api.ai-gateway.local")
        .bearer_auth("sk-ops-1")
        .send()
        .await
        .unwrap();
    assert_eq!(usage.status(), 200);
    let usage: Value = usage.json().await.unwrap();
    let ent = usage["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "enterprise").unwrap();
    assert_eq!(ent["traffic"]["requests_last_minute"], 1, "{usage}");
    let not_ops = c
        .get(gw.url("/api/v1/namespaces/usage/overview"))
        .header("host", "api.ai-gateway.local")
        .bearer_auth("sk-dev-1")
        .send()
        .await
        .unwrap();
    assert_eq!(not_ops.status(), 403);
}
