//! Layout: where lines break, how blocks and items align, and where each comment goes.

use crate::source::Span;
use crate::syntax::Comment;

use super::*;

pub(super) struct Fmt<'a> {
    pub(super) text: &'a str,
    pub(super) src: Src<'a>,
    pub(super) comments: Vec<&'a Comment>,
    pub(super) out: String,
}

/// Where the comments of one block (or of the file) go, by index into `Fmt::comments`.
#[derive(Default)]
pub(super) struct Slots {
    /// A comment at the end of the block's opening line.
    pub(super) header: Option<usize>,
    /// Own-line comments before each child.
    pub(super) leading: Vec<Vec<usize>>,
    /// Comments written inside each child's span.
    pub(super) inner: Vec<Vec<usize>>,
    /// A comment at the end of each child's (last) line.
    pub(super) trailing: Vec<Option<usize>>,
    /// Comments after the last child.
    pub(super) tail: Vec<usize>,
}

/// A statement printed on one line, with the source range it came from.
pub(super) struct Line {
    pub(super) text: String,
    /// `health ... every 10s` directly before a `timeout` statement: only a `;` keeps the
    /// `timeout` from being read as the health check's own.
    pub(super) semi: bool,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// One line of a block body before alignment: a comment (all in `word`), or a statement split
/// into its first word and the rest, with the comment at its end.
pub(super) struct Elem {
    pub(super) word: String,
    pub(super) rest: Option<String>,
    pub(super) trailing: Option<String>,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// How a top-level item is printed.
pub(super) enum Shape {
    /// On one line: `head` is padded to the names of its run, `tail` follows. `kind` names the
    /// items it lines up with (None: it lines up with nothing).
    Line { head: String, tail: String, kind: Option<&'static str> },
    /// Over several lines (no final newline).
    Lines(String),
}

pub(super) fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{FEFF}')
}

/// Columns a line takes (characters, not bytes).
pub(super) fn width(s: &str) -> usize {
    s.chars().count()
}

pub(super) fn pad_to(s: &mut String, col: usize) {
    let w = width(s);
    s.extend(std::iter::repeat_n(' ', col.saturating_sub(w)));
}

/// The column where the comments at the ends of lines of these widths start: three spaces
/// after the longest line, leaving out lines so long the column would pass `WIDTH` (their
/// comments follow them three spaces on).
pub(super) fn comment_column(widths: impl Iterator<Item = usize>) -> usize {
    widths.map(|w| w + COMMENT_GAP).filter(|&c| c <= WIDTH).max().unwrap_or(0)
}

/// What was printed last at the top level, for the blank line before the next element.
#[derive(Clone, Copy)]
pub(super) enum Last {
    Comment(usize),
    Item { multi_line: bool, end: usize },
}

impl<'a> Fmt<'a> {
    pub(super) fn comment(&self, i: usize) -> &'a Comment {
        self.comments[i]
    }

    pub(super) fn ctext(&self, i: usize) -> String {
        self.comments[i].text.clone()
    }

    pub(super) fn cstart(&self, i: usize) -> usize {
        self.comments[i].span.start as usize
    }

    pub(super) fn cend(&self, i: usize) -> usize {
        self.comments[i].span.end as usize
    }

    /// The end of a span without the whitespace and comments pest lets a rule swallow when it
    /// ends in an optional part.
    pub(super) fn eff_end(&self, span: Span) -> usize {
        let start = span.start as usize;
        let mut pos = (span.end as usize).min(self.text.len());
        loop {
            while pos > start {
                match self.text.get(..pos).and_then(|s| s.chars().next_back()) {
                    Some(c) if is_ws(c) => pos -= c.len_utf8(),
                    _ => break,
                }
            }
            // A comment ending at (or just after, for a trailing `\r`) `pos`?
            let k = self.comments.partition_point(|c| (c.span.start as usize) < pos);
            match k.checked_sub(1).map(|k| self.comments[k]) {
                Some(c) if (c.span.start as usize) >= start && (c.span.end as usize) >= pos => {
                    pos = c.span.start as usize;
                }
                _ => return pos,
            }
        }
    }

    /// The source text of a span (without what `eff_end` trims); `None` when the text does not
    /// have it (no source, or spans erased).
    pub(super) fn source_of(&self, span: Span) -> Option<&'a str> {
        self.text.get(span.start as usize..self.eff_end(span)).filter(|s| !s.is_empty())
    }

