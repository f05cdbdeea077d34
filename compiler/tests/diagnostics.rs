//! The golden diagnostic suite.
//!
//! Every `tests/invalid/<name>.gwp` (or `tests/invalid/<name>/main.gwp` for policies made of
//! several files) is a small invalid policy. Its leading comment names what it must produce:
//!
//! ```text
//! # expect: gw::undefined_upstream at "gpu2"
//! # expect: gw::syntax::too_long starting "header[\"x-model\"]"
//! # expect: gw::io::unreadable
//! ```
//!
//! A `# mode: serve` line compiles the fixture the way `gw serve` (and `gw-check --serve`) does.
//!
//! `at "TEXT"` is the exact text the diagnostic's primary label underlines; `starting "TEXT"`
//! is for labels too long to quote (the underlined text must start with TEXT); with neither,
//! the diagnostic must have no label at all (a file that cannot be read has nothing to point
//! at). Quoted text takes `\"`, `\\`, `\n` and `\r` escapes.
//!
//! For each fixture the harness compiles the policy from disk in Check mode, runs its `test`
//! blocks when it compiles, and checks that every expected code appears where it says, that the
//! diagnostics carry help, and that every span of every diagnostic lies inside its file on char
//! boundaries. Then it snapshots the rendered text of all diagnostics with insta, in
//! `tests/invalid/snapshots/<name>.snap`. Regenerate with
//! `INSTA_UPDATE=always INSTA_FORCE_PASS=1 cargo test -p gw-compiler --test diagnostics`, then
//! read every changed snapshot.
//!
//! A fixture whose output shows a compiler problem says so in a `# KNOWN PROBLEM` comment; its
//! header asserts today's behaviour, so fixing the problem fails the suite until the header and
//! the snapshot are updated. `tests/invalid/keys/` holds key files shared by fixtures;
//! `file_unreadable/` keeps its header in `EXPECT`, because its `main.gwp` is a directory.
//! Inputs that crash the compiler today are `known_bug_*` tests at the end, ignored until fixed.

// Helpers outside `#[test]` functions fail the test by panicking.
#![allow(clippy::panic)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gw_compiler::diagnostics::{self, Code, Diag, Style};
use gw_compiler::load::MemLoader;
use gw_compiler::source::Sources;
use gw_compiler::{cli, compile, compile_path, compile_str, Options, Output};

/// Where the fixtures live, relative to the crate root (the working directory of `cargo test`).
const INVALID: &str = "tests/invalid";

/// Sub-folders of `tests/invalid` that are not fixtures.
const NOT_FIXTURES: &[&str] = &["snapshots", "keys"];

/// Codes no policy can trigger through `gw-check`, so they have no golden case.
const UNTRIGGERABLE: &[(Code, &str)] = &[
    // A policy without routes is a fine library file for gw-check; only serving one is an
    // error. tests/serve_support.rs snapshots it.
    (Code::NoRoutes, "raised in serve mode only, not by gw-check"),
    // An internal compiler error: no input, valid or not, should ever produce it. The hostile
    // input test below asserts that it never appears.
    (Code::Bug, "never raised for any input unless the compiler is wrong"),
];

/// Codes whose diagnostics legitimately carry no help text.
const NO_HELP: &[(Code, &str)] = &[
    // The message already says which file and why (`No such file`, `Is a directory`, ...);
    // there is no label and nothing more to suggest.
    (Code::FileUnreadable, "the message names the file and the OS error"),
];

fn setup() {
    // `cargo test` runs integration tests from the crate root; make sure of it so that the
    // file names in snapshots are the short relative ones.
    if !Path::new(INVALID).is_dir() {
        std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("cannot enter the crate root");
    }
}

// ------------------------------------------------------------------------------------ fixtures

#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    /// The primary label underlines exactly this text.
    At(String),
    /// The primary label's text starts with this.
    Starting(String),
    /// The diagnostic has no label.
    Nowhere,
}

#[derive(Debug, Clone)]
struct Expect {
    code: Code,
    anchor: Anchor,
}

#[derive(Debug)]
struct Fixture {
    name: String,
    /// The file to compile.
    root: PathBuf,
    expects: Vec<Expect>,
    /// Compiled in serve mode (`# mode: serve`).
    serve: bool,
}

fn code_named(s: &str) -> Option<Code> {
    Code::ALL.iter().copied().find(|c| c.as_str() == s)
}

