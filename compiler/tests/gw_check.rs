//! End-to-end tests of the `gw-check` binary: exit codes, output formats, test blocks,
//! explain, fmt and compile, run as a user would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gw_check(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gw-check"))
        .args(args)
        .current_dir(dir)
        .env_remove("GW_TEST_UNSET")
        .output()
        .expect("gw-check runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A temp folder with a key file and the given policy files.
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("keys")).expect("mkdir");
    std::fs::write(
        dir.path().join("keys/app.keys"),
        format!("# demo keys\n{} dev dev-1\n{} enterprise ent-1\n", sha("sk-dev-1"), sha("sk-ent-1")),
    )
    .expect("write keys");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(path, text).expect("write policy");
    }
    dir
}

const VALID: &str = r#"
# A small valid policy.
upstream llm { target "http://127.0.0.1:9100" }
keys app from "keys/app.keys"
tenant dev { rate 2/s }

route chat {
    when POST "/v1/chat/completions"
    auth app
    deny 403 "max_tokens above 4096" if body.max_tokens > 4096
    to llm
}

test "a dev key reaches the upstream" {
    send POST "/v1/chat/completions" header "x-api-key" = "sk-dev-1" body { "max_tokens": 10 }
    expect 200
    expect route chat
    expect tenant dev
}

test "the tenant rate applies" {
    send POST "/v1/chat/completions" header "x-api-key" = "sk-dev-1"
    send POST "/v1/chat/completions" header "x-api-key" = "sk-dev-1"
    send POST "/v1/chat/completions" header "x-api-key" = "sk-dev-1"
    expect 429
    advance 500ms
    send POST "/v1/chat/completions" header "x-api-key" = "sk-dev-1"
    expect 200
}
"#;

const FAILING_TEST: &str = r#"
upstream llm { target "http://127.0.0.1:9100" }
route models { when GET "/v1/models"; to llm }
test "models are forbidden" {
    send GET "/v1/models"
    expect 403
}
"#;

const INVALID: &str = r#"
upstream llm { target "http://127.0.0.1:9100" }
route a { when GET "/a"; to llm }
route b { when GET "/b"; to lm }
route c { when GET "/c"; to llmm }
"#;

const WARNING_ONLY: &str = r#"
upstream llm { target "http://127.0.0.1:9100" }
upstream spare { target "http://127.0.0.1:9101" }
route a { when GET "/a"; to llm }
"#;

#[test]
fn a_valid_policy_with_passing_tests_exits_zero() {
    let dir = fixture(&[("p.gwp", VALID)]);
    let o = gw_check(&["p.gwp"], dir.path());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("test a dev key reaches the upstream ... ok"), "{}", stderr(&o));
    assert!(stderr(&o).contains("tests: 2 passed, 0 failed"), "{}", stderr(&o));
}

#[test]
fn a_failing_policy_test_exits_three_with_the_reason() {
    let dir = fixture(&[("p.gwp", FAILING_TEST)]);
    let o = gw_check(&["p.gwp"], dir.path());
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("test models are forbidden ... FAILED"), "{err}");
    assert!(err.contains("expected status 403, got 200"), "{err}");
}

/// Templates, `tenant *` and a shared limit, with tests that expect what each renders or charges.
const LANGUAGE: &str = r#"
upstream llm { target "http://127.0.0.1:9100" }
keys app from "keys/app.keys"
tenant *   { rate 2/min }
tenant dev { concurrent 2 }
limit jobs rate 3/min per tenant

route submit {
    when      POST "/v1/jobs/{id}"
    auth      app
    limit use jobs
    set       header "x-tenant-id" = tenant
    set       header "x-job" = "job " + param.id + " " + request_id
    set       header "x-team" = query["team"]
    to        llm
}
route whoami {
    when      GET "/v1/whoami"
    auth      app
    limit use jobs
    respond   200 json {"tenant": tenant, "n": 1} header "x-key" = key
}

test "set header renders the request's facts" {
    send   POST "/v1/jobs/7" header "x-api-key" = "sk-ent-1"
    expect 200
    expect header "x-tenant-id" = "enterprise"
    expect header "x-job" = "job 7 test-request-id"
    expect header "x-team" absent
    expect limit jobs
    expect limit tenant *
}

