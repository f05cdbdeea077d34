//! Types: the static type of every expression, and the operator typing table the evaluator
//! is held to (grammar/README.md, "Types").

use crate::diagnostics::{Code, Diag};
use crate::source::Span;
use crate::value;

use super::*;

/// Static type of an expression. `Dyn` is a body field: any JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Num,
    Bool,
    List,
    Regex,
    Dyn,
}

impl Ty {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ty::Str => "a string",
            Ty::Num => "a number",
            Ty::Bool => "a boolean",
            Ty::List => "a list",
            Ty::Regex => "a regex",
            Ty::Dyn => "a body value",
        }
    }

    pub(super) fn is(self, other: Ty) -> bool {
        self == other || self == Ty::Dyn
    }
}

impl<'a> Checker<'a> {
    /// The type of an expression; None if an error was already reported inside it.
    pub(super) fn ty(&mut self, e: &Expr) -> Option<Ty> {
        Some(match &e.kind {
            ExprKind::Lit(Lit::Str(_)) => Ty::Str,
            ExprKind::Lit(Lit::Int(_) | Lit::Float(_)) => Ty::Num,
            ExprKind::Lit(Lit::Bool(_)) => Ty::Bool,
            ExprKind::Lit(Lit::Regex(r)) => {
                self.regex(r);
                Ty::Regex
            }
            ExprKind::List(items) => {
                for i in items {
                    let t = self.ty(i)?;
                    if t == Ty::Regex {
                        self.err(
                            Diag::error(Code::TypeMismatch, "a regex cannot be a list element")
                                .primary(i.span, "regex here")
                                .help("use `matches` with one regex, or `or` between several"),
                        );
                    }
                }
                Ty::List
            }
            ExprKind::Fact(Fact::Body(_)) => Ty::Dyn,
            ExprKind::Fact(_) => Ty::Str,
            ExprKind::Ref(_) => Ty::Bool,
            ExprKind::Not(inner) => {
                let t = self.ty(inner)?;
                self.expect(inner, t, Ty::Bool, "`not`")?;
                Ty::Bool
            }
            ExprKind::Exists(inner) => {
                self.ty(inner)?;
                if !matches!(inner.kind, ExprKind::Fact(_)) {
                    self.err(
                        Diag::error(Code::TypeMismatch, "`exists` applies to request facts")
                            .primary(inner.span, "not a fact")
                            .help("write e.g. `header[\"x-tenant\"] exists`"),
                    );
                    return None;
                }
                Ty::Bool
            }
            ExprKind::Call { func, args } => {
                if args.len() != 1 {
                    self.err(
                        Diag::error(
                            Code::TypeMismatch,
                            format!("`{}` takes one argument, given {}", func.as_str(), args.len()),
                        )
                        .primary(e.span, "wrong number of arguments")
                        .help(format!("write `{}(value)`", func.as_str())),
                    );
                    return None;
                }
                let t = self.ty(&args[0])?;
                let (ok, out) = match func {
                    Func::Lower | Func::Upper => (t.is(Ty::Str), Ty::Str),
                    Func::Number => (t.is(Ty::Str) || t == Ty::Num, Ty::Num),
                    Func::Len => (t.is(Ty::Str) || t == Ty::List, Ty::Num),
                };
                if !ok {
                    self.err(
                        Diag::error(Code::TypeMismatch, format!("`{}` cannot take {}", func.as_str(), t.name()))
                            .primary(args[0].span, format!("this is {}", t.name()))
                            .help(format!("`{}` takes a string", func.as_str())),
                    );
                    return None;
                }
                out
            }
            ExprKind::Binary { op, op_span, lhs, rhs } => {
                let l = self.ty(lhs);
                let r = self.ty(rhs);
                let (l, r) = (l?, r?);
                self.binary(*op, *op_span, lhs, l, rhs, r)?
            }
        })
    }

    pub(super) fn expect(&mut self, e: &Expr, t: Ty, want: Ty, what: &str) -> Option<()> {
        if t.is(want) {
            return Some(());
        }
        self.err(
            Diag::error(Code::TypeMismatch, format!("{what} needs {}, found {}", want.name(), t.name()))
                .primary(e.span, format!("this is {}", t.name()))
                .help(if want == Ty::Bool {
                    "use a comparison here, e.g. `x == \"v\"`".to_string()
                } else {
                    format!("give {what} {}", want.name())
                }),
        );
        None
    }

