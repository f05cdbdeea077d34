//! `gw::not_supported`: in serve mode (what `gw serve` compiles with), constructs the runtime
//! does not implement are errors at the construct; `gw-check` accepts them. And `gw::no_routes`:
//! a policy with no route is not served.

use std::path::Path;

use gw_compiler::diagnostics::{render, Code, Style};
use gw_compiler::load::MemLoader;
use gw_compiler::{compile, compile_str, Mode, Options};

const POLICY: &str = r#"upstream pool {
    target "http://127.0.0.1:9101"
    health GET "/health" every 10s
    retry  2 on connect_error, 502
}

route stats {
    when  GET "/stats"
    cache 5s max 1MB
    to    pool
}
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn gw_check_accepts_what_gw_serve_refuses() {
    let checked = compile_str(POLICY, &Options { mode: Mode::Check, env: &no_env });
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);

    let served = compile_str(POLICY, &Options { mode: Mode::Serve, env: &no_env });
    let codes: Vec<Code> = served.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, vec![Code::NotSupported]);
    assert!(served.program.is_none());
    let text: Vec<String> = served.diagnostics.iter().map(|d| render(d, &served.sources, Style::Plain)).collect();
    insta::assert_snapshot!(text.join("\n"));
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