    /// Was this block written on one line (`{` to `}`)?
    pub(super) fn written_on_one_line(&self, span: Span) -> bool {
        self.source_of(span).is_some_and(|s| s.ends_with('}') && !s.contains('\n'))
    }

    /// Is there code before the comment on its line?
    pub(super) fn is_trailing(&self, i: usize) -> bool {
        let start = self.cstart(i);
        let before = self.text.get(..start).unwrap_or("");
        let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
        before.get(line_start..).unwrap_or("").chars().any(|c| !is_ws(c))
    }

    pub(super) fn same_line(&self, a: usize, b: usize) -> bool {
        a <= b && !self.text.get(a..b).unwrap_or("\n").contains('\n')
    }

    /// Did the source have an empty line between `a` and `b`?
    pub(super) fn blank_between(&self, a: usize, b: usize) -> bool {
        if a >= b {
            return false;
        }
        let Some(gap) = self.text.get(a..b) else { return false };
        let segs: Vec<&str> = gap.split('\n').collect();
        segs.len() > 2 && segs[1..segs.len() - 1].iter().any(|s| s.chars().all(is_ws))
    }

    /// Give each comment of `cs` (in source order) its place among `children` (source ranges
    /// in order). `header`: a block whose first comment may stay on its opening line.
    pub(super) fn assign(&self, cs: &[usize], children: &[(usize, usize)], header: bool) -> Slots {
        let n = children.len();
        let mut s = Slots {
            header: None,
            leading: vec![vec![]; n],
            inner: vec![vec![]; n],
            trailing: vec![None; n],
            tail: vec![],
        };
        // Children come in source order and do not overlap, so starts and ends are sorted.
        for (nth, &ci) in cs.iter().enumerate() {
            let pos = self.cstart(ci);
            let next = children.partition_point(|&(a, _)| a <= pos);
            if let Some(k) = next.checked_sub(1).filter(|&k| pos < children[k].1) {
                s.inner[k].push(ci);
                continue;
            }
            let next = (next < n).then_some(next);
            if self.is_trailing(ci) {
                let prev = children.partition_point(|&(_, b)| b <= pos).checked_sub(1);
                if let Some(k) = prev {
                    if self.same_line(children[k].1, pos) && s.trailing[k].is_none() {
                        s.trailing[k] = Some(ci);
                        continue;
                    }
                }
                if header && nth == 0 && prev.is_none() {
                    s.header = Some(ci);
                    continue;
                }
            }
            match next {
                Some(k) => s.leading[k].push(ci),
                None => s.tail.push(ci),
            }
        }
        s
    }

    pub(super) fn file(&mut self, file: &File) {
        let spans: Vec<(usize, usize)> =
            file.items.iter().map(|it| (it.span().start as usize, self.eff_end(it.span()))).collect();
        let all: Vec<usize> = (0..self.comments.len()).collect();
        let slots = self.assign(&all, &spans, false);
        let shapes: Vec<Shape> =
            file.items.iter().enumerate().map(|(k, item)| self.shape(item, &slots.inner[k])).collect();
        let lines = self.align_items(&shapes, &slots.trailing);
        let mut last: Option<Last> = None;
        for (k, (shape, line)) in shapes.iter().zip(lines).enumerate() {
            let multi_line = matches!(shape, Shape::Lines(_));
            let mut before: Vec<usize> = slots.leading[k].clone();
            if !multi_line {
                // The comments inside a one-line item move before it.
                before.extend(slots.inner[k].iter().copied());
            }
            for (nth, &ci) in before.iter().enumerate() {
                self.file_sep(last, self.cstart(ci), nth == 0 && multi_line);
                self.out.push_str(&self.comment(ci).text);
                self.out.push('\n');
                last = Some(Last::Comment(self.cend(ci)));
            }
            self.file_sep(last, spans[k].0, multi_line);
            self.out.push_str(&line);
            self.out.push('\n');
            let end = slots.trailing[k].map_or(spans[k].1, |ci| self.cend(ci));
            last = Some(Last::Item { multi_line, end });
        }
        for &ci in &slots.tail {
            self.file_sep(last, self.cstart(ci), false);
            self.out.push_str(&self.comment(ci).text);
            self.out.push('\n');
            last = Some(Last::Comment(self.cend(ci)));
        }
    }

