//! The canonical formatter: fixtures in `tests/fmt/`, plus every `.gwp` under `policies/` and
//! `examples/` of the workspace.
//!
//! - every fixture parses without diagnostics;
//! - formatting is idempotent and keeps the meaning (the re-parsed tree, spans erased, is equal);
//! - comments are kept, in order, exactly where `*.expected.gwp` says;
//! - `all.gwp` uses every construct of the grammar.

// Helpers outside `#[test]` functions fail the test by panicking.
#![allow(clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use gw_compiler::ast::Item;
use gw_compiler::fmt::{expr_to_string, format_file, format_source, strip_spans, FormatError};
use gw_compiler::source::FileId;
use gw_compiler::syntax;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fmt")
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("compiler/ has a parent").to_path_buf()
}

fn gwp_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            gwp_files_under(&p, out);
        } else if p.extension().is_some_and(|e| e == "gwp") {
            out.push(p);
        }
    }
}

/// The fixtures that are inputs (not `*.expected.gwp`).
fn fixtures() -> Vec<PathBuf> {
    let mut v = vec![];
    gwp_files_under(&fixture_dir(), &mut v);
    v.retain(|p| !p.to_string_lossy().ends_with(".expected.gwp"));
    assert!(!v.is_empty(), "no fixtures in {}", fixture_dir().display());
    v
}

/// Policies and examples written elsewhere in the workspace (may be empty while being written).
fn workspace_policies() -> Vec<PathBuf> {
    let mut v = vec![];
    gwp_files_under(&workspace_dir().join("policies"), &mut v);
    gwp_files_under(&workspace_dir().join("examples"), &mut v);
    v
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parse_clean(name: &str, text: &str) -> syntax::Parsed {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    assert!(diags.is_empty(), "{name}: unexpected diagnostics: {diags:#?}");
    parsed
}

fn fmt(name: &str, text: &str) -> String {
    match format_source(text) {
        Ok(s) => s,
        Err(e) => panic!("{name}: {e}\n{e:?}"),
    }
}

/// Workspace files that do not parse are someone else's work in progress: skipped, not failed.
fn parses(p: &Path, text: &str) -> bool {
    let (_, diags) = syntax::parse(FileId(0), text);
    if diags.iter().any(|d| d.is_error()) {
        eprintln!("skipping {} (syntax errors: {})", p.display(), diags[0].message);
        return false;
    }
    true
}

fn check_idempotent(name: &str, text: &str) {
    let once = fmt(name, text);
    let twice = fmt(name, &once);
    assert_eq!(once, twice, "{name}: formatting is not idempotent\n--- once:\n{once}\n--- twice:\n{twice}");
}

fn check_round_trip(name: &str, text: &str) {
    let (before, _) = syntax::parse(FileId(0), text);
    let out = format_file(&before.file, &before.comments, text);
    let (after, diags) = syntax::parse(FileId(0), &out);
    assert!(diags.is_empty(), "{name}: formatted text has diagnostics {diags:#?}\n{out}");
    assert_eq!(strip_spans(&after.file), strip_spans(&before.file), "{name}: meaning changed\n{out}");
    let texts = |p: &syntax::Parsed| p.comments.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&after), texts(&before), "{name}: comments changed\n{out}");
}

// ---------------------------------------------------------------------- fixtures

#[test]
fn fixtures_parse_without_diagnostics() {
    let mut all = vec![];
    gwp_files_under(&fixture_dir(), &mut all);
    for p in all {
        parse_clean(&p.display().to_string(), &read(&p));
    }
}

#[test]
fn fixtures_are_idempotent_and_round_trip() {
    for p in fixtures() {
        let name = p.display().to_string();
        let text = read(&p);
        check_round_trip(&name, &text);
        check_idempotent(&name, &text);
    }
}