/// Parse `"..."` with `\"`, `\\`, `\n`, `\r` escapes; returns the text and what follows.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or_else(|| format!("expected a quoted text, found `{s}`"))?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                other => return Err(format!("unknown escape {other:?} in `{s}`")),
            },
            c => out.push(c),
        }
    }
    Err(format!("unterminated quoted text in `{s}`"))
}

/// The `# expect:` lines of the leading comment block.
fn parse_expects(text: &str) -> Result<Vec<Expect>, String> {
    let mut out = vec![];
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some(comment) = line.strip_prefix('#') else { break };
        let Some(rest) = comment.trim_start().strip_prefix("expect:") else { continue };
        let rest = rest.trim();
        let (code, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let code = code_named(code).ok_or_else(|| format!("unknown code `{code}` in `{line}`"))?;
        let rest = rest.trim();
        let anchor = if rest.is_empty() {
            Anchor::Nowhere
        } else if let Some(q) = rest.strip_prefix("at ") {
            let (t, tail) = quoted(q.trim_start())?;
            if !tail.trim().is_empty() {
                return Err(format!("trailing text after the quote in `{line}`"));
            }
            Anchor::At(t)
        } else if let Some(q) = rest.strip_prefix("starting ") {
            let (t, tail) = quoted(q.trim_start())?;
            if !tail.trim().is_empty() || t.is_empty() {
                return Err(format!("bad `starting` in `{line}`"));
            }
            Anchor::Starting(t)
        } else {
            return Err(format!("expected `at \"TEXT\"` or `starting \"TEXT\"` in `{line}`"));
        };
        out.push(Expect { code, anchor });
    }
    if out.is_empty() {
        return Err("no `# expect:` line in the leading comment".into());
    }
    Ok(out)
}

/// Every fixture, sorted by name.
fn fixtures() -> Vec<Fixture> {
    setup();
    let mut out = vec![];
    let mut entries: Vec<PathBuf> = std::fs::read_dir(INVALID)
        .expect("tests/invalid is missing")
        .map(|e| e.expect("cannot list tests/invalid").path())
        .collect();
    entries.sort();
    for path in entries {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let (name, root, header) = if path.is_dir() {
            if NOT_FIXTURES.contains(&file_name.as_str()) {
                continue;
            }
            let root = path.join("main.gwp");
            // A fixture whose `main.gwp` cannot be read keeps its expectations in `EXPECT`.
            let header = if root.is_file() { root.clone() } else { path.join("EXPECT") };
            (file_name, root, header)
        } else if let Some(stem) = file_name.strip_suffix(".gwp") {
            (stem.to_string(), path.clone(), path.clone())
        } else {
            panic!("stray file {} in tests/invalid: fixtures are `<name>.gwp` or `<name>/main.gwp`", path.display());
        };
        let bytes = std::fs::read(&header).unwrap_or_else(|e| panic!("cannot read {}: {e}", header.display()));
        let expects =
            parse_expects(&String::from_utf8_lossy(&bytes)).unwrap_or_else(|e| panic!("{}: {e}", header.display()));
        let text = String::from_utf8_lossy(&bytes);
        let serve = text.lines().take_while(|l| l.starts_with('#')).any(|l| l.trim_end() == "# mode: serve");
        out.push(Fixture { name, root, expects, serve });
    }
    out
}

// ------------------------------------------------------------------------------------ checks

/// Compile a fixture and run its tests: the compile output and every diagnostic, test failures
/// last.
fn run(root: &Path, serve: bool) -> (Output, Vec<Diag>) {
    let out = compile_path(root, &if serve { Options::serve() } else { Options::check() });
    let mut all = out.diagnostics.clone();
    if let Some(program) = &out.program {
        for t in cli::run_tests(program) {
            all.extend(t.failures);
        }
    }
    (out, all.into_iter().map(redact).collect())
}

/// Replace this machine's absolute path of the crate with `[crate]`, so that snapshots do not
/// depend on where the repository is checked out (some messages show canonical paths).
fn redact(mut d: Diag) -> Diag {
    let Ok(root) = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")) else { return d };
    let root = root.display().to_string();
    let fix = |s: &mut String| {
        if s.contains(&root) {
            *s = s.replace(&root, "[crate]");
        }
    };
    fix(&mut d.message);
    if let Some(h) = &mut d.help {
        fix(h);
    }
    for l in &mut d.labels {
        fix(&mut l.text);
    }
    d
}

