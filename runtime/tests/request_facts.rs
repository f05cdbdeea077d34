//! The language's request facts and shared counters with the real `gw` and the mock upstream:
//! `set header` templates reach the upstream (and hostile values from the request never do),
//! `respond` answers with headers and a body rendered from the request (JSON escaped),
//! `tenant *` limits a tenant named only in a key file and yields to a tenant's own block,
//! and a shared limit (`limit NAME ...`, `limit use NAME`) counts across routes, locally and
//! across gateways sharing Redis.

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod redis_server;
mod common;

use common::{header_of, users_keys, Gw, GwSpec, Mock};
use redis_server::RedisServer;
use serde_json::Value;

const TEMPLATES: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
route jobs {
    when  POST "/v1/jobs/{id}"
    auth  users
    set   header "x-tenant-id" = tenant
    set   header "x-caller" = tenant + "/" + key + " job " + param.id + " req " + request_id
    set   header "x-trace" = trace_id
    set   header "x-team" = query["team"]
    set   header "x-region" = "r-" + header["x-region-hint"]
    to    mock
}
"#;

async fn post(gw: &Gw, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    // The mock answers any path with `x-mock-echo`.
    let mut req = reqwest::Client::new().post(gw.url(path)).header("x-api-key", "sk-test-1").header("x-mock-echo", "1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn set_header_forwards_the_tenant_and_request_facts_to_the_upstream() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(TEMPLATES, &mock.url()).file("keys/users.keys", users_keys()));

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let resp = post(
        &gw,
        "/v1/jobs/j-42?team=blue",
        &[("x-request-id", "req-7"), ("traceparent", &traceparent), ("x-region-hint", "east")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let recs = mock.requests().await;
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(header_of(rec, "x-tenant-id"), ["alpha"]);
    assert_eq!(header_of(rec, "x-caller"), ["alpha/user-1 job j-42 req req-7"]);
    assert_eq!(header_of(rec, "x-trace"), [trace], "the trace the upstream continues");
    assert_eq!(header_of(rec, "x-team"), ["blue"]);
    assert_eq!(header_of(rec, "x-region"), ["r-east"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_own_copy_of_a_header_the_policy_sets_never_passes() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(TEMPLATES, &mock.url()).file("keys/users.keys", users_keys()));

    // The client claims another tenant and a team; the tenant is the key's, and without a
    // `team` query parameter the template is absent: the client's `x-team` is removed.
    let resp = post(&gw, "/v1/jobs/1", &[("x-tenant-id", "admin"), ("x-team", "red")]).await;
    assert_eq!(resp.status(), 200);
    let rec = &mock.requests().await[0];
    assert_eq!(header_of(rec, "x-tenant-id"), ["alpha"]);
    assert!(header_of(rec, "x-team").is_empty(), "{rec}");
    assert!(header_of(rec, "x-region").is_empty(), "{rec}");
}

/// Extra request headers, in order.
type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_from_the_request_are_refused_never_forwarded_as_headers() {
    let mock = Mock::start(&[]);
    let gw = Gw::start(GwSpec::new(TEMPLATES, &mock.url()).file("keys/users.keys", users_keys()));

    // Line breaks and NUL that decoding turns into control characters, in a path parameter
    // and in a query parameter; a header the template reads, sent twice.
    let cases: &[(&str, Headers<'_>, &str)] = &[
        ("/v1/jobs/a%0d%0ax-injected:%201", &[], "invalid_header"),
        ("/v1/jobs/a%0ax-injected:1", &[], "invalid_header"),
        // A NUL is refused before deciding (the path's normal form).
        ("/v1/jobs/a%00b", &[], "invalid_path"),
        ("/v1/jobs/a%0db", &[], "invalid_header"),
        ("/v1/jobs/1?team=x%0d%0ax-injected:%201", &[], "invalid_header"),
        ("/v1/jobs/1?team=x%0Bz", &[], "invalid_header"),
        ("/v1/jobs/1?team=x%7fz", &[], "invalid_header"),
        ("/v1/jobs/1?team=%E0%A4", &[], "invalid_query"),
        ("/v1/jobs/1", &[("x-region-hint", "a"), ("x-region-hint", "b")], "invalid_header"),
    ];
    for (path, headers, code) in cases {
        let resp = post(&gw, path, headers).await;
        assert_eq!(resp.status(), 400, "{path}");
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["code"], *code, "{path}: {e}");
    }
    assert!(mock.requests().await.is_empty(), "nothing reached the upstream");
    // The same route still forwards a clean request.
    assert_eq!(post(&gw, "/v1/jobs/ok?team=x%20y", &[]).await.status(), 200);
    assert_eq!(header_of(&mock.requests().await[0], "x-team"), ["x y"]);
}

const ANSWERS: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}
keys users from "keys/users.keys"
route whoami {
    when    GET "/v1/whoami/{id}"
    auth    users
    respond 200 json {"tenant": tenant, "key": key, "id": param.id, "note": query["note"], "request": request_id, "n": [1, true]} header "x-tenant-id" = tenant header "cache-control" = "no-store"
}
route hello {
    when    GET "/hello"
    auth    none
    respond 200 "hello " + header["x-name"] + ", trace " + trace_id header "x-name-echo" = header["x-name"]
}
route preflight {
    when    OPTIONS "/v1/*"
    auth    none
    respond 204 header "access-control-allow-origin" = "https://app.example.com" header "access-control-allow-methods" = "GET, POST"
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn respond_answers_with_headers_and_a_body_rendered_from_the_request() {
    let gw = Gw::start(GwSpec::new(ANSWERS, "http://127.0.0.1:9").file("keys/users.keys", users_keys()));
    let c = reqwest::Client::new();

    // Values a JSON body must escape: a quote from the path, a backslash and a line break
    // from the query; they come back as the same strings, in valid JSON.
    let resp = c
        .get(gw.url("/v1/whoami/a%22b?note=%5C%0A%3C%2Fscript%3E"))
        .header("x-api-key", "sk-test-1")
        .header("x-request-id", "req-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-tenant-id"], "alpha");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"tenant": "alpha", "key": "user-1", "id": "a\"b", "note": "\\\n</script>", "request": "req-9", "n": [1, true]})
    );
    // An absent value is `null`.
    let resp = c.get(gw.url("/v1/whoami/x")).header("x-api-key", "sk-test-2").send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tenant"], "beta");
    assert_eq!(body["note"], Value::Null);

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = c
        .get(gw.url("/hello"))
        .header("x-name", "bob")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-name-echo"], "bob");
    assert_eq!(resp.text().await.unwrap(), format!("hello bob, trace {trace}"));

    let resp = c.request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(resp.headers()["access-control-allow-methods"], "GET, POST");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_respond_header_from_a_hostile_value_is_refused() {
    let gw = Gw::start(GwSpec::new(ANSWERS, "http://127.0.0.1:9").file("keys/users.keys", users_keys()));
    let c = reqwest::Client::new();
    // A header read twice cannot be one value: 400, not an answer with either.
    let resp = c.get(gw.url("/hello")).header("x-name", "a").header("x-name", "b").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_header", "{e}");
}

const DEFAULTS: &str = r#"
gateway {
    listen "{LISTEN}"
    admin  "{ADMIN}"
}
upstream mock { target "{UPSTREAM}" }
keys users from "keys/users.keys"
tenant *     { rate 2/min; concurrent 10 }
tenant alpha { rate 3/min }
route models {
    when GET "/v1/models"
    auth users
    to   mock
}
"#;

async fn models(gw: &Gw, key: &str) -> reqwest::Response {
    reqwest::Client::new().get(gw.url("/v1/models")).header("x-api-key", key).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_star_limits_a_key_file_only_tenant_and_yields_to_a_tenants_own_block() {
    let mock = Mock::start(&["--record=false"]);
    let gw = Gw::start(GwSpec::new(DEFAULTS, &mock.url()).file("keys/users.keys", users_keys()));

    // beta is named only in the key file: it gets `tenant *`'s 2 a minute.
    for _ in 0..2 {
        assert_eq!(models(&gw, "sk-test-2").await.status(), 200);
    }
    let refused = models(&gw, "sk-test-2").await;
    assert_eq!(refused.status(), 429);
    let e: Value = refused.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("every tenant (`tenant *`)"), "{message}");

    // alpha's own rate (3 a minute) replaces the default; its counter is its own.
    for _ in 0..3 {
        assert_eq!(models(&gw, "sk-test-1").await.status(), 200);
    }
    let refused = models(&gw, "sk-test-1").await;
    assert_eq!(refused.status(), 429);
    let e: Value = refused.json().await.unwrap();
    assert!(e["error"]["message"].as_str().unwrap().contains("tenant `alpha`"), "{e}");

    // The usage view shows each tenant's effective limits, and `*` is no tenant of its own.
    let usage: Value = reqwest::get(gw.admin_url("/admin/usage")).await.unwrap().json().await.unwrap();
    let tenants = usage["tenants"].as_array().unwrap();
    assert!(tenants.iter().all(|t| t["tenant"] != "*"), "{usage}");
    let alpha = tenants.iter().find(|t| t["tenant"] == "alpha").unwrap();
    let kinds: Vec<&str> =
        alpha["limits"].as_array().unwrap().iter().map(|l| l["limit"]["id"].as_str().unwrap()).collect();
    assert!(kinds[0].starts_with("tenant:alpha:rate:") && kinds[1].starts_with("tenant:*:concurrent:"), "{kinds:?}");
    let beta = usage["undeclared_tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "beta").unwrap();
    let rate = &beta["limits"][0];
    assert!(rate["limit"]["id"].as_str().unwrap().starts_with("tenant:*:rate:"), "{beta}");
    assert_eq!(rate["state"]["remaining"], 0, "beta spent the default rate: {beta}");
}

fn shared_policy(state: &str) -> String {
    format!(
        r#"
gateway {{
    listen "{{LISTEN}}"
    admin  "{{ADMIN}}"
    {state}
}}
upstream mock {{ target "{{UPSTREAM}}" }}
keys users from "keys/users.keys"
limit jobs rate 4/min per tenant
route submit {{
    when      POST "/v1/jobs"
    auth      users
    limit use jobs
    to        mock
}}
route status {{
    when      GET "/v1/jobs/{{id}}"
    auth      users
    limit use jobs
    to        mock
}}
"#
    )
}

async fn job(gw: &Gw, submit: bool, key: &str) -> u16 {
    let c = reqwest::Client::new();
    let req = if submit { c.post(gw.url("/v1/jobs")) } else { c.get(gw.url("/v1/jobs/7")) };
    req.header("x-api-key", key).header("x-mock-echo", "1").send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_limit_counts_across_the_routes_that_use_it() {
    let mock = Mock::start(&["--record=false"]);
    let text = shared_policy("");
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));

    let seen = [job(&gw, true, "sk-test-1").await, job(&gw, false, "sk-test-1").await];
    assert_eq!(seen, [200, 200]);
    assert_eq!([job(&gw, true, "sk-test-1").await, job(&gw, false, "sk-test-1").await], [200, 200]);
    // Four jobs requests in all, over two routes: the fifth is refused on either route.
    assert_eq!(job(&gw, false, "sk-test-1").await, 429);
    assert_eq!(job(&gw, true, "sk-test-1").await, 429);
    // Per tenant: beta's counter is its own.
    assert_eq!(job(&gw, false, "sk-test-2").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_limit_counts_across_routes_and_gateways_sharing_redis() {
    require_redis!();
    let redis = RedisServer::start();
    let mock = Mock::start(&["--record=false"]);
    let text = shared_policy(r#"state redis env("T_REDIS_URL") on_error deny"#);
    let url = redis.url();
    let start =
        || Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()).env("T_REDIS_URL", &url));
    let (a, b) = (start(), start());

    // Submissions on one gateway and status reads on the other charge one counter.
    assert_eq!(job(&a, true, "sk-test-1").await, 200);
    assert_eq!(job(&b, false, "sk-test-1").await, 200);
    assert_eq!(job(&a, true, "sk-test-1").await, 200);
    assert_eq!(job(&b, false, "sk-test-1").await, 200);
    assert_eq!(job(&a, false, "sk-test-1").await, 429);
    assert_eq!(job(&b, true, "sk-test-1").await, 429);
    assert_eq!(job(&b, true, "sk-test-2").await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_limit_keeps_its_count_when_a_reload_adds_a_route_that_uses_it() {
    let mock = Mock::start(&["--record=false"]);
    let text = shared_policy("");
    let gw = Gw::start(GwSpec::new(&text, &mock.url()).file("keys/users.keys", users_keys()));
    for submit in [true, false, true] {
        assert_eq!(job(&gw, submit, "sk-test-1").await, 200);
    }

    // A new route uses the limit and the old ones trade places: the identity names neither.
    let extra = r#"
route cancel {{
    when      DELETE "/v1/jobs/{{id}}"
    auth      users
    limit use jobs
    to        mock
}}
"#;
    let (head, routes) = text.split_once("route submit").unwrap();
    let (submit, status) = routes.split_once("route status").unwrap();
    let reordered =
        format!("{head}{}route status{status}route submit{submit}", extra.replace("{{", "{").replace("}}", "}"));
    let reordered = reordered
        .replace("{LISTEN}", &gw.addr.to_string())
        .replace("{ADMIN}", &gw.admin.to_string())
        .replace("{UPSTREAM}", &mock.url());
    std::fs::write(gw.path("gateway.gwp"), reordered).unwrap();
    let resp = reqwest::Client::new().post(gw.admin_url("/admin/reload")).send().await.unwrap();
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");

    let cancel = || async {
        reqwest::Client::new()
            .delete(gw.url("/v1/jobs/7"))
            .header("x-api-key", "sk-test-1")
            .header("x-mock-echo", "1")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(cancel().await, 200, "the fourth of four");
    assert_eq!(cancel().await, 429, "three were counted before the reload");
    assert_eq!(job(&gw, true, "sk-test-1").await, 429);
}
