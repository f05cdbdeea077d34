//! Stage 1: text → AST. pest's pairs are the concrete tree; this module walks them into the
//! typed `ast`, keeping spans, and turns pest's raw errors into diagnostics that say in words
//! what was expected. The grammar's recovery rules (`bad_stmt`, `stray_item`, `bad_eq`) let one
//! run report many mistakes; each is re-parsed alone here to say precisely what is wrong.

use gw_grammar::pest::iterators::Pair;
use gw_grammar::pest::Parser;
use gw_grammar::{GwpParser, Rule};

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::source::{FileId, Span};

mod build;
mod errors;
mod expr;
mod keywords;
mod literals;

pub use errors::describe;
pub use keywords::KEYWORD_NAMES;
pub use literals::{size_unit, unescape, unit_ns};

/// Deepest nesting of `(`, `[` and `{` accepted; deeper input gets a diagnostic, never a
/// stack overflow.
pub const MAX_DEPTH: usize = 64;
/// Most operands in one expression.
pub const MAX_OPERANDS: usize = 256;

/// A `# comment`, kept for the formatter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub span: Span,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub file: File,
    pub comments: Vec<Comment>,
}

/// Parse one file. Always returns what could be read, plus every diagnostic found.
pub fn parse(file: FileId, text: &str) -> (Parsed, Vec<Diag>) {
    let mut p = Walker { file, text, diags: vec![] };
    if let Some(d) = p.check_depth() {
        return (Parsed::default(), vec![d]);
    }
    let pairs = match GwpParser::parse(Rule::file, text) {
        Ok(pairs) => pairs,
        Err(e) => {
            let d = p.pest_error(e, 0);
            return (Parsed::default(), vec![d]);
        }
    };
    let mut parsed = Parsed::default();
    let mut last_stray_was_reported = false;
    for pair in pairs.clone().flatten() {
        if pair.as_rule() == Rule::COMMENT {
            parsed.comments.push(Comment { span: p.span(&pair), text: pair.as_str().trim_end().to_string() });
        }
    }
    if let Some(top) = pairs.into_iter().next() {
        for pair in inner(top) {
            match pair.as_rule() {
                Rule::EOI => {}
                Rule::stray_item => {
                    if !last_stray_was_reported {
                        p.stray_item(&pair);
                    }
                    last_stray_was_reported = true;
                }
                _ => {
                    last_stray_was_reported = false;
                    if let Some(item) = p.item(pair) {
                        parsed.file.items.push(item);
                    }
                }
            }
        }
    }
    (parsed, p.diags)
}

/// The children of a pair, without comments.
fn inner(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| p.as_rule() != Rule::COMMENT)
}

struct Walker<'t> {
    file: FileId,
    text: &'t str,
    diags: Vec<Diag>,
}

type P<'i> = Pair<'i, Rule>;

impl Walker<'_> {
    /// The pair's span without the whitespace pest's implicit skipping leaves at its end.
    fn span(&self, pair: &P<'_>) -> Span {
        let s = pair.as_span();
        let trimmed = s.as_str().trim_end_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        Span::new(self.file, s.start(), s.start() + trimmed.len())
    }

    fn at(&self, start: usize, end: usize) -> Span {
        Span::new(self.file, start, end)
    }
}

/// Keyword pairs carry no data: skipping them lets statement walkers take arguments by position.
trait RuleExt {
    fn as_rule_name_is_kw(&self) -> bool;
}

impl RuleExt for P<'_> {
    fn as_rule_name_is_kw(&self) -> bool {
        is_keyword_rule(self.as_rule())
    }
}

fn is_keyword_rule(rule: Rule) -> bool {
    // Decided once per rule from its name, not once per pair: this is on every walk. A rule
    // pest does not list in `all_rules` falls back to reading its name.
    static KEYWORD: std::sync::OnceLock<Vec<Option<bool>>> = std::sync::OnceLock::new();
    let by_name = |r: Rule| format!("{r:?}").starts_with("kw_");
    let table = KEYWORD.get_or_init(|| {
        let size = Rule::all_rules().iter().map(|r| *r as usize + 1).max().unwrap_or(0);
        let mut t = vec![None; size];
        for r in Rule::all_rules() {
            if let Some(slot) = t.get_mut(*r as usize) {
                *slot = Some(by_name(*r));
            }
        }
        t
    });
    table.get(rule as usize).copied().flatten().unwrap_or_else(|| by_name(rule))
}
