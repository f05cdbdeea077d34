//! Expressions: operands walked from pest pairs, then precedence applied by climbing over a
//! flat token list (loops for chains, so long expressions cannot overflow the stack).

use gw_grammar::Rule;

use crate::diagnostics::{Code, Diag};
use crate::source::Span;

use super::literals::parse_int;
use super::*;

impl Walker<'_> {
    pub(super) fn expr(&mut self, pair: P<'_>) -> Option<Expr> {
        let span = self.span(&pair);
        let mut toks: Vec<Tok> = vec![];
        for p in inner(pair) {
            let pspan = self.span(&p);
            match p.as_rule() {
                Rule::prefix_op => toks.push(Tok::Not(pspan)),
                Rule::postfix => toks.push(Tok::Exists(pspan)),
                Rule::op_and => toks.push(Tok::Op(BinOp::And, pspan)),
                Rule::op_or => toks.push(Tok::Op(BinOp::Or, pspan)),
                Rule::op_eq => toks.push(Tok::Op(BinOp::Eq, pspan)),
                Rule::op_ne => toks.push(Tok::Op(BinOp::Ne, pspan)),
                Rule::op_ge => toks.push(Tok::Op(BinOp::Ge, pspan)),
                Rule::op_le => toks.push(Tok::Op(BinOp::Le, pspan)),
                Rule::op_gt => toks.push(Tok::Op(BinOp::Gt, pspan)),
                Rule::op_lt => toks.push(Tok::Op(BinOp::Lt, pspan)),
                Rule::op_contains => toks.push(Tok::Op(BinOp::Contains, pspan)),
                Rule::op_matches => toks.push(Tok::Op(BinOp::Matches, pspan)),
                Rule::op_in => toks.push(Tok::Op(BinOp::In, pspan)),
                Rule::op_starts => toks.push(Tok::Op(BinOp::StartsWith, pspan)),
                Rule::op_ends => toks.push(Tok::Op(BinOp::EndsWith, pspan)),
                Rule::bad_eq => {
                    self.diags.push(
                        Diag::error(Code::SyntaxAssign, "`=` is not a comparison")
                            .primary(pspan, "assignment is not allowed in an expression")
                            .help("to compare, write `==`"),
                    );
                    toks.push(Tok::Op(BinOp::Eq, pspan));
                }
                _ => toks.push(Tok::Operand(self.primary(p)?)),
            }
        }
        let operands = toks.iter().filter(|t| matches!(t, Tok::Operand(_))).count();
        let prefixes = toks.iter().filter(|t| matches!(t, Tok::Not(_))).count();
        if operands > MAX_OPERANDS || prefixes > MAX_OPERANDS {
            self.diags.push(
                Diag::error(Code::SyntaxTooLong, format!("expression with more than {MAX_OPERANDS} operands"))
                    .primary(span, "this expression is too long")
                    .help("split it into named matchers and combine those"),
            );
            return None;
        }
        let mut pos = 0;
        let e = climb(&mut toks, &mut pos, 0)?;
        Some(e)
    }

    pub(super) fn primary(&mut self, pair: P<'_>) -> Option<Expr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::paren => {
                let e = inner(pair).next()?;
                let mut e = self.expr(e)?;
                e.span = span;
                return Some(e);
            }
            Rule::string => ExprKind::Lit(Lit::Str(self.string(pair).value)),
            Rule::int => match parse_int(pair.as_str()) {
                Some(n) => ExprKind::Lit(Lit::Int(n)),
                None => {
                    self.number_error(span);
                    return None;
                }
            },
            Rule::float => match pair.as_str().parse::<f64>() {
                Ok(f) if f.is_finite() => ExprKind::Lit(Lit::Float(f)),
                _ => {
                    self.number_error(span);
                    return None;
                }
            },
            Rule::bool_lit => ExprKind::Lit(Lit::Bool(pair.as_str() == "true")),
            Rule::regex => ExprKind::Lit(Lit::Regex(self.regex(pair))),
            Rule::list => {
                let mut items = vec![];
                for p in inner(pair) {
                    items.push(self.expr(p)?);
                }
                ExprKind::List(items)
            }
            Rule::call => {
                let mut it = inner(pair);
                let func = match it.next()?.as_str() {
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    "number" => Func::Number,
                    _ => Func::Len,
                };
                let mut args = vec![];
                for p in it {
                    args.push(self.expr(p)?);
                }
                ExprKind::Call { func, args }
            }
            Rule::fact => ExprKind::Fact(self.fact(pair)?),
            Rule::reference => ExprKind::Ref(self.ident(inner(pair).next()?)),
            _ => return None,
        };
        Some(Expr { kind, span })
    }

    pub(super) fn fact(&mut self, pair: P<'_>) -> Option<Fact> {
        let span = self.span(&pair);
        let mut it = inner(pair);
        let head = it.next()?;
        let head_text = head.as_str().to_string();
        let mut segs = vec![];
        for acc in it {
            let a = inner(acc).next()?;
            segs.push(match a.as_rule() {
                Rule::int => match a.as_str().parse::<usize>() {
                    Ok(n) => PathSeg::Index(n),
                    Err(_) => {
                        self.number_error(self.span(&a));
                        return None;
                    }
                },
                Rule::string => PathSeg::Field(self.string(a).value),
                _ => PathSeg::Field(a.as_str().to_string()),
            });
        }
        let named = |this: &mut Self, kind: &str, segs: Vec<PathSeg>| -> Option<String> {
            match segs.as_slice() {
                // Header names are case-insensitive; query and param names are not.
                [PathSeg::Field(f)] => Some(if kind == "header" { f.to_ascii_lowercase() } else { f.clone() }),
                _ => {
                    this.diags.push(
                        Diag::error(Code::SyntaxFact, format!("`{kind}` needs exactly one name"))
                            .primary(span, format!("write `{kind}[\"name\"]` or `{kind}.name`"))
                            .help(format!("for example `{kind}[\"x-tenant\"]`")),
                    );
                    None
                }
            }
        };
        let plain = |this: &mut Self, fact: Fact, segs: &[PathSeg]| -> Option<Fact> {
            if segs.is_empty() {
                Some(fact)
            } else {
                this.diags.push(
                    Diag::error(Code::SyntaxFact, format!("`{head_text}` has no fields"))
                        .primary(span, "this fact is a plain value")
                        .help(format!("write `{head_text}` alone")),
                );
                None
            }
        };
        match head_text.as_str() {
            "method" => plain(self, Fact::Method, &segs),
            "path" => plain(self, Fact::Path, &segs),
            "host" => plain(self, Fact::Host, &segs),
            "client_ip" => plain(self, Fact::ClientIp, &segs),
            "tenant" => plain(self, Fact::Tenant, &segs),
            "key" => plain(self, Fact::Key, &segs),
            "header" => named(self, "header", segs).map(Fact::Header),
            "query" => named(self, "query", segs).map(Fact::Query),
            "param" => named(self, "param", segs).map(Fact::Param),
            "claim" => Some(Fact::Claim(segs)),
            _ => Some(Fact::Body(segs)),
        }
    }
}

