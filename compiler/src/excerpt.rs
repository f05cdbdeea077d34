//! What a rendered diagnostic shows of the source: the lines around its labels, long lines cut
//! to a window around the labels, from every file a label points into. miette reads this
//! excerpt instead of whole files, so a report costs the size of what it shows (not of the
//! file, nor of the line: a 5 MB one-line file renders like a short one).

use miette::{LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

use crate::diagnostics::Label;
use crate::source::{floor_char_boundary, FileId, SourceFile, Sources};

/// Bytes of a long line shown around its labels.
const WINDOW: usize = 100;
/// Lines shown before and after a label (miette's default).
const CONTEXT: usize = 1;
/// A label spanning more lines than this is drawn on its first line only.
const MAX_LABEL_LINES: usize = 8;
/// Marks where a line was cut.
const CUT: &str = "…";

/// One shown line of the excerpt.
#[derive(Debug)]
struct Shown {
    /// Byte range in the excerpt's text (without the line break).
    start: usize,
    end: usize,
    /// 0-based line in its file.
    line: usize,
    /// 0-based column (characters) in its file of the first shown character after `prefix`.
    col: usize,
    /// Bytes of the cut mark before the shown text.
    prefix: usize,
    /// Bytes of the file shown, from `file_start`.
    file_start: usize,
    file_len: usize,
    /// Contiguous lines of one file form a group; miette never draws across groups.
    group: usize,
}

/// The text miette draws, with labels moved into its coordinates.
#[derive(Debug, Default)]
pub struct Excerpt {
    text: String,
    lines: Vec<Shown>,
    /// Each group's file.
    groups: Vec<(FileId, String)>,
}

/// A label whose position cannot be drawn (its file is unknown, or it lies outside the window
/// of a long line): shown as a line of text instead.
pub struct Unplaced {
    pub at: String,
    pub text: String,
}

impl Excerpt {
    /// Build the excerpt for `labels` (primary file first) and their miette labels.
    pub fn build(labels: &[Label], sources: &Sources) -> (Excerpt, Vec<LabeledSpan>, Vec<Unplaced>) {
        let mut ex = Excerpt::default();
        let mut unplaced = vec![];
        // Each label's file and clipped byte range.
        let mut placed: Vec<(&Label, FileId, usize, usize)> = vec![];
        for l in labels {
            let Some(f) = sources.get(l.span.file) else {
                unplaced.push(Unplaced { at: "?".into(), text: l.text.clone() });
                continue;
            };
            // A position in a line break (a CRLF's `\n`) is drawn at the end of its line.
            let in_line = |o: usize| o.min(f.line_range(f.line_of(o)).end);
            let start = in_line(floor_char_boundary(&f.text, l.span.start as usize));
            let mut end = in_line(floor_char_boundary(&f.text, (l.span.end as usize).max(start))).max(start);
            let first = f.line_of(start);
            if f.line_of(end.saturating_sub(1).max(start)) > first + MAX_LABEL_LINES {
                end = f.line_range(first).end.max(start);
            }
            // A label longer than the window is drawn over its start.
            if end - start > WINDOW && f.line_of(end) == first {
                end = floor_char_boundary(&f.text, start + WINDOW / 2);
            }
            placed.push((l, l.span.file, start, end));
        }
        // The primary label's file first: its lines come first in the report.
        let mut files: Vec<FileId> = placed.iter().filter(|p| p.0.primary).map(|p| p.1).take(1).collect();
        for (_, file, _, _) in &placed {
            if !files.contains(file) {
                files.push(*file);
            }
        }
        for file in files {
            let Some(f) = sources.get(file) else { continue };
            let points: Vec<(usize, bool)> = placed
                .iter()
                .filter(|p| p.1 == file)
                .flat_map(|(l, _, s, e)| [(*s, l.primary), (*e, l.primary)])
                .collect();
            let mut ranges: Vec<(usize, usize)> = placed
                .iter()
                .filter(|p| p.1 == file)
                .map(|(_, _, s, e)| {
                    let (a, b) = (f.line_of(*s), f.line_of(*e));
                    (a.saturating_sub(CONTEXT), (b + CONTEXT).min(f.line_count() - 1))
                })
                .collect();
            ranges.sort_unstable();
            let mut merged: Vec<(usize, usize)> = vec![];
            for (a, b) in ranges {
                match merged.last_mut() {
                    Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            for (a, b) in merged {
                let group = ex.groups.len();
                ex.groups.push((file, f.name.clone()));
                for line in a..=b {
                    ex.push_line(f, line, group, &points);
                }
            }
        }
        let mut spans = vec![];
        for (l, file, start, end) in placed {
            let Some(f) = sources.get(file) else { continue };
            match (ex.map(f, file, start), ex.map(f, file, end)) {
                (Some(s), Some(e)) => {
                    let span = SourceSpan::new(s.into(), e.saturating_sub(s));
                    spans.push(if l.primary {
                        LabeledSpan::new_primary_with_span(Some(l.text.clone()), span)
                    } else {
                        LabeledSpan::new_with_span(Some(l.text.clone()), span)
                    });
                }
                _ => {
                    let (line, col) = f.line_col(start);
                    unplaced.push(Unplaced { at: format!("{}:{line}:{col}", f.name), text: l.text.clone() });
                }
            }
        }
        (ex, spans, unplaced)
    }

    /// Append one line of `f`, cut to a window around the label points on it when long.
    fn push_line(&mut self, f: &SourceFile, line: usize, group: usize, points: &[(usize, bool)]) {
        let range = f.line_range(line);
        let (mut from, mut to) = (range.start, range.end);
        if to - from > WINDOW {
            let here: Vec<(usize, bool)> =
                points.iter().copied().filter(|(p, _)| range.start <= *p && *p <= range.end).collect();
            let anchor = here.iter().find(|(_, primary)| *primary).or(here.first()).map(|(p, _)| *p);
            let (lo, hi) = match anchor {
                Some(anchor) => {
                    let near: Vec<usize> =
                        here.iter().map(|(p, _)| *p).filter(|p| p.abs_diff(anchor) <= WINDOW).collect();
                    let (min, max) = (near.iter().min().copied(), near.iter().max().copied());
                    let (min, max) = (min.unwrap_or(anchor), max.unwrap_or(anchor));
                    let lo = min.saturating_sub(WINDOW / 3).max(range.start);
                    (lo, (max + WINDOW / 3).max(lo + WINDOW).min(range.end))
                }
                None => (range.start, range.start + WINDOW),
            };
            from = floor_char_boundary(&f.text, lo);
            to = floor_char_boundary(&f.text, hi);
        }
        let prefix = if from > range.start { CUT } else { "" };
        let start = self.text.len();
        self.text.push_str(prefix);
        self.text.push_str(&f.text[from..to]);
        if to < range.end {
            self.text.push_str(CUT);
        }
        let end = self.text.len();
        self.text.push('\n');
        let col = f.chars_between(range.start, from);
        self.lines.push(Shown {
            start,
            end,
            line,
            col,
            prefix: prefix.len(),
            file_start: from,
            file_len: to - from,
            group,
        });
    }

    /// Where a byte of `f` is in the excerpt, if shown.
    fn map(&self, f: &SourceFile, file: FileId, offset: usize) -> Option<usize> {
        let line = f.line_of(offset);
        self.lines.iter().find_map(|s| {
            (s.line == line
                && self.groups[s.group].0 == file
                && s.file_start <= offset
                && offset <= s.file_start + s.file_len)
                .then(|| s.start + s.prefix + (offset - s.file_start))
        })
    }

    /// Index of the shown line holding excerpt byte `offset`.
    fn line_at(&self, offset: usize) -> usize {
        self.lines.partition_point(|s| s.start <= offset).saturating_sub(1)
    }
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        if self.lines.is_empty() || span.offset() > self.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        let i = self.line_at(span.offset());
        let j = self.line_at(span.offset() + span.len().saturating_sub(1));
        let group = self.lines[i].group;
        // The span's end, exclusive, must not reach into another group either (miette merges
        // neighbouring labels into one span that may end at the next group's first byte).
        let reaches = self.lines[self.line_at(span.offset() + span.len())].group;
        if self.lines[j].group != group || reaches != group {
            return Err(MietteError::OutOfBounds);
        }
        let mut first = i;
        while first > 0 && i - first < before && self.lines[first - 1].group == group {
            first -= 1;
        }
        let mut last = j;
        while last + 1 < self.lines.len() && last - j < after && self.lines[last + 1].group == group {
            last += 1;
        }
        let start = if before == 0 { span.offset() } else { self.lines[first].start };
        let end = (self.lines[last].end + 1).min(self.text.len()).max(start);
        let s = &self.lines[i];
        let column = if before == 0 {
            let from = (s.start + s.prefix).min(span.offset());
            s.col + self.text.get(from..span.offset()).map_or(0, |t| t.chars().count())
        } else {
            0
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.groups[group].1.clone(),
            &self.text.as_bytes()[start..end],
            SourceSpan::new(start.into(), end - start),
            self.lines[first].line,
            column,
            last - first + 1,
        )))
    }
}