    /// The separator before the next top-level element starting at `start`: a blank line where
    /// the source had one, and between an item and a multi-line item (or its comments).
    pub(super) fn file_sep(&mut self, last: Option<Last>, start: usize, next_multi_line: bool) {
        let blank = match last {
            None => false,
            Some(Last::Comment(end)) => self.blank_between(end, start),
            Some(Last::Item { multi_line, end }) => multi_line || next_multi_line || self.blank_between(end, start),
        };
        if blank {
            self.out.push('\n');
        }
    }

    /// The final text of each item (without its newline), its trailing comment included: runs
    /// of one-line items of one kind pad their heads, and their comments, to one column.
    pub(super) fn align_items(&self, shapes: &[Shape], trailing: &[Option<usize>]) -> Vec<String> {
        let mut out = Vec::with_capacity(shapes.len());
        let mut k = 0;
        while k < shapes.len() {
            let kind = match &shapes[k] {
                Shape::Line { kind, .. } => *kind,
                Shape::Lines(_) => None,
            };
            let mut end = k + 1;
            if kind.is_some() {
                while matches!(shapes.get(end), Some(Shape::Line { kind: kd, .. }) if *kd == kind) {
                    end += 1;
                }
            }
            let head_col = shapes[k..end]
                .iter()
                .map(|s| match s {
                    Shape::Line { head, .. } => width(head),
                    Shape::Lines(_) => 0,
                })
                .max()
                .unwrap_or(0);
            let codes: Vec<String> = shapes[k..end]
                .iter()
                .map(|s| match s {
                    Shape::Line { head, tail, .. } => {
                        let mut line = head.clone();
                        if !tail.is_empty() {
                            pad_to(&mut line, head_col);
                        }
                        line.push_str(tail);
                        line
                    }
                    Shape::Lines(text) => text.clone(),
                })
                .collect();
            let last_line = |code: &str| width(code.rsplit('\n').next().unwrap_or(""));
            let comment_col =
                comment_column((k..end).filter(|&i| trailing[i].is_some()).map(|i| last_line(&codes[i - k])));
            for (i, mut code) in (k..end).zip(codes) {
                if let Some(ci) = trailing[i] {
                    let ll = last_line(&code);
                    let target = comment_col.max(ll + COMMENT_GAP) - ll + width(&code);
                    pad_to(&mut code, target);
                    code.push_str(&self.comment(ci).text);
                }
                out.push(code);
            }
            k = end;
        }
        out
    }

    pub(super) fn shape(&self, item: &Item, inner: &[usize]) -> Shape {
        let src = self.src;
        let line = |head: String, tail: String| Shape::Line { head, tail, kind: None };
        match item {
            Item::Import(i) => line(format!("import {}", src.string(&i.path)), String::new()),
            Item::Keys(k) => {
                let mut tail = format!(" from {}", src.string(&k.file));
                if let Some(salt) = &k.salt {
                    tail.push_str(" salt ");
                    tail.push_str(&src.value(salt));
                }
                if let Some(m) = &k.message {
                    tail.push_str(" message ");
                    tail.push_str(&src.string(m));
                }
                Shape::Line { head: format!("keys {}", k.name.name), tail, kind: Some("keys") }
            }
            Item::Basic(b) => {
                let mut tail = format!(" from {}", src.string(&b.file));
                if let Some(t) = &b.tenant {
                    tail.push_str(" tenant ");
                    tail.push_str(&src.string(t));
                }
                if let Some(m) = &b.message {
                    tail.push_str(" message ");
                    tail.push_str(&src.string(m));
                }
                Shape::Line { head: format!("basic {}", b.name.name), tail, kind: Some("basic") }
            }
            Item::Jwt(j) => {
                let lines = j.stmts.iter().map(|s| self.line(src.jwt_stmt(&s.kind), s.span)).collect();
                self.block_shape("jwt", format!("jwt {}", j.name.name), j.span, lines, inner)
            }
            Item::Matcher(m) => self.matcher(m, inner),
            Item::Limit(l) => {
                let (head, tail) = src.shared_limit(l);
                Shape::Line { head, tail, kind: Some("limit") }
            }
            Item::Gateway(g) => {
                let lines = g.settings.iter().map(|s| self.line(src.setting(&s.kind, s.span), s.span)).collect();
                self.block_shape("gateway", "gateway".to_string(), g.span, lines, inner)
            }
            Item::Upstream(u) => {
                let mut lines: Vec<Line> = vec![];
                for (i, s) in u.stmts.iter().enumerate() {
                    let mut line = self.line(src.upstream_stmt(&s.kind), s.span);
                    if let UpstreamStmtKind::Health(HealthCheck { timeout: None, .. }) = s.kind {
                        line.semi = matches!(u.stmts.get(i + 1).map(|n| &n.kind), Some(UpstreamStmtKind::Timeout(_)));
                    }
                    lines.push(line);
                }
                self.block_shape("upstream", format!("upstream {}", u.name.name), u.span, lines, inner)
            }
            Item::Tenant(t) => {
                let lines = t.stmts.iter().map(|s| self.line(src.tenant_stmt(&s.kind), s.span)).collect();
                self.block_shape("tenant", format!("tenant {}", t.name.name), t.span, lines, inner)
            }
            Item::Route(r) => {
                let lines = r.stmts.iter().map(|s| self.line(src.route_stmt(&s.kind, s.span), s.span)).collect();
                self.block_shape("route", format!("route {}", r.name.name), r.span, lines, inner)
            }
            Item::Test(t) => {
                let lines = t.stmts.iter().map(|s| self.line(src.test_stmt(&s.kind), s.span)).collect();
                self.block_shape("test", format!("test {}", src.string(&t.name)), t.span, lines, inner)
            }
        }
    }