/// Problems with the spans of `diags`: every label must lie inside a known file, on char
/// boundaries, with start <= end.
fn span_problems(diags: &[Diag], sources: &Sources) -> Vec<String> {
    let mut problems = vec![];
    for d in diags {
        for l in &d.labels {
            let s = l.span;
            let Some(f) = sources.get(s.file) else {
                problems.push(format!("{}: label `{}` points into unknown file {:?}", d.code, l.text, s.file));
                continue;
            };
            let (start, end) = (s.start as usize, s.end as usize);
            if start > end || end > f.text.len() {
                problems.push(format!(
                    "{}: label `{}` span {start}..{end} is outside `{}` ({} bytes)",
                    d.code,
                    l.text,
                    f.name,
                    f.text.len()
                ));
            } else if !f.text.is_char_boundary(start) || !f.text.is_char_boundary(end) {
                problems.push(format!(
                    "{}: label `{}` span {start}..{end} splits a character in `{}`",
                    d.code, l.text, f.name
                ));
            }
        }
    }
    problems
}

fn primary_snippet<'s>(d: &Diag, sources: &'s Sources) -> Option<&'s str> {
    d.primary_span().map(|s| sources.snippet(s))
}

/// A snippet shortened for a failure message.
fn short(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn render_all(diags: &[Diag], sources: &Sources) -> String {
    let mut s = String::new();
    for d in diags {
        s.push_str(&diagnostics::render(d, sources, Style::Plain));
        s.push('\n');
    }
    s
}

/// What is wrong with one fixture's diagnostics (empty when it is right).
fn check_fixture(f: &Fixture, diags: &[Diag], sources: &Sources) -> Vec<String> {
    let mut problems = span_problems(diags, sources);
    for e in &f.expects {
        let with_code: Vec<&Diag> = diags.iter().filter(|d| d.code == e.code).collect();
        if with_code.is_empty() {
            let got: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
            problems.push(format!("expected {}, got {got:?}", e.code));
            continue;
        }
        let matching = with_code.iter().find(|d| {
            let snippet = primary_snippet(d, sources);
            match &e.anchor {
                Anchor::At(t) => snippet == Some(t.as_str()),
                Anchor::Starting(t) => snippet.is_some_and(|s| s.starts_with(t.as_str())),
                Anchor::Nowhere => d.labels.is_empty(),
            }
        });
        let Some(d) = matching else {
            let got: Vec<String> =
                with_code.iter().map(|d| short(primary_snippet(d, sources).unwrap_or("(no label)"))).collect();
            problems.push(format!("{} should underline {:?}, underlines {got:?}", e.code, e.anchor));
            continue;
        };
        let exempt = NO_HELP.iter().any(|(c, _)| *c == d.code);
        let has_help = d.help.as_deref().is_some_and(|h| !h.trim().is_empty());
        if !has_help && !exempt {
            problems.push(format!("{} (`{}`) has no help", d.code, d.message));
        }
        if d.message.trim().is_empty() {
            problems.push(format!("{} has an empty message", d.code));
        }
    }
    problems
}

#[test]
fn golden_invalid_policies() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 45, "only {} fixtures; the suite wants at least 45", fixtures.len());
    let mut failures = String::new();
    for f in &fixtures {
        let (out, diags) = run(&f.root, f.serve);
        if diags.is_empty() {
            let _ = writeln!(failures, "{}: compiled without any diagnostic", f.name);
            continue;
        }
        for p in check_fixture(f, &diags, &out.sources) {
            let _ = writeln!(failures, "{}: {p}", f.name);
        }
        let rendered = render_all(&diags, &out.sources);
        insta::with_settings!({
            snapshot_path => "invalid/snapshots",
            prepend_module_to_snapshot => false,
            description => f.root.display().to_string(),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(f.name.as_str(), rendered);
        });
    }
    // A snapshot whose fixture was renamed or removed would never be checked again.
    let names: BTreeSet<&str> = fixtures.iter().map(|f| f.name.as_str()).collect();
    let snapshots = Path::new(INVALID).join("snapshots");
    for entry in std::fs::read_dir(&snapshots).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = file.strip_suffix(".snap") {
            if !names.contains(stem) {
                let _ = writeln!(failures, "{}: snapshot without a fixture; delete it", entry.path().display());
            }
        }
    }
    assert!(failures.is_empty(), "golden diagnostics are wrong:\n{failures}");
}

