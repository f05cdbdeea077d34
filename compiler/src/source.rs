//! Source files and spans. A span names its file, so a diagnostic can point into any file
//! of a multi-file policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start: clamp_u32(start), end: clamp_u32(end.max(start)) }
    }

    /// The smallest span covering both (they must be in the same file).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as given or resolved (used to read imports relative to it).
    pub path: PathBuf,
    /// The name shown in diagnostics.
    pub name: String,
    pub text: Arc<str>,
    /// Byte offset where each line starts: positions are found by binary search, so reporting
    /// many diagnostics on a big file stays linear.
    line_starts: Arc<[u32]>,
    /// Every byte is ASCII: a column is then a byte difference, not a count of characters.
    ascii: bool,
}

impl SourceFile {
    pub fn new(path: &Path, name: String, text: Arc<str>) -> SourceFile {
        let line_starts = std::iter::once(0)
            .chain(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| clamp_u32(i + 1)))
            .collect();
        let ascii = text.is_ascii();
        SourceFile { path: path.to_path_buf(), name, text, line_starts, ascii }
    }

    /// 0-based line index of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s as usize <= offset).saturating_sub(1)
    }

    /// Byte range of a 0-based line, without its line break.
    pub fn line_range(&self, line: usize) -> std::ops::Range<usize> {
        let start = self.line_starts.get(line).map_or(self.text.len(), |&s| s as usize);
        let end = self.line_starts.get(line + 1).map_or(self.text.len(), |&s| s as usize - 1);
        let end =
            if self.text.as_bytes().get(end.wrapping_sub(1)) == Some(&b'\r') && end > start { end - 1 } else { end };
        start..end.max(start)
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// Characters between two byte offsets of one line (a byte difference for ASCII files).
    pub fn chars_between(&self, from: usize, to: usize) -> usize {
        if self.ascii {
            to.saturating_sub(from)
        } else {
            self.text.get(from..to).map_or(to.saturating_sub(from), |s| s.chars().count())
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset);
        let line = self.line_of(offset);
        let start = self.line_starts[line] as usize;
        (line + 1, self.chars_between(start, offset) + 1)
    }
}

/// The largest char boundary of `s` at or before `i`.
pub fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Every file read while compiling one policy, indexed by `FileId`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: &Path, name: String, text: Arc<str>) -> FileId {
        let id = FileId(clamp_u32(self.files.len()));
        self.files.push(SourceFile::new(path, name, text));
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(clamp_u32(i)), f))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The text a span covers, or "" if the span is not in a known file.
    pub fn snippet(&self, span: Span) -> &str {
        self.get(span.file).and_then(|f| f.text.get(span.start as usize..span.end as usize)).unwrap_or("")
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: FileId, offset: u32) -> (usize, usize) {
        self.get(file).map_or((0, 0), |f| f.line_col(offset as usize))
    }
}
