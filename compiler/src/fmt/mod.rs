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
//!
//! Modules: `layout` (line breaks, alignment, comments), `stmts` (one statement a line),
//! `expr` (precedence and parentheses), `spellings` (literals as written, or canonical),
//! `json` (JSON in source order), `erase` (span erasure for the self-check).

use std::fmt;

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::source::FileId;
use crate::syntax::{self, Comment};

mod erase;
mod expr;
mod json;
mod layout;
mod spellings;
mod stmts;

pub use erase::strip_spans;
use expr::*;
use json::*;
use layout::*;
use spellings::*;
pub use spellings::{duration, quote, rate, size};
use stmts::*;

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
/// A `respond` body or an expected one, as the formatter prints it.
pub fn body_to_string(b: &ResponseBody) -> String {
    let src = Src("");
    match b {
        ResponseBody::Json(j) => src.json(j),
        ResponseBody::Text(t) => src.value(t),
        ResponseBody::JsonTemplate(j) => {
            let mut s = String::new();
            src.json_template(&mut s, &j.value);
            s
        }
    }
}

pub fn expr_to_string(e: &Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, e, Ctx::TOP, Src(""));
    s
}
