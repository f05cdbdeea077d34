//! What `gw-check` (and `gw check`) print: reports in text, JSON and GitHub-annotation form,
//! the explain view, request files. Kept in the library so the runtime's `gw check` shares it
//! and tests can call it without a process.

use std::path::Path;

use serde::Serialize;

use crate::diagnostics::{self, Diag, JsonDiag, Severity, Style};
use crate::graph::Graph;
use crate::program::Program;
use crate::request::{Decision, Outcome, Request};
use crate::source::Sources;
use crate::testing::{self, TestResult};
use crate::Output;

/// Version of the JSON report format; bump on incompatible changes.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// The reference evaluator's decision: what test blocks fall back to should lowering fail.
fn decide(program: &Program, req: &Request) -> Decision {
    crate::eval::decide(program, req)
}

/// Run a policy's tests through the compiled decision graph, the code the runtime executes.
/// Should lowering fail (a compiler bug), the tests run on the reference evaluator instead and
/// the bug is reported as the first test failure.
pub fn run_tests(program: &Program) -> Vec<TestResult> {
    run_compiled_tests(program, crate::lower::lower(program).as_ref())
}

/// `run_tests` on a program already lowered (`Output::lowered`).
pub fn run_compiled_tests(program: &Program, graph: Result<&Graph, &Diag>) -> Vec<TestResult> {
    match graph {
        Ok(graph) => testing::run_tests(program, &|req| graph.decide_traced(req)),
        Err(bug) => {
            let mut results = testing::run_tests(program, &|req| decide(program, req));
            if let Some(first) = results.first_mut() {
                first.failures.insert(0, bug.clone());
            }
            results
        }
    }
}

/// Everything one `gw-check` run found, over all files.
#[derive(Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub errors: usize,
    pub warnings: usize,
    pub tests_passed: usize,
    pub tests_failed: usize,
}

pub struct FileReport {
    pub path: String,
    pub output: Output,
    pub tests: Vec<TestResult>,
}

impl Report {
    pub fn add(&mut self, path: &Path, output: Output, tests: Vec<TestResult>) {
        self.errors += output.diagnostics.iter().filter(|d| d.is_error()).count();
        self.warnings += output.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count();
        self.tests_passed += tests.iter().filter(|t| t.passed()).count();
        self.tests_failed += tests.iter().filter(|t| !t.passed()).count();
        self.files.push(FileReport { path: path.display().to_string(), output, tests });
    }

    /// At most `max` diagnostics (0: all) in file order, errors before warnings when some
    /// must go, and how many were left out.
    fn shown(&self, max: usize) -> (Vec<(&FileReport, &Diag)>, usize) {
        let all: Vec<(&FileReport, &Diag)> =
            self.files.iter().flat_map(|f| f.output.diagnostics.iter().map(move |d| (f, d))).collect();
        let max = if max == 0 { usize::MAX } else { max };
        let errors = all.iter().filter(|(_, d)| d.is_error()).count();
        let mut warnings_left = max.saturating_sub(errors);
        let mut errors_left = max;
        let shown: Vec<_> = all
            .iter()
            .copied()
            .filter(|(_, d)| {
                let left = if d.is_error() { &mut errors_left } else { &mut warnings_left };
                let keep = *left > 0;
                *left = left.saturating_sub(1);
                keep
            })
            .collect();
        let hidden = all.len() - shown.len();
        (shown, hidden)
    }

    pub fn to_text(&self, style: Style, max: usize) -> String {
        let mut s = String::new();
        let (shown, hidden) = self.shown(max);
        for (f, d) in shown {
            s.push_str(&diagnostics::render(d, &f.output.sources, style));
            s.push('\n');
        }
        for f in &self.files {
            for t in &f.tests {
                if t.passed() {
                    s.push_str(&format!("test {} ... ok\n", t.name));
                } else {
                    s.push_str(&format!("test {} ... FAILED\n", t.name));
                    for d in &t.failures {
                        s.push_str(&diagnostics::render(d, &f.output.sources, style));
                    }
                }
            }
        }
        if hidden > 0 {
            s.push_str(&format!(
                "... and {hidden} more diagnostic(s) not shown (the first {max} are; `--max-errors 0` shows all)\n"
            ));
        }
        s.push_str(&format!(
            "{} file(s): {} error(s), {} warning(s); tests: {} passed, {} failed\n",
            self.files.len(),
            self.errors,
            self.warnings,
            self.tests_passed,
            self.tests_failed
        ));
        s
    }

