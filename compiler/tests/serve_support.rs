//! Serve mode (what `gw serve` compiles with) accepts every construct `gw-check` accepts; and
//! `gw::no_routes`: a policy with no route is not served.

use std::path::Path;

use gw_compiler::diagnostics::{render, Code, Style};
use gw_compiler::load::MemLoader;
use gw_compiler::{compile, compile_str, Mode, Options};

const POLICY: &str = r#"upstream pool {
    target   "http://127.0.0.1:9101" region "east"
    target   "http://127.0.0.1:9102" region "west"
    health   GET "/health" every 10s
    retry    2 on connect_error, 502
    affinity header["x-region"]
}

jwt issuer {
    alg    HS256
    secret "0123456789abcdef0123456789abcdef"
}

route stats {
    when       GET "/stats"
    auth       issuer
    cors       origins ["https://app.example.com"]
    cache      5s max 1MB
    idempotent
    to         pool
}
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

/// The constructs `gw serve` once refused with `gw::not_supported` (upstream `health`, `retry`,
/// `affinity`; route `cache`, `cors`, `jwt`) compile in serve mode exactly as in check mode.
#[test]
fn gw_serve_accepts_what_gw_check_accepts() {
    let checked = compile_str(POLICY, &Options { mode: Mode::Check, env: &no_env });
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let served = compile_str(POLICY, &Options { mode: Mode::Serve, env: &no_env });
    assert!(!served.has_errors(), "{:?}", served.diagnostics);
    assert!(served.graph.is_some(), "{:?}", served.lower_error);
}

#[test]
fn a_policy_without_routes_is_refused_in_serve_mode_only() {
    for text in ["", "\n", "gateway {\n    listen \"127.0.0.1:8080\"\n}\n"] {
        let checked = compile_str(text, &Options { mode: Mode::Check, env: &no_env });
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        let served = compile_str(text, &Options { mode: Mode::Serve, env: &no_env });
        let codes: Vec<Code> = served.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![Code::NoRoutes], "{text:?}");
        assert!(served.program.is_none());
    }
    let served = compile_str("", &Options { mode: Mode::Serve, env: &no_env });
    insta::assert_snapshot!(render(&served.diagnostics[0], &served.sources, Style::Plain));

    // A route in an imported file is a route.
    let loader = MemLoader::default()
        .with("main.gwp", "import \"routes.gwp\"\n")
        .with("routes.gwp", "route r {\n    when GET \"/\"\n    respond 200 \"ok\"\n}\n");
    let served = compile(&loader, Path::new("main.gwp"), &Options { mode: Mode::Serve, env: &no_env });
    assert!(!served.has_errors(), "{:?}", served.diagnostics);
}