#[test]
fn every_code_has_a_golden_case() {
    let covered: BTreeSet<Code> = fixtures().iter().flat_map(|f| f.expects.iter().map(|e| e.code)).collect();
    let mut missing = vec![];
    for code in Code::ALL {
        let allowed = UNTRIGGERABLE.iter().any(|(c, _)| c == code);
        match (covered.contains(code), allowed) {
            (false, false) => missing.push(format!("{code}: no fixture in tests/invalid expects it")),
            (true, true) => missing.push(format!("{code}: has a fixture, so remove it from UNTRIGGERABLE")),
            _ => {}
        }
    }
    assert!(missing.is_empty(), "diagnostic codes without a golden case:\n{}", missing.join("\n"));
}

#[test]
fn every_code_is_in_the_language_reference() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grammar/README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let missing: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).filter(|c| !text.contains(c)).collect();
    assert!(missing.is_empty(), "codes not documented in grammar/README.md: {missing:?}");
}

// ------------------------------------------------------------------------------------ valid policies

fn gwp_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            gwp_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "gwp") {
            out.push(p);
        }
    }
}

#[test]
fn valid_policies_have_no_errors() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![];
    for dir in ["policies", "examples"] {
        gwp_files(&base.join(dir), &mut files);
    }
    assert!(!files.is_empty(), "no policies found under policies/ and examples/");
    let mut failures = String::new();
    for path in &files {
        let out = compile_path(path, &Options::check());
        let errors: Vec<&Diag> = out.diagnostics.iter().filter(|d| d.is_error()).collect();
        for p in span_problems(&out.diagnostics, &out.sources) {
            let _ = writeln!(failures, "{}: {p}", path.display());
        }
        if !errors.is_empty() {
            let _ = writeln!(failures, "{}: {} error(s)", path.display(), errors.len());
            for d in errors {
                failures.push_str(&diagnostics::render(d, &out.sources, Style::Plain));
            }
        }
    }
    assert!(failures.is_empty(), "valid policies do not compile cleanly:\n{failures}");
}

// ------------------------------------------------------------------------------------ hostile input

/// A small deterministic generator (xorshift64*), so the garbage is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn garbage_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Random ASCII (control characters included): gets past the UTF-8 check into the parser.
fn garbage_ascii(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..len).map(|_| (rng.next() % 128) as u8).collect()
}

/// Random characters from all of Unicode, as UTF-8.
fn garbage_chars(seed: u64, count: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let text: String = (0..count)
        .filter_map(|_| {
            char::from_u32(match rng.below(4) {
                0 => (rng.next() % 0x80) as u32,
                1 => (rng.next() % 0x800) as u32,
                2 => (rng.next() % 0x1_0000) as u32,
                _ => (rng.next() % 0x11_0000) as u32,
            })
        })
        .collect();
    text.into_bytes()
}

/// Random sequences of the language's own tokens: garbage that gets further into the parser.
fn garbage_tokens(seed: u64, count: usize) -> Vec<u8> {
    const TOKENS: &[&str] = &[
        "gateway",
        "upstream",
        "keys",
        "tenant",
        "matcher",
        "route",
        "test",
        "import",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        "\"",
        "\"/v1\"",
        "\"x\"",
        "when",
        "GET",
        "POST",
        "to",
        "gpu",
        "if",
        "and",
        "or",
        "not",
        "==",
        "=",
        "!=",
        "header",
        "body",
        ".",
        "model",
        "matches",
        "/gpt/",
        "/",
        "10/s",
        "5s",
        "10MB",
        "99999999999999999999",
        "respond",
        "200",
        "json",
        "deny",
        "allow",
        "limit",
        "rate",
        "per",
        "key",
        "auth",
        "expect",
        "send",
        "exists",
        "#",
        "\n",
        " ",
        ";",
        ",",
        ":",
        "\\",
        "env(",
        "target",
        "\"http://h:1\"",
        "é",
        "\u{1F600}",
        "\r\n",
        "\t",
    ];
    let mut rng = Rng(seed);
    let mut out = String::new();
    for _ in 0..count {
        out.push_str(TOKENS[rng.below(TOKENS.len())]);
        if rng.below(3) == 0 {
            out.push(' ');
        }
    }
    out.into_bytes()
}