    pub fn to_json(&self, max: usize) -> String {
        #[derive(Serialize)]
        struct JsonTest<'a> {
            file: &'a str,
            name: &'a str,
            passed: bool,
            failures: Vec<JsonDiag>,
        }
        #[derive(Serialize)]
        struct JsonReport<'a> {
            format_version: u32,
            files: Vec<&'a str>,
            errors: usize,
            warnings: usize,
            tests_passed: usize,
            tests_failed: usize,
            diagnostics: Vec<JsonDiag>,
            /// Diagnostics beyond `--max-errors`, counted but not listed.
            diagnostics_not_shown: usize,
            tests: Vec<JsonTest<'a>>,
        }
        let (shown, hidden) = self.shown(max);
        let report = JsonReport {
            format_version: JSON_FORMAT_VERSION,
            files: self.files.iter().map(|f| f.path.as_str()).collect(),
            errors: self.errors,
            warnings: self.warnings,
            tests_passed: self.tests_passed,
            tests_failed: self.tests_failed,
            diagnostics: shown.into_iter().map(|(f, d)| diagnostics::to_json(d, &f.output.sources)).collect(),
            diagnostics_not_shown: hidden,
            tests: self
                .files
                .iter()
                .flat_map(|f| {
                    f.tests.iter().map(move |t| JsonTest {
                        file: &f.path,
                        name: &t.name,
                        passed: t.passed(),
                        failures: t.failures.iter().map(|d| diagnostics::to_json(d, &f.output.sources)).collect(),
                    })
                })
                .collect(),
        };
        serde_json::to_string_pretty(&report).unwrap_or_default()
    }

    pub fn to_github(&self, max: usize) -> String {
        let mut s = String::new();
        let (shown, hidden) = self.shown(max);
        for (f, d) in shown {
            s.push_str(&github_line(d, &f.output.sources));
        }
        for f in &self.files {
            for t in &f.tests {
                for d in &t.failures {
                    s.push_str(&github_line(d, &f.output.sources));
                }
            }
        }
        if hidden > 0 {
            s.push_str(&format!("::notice::{hidden} more diagnostic(s) not shown; `--max-errors 0` shows all\n"));
        }
        s
    }
}

/// One GitHub Actions workflow command (`::error file=..,line=..::message`).
pub fn github_line(d: &Diag, sources: &Sources) -> String {
    let j = diagnostics::to_json(d, sources);
    let level = match d.severity {
        Severity::Warning => "warning",
        _ => "error",
    };
    let mut props = vec![];
    if let Some(f) = &j.file {
        props.push(format!("file={}", escape_property(f)));
    }
    if let (Some(l), Some(c)) = (j.line, j.column) {
        props.push(format!("line={l},col={c}"));
    }
    if let (Some(l), Some(c)) = (j.end_line, j.end_column) {
        props.push(format!("endLine={l},endColumn={c}"));
    }
    props.push(format!("title={}", escape_property(d.code.as_str())));
    let mut msg = d.message.clone();
    if let Some(h) = &d.help {
        msg.push_str(&format!("\nhelp: {h}"));
    }
    format!("::{level} {}::{}\n", props.join(","), escape_data(&msg))
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Read a request description for `explain`.
pub fn parse_request(text: &str) -> Result<Request, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let s = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let path = s("path").ok_or("the request needs a \"path\"")?;
    let mut req = Request::new(&s("method").unwrap_or_else(|| "GET".into()).to_ascii_uppercase(), &path);
    req.host = s("host").unwrap_or_default();
    req.client_ip = s("client_ip");
    req.headers = pairs(obj.get("headers"))?.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let extra_query = pairs(obj.get("query"))?;
    req.query.extend(extra_query);
    req.body = match obj.get("body") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone().into_bytes()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    Ok(req)
}

fn pairs(v: Option<&serde_json::Value>) -> Result<Vec<(String, String)>, String> {
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(vec![]),
        Some(serde_json::Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| match i.as_array().map(Vec::as_slice) {
                Some([k, v]) => Ok((scalar(k), scalar(v))),
                _ => Err("headers/query as a list must hold [name, value] pairs".to_string()),
            })
            .collect(),
        Some(_) => Err("headers/query must be an object or a list of pairs".into()),
    }
}

/// The human view of a decision (`gw-check explain`, `/admin/explain`'s `text`): what happens
/// to the request, in words, then each step that decided it. `--format json` is for machines.
pub fn explain_text(req: &Request, d: &Decision) -> String {
    let mut s = format!("request: {} {}\n", req.method, req.path);
    s.push_str(&format!("route:   {}\n", d.route.as_deref().unwrap_or("(none)")));
    if let Some(id) = &d.identity {
        s.push_str(&format!("auth:    key `{}` of tenant `{}` (key set `{}`)\n", id.key_name, id.tenant, id.keys));
    }
    for (k, v) in &d.params {
        s.push_str(&format!("param:   {k} = {v}\n"));
    }
    for l in &d.limits {
        let what = describe_limit(&l.id).unwrap_or_else(|| l.id.to_string());
        s.push_str(&format!("limit:   {what}, counted for `{}`\n", l.key));
    }
    s.push_str(&format!("outcome: {} {}\n", d.outcome.status(), describe_outcome(&d.outcome)));
    s.push_str("why:\n");
    for (i, t) in d.trace.iter().enumerate() {
        let detail = match t.step.as_str() {
            "action" => describe_outcome(&d.outcome),
            "limit" => match t.detail.split_once(' ') {
                Some((id, rest)) => match describe_limit(id) {
                    Some(what) => format!("{what}, {}", rest.replace("keyed by", "counted for")),
                    None => t.detail.clone(),
                },
                None => t.detail.clone(),
            },
            _ => t.detail.clone(),
        };
        s.push_str(&format!("  {}. {}: {detail}\n", i + 1, t.step));
    }
    s
}

