//! End-to-end tests of `gw serve` over real HTTP on loopback: the real binary in front of the
//! mock upstream (`gw mock`), both child processes.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{header_of, key_line, users_keys, Gw, GwSpec, Mock, BASIC_POLICY};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there"}]}"#;

fn basic(mock: &Mock) -> Gw {
    Gw::start(GwSpec::new(BASIC_POLICY, &mock.url()).file("keys/users.keys", users_keys()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap()
}

/// The body is the one error shape, with the request id the response header carries.
async fn assert_error_shape(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let id = resp.headers().get("x-request-id").expect("x-request-id on errors").to_str().unwrap().to_string();
    assert_eq!(resp.headers().get("content-type").unwrap(), "application/json");
    let body: Value = resp.json().await.unwrap();
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(e["type"].as_str().is_some(), "{body}");
    assert_eq!(e["code"], code, "{body}");
    assert_eq!(e["request_id"], id.as_str(), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn json_completion_is_proxied_with_the_backend_key_and_without_the_client_key() {
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .header("content-type", "application/json")
        .header("x-request-id", "req-abc-123")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    assert!(resp.headers()["x-gw-policy"].to_str().unwrap().starts_with("1-"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = mock.requests().await;
    assert_eq!(seen.len(), 1);
    let rec = &seen[0];
    assert_eq!(rec["path"], "/v1/chat/completions");
    assert!(header_of(rec, "x-api-key").is_empty(), "the client key reached the upstream: {rec}");
    assert_eq!(header_of(rec, "authorization"), vec!["Bearer backend-secret"]);
    assert_eq!(header_of(rec, "x-request-id"), vec!["req-abc-123"]);
    let trace = header_of(rec, "traceparent");
    assert!(trace[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{trace:?}");
    assert!(!trace[0].contains("00f067aa0ba902b7"), "a new span id for this hop");
    assert!(!rec.to_string().contains("sk-test-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_key_is_accepted_and_removed() {
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let resp = client().get(gw.url("/v1/models")).bearer_auth("sk-test-2").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = mock.requests().await;
    assert_eq!(header_of(&seen[0], "authorization"), vec!["Bearer backend-secret"]);
    assert!(!seen[0].to_string().contains("sk-test-2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failures_get_401() {
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let c = client();
    let none = c.get(gw.url("/v1/models")).send().await.unwrap();
    assert_error_shape(none, 401, "missing_api_key").await;
    let wrong = c.get(gw.url("/v1/models")).header("x-api-key", "sk-wrong").send().await.unwrap();
    let body = assert_error_shape(wrong, 401, "invalid_api_key").await;
    assert!(!body.to_string().contains("sk-wrong"), "the key is not echoed");
    let wrong_bearer = c.get(gw.url("/v1/models")).bearer_auth("sk-wrong").send().await.unwrap();
    assert_error_shape(wrong_bearer, 401, "invalid_api_key").await;
    // Two keys where one is read: refused whatever their order.
    for (first, second) in [("sk-test-1", "sk-wrong"), ("sk-wrong", "sk-test-1")] {
        let twice = c.get(gw.url("/v1/models")).header("x-api-key", first).header("x-api-key", second);
        assert_error_shape(twice.send().await.unwrap(), 400, "ambiguous_credentials").await;
    }
    assert!(mock.requests().await.is_empty(), "nothing reached the upstream");
    assert!(!gw.proc.log().contains("sk-wrong"), "keys are never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_chunks_arrive_as_they_are_produced() {
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let started = Instant::now();
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .header("x-mock-chunks", "6")
        .header("x-mock-chunk-delay-ms", "150")
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();
    let mut first = None;
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        first.get_or_insert_with(|| started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let last = started.elapsed();
    let first = first.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.matches("chat.completion.chunk").count() >= 6);
    // Six chunks 150 ms apart: the first must reach the client long before the last.
    assert!(last - first >= Duration::from_millis(600), "first chunk at {first:?}, end at {last:?}: buffered?");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_dying_mid_stream_is_not_a_clean_end() {
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .header("x-mock-chunks", "10")
        .header("x-mock-chunk-delay-ms", "20")
        .header("x-mock-die-after", "3")
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut chunks = 0;
    let mut error = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(_) => chunks += 1,
            Err(_) => {
                error = true;
                break;
            }
        }
    }
    assert!(chunks >= 1, "some chunks arrived before the failure");
    assert!(error, "the client must see an incomplete body, not a clean end");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_cleartext_requests_are_served() {
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let stream = h2
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert!(stream.text().await.unwrap().contains("[DONE]"));
}

const HYGIENE_POLICY: &str = r#"
gateway {
    listen    "{LISTEN}"
    admin     "{ADMIN}"
    forwarded append
}
upstream mock { target "{UPSTREAM}" }
route models {
    when  GET "/v1/models"
    strip header "cookie"
    set   header "x-gateway" = "gw"
    to    mock
}
route legacy {
    when    GET "/legacy/{id}"
    rewrite path "/v1/items/{id}"
    to      mock
}
route prefixed {
    when    GET "/api/*"
    rewrite prefix "/api" => "/v1"
    to      mock
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_are_removed_and_transforms_applied() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(HYGIENE_POLICY, &mock.url()));
    let resp = client()
        .get(gw.url("/v1/models?x=1"))
        .header("connection", "keep-alive, x-conn-private")
        .header("x-conn-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic abc")
        .header("te", "trailers")
        .header("upgrade", "h2c")
        .header("cookie", "session=1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rec = &mock.requests().await[0];
    for gone in ["x-conn-private", "keep-alive", "proxy-authorization", "te", "upgrade", "cookie"] {
        assert!(header_of(rec, gone).is_empty(), "{gone} reached the upstream: {rec}");
    }
    assert_eq!(header_of(rec, "x-kept"), vec!["yes"]);
    assert_eq!(header_of(rec, "x-gateway"), vec!["gw"]);
    assert_eq!(header_of(rec, "x-forwarded-for"), vec!["10.0.0.1, 127.0.0.1"]);
    assert_eq!(rec["query"], "x=1");

    mock.clear().await;
    assert_eq!(client().get(gw.url("/legacy/42")).send().await.unwrap().status(), 404, "the mock has no /v1/items");
    assert_eq!(client().get(gw.url("/api/models")).send().await.unwrap().status(), 200);
    let paths: Vec<String> = mock.requests().await.iter().map(|r| r["path"].as_str().unwrap().to_string()).collect();
    assert_eq!(paths, vec!["/v1/items/42", "/v1/models"]);
}

const ERRORS_POLICY: &str = r#"
gateway {
    listen      "{LISTEN}"
    admin       "{ADMIN}"
    max_body    1KB
    max_headers 30
}
upstream mock {
    target  "{UPSTREAM}"
    timeout 400ms
}
upstream busy {
    target          "{UPSTREAM}"
    connect_timeout 100ms
    max_connections 1
}
upstream dead {
    target          "http://127.0.0.1:{DEAD}"
    connect_timeout 500ms
}
keys users from "keys/users.keys"

route chat {
    when POST "/v1/chat/completions"
    auth users
    deny 403 "gpt-4 is not for beta" if tenant == "beta" and body.model matches /^gpt-4/
    deny 400 "messages are required" if not body.messages exists
    to   mock
}
route upload {
    when POST "/v1/files"
    to   mock
}
route slow {
    when GET "/slow"
    to   busy
}
route dead {
    when GET "/dead"
    to   dead
}
route models {
    when GET "/v1/models"
    to   mock
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_error_status_has_the_json_shape() {
    let mock = Mock::start(&[]);
    let dead_port = common::free_port().to_string();
    let policy = ERRORS_POLICY.replace("{DEAD}", &dead_port);
    let gw = Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/users.keys", users_keys()));
    let c = client();
    let chat = |key: &str, body: &str| {
        c.post(gw.url("/v1/chat/completions")).header("x-api-key", key).body(body.to_string()).send()
    };

    assert_error_shape(chat("sk-test-1", r#"{"model":"gpt-4o"}"#).await.unwrap(), 400, "denied").await;
    assert_error_shape(c.get(gw.url("/v1%2fmodels")).send().await.unwrap(), 400, "invalid_path").await;
    assert_error_shape(chat("nope", CHAT).await.unwrap(), 401, "invalid_api_key").await;
    let denied = assert_error_shape(chat("sk-test-2", CHAT).await.unwrap(), 403, "denied").await;
    assert_eq!(denied["error"]["message"], "gpt-4 is not for beta");
    assert_error_shape(c.get(gw.url("/nowhere")).send().await.unwrap(), 404, "no_route").await;
    let wrong_method = c.delete(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET");
    assert_error_shape(wrong_method, 405, "method_not_allowed").await;

    // 413: a declared length over max_body, a buffered body over it, a streamed one over it.
    let big = "x".repeat(4096);
    assert_error_shape(chat("sk-test-1", &big).await.unwrap(), 413, "request_too_large").await;
    let resp = c.post(gw.url("/v1/files")).body(big.clone()).send().await.unwrap();
    assert_error_shape(resp, 413, "request_too_large").await;
    let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let resp = c.post(gw.url("/v1/files")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_error_shape(resp, 413, "request_too_large").await;
    let small = c.post(gw.url("/v1/files")).body("ok").send().await.unwrap();
    assert_ne!(small.status(), 413);

    // 431: more headers than max_headers.
    let mut many = c.get(gw.url("/v1/models"));
    for i in 0..40 {
        many = many.header(format!("x-h{i}"), "v");
    }
    assert_error_shape(many.send().await.unwrap(), 431, "headers_too_large").await;

    // 502: nothing listens on the dead upstream's port.
    assert_error_shape(c.get(gw.url("/dead")).send().await.unwrap(), 502, "upstream_unavailable").await;

    // 504: the upstream answers after the route's 400 ms timeout.
    let slow = c.get(gw.url("/v1/models")).header("x-mock-delay-ms", "3000").send().await.unwrap();
    assert_error_shape(slow, 504, "upstream_timeout").await;

    // 503: the only connection slot of `busy` is held by a slow request.
    let holder = {
        let c = c.clone();
        let url = gw.url("/slow");
        tokio::spawn(async move { c.get(url).header("x-mock-delay-ms", "1500").send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_error_shape(c.get(gw.url("/slow")).send().await.unwrap(), 503, "upstream_busy").await;
    assert_eq!(holder.await.unwrap().unwrap().status(), 404, "the slot holder got the mock's answer");

    let body = Value::from(mock.requests().await).to_string();
    assert!(!body.contains("sk-test"), "no client key reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_answer_and_need_the_token() {
    let mock = Mock::start(&[]);
    let policy = BASIC_POLICY.replace(r#"admin  "{ADMIN}""#, r#"admin  "{ADMIN}" token env("T_ADMIN_TOKEN")"#);
    let gw = Gw::start(
        GwSpec::new(&policy, &mock.url()).file("keys/users.keys", users_keys()).env("T_ADMIN_TOKEN", "adm-secret"),
    );
    let c = client();
    c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap();
    assert_eq!(c.get(gw.admin_url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.admin_url("/ready")).send().await.unwrap().status(), 200);
    let no_token = c.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_error_shape(no_token, 401, "invalid_admin_token").await;
    let wrong = c.get(gw.admin_url("/metrics")).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // The seed's `?token=` form works too.
    assert_eq!(c.get(gw.admin_url("/metrics?token=adm-secret")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.admin_url("/metrics?token=nope")).send().await.unwrap().status(), 401);

    let metrics = c.get(gw.admin_url("/metrics")).bearer_auth("adm-secret").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"gw_requests_total{route="models",status="200"} 1"#), "{metrics}");
    assert!(metrics.contains("gw_request_duration_seconds_bucket"));
    assert!(metrics.contains("gw_upstream_duration_seconds_bucket"));
    assert!(metrics.contains("gw_requests_in_flight 0"));
    assert!(metrics.contains("gw_policy_generation 1"));

    let policy: Value =
        c.get(gw.admin_url("/admin/policy")).bearer_auth("adm-secret").send().await.unwrap().json().await.unwrap();
    assert_eq!(policy["generation"], 1);
    assert_eq!(policy["hash"].as_str().unwrap().len(), 64);
    assert!(policy["files"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().ends_with("users.keys")));
    assert!(!policy.to_string().contains("adm-secret"));

    let explain: Value = c
        .post(gw.admin_url("/admin/explain"))
        .bearer_auth("adm-secret")
        .body(r#"{"method":"GET","path":"/v1/models","headers":{"x-api-key":"sk-test-2"}}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(explain["status"], 200);
    assert_eq!(explain["decision"]["route"], "models");
    assert_eq!(explain["decision"]["identity"]["tenant"], "beta");
    assert!(explain["text"].as_str().unwrap().contains("route:   models"));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_sessions_pass_through_with_auth_on_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mock = Mock::start(&[]);
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream speech { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route session {
    when GET "/v1/realtime"
    auth users
    websocket
    to   speech
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &mock.url()).file("keys/users.keys", users_keys()));
    let url = format!("ws://{}/v1/realtime", gw.addr);

    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", "sk-test-1".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("upgrade through gw");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello over gw")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "hello over gw");
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_data().to_vec(), vec![1u8, 2, 3]);
    ws.close(None).await.unwrap();

    let refused = tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("an upgrade without a key must get 401, got {other:?}"),
    }
    let seen = mock.requests().await;
    assert!(!Value::from(seen).to_string().contains("sk-test-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_open_stream_then_exits_zero() {
    let mock = Mock::start(&[]);
    let mut gw = basic(&mock);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-api-key", "sk-test-1")
        .header("x-mock-chunks", "8")
        .header("x-mock-chunk-delay-ms", "150")
        .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut text = String::from_utf8_lossy(&stream.next().await.unwrap().unwrap()).into_owned();
    gw.proc.signal(15);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once draining.
    let refused = reqwest::Client::new().get(gw.url("/v1/models")).timeout(Duration::from_secs(2)).send().await;
    assert!(refused.is_err(), "a new connection was accepted while draining");
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("the stream finishes intact")));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let code = gw.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", gw.proc.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_stream_through_when_the_route_does_not_read_them() {
    let mock = Mock::start(&[]);
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" max_body 64MB }
upstream mock { target "{UPSTREAM}" }
route upload {
    when POST "/v1/files"
    to   mock
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &mock.url()));
    let chunks = futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 64 * 1024])));
    let resp = client()
        .post(gw.url("/v1/files"))
        .header("x-mock-echo", "1")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], 64 * 64 * 1024);
}

#[test]
fn start_up_errors_name_the_problem_and_exit_non_zero() {
    let (code, stderr) = common::serve_fails(
        r#"
gateway { listen "127.0.0.1:0" }
upstream u {
    target "http://127.0.0.1:1"
    header "authorization" = "Bearer " + env("GW_TEST_SURELY_UNSET_VAR")
}
route r { when GET "/" to u }
"#,
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("GW_TEST_SURELY_UNSET_VAR"), "{stderr}");

    let (code, stderr) = common::serve_fails("route r { when GET \"/\" to nowhere }\n", &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("gw::undefined_upstream"), "{stderr}");

    // What the compiler cannot see (a key file missing at start-up) is refused, not ignored.
    let (code, stderr) = common::serve_fails(
        "keys users from \"keys/nowhere.keys\"\nupstream u { target \"http://127.0.0.1:1\" }\nroute r {\n    when GET \"/\"\n    auth users\n    to   u\n}\n",
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("gw::keys_file_missing") && stderr.contains("keys/nowhere.keys"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_answers_429_with_retry_after_and_openai_headers() {
    let mock = Mock::start(&[]);
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route models {
    when  GET "/v1/models"
    auth  users
    limit rate 2/min per key
    to    mock
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &mock.url()).file("keys/users.keys", users_keys()));
    let c = client();
    let get = |key: &'static str| c.get(gw.url("/v1/models")).header("x-api-key", key).send();
    let first = get("sk-test-1").await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(get("sk-test-1").await.unwrap().status(), 200);
    let limited = get("sk-test-1").await.unwrap();
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.headers()["x-ratelimit-remaining-requests"], "0");
    assert_error_shape(limited, 429, "rate_limit_exceeded").await;
    assert_eq!(get("sk-test-2").await.unwrap().status(), 200, "another key has its own counter");
    assert_eq!(mock.requests().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_line_for_a_salted_set_is_checked_with_the_salt() {
    let mock = Mock::start(&[]);
    let salted = format!(
        "{} team ops\n",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!("{}{}", "pepper", "sk-salted").as_bytes()))
    );
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream mock { target "{UPSTREAM}" }
keys ops from "keys/ops.keys" salt env("T_SALT")
route models {
    when GET "/v1/models"
    auth ops
    to   mock
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &mock.url()).file("keys/ops.keys", salted).env("T_SALT", "pepper"));
    let ok = client().get(gw.url("/v1/models")).bearer_auth("sk-salted").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let _ = key_line("unused", "t", "n");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_terminated_and_https_upstreams_are_verified() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let mock = Mock::start(&[]);
    // Front: terminates TLS with the certificate, forwards to the mock.
    let front_policy = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
    tls    cert "tls/cert.pem" key "tls/key.pem"
}
upstream mock { target "{UPSTREAM}" }
route models { when GET "/v1/models" to mock }
"#;
    let front = Gw::start(
        GwSpec::new(front_policy, &mock.url())
            .file("tls/cert.pem", cert.cert.pem())
            .file("tls/key.pem", cert.key_pair.serialize_pem()),
    );
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let tls_client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
    let url = format!("https://localhost:{}/v1/models", front.addr.port());
    let resp = tls_client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("gpt-4o"));

    // Back: a gw whose upstream is the TLS front, trusting its certificate through SSL_CERT_FILE.
    let back_policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream front { target "{UPSTREAM}" }
route models { when GET "/v1/models" to front }
"#;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let front_url = format!("https://localhost:{}", front.addr.port());
    let back = Gw::start(GwSpec::new(back_policy, &front_url).env("SSL_CERT_FILE", ca.to_str().unwrap()));
    let resp = client().get(back.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", back.proc.log());

    // Without trusting the certificate the upstream is refused: 502, and nothing leaks.
    let untrusting = Gw::start(GwSpec::new(back_policy, &front_url));
    let resp = client().get(untrusting.url("/v1/models")).send().await.unwrap();
    assert_error_shape(resp, 502, "upstream_unavailable").await;
}

/// An upstream that answers every request with the head of an endless SSE stream, and reports
/// when the gateway closes the connection.
async fn endless_upstream() -> (String, tokio::sync::mpsc::Receiver<&'static str>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = sock.read(&mut buf).await.unwrap();
        sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let _ = tx.send("started").await;
        loop {
            let chunk = b"data: {\"tick\":1}\n\n";
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
            if sock.write_all(&framed).await.is_err() {
                let _ = tx.send("closed").await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_going_away_cancels_the_upstream_request() {
    let (upstream, mut events) = endless_upstream().await;
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream endless { target "{UPSTREAM}" }
route stream { when GET "/stream" to endless }
"#;
    let gw = Gw::start(GwSpec::new(policy, &upstream));
    let resp = client().get(gw.url("/stream")).send().await.unwrap();
    let mut body = resp.bytes_stream();
    assert!(body.next().await.unwrap().is_ok());
    assert_eq!(events.recv().await, Some("started"));
    drop(body);
    let closed = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(closed, Ok(Some("closed")), "the upstream connection outlived the client");
    let metrics = client().get(gw.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gw_requests_in_flight 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = Mock::start(&[]);
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" idle_timeout 500ms }
upstream mock { target "{UPSTREAM}" }
route models { when GET "/v1/models" to mock }
"#;
    let gw = Gw::start(GwSpec::new(policy, &mock.url()));
    let mut sock = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    sock.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    // Drain whatever is left of the answer, then expect the close.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the idle connection was not closed after 5 s"),
        }
    }
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(400), "closed too early: {idle:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_and_upstreams_views_show_tenants_and_target_health() {
    let mock = Mock::start(&[]);
    let dead = common::free_port();
    let policy = format!(
        r#"
gateway {{ listen "{{LISTEN}}" admin "{{ADMIN}}" }}
upstream mock {{ target "{{UPSTREAM}}" }}
upstream dead {{ target "http://127.0.0.1:{dead}" connect_timeout 300ms }}
keys users from "keys/users.keys"
tenant alpha {{ rate 100/min; concurrent 5 }}
route models {{
    when GET "/v1/models"
    auth users
    to   mock
}}
route dead {{
    when GET "/dead"
    to   dead
}}
"#
    );
    let gw = Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/users.keys", users_keys()));
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-2").send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/dead")).send().await.unwrap().status(), 502);

    let usage: Value = c.get(gw.admin_url("/admin/usage")).send().await.unwrap().json().await.unwrap();
    let alpha = usage["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "alpha").unwrap();
    assert_eq!(alpha["traffic"]["requests_last_minute"], 3, "{usage}");
    assert_eq!(alpha["traffic"]["in_flight"], 0);
    let limits = alpha["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 2);
    let rate = limits.iter().find(|l| l["limit"]["kind"]["kind"] == "rate").unwrap();
    let remaining = rate["state"]["remaining"].as_u64().unwrap();
    assert!((95..100).contains(&remaining), "three requests were charged: {rate}");
    let slots = limits.iter().find(|l| l["limit"]["kind"]["kind"] == "concurrent").unwrap();
    assert_eq!(slots["state"]["in_use"], 0, "{slots}");
    let beta = usage["undeclared_tenants"].as_array().unwrap();
    assert_eq!(beta[0]["tenant"], "beta", "{usage}");

    let ups: Value = c.get(gw.admin_url("/admin/upstreams")).send().await.unwrap().json().await.unwrap();
    let by_name = |n: &str| ups["upstreams"].as_array().unwrap().iter().find(|u| u["name"] == n).unwrap().clone();
    assert_eq!(by_name("mock")["targets"][0]["health"], "ok");
    assert_eq!(by_name("mock")["targets"][0]["requests"], 4);
    // One failure is counted; it takes consecutive failures to eject a target.
    assert_eq!(by_name("dead")["targets"][0]["health"], "ok");
    assert_eq!(by_name("dead")["targets"][0]["consecutive_failures"], 1);
    assert_eq!(by_name("dead")["targets"][0]["failures"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_slots_are_held_for_the_whole_stream_and_released() {
    let mock = Mock::start(&[]);
    let policy = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route chat {
    when  POST "/v1/chat/completions"
    auth  users
    limit concurrent 1 per key
    to    mock
}
"#;
    let gw = Gw::start(GwSpec::new(policy, &mock.url()).file("keys/users.keys", users_keys()));
    let c = client();
    let stream_req = || {
        c.post(gw.url("/v1/chat/completions"))
            .header("x-api-key", "sk-test-1")
            .header("x-mock-chunks", "5")
            .header("x-mock-chunk-delay-ms", "100")
            .body(r#"{"model":"gpt-4o","stream":true,"messages":[]}"#)
            .send()
    };
    let first = stream_req().await.unwrap();
    assert_eq!(first.status(), 200);
    // The head has arrived but the stream is open: the slot is still held.
    let second = stream_req().await.unwrap();
    assert_eq!(second.status(), 429);
    assert_error_shape(second, 429, "concurrency_limit_exceeded").await;
    assert!(first.text().await.unwrap().contains("[DONE]"));
    assert_eq!(stream_req().await.unwrap().status(), 200, "released at the end of the stream");

    // A client leaving mid-stream gives the slot back too, every time: as soon as gw notices
    // (at its next write to the closed connection, within a chunk interval).
    for i in 0..20 {
        let deadline = Instant::now() + Duration::from_secs(2);
        let resp = loop {
            let resp = stream_req().await.unwrap();
            if resp.status() == 200 || Instant::now() > deadline {
                break resp;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(resp.status(), 200, "round {i}: the slot was not given back");
        let mut body = resp.bytes_stream();
        let _ = body.next().await;
        drop(body);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stream_req().await.unwrap().status(), 200, "a slot leaked");
}

/// `promtool check metrics` (Debian's prometheus package) accepts what `/metrics` serves.
#[tokio::test(flavor = "multi_thread")]
async fn promtool_accepts_the_metrics() {
    let Some(promtool) = common::require_tool("promtool", "prometheus") else { return };
    let mock = Mock::start(&[]);
    let gw = basic(&mock);
    let c = client();
    c.get(gw.url("/v1/models")).header("x-api-key", "sk-test-1").send().await.unwrap();
    c.get(gw.url("/v1/models")).send().await.unwrap();
    c.get(gw.url("/nowhere")).send().await.unwrap();
    let metrics = c.get(gw.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool refused /metrics:\n{report}\n{metrics}");
    assert!(report.trim().is_empty(), "promtool has lint findings:\n{report}");
}
