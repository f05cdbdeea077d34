//! Literal spellings: the source's own spelling kept when it reads back to the same value,
//! else the canonical one (durations, sizes, rates, strings, regexes).

use crate::syntax::{self};

use super::*;

/// Splits `123abc` into `123` and `abc`.
pub(super) fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

pub(super) fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The value of a spelled whole number (`-`, digits and `_`), as the grammar's `int`.
pub(super) fn spelled_int(s: &str) -> Option<i64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    if !body.starts_with(|c: char| c.is_ascii_digit()) || !body.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    s.replace('_', "").parse().ok()
}

pub(super) fn spelled_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.')?;
    digits(int)?;
    digits(frac)?;
    s.parse().ok()
}

pub(super) fn spelled_duration(s: &str) -> Option<u64> {
    let (n, unit) = split_digits(s);
    digits(n)?.checked_mul(syntax::unit_ns(unit)?)
}

pub(super) fn spelled_size(s: &str) -> Option<u64> {
    let (n, unit) = split_digits(s);
    digits(n)?.checked_mul(syntax::size_unit(unit)?)
}

/// `(count, window in ns)` of a spelled rate such as `100k/min` or `10/30s`.
pub(super) fn spelled_rate(s: &str) -> Option<(u64, u64)> {
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
    Some((digits(n)?.checked_mul(mul)?, times.checked_mul(syntax::unit_ns(unit)?)?))
}

/// The value of a spelled string literal, if it is one the grammar reads.
pub(super) fn spelled_string(s: &str) -> Option<String> {
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
pub(super) fn spelled_regex(s: &str) -> Option<(String, bool)> {
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

pub(super) fn regex(r: &Regex) -> String {
    format!("/{}/{}", r.pattern.replace('/', "\\/"), if r.case_insensitive { "i" } else { "" })
}

pub(super) fn status_code(n: u64) -> String {
    format!("{n:03}")
}

pub(super) const MS: u64 = 1_000_000;
pub(super) const SEC: u64 = 1_000 * MS;
pub(super) const MIN: u64 = 60 * SEC;
pub(super) const HOUR: u64 = 60 * MIN;
pub(super) const DAY: u64 = 24 * HOUR;

/// The largest unit of `units` (largest first) that divides `n`, as (count, unit).
pub(super) fn largest_unit(n: u64, units: &[(&'static str, u64)]) -> Option<(u64, &'static str)> {
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
