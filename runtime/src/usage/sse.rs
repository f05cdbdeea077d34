//! The server-sent-events side of the usage tap: events parsed incrementally, usage and
//! deltas read from their data, and (in strip mode) the usage-only event removed.

use bytes::{Bytes, BytesMut};
use gw_engine::tokens::Meter;
use serde_json::Value;

use super::Accounting;

/// Incremental server-sent-events reader; in strip mode also the byte bookkeeping that removes
/// usage-only events. A "segment" is the bytes from the end of the previous blank line through
/// the end of the next one: one event with its terminating blank line (or a lone blank line).
#[derive(Debug, Default)]
pub(super) struct Sse {
    /// The current line, without its terminator.
    line: Vec<u8>,
    /// The current line outgrew the bound: its content is dropped.
    line_over: bool,
    /// No line has ended yet (a leading BOM is skipped).
    first_line: bool,
    /// The last byte was a `\r` ending a line (a `\n` right after it belongs to the same end).
    cr: bool,
    /// The current event's data (its `data:` lines joined by `\n`).
    data: Vec<u8>,
    has_data: bool,
    /// The current event's data outgrew the bound: it is not read.
    event_over: bool,
    /// Strip mode: the bytes of the unfinished segment from earlier chunks, not yet forwarded.
    held: Vec<u8>,
    /// Strip mode: the unfinished segment outgrew the bound and is forwarded as it comes.
    passthrough: bool,
    /// A segment ended on `\r`: whether to keep it, decided once the next byte is known.
    close_pending: Option<bool>,
}

/// The output of one chunk in strip mode: ranges of the chunk and held bytes, in order.
struct Out<'a> {
    chunk: &'a Bytes,
    pieces: Vec<Piece>,
}

enum Piece {
    Held(Vec<u8>),
    Range(usize, usize),
}

impl Out<'_> {
    fn range(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        if let Some(Piece::Range(_, last_end)) = self.pieces.last_mut() {
            if *last_end == start {
                *last_end = end;
                return;
            }
        }
        self.pieces.push(Piece::Range(start, end));
    }

    fn held(&mut self, held: Vec<u8>) {
        if !held.is_empty() {
            self.pieces.push(Piece::Held(held));
        }
    }

    fn into_bytes(self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [Piece::Range(a, b)] => self.chunk.slice(*a..*b),
            pieces => {
                let mut buf = BytesMut::new();
                for p in pieces {
                    match p {
                        Piece::Held(h) => buf.extend_from_slice(h),
                        Piece::Range(a, b) => buf.extend_from_slice(&self.chunk[*a..*b]),
                    }
                }
                buf.freeze()
            }
        }
    }
}

/// Per-chunk settings of the reader.
#[derive(Clone, Copy)]
pub(super) struct SseCtx {
    pub(super) enc: Meter,
    pub(super) strip: bool,
    pub(super) max: usize,
}

impl Sse {
    pub(super) fn new() -> Sse {
        Sse { first_line: true, ..Sse::default() }
    }