    /// `matcher name = expr` on one line, or over several when the source spread it or it
    /// does not fit.
    pub(super) fn matcher(&self, m: &Matcher, cs: &[usize]) -> Shape {
        let head = format!("matcher {}", m.name.name);
        let expr = self.src.expr(&m.expr);
        let spread = self.source_of(m.span).is_some_and(|s| s.contains('\n'));
        let chain = and_or_chain(&m.expr);
        if !spread && (chain.is_none() || width(&head) + 3 + width(&expr) <= WIDTH) {
            return Shape::Line { head, tail: format!(" = {expr}"), kind: Some("matcher") };
        }
        // One operand a line, each with the comments written before it, in it and after it.
        let lines: Vec<String> = match &chain {
            Some((op, operands)) => {
                let p = op.precedence();
                let mut lines = vec![];
                for (i, e) in operands.iter().enumerate() {
                    let (mut line, ctx) = if i == 0 {
                        (String::new(), Ctx { min: p, not_ok: true, followed_by_cmp: false })
                    } else {
                        (format!("{} ", op.as_str()), Ctx { min: p + 1, not_ok: true, followed_by_cmp: false })
                    };
                    write_expr(&mut line, e, ctx, self.src);
                    lines.push(line);
                }
                lines
            }
            None => vec![expr],
        };
        let operands: Vec<&Expr> = chain.map_or_else(|| vec![&m.expr], |(_, operands)| operands);
        let spans: Vec<(usize, usize)> =
            operands.iter().map(|e| (e.span.start as usize, self.eff_end(e.span))).collect();
        let slots = self.assign(cs, &spans, true);
        let mut rows: Vec<(String, Option<usize>)> = vec![];
        for (k, line) in lines.into_iter().enumerate() {
            for &ci in slots.leading[k].iter().chain(&slots.inner[k]) {
                rows.push((self.ctext(ci), None));
            }
            rows.push((line, slots.trailing[k]));
        }
        rows.extend(slots.tail.iter().map(|&ci| (self.ctext(ci), None)));
        let comment_col = comment_column(rows.iter().filter(|(_, c)| c.is_some()).map(|(l, _)| width(l)));
        let mut out = format!("{head} =");
        if let Some(ci) = slots.header {
            out.push(' ');
            out.push_str(&self.comment(ci).text);
        }
        for (mut line, trailing) in rows {
            if let Some(ci) = trailing {
                let col = comment_col.max(width(&line) + COMMENT_GAP);
                pad_to(&mut line, col);
                line.push_str(&self.comment(ci).text);
            }
            out.push('\n');
            out.push_str(INDENT);
            out.push_str(&line);
        }
        Shape::Lines(out)
    }

    pub(super) fn line(&self, text: String, span: Span) -> Line {
        Line { text, semi: false, start: span.start as usize, end: self.eff_end(span) }
    }

