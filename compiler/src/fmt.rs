//! The canonical formatter: an AST (plus the comments of its source) printed back as text.
//!
//! Style (the one the project's own policies and docs are written in):
//! - 4-space indent; one statement a line, without `;`.
//! - Inside a block, each statement's first word is padded to the block's longest first word, so
//!   the arguments start in one column; comments at the end of statement lines start in one
//!   column too, three spaces after the longest line that carries one.
//! - A block written on one line stays on one line (`tenant dev { rate 5/s; concurrent 2 }`)
//!   while it fits in 100 columns. A matcher written over several lines is printed one operand
//!   of its top `and`/`or` chain a line, and so is one too long for 100 columns.
//! - Consecutive one-line items of one kind (matchers, keys, one-line tenants, ...) pad their names
//!   to one column (`matcher is_chat  = ...`), as far as the next item of another kind.
//! - Literals are printed as written (`60s` stays `60s`, `1_000`, `"\u{e9}"`, JSON numbers,
//!   a header name's case), and so are defaults written out (`on_error local`, `per route`);
//!   only what the source does not spell (no source text) is printed canonically.
//! - Expressions keep the parentheses the source wrote (one pair) and get those the parser
//!   needs; JSON is on one line, keys in source order.
//! - Blank lines: one where the source had one or more, and always around a multi-line item.
//!   Comments are kept, each exactly once and in their original order: a comment on its own
//!   line stays before what follows it, a comment at the end of a line stays at the end of
//!   that line, a comment written inside a statement (or inside an operand of a spread
//!   matcher) moves to its own line before it.
//!
//! `format_source` checks its own work: it re-parses the output and compares the trees with
//! spans erased (`strip_spans`), so a formatter bug can never silently change a policy.

use std::fmt;

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::source::{FileId, Span};
use crate::syntax::{self, Comment};

const INDENT: &str = "    ";
/// The widest line a one-line block or matcher is kept on.
const WIDTH: usize = 100;
/// Spaces between code and the comment at the end of its line.
const COMMENT_GAP: usize = 3;

/// Why `format_source` refused to format.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatError {
    /// The input does not parse; nothing was formatted.
    Syntax(Vec<Diag>),
    /// A formatter bug: the formatted text does not parse back to the same policy (or lost a
    /// comment). The message says what differs.
    Unstable(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Syntax(diags) => {
                let errors = diags.iter().filter(|d| d.is_error()).count();
                write!(f, "the policy has {errors} syntax error(s)")?;
                if let Some(d) = diags.iter().find(|d| d.is_error()) {
                    write!(f, "; first: {}", d.message)?;
                }
                Ok(())
            }
            FormatError::Unstable(msg) => {
                write!(f, "bug in the formatter: formatting changed the meaning of the policy: {msg}")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Parse, format, re-parse the output and compare the trees (ignoring spans) and the comments.
pub fn format_source(text: &str) -> Result<String, FormatError> {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    if diags.iter().any(|d| d.is_error()) {
        return Err(FormatError::Syntax(diags));
    }
    let out = format_file(&parsed.file, &parsed.comments, text);
    let (again, diags2) = syntax::parse(FileId(0), &out);
    if let Some(d) = diags2.iter().find(|d| d.is_error()) {
        let at = d.primary_span().map(|s| s.start).unwrap_or(0);
        return Err(FormatError::Unstable(format!(
            "the formatted text does not parse ({} at byte {at}):\n{out}",
            d.message
        )));
    }
    let before = strip_spans(&parsed.file);
    let after = strip_spans(&again.file);
    if before != after {
        return Err(FormatError::Unstable(describe_difference(&before, &after, &out)));
    }
    let texts = |cs: &[Comment]| cs.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    if texts(&parsed.comments) != texts(&again.comments) {
        return Err(FormatError::Unstable(format!(
            "comments changed: before {:?}, after {:?}",
            texts(&parsed.comments),
            texts(&again.comments)
        )));
    }
    Ok(out)
}

fn describe_difference(before: &File, after: &File, out: &str) -> String {
    if before.items.len() != after.items.len() {
        return format!(
            "{} items before, {} after formatting; formatted text:\n{out}",
            before.items.len(),
            after.items.len()
        );
    }
    for (i, (b, a)) in before.items.iter().zip(&after.items).enumerate() {
        if b != a {
            return format!("item {i} differs:\nbefore: {b:?}\nafter:  {a:?}");
        }
    }
    "the trees differ".to_string()
}

/// Format a whole file canonically. `text` is the source the AST and comments came from; it is
/// read to place comments, to keep blank lines and one-line blocks, and to keep the spelling of
/// literals and the key order of JSON. With text that does not match the AST (e.g. `""`), the
/// output is still correct, only without those.
pub fn format_file(file: &File, comments: &[Comment], text: &str) -> String {
    let mut comments: Vec<&Comment> = comments.iter().collect();
    comments.sort_by_key(|c| c.span.start);
    let mut f = Fmt { text, src: Src(text), comments, out: String::new() };
    f.file(file);
    f.out
}

/// One expression in canonical form (for messages and tools).
pub fn expr_to_string(e: &Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, e, Ctx::TOP, Src(""));
    s
}

// ====================================================================== layout and comments

struct Fmt<'a> {
    text: &'a str,
    src: Src<'a>,
    comments: Vec<&'a Comment>,
    out: String,
}

/// Where the comments of one block (or of the file) go, by index into `Fmt::comments`.
#[derive(Default)]
struct Slots {
    /// A comment at the end of the block's opening line.
    header: Option<usize>,
    /// Own-line comments before each child.
    leading: Vec<Vec<usize>>,
    /// Comments written inside each child's span.
    inner: Vec<Vec<usize>>,
    /// A comment at the end of each child's (last) line.
    trailing: Vec<Option<usize>>,
    /// Comments after the last child.
    tail: Vec<usize>,
}