/// What happens to the request, after its status.
fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::NoRoute => "not found: no route matches".to_string(),
        Outcome::MethodNotAllowed { allowed } => {
            format!("method not allowed: routes for this path take {}", allowed.join(", "))
        }
        Outcome::Unauthorized { message } => format!("unauthorized: {message}"),
        Outcome::Preflight { allowed: true, .. } => "a CORS preflight, allowed".to_string(),
        Outcome::Preflight { message, .. } => format!("a CORS preflight, refused: {message}"),
        Outcome::Denied { message, .. } => format!("refused: {message}"),
        Outcome::Invalid { code, message } => format!("refused as unreadable ({code}): {message}"),
        Outcome::Forward { upstream } => format!("forwarded to upstream `{upstream}`"),
        Outcome::Respond { .. } => "answered by the route's `respond`".to_string(),
        Outcome::Serve { builtin } => format!("answered by the built-in `{builtin}` handler"),
    }
}

/// A limit's stable id (`eval::route_limit_id`, `eval::tenant_limit_id`) in words:
/// `route:chat#0:rate:5/1000000000ns:b10:per:key` → "rate 5/s, burst 10, per key (route
/// `chat`)". `None` for an id of another shape.
fn describe_limit(id: &str) -> Option<String> {
    let (kind, owner) = if let Some(rest) = id.strip_prefix("route:") {
        let (route, rest) = rest.split_once('#')?;
        let (_, rest) = rest.split_once(':')?;
        let (kind, per) = rest.split_once(":per:")?;
        let per = per.strip_prefix("header:").map_or_else(|| per.to_string(), |h| format!("header \"{h}\""));
        (format!("{}, per {per}", describe_limit_kind(kind)?), format!("route `{route}`"))
    } else {
        let rest = id.strip_prefix("tenant:")?;
        let (tenant, kind) = rest.split_once(':')?;
        (describe_limit_kind(kind)?, format!("tenant `{tenant}`"))
    };
    Some(format!("{kind} ({owner})"))
}

fn describe_limit_kind(kind: &str) -> Option<String> {
    let (name, rest) = kind.split_once(':')?;
    if name == "concurrent" {
        return Some(format!("at most {rest} at a time"));
    }
    let (rate, burst) = rest.split_once(":b").map_or((rest, None), |(r, b)| (r, Some(b)));
    let (count, window) = rate.strip_suffix("ns")?.split_once('/')?;
    let window: u64 = window.parse().ok()?;
    let unit = match window {
        1_000_000_000 => "s".to_string(),
        60_000_000_000 => "min".to_string(),
        3_600_000_000_000 => "h".to_string(),
        86_400_000_000_000 => "d".to_string(),
        w if w % 1_000_000_000 == 0 => format!("{}s", w / 1_000_000_000),
        w => format!("{}ms", w / 1_000_000),
    };
    let what = if name == "tokens" { "tokens" } else { "rate" };
    let mut out = format!("{what} {count}/{unit}");
    if let Some(b) = burst.filter(|b| *b != "0") {
        out.push_str(&format!(", burst {b}"));
    }
    Some(out)
}

/// Format a policy's text canonically, or say why it cannot be (with rendered diagnostics).
pub fn format_text(name: &str, text: &str, style: Style) -> Result<String, String> {
    match crate::fmt::format_source(text) {
        Ok(out) => Ok(out),
        Err(crate::fmt::FormatError::Syntax(diags)) => {
            let mut sources = Sources::default();
            sources.add(Path::new(name), name.to_string(), text.into());
            let rendered: String = diags.iter().map(|d| diagnostics::render(d, &sources, style)).collect();
            Err(format!("cannot format a policy with syntax errors:\n{rendered}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The compiled graph as JSON or Graphviz dot.
pub fn emit(graph: &Graph, dot: bool) -> Result<String, Diag> {
    if dot {
        Ok(graph.to_dot())
    } else {
        serde_json::to_string_pretty(&graph).map_err(|e| Diag::bug(format!("cannot serialize the graph: {e}")))
    }
}
