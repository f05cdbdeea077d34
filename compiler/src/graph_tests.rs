//! The decision graph's unit tests: they lower real policies, so they live with the compiler.

use crate::eval;
use crate::graph::*;
use crate::keys::LoadedKeys;
use crate::program::Program;
use crate::request::{Decision, Outcome, Request};
use crate::source::FileId;
use crate::value;

fn program(text: &str) -> Program {
    let (parsed, diags) = crate::syntax::parse(FileId(0), text);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    let keys = format!("{} acme k1\n", hex::encode(crate::keys::hash_key(None, "sk-1")));
    let (loaded, errors) = LoadedKeys::parse(&keys, None);
    assert!(errors.is_empty());
    let mut p = Program { items: parsed.file.items, ..Program::default() };
    p.keysets.insert("k".into(), loaded);
    p.env.insert("SECRET".into(), Some("hunter2".into()));
    p
}

fn graph(text: &str) -> (Program, Graph) {
    let p = program(text);
    let g = crate::lower::lower(&p).expect("lowers");
    (p, g)
}

fn req(method: &str, host: &str, path: &str) -> Request {
    let mut r = Request::new(method, path);
    r.host = host.to_string();
    r
}

/// Decide with the graph, check eval and the untraced path agree, return the graph's
/// (traced) decision.
fn decide(p: &Program, g: &Graph, r: &Request) -> Decision {
    let d = g.decide_traced(r);
    let e = eval::decide(p, r);
    assert!(d.same_decision(&e), "graph {d:#?}\neval {e:#?}");
    let fast = g.decide(r);
    assert!(fast.same_decision(&d) && fast.trace.is_empty(), "untraced {fast:#?}\ntraced {d:#?}");
    d
}

const ROUTES: &str = r#"
    upstream u { target "http://127.0.0.1:1" }
    route first { when GET "/a/{id}" to u }
    route second { when GET "/a/fixed" to u }
    route wide { when GET "/a/*" to u }
    route exact_host { when GET "/h" host "Api.Example.com" to u }
    route tenant_host { when GET "/h" host "*.example.com" to u }
    route any_host { when GET|POST "/h" to u }
    route put_only { when PUT "/m" to u }
    route cond { when DELETE "/m" if header["x"] == "1" to u }
    route patch_only { when PATCH|PUT "/m" to u }
"#;

#[test]
fn the_first_route_in_policy_order_wins() {
    let (p, g) = graph(ROUTES);
    assert_eq!(decide(&p, &g, &req("GET", "", "/a/fixed")).route.as_deref(), Some("first"));
    assert_eq!(decide(&p, &g, &req("GET", "", "/a/x/y")).route.as_deref(), Some("wide"));
    assert_eq!(decide(&p, &g, &req("GET", "", "/a")).route.as_deref(), Some("wide"));
}