fn hostile_inputs() -> Vec<(String, Vec<u8>)> {
    let mut inputs: Vec<(String, Vec<u8>)> = vec![];
    for seed in [1u64, 2, 3, 0x5eed, 0xdead_beef, 0x0123_4567_89ab_cdef] {
        inputs.push((format!("random bytes, seed {seed:#x}"), garbage_bytes(seed, 4096)));
        inputs.push((format!("random ASCII, seed {seed:#x}"), garbage_ascii(seed, 4096)));
        inputs.push((format!("random characters, seed {seed:#x}"), garbage_chars(seed, 2048)));
        inputs.push((format!("random tokens, seed {seed:#x}"), garbage_tokens(seed, 1500)));
    }
    let n = 10_000;
    inputs.push((
        "10,000 nested parentheses".into(),
        format!("matcher m = {}true{}\n", "(".repeat(n), ")".repeat(n)).into_bytes(),
    ));
    inputs.push(("10,000 unclosed parentheses".into(), format!("matcher m = {}\n", "(".repeat(n)).into_bytes()));
    inputs.push(("10,000 nested braces".into(), format!("route r {}\n", "{".repeat(n)).into_bytes()));
    inputs.push((
        "10,000 nested braces, closed".into(),
        format!("route r {}{}\n", "{".repeat(n), "}".repeat(n)).into_bytes(),
    ));
    inputs.push((
        "10,000 nested brackets".into(),
        format!("matcher m = method in {}\"GET\"{}\n", "[".repeat(n), "]".repeat(n)).into_bytes(),
    ));
    inputs.push((
        "10,000 nested JSON arrays".into(),
        format!("route r {{ when GET \"/\" respond 200 json {}1{} }}\n", "[".repeat(n), "]".repeat(n)).into_bytes(),
    ));
    let operands: Vec<String> = (0..100_000).map(|i| format!("header[\"x\"] == \"{i}\"")).collect();
    inputs
        .push(("a 100,000-operand expression".into(), format!("matcher m = {}\n", operands.join(" or ")).into_bytes()));
    inputs.push(("100,000 `not`s".into(), format!("matcher m = {}true\n", "not ".repeat(100_000)).into_bytes()));
    // What the diagnostics of issue 11 look at: operators, characters, escapes, EOF, CRLF.
    for (name, text) in [
        ("`&&` at the end of the file", "matcher m = true &&"),
        ("`!` at the end of the file", "route r {\r\n  when GET \"/\" if !"),
        ("a look-alike at the end of the file", "upstream р"),
        ("a NUL at the end of the file", "upstream u\0"),
        ("a lone backslash ending a string", "route r { respond 200 \"a\\\n\" }"),
        ("an escape past Unicode", "route r { when GET \"/\"; respond 200 \"\\u{110000}\\u{D800}\\u{}\" }"),
        ("an unclosed block in CRLF", "route r {\r\n  when GET \"/\"\r\n  respond 200\r\n"),
        ("an unclosed JSON object", "route r { when GET \"/\" respond 200 json { \"a\": {"),
        ("a label at a CRLF line break", "route r {\r\n  when GET \"/\" \r\n  to\r\n}\r\n"),
    ] {
        inputs.push((name.into(), text.as_bytes().to_vec()));
    }
    inputs.push((
        "100,000 `exists`".into(),
        format!("matcher m = header[\"x\"]{}\n", " exists".repeat(100_000)).into_bytes(),
    ));
    let digits = "9".repeat(5_000);
    inputs.push((
        "huge number literals".into(),
        format!(
            "gateway {{ max_body {digits}MB max_headers {digits} }}\n\
             tenant t {{ rate {digits}/s burst {digits} }}\n\
             matcher m = body.n > {digits} or body.f > {digits}.5 or body.a[{digits}] exists\n\
             route r {{ when GET \"/\" respond {digits} }}\n"
        )
        .into_bytes(),
    ));
    inputs.push(("invalid UTF-8".into(), b"route r {\n  when GET \"/\xff\xfe\"\n  respond 200\n}\n".to_vec()));
    inputs.push(("a lone continuation byte first".into(), b"\x80route r { when GET \"/\" respond 200 }".to_vec()));
    inputs.push((
        "a truncated multi-byte character at the end".into(),
        "route r { when GET \"/é\" respond 200 }\u{e9}".as_bytes()[..40].to_vec(),
    ));
    inputs.push(("an empty file".into(), vec![]));
    inputs.push(("only comments".into(), b"# one\n# two\n#\n   # three, indented\n".to_vec()));
    inputs.push(("only whitespace".into(), b" \n\t\r\n   \n".to_vec()));
    inputs.push(("a NUL byte".into(), b"route r {\n  when GET \"/\"\0\n  respond 200\n}\n".to_vec()));
    inputs.push(("a NUL byte in a string".into(), b"route r {\n  when GET \"/\0\"\n  respond 200\n}\n".to_vec()));
    inputs.push(("only NUL bytes".into(), vec![0; 64]));
    inputs.push(("a byte-order mark".into(), "\u{feff}route r { when GET \"/\" respond 200 }\n".as_bytes().to_vec()));
    inputs.push((
        "CRLF line endings".into(),
        "route health {\r\n    when GET \"/health\"\r\n    serve health\r\n}\r\n\r\ntest \"health\" {\r\n    send GET \"/health\"\r\n    expect 200\r\n}\r\n"
            .as_bytes()
            .to_vec(),
    ));
    inputs.push((
        "CRLF with errors".into(),
        "route r {\r\n    wen GET \"/\"\r\n    to nowhere\r\n}\r\n".as_bytes().to_vec(),
    ));
    inputs.push(("a lone CR".into(), b"route r {\r when GET \"/\"\r respond 200\r}\r".to_vec()));
    inputs.push(("an unterminated string at the end".into(), b"route r { when GET \"/".to_vec()));
    inputs.push(("an unterminated regex at the end".into(), b"matcher m = path matches /abc".to_vec()));
    inputs.push(("a backslash at the end".into(), b"matcher m = path == \"\\".to_vec()));
    inputs.push((
        "multi-byte characters everywhere".into(),
        "r\u{e9}oute \u{1F600} { wh\u{e9}n GET \"/\u{1F600}\" t\u{f6} \u{4e2d} }\n\u{1F600}".as_bytes().to_vec(),
    ));
    inputs.push((
        "a very long line".into(),
        format!("route r {{ when GET \"/{}\" respond 200 }}\n", "a".repeat(200_000)).into_bytes(),
    ));
    inputs.push((
        "a very long name".into(),
        format!("route {} {{ when GET \"/\" respond 200 }}\n", "r".repeat(100_000)).into_bytes(),
    ));
    inputs.push(("a 10,000-matcher chain".into(), {
        let mut s = String::from("matcher m0 = path == \"/\"\n");
        for i in 1..10_000 {
            s.push_str(&format!("matcher m{i} = m{}\n", i - 1));
        }
        s.push_str("route r { when GET \"/\" if m9999 respond 200 }\n");
        s.into_bytes()
    }));
    inputs
}

