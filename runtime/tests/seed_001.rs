//! Seed 001 end to end: the shipped `examples/unified-proxy` policy, unchanged but for its
//! ports, served by the real `gw` in front of the mock upstream.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{header_of, Gw, GwSpec, Mock};
use futures_util::StreamExt;
use serde_json::Value;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/unified-proxy");

fn start(mock: &Mock) -> Gw {
    let policy = std::fs::read_to_string(format!("{EXAMPLE}/gateway.gwp")).unwrap();
    let policy = policy
        .replace("127.0.0.1:8514", "{LISTEN}")
        .replace("127.0.0.1:9182", "{ADMIN}")
        .replace("http://127.0.0.1:9102", "{UPSTREAM}");
    let keys = std::fs::read_to_string(format!("{EXAMPLE}/keys/users.keys")).unwrap();
    Gw::start(
        GwSpec::new(&policy, &mock.url())
            .file("keys/users.keys", keys)
            .env("BACKEND_API_KEY", "real-backend-key")
            .env("GW_ADMIN_TOKEN", "admin-token"),
    )
}

const BODY: &str = r#"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"What is Python?"},{"role":"assistant","content":"A language."},{"role":"user","content":"How to learn it?"}],"temperature":0.7}"#;

#[tokio::test(flavor = "multi_thread")]
async fn users_reach_the_backend_through_one_endpoint_with_the_real_key() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = gw.url("/proxy/miniai/v2/chat/completions");

    let by_header = c
        .post(&url)
        .header("x-api-key", "sk-user-1")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-business", "kept")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let answer: Value = by_header.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");

    let by_bearer = c.post(&url).bearer_auth("sk-user-3").body(BODY).send().await.unwrap();
    assert_eq!(by_bearer.status(), 200);

    let seen = mock.requests().await;
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert_eq!(rec["path"], "/miniai/v2/chat/completions", "the /proxy prefix is removed");
        assert_eq!(header_of(rec, "authorization"), vec!["Bearer real-backend-key"]);
        assert!(header_of(rec, "x-api-key").is_empty());
        assert!(header_of(rec, "x-forwarded-for").is_empty(), "forwarded strip");
        assert_eq!(header_of(rec, "user-agent"), vec!["M-FastGate (gw)"]);
        assert_eq!(rec["body"], BODY, "the body passes unchanged");
        assert!(!rec.to_string().contains("sk-user"));
    }
    assert_eq!(header_of(&seen[0], "x-business"), vec!["kept"]);

    let bad_key = c.post(&url).header("x-api-key", "your_user_api_key").body(BODY).send().await.unwrap();
    assert_eq!(bad_key.status(), 401);
    let bad_body = c.post(&url).header("x-api-key", "sk-user-1").body(r#"{"prompt":"hi"}"#).send().await.unwrap();
    assert_eq!(bad_body.status(), 400);
    let e: Value = bad_body.json().await.unwrap();
    assert_eq!(e["error"]["message"], "Invalid request format");
    assert_eq!(c.get(gw.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(mock.requests().await.len(), 2, "refused requests never reach the backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_chat_completions_are_forwarded_chunk_by_chunk() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let resp = reqwest::Client::new()
        .post(gw.url("/proxy/miniai/v2/chat/completions"))
        .header("x-api-key", "sk-user-2")
        .header("x-mock-chunks", "5")
        .header("x-mock-chunk-delay-ms", "100")
        .body(r#"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"Tell me a story"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut reads = 0;
    let mut text = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        reads += 1;
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(reads >= 5, "the answer arrived in {reads} reads: buffered?");
    assert!(text.trim_end().ends_with("data: [DONE]"));
}
