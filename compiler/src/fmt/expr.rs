//! Expressions: precedence, the parentheses the source wrote, facts and literals.

use crate::source::Span;

use super::*;

/// What the position of a subexpression allows without parentheses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx {
    /// The loosest binding level allowed: 1 `or`, 2 `and`, 3 comparisons, 4 `exists`, 5 atoms.
    pub(super) min: u8,
    /// Whether a bare `not ...` may stand here. `not` reads a whole comparison chain to its
    /// right, so it may not be the left operand of a comparison, nor the right one when another
    /// comparison follows.
    pub(super) not_ok: bool,
    /// Whether a comparison operator follows this subexpression.
    pub(super) followed_by_cmp: bool,
}

impl Ctx {
    pub(super) const TOP: Ctx = Ctx { min: 0, not_ok: true, followed_by_cmp: false };
}

pub(super) fn level(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Not(_) => 0,
        ExprKind::Exists(_) => 4,
        _ => 5,
    }
}

/// An expression in parentheses where the parser needs them, and where the source wrote them
/// (one pair: `((a))` is `(a)`).
pub(super) fn write_expr(out: &mut String, e: &Expr, ctx: Ctx, src: Src) {
    let needed = match e.kind {
        ExprKind::Not(_) => !ctx.not_ok,
        _ => level(e) < ctx.min,
    };
    if needed || src.parenthesized(e.span) {
        out.push('(');
        write_bare(out, e, Ctx::TOP, src);
        out.push(')');
    } else {
        write_bare(out, e, ctx, src);
    }
}

/// An expression without parentheses of its own (its operands get theirs).
pub(super) fn write_bare(out: &mut String, e: &Expr, ctx: Ctx, src: Src) {
    match &e.kind {
        ExprKind::Binary { op, lhs, rhs, .. } => {
            let p = op.precedence();
            let cmp = p >= 3;
            write_expr(out, lhs, Ctx { min: p, not_ok: !cmp, followed_by_cmp: cmp }, src);
            out.push(' ');
            out.push_str(op.as_str());
            out.push(' ');
            let rhs_ctx =
                Ctx { min: p + 1, not_ok: !cmp || !ctx.followed_by_cmp, followed_by_cmp: ctx.followed_by_cmp };
            write_expr(out, rhs, rhs_ctx, src);
        }
        ExprKind::Not(inner) => {
            out.push_str("not ");
            write_expr(out, inner, Ctx { min: 3, not_ok: true, followed_by_cmp: false }, src);
        }
        ExprKind::Exists(inner) => {
            write_expr(out, inner, Ctx { min: 5, not_ok: false, followed_by_cmp: false }, src);
            out.push_str(" exists");
        }
        ExprKind::Lit(l) => out.push_str(&src.lit(l, e.span)),
        ExprKind::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, item, Ctx::TOP, src);
            }
            out.push(']');
        }
        ExprKind::Fact(f) => write_fact(out, f),
        ExprKind::Ref(id) => out.push_str(&id.name),
        ExprKind::Call { func, args } => {
            out.push_str(func.as_str());
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, a, Ctx::TOP, src);
            }
            out.push(')');
        }
    }
}

impl Src<'_> {
    /// Did the source write this expression in parentheses? (The parser gives a parenthesized
    /// expression the span of its parentheses.)
    pub(super) fn parenthesized(self, span: Span) -> bool {
        let Some(t) = self.0.get(span.start as usize..span.end as usize) else { return false };
        if !(t.starts_with('(') && t.ends_with(')')) {
            return false;
        }
        // The first `(` must close at the last byte: `(a) or (b)` is not parenthesized.
        let mut depth = 0usize;
        let mut chars = t.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1 == t.len();
                    }
                }
                '"' | '/' => {
                    // A string or a regex: skip to its unescaped closing quote or slash.
                    let mut escaped = false;
                    for (_, d) in chars.by_ref() {
                        match d {
                            _ if escaped => escaped = false,
                            '\\' => escaped = true,
                            _ if d == c => break,
                            _ => {}
                        }
                    }
                }
                '#' => {
                    for (_, d) in chars.by_ref() {
                        if d == '\n' {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        false
    }

    pub(super) fn lit(self, l: &Lit, span: Span) -> String {
        match l {
            Lit::Str(s) => {
                self.spelled(span, |t| spelled_string(t).as_deref() == Some(s.as_str())).unwrap_or_else(|| quote(s))
            }
            Lit::Int(n) => self.spelled(span, |t| spelled_int(t) == Some(*n)).unwrap_or_else(|| n.to_string()),
            Lit::Float(f) => self.spelled(span, |t| spelled_float(t) == Some(*f)).unwrap_or_else(|| {
                // `Display` for f64 is the shortest text that reads back exactly and never uses
                // an exponent, which the grammar would not accept.
                let s = f.to_string();
                if s.contains('.') {
                    s
                } else {
                    format!("{s}.0")
                }
            }),
            Lit::Bool(b) => (if *b { "true" } else { "false" }).to_string(),
            Lit::Regex(r) => self.regex(r),
        }
    }
}

/// A name usable after `.` (the grammar's `ident_any`).
pub(super) fn is_field_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn write_fact(out: &mut String, f: &Fact) {
    match f {
        Fact::Method => out.push_str("method"),
        Fact::Path => out.push_str("path"),
        Fact::Host => out.push_str("host"),
        Fact::ClientIp => out.push_str("client_ip"),
        Fact::Tenant => out.push_str("tenant"),
        Fact::Key => out.push_str("key"),
        Fact::Header(n) => out.push_str(&format!("header[{}]", quote(n))),
        Fact::Query(n) => out.push_str(&format!("query[{}]", quote(n))),
        Fact::Param(n) => out.push_str(&format!("param[{}]", quote(n))),
        Fact::Body(segs) | Fact::Claim(segs) => {
            out.push_str(if matches!(f, Fact::Body(_)) { "body" } else { "claim" });
            for seg in segs {
                match seg {
                    PathSeg::Field(name) if is_field_name(name) => {
                        out.push('.');
                        out.push_str(name);
                    }
                    PathSeg::Field(name) => out.push_str(&format!("[{}]", quote(name))),
                    PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
                }
            }
        }
    }
}
