//! Token budgets end to end: reservations before forwarding, reconciliation with the
//! upstream's usage (JSON and SSE), the usage chunk gw asks for and hides, and the race of
//! concurrent requests against a nearly spent budget.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{users_keys, Gw, GwSpec, Mock};
use futures_util::StreamExt;
use serde_json::Value;

const POLICY: &str = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" audit "audit.jsonl" }
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route chat {
    when  POST "/v1/chat/completions"
    auth  users
    limit tokens 200/min per key
    to    mock
}
"#;

fn chat(max_tokens: u64, stream: bool, content: &str) -> String {
    serde_json::json!({
        "model": "gpt-4o",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    })
    .to_string()
}

async fn post(gw: &Gw, key: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", key)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_reserve_then_reconcile_with_the_reported_usage() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));

    // Prompt (about 10 tokens, bounded by 21: its bytes and overheads, reserved while the
    // budget has room for it) + 150 requested: reserved 171 of 200.
    let first = post(&gw, "sk-test-1", chat(150, false, "hello there")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-tokens"], "200");
    let remaining: u64 = first.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
    assert!((25..=45).contains(&remaining), "remaining {remaining}");
    let body: Value = first.json().await.unwrap();
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < 40, "the mock reports a small usage: {used}");

    // Reconciled down to what was used: another 160 fits again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(&gw, "sk-test-1", chat(150, false, "hello again")).await.status(), 200);
    // Now 2 × ~20 are used; a request reserving 190 does not fit.
    let refused = post(&gw, "sk-test-1", chat(180, false, "and again")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["x-ratelimit-remaining-tokens"], "0");
    let e: Value = refused.json().await.unwrap();
    assert_eq!(e["error"]["code"], "token_limit_exceeded");

    // A prompt alone over the whole budget can never pass: 400, before any upstream work.
    mock.clear().await;
    let huge = "word ".repeat(400);
    assert_eq!(post(&gw, "sk-test-2", chat(1, false, &huge)).await.status(), 400);
    assert!(mock.requests().await.is_empty());

    let metrics = reqwest::get(gw.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"gw_tokens_total{direction="prompt",model="gpt-4o",tenant="alpha"}"#), "{metrics}");
    let audit = std::fs::read_to_string(gw.path("audit.jsonl")).unwrap_or_default();
    let first_line: Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert!(first_line["prompt_tokens"].as_u64().is_some(), "{first_line}");
    assert!(first_line["completion_tokens"].as_u64().is_some(), "{first_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_charged_through_a_usage_chunk_the_client_never_sees() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    let resp = post(&gw, "sk-test-1", chat(100, true, "tell me a story")).await;
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let mut body = resp.bytes_stream();
    while let Some(c) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&c.unwrap()));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"usage\""), "the usage chunk gw asked for reached the client: {text}");
    let sent: Value = serde_json::from_str(mock.requests().await[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "gw asks the upstream for usage");

    // A client that asks for usage itself gets it.
    let mut own = serde_json::from_str::<Value>(&chat(100, true, "again")).unwrap();
    own["stream_options"] = serde_json::json!({"include_usage": true});
    let text = post(&gw, "sk-test-2", own.to_string()).await.text().await.unwrap();
    assert!(text.contains("\"usage\""), "{text}");

    // Both streams were charged what they used, not their reservations: room for more.
    for key in ["sk-test-1", "sk-test-2"] {
        assert_eq!(post(&gw, key, chat(150, false, "more")).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_cannot_all_slip_past_a_nearly_spent_budget() {
    let mock = Mock::start(&["--delay-ms", "300"]);
    let gw = std::sync::Arc::new(Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys())));
    // 20 requests at once, each reserving about 70 of the 200: at most two fit.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { post(&gw, "sk-test-1", chat(60, false, "hi")).await.status().as_u16() })
        })
        .collect();
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(admitted, 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 18);
}

fn chat_for(model: &str, max_tokens: u64, content: &str) -> String {
    serde_json::json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]})
        .to_string()
}

fn remaining_tokens(resp: &reqwest::Response) -> u64 {
    resp.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap()
}

/// Near a budget's edge the prompt is counted exactly: a request whose byte bound no longer
/// fits, but whose count does, is admitted and charged its count.
#[tokio::test(flavor = "multi_thread")]
async fn near_the_edge_the_prompt_is_counted_exactly() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    // Its bound (3 + 4 + 240 + 3 + 1) is over the whole budget, its count (about 50) is not:
    // counted exactly (the o200k table is loaded and waited for), admitted.
    let long = "hello ".repeat(40);
    let first = post(&gw, "sk-test-2", chat(1, false, &long)).await;
    assert_eq!(first.status(), 200, "a bound over the budget is no refusal when the count fits");
    assert!(remaining_tokens(&first) > 130, "charged its count, not its bound: {}", remaining_tokens(&first));

    // sk-test-1: one request in flight holds its bound (3 + 4 + 96 + 3 + 60 = 166 of 200).
    let slow = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .header("x-mock-delay-ms", "1500")
        .body(chat(60, false, &"hello ".repeat(16)))
        .send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Bound 3 + 4 + 30 + 3 = 40 > 34 left, count 3 + 1 + 5 + 3 = 12: admitted on its count.
    let near = post(&gw, "sk-test-1", chat(0, false, &"hello ".repeat(5))).await;
    assert_eq!(near.status(), 200, "refused on its bound near the edge");
    assert!(remaining_tokens(&near) >= 34 - 12 - 1, "charged its count: {}", remaining_tokens(&near));
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
}

/// A model of no known family is never counted in another family's encoding (it was counted
/// as cl100k_base): its prompt is reserved by its byte bound, which no encoding exceeds.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_is_reserved_by_its_bound() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(POLICY, &mock.url()).file("keys/users.keys", users_keys()));
    // 120 bytes of prose: about 25 cl100k tokens, a bound of 3 + 4 + 120 + 3 = 130.
    let prose = "The gateway reserves a bound of the prompt for a model whose encoding it does not know at all, ok?!!";
    assert_eq!(prose.len(), 100);
    let resp = post(&gw, "sk-test-1", chat_for("llama-3-8b", 10, &format!("{prose}{}", &prose[..20]))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(remaining_tokens(&resp), 200 - 140, "the bound (130) + 10 requested is reserved");
}