#[test]
fn fixtures_match_expected_output() {
    let mut checked = 0;
    for p in fixtures() {
        let expected = p.with_extension("expected.gwp");
        let bless = std::env::var_os("GW_BLESS").is_some();
        if !expected.exists() && !bless {
            continue;
        }
        let got = fmt(&p.display().to_string(), &read(&p));
        let want = if expected.exists() { read(&expected) } else { String::new() };
        if got != want {
            if bless {
                fs::write(&expected, &got).expect("write expected output");
                checked += 1;
                continue;
            }
            panic!(
                "{}: output differs from {} (set GW_BLESS=1 to update)\n--- got:\n{got}\n--- want:\n{want}",
                p.display(),
                expected.display()
            );
        }
        // The expected output is itself canonical.
        assert_eq!(fmt(&expected.display().to_string(), &want), want);
        checked += 1;
    }
    assert!(checked >= 2, "expected outputs for comments.gwp and all.gwp");
}

#[test]
fn comments_fixture_keeps_every_comment_in_order() {
    let text = read(&fixture_dir().join("comments.gwp"));
    let before = parse_clean("comments.gwp", &text);
    assert!(before.comments.len() >= 20, "the fixture should have comments everywhere");
    let out = fmt("comments.gwp", &text);
    let after = parse_clean("formatted comments.gwp", &out);
    let texts = |p: &syntax::Parsed| p.comments.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&after), texts(&before));
    for c in &before.comments {
        assert_eq!(out.matches(c.text.as_str()).count(), 1, "{} not exactly once", c.text);
    }
}

