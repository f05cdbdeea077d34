//! Seed 004 end to end: the shipped `examples/polyagent` policy served by the real `gw` in
//! front of the mock upstream: API keys, JWTs and basic auth on one route, and CORS answered by
//! gw, also in a real browser (headless Chromium) loading a page from another loopback origin.
//! The example's `cores` pool (balancing, health, retries) is replaced by the mock: gw serve
//! does not implement pools yet.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{header_of, require_tool, Gw, GwSpec, Mock};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/polyagent");
const ISSUER_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/auth_keys/issuer.key");

fn example_file(rel: &str) -> String {
    std::fs::read_to_string(format!("{EXAMPLE}/{rel}")).unwrap()
}

/// The example's policy with its ports replaced and its pool by the mock.
fn policy() -> String {
    let text = example_file("gateway.gwp");
    let start = text.find("upstream cores {").unwrap();
    let end = start + text[start..].find("\n}\n").unwrap() + 3;
    let text = format!("{}upstream cores {{ target \"{{UPSTREAM}}\" }}\n{}", &text[..start], &text[end..]);
    text.replace("127.0.0.1:8084", "{LISTEN}").replace("127.0.0.1:9185", "{ADMIN}")
}

fn start(mock: &Mock, policy: &str) -> Gw {
    Gw::start(
        GwSpec::new(policy, &mock.url())
            .file("keys/clients.keys", example_file("keys/clients.keys"))
            .file("keys/issuer.pem", example_file("keys/issuer.pem"))
            .file("keys/operators.htpasswd", example_file("keys/operators.htpasswd"))
            .env("GW_ADMIN_TOKEN", "admin-token"),
    )
}

fn token(sub: &str, tenant: &str, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"sub": sub, "tenant": tenant, "iss": "https://auth.polyagent.example", "aud": "polyagent", "exp": now + exp_in});
    let key = EncodingKey::from_rsa_pem(&std::fs::read(ISSUER_KEY).unwrap()).unwrap();
    encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_jwts_and_passwords_reach_the_cores_and_nothing_else_does() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy());
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = gw.url("/api/v1/models");
    let jwt = token("carol", "web", 300);
    assert_eq!(c.get(&url).bearer_auth("pa-web-1").send().await.unwrap().status(), 200, "API key");
    assert_eq!(c.get(&url).bearer_auth(&jwt).send().await.unwrap().status(), 200, "JWT");
    assert_eq!(c.get(&url).basic_auth("ops", Some("pa-ops-pass")).send().await.unwrap().status(), 200, "password");
    let refused = [
        c.get(&url).bearer_auth(token("carol", "web", -120)).send().await.unwrap(),
        c.get(&url).bearer_auth("pa-nope").send().await.unwrap(),
        c.get(&url).basic_auth("ops", Some("nope")).send().await.unwrap(),
        c.get(&url).send().await.unwrap(),
    ];
    for r in refused {
        assert_eq!(r.status(), 401);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["message"], "Invalid or expired credentials");
    }
    let seen = mock.requests().await;
    assert_eq!(seen.len(), 3, "refused requests never reach the cores");
    for rec in &seen {
        assert!(header_of(rec, "authorization").is_empty(), "credentials are never forwarded: {rec}");
    }
    assert!(!gw.proc.log().contains(&jwt) && !gw.proc.log().contains("pa-ops-pass"));
}

#[tokio::test(flavor = "multi_thread")]
async fn preflights_are_answered_by_gw_and_answers_carry_cors_headers() {
    let mock = Mock::start(&[]);
    let gw = start(&mock, &policy());
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/api/v1/chat"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "Content-Type, Authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(h("access-control-allow-methods").as_deref(), Some("GET, POST"));
    assert_eq!(h("access-control-allow-headers").as_deref(), Some("content-type, authorization"));
    let r = c
        .get(gw.url("/api/v1/models"))
        .header("origin", "https://app.example.com")
        .bearer_auth("pa-web-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = c.get(gw.url("/api/v1/models")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "*", "a refusal is readable by the page too");
    assert_eq!(mock.requests().await.len(), 1, "the preflight never reached the cores");
}

/// A policy whose CORS allows one exact origin (with credentials) and its subdomain pattern.
const BROWSER_POLICY: &str = r#"
gateway { listen "{LISTEN}" admin "{ADMIN}" }
upstream mock { target "{UPSTREAM}" }
keys clients from "keys/clients.keys"
route models {
    when GET "/api/v1/models"
    auth clients via bearer
    cors origins ["{ORIGIN}", "https://*.example.com"] headers ["authorization"] credentials max_age 1m
    to   mock
}
"#;

/// Serve `page` to every request on a loopback port, from a thread; the port is returned.
fn serve_page(page: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                page.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(page.as_bytes());
        }
    });
    port
}

/// The page calls gw, whose address is its query string (a cross-origin request with
/// `Authorization`, so the browser sends a preflight first), with a synchronous XHR so that
/// the result is in the DOM when it is dumped.
const PAGE: &str = r#"<!doctype html><html><body><pre id="result">pending</pre><script>
var out = document.getElementById("result");
try {
  var x = new XMLHttpRequest();
  x.open("GET", decodeURIComponent(location.search.slice(1)) + "/api/v1/models", false);
  x.withCredentials = true;
  x.setRequestHeader("Authorization", "Bearer pa-web-1");
  x.send();
  out.textContent = "STATUS " + x.status + " " + x.responseText.slice(0, 40);
} catch (e) {
  out.textContent = "BLOCKED " + e.name;
}
</script></body></html>"#;

fn chromium_dump(chromium: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
            "--timeout=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn result_of(dom: &str) -> String {
    let open = "<pre id=\"result\">";
    let Some(start) = dom.find(open).map(|i| i + open.len()) else { return format!("no result in {dom:?}") };
    let end = dom[start..].find("</pre>").map_or(dom.len(), |i| start + i);
    dom[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_may_call_gw_from_an_allowed_origin_only() {
    let Some(chromium) = require_tool("chromium", "chromium") else { return };
    let mock = Mock::start(&[]);
    // Two pages on two loopback origins (gw is a third); only the first is allowed.
    let allowed = serve_page(PAGE.to_string());
    let refused = serve_page(PAGE.to_string());
    let policy = BROWSER_POLICY.replace("{ORIGIN}", &format!("http://127.0.0.1:{allowed}"));
    let gw = Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/clients.keys", example_file("keys/clients.keys")));
    let gw_url = format!("http://{}", gw.addr);

    let dom = chromium_dump(&chromium, &format!("http://127.0.0.1:{allowed}/?{gw_url}"));
    let result = result_of(&dom);
    assert!(result.starts_with("STATUS 200 "), "the allowed origin reads the answer: {result}");
    let dom = chromium_dump(&chromium, &format!("http://127.0.0.1:{refused}/?{gw_url}"));
    let result = result_of(&dom);
    assert!(result.starts_with("BLOCKED"), "the browser blocks another origin: {result}");
    // The refused origin's preflight was answered by gw, so its request never left the browser.
    assert_eq!(mock.requests().await.len(), 1, "only the allowed page's request reached the upstream");
}