/// Tokens of a flat expression, before precedence is applied.
pub(super) enum Tok {
    Operand(Expr),
    Op(BinOp, Span),
    Not(Span),
    Exists(Span),
    Taken,
}

/// Precedence climbing over the flat token list: `or` < `and` < `not` < comparisons.
/// Loops, not recursion, for chains, so long expressions cannot overflow the stack.
pub(super) fn climb(toks: &mut [Tok], pos: &mut usize, min_prec: u8) -> Option<Expr> {
    let mut lhs = unary(toks, pos)?;
    while let Some(Tok::Op(op, op_span)) = toks.get(*pos) {
        let (op, op_span) = (*op, *op_span);
        let prec = op.precedence();
        if prec < min_prec {
            break;
        }
        *pos += 1;
        let rhs = climb(toks, pos, prec + 1)?;
        let span = lhs.span.to(rhs.span);
        lhs = Expr { kind: ExprKind::Binary { op, op_span, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span };
    }
    Some(lhs)
}

/// `not` binds looser than comparisons: `not a == b` is `not (a == b)`.
pub(super) fn unary(toks: &mut [Tok], pos: &mut usize) -> Option<Expr> {
    if let Some(Tok::Not(span)) = toks.get(*pos) {
        let span = *span;
        *pos += 1;
        let inner = climb(toks, pos, 3)?;
        let full = span.to(inner.span);
        return Some(Expr { kind: ExprKind::Not(Box::new(inner)), span: full });
    }
    let tok = std::mem::replace(toks.get_mut(*pos)?, Tok::Taken);
    *pos += 1;
    let Tok::Operand(mut e) = tok else { return None };
    if let Some(Tok::Exists(span)) = toks.get(*pos) {
        let span = e.span.to(*span);
        *pos += 1;
        e = Expr { kind: ExprKind::Exists(Box::new(e)), span };
    }
    Some(e)
}