    pub(super) fn binary(&mut self, op: BinOp, op_span: Span, lhs: &Expr, l: Ty, rhs: &Expr, r: Ty) -> Option<Ty> {
        let mismatch = |this: &mut Self, help: &str| {
            this.err(
                Diag::error(
                    Code::TypeMismatch,
                    format!("`{}` cannot compare {} with {}", op.as_str(), l.name(), r.name()),
                )
                .primary(op_span, "mismatched operands")
                .secondary(lhs.span, l.name())
                .secondary(rhs.span, r.name())
                .help(help.to_string()),
            );
            None
        };
        if op != BinOp::Matches && (l == Ty::Regex || r == Ty::Regex) {
            let help = "a regex can only follow `matches`: write `x matches /re/`";
            return mismatch(self, help);
        }
        match op {
            BinOp::And | BinOp::Or => {
                self.expect(lhs, l, Ty::Bool, &format!("`{}`", op.as_str()))?;
                self.expect(rhs, r, Ty::Bool, &format!("`{}`", op.as_str()))?;
            }
            BinOp::Eq | BinOp::Ne | BinOp::BadAssign => {
                if !(l == r || l == Ty::Dyn || r == Ty::Dyn) {
                    let help = if (l, r) == (Ty::Str, Ty::Num) {
                        "convert the string first: `number(header[\"x\"]) == 5`"
                    } else {
                        "compare values of the same type"
                    };
                    return mismatch(self, help);
                }
            }
            BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => {
                // Numbers only: ordering text is lexicographic ("9000" < "5"), never what a
                // policy means, and a quoted number is the usual slip.
                if !(l.is(Ty::Num) && r.is(Ty::Num)) {
                    let quoted = [lhs, rhs].into_iter().find_map(|e| match &e.kind {
                        ExprKind::Lit(Lit::Str(s)) if value::plain_number(s).is_some() => Some(s.clone()),
                        _ => None,
                    });
                    let help = match quoted {
                        Some(n) => format!("write the number without quotes: `{n}`"),
                        None if l == Ty::Str || r == Ty::Str => {
                            "order comparisons take numbers; convert text first: `number(header[\"x\"]) > 5`"
                                .to_string()
                        }
                        None => "order comparisons take two numbers".to_string(),
                    };
                    return mismatch(self, &help);
                }
            }
            BinOp::Contains => {
                let ok = match l {
                    Ty::Str => r.is(Ty::Str),
                    Ty::List | Ty::Dyn => true,
                    _ => false,
                };
                if !ok {
                    return mismatch(self, "`contains` looks for a substring in a string, or an element in a list");
                }
                if !elements_meet(lhs, rhs) {
                    return mismatch(
                        self,
                        "no element of this list has the right side's type: it can never contain it",
                    );
                }
            }
            BinOp::In => {
                if !(r == Ty::List || r == Ty::Dyn) {
                    return mismatch(self, "`in` needs a list on its right: `x in [\"a\", \"b\"]`");
                }
                if !elements_meet(rhs, lhs) {
                    return mismatch(self, "no element of this list has the left side's type: it can never be in it");
                }
            }
            BinOp::StartsWith | BinOp::EndsWith => {
                if !(l.is(Ty::Str) && r.is(Ty::Str)) {
                    return mismatch(self, "this operator takes two strings");
                }
            }
            BinOp::Matches => {
                if r != Ty::Regex || !matches!(rhs.kind, ExprKind::Lit(Lit::Regex(_))) {
                    return mismatch(self, "write the regex after `matches` as a literal: `x matches /^gpt-4/`");
                }
                if !l.is(Ty::Str) {
                    return mismatch(self, "only strings can match a regex; convert numbers with a comparison instead");
                }
            }
        }
        Some(Ty::Bool)
    }
}

/// The static type of a literal or a fact (None for anything else: not known without checking).
pub(super) fn simple_ty(e: &Expr) -> Option<Ty> {
    Some(match &e.kind {
        ExprKind::Lit(Lit::Str(_)) => Ty::Str,
        ExprKind::Lit(Lit::Int(_) | Lit::Float(_)) => Ty::Num,
        ExprKind::Lit(Lit::Bool(_)) => Ty::Bool,
        ExprKind::List(_) => Ty::List,
        ExprKind::Fact(Fact::Body(_)) => Ty::Dyn,
        ExprKind::Fact(_) => Ty::Str,
        _ => return None,
    })
}

/// For `list contains x` / `x in list` with a list literal: can `x` ever equal an element?
/// False only when every element's type is known and none is `x`'s (or a body value).
pub(super) fn elements_meet(list: &Expr, needle: &Expr) -> bool {
    let (ExprKind::List(items), Some(n)) = (&list.kind, simple_ty(needle)) else { return true };
    if n == Ty::Dyn || items.is_empty() {
        return true;
    }
    items.iter().any(|i| simple_ty(i).is_none_or(|t| t == n || t == Ty::Dyn))
}