test "respond renders its headers and body" {
    send   GET "/v1/whoami" header "x-api-key" = "sk-dev-1"
    expect header "x-key" = "dev-1"
    expect body {"n": 1, "tenant": "dev"}
    expect limit tenant dev
    expect limit tenant *
}

test "a hostile parameter is refused" {
    send   POST "/v1/jobs/a%0d%0ab" header "x-api-key" = "sk-dev-1"
    expect 400
}

test "the shared limit counts across both routes, the default rate per tenant" {
    send   POST "/v1/jobs/1" header "x-api-key" = "sk-dev-1"
    send   GET "/v1/whoami" header "x-api-key" = "sk-dev-1"
    expect 200
    send   GET "/v1/whoami" header "x-api-key" = "sk-dev-1"
    expect 429
    send   GET "/v1/whoami" header "x-api-key" = "sk-ent-1"
    expect 200
}

test "wrong expectations fail" {
    send   POST "/v1/jobs/7?team=blue" header "x-api-key" = "sk-ent-1"
    expect header "x-team" = "red"
    expect limit tenant dev
    send   GET "/v1/whoami" header "x-api-key" = "sk-ent-1"
    expect body {"tenant": "dev", "n": 1}
}
"#;

#[test]
fn tests_expect_rendered_headers_bodies_and_the_limits_that_apply() {
    let dir = fixture(&[("p.gwp", LANGUAGE)]);
    let o = gw_check(&["p.gwp"], dir.path());
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("tests: 4 passed, 1 failed"), "{err}");
    assert!(err.contains(r#"expected header `x-team` = "red", got "blue""#), "{err}");
    assert!(err.contains("expected a limit of `tenant dev` to apply"), "{err}");
    assert!(err.contains(r#"expected the body {"n": 1, "tenant": "dev"}, got"#), "{err}");
}

#[test]
fn an_invalid_policy_exits_one_and_reports_every_error() {
    let dir = fixture(&[("p.gwp", INVALID)]);
    let o = gw_check(&["p.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert_eq!(err.matches("gw::undefined_upstream").count(), 2, "{err}");
    assert!(err.contains("did you mean `llm`?"), "{err}");
}

#[test]
fn max_errors_limits_the_listing() {
    let dir = fixture(&[("p.gwp", INVALID)]);
    let o = gw_check(&["--max-errors", "1", "p.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert_eq!(err.matches("gw::undefined_upstream").count(), 1, "{err}");
    assert!(err.contains("and 1 more diagnostic(s) not shown"), "{err}");
    assert!(err.contains("2 error(s)"), "the summary counts every error: {err}");
}

/// A policy with `n` guards that each refuse every request: `n` errors.
fn many_errors(n: usize) -> String {
    let guards: String = (0..n).map(|_| "    deny 400 \"m\" if true\n").collect();
    format!("route r {{\n    when GET \"/\"\n{guards}    respond 200\n}}\n")
}

#[test]
fn output_is_capped_at_fifty_diagnostics_unless_asked() {
    let dir = fixture(&[("p.gwp", &many_errors(60))]);
    let o = gw_check(&["--format", "plain", "p.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert_eq!(err.matches("gw::guard_contradiction").count(), 50, "{err}");
    assert!(err.contains("... and 10 more diagnostic(s) not shown"), "{err}");
    assert!(err.contains("60 error(s)"), "{err}");

    let all = stderr(&gw_check(&["--format", "plain", "--max-errors", "0", "p.gwp"], dir.path()));
    assert_eq!(all.matches("gw::guard_contradiction").count(), 60);
    assert!(!all.contains("not shown"), "{all}");

    let json = stdout(&gw_check(&["--format", "json", "p.gwp"], dir.path()));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["diagnostics"].as_array().map(Vec::len), Some(50));
    assert_eq!(v["diagnostics_not_shown"], 10);
    assert_eq!(v["errors"], 60);
}

#[test]
fn thousands_of_diagnostics_print_in_linear_time() {
    // 64k of these took 22 s when every report copied and rescanned the whole file.
    let dir = fixture(&[("p.gwp", &many_errors(20_000))]);
    let started = std::time::Instant::now();
    let o = gw_check(&["--format", "plain", "--max-errors", "0", "p.gwp"], dir.path());
    assert_eq!(stderr(&o).matches("gw::guard_contradiction").count(), 20_000);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn a_long_line_is_cut_to_a_window_around_the_label() {
    // 5 MB on one line: each report showed the whole line (26 MB for 5 diagnostics).
    let guards: String = (0..200_000).map(|_| "deny 400 \"m\" if true ").collect();
    let dir = fixture(&[("p.gwp", &format!("route r {{ when GET \"/\" {guards}respond 200 }}\n"))]);
    let o = gw_check(&["--format", "plain", "--max-errors", "5", "p.gwp"], dir.path());
    let err = stderr(&o);
    assert_eq!(err.matches("gw::guard_contradiction").count(), 5, "{err}");
    assert!(err.len() < 5_000, "{} bytes of output", err.len());
    assert!(err.contains("…"), "the cut is marked: {err}");
    assert!(err.contains("[p.gwp:1:"), "the position is the real one: {err}");

    let parens = format!("matcher m = {}true{}\n", "(".repeat(10_000), ")".repeat(10_000));
    let dir = fixture(&[("p.gwp", &parens)]);
    let err = stderr(&gw_check(&["--format", "plain", "p.gwp"], dir.path()));
    assert!(err.contains("gw::syntax::too_deep") && err.len() < 2_000, "{err}");
}

const SERVE_ONLY_ERRORS: &str = r#"
gateway { tls cert "missing.pem" key "missing.key" }
upstream llm { target env("GW_TEST_UNSET"); retry 2 }
route a {
    when GET "/a"
    to llm
}
"#;

#[test]
fn serve_mode_refuses_what_gw_serve_refuses() {
    let dir = fixture(&[("p.gwp", SERVE_ONLY_ERRORS)]);
    let checked = gw_check(&["--format", "plain", "p.gwp"], dir.path());
    assert_eq!(code(&checked), 0, "{}", stderr(&checked));
    let o = gw_check(&["--serve", "--format", "json", "--no-tests", "p.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let codes: Vec<&str> =
        v["diagnostics"].as_array().into_iter().flatten().filter_map(|d| d["code"].as_str()).collect();
    for want in ["gw::env_unset", "gw::startup"] {
        assert!(codes.contains(&want), "{want} missing from {codes:?}");
    }
    // Nothing the runtime would refuse is left: `retry` is served (no `gw::not_supported`).
    assert_eq!(v["errors"], 3, "{codes:?}");

    // With the variable set to a bad URL, the value itself is checked.
    let o = Command::new(env!("CARGO_BIN_EXE_gw-check"))
        .args(["--serve", "--format", "plain", "p.gwp"])
        .current_dir(dir.path())
        .env("GW_TEST_UNSET", "10.0.0.1:8000")
        .output()
        .expect("gw-check runs");
    let err = stderr(&o);
    assert!(err.contains("`10.0.0.1:8000` is not a valid upstream URL"), "{err}");
}

#[test]
fn warnings_pass_unless_denied() {
    let dir = fixture(&[("p.gwp", WARNING_ONLY)]);
    assert_eq!(code(&gw_check(&["p.gwp"], dir.path())), 0);
    let o = gw_check(&["--deny-warnings", "p.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("gw::unused_definition"));
}

#[test]
fn json_output_is_versioned_and_complete() {
    let dir = fixture(&[("p.gwp", INVALID), ("q.gwp", FAILING_TEST)]);
    let o = gw_check(&["--format", "json", "p.gwp", "q.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stdout is JSON");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["errors"], 2);
    assert_eq!(v["tests_failed"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "gw::undefined_upstream");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "p.gwp");
    assert_eq!(d["line"], 4);
    assert_eq!(d["column"], 29);
    assert!(d["byte_start"].as_u64().is_some() && d["byte_end"].as_u64().is_some());
    assert_eq!(d["help"], "defined upstreams: llm");
    assert_eq!(v["diagnostics"][1]["help"], "did you mean `llm`?");
    assert_eq!(v["tests"][0]["passed"], false);
    assert_eq!(v["tests"][0]["failures"][0]["code"], "gw::test_failed");
}

#[test]
fn github_format_prints_workflow_annotations() {
    let dir = fixture(&[("p.gwp", INVALID)]);
    let o = gw_check(&["--format", "github", "p.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("::error file=p.gwp,line=4,col=29,"), "{out}");
    assert!(first.contains("title=gw%3A%3Aundefined_upstream"), "{out}");
}

#[test]
fn folders_are_searched_for_policies() {
    let dir = fixture(&[]);
    std::fs::create_dir_all(dir.path().join("sub/deeper")).expect("mkdir");
    std::fs::write(dir.path().join("sub/deeper/x.gwp"), INVALID).expect("write");
    std::fs::write(dir.path().join("sub/notes.txt"), "not a policy").expect("write");
    let o = gw_check(&["--format", "json", "sub"], dir.path());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["files"].as_array().map(Vec::len), Some(1));
    assert_eq!(code(&o), 1);
}

#[test]
fn usage_and_io_errors_exit_two() {
    let dir = fixture(&[]);
    assert_eq!(code(&gw_check(&[], dir.path())), 2);
    let o = gw_check(&["missing.gwp"], dir.path());
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no such file or folder"));
    assert_eq!(code(&gw_check(&["--format", "yaml", "x.gwp"], dir.path())), 2);
}

#[test]
fn invalid_utf8_names_the_file() {
    let dir = fixture(&[]);
    std::fs::write(dir.path().join("bad.gwp"), b"route a {\xff\xfe}").expect("write");
    let o = gw_check(&["bad.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("`bad.gwp` is not valid UTF-8"), "{}", stderr(&o));
}

#[test]
fn explain_shows_the_route_auth_limits_and_why() {
    let dir = fixture(&[("p.gwp", VALID)]);
    let req = r#"{"method": "POST", "path": "/v1/chat/completions",
                  "headers": {"X-API-Key": "sk-ent-1"}, "body": {"max_tokens": 9000}}"#;
    std::fs::write(dir.path().join("req.json"), req).expect("write");
    let o = gw_check(&["explain", "p.gwp", "--request", "req.json"], dir.path());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("route:   chat"), "{out}");
    assert!(out.contains("key `ent-1` of tenant `enterprise`"), "{out}");
    assert!(out.contains("outcome: 403 refused: max_tokens above 4096"), "{out}");
    // Written for people: no Rust debug text (it printed `Denied { status: 403, .. }`).
    assert!(!out.contains(" { ") && !out.contains("Denied"), "{out}");

    let dev = r#"{"method": "POST", "path": "/v1/chat/completions", "headers": {"X-API-Key": "sk-dev-1"}}"#;
    std::fs::write(dir.path().join("dev.json"), dev).expect("write");
    let out = stdout(&gw_check(&["explain", "p.gwp", "--request", "dev.json"], dir.path()));
    assert!(out.contains("outcome: 200 forwarded to upstream `llm`"), "{out}");
    assert!(out.contains("limit:   rate 2/s (tenant `dev`), counted for `dev`"), "{out}");
    assert!(out.contains("action: forwarded to upstream `llm`") && !out.contains("Forward {"), "{out}");

    let o = gw_check(&["explain", "p.gwp", "--request", "req.json", "--format", "json"], dir.path());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["route"], "chat");
    assert_eq!(v["outcome"]["kind"], "denied");
    assert_eq!(v["outcome"]["status"], 403);
    assert_eq!(v["identity"]["tenant"], "enterprise");
    // The key itself never appears in the explanation.
    assert!(!stdout(&o).contains("sk-ent-1"));
}

#[test]
fn explain_rejects_a_malformed_request_file() {
    let dir = fixture(&[("p.gwp", VALID)]);
    std::fs::write(dir.path().join("req.json"), "{not json").expect("write");
    let o = gw_check(&["explain", "p.gwp", "--request", "req.json"], dir.path());
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not JSON"), "{}", stderr(&o));
}

#[test]
fn codes_lists_the_registry() {
    let dir = fixture(&[]);
    let o = gw_check(&["codes"], dir.path());
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("gw::route_shadowed"));
    let o = gw_check(&["codes", "gw::import::cycle"], dir.path());
    assert!(stdout(&o).contains("import each other"));
}

#[allow(dead_code)]
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn compile_emits_the_graph_as_json_and_dot_without_secrets() {
    let dir = fixture(&[("p.gwp", VALID)]);
    let o = gw_check(&["compile", "p.gwp", "--emit", "json"], dir.path());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert!(v.to_string().contains("chat"));
    assert!(!stdout(&o).contains(&sha("sk-dev-1")), "key hashes must not be emitted");
    let o = gw_check(&["compile", "p.gwp", "--emit", "dot"], dir.path());
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).starts_with("digraph gw {"));
}

#[test]
fn fmt_check_write_and_comment_preservation() {
    let messy = "# keep me\nupstream llm {   target \"http://127.0.0.1:9100\" ;timeout 60s } # trailing\nroute r { when GET \"/x\"; to llm }\n";
    let dir = fixture(&[("p.gwp", messy)]);
    let o = gw_check(&["fmt", "--check", "p.gwp"], dir.path());
    assert_eq!(code(&o), 4);
    assert_eq!(code(&gw_check(&["fmt", "--write", "p.gwp"], dir.path())), 0);
    let once = std::fs::read_to_string(dir.path().join("p.gwp")).expect("read");
    assert!(once.contains("# keep me") && once.contains("# trailing"), "{once}");
    assert_eq!(code(&gw_check(&["fmt", "--check", "p.gwp"], dir.path())), 0, "fmt is idempotent");
    assert_eq!(code(&gw_check(&["p.gwp"], dir.path())), 0, "formatted policy is still valid");
    std::fs::write(dir.path().join("bad.gwp"), "route r { when GET \"/x }").expect("write");
    assert_eq!(code(&gw_check(&["fmt", "bad.gwp"], dir.path())), 1);
}

#[test]
fn a_request_larger_than_a_whole_token_budget_is_400_in_tests_as_in_gw_serve() {
    let policy = r#"
upstream llm { target "http://127.0.0.1:9100" }
route chat {
    when  POST "/v1/chat/completions"
    limit tokens 12500/min
    to    llm
}
test "a request larger than the budget can never pass" {
    send   POST "/v1/chat/completions" body {"model": "gpt-4o", "max_tokens": 13000, "messages": []}
    expect 400
    send   POST "/v1/chat/completions" body {"model": "gpt-4o", "max_tokens": 12000, "messages": []}
    expect 200
    send   POST "/v1/chat/completions" body {"model": "gpt-4o", "max_tokens": 12000, "messages": []}
    expect 429
}
"#;
    let dir = fixture(&[("budget.gwp", policy)]);
    let out = gw_check(&["budget.gwp"], dir.path());
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

const PUBLIC_ROUTE: &str = r#"
upstream llm { target "http://127.0.0.1:9100" }
keys app from "keys/app.keys"

route chat {
    when POST "/v1/chat/completions"
    auth app
    to   llm
}

route models {
    when GET "/v1/models"
    auth none
    to   llm
}

test "anyone may list the models" {
    send GET "/v1/models"
    expect 200
    expect route models
}
"#;

#[test]
fn auth_none_makes_a_route_public_and_says_so() {
    let dir = fixture(&[("p.gwp", PUBLIC_ROUTE), ("q.gwp", &PUBLIC_ROUTE.replace("    auth none\n", ""))]);
    let o = gw_check(&["--deny-warnings", "--format", "plain", "p.gwp"], dir.path());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("tests: 1 passed"), "{}", stderr(&o));

    // Saying nothing about auth on a forwarding route is a warning.
    let o = gw_check(&["--deny-warnings", "--format", "plain", "q.gwp"], dir.path());
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("gw::auth_unspecified"), "{}", stderr(&o));

    // `auth none` is one of the route's `auth` clauses, and no identity is known under it.
    let both = PUBLIC_ROUTE.replace("    auth none\n", "    auth none\n    auth app via bearer\n");
    let tenant = PUBLIC_ROUTE.replace("    auth none\n", "    auth none\n    deny 403 \"x\" if tenant == \"dev\"\n");
    let dir = fixture(&[("both.gwp", &both), ("tenant.gwp", &tenant)]);
    assert!(stderr(&gw_check(&["both.gwp"], dir.path())).contains("gw::route_conflicting_actions"));
    assert!(stderr(&gw_check(&["tenant.gwp"], dir.path())).contains("gw::fact_unavailable"));

    // The formatter keeps it.
    let dir = fixture(&[("p.gwp", PUBLIC_ROUTE)]);
    let o = gw_check(&["fmt", "p.gwp"], dir.path());
    assert!(stdout(&o).contains("auth none"), "{}", stdout(&o));
}

#[test]
fn tenant_and_key_names_are_checked_against_the_key_files() {
    let policy = VALID.replace(
        "    deny 403 \"max_tokens above 4096\"",
        "    deny 403 \"no\" if tenant == \"enterprize\" or key != \"dev-2\"\n    deny 403 \"max_tokens above 4096\"",
    );
    let dir = fixture(&[("p.gwp", &policy)]);
    let o = gw_check(&["--format", "json", "--no-tests", "p.gwp"], dir.path());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let diags: Vec<&serde_json::Value> = v["diagnostics"].as_array().into_iter().flatten().collect();
    let helps: Vec<&str> =
        diags.iter().filter(|d| d["code"] == "gw::unknown_identity").filter_map(|d| d["help"].as_str()).collect();
    assert_eq!(helps.len(), 2, "{diags:?}");
    assert!(helps[0].starts_with("did you mean `enterprise`?"), "{helps:?}");
    assert!(helps[1].starts_with("did you mean `dev-1`?"), "{helps:?}");
}

/// A tenant read from a JWT claim, or a token's subject, can be any name: comparing one with a
/// literal is not a typo to warn about. A `basic` set's fixed tenant is a known tenant.
#[test]
fn tenant_names_from_tokens_are_not_linted() {
    let policy = r#"
upstream u { target "http://127.0.0.1:9" }
jwt tok { alg HS256; secret "s"; tenant claim["org"] }
basic staff from "staff.htpasswd" tenant "ops"
route r {
    when GET "/"
    auth tok or staff
    deny 403 "no" if tenant == "acme" or key == "alice" or tenant == "ops"
    to   u
}
"#;
    let dir = fixture(&[
        ("p.gwp", policy),
        ("staff.htpasswd", "alice:$5$salt$Gbq4GmPuHn0EkOhgK1zMgmk3YLt9GOqVE5bKAK0.JA4\n"),
    ]);
    let o = gw_check(&["--format", "json", "--no-tests", "p.gwp"], dir.path());
    assert!(!stdout(&o).contains("gw::unknown_identity"), "{}", stdout(&o));
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn an_import_cycle_is_spelled_with_the_paths_as_given() {
    let dir = fixture(&[
        ("main.gwp", "import \"lib/a.gwp\"\n"),
        ("lib/a.gwp", "import \"b.gwp\"\n"),
        ("lib/b.gwp", "import \"../lib/a.gwp\"\n"),
    ]);
    let o = gw_check(&["--format", "plain", "main.gwp"], dir.path());
    let err = stderr(&o);
    assert!(err.contains("lib/a.gwp → lib/b.gwp → lib/a.gwp"), "{err}");
    let abs = std::fs::canonicalize(dir.path()).expect("canonical");
    assert!(!err.contains(&abs.display().to_string()), "absolute paths in: {err}");
}

#[test]
fn a_key_file_report_counts_what_it_prints() {
    // The `keys` line was printed as a separate `Warning:` report the summary did not count.
    let dir = fixture(&[("p.gwp", VALID)]);
    std::fs::write(dir.path().join("keys/app.keys"), "not-a-hash dev dev-1\n").expect("write");
    let o = gw_check(&["--format", "plain", "p.gwp"], dir.path());
    let err = stderr(&o);
    assert_eq!(err.matches("gw::keys_file_malformed").count(), 1, "{err}");
    assert!(!err.contains("Warning") && !err.contains('⚠'), "{err}");
    assert!(err.contains("key file named here") && err.contains("1 error(s), 0 warning(s)"), "{err}");
}

#[test]
fn errors_are_listed_before_warnings_when_the_list_is_cut() {
    // Three unused upstreams (warnings) come before the error in the file.
    let policy = "upstream a { target \"http://127.0.0.1:1\" }\nupstream b { target \"http://127.0.0.1:1\" }\n\
                  upstream c { target \"http://127.0.0.1:1\" }\nroute r { when GET \"/\"; auth none; to nowhere }\n";
    let dir = fixture(&[("p.gwp", policy)]);
    let err = stderr(&gw_check(&["--format", "plain", "--max-errors", "2", "p.gwp"], dir.path()));
    assert!(err.contains("gw::undefined_upstream"), "{err}");
    assert_eq!(err.matches("gw::unused_definition").count(), 1, "{err}");
    assert!(err.contains("and 2 more diagnostic(s) not shown"), "{err}");
}

#[test]
fn test_blocks_put_the_path_in_normal_form_as_gw_serve_does() {
    let policy = r#"
upstream app { target "http://127.0.0.1:9100" }
keys app from "keys/app.keys"
route admin {
    when GET "/admin/*"
    auth app
    to   app
}
route public {
    when GET "/*"
    auth none
    to   app
}
test "an escaped letter does not walk around the admin route" {
    send   GET "/%61dmin/users"
    expect 401
    expect route admin
    send   GET "/%2e%2e/admin/users"
    expect 400
    send   GET "/other%3Apage"
    expect 200
    expect route public
}
"#;
    let dir = fixture(&[("paths.gwp", policy)]);
    let out = gw_check(&["paths.gwp"], dir.path());
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

const CACHE_TESTS: &str = r#"
upstream llm { target "http://127.0.0.1:9" }
keys users from "users.keys"
route chat {
    when  POST "/v1/chat"
    auth  users
    limit tokens 100/min per key
    cache 10s
    to    llm
}
route public {
    when  GET "/v1/models"
    auth  none
    cache 10s shared status 404
    to    llm
}

test "a hit is free of tokens, a stream and no-cache bypass" {
    send    POST "/v1/chat" header "x-api-key" = "k1" body {"max_tokens": 90, "messages": []}
    expect  200
    expect  cache miss
    send    POST "/v1/chat" header "x-api-key" = "k1" body {"messages": [], "max_tokens": 90}
    expect  200
    expect  cache hit
    send    POST "/v1/chat" header "x-api-key" = "k1" body {"max_tokens": 90, "messages": [], "stream": true}
    expect  429
    send    POST "/v1/chat" header "x-api-key" = "k1" header "cache-control" = "no-store" body {"max_tokens": 1, "messages": []}
    expect  cache bypass
    advance 1m
    send    POST "/v1/chat" header "x-api-key" = "k1" body {"max_tokens": 90, "messages": []}
    expect  200
    expect  cache miss
}

test "a cache that does not store 200 never hits" {
    send   GET "/v1/models"
    expect cache miss
    send   GET "/v1/models"
    expect cache miss
}

test "wrong" {
    send   GET "/v1/models"
    expect cache hit
}
"#;

#[test]
fn the_test_runner_simulates_the_cache() {
    let key = format!("{} alpha k1\n", sha("k1"));
    let dir = fixture(&[("p.gwp", CACHE_TESTS), ("users.keys", &key)]);
    let o = gw_check(&["--format", "plain", "p.gwp"], dir.path());
    let err = stderr(&o);
    assert!(err.contains("tests: 2 passed, 1 failed") || stdout(&o).contains("tests: 2 passed, 1 failed"), "{err}");
    assert!(err.contains("expected a cache hit, got a cache miss"), "{err}");
}
