//! Every admin endpoint the docs list answers, on the real `gw` binary: the README's admin
//! table (method and path), and the endpoints the language reference names for `admin`, each of
//! which must be in that table.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;

const README: &str = include_str!("../../README.md");
const REFERENCE: &str = include_str!("../../grammar/README.md");
const TOKEN: &str = "admin-s3cret";

/// `(method, path)` of each row of the README's admin table: "| `GET /health` | ... |".
fn readme_endpoints() -> Vec<(String, String)> {
    let section = README.split("### The admin listener").nth(1).expect("the README has an admin listener section");
    let section = section.split("\n### ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter_map(|cell| cell.split_once(' '))
        .filter(|(m, p)| matches!(*m, "GET" | "POST") && p.starts_with('/'))
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

/// The paths the language reference lists for the `admin` setting.
fn reference_endpoints() -> Vec<String> {
    let row = REFERENCE.lines().find(|l| l.starts_with("| `admin ")).expect("the reference documents `admin`");
    row.split('`')
        .skip(1)
        .step_by(2)
        .map(|code| code.strip_prefix("POST ").or(code.strip_prefix("GET ")).unwrap_or(code))
        .filter(|code| code.starts_with('/'))
        .map(str::to_string)
        .collect()
}

fn body_for(path: &str) -> &'static str {
    match path {
        "/admin/explain" => r#"{"method": "GET", "path": "/v1/models", "headers": {"x-api-key": "sk-test-1"}}"#,
        "/admin/tokens" => r#"{"model": "gpt-4o", "text": "hello world"}"#,
        _ => "",
    }
}

fn start(mock: &Mock) -> Gw {
    let policy = BASIC_POLICY.replace(r#"admin  "{ADMIN}""#, &format!(r#"admin  "{{ADMIN}}" token "{TOKEN}""#));
    assert!(policy.contains(TOKEN), "the basic policy's admin line changed");
    Gw::start(GwSpec::new(&policy, &mock.url()).file("keys/users.keys", users_keys()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_admin_endpoint_answers() {
    let documented = readme_endpoints();
    assert!(documented.len() >= 8, "the admin table lists only {documented:?}");
    for path in reference_endpoints() {
        assert!(
            documented.iter().any(|(_, p)| *p == path),
            "grammar/README.md lists {path} for `admin`, the README's admin table does not"
        );
    }
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::new();
    for (method, path) in &documented {
        let url = gw.admin_url(path);
        let req = match method.as_str() {
            "POST" => c.post(&url).body(body_for(path)),
            _ => c.get(&url),
        };
        let resp = req.bearer_auth(TOKEN).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{method} {path} answered {status}: {text}");
        if path != "/metrics" {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        }
        // Everything but liveness and readiness needs the token.
        if !matches!(path.as_str(), "/health" | "/ready") {
            let anon = match method.as_str() {
                "POST" => c.post(&url).body(body_for(path)),
                _ => c.get(&url),
            };
            assert_eq!(anon.send().await.unwrap().status(), 401, "{method} {path} without the token");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_tokens_counts_and_refuses_what_it_does_not_read() {
    let mock = Mock::start(&[]);
    let gw = start(&mock);
    let c = reqwest::Client::new();
    let post = |body: &'static str| c.post(gw.admin_url("/admin/tokens")).bearer_auth(TOKEN).body(body).send();
    let counted: serde_json::Value =
        post(r#"{"model": "gpt-4o", "text": "hello world"}"#).await.unwrap().json().await.unwrap();
    assert_eq!(counted, serde_json::json!({"model": "gpt-4o", "encoding": "o200k_base", "tokens": 2}));
    let refused = post(r#"{"model": "gpt-4o", "text": "hello world", "temperature": 1}"#).await.unwrap();
    assert_eq!(refused.status(), 400);
    let err: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["code"], "bad_token_request", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("unknown field `temperature`"), "{err}");
    // GPT-3-era models count in their own encodings (gpt2 was counted as cl100k_base), an
    // explicit `encoding` chooses, and an unknown model without one is refused, not guessed.
    let gpt2: serde_json::Value =
        post(r#"{"model": "gpt2", "text": "お誕生日おめでとう"}"#).await.unwrap().json().await.unwrap();
    assert_eq!(gpt2, serde_json::json!({"model": "gpt2", "encoding": "r50k_base", "tokens": 14}));
    let chosen: serde_json::Value =
        post(r#"{"text": "お誕生日おめでとう", "encoding": "p50k_base"}"#).await.unwrap().json().await.unwrap();
    assert_eq!((chosen["encoding"].as_str(), chosen["tokens"].as_u64()), (Some("p50k_base"), Some(14)));
    let unknown = post(r#"{"model": "llama-3-8b", "text": "hi"}"#).await.unwrap();
    assert_eq!(unknown.status(), 400);
    let err: serde_json::Value = unknown.json().await.unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("name the encoding in `encoding`"), "{err}");
    // The wrong method is 405, not "no such endpoint".
    let get = c.get(gw.admin_url("/admin/tokens")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(get.status(), 405);
}