/// A statement printed on one line, with the source range it came from.
struct Line {
    text: String,
    /// `health ... every 10s` directly before a `timeout` statement: only a `;` keeps the
    /// `timeout` from being read as the health check's own.
    semi: bool,
    start: usize,
    end: usize,
}

/// One line of a block body before alignment: a comment (all in `word`), or a statement split
/// into its first word and the rest, with the comment at its end.
struct Elem {
    word: String,
    rest: Option<String>,
    trailing: Option<String>,
    start: usize,
    end: usize,
}

/// How a top-level item is printed.
enum Shape {
    /// On one line: `head` is padded to the names of its run, `tail` follows. `kind` names the
    /// items it lines up with (None: it lines up with nothing).
    Line { head: String, tail: String, kind: Option<&'static str> },
    /// Over several lines (no final newline).
    Lines(String),
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{FEFF}')
}

/// Columns a line takes (characters, not bytes).
fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad_to(s: &mut String, col: usize) {
    let w = width(s);
    s.extend(std::iter::repeat_n(' ', col.saturating_sub(w)));
}

/// The column where the comments at the ends of lines of these widths start: three spaces
/// after the longest line, leaving out lines so long the column would pass `WIDTH` (their
/// comments follow them three spaces on).
fn comment_column(widths: impl Iterator<Item = usize>) -> usize {
    widths.map(|w| w + COMMENT_GAP).filter(|&c| c <= WIDTH).max().unwrap_or(0)
}

/// What was printed last at the top level, for the blank line before the next element.
#[derive(Clone, Copy)]
enum Last {
    Comment(usize),
    Item { multi_line: bool, end: usize },
}

impl<'a> Fmt<'a> {
    fn comment(&self, i: usize) -> &'a Comment {
        self.comments[i]
    }

    fn ctext(&self, i: usize) -> String {
        self.comments[i].text.clone()
    }

    fn cstart(&self, i: usize) -> usize {
        self.comments[i].span.start as usize
    }

    fn cend(&self, i: usize) -> usize {
        self.comments[i].span.end as usize
    }

    /// The end of a span without the whitespace and comments pest lets a rule swallow when it
    /// ends in an optional part.
    fn eff_end(&self, span: Span) -> usize {
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
    fn source_of(&self, span: Span) -> Option<&'a str> {
        self.text.get(span.start as usize..self.eff_end(span)).filter(|s| !s.is_empty())
    }

    /// Was this block written on one line (`{` to `}`)?
    fn written_on_one_line(&self, span: Span) -> bool {
        self.source_of(span).is_some_and(|s| s.ends_with('}') && !s.contains('\n'))
    }

    /// Is there code before the comment on its line?
    fn is_trailing(&self, i: usize) -> bool {
        let start = self.cstart(i);
        let before = self.text.get(..start).unwrap_or("");
        let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
        before.get(line_start..).unwrap_or("").chars().any(|c| !is_ws(c))
    }

    fn same_line(&self, a: usize, b: usize) -> bool {
        a <= b && !self.text.get(a..b).unwrap_or("\n").contains('\n')
    }

    /// Did the source have an empty line between `a` and `b`?
    fn blank_between(&self, a: usize, b: usize) -> bool {
        if a >= b {
            return false;
        }
        let Some(gap) = self.text.get(a..b) else { return false };
        let segs: Vec<&str> = gap.split('\n').collect();
        segs.len() > 2 && segs[1..segs.len() - 1].iter().any(|s| s.chars().all(is_ws))
    }