    fn push_line(&mut self, bytes: &[u8], max: usize) {
        if self.line_over || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > max {
            self.line_over = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// A line ended. Returns `Some(keep)` when it was blank (a segment ends), `keep` false only
    /// for a usage-only event in strip mode.
    fn end_line(&mut self, acc: &mut Accounting, ctx: SseCtx) -> Option<bool> {
        let mut line = std::mem::take(&mut self.line);
        let over = std::mem::replace(&mut self.line_over, false);
        if std::mem::replace(&mut self.first_line, false) && line.starts_with(b"\xEF\xBB\xBF") {
            line.drain(..3);
        }
        if over {
            // Too long to read: if it was data, the event cannot be read either.
            self.event_over = true;
            return None;
        }
        if line.is_empty() {
            let usage_only = self.dispatch(acc, ctx);
            self.line = line;
            self.line.clear();
            return Some(!(ctx.strip && usage_only));
        }
        if line.first() != Some(&b':') {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => {
                    let value = &line[i + 1..];
                    (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (&line[..], &[][..]),
            };
            if field == b"data" && !self.event_over {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.has_data = true;
                if self.data.len() + value.len() > ctx.max {
                    self.event_over = true;
                    self.data = Vec::new();
                } else {
                    self.data.extend_from_slice(value);
                }
            }
        }
        // Reuse the allocation.
        line.clear();
        self.line = line;
        None
    }

    /// The event is complete: read it. Returns whether it is a usage-only chunk.
    fn dispatch(&mut self, acc: &mut Accounting, ctx: SseCtx) -> bool {
        let readable = self.has_data && !self.event_over;
        self.has_data = false;
        self.event_over = false;
        let data = std::mem::take(&mut self.data);
        let mut usage_only = false;
        if readable {
            let text = data.trim_ascii();
            // Every delta passes here: the search must cost next to nothing (SIMD, not a
            // comparison at every byte).
            if text != b"[DONE]" && memchr::memmem::find(text, b"\"usage\"").is_none() {
                acc.defer(text, ctx.enc);
            } else if text != b"[DONE]" {
                if let Ok(v) = serde_json::from_slice::<Value>(text) {
                    acc.read_usage(&v);
                    acc.add_deltas(&v, ctx.enc);
                    usage_only = v.get("usage").is_some_and(Value::is_object)
                        && v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                }
            }
        }
        self.data = data;
        self.data.clear();
        usage_only
    }

    /// A segment ends at `end` in the chunk.
    fn close_segment(&mut self, out: &mut Out<'_>, emit_from: &mut usize, end: usize, keep: bool) {
        if self.passthrough || keep {
            out.held(std::mem::take(&mut self.held));
            out.range(*emit_from, end);
        } else {
            self.held.clear();
        }
        self.passthrough = false;
        *emit_from = end;
    }

    /// Read one chunk; in strip mode return what to forward (else the chunk itself).
    pub(super) fn feed(&mut self, chunk: Bytes, acc: &mut Accounting, ctx: SseCtx) -> Bytes {
        let buf = &chunk[..];
        let mut out = Out { chunk: &chunk, pieces: Vec::new() };
        let mut emit_from = 0;
        let mut i = 0;
        while i < buf.len() {
            if std::mem::replace(&mut self.cr, false) {
                let lf = buf[i] == b'\n';
                if lf {
                    i += 1;
                }
                if let Some(keep) = self.close_pending.take() {
                    self.close_segment(&mut out, &mut emit_from, i, keep);
                }
                if lf {
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', &buf[i..]) {
                None => {
                    self.push_line(&buf[i..], ctx.max);
                    i = buf.len();
                }
                Some(p) => {
                    self.push_line(&buf[i..i + p], ctx.max);
                    let cr = buf[i + p] == b'\r';
                    i += p + 1;
                    match self.end_line(acc, ctx) {
                        Some(keep) if ctx.strip && cr => self.close_pending = Some(keep),
                        Some(keep) if ctx.strip => self.close_segment(&mut out, &mut emit_from, i, keep),
                        _ => {}
                    }
                    self.cr = cr;
                }
            }
        }
        if !ctx.strip {
            return chunk.clone();
        }
        if self.passthrough {
            out.range(emit_from, buf.len());
        } else {
            self.held.extend_from_slice(&buf[emit_from..]);
            if self.held.len() > ctx.max {
                // Too large to hold back: forward it and never strip it.
                out.held(std::mem::take(&mut self.held));
                self.passthrough = true;
            }
        }
        out.into_bytes()
    }

    /// The body ended cleanly: read a last event that lacks its blank line, and return the
    /// bytes still held (strip mode), unless they are a usage-only event.
    pub(super) fn eof(&mut self, acc: &mut Accounting, ctx: SseCtx) -> Bytes {
        let empty = Bytes::new();
        let mut out = Out { chunk: &empty, pieces: Vec::new() };
        let mut emit_from = 0;
        self.cr = false;
        if let Some(keep) = self.close_pending.take() {
            self.close_segment(&mut out, &mut emit_from, 0, keep);
        }
        if !self.line.is_empty() || self.line_over {
            self.end_line(acc, ctx);
        }
        let mut keep = true;
        if self.has_data || self.event_over {
            keep = !(self.dispatch(acc, ctx) && ctx.strip);
        }
        if ctx.strip {
            self.close_segment(&mut out, &mut emit_from, 0, keep);
        }
        out.into_bytes()
    }
}