/// Hostile inputs that are nonetheless valid policies: they must compile without errors, and
/// their tests (if any) must pass.
const MUST_BE_CLEAN: &[&str] = &[
    "an empty file",
    "only comments",
    "only whitespace",
    "a byte-order mark",
    "CRLF line endings",
    "a lone CR",
    "a very long line",
];

fn check_hostile(name: &str, bytes: &[u8]) -> Vec<String> {
    let loader = MemLoader::default().with("policy.gwp", bytes.to_vec());
    let result = std::panic::catch_unwind(|| {
        let out = compile(&loader, Path::new("policy.gwp"), &Options::check());
        let mut diags = out.diagnostics.clone();
        if let Some(program) = &out.program {
            for t in cli::run_tests(program) {
                diags.extend(t.failures);
            }
        }
        // Rendering must not panic either.
        let _ = render_all(&diags, &out.sources);
        (out, diags)
    });
    let (out, diags) = match result {
        Ok(r) => r,
        Err(_) => return vec![format!("{name}: panicked")],
    };
    let mut problems: Vec<String> =
        span_problems(&diags, &out.sources).into_iter().map(|p| format!("{name}: {p}")).collect();
    if out.program.is_none() && !out.has_errors() {
        problems.push(format!("{name}: no program and no error"));
    }
    for d in &diags {
        if d.code == Code::Bug {
            problems.push(format!("{name}: internal error: {}", d.message));
        }
        if MUST_BE_CLEAN.contains(&name) && d.is_error() {
            problems.push(format!("{name}: a valid policy got {}: {}", d.code, d.message));
        }
    }
    if MUST_BE_CLEAN.contains(&name) && out.program.is_none() {
        problems.push(format!("{name}: a valid policy did not compile"));
    }
    problems
}