#[test]
fn params_are_captured_in_pattern_order() {
    let (p, g) = graph(r#"upstream u { target "http://x" } route r { when GET "/t/{tenant}/m/{model}" to u }"#);
    let d = decide(&p, &g, &req("GET", "", "/t/acme/m/gpt-4o"));
    assert_eq!(d.params, vec![("tenant".into(), "acme".into()), ("model".into(), "gpt-4o".into())]);
    assert_eq!(decide(&p, &g, &req("GET", "", "/t//m/x")).outcome, Outcome::NoRoute);
}

#[test]
fn host_wildcards_need_a_subdomain_and_exact_hosts_ignore_case_and_port() {
    let (p, g) = graph(ROUTES);
    assert_eq!(decide(&p, &g, &req("GET", "a.example.com", "/h")).route.as_deref(), Some("tenant_host"));
    assert_eq!(decide(&p, &g, &req("GET", "x.y.example.com", "/h")).route.as_deref(), Some("tenant_host"));
    assert_eq!(decide(&p, &g, &req("GET", "example.com", "/h")).route.as_deref(), Some("any_host"));
    assert_eq!(decide(&p, &g, &req("GET", ".example.com", "/h")).route.as_deref(), Some("any_host"));
    assert_eq!(decide(&p, &g, &req("GET", "API.example.COM:8443", "/h")).route.as_deref(), Some("exact_host"));
    let mut via_header = req("GET", "", "/h");
    via_header.headers.push(("host".into(), "b.example.com".into()));
    assert_eq!(decide(&p, &g, &via_header).route.as_deref(), Some("tenant_host"));
}

#[test]
fn a_wrong_method_gets_405_with_the_methods_of_matching_routes_in_order() {
    let (p, g) = graph(ROUTES);
    let d = decide(&p, &g, &req("GET", "", "/m"));
    assert_eq!(d.outcome, Outcome::MethodNotAllowed { allowed: vec!["PUT".into(), "DELETE".into(), "PATCH".into()] });
    // A route whose condition is false is skipped without adding to the list.
    let d = decide(&p, &g, &req("DELETE", "", "/m"));
    assert_eq!(d.outcome, Outcome::MethodNotAllowed { allowed: vec!["PUT".into(), "PATCH".into()] });
    let mut with_header = req("DELETE", "", "/m");
    with_header.headers.push(("x".into(), "1".into()));
    assert_eq!(decide(&p, &g, &with_header).route.as_deref(), Some("cond"));
    assert_eq!(decide(&p, &g, &req("GET", "", "/nowhere")).outcome, Outcome::NoRoute);
}

#[test]
fn the_body_is_parsed_only_when_a_candidate_reads_it() {
    let (p, g) = graph(
        r#"upstream u { target "http://x" }
           route plain { when POST "/plain" to u }
           route reads { when POST "/reads" deny 400 "big" if body.max_tokens > 10 to u }"#,
    );
    let parsed = |d: &Decision| d.trace.iter().any(|s| s.step == "body");
    let mut r = req("POST", "", "/plain");
    r.body = Some(format!("{{\"max_tokens\": {}", "9".repeat(1 << 20)).into_bytes());
    let d = decide(&p, &g, &r);
    assert!(!parsed(&d), "{:?}", d.trace);
    assert!(!g.wants_body(&r));
    r.path = "/nowhere".into();
    assert!(!parsed(&decide(&p, &g, &r)));
    r.path = "/reads".into();
    assert!(g.wants_body(&r));
    let d = decide(&p, &g, &r);
    assert!(parsed(&d), "{:?}", d.trace);
    r.body = Some(b"{\"max_tokens\": 11}".to_vec());
    assert_eq!(decide(&p, &g, &r).outcome.status(), 400);
}

#[test]
fn a_value_of_the_wrong_type_refuses_and_a_missing_one_compares_false() {
    let (p, g) = graph(
        r#"upstream u { target "http://x" }
           route r { when POST "/r"
             deny 403 "big" if body.max_tokens > 4096
             deny 403 "odd" if header["b"] == "1" and body.n > 1
             allow if body.model != "x" or header["a"] == "1"
             to u }"#,
    );
    let outcome = |body: &str, headers: &[(&str, &str)]| {
        let mut r = req("POST", "", "/r").with_body(body);
        r.headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        decide(&p, &g, &r).outcome
    };
    let invalid = |o: Outcome| matches!(o, Outcome::Invalid { code: value::INVALID_BODY, .. });
    let forward = Outcome::Forward { upstream: "u".into() };
    assert_eq!(outcome(r#"{"max_tokens": 9000}"#, &[]).status(), 403);
    assert!(invalid(outcome(r#"{"max_tokens": "9000"}"#, &[])));
    assert!(invalid(outcome(r#"{"max_tokens": null}"#, &[])));
    assert!(invalid(outcome(r#"{"max_tokens": [1]}"#, &[])));
    // Missing facts: `>` is false, `!=` is true.
    assert_eq!(outcome("{}", &[]), forward);
    assert_eq!(outcome("", &[]), forward);
    // An undecided side matters only when the other side does not settle it.
    assert_eq!(outcome(r#"{"model": 5}"#, &[("a", "1")]), forward);
    assert!(invalid(outcome(r#"{"model": 5}"#, &[])));
    assert_eq!(outcome(r#"{"n": "x"}"#, &[]), forward);
    assert!(invalid(outcome(r#"{"n": "x"}"#, &[("b", "1")])));
    // The route reads the body: a body the strict reader refuses is refused whatever the
    // guards would evaluate.
    assert!(invalid(outcome("\u{feff}{}", &[("a", "1")])));
    assert!(invalid(outcome(r#"{"n": 1, "n": 2}"#, &[])));
}

#[test]
fn a_header_or_query_a_guard_reads_must_be_one_text_value() {
    let (p, g) = graph(
        r#"upstream u { target "http://x" }
           route r { when GET "/r" deny 403 "no" if header["x-user"] == "eve" or query["u"] == "eve" to u }"#,
    );
    let code = |r: &Request| match decide(&p, &g, r).outcome {
        Outcome::Invalid { code, .. } => code,
        o => {
            if o.status() == 403 {
                "denied"
            } else {
                "ok"
            }
        }
    };
    let mut r = req("GET", "", "/r?u=ev%65");
    assert_eq!(code(&r), "denied");
    r = req("GET", "", "/r?u=bob&u=eve");
    assert_eq!(code(&r), value::INVALID_QUERY);
    r = req("GET", "", "/r?u=%zz");
    assert_eq!(code(&r), value::INVALID_QUERY);
    r = req("GET", "", "/r?u=%ff");
    assert_eq!(code(&r), value::INVALID_QUERY);
    r = req("GET", "", "/r?u=bob");
    r.push_header_bytes("x-user", b"eve\xff");
    assert_eq!(code(&r), value::INVALID_HEADER);
    r = req("GET", "", "/r?u=bob");
    r.push_header_bytes("X-User", b"bob");
    r.push_header_bytes("x-user", b"eve");
    assert_eq!(code(&r), value::INVALID_HEADER);
    r = req("GET", "", "/r?u=bob");
    r.push_header_bytes("x-other", b"\xff");
    assert_eq!(code(&r), "ok");
}

#[test]
fn the_path_and_params_a_guard_reads_are_decoded_as_the_upstream_decodes_them() {
    let (p, g) = graph(
        r#"upstream u { target "http://x" }
           route r { when GET "/*" deny 403 "no" if path starts_with "/admin" to u }
           route q { when POST "/u/{name}" deny 403 "no" if param.name == "root" to u }"#,
    );
    let outcome = |m: &str, path: &str| decide(&p, &g, &req(m, "", path)).outcome;
    assert_eq!(outcome("GET", "/%61dmin/x").status(), 403);
    assert_eq!(outcome("GET", "/a+dmin").status(), 200);
    assert!(matches!(outcome("GET", "/x/%zz"), Outcome::Invalid { code: value::INVALID_PATH, .. }));
    assert!(matches!(outcome("GET", "/x/%+1"), Outcome::Invalid { code: value::INVALID_PATH, .. }));
    assert!(matches!(outcome("GET", "/x/%ff"), Outcome::Invalid { code: value::INVALID_PATH, .. }));
    assert_eq!(outcome("POST", "/u/r%6Fot").status(), 403);
    assert_eq!(outcome("POST", "/u/alice").status(), 200);
}

#[test]
fn a_matcher_used_by_many_routes_is_one_node() {
    let mut text = String::from(
        "upstream u { target \"http://x\" }\nmatcher m = header[\"x-a\"] == \"1\" and body.model matches /^gpt/\n",
    );
    for i in 0..50 {
        text.push_str(&format!("route r{i} {{ when GET \"/r{i}\" deny 403 \"no\" if m to u }}\n"));
    }
    let (p, g) = graph(&text);
    assert!(g.nodes.len() < 10, "{} nodes", g.nodes.len());
    assert_eq!(g.facts.len(), 2);
    assert_eq!(g.regexes.len(), 1);
    let mut r = req("GET", "", "/r7");
    r.headers.push(("x-a".into(), "1".into()));
    r.body = Some(b"{\"model\": \"gpt-4o\"}".to_vec());
    assert_eq!(decide(&p, &g, &r).outcome.status(), 403);
}

#[test]
fn constants_are_folded_at_compile_time() {
    let (_, g) = graph(
        r#"upstream u { target "http://x" } route r { when GET "/" if 1 < 2 and "a" == "a" allow if not false to u }"#,
    );
    assert!(g.nodes.iter().all(|n| matches!(n, Node::Const(_))), "{:?}", g.nodes);
}

#[test]
fn auth_limits_and_identity_follow_eval() {
    let (p, g) = graph(
        r#"upstream u { target "http://x" }
           tenant acme { rate 10/s burst 20; concurrent 2 }
           route r { when POST "/v1/chat" auth k
             deny 403 "acme only" if tenant != "acme"
             limit rate 5/s per key
             limit tokens 1k/min per (body.model) model /^gpt/
             to u }"#,
    );
    let mut r = req("POST", "", "/v1/chat");
    assert_eq!(decide(&p, &g, &r).outcome, Outcome::Unauthorized { message: eval::MISSING_KEY.into() });
    r.headers.push(("authorization".into(), "Bearer sk-2".into()));
    assert_eq!(decide(&p, &g, &r).outcome, Outcome::Unauthorized { message: eval::INVALID_KEY.into() });
    r.headers = vec![("x-api-key".into(), "sk-1".into())];
    r.body = Some(b"{\"model\": \"gpt-4o\"}".to_vec());
    let d = decide(&p, &g, &r);
    assert_eq!(d.identity.as_ref().map(|i| i.tenant.as_str()), Some("acme"));
    let keys: Vec<&str> = d.limits.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["k/k1", "gpt-4o", "acme", "acme"]);
    assert_eq!(d.limits.iter().map(|l| l.limit).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(g.limits().len(), 4);
}

#[test]
fn the_graph_is_send_sync_and_serializes_without_secrets() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Graph>();
    let mut p = program(
        r#"gateway { admin "127.0.0.1:9" token "literal-token" state redis env("SECRET") }
           upstream u { target "http://x" header "authorization" = "Bearer " + env("SECRET") }
           jwt j { alg HS256 secret "s3cret-jwt" }
           route r { when GET "/" set header "x-k" = env("SECRET") auth j to u }"#,
    );
    let verifier = gw_engine::jwt::JwtVerifier::new(
        "j",
        gw_engine::jwt::JwtAlg::HS256,
        gw_engine::jwt::KeySource::Secret(b"s3cret-jwt"),
    );
    p.jwtsets.insert("j".into(), std::sync::Arc::new(verifier.expect("a secret")));
    let g = crate::lower::lower(&p).expect("lowers");
    let json = serde_json::to_string(&g).expect("serializes");
    assert!(!json.contains("hunter2") && !json.contains("literal-token") && !json.contains("s3cret-jwt"), "{json}");
    assert!(!format!("{g:?}").contains("s3cret-jwt"));
    assert!(json.contains(REDACTED));
    assert!(!format!("{g:?}").contains("hunter2"));
    assert_eq!(g.upstreams()[0].headers[0].1.get(), Some("Bearer hunter2"));
    assert_eq!(g.settings().max_body, DEFAULT_MAX_BODY);
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph gw {") && dot.contains("r0 -> u0") || dot.contains("-> u0"), "{dot}");
}

#[test]
fn path_patterns_match_like_eval() {
    let patterns = ["/*", "/a/*", "/a/{x}", "a/*", "*", "/a/*/b", "", "/", "//*", "/{}/x", "/{a}{b}", "/{", "/a/{x}/*"];
    let paths =
        ["", "/", "/a", "/a/", "/a/b", "/a/b/c", "a", "a/b", "*", "/a/*/b", "//", "//x", "/x/x", "/{a}{b}", "/q", "/{"];
    for pat in patterns {
        let compiled = PathPattern::parse(pat);
        for path in paths {
            assert_eq!(compiled.capture(path), eval::match_path(pat, path), "{pat:?} on {path:?}");
        }
    }
}

#[test]
fn only_the_traced_decision_explains_itself() {
    let (p, g) = graph(ROUTES);
    for path in ["/a/1", "/a/fixed", "/nowhere"] {
        let r = req("GET", "", path);
        let traced = decide(&p, &g, &r);
        assert!(!traced.trace.is_empty(), "{path}: {traced:#?}");
    }
}

/// `wants_body` and `decide` both ask about the credential, and so may every candidate route
/// naming the same set: the key is hashed (a token verified, a password checked) once per
/// request, and a clone of the request starts with nothing checked.
#[test]
fn a_credential_is_checked_once_per_request() {
    let (p, g) = graph(
        r#"
        upstream u { target "http://127.0.0.1:1" }
        route guarded { when POST "/v1/*" if body.model == "a" auth k to u }
        route other { when POST "/v1/*" auth k to u }
    "#,
    );
    for key in ["sk-1", "sk-wrong"] {
        let mut r = req("POST", "api", "/v1/chat");
        r.headers.push(("authorization".into(), format!("Bearer {key}")));
        r.body = Some(br#"{"model":"b"}"#.to_vec());
        let wants = g.wants_body(&r);
        let d = g.decide(&r);
        assert_eq!(format!("{:?}", r.auth_memo), "AuthMemo(1 checked)", "{key}");
        assert_eq!(wants, key == "sk-1", "{key}");
        let fresh = r.clone();
        assert_eq!(format!("{:?}", fresh.auth_memo), "AuthMemo(0 checked)");
        // The memo changes nothing: the same request decided afresh, and by eval, agrees.
        assert!(d.same_decision(&decide(&p, &g, &fresh)), "{key}: {d:#?}");
    }
}

#[test]
fn passwords_checked_ahead_are_not_hashed_again_and_change_no_decision() {
    let mut p = program(
        r#"
        basic staff from "staff.htpasswd"
        basic other from "other.htpasswd"
        route admin { when GET "/admin/*" auth staff respond 204 }
        route ops { when GET "/ops/*" auth other respond 204 }
        route keyed { when GET "/keyed" auth k respond 204 }
        route open { when GET "/open" auth none respond 204 }
    "#,
    );
    let hash = bcrypt::hash("pw", 4).expect("hashes");
    for name in ["staff", "other"] {
        let (set, errors) = gw_engine::basic::Htpasswd::parse(&format!("alice:{hash}\n"));
        assert!(errors.is_empty());
        p.basicsets.insert(name.into(), (name.into(), std::sync::Arc::new(set)));
    }
    let g = crate::lower::lower(&p).expect("lowers");
    // "alice:pw" and "alice:nope", base64.
    for (credential, status) in [("YWxpY2U6cHc=", 204), ("YWxpY2U6bm9wZQ==", 401)] {
        let mut r = req("GET", "api", "/admin/x");
        r.headers.push(("authorization".into(), format!("Basic {credential}")));
        assert!(g.needs_password_check(&r), "a pair never seen needs the slow hash");
        g.check_passwords(&r);
        assert_eq!(format!("{:?}", r.auth_memo), "AuthMemo(1 checked)");
        assert!(!g.needs_password_check(&r.clone()), "once checked, any request with it is answered from memory");
        let d = g.decide(&r);
        assert_eq!(format!("{:?}", r.auth_memo), "AuthMemo(1 checked)", "decide hashed again");
        let expected = if status == 204 { "Respond" } else { "Unauthorized" };
        assert!(format!("{:?}", d.outcome).starts_with(expected), "{d:#?}");
        assert!(d.same_decision(&decide(&p, &g, &r.clone())));
    }
    let mut r = req("GET", "api", "/open");
    assert!(!g.needs_password_check(&r), "no credential, nothing to hash");
    r.headers.push(("authorization".into(), "Bearer sk-1".into()));
    assert!(!g.needs_password_check(&r), "not a basic credential");
    // Only the sets the request's routes try count: `other` never saw these pairs, and a route
    // without a basic set hashes nothing, so neither needs a trip off the event loop.
    for path in ["/open", "/keyed"] {
        let mut r = req("GET", "api", path);
        r.headers.push(("authorization".into(), "Basic YWxpY2U6bmV3".into()));
        assert!(!g.needs_password_check(&r), "{path}: no route here tries a basic set");
    }
    let mut r = req("GET", "api", "/ops/x");
    r.headers.push(("authorization".into(), "Basic YWxpY2U6cHc=".into()));
    assert!(g.needs_password_check(&r), "`other` has not checked this pair");
}
