//! The properties: each takes the fuzzer's raw bytes and panics when it does not hold.

use arbitrary::{Arbitrary, Unstructured};
use gw_compiler::diagnostics::{Diag, Severity};
use gw_compiler::fmt as gwfmt;
use gw_compiler::request::Request;
use gw_compiler::source::FileId;
use gw_compiler::{eval, lower, syntax, value, Mode};

use crate::gen::{GenPolicy, GenRequest};
use crate::world::{compile_and_check, compile_with, loader_with};

// ====================================================================== parse

/// Any bytes as `policy.gwp`: never panics, valid spans, every diagnostic renders.
pub fn parse(data: &[u8]) {
    let loader = loader_with(data.to_vec());
    compile_and_check(&loader, Mode::Check);
}

// ====================================================================== roundtrip

/// For text that parses without errors: the formatted text parses to the same tree (spans
/// erased), and formatting the formatted text changes nothing.
pub fn roundtrip(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    roundtrip_text(&text);
}

fn roundtrip_text(text: &str) {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    if diags.iter().any(Diag::is_error) {
        return;
    }
    let once = match gwfmt::format_source(text) {
        Ok(s) => s,
        Err(e) => panic!("format_source failed on a policy that parses: {e}\n--- input:\n{text}"),
    };
    let (again, diags2) = syntax::parse(FileId(0), &once);
    if let Some(d) = diags2.iter().find(|d| d.is_error()) {
        panic!("the formatted text does not parse: {d:#?}\n--- input:\n{text}\n--- formatted:\n{once}");
    }
    let before = gwfmt::strip_spans(&parsed.file);
    let after = gwfmt::strip_spans(&again.file);
    assert!(before == after, "formatting changed the tree\n--- input:\n{text}\n--- formatted:\n{once}");
    let twice = match gwfmt::format_source(&once) {
        Ok(s) => s,
        Err(e) => panic!("format_source failed on formatted text: {e}\n--- formatted:\n{once}"),
    };
    assert!(once == twice, "formatting is not idempotent\n--- once:\n{once}\n--- twice:\n{twice}");
}

// ====================================================================== compile_structured

/// A policy generated from the fuzzer's bytes, printed and compiled: never panics, valid
/// spans, and when valid it lowers and its tests give the same verdicts with the graph and
/// with the evaluator.
pub fn compile_structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(policy) = GenPolicy::arbitrary(&mut u) else { return };
    let serve = bool::arbitrary(&mut u).unwrap_or(false);
    let printed = policy.print();
    let loader = loader_with(printed.text.clone());
    compile_and_check(&loader, if serve { Mode::Serve } else { Mode::Check });
}

/// The text `compile_structured` and `differential` compile for `data` (for reproducing a
/// failure by hand).
pub fn structured_policy_text(data: &[u8]) -> Option<String> {
    let mut u = Unstructured::new(data);
    GenPolicy::arbitrary(&mut u).ok().map(|p| p.print().text)
}

// ====================================================================== differential

/// A generated policy and a batch of generated requests: when the policy compiles, the
/// decision graph and the reference evaluator make the same decision for every request.
pub fn differential(data: &[u8]) {
    differential_outcomes(data);
}

/// The generated policy text and requests `differential` checks for `data` (for reproducing
/// a failure by hand, and for measuring the generator).
pub fn differential_case(data: &[u8]) -> Option<(String, Vec<Request>)> {
    let mut u = Unstructured::new(data);
    let policy = GenPolicy::arbitrary(&mut u).ok()?;
    let mut requests = vec![];
    while requests.len() < 32 {
        match GenRequest::arbitrary(&mut u) {
            Ok(r) => requests.push(r),
            Err(_) => break,
        }
        if u.is_empty() {
            break;
        }
    }
    let printed = policy.print();
    let requests = requests.iter().map(|r| r.build(&printed.routes)).collect();
    Some((printed.text, requests))
}

/// `differential`, returning what happened: `None` when the generated policy did not compile
/// (or lower), else each request's status and whether it reached a route. For measuring how
/// much of the generated input gets past the compiler and route selection.
pub fn differential_outcomes(data: &[u8]) -> Option<Vec<(u16, bool)>> {
    let (text, requests) = differential_case(data)?;
    let loader = loader_with(text.clone());
    let out = compile_with(&loader, Mode::Check);
    let program = out.program.as_ref()?;
    let graph = match lower::lower(program) {
        Ok(g) => g,
        Err(d) => {
            assert!(d.severity != Severity::Bug, "lowering a valid program failed with a bug: {d:#?}");
            return None;
        }
    };
    let mut outcomes = vec![];
    for req in &requests {
        let want = eval::decide(program, req);
        let got = graph.decide(req);
        assert!(
            want.same_decision(&got),
            "graph and eval disagree\n--- policy:\n{text}\n--- request: {req:#?}\n--- eval: {want:#?}\n--- graph: {got:#?}"
        );
        // The runtime reads a body only when `wants_body` says so: otherwise it cannot matter.
        if !graph.wants_body(req) {
            let blind = graph.decide(&Request { body: None, ..req.clone() });
            assert!(
                blind.same_decision(&got),
                "a body `wants_body` said is not needed changed the decision\n--- policy:\n{text}\n--- request: {req:#?}\n--- with it: {got:#?}\n--- without: {blind:#?}"
            );
        }
        if let gw_compiler::request::Outcome::Invalid { code, .. } = &want.outcome {
            assert!(
                [
                    value::INVALID_BODY,
                    value::INVALID_NUMBER,
                    value::INVALID_HEADER,
                    value::INVALID_QUERY,
                    value::UNSUPPORTED_CONTENT_ENCODING
                ]
                .contains(code),
                "unknown refusal code {code}"
            );
        }
        typed_evaluation(program, req, &text);
        outcomes.push((want.outcome.status(), want.route.is_some()));
    }
    Some(outcomes)
}

