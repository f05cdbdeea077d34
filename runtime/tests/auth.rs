//! JWT, basic auth and several credential sets on one route, end to end: the real `gw` in
//! front of the mock upstream. Every refused token gets the same 401, nothing reaches the
//! upstream, and the credential never does either.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{header_of, key_line, Gw, GwSpec, Mock};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/auth_keys");

const POLICY: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}

upstream mock { target "{UPSTREAM}" }

keys clients from "keys/clients.keys"

jwt issuer {
    alg      RS256
    key      "keys/issuer.pem"
    issuer   "https://auth.example.com"
    audience "polyagent"
    leeway   30s
    tenant   claim["org"]
}

basic staff from "keys/staff.htpasswd" tenant "ops"

route chat {
    when  GET "/v1/models"
    auth  clients or issuer or staff message "Invalid or expired API Key"
    deny  403 "guests may not chat" if claim["role"] == "guest"
    limit rate 2/min per claim["sub"]
    to    mock
}
"#;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

fn rs256(claims: &Value, key: &str) -> String {
    encode(&Header::new(Algorithm::RS256), claims, &EncodingKey::from_rsa_pem(&read(key)).unwrap()).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "org": "acme", "iss": "https://auth.example.com", "aud": "polyagent", "exp": now() + 600})
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn start(mock: &Mock) -> Gw {
    let hash = bcrypt::hash("hunter22", 4).unwrap();
    Gw::start(
        GwSpec::new(POLICY, &mock.url())
            .file("keys/clients.keys", key_line("sk-client-1", "web", "web-app"))
            .file("keys/issuer.pem", String::from_utf8(read("issuer.pem")).unwrap())
            .file("keys/staff.htpasswd", format!("# staff\nalice:{hash}\n")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_token_is_refused_with_the_same_401_and_a_good_one_is_a_limit_key() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = gw.url("/v1/models");
    let t = now();
    let other_iss =
        json!({"sub": "u", "org": "acme", "iss": "https://evil.example.com", "aud": "polyagent", "exp": t + 600});
    let other_aud =
        json!({"sub": "u", "org": "acme", "iss": "https://auth.example.com", "aud": "other", "exp": t + 600});
    let expired =
        json!({"sub": "u", "org": "acme", "iss": "https://auth.example.com", "aud": "polyagent", "exp": t - 120});
    let early = json!({"sub": "u", "org": "acme", "iss": "https://auth.example.com", "aud": "polyagent", "exp": t + 600, "nbf": t + 300});
    let good = rs256(&claims("u"), "issuer.key");
    let mut parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = b64url(claims("admin").to_string().as_bytes());
    parts[1] = &tampered_payload;
    let wrong_signature = parts.join(".");
    let none = format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(claims("u").to_string().as_bytes()));
    // Key confusion: an HS256 token "signed" with the issuer's public key as the secret.
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims("u"), &EncodingKey::from_secret(&read("issuer.pem"))).unwrap();
    let refused = [
        ("expired", rs256(&expired, "issuer.key")),
        ("not yet valid", rs256(&early, "issuer.key")),
        ("wrong signature", wrong_signature),
        ("wrong key", rs256(&claims("u"), "other.key")),
        ("alg none", none),
        ("HS256 against RS256", confused),
        ("wrong iss", rs256(&other_iss, "issuer.key")),
        ("wrong aud", rs256(&other_aud, "issuer.key")),
        ("not a token", "abc.def".to_string()),
    ];
    for (what, token) in &refused {
        let r = c.get(&url).bearer_auth(token).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["message"], "Invalid or expired API Key", "{what}: the same answer whatever failed");
        assert_eq!(e["error"]["code"], "unauthorized", "{what}");
    }
    let missing = c.get(&url).body("{}").send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let e: Value = missing.json().await.unwrap();
    assert_eq!(e["error"]["message"], "Invalid or expired API Key");
    assert!(mock.requests().await.is_empty(), "no refused request reaches the upstream");

    // A valid token passes; its `sub` is the limit's key (2 a minute per subject).
    for _ in 0..2 {
        assert_eq!(c.get(&url).bearer_auth(&good).body("{}").send().await.unwrap().status(), 200);
    }
    assert_eq!(c.get(&url).bearer_auth(&good).body("{}").send().await.unwrap().status(), 429);
    let other = rs256(&claims("v"), "issuer.key");
    assert_eq!(c.get(&url).bearer_auth(&other).body("{}").send().await.unwrap().status(), 200, "another subject");
    // A claim is a fact guards read.
    let mut guest = claims("g");
    guest["role"] = json!("guest");
    let r = c.get(&url).bearer_auth(rs256(&guest, "issuer.key")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Within the stated leeway (30s) a just-expired token still passes.
    let mut late = claims("late");
    late["exp"] = json!(t - 10);
    assert_eq!(c.get(&url).bearer_auth(rs256(&late, "issuer.key")).body("{}").send().await.unwrap().status(), 200);

    let seen = mock.requests().await;
    assert_eq!(seen.len(), 4);
    for rec in &seen {
        assert!(header_of(rec, "authorization").is_empty(), "the token is never forwarded: {rec}");
    }
    assert!(!gw.proc.log().contains(&good), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_basic_auth_share_a_route_and_the_password_never_reaches_the_upstream() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = gw.url("/v1/models");
    let r = c.get(&url).bearer_auth("sk-client-1").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200, "an API key by bearer");
    let r = c.get(&url).basic_auth("alice", Some("hunter22")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 200, "basic auth");
    for (user, pass) in [("alice", "wrong"), ("bob", "hunter22")] {
        let r = c.get(&url).basic_auth(user, Some(pass)).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
        assert!(challenge.unwrap_or_default().starts_with("Basic"), "browsers are asked for a password");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["message"], "Invalid or expired API Key");
    }
    let seen = mock.requests().await;
    assert_eq!(seen.len(), 2);
    for rec in &seen {
        assert!(header_of(rec, "authorization").is_empty(), "{rec}");
    }
}

