//! The operator's views on the real `gw`: `serve config` / `GET /admin/config` (the policy as
//! served, no secret in it), `GET /admin/requests` (the last requests, filtered, no key
//! material) and usage per route in `/admin/usage`.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{key_line, Gw, GwSpec, Mock};
use serde_json::Value;
use sha2::{Digest, Sha256};

const ADMIN_TOKEN: &str = "adm-tok-5ecret-71";
const BACKEND_KEY: &str = "sk-backend-5ecret-42";
const SALT: &str = "5alt-5ecret-13";
const REDIS_PASSWORD: &str = "redis-pa55-99";

fn policy() -> String {
    format!(
        r#"
gateway {{
    listen "{{LISTEN}}"
    admin  "{{ADMIN}}" token "{ADMIN_TOKEN}"
    state  redis env("T_REDIS_URL") on_error allow
}}
upstream mock {{
    target "{{UPSTREAM}}"
    header "authorization" = "Bearer " + env("T_BACKEND_KEY")
}}
keys users from "keys/users.keys" salt "{SALT}"
tenant alpha {{ rate 100/s }}
route chat {{
    when  POST "/v1/chat/completions"
    auth  users
    limit rate 50/s per key
    set   header "x-org" = env("T_BACKEND_KEY")
    cache 10s max 1MB
    to    mock
}}
route models {{
    when GET "/v1/models"
    auth users
    to   mock
}}
route config {{
    when  GET "/gateway/config"
    serve config
}}
"#
    )
}

fn salted(key: &str, tenant: &str, name: &str) -> (String, String) {
    let hash = hex::encode(Sha256::digest(format!("{SALT}{key}").as_bytes()));
    (format!("{hash} {tenant} {name}\n"), hash)
}

fn start(mock: &Mock) -> (Gw, Vec<String>) {
    let (a, ha) = salted("sk-op-1", "alpha", "op-1");
    let (b, hb) = salted("sk-op-2", "beta", "op-2");
    let upstream = mock.url();
    let text = policy();
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1/");
    let redis_url: &'static str = Box::leak(redis_url.into_boxed_str());
    let gw = Gw::start(
        GwSpec::new(&text, &upstream)
            .file("keys/users.keys", a + &b)
            .env("T_BACKEND_KEY", BACKEND_KEY)
            .env("T_REDIS_URL", redis_url),
    );
    // Also the unsalted hashes, should anything print those.
    let unsalted = key_line("sk-op-1", "alpha", "op-1");
    (gw, vec![ha, hb, unsalted.split(' ').next().unwrap().to_string()])
}

fn secrets(hashes: &[String]) -> Vec<String> {
    let mut s: Vec<String> =
        [ADMIN_TOKEN, BACKEND_KEY, SALT, REDIS_PASSWORD, "sk-op-1", "sk-op-2"].iter().map(|s| s.to_string()).collect();
    s.extend(hashes.iter().cloned());
    s
}