/// "Compiles ⇒ evaluates without type surprises", for one request whose body facts have any
/// JSON type. For every sub-expression of every route statement and matcher:
/// - its value is of the kind its static type says (or missing, or undecided);
/// - an operator or function whose operands the checker typed exactly (no body value) never
///   meets operands it cannot use: it yields true/false or a value, never a type error;
/// - an operator applied to present values yields a type error exactly when the typing table
///   in grammar/README.md says the kinds do not meet (`accepts`), never a silent false.
pub fn typed_evaluation(program: &gw_compiler::program::Program, req: &Request, text: &str) {
    use gw_compiler::ast::{BinOp, ExprKind, Item};
    use gw_compiler::check::{static_type, Ty};
    use gw_compiler::value::Val;

    let mut exprs = vec![];
    for item in &program.items {
        match item {
            Item::Route(r) => r.stmts.iter().for_each(|s| exprs.extend(gw_compiler::resolve::stmt_exprs(&s.kind))),
            Item::Matcher(m) => exprs.push(&m.expr),
            _ => {}
        }
    }
    let case = format!("\n--- policy:\n{text}\n--- request: {req:#?}");
    for root in exprs {
        let mut subs = vec![];
        gw_compiler::resolve::walk(root, &mut |e| subs.push(e));
        for e in subs {
            let Some(ty) = static_type(&program.items, e) else {
                panic!("a compiled policy has an ill-typed expression at {:?}{case}", e.span);
            };
            let v = eval::eval_expr(program, req, e);
            let kind_ok = matches!(
                (&v, ty),
                (Val::Missing | Val::Error(_), _)
                    | (_, Ty::Dyn | Ty::Regex)
                    | (Val::Str(_), Ty::Str)
                    | (Val::Num(_), Ty::Num)
                    | (Val::Bool(_), Ty::Bool)
                    | (Val::List(_), Ty::List)
            );
            if !kind_ok {
                panic!("{:?} of static type {ty:?} evaluated to {v:?}{case}", e.span);
            }
            let operands: Vec<&gw_compiler::ast::Expr> = match &e.kind {
                ExprKind::Binary { op: BinOp::And | BinOp::Or, .. } => continue,
                ExprKind::Binary { lhs, op: BinOp::Matches, .. } => vec![lhs],
                ExprKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
                ExprKind::Call { func: gw_compiler::ast::Func::Number, .. } => continue,
                ExprKind::Call { args, .. } => args.iter().collect(),
                _ => continue,
            };
            let vals: Vec<Val> = operands.iter().map(|o| eval::eval_expr(program, req, o)).collect();
            if vals.iter().any(|x| matches!(x, Val::Missing | Val::Error(_))) {
                continue;
            }
            let exact = operands.iter().all(|o| static_type(&program.items, o).is_some_and(|t| t != Ty::Dyn));
            let undecided = matches!(v, Val::Error(_));
            if exact && undecided {
                panic!("{:?}: well-typed operands {vals:?} gave a type error {v:?}{case}", e.span);
            }
            let accepted = match (&e.kind, vals.as_slice()) {
                (ExprKind::Binary { op: BinOp::Matches, .. }, [a]) => matches!(a, Val::Str(_)),
                (ExprKind::Binary { op, .. }, [a, b]) => accepts(*op, a, b),
                _ => !undecided,
            };
            if accepted == undecided {
                panic!("{:?}: operands {vals:?} gave {v:?}, against the typing table{case}", e.span);
            }
        }
    }
}

/// The typing table of grammar/README.md for present values, written independently of
/// `value::binary`: which kinds an operator accepts.
fn accepts(op: gw_compiler::ast::BinOp, a: &gw_compiler::value::Val, b: &gw_compiler::value::Val) -> bool {
    use gw_compiler::ast::BinOp::*;
    use gw_compiler::value::{Kind, Val};
    let members = |list: &Val| -> Option<Vec<Kind>> {
        match list {
            Val::List(items) => Some(items.iter().filter_map(Val::kind).collect()),
            Val::Json(serde_json::Value::Array(items)) => {
                Some(items.iter().filter_map(|i| Val::from_json(i).kind()).collect())
            }
            _ => None,
        }
    };
    let holds = |hay: &Val, needle: &Val| match (hay.kind(), needle.kind()) {
        (Some(Kind::Str), Some(Kind::Str)) | (Some(Kind::Object), Some(Kind::Str)) => true,
        _ => members(hay).is_some_and(|ks| ks.is_empty() || ks.iter().any(|k| Some(*k) == needle.kind())),
    };
    match op {
        Eq | Ne | BadAssign => a.kind() == b.kind(),
        Gt | Ge | Lt | Le => a.kind() == Some(Kind::Num) && b.kind() == Some(Kind::Num),
        StartsWith | EndsWith => a.kind() == Some(Kind::Str) && b.kind() == Some(Kind::Str),
        Contains => holds(a, b),
        In => holds(b, a),
        Matches => a.kind() == Some(Kind::Str),
        And | Or => true,
    }
}