/// `all.gwp` must use every construct; the names are searched in the tree's debug form.
#[test]
fn all_constructs_fixture_is_complete() {
    let text = read(&fixture_dir().join("all.gwp"));
    let parsed = parse_clean("all.gwp", &text);
    let tree = format!("{:?}", parsed.file);
    let mut missing = vec![];
    let needles = [
        // items
        "Import(",
        "Gateway(",
        "Upstream(",
        "Keys(",
        "Tenant(",
        "Matcher(",
        "Route(",
        "Test(",
        // gateway
        "Listen(",
        "Admin {",
        "token: Some",
        "State(Local)",
        "Redis {",
        "on_error: Local",
        "on_error: Allow",
        "on_error: Deny",
        "Audit {",
        "rotate: Some",
        "rotate: None",
        "MaxBody(",
        "MaxHeaderBytes(",
        "MaxHeaders(",
        "HeaderTimeout(",
        "IdleTimeout(",
        "DrainTimeout(",
        "Tls {",
        "PolicyHeader(true)",
        "PolicyHeader(false)",
        "Forwarded(Strip)",
        "Forwarded(Append)",
        "Forwarded(Keep)",
        "Env(",
        // upstream
        "Target(",
        "weight: Some",
        "region: Some",
        "Balance(RoundRobin)",
        "Balance(Weighted)",
        "Balance(LeastConn)",
        "Balance(Hash(",
        "Header { name",
        "Timeout(",
        "ConnectTimeout(",
        "Health(",
        "timeout: Some",
        "timeout: None",
        "Retry(",
        "ConnectError(",
        "Status(Quantity",
        "MaxConnections(",
        "Affinity(",
        // keys, tenants
        "salt: Some",
        "salt: None",
        "Rate { rate",
        "Tokens(Rate",
        "Concurrent(",
        "Region(",
        // expressions
        "Binary { op: And",
        "Binary { op: Or",
        "Binary { op: Eq",
        "Binary { op: Ne",
        "Binary { op: Gt",
        "Binary { op: Ge",
        "Binary { op: Lt",
        "Binary { op: Le",
        "Binary { op: Contains",
        "Binary { op: Matches",
        "Binary { op: In",
        "Binary { op: StartsWith",
        "Binary { op: EndsWith",
        "Not(",
        "Exists(",
        "func: Lower",
        "func: Upper",
        "func: Number",
        "func: Len",
        "List(",
        "Lit(Str(",
        "Lit(Int(",
        "Lit(Float(",
        "Lit(Bool(",
        "Lit(Regex(",
        "Ref(",
        "Fact(Method)",
        "Fact(Path)",
        "Fact(Host)",
        "Fact(ClientIp)",
        "Fact(Tenant)",
        "Fact(Key)",
        "Fact(Header(",
        "Fact(Query(",
        "Fact(Param(",
        "Fact(Body([])",
        "Field(\"weird key\")",
        "Index(0)",
        "case_insensitive: true",
        "case_insensitive: false",
        // routes
        "When(",
        "host: Some",
        "cond: Some",
        "Auth(",
        "Header(Str",
        "Bearer(",
        "Query(Str",
        "optional: true",
        "optional: false",
        "via: []",
        "Allow {",
        "status: Some",
        "status: None",
        "Deny {",
        "Limit(",
        "LimitKind::Rate",
        "Tokens { rate",
        "estimate: Some",
        "per: Route",
        "per: Key",
        "per: Tenant",
        "per: Client",
        "per: Header(",
        "per: Expr(",
        "model: Some",
        "shadow: true",
        "SetHeader {",
        "StripHeaders(",
        "Rewrite(Prefix",
        "Rewrite(Path",
        "Respond {",
        "body: Some(Json",
        "body: Some(Text",
        "body: None",
        "Cache {",
        "max: Some",
        "max: None",
        "Websocket",
        "Cors(",
        "methods: []",
        "credentials: Some",
        "max_age: Some",
        "Jwt(",
        "Alg(",
        "Secret(",
        "Key(",
        "Jwks(",
        "Issuer(",
        "Audience(",
        "Leeway(",
        "TenantClaim(",
        "TenantName(",
        "Basic(",
        "Claim(",
        "Serve(",
        "To(",
        "Get",
        "Post",
        "Put",
        "Patch",
        "Delete",
        "Head",
        "Options",
        "Any",
        // tests
        "Send(",
        "headers: [(",
        "body: Some(Json",
        "client: Some",
        "Advance(",
        "Expect(Status",
        "message: Some",
        "message: None",
        "Expect(Route(",
        "Expect(Upstream(",
        "Expect(Tenant(",
        "Expect(Cache {",
        "shared: true",
        "Expect(Claim {",
        "Expect(Header {",
    ];
    for n in needles {
        // `LimitKind::Rate` is printed as `Rate { rate` inside `Limit(`; check it that way.
        let n2 = if n == "LimitKind::Rate" { "kind: Rate {" } else { n };
        if !tree.contains(n2) {
            missing.push(n);
        }
    }
    for b in ["health", "ready", "metrics", "tokens", "usage", "upstreams", "config"] {
        let builtin = gw_compiler::ast::Builtin::parse(b).expect("a builtin");
        if !tree.contains(&format!("Serve(BuiltinRef {{ builtin: {builtin:?}")) {
            missing.push(b);
        }
    }
    assert!(missing.is_empty(), "all.gwp does not use: {missing:?}");
}

// ---------------------------------------------------------------------- workspace policies

#[test]
fn workspace_policies_are_idempotent_and_round_trip() {
    let files = workspace_policies();
    if files.is_empty() {
        eprintln!("no .gwp files under policies/ or examples/ yet");
        return;
    }
    for p in files {
        let name = p.display().to_string();
        let text = read(&p);
        if !parses(&p, &text) {
            continue;
        }
        check_round_trip(&name, &text);
        check_idempotent(&name, &text);
    }
}