#[test]
fn nothing_panics_on_hostile_input() {
    // A small stack proves that nothing recurses as deep as the input is nested.
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let mut problems = vec![];
            for (name, bytes) in hostile_inputs() {
                problems.extend(check_hostile(&name, &bytes));
            }
            problems
        })
        .expect("cannot spawn the test thread");
    let problems = handle.join().expect("the hostile-input thread panicked");
    assert!(problems.is_empty(), "hostile input went wrong:\n{}", problems.join("\n"));
}

// ------------------------------------------------------------------------------------ known bugs
//
// Inputs that crash the compiler today. They run `gw-check` in a child process, so that a stack
// overflow (which aborts, and cannot be caught) fails only its own test. Each is ignored until the
// bug is fixed; run them with `cargo test -p gw-compiler --test diagnostics -- --ignored`.

/// Run `gw-check --format FORMAT` on `text`: its standard output, or what went wrong if it
/// crashed.
fn gw_check_survives(name: &str, format: &str, text: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("gw-diagnostics-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("policy.gwp");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gw-check"))
        .arg("--format")
        .arg(format)
        .arg(&file)
        .env("RUST_BACKTRACE", "0")
        .output()
        .map_err(|e| format!("cannot run gw-check: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let crashed =
        !matches!(out.status.code(), Some(0..=3)) || stderr.contains("panicked") || stderr.contains("overflow");
    if crashed {
        return Err(format!("gw-check crashed ({}): {}", out.status, short(stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nested_behind_regex(regex: &str, depth: usize) -> String {
    format!(
        "matcher m = path matches {regex} or {}true{}\nroute r {{ when GET \"/\" if m respond 200 }}\n",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

#[test]
fn nesting_hidden_behind_a_regex_literal_is_still_bounded() {
    // The careful nesting count reads `#` and `"` inside a regex as a comment or a string, so
    // a backstop counts every bracket: hidden nesting is refused past 4 × MAX_DEPTH levels,
    // and anything below that is shallow enough to parse without overflowing the stack.
    for regex in ["/#/", "/\"/"] {
        gw_check_survives("hidden-nesting-100", "json", &nested_behind_regex(regex, 100))
            .unwrap_or_else(|e| panic!("{e}"));
        let json = gw_check_survives("hidden-nesting-2000", "json", &nested_behind_regex(regex, 2000))
            .unwrap_or_else(|e| panic!("2,000 nested parentheses after {regex}: {e}"));
        let report: serde_json::Value = serde_json::from_str(&json).expect("gw-check printed no JSON report");
        let codes: Vec<&str> =
            report["diagnostics"].as_array().into_iter().flatten().filter_map(|d| d["code"].as_str()).collect();
        assert!(codes.contains(&Code::SyntaxTooDeep.as_str()), "2,000 nested parentheses after {regex}: got {codes:?}");
    }
}

#[test]
fn a_label_far_right_on_a_long_line_renders() {
    let text = format!("route r {{ when GET \"/{}\" to nowhere }}\n", "a".repeat(70_000));
    if let Err(e) = gw_check_survives("long-line", "plain", &text) {
        panic!("{e}");
    }
}

#[test]
fn a_long_matcher_chain_is_refused_not_overflowed() {
    let mut text = String::from("matcher m0 = path == \"/\"\n");
    for i in 1..10_000 {
        text.push_str(&format!("matcher m{i} = m{}\n", i - 1));
    }
    text.push_str("route r { when GET \"/\" if m9999 respond 200 }\ntest \"chain\" { send GET \"/\" expect 200 }\n");
    if let Err(e) = gw_check_survives("matcher-chain", "plain", &text) {
        panic!("{e}");
    }
}

fn plain_report(text: &str) -> String {
    let out = compile_str(text, &Options::check());
    out.diagnostics.iter().map(|d| diagnostics::render(d, &out.sources, Style::Plain)).collect()
}

#[test]
fn a_five_megabyte_line_of_garbage_says_what_was_expected() {
    // It said "expected something else": the `{` pest wanted is a literal, not a rule.
    let text = format!("route r {}\n", "$%^&*@!".repeat(700_000));
    let report = plain_report(&text);
    assert!(report.contains("expected `{`, found `$`"), "{}", &report[..report.len().min(2000)]);
    assert!(report.len() < 2_000, "{} bytes", report.len());

    // A 5 MB word is quoted cut, not whole.
    let text = format!("upstream u {{ target \"http://x:1\" timeout {} }}\n", "x".repeat(5_000_000));
    let report = plain_report(&text);
    assert!(
        report.contains("found `xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…`"),
        "{}",
        &report[..report.len().min(2000)]
    );
    assert!(report.len() < 2_000, "{} bytes", report.len());
}

#[test]
fn a_health_timeout_on_the_next_line_is_the_upstreams() {
    use gw_compiler::ast::{Item, UpstreamStmtKind};
    let health_timeout = |text: &str| -> (Option<u64>, bool) {
        let out = compile_str(text, &Options::check());
        let program = out.program.unwrap_or_else(|| panic!("{:?}", out.diagnostics));
        let Some(Item::Upstream(u)) = program.items.first() else { panic!("no upstream") };
        let health = u.stmts.iter().find_map(|s| match &s.kind {
            UpstreamStmtKind::Health(h) => Some(h.timeout.map(|t| t.value)),
            _ => None,
        });
        let own = u.stmts.iter().any(|s| matches!(s.kind, UpstreamStmtKind::Timeout(_)));
        (health.flatten(), own)
    };
    let next_line = "upstream u {\n    target \"http://x:1\"\n    health GET \"/h\" every 10s\n    timeout 60s\n}\n";
    assert_eq!(health_timeout(next_line), (None, true));
    let same_line = "upstream u {\n    target \"http://x:1\"\n    health GET \"/h\" every 10s timeout 2s\n}\n";
    assert_eq!(health_timeout(same_line), (Some(2_000_000_000), false));
}

mod excerpt_property {
    use super::*;
    use gw_compiler::diagnostics::Diag;
    use gw_compiler::source::{FileId, Span};
    use proptest::prelude::*;

    /// Text with short and long lines, CRLF, multibyte and look-alike characters.
    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("route r {".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("é".to_string()),
            Just("р".to_string()),
            Just("    to gpu".to_string()),
            "[a-z ]{1,5}".prop_map(|s| s),
            (1usize..400).prop_map(|n| "x".repeat(n)),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Whatever the spans, a report renders, and every label's text is in it: drawn in the
        /// excerpt or listed under the help.
        #[test]
        fn every_label_is_shown(a in text(), b in text(), spans in proptest::collection::vec((0usize..5000, 0usize..300, any::<bool>()), 1..4)) {
            let mut sources = Sources::default();
            let fa = sources.add(Path::new("a.gwp"), "a.gwp".into(), a.clone().into());
            let fb = sources.add(Path::new("b.gwp"), "b.gwp".into(), b.clone().into());
            let mut d = Diag::error(Code::SyntaxUnexpected, "m");
            for (i, (start, len, other)) in spans.iter().enumerate() {
                let (file, t): (FileId, &str) = if *other { (fb, &b) } else { (fa, &a) };
                let s = gw_compiler::source::floor_char_boundary(t, *start);
                let e = gw_compiler::source::floor_char_boundary(t, s + len);
                let span = Span::new(file, s, e);
                d = if i == 0 { d.primary(span, format!("label{i}")) } else { d.secondary(span, format!("label{i}")) };
            }
            let out = diagnostics::render(&d, &sources, Style::Plain);
            for i in 0..spans.len() {
                prop_assert!(out.contains(&format!("label{i}")), "label{i} missing from:\n{out}");
            }
            // The position in the header is the primary label's, in the file's own lines.
            // (A position inside a CRLF is shown at the `\r`, the end of the line.)
            let primary = d.labels[0].span;
            let (name, t) = if primary.file == fb { ("b.gwp", &b) } else { ("a.gwp", &a) };
            let mut start = primary.start as usize;
            if t[..start].ends_with('\r') && t[start..].starts_with('\n') {
                start -= 1;
            }
            let (line, col) = sources.line_col(primary.file, start as u32);
            let at = format!("[{name}:{line}:{col}]");
            prop_assert!(out.contains(&at), "{at} missing from:\n{out}");
        }
    }
}