    /// Give each comment of `cs` (in source order) its place among `children` (source ranges
    /// in order). `header`: a block whose first comment may stay on its opening line.
    fn assign(&self, cs: &[usize], children: &[(usize, usize)], header: bool) -> Slots {
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

    fn file(&mut self, file: &File) {
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
    fn file_sep(&mut self, last: Option<Last>, start: usize, next_multi_line: bool) {
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
    fn align_items(&self, shapes: &[Shape], trailing: &[Option<usize>]) -> Vec<String> {
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

    fn shape(&self, item: &Item, inner: &[usize]) -> Shape {
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
                Shape::Line { head: format!("keys {}", k.name.name), tail, kind: Some("keys") }
            }
            Item::Matcher(m) => self.matcher(m, inner),
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
    fn matcher(&self, m: &Matcher, cs: &[usize]) -> Shape {
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

    fn line(&self, text: String, span: Span) -> Line {
        Line { text, semi: false, start: span.start as usize, end: self.eff_end(span) }
    }

    /// A block item: on one line when it was written on one line, has no comment inside and
    /// fits; else `header {`, one line per child with its comments, `}`.
    fn block_shape(&self, kind: &'static str, header: String, span: Span, lines: Vec<Line>, cs: &[usize]) -> Shape {
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
    fn block(&self, header: &str, lines: Vec<Line>, cs: &[usize]) -> String {
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
fn and_or_chain(e: &Expr) -> Option<(BinOp, Vec<&Expr>)> {
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

// ====================================================================== statements

/// The source text, read for the spelling of literals: a literal is printed as written when
/// the text under its span reads back to the value in the tree, else canonically.
#[derive(Clone, Copy)]
struct Src<'a>(&'a str);

impl<'a> Src<'a> {
    /// The text under `span` when `reads_back` accepts it.
    fn spelled(self, span: Span, reads_back: impl Fn(&str) -> bool) -> Option<String> {
        self.0
            .get(span.start as usize..span.end as usize)
            .filter(|s| !s.is_empty() && reads_back(s))
            .map(str::to_string)
    }

    fn duration(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| spelled_duration(s) == Some(q.value)).unwrap_or_else(|| duration(q.value))
    }

    fn size(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| spelled_size(s) == Some(q.value)).unwrap_or_else(|| size(q.value))
    }

    /// A whole number (counts, weights, attempts).
    fn count(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| spelled_int(s) == i64::try_from(q.value).ok()).unwrap_or_else(|| q.value.to_string())
    }

    fn status(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| s.len() == 3 && s.parse::<u64>().ok() == Some(q.value))
            .unwrap_or_else(|| status_code(q.value))
    }

    fn rate(self, r: &Rate) -> String {
        self.spelled(r.span, |s| spelled_rate(s) == Some((r.count, r.window_ns))).unwrap_or_else(|| rate(r))
    }

    fn string(self, s: &Str) -> String {
        self.spelled(s.span, |t| spelled_string(t).as_deref() == Some(s.value.as_str()))
            .unwrap_or_else(|| quote(&s.value))
    }

    /// A header name: the parser lowers its case, so any spelling that lowers to it is kept.
    fn header(self, s: &Str) -> String {
        self.spelled(s.span, |t| spelled_string(t).is_some_and(|v| v.to_ascii_lowercase() == s.value))
            .unwrap_or_else(|| quote(&s.value))
    }

    fn opt_string(self, s: &Option<Str>) -> Option<String> {
        s.as_ref().map(|s| self.string(s))
    }

    fn value(self, v: &Value) -> String {
        let parts: Vec<String> = v
            .parts
            .iter()
            .map(|p| match p {
                ValuePart::Lit(s) => self.string(s),
                ValuePart::Env(s) => format!("env({})", self.string(s)),
            })
            .collect();
        parts.join(" + ")
    }

    fn regex(self, r: &Regex) -> String {
        self.spelled(r.span, |s| spelled_regex(s) == Some((r.pattern.clone(), r.case_insensitive)))
            .unwrap_or_else(|| regex(r))
    }

    fn expr(self, e: &Expr) -> String {
        let mut s = String::new();
        write_expr(&mut s, e, Ctx::TOP, self);
        s
    }

    /// Does the source, from the end of `after` to the end of `span`, go on with `words`? (For
    /// defaults written out, `on_error local` and `per route`, which the tree does not keep.)
    fn goes_on_with(self, after: Span, span: Span, words: &[&str]) -> bool {
        let Some(mut rest) = self.0.get(after.end as usize..span.end as usize) else { return false };
        for w in words {
            rest = rest.trim_start();
            match rest.strip_prefix(w) {
                Some(r) if !r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') => rest = r,
                _ => return false,
            }
        }
        true
    }

    fn setting(self, k: &SettingKind, span: Span) -> String {
        match k {
            SettingKind::Listen(v) => format!("listen {}", self.value(v)),
            SettingKind::Admin { addr, token } => {
                let mut s = format!("admin {}", self.value(addr));
                if let Some(t) = token {
                    s.push_str(&format!(" token {}", self.value(t)));
                }
                s
            }
            SettingKind::State(StateStore::Local) => "state local".to_string(),
            SettingKind::State(StateStore::Redis { url, on_error }) => {
                let mut s = format!("state redis {}", self.value(url));
                match on_error {
                    OnError::Local if self.goes_on_with(url.span, span, &["on_error"]) => s.push_str(" on_error local"),
                    OnError::Local => {}
                    OnError::Allow => s.push_str(" on_error allow"),
                    OnError::Deny => s.push_str(" on_error deny"),
                }
                s
            }
            SettingKind::Audit { path, rotate } => {
                let mut s = format!("audit {}", self.value(path));
                if let Some(r) = rotate {
                    s.push_str(&format!(" rotate {}", self.size(r)));
                }
                s
            }
            SettingKind::MaxBody(q) => format!("max_body {}", self.size(q)),
            SettingKind::MaxHeaderBytes(q) => format!("max_header_bytes {}", self.size(q)),
            SettingKind::MaxHeaders(q) => format!("max_headers {}", self.count(q)),
            SettingKind::HeaderTimeout(q) => format!("header_timeout {}", self.duration(q)),
            SettingKind::IdleTimeout(q) => format!("idle_timeout {}", self.duration(q)),
            SettingKind::DrainTimeout(q) => format!("drain_timeout {}", self.duration(q)),
            SettingKind::Tls { cert, key } => format!("tls cert {} key {}", self.value(cert), self.value(key)),
            SettingKind::PolicyHeader(b) => format!("policy_header {b}"),
            SettingKind::Forwarded(m) => format!(
                "forwarded {}",
                match m {
                    ForwardedMode::Strip => "strip",
                    ForwardedMode::Append => "append",
                    ForwardedMode::Keep => "keep",
                }
            ),
        }
    }

    fn upstream_stmt(self, k: &UpstreamStmtKind) -> String {
        match k {
            UpstreamStmtKind::Target(t) => {
                let mut s = format!("target {}", self.value(&t.url));
                if let Some(w) = &t.weight {
                    s.push_str(&format!(" weight {}", self.count(w)));
                }
                if let Some(r) = self.opt_string(&t.region) {
                    s.push_str(&format!(" region {r}"));
                }
                s
            }
            UpstreamStmtKind::Balance(b) => match b {
                Balance::RoundRobin => "balance round_robin".to_string(),
                Balance::Weighted => "balance weighted".to_string(),
                Balance::LeastConn => "balance least_conn".to_string(),
                Balance::Hash(e) => format!("balance hash({})", self.expr(e)),
            },
            UpstreamStmtKind::Header { name, value: v } => {
                format!("header {} = {}", self.header(name), self.value(v))
            }
            UpstreamStmtKind::Timeout(q) => format!("timeout {}", self.duration(q)),
            UpstreamStmtKind::ConnectTimeout(q) => format!("connect_timeout {}", self.duration(q)),
            UpstreamStmtKind::Health(h) => {
                let mut s =
                    format!("health {} {} every {}", h.method.as_str(), self.string(&h.path), self.duration(&h.every));
                if let Some(t) = &h.timeout {
                    s.push_str(&format!(" timeout {}", self.duration(t)));
                }
                s
            }
            UpstreamStmtKind::Retry(r) => {
                let mut s = format!("retry {}", self.count(&r.attempts));
                if !r.on.is_empty() {
                    let conds: Vec<String> =
                        r.on.iter()
                            .map(|c| match c {
                                RetryCond::ConnectError(_) => "connect_error".to_string(),
                                RetryCond::Timeout(_) => "timeout".to_string(),
                                RetryCond::Status(q) => self.count(q),
                            })
                            .collect();
                    s.push_str(" on ");
                    s.push_str(&conds.join(", "));
                }
                s
            }
            UpstreamStmtKind::MaxConnections(q) => format!("max_connections {}", self.count(q)),
            UpstreamStmtKind::Affinity(e) => format!("affinity {}", self.expr(e)),
        }
    }

    fn tenant_stmt(self, k: &TenantStmtKind) -> String {
        match k {
            TenantStmtKind::Rate { rate: r, burst } => {
                let mut s = format!("rate {}", self.rate(r));
                if let Some(b) = burst {
                    s.push_str(&format!(" burst {}", self.count(b)));
                }
                s
            }
            TenantStmtKind::Tokens(r) => format!("tokens {}", self.rate(r)),
            TenantStmtKind::Concurrent(q) => format!("concurrent {}", self.count(q)),
            TenantStmtKind::Region(r) => format!("region {}", self.string(r)),
        }
    }

    fn route_stmt(self, k: &RouteStmtKind, span: Span) -> String {
        match k {
            RouteStmtKind::When(w) => {
                let mut s = format!("when {} {}", methods(&w.methods), self.string(&w.path));
                if let Some(h) = self.opt_string(&w.host) {
                    s.push_str(&format!(" host {h}"));
                }
                if let Some(c) = &w.cond {
                    s.push_str(&format!(" if {}", self.expr(c)));
                }
                s
            }
            RouteStmtKind::Auth(a) => {
                let mut s = format!("auth {}", a.keys.name);
                if !a.via.is_empty() {
                    let via: Vec<String> = a
                        .via
                        .iter()
                        .map(|c| match c {
                            Credential::Header(h) => format!("header {}", self.header(h)),
                            Credential::Bearer(_) => "bearer".to_string(),
                            Credential::Query(q) => format!("query {}", self.string(q)),
                        })
                        .collect();
                    s.push_str(" via ");
                    s.push_str(&via.join(", "));
                }
                if a.optional {
                    s.push_str(" optional");
                }
                s
            }
            RouteStmtKind::Allow { cond, status, message } => {
                let mut s = format!("allow if {}", self.expr(cond));
                if status.is_some() || message.is_some() {
                    let st = status.as_ref().map_or_else(|| status_code(403), |q| self.status(q));
                    let msg = self.opt_string(message).unwrap_or_else(|| quote(""));
                    s.push_str(&format!(" else {st} {msg}"));
                }
                s
            }
            RouteStmtKind::Deny { status, message, cond } => {
                format!("deny {} {} if {}", self.status(status), self.string(message), self.expr(cond))
            }
            RouteStmtKind::Limit(l) => self.limit(l, span),
            RouteStmtKind::SetHeader { name, value: v } => {
                format!("set header {} = {}", self.header(name), self.value(v))
            }
            RouteStmtKind::StripHeaders(names) => {
                let names: Vec<String> = names.iter().map(|n| self.header(n)).collect();
                format!("strip header {}", names.join(", "))
            }
            RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) => {
                format!("rewrite prefix {} => {}", self.string(from), self.string(to))
            }
            RouteStmtKind::Rewrite(Rewrite::Path(p)) => format!("rewrite path {}", self.string(p)),
            RouteStmtKind::Respond { status, body } => {
                let mut s = format!("respond {}", self.status(status));
                match body {
                    Some(ResponseBody::Json(j)) => {
                        s.push_str(" json ");
                        s.push_str(&self.json(j));
                    }
                    Some(ResponseBody::Text(t)) => {
                        s.push(' ');
                        s.push_str(&self.string(t));
                    }
                    None => {}
                }
                s
            }
            RouteStmtKind::Cache { ttl, max } => {
                let mut s = format!("cache {}", self.duration(ttl));
                if let Some(m) = max {
                    s.push_str(&format!(" max {}", self.size(m)));
                }
                s
            }
            RouteStmtKind::Websocket => "websocket".to_string(),
            RouteStmtKind::AuthNone => "auth none".to_string(),
            RouteStmtKind::Cors { origins, methods: ms } => {
                let origins: Vec<String> = origins.iter().map(|o| self.string(o)).collect();
                let mut s = format!("cors origins [{}]", origins.join(", "));
                if !ms.is_empty() {
                    s.push_str(" methods ");
                    s.push_str(&methods(ms));
                }
                s
            }
            RouteStmtKind::Jwt { secret, issuer } => {
                let mut s = format!("jwt secret {}", self.value(secret));
                if let Some(i) = self.opt_string(issuer) {
                    s.push_str(&format!(" issuer {i}"));
                }
                s
            }
            RouteStmtKind::Serve(b) => format!("serve {}", b.name),
            RouteStmtKind::To(u) => format!("to {}", u.name),
        }
    }

    fn limit(self, l: &Limit, span: Span) -> String {
        let mut s = String::from("limit ");
        // Where the kind ends, to find a `per route` written out after it.
        let kind_end = match &l.kind {
            LimitKind::Rate { rate: r, burst } => {
                s.push_str(&format!("rate {}", self.rate(r)));
                if let Some(b) = burst {
                    s.push_str(&format!(" burst {}", self.count(b)));
                }
                burst.map_or(r.span, |b| b.span)
            }
            LimitKind::Tokens { rate: r, estimate } => {
                s.push_str(&format!("tokens {}", self.rate(r)));
                if let Some(e) = estimate {
                    s.push_str(&format!(" estimate {}", self.count(e)));
                }
                estimate.map_or(r.span, |e| e.span)
            }
            LimitKind::Concurrent(q) => {
                s.push_str(&format!("concurrent {}", self.count(q)));
                q.span
            }
        };
        match &l.per {
            LimitKey::Route if self.goes_on_with(kind_end, span, &["per", "route"]) => s.push_str(" per route"),
            LimitKey::Route => {}
            LimitKey::Key => s.push_str(" per key"),
            LimitKey::Tenant => s.push_str(" per tenant"),
            LimitKey::Client => s.push_str(" per client"),
            LimitKey::Header(h) => s.push_str(&format!(" per header {}", self.header(h))),
            LimitKey::Expr(e) => s.push_str(&format!(" per ({})", self.expr(e))),
        }
        if let Some(m) = &l.model {
            s.push_str(" model ");
            s.push_str(&self.regex(m));
        }
        if let Some(c) = &l.cond {
            s.push_str(" if ");
            s.push_str(&self.expr(c));
        }
        if l.shadow {
            s.push_str(" shadow");
        }
        s
    }

    fn test_stmt(self, k: &TestStmtKind) -> String {
        match k {
            TestStmtKind::Send(send) => {
                let mut s = format!("send {} {}", send.method.as_str(), self.string(&send.path));
                for (name, v) in &send.headers {
                    s.push_str(&format!(" header {} = {}", self.header(name), self.string(v)));
                }
                if let Some(b) = &send.body {
                    s.push_str(" body ");
                    s.push_str(&self.json(b));
                }
                if let Some(c) = self.opt_string(&send.client) {
                    s.push_str(&format!(" client {c}"));
                }
                s
            }
            TestStmtKind::Advance(q) => format!("advance {}", self.duration(q)),
            TestStmtKind::Expect(e) => match e {
                Expectation::Status { status, message } => {
                    let mut s = format!("expect {}", self.status(status));
                    if let Some(m) = self.opt_string(message) {
                        s.push(' ');
                        s.push_str(&m);
                    }
                    s
                }
                Expectation::Route(n) => format!("expect route {}", n.name),
                Expectation::Upstream(n) => format!("expect upstream {}", n.name),
                Expectation::Tenant(n) => format!("expect tenant {}", n.name),
            },
        }
    }

    /// A JSON literal on one line. Objects keep the key order, and strings and numbers the
    /// spelling, of the source when the source text under the span reads back to the same value
    /// (`serde_json::Map` here sorts its keys, so the tree alone has lost the order); otherwise
    /// the tree is printed, keys sorted.
    fn json(self, j: &Json) -> String {
        let mut out = String::new();
        let from_source = self.0.get(j.span.start as usize..j.span.end as usize).and_then(|t| {
            let mut r = JsonReader { s: t, pos: 0 };
            let v = r.value()?;
            r.skip();
            (r.pos == t.len() && v.to_value() == j.value).then_some(v)
        });
        match from_source {
            Some(v) => v.write(&mut out),
            None => write_json(&mut out, &j.value),
        }
        out
    }
}

fn methods(ms: &[Method]) -> String {
    ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("|")
}

// ====================================================================== spellings

/// Splits `123abc` into `123` and `abc`.
fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => MS,
        "s" => SEC,
        "m" | "min" => MIN,
        "h" => HOUR,
        "d" => DAY,
        _ => return None,
    })
}