/// `/admin/requests` with a query: the records, after checking no secret is in them.
async fn list(gw: &Gw, hashes: &[String], q: &str) -> Vec<Value> {
    let (status, text) = admin(gw, &format!("/admin/requests{q}")).await;
    assert_eq!(status, 200, "{q}: {text}");
    for secret in secrets(hashes) {
        assert!(!text.contains(&secret), "`{secret}` in /admin/requests: {text}");
    }
    assert!(!text.contains("sk-wrong"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["requests"].as_array().unwrap().clone()
}

async fn admin(gw: &Gw, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new().get(gw.admin_url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_config_shows_the_policy_and_no_secret() {
    let mock = Mock::start(&[]);
    let (gw, hashes) = start(&mock);
    let served = reqwest::get(gw.url("/gateway/config")).await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    let served = served.text().await.unwrap();
    let (status, from_admin) = admin(&gw, "/admin/config").await;
    assert_eq!(status, 200);
    for text in [&served, &from_admin] {
        for secret in secrets(&hashes) {
            assert!(!text.contains(&secret), "`{secret}` leaked into the config view: {text}");
        }
    }
    let v: Value = serde_json::from_str(&served).unwrap();
    let routes: Vec<&str> = v["routes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(routes, ["chat", "models", "config"]);
    let chat = &v["routes"][0];
    assert_eq!(chat["auth"]["methods"][0]["set"], "users");
    assert_eq!(chat["auth"]["methods"][0]["kind"], "keys");
    assert_eq!(chat["cache"]["ttl_ns"], 10_000_000_000u64);
    assert_eq!(chat["cache"]["statuses"], serde_json::json!([200]));
    assert_eq!(chat["set_headers"], serde_json::json!(["x-org"]));
    assert_eq!(chat["action"], serde_json::json!({"kind": "to", "upstream": "mock"}));
    assert_eq!(chat["limits"][0]["kind"]["kind"], "rate");
    assert_eq!(v["upstreams"][0]["name"], "mock");
    assert_eq!(v["upstreams"][0]["headers"], serde_json::json!(["authorization"]));
    assert_eq!(v["tenants"][0]["name"], "alpha");
    assert_eq!(v["keysets"][0], serde_json::json!({"name": "users", "keys": 2, "salted": true}));
    assert_eq!(v["settings"]["state"], serde_json::json!({"kind": "redis", "url": "<redacted>", "on_error": "allow"}));
    assert_eq!(v["settings"]["admin"]["token"], true);
    // Without the admin token, the admin view is refused.
    let anon = reqwest::get(gw.admin_url("/admin/config")).await.unwrap();
    assert_eq!(anon.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_requests_are_filtered_and_hold_no_key() {
    let mock = Mock::start(&[]);
    let (gw, hashes) = start(&mock);
    let c = reqwest::Client::new();
    let chat = |key: &str, content: &str| {
        c.post(gw.url("/v1/chat/completions"))
            .header("x-api-key", key.to_string())
            .body(format!(r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{content}"}}]}}"#))
    };
    assert_eq!(chat("sk-op-1", "a").send().await.unwrap().status(), 200);
    assert_eq!(chat("sk-op-1", "a").send().await.unwrap().status(), 200);
    assert_eq!(chat("sk-op-2", "b").send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.url("/v1/models")).header("x-api-key", "sk-op-2").send().await.unwrap().status(), 200);
    assert_eq!(
        c.get(gw.url("/v1/models?api_key=sk-op-1")).header("x-api-key", "sk-wrong").send().await.unwrap().status(),
        401
    );
    // The last record is written as the answer ends: give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let all = list(&gw, &hashes, "").await;
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all[0]["status"], 401, "newest first");
    assert!(all.iter().all(|r| r["trace_id"].as_str().is_some_and(|t| t.len() == 32)));
    let alpha = list(&gw, &hashes, "?tenant=alpha").await;
    assert_eq!(alpha.len(), 2);
    // The cache is in Redis, which is down here: a miss each time, never an error.
    assert_eq!((alpha[0]["cache"].as_str(), alpha[1]["cache"].as_str()), (Some("miss"), Some("miss")));
    assert_eq!(list(&gw, &hashes, "?route=models").await.len(), 2);
    assert_eq!(list(&gw, &hashes, "?status=4xx").await.len(), 1);
    assert_eq!(list(&gw, &hashes, "?status=200&route=chat&limit=2").await.len(), 2);
    let (status, _) = admin(&gw, "/admin/requests?status=abc").await;
    assert_eq!(status, 400);

    // Usage per route, beside per tenant.
    let (_, usage) = admin(&gw, "/admin/usage").await;
    let v: Value = serde_json::from_str(&usage).unwrap();
    let route = |name: &str| v["routes"].as_array().unwrap().iter().find(|r| r["route"] == name).unwrap().clone();
    assert_eq!(route("chat")["traffic"]["requests_total"], 3, "{usage}");
    assert_eq!(route("models")["traffic"]["requests_total"], 1);
    assert!(route("models")["cache"].is_null());
    assert_eq!(route("chat")["cache"]["in_redis"], true);
}
