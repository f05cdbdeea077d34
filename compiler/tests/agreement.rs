//! The decision graph agrees with the reference evaluator: for every policy under `policies/`
//! and `examples/` (compiled with the real pipeline) and a few edge-case policies (parsed
//! without checking), random requests built from the policy's own vocabulary get the same
//! `Decision` from `Graph::decide` as from `eval::decide`.

// Helpers outside `#[test]` functions fail the test by panicking.
#![allow(clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gw_compiler::ast::*;
use gw_compiler::keys::{hash_key, LoadedKeys};
use gw_compiler::program::Program;
use gw_compiler::request::{normalize_host, Outcome, Request};
use gw_compiler::source::FileId;
use gw_compiler::{eval, lower, syntax, Mode, Options};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const CASES: u32 = 2000;

fn test_env(name: &str) -> Option<String> {
    match name {
        "AUTH_TOKEN_SALT" => Some("gw-example-salt".to_string()),
        _ => Some(format!("test-{}", name.to_ascii_lowercase())),
    }
}

/// Every `.gwp` under policies/ and examples/, compiled by the real pipeline.
fn policy_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = vec![];
    for dir in ["policies", "examples"] {
        collect(&root.join(dir), &mut out);
    }
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "gwp") {
            out.push(p);
        }
    }
}

fn compile_file(path: &Path) -> Program {
    let opts = Options { mode: Mode::Check, env: &test_env };
    let out = gw_compiler::compile_path(path, &opts);
    match out.program {
        Some(p) => p,
        None => panic!(
            "{} does not compile: {:#?}",
            path.display(),
            out.diagnostics.iter().filter(|d| d.is_error()).collect::<Vec<_>>()
        ),
    }
}

/// A key set for `parse_program`: name, salt, and (key, tenant, key name) lines.
type KeySet<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str, &'a str)]);