/// The value of a spelled whole number (`-`, digits and `_`), as the grammar's `int`.
fn spelled_int(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    if !body.starts_with(|c: char| c.is_ascii_digit()) || !body.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    s.replace('_', "").parse().ok()
}

fn spelled_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.')?;
    digits(int)?;
    digits(frac)?;
    s.parse().ok()
}

fn spelled_duration(s: &str) -> Option<u64> {
    let (n, unit) = split_digits(s);
    digits(n)?.checked_mul(unit_ns(unit)?)
}

fn spelled_size(s: &str) -> Option<u64> {
    let (n, unit) = split_digits(s);
    let mul: u64 = match unit {
        "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    digits(n)?.checked_mul(mul)
}

/// `(count, window in ns)` of a spelled rate such as `100k/min` or `10/30s`.
fn spelled_rate(s: &str) -> Option<(u64, u64)> {
    let (count, window) = s.split_once('/')?;
    let (n, suffix) = split_digits(count);
    let mul = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        _ => return None,
    };
    let (times, unit) = split_digits(window);
    let times = if times.is_empty() { 1 } else { digits(times)? };
    Some((digits(n)?.checked_mul(mul)?, times.checked_mul(unit_ns(unit)?)?))
}

/// The value of a spelled string literal, if it is one the grammar reads.
fn spelled_string(s: &str) -> Option<String> {
    let body = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => match chars.next()? {
                '"' | '\\' | 'n' | 't' | 'r' | '0' => {}
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let mut hex = 0;
                    loop {
                        match chars.next()? {
                            '}' if hex > 0 => break,
                            c if c.is_ascii_hexdigit() && hex < 6 => hex += 1,
                            _ => return None,
                        }
                    }
                }
                _ => return None,
            },
            _ => {}
        }
    }
    Some(syntax::unescape(body))
}

