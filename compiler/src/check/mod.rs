//! Stage 3: meaning. Types of expressions, ranges of values, regexes, path patterns, URLs and
//! header names; route rules (one `when`, one action, shadowed routes, contradictory guards,
//! facts used before they are known); test blocks. It reads nothing: env vars and key files
//! are read by `load::inputs`.
//!
//! `Checker` is the driver (this file: items in order, matcher depth, test blocks); its rules
//! live by subject: `types` (expressions), `values` (quantities, URLs, patterns, and the
//! gateway/upstream/tenant blocks), `routes` (route rules and shadowing), `auth` (jwt sets,
//! `auth`, claims, `cors`), `cache`; `lints` warns on policies that compile.

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::resolve::walk;
use crate::source::Span;

mod auth;
mod cache;
mod lints;
mod routes;
mod types;
mod values;

pub use lints::lints;
pub use routes::same_expr;
pub use types::Ty;
pub use values::check_url;

/// Longest chain of matchers referring to matchers.
pub const MAX_MATCHER_DEPTH: usize = 64;

/// How missing env vars are treated: a warning while checking, an error when serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Check,
    Serve,
}

pub struct Checker<'a> {
    items: &'a [Item],
    matchers: HashMap<&'a str, &'a Matcher>,
    pub diags: Vec<Diag>,
}

pub fn check(items: &[Item]) -> Vec<Diag> {
    let mut c = Checker::new(items);
    c.run();
    c.diags
}

/// The static type the checker gives an expression of `items` (None if it is ill-typed): what
/// the typing property in `gw-fuzzing` holds the evaluator to.
pub fn static_type(items: &[Item], e: &Expr) -> Option<Ty> {
    Checker::new(items).ty(e)
}

impl<'a> Checker<'a> {
    fn new(items: &'a [Item]) -> Checker<'a> {
        let matchers = items
            .iter()
            .filter_map(|i| match i {
                Item::Matcher(m) => Some((m.name.name.as_str(), m)),
                _ => None,
            })
            .collect();
        Checker { items, matchers, diags: vec![] }
    }

    fn run(&mut self) {
        for item in self.items {
            match item {
                Item::Gateway(g) => self.gateway(g),
                Item::Upstream(u) => self.upstream(u),
                Item::Tenant(t) => self.tenant(t),
                Item::Matcher(m) => {
                    self.condition(&m.expr, "a matcher");
                }
                Item::Route(r) => self.route(r),
                Item::Test(t) => self.test(t),
                Item::Limit(l) => self.shared_limit(l),
                Item::Jwt(j) => self.jwt_set(j),
                Item::Keys(_) | Item::Basic(_) | Item::Import(_) => {}
            }
        }
        self.shadowing();
        self.matcher_depth();
    }

    /// Matchers referring to matchers: evaluation recurses through them, so the chain is bounded.
    fn matcher_depth(&mut self) {
        let mut depth: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<&str> = self.matchers.keys().copied().collect();
        names.sort_unstable();
        for start in names {
            let mut stack = vec![start];
            while let Some(&name) = stack.last() {
                if depth.contains_key(name) {
                    stack.pop();
                    continue;
                }
                let Some(m) = self.matchers.get(name) else {
                    stack.pop();
                    continue;
                };
                let mut refs = vec![];
                walk(&m.expr, &mut |e| {
                    if let ExprKind::Ref(id) = &e.kind {
                        refs.push(id.name.as_str());
                    }
                });
                let pending: Vec<&str> =
                    refs.iter().copied().filter(|r| self.matchers.contains_key(r) && !depth.contains_key(r)).collect();
                if pending.is_empty() || stack.len() > self.matchers.len() {
                    let d = 1 + refs.iter().filter_map(|r| depth.get(r)).max().copied().unwrap_or(0);
                    depth.insert(name, d);
                    stack.pop();
                    if d == MAX_MATCHER_DEPTH + 1 {
                        self.err(
                            Diag::error(
                                Code::SyntaxTooDeep,
                                format!("matcher `{name}` nests matchers more than {MAX_MATCHER_DEPTH} levels deep"),
                            )
                            .primary(m.name.span, "too deep a chain of matchers")
                            .help(
                                "refer to fewer matchers in a chain; combine conditions with `and`/`or` in one matcher",
                            ),
                        );
                    }
                } else {
                    stack.extend(pending);
                }
            }
        }
    }

    fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    fn test(&mut self, t: &Test) {
        let mut sent = false;
        for s in &t.stmts {
            match &s.kind {
                TestStmtKind::Send(send) => {
                    sent = true;
                    if !send.path.value.starts_with('/') {
                        self.err(
                            Diag::error(Code::TestInvalid, "a test request path must start with `/`")
                                .primary(send.path.span, "not an absolute path")
                                .help("write it like \"/v1/chat/completions\""),
                        );
                    }
                }
                TestStmtKind::Expect(e) => {
                    if !sent {
                        self.err(
                            Diag::error(Code::TestInvalid, "`expect` before any `send`")
                                .primary(s.span, "nothing was sent yet")
                                .help("put a `send` before the first `expect`"),
                        );
                    }
                    if let Expectation::Status { status, .. } = e {
                        self.status(*status, 100, "an expectation");
                    }
                }
                TestStmtKind::Advance(_) => {}
            }
        }
        if !sent {
            self.err(
                Diag::error(Code::TestInvalid, format!("test \"{}\" sends nothing", t.name.value))
                    .primary(t.name.span, "empty test")
                    .help("add `send METHOD \"/path\"` and an `expect`"),
            );
        }
    }
}

fn show_min(what: &str, min: u64) -> String {
    if what.contains("timeout") || what.contains("interval") || what.contains("ttl") {
        format!("{}ms", min / 1_000_000)
    } else if what.contains("bytes") {
        format!("{min}B")
    } else {
        min.to_string()
    }
}

fn first_line(s: &str) -> String {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

fn always_refuses(span: Span, what: &str) -> Diag {
    Diag::error(Code::GuardContradiction, format!("{what} refuses every request"))
        .primary(span, "this guard always refuses")
        .help("to answer every request the same way, use `respond STATUS` as the route's action")
}

/// A `Value` made only of literals, joined; None if it names env vars.
fn literal_value(v: &Value) -> Option<String> {
    let mut out = String::new();
    for p in &v.parts {
        match p {
            ValuePart::Lit(s) => out.push_str(&s.value),
            ValuePart::Env(_) | ValuePart::Fact(..) | ValuePart::Gateway(..) => return None,
        }
    }
    Some(out)
}