    /// A block item: on one line when it was written on one line, has no comment inside and
    /// fits; else `header {`, one line per child with its comments, `}`.
    pub(super) fn block_shape(
        &self,
        kind: &'static str,
        header: String,
        span: Span,
        lines: Vec<Line>,
        cs: &[usize],
    ) -> Shape {
        if lines.is_empty() && cs.is_empty() {
            return Shape::Line { head: header, tail: " {}".to_string(), kind: None };
        }
        if cs.is_empty() && self.written_on_one_line(span) {
            let body: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
            let tail = format!(" {{ {} }}", body.join("; "));
            if width(&header) + width(&tail) <= WIDTH {
                return Shape::Line { head: header, tail, kind: Some(kind) };
            }
        }
        Shape::Lines(self.block(&header, lines, cs))
    }

    /// `header {`, one line per child with its comments, `}` (no newline after it).
    pub(super) fn block(&self, header: &str, lines: Vec<Line>, cs: &[usize]) -> String {
        let spans: Vec<(usize, usize)> = lines.iter().map(|l| (l.start, l.end)).collect();
        let slots = self.assign(cs, &spans, true);
        let mut elems: Vec<Elem> = vec![];
        let comment_elem = |f: &Self, ci: usize| Elem {
            word: f.ctext(ci),
            rest: None,
            trailing: None,
            start: f.cstart(ci),
            end: f.cend(ci),
        };
        for (k, mut line) in lines.into_iter().enumerate() {
            for &ci in slots.leading[k].iter().chain(&slots.inner[k]) {
                elems.push(comment_elem(self, ci));
            }
            if line.semi {
                line.text.push(';');
            }
            let (word, rest) = match line.text.split_once(' ') {
                Some((w, r)) => (w.to_string(), Some(r.to_string())),
                None => (line.text, None),
            };
            let trailing = slots.trailing[k].map(|ci| self.ctext(ci));
            let end = slots.trailing[k].map_or(line.end, |ci| self.cend(ci));
            elems.push(Elem { word, rest, trailing, start: line.start, end });
        }
        for &ci in &slots.tail {
            elems.push(comment_elem(self, ci));
        }

        let mut out = format!("{header} {{");
        if let Some(ci) = slots.header {
            out.push(' ');
            out.push_str(&self.comment(ci).text);
        } else if elems.is_empty() {
            out.push('}');
            return out;
        }
        // The arguments start one column after the longest first word; the comments at line
        // ends three columns after the longest line that has one.
        let word_col = elems.iter().filter(|e| e.rest.is_some()).map(|e| width(&e.word)).max().unwrap_or(0);
        let codes: Vec<String> = elems
            .iter()
            .map(|e| {
                let mut code = e.word.clone();
                if let Some(rest) = &e.rest {
                    pad_to(&mut code, word_col);
                    code.push(' ');
                    code.push_str(rest);
                }
                code
            })
            .collect();
        let comment_col =
            comment_column(elems.iter().zip(&codes).filter(|(e, _)| e.trailing.is_some()).map(|(_, c)| width(c)));
        out.push('\n');
        let mut prev_end: Option<usize> = None;
        for (e, mut code) in elems.into_iter().zip(codes) {
            if prev_end.is_some_and(|p| self.blank_between(p, e.start)) {
                out.push('\n');
            }
            if let Some(t) = &e.trailing {
                let col = comment_col.max(width(&code) + COMMENT_GAP);
                pad_to(&mut code, col);
                code.push_str(t);
            }
            out.push_str(INDENT);
            out.push_str(&code);
            out.push('\n');
            prev_end = Some(e.end);
        }
        out.push('}');
        out
    }
}

/// The operands of an expression's top `and` or `or` chain (`a or b or c`: a, b, c).
pub(super) fn and_or_chain(e: &Expr) -> Option<(BinOp, Vec<&Expr>)> {
    let ExprKind::Binary { op, .. } = &e.kind else { return None };
    if !matches!(op, BinOp::And | BinOp::Or) {
        return None;
    }
    let mut rights = vec![];
    let mut cur = e;
    while let ExprKind::Binary { op: o, lhs, rhs, .. } = &cur.kind {
        if o != op {
            break;
        }
        rights.push(rhs.as_ref());
        cur = lhs;
    }
    rights.push(cur);
    rights.reverse();
    Some((*op, rights))
}