/// `(pattern, case-insensitive)` of a spelled regex literal, as the parser reads it.
fn spelled_regex(s: &str) -> Option<(String, bool)> {
    let (s, ci) = match s.strip_suffix('i') {
        Some(s) => (s, true),
        None => (s, false),
    };
    let inner = s.strip_prefix('/')?.strip_suffix('/')?;
    let mut chars = inner.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        match c {
            '/' | '\n' => return None,
            '\\' if matches!(chars.next(), None | Some('\n')) => return None,
            _ => {}
        }
    }
    any.then(|| (inner.replace("\\/", "/"), ci))
}

// ====================================================================== leaves

/// A string literal with the escapes the grammar reads back.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn regex(r: &Regex) -> String {
    format!("/{}/{}", r.pattern.replace('/', "\\/"), if r.case_insensitive { "i" } else { "" })
}

fn status_code(n: u64) -> String {
    format!("{n:03}")
}

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// The largest unit of `units` (largest first) that divides `n`, as (count, unit).
fn largest_unit(n: u64, units: &[(&'static str, u64)]) -> Option<(u64, &'static str)> {
    units.iter().find(|(_, m)| n.checked_rem(*m) == Some(0)).map(|&(u, m)| (n / m, u))
}

/// A duration in nanoseconds, e.g. `90s`, `5m`, `2h`.
pub fn duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let units = [("d", DAY), ("h", HOUR), ("m", MIN), ("s", SEC), ("ms", MS)];
    match largest_unit(ns, &units) {
        Some((n, u)) => format!("{n}{u}"),
        // Finer than the language can write: the nearest millisecond.
        None => format!("{}ms", ns / MS),
    }
}

/// A size in bytes: decimal units when one divides, else binary ones, else bytes.
pub fn size(bytes: u64) -> String {
    if bytes == 0 {
        return "0B".to_string();
    }
    let decimal = [("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000)];
    let binary = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match largest_unit(bytes, &decimal).or_else(|| largest_unit(bytes, &binary)) {
        Some((n, u)) => format!("{n}{u}"),
        None => format!("{bytes}B"),
    }
}

/// A rate, e.g. `100/s`, `500k/min`, `10/30s`.
pub fn rate(r: &Rate) -> String {
    let count = match r.count {
        0 => "0".to_string(),
        c if c % 1_000_000 == 0 => format!("{}M", c / 1_000_000),
        c if c % 1_000 == 0 => format!("{}k", c / 1_000),
        c => c.to_string(),
    };
    let window = if r.window_ns == 0 {
        "0s".to_string()
    } else {
        let units = [("d", DAY), ("h", HOUR), ("min", MIN), ("s", SEC), ("ms", MS)];
        match largest_unit(r.window_ns, &units) {
            Some((1, u)) => u.to_string(),
            Some((n, u)) => format!("{n}{u}"),
            None => format!("{}ms", r.window_ns / MS),
        }
    };
    format!("{count}/{window}")
}

/// JSON as written, in order (duplicate keys included), strings and numbers with their source
/// spelling (`raw`).
enum OJson {
    Obj(Vec<(JsonStr, OJson)>),
    Arr(Vec<OJson>),
    Str(JsonStr),
    Num { value: serde_json::Number, raw: String },
    Bool(bool),
    Null,
}

impl OJson {
    fn to_value(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            OJson::Obj(kv) => J::Object(kv.iter().map(|(k, v)| (k.value.clone(), v.to_value())).collect()),
            OJson::Arr(items) => J::Array(items.iter().map(OJson::to_value).collect()),
            OJson::Str(s) => J::String(s.value.clone()),
            OJson::Num { value, .. } => J::Number(value.clone()),
            OJson::Bool(b) => J::Bool(*b),
            OJson::Null => J::Null,
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            OJson::Obj(kv) => {
                out.push('{');
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&k.raw);
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
            OJson::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            OJson::Str(s) => out.push_str(&s.raw),
            OJson::Num { raw, .. } => out.push_str(raw),
            OJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OJson::Null => out.push_str("null"),
        }
    }
}

/// A JSON string: its value and its spelling in the source.
struct JsonStr {
    value: String,
    raw: String,
}

/// Reads the grammar's JSON (policy strings and escapes, `#` comments as whitespace) from
/// source text the parser has already accepted. `None` on anything unexpected.
struct JsonReader<'t> {
    s: &'t str,
    pos: usize,
}

impl<'t> JsonReader<'t> {
    fn rest(&self) -> &'t str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn skip(&mut self) {
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { return };
            if is_ws(c) {
                self.pos += c.len_utf8();
            } else if c == '#' {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else {
                return;
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<OJson> {
        self.skip();
        let rest = self.rest();
        let c = rest.chars().next()?;
        Some(match c {
            '{' => {
                self.pos += 1;
                let mut kv = vec![];
                if !self.eat('}') {
                    loop {
                        self.skip();
                        let k = self.string()?;
                        if !self.eat(':') {
                            return None;
                        }
                        kv.push((k, self.value()?));
                        if self.eat('}') {
                            break;
                        }
                        if !self.eat(',') {
                            return None;
                        }
                    }
                }
                OJson::Obj(kv)
            }
            '[' => {
                self.pos += 1;
                let mut items = vec![];
                if !self.eat(']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(']') {
                            break;
                        }
                        if !self.eat(',') {
                            return None;
                        }
                    }
                }
                OJson::Arr(items)
            }
            '"' => OJson::Str(self.string()?),
            't' | 'f' | 'n' => {
                let (word, v) = match c {
                    't' => ("true", OJson::Bool(true)),
                    'f' => ("false", OJson::Bool(false)),
                    _ => ("null", OJson::Null),
                };
                if !rest.starts_with(word) {
                    return None;
                }
                self.pos += word.len();
                v
            }
            '-' | '0'..='9' => {
                let len = rest
                    .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
                    .unwrap_or(rest.len());
                let n = serde_json::from_str::<serde_json::Number>(&rest[..len]).ok()?;
                self.pos += len;
                OJson::Num { value: n, raw: rest[..len].to_string() }
            }
            _ => return None,
        })
    }

    /// A policy string literal at the current position, unescaped.
    fn string(&mut self) -> Option<JsonStr> {
        let rest = self.rest();
        if !rest.starts_with('"') {
            return None;
        }
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let raw = &rest[..=i];
                    self.pos += i + 1;
                    return Some(JsonStr { value: spelled_string(raw)?, raw: raw.to_string() });
                }
                _ => {}
            }
        }
        None
    }
}