const SLOW_POLICY: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}

upstream mock { target "{UPSTREAM}" }

basic staff from "keys/staff.htpasswd" tenant "ops"

route staff {
    when    GET "/staff"
    auth    staff
    respond 204
}

route open {
    when GET "/v1/models"
    auth none
    to   mock
}
"#;

/// bcrypt takes tens of milliseconds by design. On gw's event loop a few new passwords at once
/// stalled every other connection of the worker threads; they run on blocking threads now.
/// Judged by order, not by a clock: a public request sent while slow password checks are
/// under way is answered before any of them is.
#[tokio::test(flavor = "multi_thread")]
async fn slow_password_hashes_never_stall_other_requests() {
    let mock = Mock::start(&[]);
    // A cost high enough that each check takes a noticeable while, even in release builds.
    let hash = bcrypt::hash("right-password", 12).unwrap();
    let gw = Gw::start(GwSpec::new(SLOW_POLICY, &mock.url()).file("keys/staff.htpasswd", format!("alice:{hash}\n")));
    let c = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
    assert_eq!(c.get(gw.url("/v1/models")).send().await.unwrap().status(), 200, "gw is up");

    let start = std::time::Instant::now();
    let mut checks = vec![];
    for i in 0..6 {
        let (c, url) = (c.clone(), gw.url("/staff"));
        checks.push(tokio::spawn(async move {
            let r = c.get(url).basic_auth("alice", Some(format!("wrong-{i}"))).send().await.unwrap();
            (r.status(), start.elapsed())
        }));
    }
    // Let the password checks begin, then ask for something that needs none.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = c.get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let open_done = start.elapsed();
    for check in checks {
        let (status, done) = check.await.unwrap();
        assert_eq!(status, 401, "a wrong password is refused");
        assert!(
            done > open_done,
            "the public request ({open_done:?}) waited for a password check ({done:?}): bcrypt ran on the event loop"
        );
    }
    let r = c.get(gw.url("/staff")).basic_auth("alice", Some("right-password")).send().await.unwrap();
    assert_eq!(r.status(), 204, "the right password still passes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_text_password_file_is_refused_at_load() {
    let policy = "gateway { listen \"127.0.0.1:1\" }\nbasic staff from \"staff.htpasswd\"\n\
                  route r { when GET \"/\" auth staff respond 204 }\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.gwp"), policy).unwrap();
    std::fs::write(dir.path().join("staff.htpasswd"), "alice:hunter22\n").unwrap();
    let out =
        std::process::Command::new(common::gw_bin()).arg("check").arg(dir.path().join("gateway.gwp")).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plain-text password"), "{text}");
    assert!(!text.contains("hunter22"), "the password is not shown back: {text}");
}

/// Poll `f` until it holds (a reload is asynchronous), for at most 15 seconds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 15s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_issuer_key_and_a_changed_password_file_take_effect_on_reload() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let url = gw.url("/v1/models");
    let old = rs256(&claims("u"), "issuer.key");
    let new = rs256(&claims("u"), "other.key");
    assert_eq!(c.get(&url).bearer_auth(&old).send().await.unwrap().status(), 200);
    assert_eq!(c.get(&url).basic_auth("alice", Some("hunter22")).send().await.unwrap().status(), 200);

    // The issuer rotates its key: the policy's key file is rewritten.
    std::fs::write(gw.path("keys/issuer.pem"), read("other.pem")).unwrap();
    let status = |token: String| {
        let c = c.clone();
        let url = url.clone();
        async move { c.get(&url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    eventually("the new key verifying", || {
        let (o, n) = (old.clone(), new.clone());
        let status = &status;
        async move { status(n).await == 200 && status(o).await == 401 }
    })
    .await;

    // A password changes: the old one (verified and remembered before) no longer passes.
    let hash = bcrypt::hash("correct-horse", 4).unwrap();
    std::fs::write(gw.path("keys/staff.htpasswd"), format!("alice:{hash}\n")).unwrap();
    let basic = |pass: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move { c.get(&url).basic_auth("alice", Some(pass)).send().await.unwrap().status().as_u16() }
    };
    eventually("the new password passing", || {
        let basic = &basic;
        async move { basic("correct-horse").await == 200 && basic("hunter22").await == 401 }
    })
    .await;
}