/// A program straight from the parser, unchecked: lets the edge-case policies below use
/// constructs `check` would refuse or warn about. Keys: `name = [(key, tenant, key-name)]`.
fn parse_program(text: &str, keysets: &[KeySet<'_>]) -> Program {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    assert!(diags.iter().all(|d| !d.is_error()), "edge-case policy does not parse: {diags:#?}");
    let mut program = Program { items: parsed.file.items, ..Program::default() };
    for (name, salt, keys) in keysets {
        let text: String = keys.iter().map(|(k, t, n)| format!("{} {t} {n}\n", hex_of(&hash_key(*salt, k)))).collect();
        let (loaded, errors) = LoadedKeys::parse(&text, salt.map(str::to_string));
        assert!(errors.is_empty());
        program.keysets.insert(name.to_string(), loaded);
    }
    program
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------ vocabulary

/// Words a request is built from: the policy's own literals plus noise.
#[derive(Debug, Default)]
struct Vocab {
    /// (methods, path pattern, host pattern) of every route.
    routes: Vec<(Vec<String>, String, Option<String>)>,
    paths: Vec<String>,
    /// (header, value) pairs the policy compares or its tests send.
    header_values: Vec<(String, String)>,
    hosts: Vec<String>,
    headers: Vec<String>,
    queries: Vec<String>,
    body_fields: Vec<String>,
    strings: Vec<String>,
    numbers: Vec<f64>,
    keys: Vec<String>,
    bodies: Vec<String>,
}

const KNOWN_KEYS: &[&str] = &[
    "sk-demo-1",
    "sk-demo-2",
    "sk-demo-3",
    "tok-lab-1",
    "tok-lab-2",
    "tok-batch-1",
    "sk-ent-1",
    "sk-ent-2",
    "sk-dev-1",
    "sk-ops-1",
    "pa-web-1",
    "pa-cli-1",
    "sk-acme-1",
    "sk-acme-2",
    "sk-trial-1",
    "sk-user-1",
    "sk-user-2",
    "sk-user-3",
    "k-alpha",
    "k-beta",
    "k-gamma",
    "k-salty",
];

fn vocab(program: &Program) -> Vocab {
    let mut v = Vocab { keys: KNOWN_KEYS.iter().map(|s| s.to_string()).collect(), ..Vocab::default() };
    let mut strings = BTreeSet::new();
    for route in program.routes() {
        for stmt in &route.stmts {
            match &stmt.kind {
                RouteStmtKind::When(w) => {
                    let methods = w.methods.iter().map(|m| m.as_str().to_string()).collect();
                    v.routes.push((methods, w.path.value.clone(), w.host.as_ref().map(|h| h.value.clone())));
                    v.paths.push(w.path.value.clone());
                    if let Some(h) = &w.host {
                        v.hosts.push(h.value.clone());
                    }
                    if let Some(c) = &w.cond {
                        walk(c, &mut v, &mut strings);
                    }
                }
                RouteStmtKind::Allow { cond, .. } | RouteStmtKind::Deny { cond, .. } => {
                    walk(cond, &mut v, &mut strings)
                }
                RouteStmtKind::Limit(l) => {
                    if let Some(c) = &l.cond {
                        walk(c, &mut v, &mut strings);
                    }
                    if let LimitKey::Expr(e) = &l.per {
                        walk(e, &mut v, &mut strings);
                    }
                    if let LimitKey::Header(h) = &l.per {
                        v.headers.push(h.value.clone());
                    }
                }
                RouteStmtKind::Auth(a) => {
                    for c in a.methods.iter().flat_map(|m| &m.via) {
                        match c {
                            Credential::Header(h) => v.headers.push(h.value.clone()),
                            Credential::Query(q) => v.queries.push(q.value.clone()),
                            Credential::Bearer(_) | Credential::Basic(_) => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for m in program.matchers() {
        walk(&m.expr, &mut v, &mut strings);
    }
    for t in program.tests() {
        for stmt in &t.stmts {
            if let TestStmtKind::Send(s) = &stmt.kind {
                v.paths.push(s.path.value.clone());
                for (k, val) in &s.headers {
                    v.headers.push(k.value.to_ascii_lowercase());
                    v.header_values.push((k.value.to_ascii_lowercase(), val.value.clone()));
                    let val = val.value.strip_prefix("Bearer ").unwrap_or(&val.value);
                    v.keys.push(val.to_string());
                }
                if let Some(b) = &s.body {
                    v.bodies.push(b.value.to_string());
                }
            }
        }
    }
    v.strings = strings.into_iter().collect();
    // Mostly keys this program accepts, so requests get past auth.
    // (Tokens its jwt sets accept count too.)
    let now = Request::default().unix_now();
    v.keys.retain(|k| {
        program.keysets.values().any(|ks| ks.lookup(k).is_some())
            || program.jwtsets.values().any(|j| j.verify(k, now).is_some())
    });
    v.header_values.sort();
    v.header_values.dedup();
    for list in
        [&mut v.paths, &mut v.hosts, &mut v.headers, &mut v.queries, &mut v.body_fields, &mut v.keys, &mut v.bodies]
    {
        list.sort();
        list.dedup();
    }
    v
}

fn walk(e: &Expr, v: &mut Vocab, strings: &mut BTreeSet<String>) {
    match &e.kind {
        ExprKind::Lit(Lit::Str(s)) => {
            strings.insert(s.clone());
        }
        ExprKind::Lit(Lit::Int(n)) => v.numbers.push(*n as f64),
        ExprKind::Lit(Lit::Float(f)) => v.numbers.push(*f),
        ExprKind::Lit(_) | ExprKind::Ref(_) => {}
        ExprKind::List(items) | ExprKind::Call { args: items, .. } => items.iter().for_each(|i| walk(i, v, strings)),
        ExprKind::Fact(f) => match f {
            Fact::Header(h) => v.headers.push(h.clone()),
            Fact::Query(q) => v.queries.push(q.clone()),
            Fact::Body(path) => {
                if let Some(PathSeg::Field(f)) = path.first() {
                    v.body_fields.push(f.clone());
                }
            }
            _ => {}
        },
        ExprKind::Not(x) | ExprKind::Exists(x) => walk(x, v, strings),
        ExprKind::Binary { lhs, rhs, .. } => {
            if let (ExprKind::Fact(Fact::Header(h)), ExprKind::Lit(Lit::Str(s))) = (&lhs.kind, &rhs.kind) {
                v.header_values.push((h.clone(), s.clone()));
            }
            walk(lhs, v, strings);
            walk(rhs, v, strings);
        }
    }
}

// ------------------------------------------------------------------ requests from a choice tape

/// Random choices; shrinking moves them toward 0, which picks the first, simplest option.
struct Tape<'a> {
    vals: &'a [u32],
    pos: usize,
}

impl Tape<'_> {
    fn next(&mut self) -> u32 {
        let v = self.vals.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> Option<&'t T> {
        if items.is_empty() {
            return None;
        }
        let i = self.next() as usize % items.len();
        items.get(i)
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 < percent
    }

    fn word(&mut self) -> String {
        const WORDS: &[&str] = &[
            "x",
            "v1",
            "v2",
            "chat",
            "completions",
            "models",
            "job-42",
            "job:42",
            "",
            "a",
            "é",
            "%20",
            "*",
            "{id}",
            "..",
            "gpt-4o",
            "ABC",
            "a b",
            "\u{0}",
            "\u{ff}",
            "ü/x",
        ];
        if self.chance(70) {
            self.pick(WORDS).map(|s| s.to_string()).unwrap_or_default()
        } else {
            let n = self.next() % 12;
            (0..n).map(|_| char::from(b'a' + (self.next() % 26) as u8)).collect()
        }
    }
}

fn instantiate_path(t: &mut Tape<'_>, pattern: &str) -> String {
    let mut out = vec![];
    for seg in pattern.split('/') {
        if seg.starts_with('{') && seg.ends_with('}') && seg.len() >= 2 {
            out.push(if t.chance(80) { format!("p{}", t.next() % 1000) } else { t.word() });
        } else if seg == "*" {
            match t.next() % 4 {
                0 => {}
                1 => out.push(String::new()),
                _ => {
                    out.push(t.word());
                    if t.chance(50) {
                        out.push(t.word());
                    }
                }
            }
        } else {
            out.push(seg.to_string());
        }
    }
    let mut p = out.join("/");
    match t.next() % 16 {
        0 => p.push('/'),
        1 => {
            p.push('/');
            p.push_str(&t.word());
        }
        2 => {
            p.pop();
        }
        3 => p = p.to_ascii_uppercase(),
        _ => {}
    }
    p
}

fn request(t: &mut Tape<'_>, v: &Vocab) -> Request {
    const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY", "get", "BREW", ""];
    let mut req = Request::default();
    let route = if t.chance(90) { t.pick(&v.routes).cloned() } else { None };
    let (methods, pattern, host_pattern) = route.unwrap_or_default();
    req.method = match t.pick(&methods) {
        Some(m) if m != "ANY" && t.chance(75) => m.clone(),
        _ => t.pick(METHODS).copied().unwrap_or("GET").to_string(),
    };
    req.path = if !pattern.is_empty() && t.chance(90) {
        instantiate_path(t, &pattern)
    } else if t.chance(50) {
        let p = t.pick(&v.paths).cloned().unwrap_or_default();
        instantiate_path(t, &p)
    } else {
        (0..t.next() % 4).map(|_| format!("/{}", t.word())).collect()
    };
    if let Some((p, q)) = req.path.clone().split_once('?') {
        req.path = p.to_string();
        req.query = gw_compiler::request::parse_query(q);
    }
    // Host: the explicit field, or the Host header, or nothing.
    let host_pattern = match host_pattern {
        Some(h) if t.chance(85) => Some(h),
        _ => t.pick(&v.hosts).cloned(),
    };
    let host = match (t.next() % 8, host_pattern) {
        (0..=4, Some(h)) => {
            let h = h.strip_prefix("*.").map(|s| format!("{}.{s}", t.word())).unwrap_or_else(|| h.clone());
            match t.next() % 5 {
                0 => h.to_ascii_uppercase(),
                1 => format!("{h}:8443"),
                _ => h,
            }
        }
        (5, _) => format!("{}.example.com", t.word()),
        (6, _) => t.word(),
        _ => String::new(),
    };
    if t.chance(50) {
        req.host = host;
    } else if !host.is_empty() {
        req.headers.push(("host".into(), host));
    }
    // Credentials.
    let key = match t.pick(&v.keys) {
        Some(k) if t.chance(85) => k.clone(),
        _ => t.word(),
    };
    match t.next() % 8 {
        0..=2 => req.headers.push(("x-api-key".into(), key)),
        3..=5 => req.headers.push(("authorization".into(), format!("Bearer {key}"))),
        6 => req.headers.push(("Authorization".into(), format!("bearer  {key} "))),
        _ => {}
    }
    for _ in 0..t.next() % 3 {
        if let Some((k, val)) = t.pick(&v.header_values) {
            req.headers.push((k.clone(), val.clone()));
        }
    }
    for _ in 0..t.next() % 4 {
        let name = match t.pick(&v.headers) {
            Some(h) if t.chance(80) => {
                if t.chance(20) {
                    h.to_ascii_uppercase()
                } else {
                    h.clone()
                }
            }
            _ => t.word(),
        };
        let value = value_string(t, v);
        req.headers.push((name, value));
    }
    for _ in 0..t.next() % 3 {
        let name = match t.pick(&v.queries) {
            Some(q) if t.chance(80) => q.clone(),
            _ => t.word(),
        };
        let value = value_string(t, v);
        req.query.push((name, value));
    }
    req.body = match t.next() % 8 {
        0 => None,
        // Bodies the strict reader refuses: every route that reads the body must refuse them
        // the same way in both engines.
        1 => {
            let json = json_body(t, v).to_string();
            let refused = [
                "{not json".to_string(),
                format!("\u{feff}{json}"),
                format!("{json} x"),
                json.replacen('{', "{\"model\": NaN, ", 1),
                json.replacen('{', "{\"a\": 1, \"a\": 2, ", 1),
                json.replacen('{', "{\"n\": 9007199254740993, ", 1),
                "[1, 2]".to_string(),
            ];
            t.pick(&refused).cloned().map(String::into_bytes)
        }
        2 | 3 => t.pick(&v.bodies).cloned().map(String::into_bytes),
        _ => Some(json_body(t, v).to_string().into_bytes()),
    };
    if t.chance(60) {
        req.client_ip = Some(format!("10.0.0.{}", t.next() % 4));
    }
    req
}

fn value_string(t: &mut Tape<'_>, v: &Vocab) -> String {
    match t.next() % 5 {
        0 | 1 => t.pick(&v.strings).cloned().unwrap_or_default(),
        2 => t.pick(&v.numbers).map(|n| n.to_string()).unwrap_or_default(),
        3 => t.pick(&v.keys).cloned().unwrap_or_default(),
        _ => t.word(),
    }
}

fn json_value(t: &mut Tape<'_>, v: &Vocab, depth: u32) -> serde_json::Value {
    use serde_json::json;
    match t.next() % if depth > 1 { 6 } else { 8 } {
        0 => json!(null),
        1 => json!(t.chance(50)),
        2 => json!(t.pick(&v.numbers).copied().unwrap_or(0.0)),
        3 => json!(t.next() % 10000),
        4 => json!(t.pick(&v.strings).cloned().unwrap_or_default()),
        5 => json!(t.word()),
        6 => serde_json::Value::Array((0..t.next() % 3).map(|_| json_value(t, v, depth + 1)).collect()),
        _ => json_body(t, v),
    }
}

fn json_body(t: &mut Tape<'_>, v: &Vocab) -> serde_json::Value {
    use serde_json::json;
    let mut m = serde_json::Map::new();
    if t.chance(70) {
        let model = match t.next() % 4 {
            0 => json!("gpt-4o"),
            1 => json!("gpt-3.5-turbo"),
            2 => json!(t.pick(&v.strings).cloned().unwrap_or_default()),
            _ => json!(t.next() % 3),
        };
        m.insert("model".into(), model);
    }
    if t.chance(40) {
        m.insert("max_tokens".into(), json!([1, 4096, 4097, 100000, -1][t.next() as usize % 5]));
    }
    if t.chance(40) {
        m.insert("messages".into(), json!([{"role": "user", "content": t.word()}]));
    }
    if t.chance(30) {
        m.insert("stream".into(), json!(t.chance(50)));
    }
    for _ in 0..t.next() % 3 {
        let k = t.pick(&v.body_fields).cloned().unwrap_or_else(|| t.word());
        m.insert(k, json_value(t, v, 1));
    }
    serde_json::Value::Object(m)
}

// ------------------------------------------------------------------ the property

fn check_agreement(name: &str, program: &Program) {
    let graph = match lower::lower(program) {
        Ok(g) => g,
        Err(d) => panic!("{name}: lower failed: {d:?}"),
    };
    let v = vocab(program);
    let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<String, usize>::new());
    let result = runner.run(&prop::collection::vec(any::<u32>(), 64), |tape| {
        let mut t = Tape { vals: &tape, pos: 0 };
        let req = request(&mut t, &v);
        let want = eval::decide(program, &req);
        let got = graph.decide(&req);
        *seen.borrow_mut().entry(outcome_kind(&want)).or_default() += 1;
        if !want.same_decision(&got) {
            return Err(TestCaseError::fail(format!(
                "{name}: graph and eval disagree\nrequest: {req:#?}\neval:  {want:#?}\ngraph: {got:#?}"
            )));
        }
        // The runtime reads the body only when `wants_body` says so: otherwise the decision
        // must not depend on it.
        if !graph.wants_body(&req) {
            let blind = graph.decide(&Request { body: None, ..req.clone() });
            if !blind.same_decision(&got) {
                return Err(TestCaseError::fail(format!(
                    "{name}: the body changed a decision `wants_body` said needs none\nrequest: {req:#?}\nwith body: {got:#?}\nwithout: {blind:#?}"
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    eprintln!("{name}: {seen:?}");
    // At least a fifth of the requests must get past route selection.
    // The generator must reach past route selection, not only produce 404s.
    let routed: usize = seen.iter().filter(|(k, _)| k.contains(' ')).map(|(_, n)| n).sum();
    let has_routes = program.routes().any(|r| r.when().is_some());
    assert!(
        !has_routes || routed * 5 >= CASES as usize,
        "{name}: only {routed} of {CASES} requests reached a route: {seen:?}"
    );
}

/// `status` or `status route`, to see what the generator reaches.
fn outcome_kind(d: &gw_compiler::request::Decision) -> String {
    match &d.route {
        Some(r) => format!("{} {r}", d.outcome.status()),
        None => d.outcome.status().to_string(),
    }
}

#[test]
fn graph_agrees_with_eval_on_every_policy_file() {
    let files = policy_files();
    assert!(files.len() >= 5, "expected the policies and examples, found {files:?}");
    for f in &files {
        let program = compile_file(f);
        check_agreement(&f.display().to_string(), &program);
    }
}

/// Routes that overlap, 405 next to conditions, shared limits used by several routes, `tenant *` for a key-file-only tenant and
/// under blocks that override some of its kinds, wildcard hosts (one with an upper-case
/// suffix, which never matches in eval), `/*` forms, duplicate names and limits.
const EDGE_ROUTING: &str = r#"
upstream a { target "http://127.0.0.1:1" }
upstream b { target "http://127.0.0.1:2" }
keys k from "k.keys"
tenant alpha { rate 10/s; tokens 1k/min; concurrent 2; region "east" }
tenant alpha { rate 10/s }
tenant beta { rate 1/s burst 2 }
tenant * { rate 20/s; tokens 2k/min }
limit shared_jobs rate 3/s per tenant
limit shared_hdr concurrent 2 per header "x-user"
matcher gpt = body.model matches /^gpt-4/
matcher from_alpha = tenant == "alpha"
matcher hdr = header["x-flag"] == "on"
route cond_false { when GET "/v1/items/{id}" if hdr and param.id != "p1"
  to a }
route post_items { when POST|PUT "/v1/items/{id}"
  to a }
route items { when GET "/v1/items/{id}"
  auth k optional
  deny 403 "alpha only" if tenant != "alpha" and header["x-need-alpha"] exists
  limit rate 5/s per key if hdr
  limit rate 5/s per (param.id)
  limit tokens 10k/min per tenant model /^gpt-4/
  limit concurrent 3 per header "x-user"
  limit use shared_jobs
  limit use shared_hdr if hdr
  to b }
route star { when ANY "/v1/*" host "*.example.com"
  auth k via header "x-key", query "key", bearer
  allow if gpt or not body.model exists else 402 "gpt only"
  limit rate 1/s per client shadow
  to a }
route upper { when GET "/v1/x" host "*.Example.COM"
  to a }
route exact_host { when GET "/v1/x" host "API.example.com"
  respond 200 json {"ok": true} }
route everything { when DELETE "/*"
  serve health }
route empty_param { when GET "/e/{}/x"
  to a }
route rel { when GET "v1/*"
  to a }
route star_mid { when GET "/a/*/b"
  to a }
route dup { when GET "/dup/{a}/{a}"
  limit rate 1/s per ([param.a, header["x-u"]])
  to a }
route dup { when GET "/dup/*"
  limit use shared_hdr
  limit rate 1/s
  to b }
route no_when { to a }
route no_action { when PATCH "/none" }
route deep_path { when POST "/d/{x}/{y}/z" if body.messages[0].role == "user" or len(body.messages) > 2
  allow if lower(header["x-mode"]) in ["fast", "slow"] or number(query["n"]) >= 3
  deny 429 "streaming off" if body.stream == true
  to b }
"#;

/// Expressions of every kind over every fact, shared matchers and constant folding.
const EDGE_EXPRESSIONS: &str = r#"
upstream a { target "http://127.0.0.1:1" balance hash(header["x-user"]) }
keys k from "k.keys"
keys salted from "s.keys"
tenant alpha { rate 10/s }
matcher m1 = header["x-a"] contains "a" and query["q"] starts_with "x"
matcher m2 = m1 or body.n >= 2.5
matcher m3 = not m2 and exists_case
matcher exists_case = body.list exists and 3 in body.list
matcher consts = 1 == 1 and "a" < "b" and not (2 > 3)
matcher odd = (method == "GET" or host ends_with ".example.com") and client_ip != "10.0.0.1"
route r1 { when POST "/x/{id}" if m2 or m3
  auth k
  deny 400 "m1" if m1 and key == "alpha-1"
  deny 401 "odd" if odd and upper(path) == "/X/P1"
  allow if consts and (len(param["id"]) < 8 or path matches /^\/x\/p/i) else 409 "long id"
  limit rate 1/s per ([tenant, key])
  limit rate 2/s per (body.model)
  limit rate 3/s per ([header["x-a"], body.max_tokens])
  limit rate 4/s per (body.messages)
  to a }
route r2 { when POST "/x/{id}"
  auth salted via header "x-api-key"
  deny 400 "bad" if body == body and body.max_tokens > 4096
  deny 400 "regex never" if header["x-a"] matches /(/
  to a }
route r3 { when GET|POST "/y" if consts
  allow if m1 or m3
  to a }
"#;

/// Routes chosen by their body behind `auth`: the credential is checked before the body is
/// read, so a request all of them refuse gets that 401 whatever its body.
const EDGE_AUTH_FIRST: &str = r#"
upstream a { target "http://127.0.0.1:1" }
keys k from "k.keys"
keys salted from "s.keys"
route gpt { when POST "/v1/chat" if body.model == "gpt-4o"
  auth k
  to a }
route alt { when POST "/v1/chat" if header["x-alt"] == "on"
  auth salted via header "x-key"
  deny 400 "no stream" if body.stream == true
  to a }
route open_body { when POST "/v1/open/{id}" if body.model exists
  to a }
route after_open { when POST "/v1/open/{id}"
  auth k
  to a }
route optional { when PUT "/v1/chat" if body.max_tokens > 4096
  auth k optional
  to a }
route fallback { when POST|PUT "/v1/*" host "api.example.com"
  auth k
  limit tokens 10k/min per key
  to a }
route after_fallback { when POST "/v1/*"
  to a }
"#;

const K_KEYS: &[(&str, &str, &str)] = &[
    ("k-alpha", "alpha", "alpha-1"),
    ("k-beta", "beta", "beta-1"),
    ("sk-demo-1", "alpha", "demo"),
    ("k-gamma", "gamma", "gamma-1"),
];
const S_KEYS: &[(&str, &str, &str)] = &[("k-salty", "alpha", "salty-1"), ("k-alpha", "beta", "not-salted")];

#[test]
fn graph_agrees_with_eval_on_edge_case_policies() {
    let routing = parse_program(EDGE_ROUTING, &[("k", None, K_KEYS)]);
    check_agreement("edge routing", &routing);
    let exprs = parse_program(EDGE_EXPRESSIONS, &[("k", None, K_KEYS), ("salted", Some("pepper"), S_KEYS)]);
    check_agreement("edge expressions", &exprs);
    let auth_first = parse_program(EDGE_AUTH_FIRST, &[("k", None, K_KEYS), ("salted", Some("pepper"), S_KEYS)]);
    check_agreement("edge auth first", &auth_first);
}

#[test]
fn a_credential_every_candidate_refuses_is_refused_whatever_the_body() {
    let program = parse_program(EDGE_AUTH_FIRST, &[("k", None, K_KEYS), ("salted", Some("pepper"), S_KEYS)]);
    let graph = lower::lower(&program).expect("lowers");
    let req = |key: Option<&str>, body: &str| {
        let mut r = Request::new("POST", "/v1/chat");
        r.host = "api.example.com".into();
        if let Some(k) = key {
            r.headers.push(("x-api-key".into(), k.into()));
        }
        r.body = Some(body.into());
        r
    };
    for body in [r#"{"model":"gpt-4o"}"#, r#"{"model":"other"}"#, "not json"] {
        for (key, want) in [(None, eval::MISSING_KEY), (Some("nope"), eval::INVALID_KEY)] {
            let r = req(key, body);
            assert!(!graph.wants_body(&r), "the body of a refused request is not read: {r:?}");
            let d = eval::decide(&program, &r);
            assert_eq!(d.outcome, Outcome::Unauthorized { message: want.into() }, "{r:?}");
            assert!(d.same_decision(&graph.decide(&r)));
        }
        // A good key: the body decides again.
        let r = req(Some("k-alpha"), body);
        assert!(graph.wants_body(&r));
        assert!(eval::decide(&program, &r).same_decision(&graph.decide(&r)));
    }
    // Without a host the fallback is not a candidate: `after_fallback` (no auth) could answer.
    let mut r = req(Some("nope"), r#"{"model":"other"}"#);
    r.host = String::new();
    assert!(graph.wants_body(&r));
    assert_eq!(graph.decide(&r).route.as_deref(), Some("after_fallback"));
}

#[test]
fn graph_agrees_with_eval_on_the_edge_case_requests_that_matter() {
    let program = parse_program(EDGE_ROUTING, &[("k", None, K_KEYS)]);
    let graph = lower::lower(&program).expect("lowers");
    let mut reqs = vec![];
    for (m, p) in [
        ("GET", "/v1/items/p1"),
        ("GET", "/v1/items/p2"),
        ("DELETE", "/v1/items/p2"),
        ("PATCH", "/v1/items/p2"),
        ("GET", "/v1/x"),
        ("GET", "v1"),
        ("GET", "v1/"),
        ("GET", "/a/*/b"),
        ("GET", "/a/x/b"),
        ("GET", "/e//x"),
        ("GET", "/dup/1/2"),
        ("GET", "/dup"),
        ("PATCH", "/none"),
        ("DELETE", ""),
        ("GET", ""),
    ] {
        for host in ["", "api.example.com", "API.EXAMPLE.COM:80", "x.example.com", ".example.com", "a.b.example.com"] {
            let mut r = Request::new(m, p);
            r.host = host.to_string();
            r.headers.push(("x-flag".into(), "on".into()));
            reqs.push(r);
        }
    }
    for r in &reqs {
        let want = eval::decide(&program, r);
        let got = graph.decide(r);
        assert!(want.same_decision(&got), "request {r:?}\neval {want:#?}\ngraph {got:#?}");
    }
    // Sanity: the normalisation eval applies is the one the graph sees.
    assert_eq!(normalize_host("API.EXAMPLE.COM:80"), "api.example.com");
}

// ------------------------------------------------------------------ jwt, basic, cors

const CREDENTIALS_POLICY: &str = r#"
upstream u { target "http://127.0.0.1:9" }
keys k from "k.keys"
jwt tok {
    alg      HS256
    secret   "jwt-secret"
    issuer   "https://auth.example.com"
    audience "api"
    leeway   10s
    tenant   claim["org"]
}
basic staff from "staff.htpasswd" tenant "ops"
route chat {
    when  POST "/v1/chat"
    auth  k or tok or staff
    cors  origins ["https://app.example.com", "https://*.example.org"] headers ["content-type", "authorization"] credentials
    deny  403 "guests may not chat" if claim["role"] == "guest"
    limit rate 5/s per (claim["sub"])
    to    u
}
route models {
    when GET "/v1/models" if header["x-v"] == "2"
    auth tok optional message "bad token"
    cors origins ["*"]
    to   u
}
route own_options {
    when OPTIONS "/v1/own"
    respond 204
}
route own {
    when POST "/v1/own"
    auth none
    cors origins ["https://app.example.com"]
    to   u
}
"#;

fn token(claims: serde_json::Value, secret: &[u8]) -> String {
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(secret)).unwrap_or_default()
}

/// Requests over every credential kind, CORS preflights and plain requests: the graph and
/// the evaluator decide each alike, and the decisions are the ones the reference describes.
#[test]
fn jwt_basic_and_cors_decisions_agree_with_eval() {
    let hash = bcrypt::hash("pw", 4).unwrap_or_default();
    let keys = format!("{} acme k1\n", hex_of(&hash_key(None, "sk-1")));
    let loader = gw_compiler::load::MemLoader::default()
        .with("policy.gwp", CREDENTIALS_POLICY)
        .with("k.keys", keys)
        .with("staff.htpasswd", format!("alice:{hash}\n"));
    let opts = Options { mode: Mode::Check, env: &test_env };
    let out = gw_compiler::compile(&loader, Path::new("policy.gwp"), &opts);
    let program = out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics));
    let graph = lower::lower(&program).unwrap_or_else(|d| panic!("{d:?}"));
    let now = 1_900_000_000u64;
    let base = serde_json::json!({"sub": "u1", "org": "acme", "iss": "https://auth.example.com", "aud": "api", "exp": now + 60});
    let with = |k: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let tokens = [
        ("good", token(base.clone(), b"jwt-secret")),
        ("guest", token(with("role", "guest".into()), b"jwt-secret")),
        ("expired", token(with("exp", (now - 11).into()), b"jwt-secret")),
        ("within leeway", token(with("exp", (now - 5).into()), b"jwt-secret")),
        ("not yet", token(with("nbf", (now + 30).into()), b"jwt-secret")),
        ("wrong key", token(base.clone(), b"other")),
        ("wrong iss", token(with("iss", "x".into()), b"jwt-secret")),
        ("wrong aud", token(with("aud", serde_json::json!(["x", "y"])), b"jwt-secret")),
        ("aud list", token(with("aud", serde_json::json!(["x", "api"])), b"jwt-secret")),
        ("no tenant", token(with("org", serde_json::Value::Null), b"jwt-secret")),
        ("no exp", token(with("exp", serde_json::Value::Null), b"jwt-secret")),
    ];
    let mut auths: Vec<(String, Option<String>)> = vec![("none".into(), None)];
    auths.extend(tokens.iter().map(|(n, t)| (n.to_string(), Some(format!("Bearer {t}")))));
    auths.push(("key".into(), Some("Bearer sk-1".into())));
    auths.push(("basic".into(), Some("Basic YWxpY2U6cHc=".into())));
    auths.push(("basic wrong".into(), Some("Basic YWxpY2U6eHg=".into())));
    let origins = [None, Some("https://app.example.com"), Some("https://a.example.org"), Some("https://evil.com")];
    let mut statuses: Vec<(String, u16)> = vec![];
    for (method, path) in [
        ("POST", "/v1/chat"),
        ("GET", "/v1/models"),
        ("OPTIONS", "/v1/chat"),
        ("OPTIONS", "/v1/own"),
        ("OPTIONS", "/v1/models"),
    ] {
        for (name, auth) in &auths {
            for origin in origins {
                for asked in [None, Some("POST"), Some("GET"), Some("PUT")] {
                    let mut r = Request::new(method, path);
                    r.now = Some(now);
                    r.body = Some(b"{}".to_vec());
                    if let Some(a) = auth {
                        r.headers.push(("authorization".into(), a.clone()));
                    }
                    if let Some(o) = origin {
                        r.headers.push(("origin".into(), o.into()));
                    }
                    if let Some(m) = asked {
                        r.headers.push(("access-control-request-method".into(), m.into()));
                        r.headers.push(("access-control-request-headers".into(), "Content-Type".into()));
                    }
                    let want = eval::decide(&program, &r);
                    let got = graph.decide(&r);
                    assert!(
                        want.same_decision(&got),
                        "{method} {path} {name} {origin:?} {asked:?}:\n{want:#?}\n{got:#?}"
                    );
                    if method == "POST" && origin.is_none() {
                        statuses.push((name.clone(), want.outcome.status()));
                    }
                    if method == "OPTIONS"
                        && path == "/v1/chat"
                        && asked == Some("POST")
                        && *name == "none"
                        && origin.is_some()
                    {
                        let allowed = origin.is_some_and(|o| o != "https://evil.com");
                        assert_eq!(want.outcome.status(), if allowed { 204 } else { 403 }, "{origin:?}");
                    }
                }
            }
        }
    }
    let status = |n: &str| statuses.iter().find(|(x, _)| x == n).map(|(_, s)| *s);
    for (n, s) in [
        ("none", 401),
        ("good", 200),
        ("guest", 403),
        ("expired", 401),
        ("within leeway", 200),
        ("not yet", 401),
        ("wrong key", 401),
        ("wrong iss", 401),
        ("wrong aud", 401),
        ("aud list", 200),
        ("no tenant", 401),
        ("no exp", 401),
        ("key", 200),
        ("basic", 200),
        ("basic wrong", 401),
    ] {
        assert_eq!(status(n), Some(s), "{n}");
    }
}

/// `exists` and `len` of body fields are read without copying the field (graph/decide.rs):
/// every kind of value, at every size that a guard distinguishes, decides as eval decides.
#[test]
fn body_presence_and_sizes_decide_as_eval_decides() {
    let program = parse_program(
        r#"
upstream a { target "http://127.0.0.1:1" }
route sized { when POST "/v1/sized"
  deny 400 "two items" if len(body.items) == 2
  deny 409 "one key" if len(body.meta) == 1
  deny 410 "five chars" if len(body.name) == 5
  deny 418 "no tags" if len(body.meta.tags) == 0
  deny 422 "no items" if not body.items exists
  deny 429 "note and x" if body.note exists and body.meta.x exists
  to a }
"#,
        &[],
    );
    let graph = lower::lower(&program).expect("lowers");
    let values = [
        "null",
        "0",
        "3",
        "true",
        "\"\"",
        "\"héllo\"",
        "\"hello!\"",
        "[]",
        "[1]",
        "[1,2]",
        "[[],{}]",
        "[1,2,3]",
        "{}",
        "{\"x\":1}",
        "{\"x\":null,\"tags\":[]}",
        "{\"tags\":[1]}",
        "{\"tags\":{}}",
    ];
    let mut bodies: Vec<Option<String>> =
        vec![None, Some(String::new()), Some("not json".into()), Some("[1,2]".into())];
    for field in ["items", "meta", "name", "note"] {
        for v in values {
            bodies.push(Some(format!("{{\"{field}\":{v}}}")));
            bodies.push(Some(format!("{{\"items\":[1],\"{field}\":{v},\"note\":1}}")));
        }
    }
    for body in bodies {
        let mut r = Request::new("POST", "/v1/sized");
        r.headers.push(("content-type".into(), "application/json".into()));
        r.body = body.clone().map(String::into_bytes);
        let (want, got) = (eval::decide(&program, &r), graph.decide(&r));
        assert!(want.same_decision(&got), "body {body:?}\neval: {want:#?}\ngraph: {got:#?}");
    }
}