/// The shipped policies are written in the canonical style (`gw-check fmt --check policies
/// examples` in CI says the same).
#[test]
fn shipped_policies_are_formatted() {
    let files = workspace_policies();
    assert!(!files.is_empty(), "no .gwp files under policies/ or examples/");
    let unformatted: Vec<String> = files
        .iter()
        .filter(|p| {
            let text = read(p);
            fmt(&p.display().to_string(), &text) != text
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(unformatted.is_empty(), "not formatted (run gw-check fmt --write): {unformatted:?}");
}

// ---------------------------------------------------------------------- small cases

fn matcher(expr: &str) -> String {
    let out = fmt(expr, &format!("matcher m = {expr}\n"));
    out.strip_prefix("matcher m = ").and_then(|s| s.strip_suffix('\n')).unwrap_or(&out).to_string()
}

/// The canonical form of an expression, without its source (`expr_to_string`).
fn canonical(expr: &str) -> String {
    let parsed = parse_clean(expr, &format!("matcher m = {expr}\n"));
    match parsed.file.items.first() {
        Some(Item::Matcher(m)) => expr_to_string(&m.expr),
        other => panic!("{expr}: not a matcher: {other:?}"),
    }
}

/// Without source text, an expression gets the fewest parentheses the parser needs, and its
/// literals are spelled canonically.
#[test]
fn canonical_expressions_get_minimal_parentheses() {
    let cases = [
        ("a and b or c", "a and b or c"),
        ("(a and b) or c", "a and b or c"),
        ("a and (b or c)", "a and (b or c)"),
        ("(a or b) and c", "(a or b) and c"),
        ("a or (b or c)", "a or (b or c)"),
        ("(a or b) or c", "a or b or c"),
        ("not a == b", "not a == b"),
        ("not (a == b)", "not a == b"),
        ("(not a) == b", "(not a) == b"),
        ("a == not b", "a == not b"),
        ("(a == not b) == c", "a == (not b) == c"),
        ("a == (not b == c)", "a == not b == c"),
        ("a == b == c", "a == b == c"),
        ("a == (b == c)", "a == (b == c)"),
        ("not a and b", "not a and b"),
        ("not (a and b)", "not (a and b)"),
        ("a and not b or c", "a and not b or c"),
        ("not not a", "not not a"),
        ("not a exists", "not a exists"),
        ("(not a) exists", "(not a) exists"),
        ("(a == b) exists", "(a == b) exists"),
        ("(a exists) exists", "(a exists) exists"),
        ("a exists == b exists", "a exists == b exists"),
        ("((a))", "a"),
        ("lower((a or b)) in [(c), not d]", "lower(a or b) in [c, not d]"),
        ("a==b", "a == b"),
        ("header[\"X-Y\"] == query.Q", "header[\"x-y\"] == query[\"Q\"]"),
        ("param.Id == body.a.b[0][\"c d\"][\"0\"]", "param[\"Id\"] == body.a.b[0][\"c d\"][\"0\"]"),
        ("body[\"ok_name\"] == 1.50", "body.ok_name == 1.5"),
        ("x == -3 and y == 2.0 and z == 1_000", "x == -3 and y == 2.0 and z == 1000"),
        ("m matches /a\\/b/i", "m matches /a\\/b/i"),
        ("m matches /a\\\\\\/b/", "m matches /a\\\\\\/b/"),
    ];
    for (input, want) in cases {
        assert_eq!(canonical(input), want, "input: {input}");
    }
}

/// With its source, the formatter keeps the parentheses the source wrote (one pair) and adds
/// the ones the parser needs, and keeps the spelling of literals.
#[test]
fn source_parentheses_and_literal_spellings_are_kept() {
    let cases = [
        ("a and b or c", "a and b or c"),
        ("(a and b) or c", "(a and b) or c"),
        ("((a))", "(a)"),
        ("(a) or (b)", "(a) or (b)"),
        ("not (a starts_with \"(\")", "not (a starts_with \"(\")"),
        ("a == (\")\" == b)", "a == (\")\" == b)"),
        ("m matches /\\(/ or (n matches /\\)/)", "m matches /\\(/ or (n matches /\\)/)"),
        ("(a == not b) == c", "(a == not b) == c"),
        ("a == (not b) == c", "a == (not b) == c"),
        ("(not a) == b", "(not a) == b"),
        ("a==b", "a == b"),
        ("body[\"ok_name\"] == 1.50", "body.ok_name == 1.50"),
        ("x == -3 and y == 2.0 and z == 1_000", "x == -3 and y == 2.0 and z == 1_000"),
        ("s == \"\\u{e9}\\t\"", "s == \"\\u{e9}\\t\""),
        ("m matches /a\\/b/i", "m matches /a\\/b/i"),
    ];
    for (input, want) in cases {
        assert_eq!(matcher(input), want, "input: {input}");
    }
}

/// Quantities are printed as written; without their source, in the largest exact unit.
#[test]
fn quantities_keep_their_spelling() {
    let text = "gateway { max_body 1048576B; max_header_bytes 1000KB; header_timeout 60s; idle_timeout 90000ms;\
                drain_timeout 48h; audit \"a\" rotate 1536KiB }\n\
                tenant t { rate 60/m burst 5; tokens 1000000/60s }\n\
                tenant u { rate 1000/s; tokens 1500/10s }\n\
                tenant v { rate 7/120s; tokens 3/1000ms }\n\
                route r { cache 0s max 1000000001B }\n";
    let want = "gateway {\n    max_body         1MiB\n    max_header_bytes 1MB\n    header_timeout   1m\n    \
                idle_timeout     90s\n    drain_timeout    2d\n    audit            \"a\" rotate 1536KiB\n}\n\n\
                tenant t {\n    rate   60/min burst 5\n    tokens 1M/min\n}\n\n\
                tenant u {\n    rate   1k/s\n    tokens 1500/10s\n}\n\n\
                tenant v {\n    rate   7/2min\n    tokens 3/s\n}\n\n\
                route r {\n    cache 0s max 1000000001B\n}\n";
    let (parsed, _) = syntax::parse(FileId(0), text);
    assert_eq!(format_file(&strip_spans(&parsed.file), &[], ""), want);
    let kept = "gateway {\n    max_body         1048576B\n    max_header_bytes 1000KB\n    header_timeout   60s\n    \
                idle_timeout     90000ms\n    drain_timeout    48h\n    audit            \"a\" rotate 1536KiB\n}\n\n\
                tenant t { rate 60/m burst 5; tokens 1000000/60s }\n\
                tenant u { rate 1000/s; tokens 1500/10s }\n\
                tenant v { rate 7/120s; tokens 3/1000ms }\n\
                route r { cache 0s max 1000000001B }\n";
    assert_eq!(fmt("quantities", text), kept);
    let text = "upstream u { target \"http://u\" weight 0_3; retry 02 on 502; max_connections 1_000 }\n\
                route r { deny 403 \"no\" if true; limit rate 10/s burst 0_5; limit tokens 1k/min estimate 0100 }\n";
    assert_eq!(fmt("counts", text), text);
}

/// Strings keep their escapes as written; without their source, they get the canonical ones.
#[test]
fn strings_keep_their_escapes() {
    let text = "route r { respond 200 \"a\\\"b\\\\c\\nd\\te\\rf\\0g\\u{1b}h\\u{e9}\u{e9}\" }\n";
    assert_eq!(fmt("strings", text), text);
    let (parsed, _) = syntax::parse(FileId(0), text);
    let out = format_file(&strip_spans(&parsed.file), &[], "");
    assert_eq!(out, "route r {\n    respond 200 \"a\\\"b\\\\c\\nd\\te\\rf\\0g\\u{1b}h\u{e9}\u{e9}\"\n}\n");
}

#[test]
fn json_is_one_line_in_source_order() {
    let text = "route r { respond 200 json {\n  \"b\" : [ 1 , 2.5,-3 ,1e3, null ], # a comment\n  \"a\":{ }, \"c\" : \"x\\\"\" } }\n";
    let out = fmt("json", text);
    assert_eq!(
        out,
        "route r {\n    # a comment\n    respond 200 json {\"b\": [1, 2.5, -3, 1e3, null], \"a\": {}, \"c\": \"x\\\"\"}\n}\n"
    );
    // Without the source text (spans erased), the tree is printed with its keys sorted.
    let (parsed, _) = syntax::parse(FileId(0), text);
    let out = format_file(&strip_spans(&parsed.file), &[], "");
    assert_eq!(
        out,
        "route r {\n    respond 200 json {\"a\": {}, \"b\": [1, 2.5, -3, 1000.0, null], \"c\": \"x\\\"\"}\n}\n"
    );
}

/// `health ... every 10s` directly followed by a `timeout` statement needs a `;`, or the
/// `timeout` would be read as the health check's own.
#[test]
fn health_without_timeout_before_timeout_keeps_a_semicolon() {
    let text = "upstream u {\n    health GET \"/h\" every 10s; timeout 5s\n}\n";
    let out = fmt("health", text);
    assert_eq!(out, "upstream u {\n    health  GET \"/h\" every 10s;\n    timeout 5s\n}\n");
    // On one line, `;` separates every statement anyway.
    let text = "upstream u { health GET \"/h\" every 10s; timeout 5s }\n";
    assert_eq!(fmt("health", text), text);
    let text = "upstream u { health GET \"/h\" every 10s timeout 5s }\n";
    assert_eq!(fmt("health", text), text);
}

/// One-line items stay together where the source had no blank line; a default written out
/// (`on_error local`, `per route`) and a header name's case are kept.
#[test]
fn blocks_single_line_items_and_defaults() {
    let text = "import \"a.gwp\"; import \"b.gwp\"\nkeys k from \"k.keys\" salt env(\"S\")\n\
                tenant t { rate 1/s; concurrent 2 }\nroute e {}\ngateway { state redis \"r\" on_error local }\n\
                route r { auth k via header \"X-Key\"; limit rate 1/s per route; to u }";
    let want = "import \"a.gwp\"\nimport \"b.gwp\"\nkeys k from \"k.keys\" salt env(\"S\")\n\
                tenant t { rate 1/s; concurrent 2 }\nroute e {}\ngateway { state redis \"r\" on_error local }\n\
                route r { auth k via header \"X-Key\"; limit rate 1/s per route; to u }\n";
    assert_eq!(fmt("blocks", text), want);
}

/// A one-line block stays on one line while it fits in 100 columns; a multi-line block stays
/// multi-line, with a blank line around it; consecutive one-line blocks of a kind line up.
#[test]
fn one_line_blocks_stay_while_they_fit() {
    let text = "tenant a { rate 1/s }\ntenant bbb { rate 2/s; concurrent 2 }   # c\n\
                route r {\n    to u\n}\nroute long_enough_to_spill { when POST \"/v1/chat/completions\"; \
                limit rate 10/s burst 20 per key; to upstream_a }\n";
    let want = "tenant a   { rate 1/s }\ntenant bbb { rate 2/s; concurrent 2 }   # c\n\n\
                route r {\n    to u\n}\n\nroute long_enough_to_spill {\n    when  POST \"/v1/chat/completions\"\n    \
                limit rate 10/s burst 20 per key\n    to    upstream_a\n}\n";
    assert_eq!(fmt("one-line", text), want);
}

/// A matcher written over several lines, or too long for 100 columns, is printed one operand
/// of its top `and`/`or` chain a line; one that fits stays on one line.
#[test]
fn long_or_spread_matchers_break_at_their_top_chain() {
    let text = "matcher a = x\n    or y\nmatcher b = x or y\n";
    assert_eq!(fmt("spread", text), "matcher a =\n    x\n    or y\n\nmatcher b = x or y\n");
    let long = format!("matcher c = {}\n", ["header[\"x-some-header\"] exists"; 4].join(" and "));
    let want = format!("matcher c =\n    {}\n", ["header[\"x-some-header\"] exists"; 4].join("\n    and "));
    assert_eq!(fmt("long", &long), want);
    // Comments stay with the operand they were written at; one inside an operand moves
    // before it.
    let text = "matcher a = # head\n    # before x\n    x # about x\n    or (y # in y\n    and z) # about z\n";
    let want = "matcher a = # head\n    # before x\n    x   # about x\n    # in y\n    or (y and z)   # about z\n";
    assert_eq!(fmt("comments", text), want);
}

#[test]
fn empty_and_comment_only_files() {
    assert_eq!(fmt("empty", ""), "");
    assert_eq!(fmt("blank", "\n\n  \n"), "");
    assert_eq!(fmt("comment", "  # only\n\n\n# two"), "# only\n\n# two\n");
}

#[test]
fn crlf_input_gives_lf_output() {
    let text = "route r {\r\n    to up # c\r\n\r\n    # tail\r\n}\r\n";
    assert_eq!(fmt("crlf", text), "route r {\n    to up   # c\n\n    # tail\n}\n");
}

#[test]
fn syntax_errors_are_reported_not_formatted() {
    match format_source("route r { bogus }") {
        Err(FormatError::Syntax(diags)) => assert!(!diags.is_empty()),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------- generated cases

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `GW_FMT_CASES=100000` runs more generated cases than the default.
fn cases(default: usize) -> usize {
    std::env::var("GW_FMT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn gen_expr(r: &mut Rng, depth: usize, out: &mut String) {
    let operands = 1 + r.below(4);
    for i in 0..operands {
        if i > 0 {
            let ops = ["and", "or", "==", "!=", "<", ">=", "in", "contains", "matches", "starts_with"];
            out.push_str(&format!(" {} ", ops[r.below(ops.len())]));
        }
        for _ in 0..r.below(3).saturating_sub(1) {
            out.push_str("not ");
        }
        if depth > 0 && r.below(3) == 0 {
            out.push('(');
            gen_expr(r, depth - 1, out);
            out.push(')');
        } else {
            let atoms = ["a", "b", "c", "1", "\"s\"", "body.x", "header[\"h\"]", "[a, 2]", "len(b)", "/r/i", "true"];
            out.push_str(atoms[r.below(atoms.len())]);
        }
        if r.below(5) == 0 {
            out.push_str(" exists");
        }
    }
}

#[test]
fn generated_expressions_round_trip() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..cases(3000) {
        let mut e = String::new();
        gen_expr(&mut r, 3, &mut e);
        let text = format!("matcher m = {e}\n");
        check_round_trip(&e, &text);
        check_idempotent(&e, &text);
    }
}

/// Comments dropped at random places of the fixtures (wherever the tree stays the same) are
/// all kept, in order, and the result is stable.
#[test]
fn comments_at_random_places_are_kept() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let (mut tried, mut kept) = (0, 0);
    for p in fixtures() {
        let text = read(&p);
        let base = strip_spans(&syntax::parse(FileId(0), &text).0.file);
        let spaces: Vec<usize> = text.char_indices().filter(|(_, c)| *c == ' ' || *c == '\n').map(|(i, _)| i).collect();
        for round in 0..cases(200) {
            let mut picks: Vec<usize> = (0..1 + r.below(6)).map(|_| spaces[r.below(spaces.len())]).collect();
            picks.sort_unstable();
            picks.dedup();
            let mut t = text.clone();
            for (n, &at) in picks.iter().enumerate().rev() {
                let c = if r.below(2) == 0 { format!("# r{round}c{n}\n") } else { format!("\n# r{round}c{n}\n") };
                t.insert_str(at, &c);
            }
            tried += 1;
            let (parsed, diags) = syntax::parse(FileId(0), &t);
            if !diags.is_empty() || strip_spans(&parsed.file) != base {
                continue; // the comment landed inside a string or swallowed code
            }
            let name = format!("{} round {round}", p.display());
            check_round_trip(&name, &t);
            check_idempotent(&name, &t);
            kept += 1;
        }
    }
    assert!(kept * 3 >= tried, "only {kept} of {tried} random placements were usable");
}