/// JSON on one line with `": "` and `", "` separators; strings use the policy's escapes.
fn write_json(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => out.push_str(&n.to_string()),
        J::String(s) => out.push_str(&quote(s)),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        J::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&quote(k));
                out.push_str(": ");
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

// ====================================================================== expressions

/// What the position of a subexpression allows without parentheses.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    /// The loosest binding level allowed: 1 `or`, 2 `and`, 3 comparisons, 4 `exists`, 5 atoms.
    min: u8,
    /// Whether a bare `not ...` may stand here. `not` reads a whole comparison chain to its
    /// right, so it may not be the left operand of a comparison, nor the right one when another
    /// comparison follows.
    not_ok: bool,
    /// Whether a comparison operator follows this subexpression.
    followed_by_cmp: bool,
}

impl Ctx {
    const TOP: Ctx = Ctx { min: 0, not_ok: true, followed_by_cmp: false };
}

fn level(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Not(_) => 0,
        ExprKind::Exists(_) => 4,
        _ => 5,
    }
}

/// An expression in parentheses where the parser needs them, and where the source wrote them
/// (one pair: `((a))` is `(a)`).
fn write_expr(out: &mut String, e: &Expr, ctx: Ctx, src: Src) {
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
fn write_bare(out: &mut String, e: &Expr, ctx: Ctx, src: Src) {
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
    fn parenthesized(self, span: Span) -> bool {
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

    fn lit(self, l: &Lit, span: Span) -> String {
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
fn is_field_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn write_fact(out: &mut String, f: &Fact) {
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
        Fact::Body(segs) => {
            out.push_str("body");
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

// ====================================================================== span erasure

/// A copy of the tree with every span set to `Span::default()`, so that two parses of
/// differently laid out text compare equal when they mean the same.
pub fn strip_spans(file: &File) -> File {
    let mut f = file.clone();
    for item in &mut f.items {
        erase_item(item);
    }
    f
}

fn z(span: &mut Span) {
    *span = Span::default();
}

fn erase_ident(i: &mut Ident) {
    z(&mut i.span);
}

fn erase_str(s: &mut Str) {
    z(&mut s.span);
}

fn erase_q(q: &mut Quantity) {
    z(&mut q.span);
}

fn erase_opt_q(q: &mut Option<Quantity>) {
    if let Some(q) = q {
        erase_q(q);
    }
}

fn erase_opt_str(s: &mut Option<Str>) {
    if let Some(s) = s {
        erase_str(s);
    }
}

fn erase_rate(r: &mut Rate) {
    z(&mut r.span);
}

fn erase_value(v: &mut Value) {
    z(&mut v.span);
    for p in &mut v.parts {
        match p {
            ValuePart::Lit(s) | ValuePart::Env(s) => erase_str(s),
        }
    }
}

fn erase_regex(r: &mut Regex) {
    z(&mut r.span);
}

fn erase_json(j: &mut Json) {
    z(&mut j.span);
}

fn erase_item(item: &mut Item) {
    match item {
        Item::Import(i) => {
            z(&mut i.span);
            erase_str(&mut i.path);
        }
        Item::Gateway(g) => {
            z(&mut g.span);
            for s in &mut g.settings {
                z(&mut s.span);
                erase_setting(&mut s.kind);
            }
        }
        Item::Upstream(u) => {
            z(&mut u.span);
            erase_ident(&mut u.name);
            for s in &mut u.stmts {
                z(&mut s.span);
                erase_upstream_stmt(&mut s.kind);
            }
        }
        Item::Keys(k) => {
            z(&mut k.span);
            erase_ident(&mut k.name);
            erase_str(&mut k.file);
            if let Some(v) = &mut k.salt {
                erase_value(v);
            }
        }
        Item::Tenant(t) => {
            z(&mut t.span);
            erase_ident(&mut t.name);
            for s in &mut t.stmts {
                z(&mut s.span);
                match &mut s.kind {
                    TenantStmtKind::Rate { rate, burst } => {
                        erase_rate(rate);
                        erase_opt_q(burst);
                    }
                    TenantStmtKind::Tokens(r) => erase_rate(r),
                    TenantStmtKind::Concurrent(q) => erase_q(q),
                    TenantStmtKind::Region(r) => erase_str(r),
                }
            }
        }
        Item::Matcher(m) => {
            z(&mut m.span);
            erase_ident(&mut m.name);
            erase_expr(&mut m.expr);
        }
        Item::Route(r) => {
            z(&mut r.span);
            erase_ident(&mut r.name);
            for s in &mut r.stmts {
                z(&mut s.span);
                erase_route_stmt(&mut s.kind);
            }
        }
        Item::Test(t) => {
            z(&mut t.span);
            erase_str(&mut t.name);
            for s in &mut t.stmts {
                z(&mut s.span);
                erase_test_stmt(&mut s.kind);
            }
        }
    }
}

fn erase_setting(k: &mut SettingKind) {
    match k {
        SettingKind::Listen(v) => erase_value(v),
        SettingKind::Admin { addr, token } => {
            erase_value(addr);
            if let Some(t) = token {
                erase_value(t);
            }
        }
        SettingKind::State(StateStore::Local) => {}
        SettingKind::State(StateStore::Redis { url, .. }) => erase_value(url),
        SettingKind::Audit { path, rotate } => {
            erase_value(path);
            erase_opt_q(rotate);
        }
        SettingKind::MaxBody(q)
        | SettingKind::MaxHeaderBytes(q)
        | SettingKind::MaxHeaders(q)
        | SettingKind::HeaderTimeout(q)
        | SettingKind::IdleTimeout(q)
        | SettingKind::DrainTimeout(q) => erase_q(q),
        SettingKind::Tls { cert, key } => {
            erase_value(cert);
            erase_value(key);
        }
        SettingKind::PolicyHeader(_) | SettingKind::Forwarded(_) => {}
    }
}

fn erase_upstream_stmt(k: &mut UpstreamStmtKind) {
    match k {
        UpstreamStmtKind::Target(t) => {
            erase_value(&mut t.url);
            erase_opt_q(&mut t.weight);
            erase_opt_str(&mut t.region);
        }
        UpstreamStmtKind::Balance(Balance::Hash(e)) => erase_expr(e),
        UpstreamStmtKind::Balance(_) => {}
        UpstreamStmtKind::Header { name, value } => {
            erase_str(name);
            erase_value(value);
        }
        UpstreamStmtKind::Timeout(q) | UpstreamStmtKind::ConnectTimeout(q) | UpstreamStmtKind::MaxConnections(q) => {
            erase_q(q)
        }
        UpstreamStmtKind::Health(h) => {
            erase_str(&mut h.path);
            erase_q(&mut h.every);
            erase_opt_q(&mut h.timeout);
        }
        UpstreamStmtKind::Retry(r) => {
            erase_q(&mut r.attempts);
            for c in &mut r.on {
                match c {
                    RetryCond::ConnectError(s) | RetryCond::Timeout(s) => z(s),
                    RetryCond::Status(q) => erase_q(q),
                }
            }
        }
        UpstreamStmtKind::Affinity(e) => erase_expr(e),
    }
}

fn erase_route_stmt(k: &mut RouteStmtKind) {
    match k {
        RouteStmtKind::When(w) => {
            z(&mut w.methods_span);
            erase_str(&mut w.path);
            erase_opt_str(&mut w.host);
            if let Some(c) = &mut w.cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::Auth(a) => {
            erase_ident(&mut a.keys);
            for c in &mut a.via {
                match c {
                    Credential::Header(s) | Credential::Query(s) => erase_str(s),
                    Credential::Bearer(s) => z(s),
                }
            }
        }
        RouteStmtKind::Allow { cond, status, message } => {
            erase_expr(cond);
            erase_opt_q(status);
            erase_opt_str(message);
        }
        RouteStmtKind::Deny { status, message, cond } => {
            erase_q(status);
            erase_str(message);
            erase_expr(cond);
        }
        RouteStmtKind::Limit(l) => {
            match &mut l.kind {
                LimitKind::Rate { rate, burst } => {
                    erase_rate(rate);
                    erase_opt_q(burst);
                }
                LimitKind::Tokens { rate, estimate } => {
                    erase_rate(rate);
                    erase_opt_q(estimate);
                }
                LimitKind::Concurrent(q) => erase_q(q),
            }
            match &mut l.per {
                LimitKey::Header(s) => erase_str(s),
                LimitKey::Expr(e) => erase_expr(e),
                LimitKey::Route | LimitKey::Key | LimitKey::Tenant | LimitKey::Client => {}
            }
            if let Some(m) = &mut l.model {
                erase_regex(m);
            }
            if let Some(c) = &mut l.cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::SetHeader { name, value } => {
            erase_str(name);
            erase_value(value);
        }
        RouteStmtKind::StripHeaders(names) => names.iter_mut().for_each(erase_str),
        RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) => {
            erase_str(from);
            erase_str(to);
        }
        RouteStmtKind::Rewrite(Rewrite::Path(p)) => erase_str(p),
        RouteStmtKind::Respond { status, body } => {
            erase_q(status);
            match body {
                Some(ResponseBody::Json(j)) => erase_json(j),
                Some(ResponseBody::Text(t)) => erase_str(t),
                None => {}
            }
        }
        RouteStmtKind::Cache { ttl, max } => {
            erase_q(ttl);
            erase_opt_q(max);
        }
        RouteStmtKind::Websocket | RouteStmtKind::AuthNone => {}
        RouteStmtKind::Cors { origins, .. } => origins.iter_mut().for_each(erase_str),
        RouteStmtKind::Jwt { secret, issuer } => {
            erase_value(secret);
            erase_opt_str(issuer);
        }
        RouteStmtKind::Serve(i) | RouteStmtKind::To(i) => erase_ident(i),
    }
}

fn erase_test_stmt(k: &mut TestStmtKind) {
    match k {
        TestStmtKind::Send(s) => {
            erase_str(&mut s.path);
            for (n, v) in &mut s.headers {
                erase_str(n);
                erase_str(v);
            }
            if let Some(b) = &mut s.body {
                erase_json(b);
            }
            erase_opt_str(&mut s.client);
        }
        TestStmtKind::Advance(q) => erase_q(q),
        TestStmtKind::Expect(e) => match e {
            Expectation::Status { status, message } => {
                erase_q(status);
                erase_opt_str(message);
            }
            Expectation::Route(i) | Expectation::Upstream(i) | Expectation::Tenant(i) => erase_ident(i),
        },
    }
}

fn erase_expr(e: &mut Expr) {
    z(&mut e.span);
    match &mut e.kind {
        ExprKind::Lit(Lit::Regex(r)) => erase_regex(r),
        ExprKind::Lit(_) | ExprKind::Fact(_) => {}
        ExprKind::List(items) => items.iter_mut().for_each(erase_expr),
        ExprKind::Ref(i) => erase_ident(i),
        ExprKind::Not(inner) | ExprKind::Exists(inner) => erase_expr(inner),
        ExprKind::Binary { op_span, lhs, rhs, .. } => {
            z(op_span);
            erase_expr(lhs);
            erase_expr(rhs);
        }
        ExprKind::Call { args, .. } => args.iter_mut().for_each(erase_expr),
    }
}
