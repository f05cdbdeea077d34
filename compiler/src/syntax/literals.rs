//! Leaves: names, strings and their escapes, regexes, JSON, numbers, quantities and units.

use gw_grammar::Rule;

use crate::diagnostics::{Code, Diag};
use crate::source::Span;

use super::*;

impl Walker<'_> {
    pub(super) fn ident(&self, pair: P<'_>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    pub(super) fn string(&mut self, pair: P<'_>) -> Str {
        let span = self.span(&pair);
        let raw = pair.as_str();
        let body = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(raw);
        let body_start = pair.as_span().start() + usize::from(raw.starts_with('"'));
        self.bad_escapes(body, body_start);
        Str { value: unescape(body), span }
    }

    /// Report every escape the language does not have (`\q`, `\u{110000}`), at the escape.
    pub(super) fn bad_escapes(&mut self, body: &str, body_start: usize) {
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                continue;
            }
            let Some((j, next)) = chars.next() else { continue };
            let end = match next {
                '"' | '\\' | 'n' | 't' | 'r' | '0' => continue,
                'u' => {
                    let rest = &body[j + 1..];
                    let close = rest.find('}').filter(|_| rest.starts_with('{'));
                    let code = close.and_then(|c| u32::from_str_radix(&rest[1..c], 16).ok());
                    if code.and_then(char::from_u32).is_some() {
                        continue;
                    }
                    j + 1 + close.map_or(0, |c| c + 1)
                }
                other => j + other.len_utf8(),
            };
            let escape = &body[i..end];
            self.diags.push(
                Diag::error(Code::SyntaxEscape, format!("unknown escape `{escape}` in a string"))
                    .primary(self.at(body_start + i, body_start + end), "not an escape gw knows")
                    .help(
                        "a string knows \\\" \\\\ \\n \\t \\r \\0 and \\u{hex}; write a backslash as \\\\ (in a \
                         regex, written /like\\sthis/, any escape goes)",
                    ),
            );
        }
    }

    pub(super) fn lower_string(&mut self, pair: P<'_>) -> Str {
        let mut s = self.string(pair);
        s.value = s.value.to_ascii_lowercase();
        s
    }

    pub(super) fn header_name(&mut self, pair: P<'_>) -> Str {
        let p = if pair.as_rule() == Rule::header_name { inner(pair).next() } else { Some(pair) };
        match p {
            Some(p) => self.lower_string(p),
            None => Str { value: String::new(), span: Span::default() },
        }
    }

    pub(super) fn value(&mut self, pair: P<'_>) -> Value {
        let span = self.span(&pair);
        let mut parts = vec![];
        for p in inner(pair) {
            match p.as_rule() {
                Rule::env_call => {
                    if let Some(s) = inner(p).find(|p| p.as_rule() == Rule::string) {
                        parts.push(ValuePart::Env(self.string(s)));
                    }
                }
                Rule::string => parts.push(ValuePart::Lit(self.string(p))),
                Rule::kw_request_id => parts.push(ValuePart::Gateway(GatewayFact::RequestId, self.span(&p))),
                Rule::kw_trace_id => parts.push(ValuePart::Gateway(GatewayFact::TraceId, self.span(&p))),
                Rule::fact => {
                    let span = self.span(&p);
                    if let Some(f) = self.fact(p) {
                        parts.push(ValuePart::Fact(f, span));
                    }
                }
                _ => {}
            }
        }
        Value { parts, span }
    }

    pub(super) fn regex(&self, pair: P<'_>) -> Regex {
        let span = self.span(&pair);
        let mut pattern = String::new();
        let mut flags = "";
        for p in inner(pair) {
            match p.as_rule() {
                Rule::regex_inner => pattern = p.as_str().replace("\\/", "/"),
                Rule::regex_flags => flags = p.as_str(),
                _ => {}
            }
        }
        Regex { pattern, case_insensitive: flags.contains('i'), span }
    }

    pub(super) fn json(&mut self, pair: P<'_>) -> Option<Json> {
        let span = self.span(&pair);
        let value = self.json_value(pair)?;
        Some(Json { value, span })
    }

    /// A `respond` body's JSON, whose values may be templates.
    pub(super) fn json_template(&mut self, pair: P<'_>) -> Option<JsonT> {
        let p = if pair.as_rule() == Rule::json_template { inner(pair).next()? } else { pair };
        Some(match p.as_rule() {
            Rule::jt_object => {
                let mut kv = vec![];
                for pair in inner(p) {
                    let mut it = inner(pair);
                    let k = self.string(it.next()?);
                    kv.push((k, self.json_template(it.next()?)?));
                }
                JsonT::Object(kv)
            }
            Rule::jt_array => {
                let mut items = vec![];
                for v in inner(p) {
                    items.push(self.json_template(v)?);
                }
                JsonT::Array(items)
            }
            Rule::template => JsonT::Text(self.value(p)),
            _ => JsonT::Scalar(self.json_value(p)?),
        })
    }

    pub(super) fn json_value(&mut self, pair: P<'_>) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        let p = if pair.as_rule() == Rule::json_value { inner(pair).next()? } else { pair };
        Some(match p.as_rule() {
            Rule::json_object => {
                let mut map = serde_json::Map::new();
                for kv in inner(p) {
                    let mut it = inner(kv);
                    let k = self.string(it.next()?).value;
                    let v = self.json_value(it.next()?)?;
                    map.insert(k, v);
                }
                J::Object(map)
            }
            Rule::json_array => {
                let mut items = vec![];
                for v in inner(p) {
                    items.push(self.json_value(v)?);
                }
                J::Array(items)
            }
            Rule::string => J::String(self.string(p).value),
            Rule::json_number => match serde_json::from_str::<serde_json::Number>(p.as_str()) {
                Ok(n) => J::Number(n),
                Err(_) => {
                    self.number_error(self.span(&p));
                    return None;
                }
            },
            Rule::json_true => J::Bool(true),
            Rule::json_false => J::Bool(false),
            _ => J::Null,
        })
    }

    pub(super) fn number_error(&mut self, span: Span) {
        self.diags.push(
            Diag::error(Code::SyntaxNumber, "number out of range")
                .primary(span, "this number does not fit")
                .help(format!("numbers must lie between 0 and {}", i64::MAX)),
        );
    }

    /// A whole number that must not be negative (weights, counts, statuses).
    pub(super) fn uint(&mut self, pair: P<'_>) -> Option<Quantity> {
        let span = self.span(&pair);
        match parse_int(pair.as_str()) {
            Some(n) if n >= 0 => Some(Quantity { value: n as u64, span }),
            Some(_) => {
                self.diags.push(
                    Diag::error(Code::OutOfRange, "negative number")
                        .primary(span, "must not be negative")
                        .help("use a number of 1 or more"),
                );
                None
            }
            None => {
                self.number_error(span);
                None
            }
        }
    }

    pub(super) fn unit_number(&mut self, pair: &P<'_>) -> Option<(u64, String)> {
        let span = self.span(pair);
        let mut n = None;
        let mut unit = String::new();
        for p in inner(pair.clone()) {
            match p.as_rule() {
                Rule::number => n = p.as_str().parse::<u64>().ok(),
                _ => unit = p.as_str().to_string(),
            }
        }
        match n {
            Some(n) => Some((n, unit)),
            None => {
                self.number_error(span);
                None
            }
        }
    }

    pub(super) fn scaled(&mut self, span: Span, n: u64, mul: u64, what: &str) -> Option<Quantity> {
        match n.checked_mul(mul) {
            Some(v) => Some(Quantity { value: v, span }),
            None => {
                self.diags.push(
                    Diag::error(Code::SyntaxNumber, format!("{what} too large"))
                        .primary(span, format!("this {what} overflows"))
                        .help(format!("a {what} must fit in 64 bits in its base unit")),
                );
                None
            }
        }
    }

    pub(super) fn duration(&mut self, pair: P<'_>) -> Option<Quantity> {
        let span = self.span(&pair);
        let (n, unit) = self.unit_number(&pair)?;
        self.scaled(span, n, unit_ns(&unit).unwrap_or(1), "duration")
    }

    pub(super) fn size(&mut self, pair: P<'_>) -> Option<Quantity> {
        let span = self.span(&pair);
        let (n, unit) = self.unit_number(&pair)?;
        // The grammar admits only the units below (and `B`).
        self.scaled(span, n, size_unit(&unit).unwrap_or(1), "size")
    }

    pub(super) fn rate(&mut self, pair: P<'_>) -> Option<Rate> {
        let span = self.span(&pair);
        let mut n = None;
        let mut mul = 1u64;
        let mut window = String::new();
        for p in inner(pair) {
            match p.as_rule() {
                Rule::number => n = p.as_str().parse::<u64>().ok(),
                Rule::count_suffix => mul = if p.as_str() == "k" { 1_000 } else { 1_000_000 },
                _ => window = p.as_str().to_string(),
            }
        }
        let Some(n) = n else {
            self.number_error(span);
            return None;
        };
        let count = self.scaled(span, n, mul, "rate")?.value;
        let digits: String = window.chars().take_while(|c| c.is_ascii_digit()).collect();
        let unit = &window[digits.len()..];
        let times = if digits.is_empty() { 1 } else { digits.parse::<u64>().ok()? };
        let window_ns = self.scaled(span, times, unit_ns(unit).unwrap_or(1), "rate window")?.value;
        Some(Rate { count, window_ns, span })
    }
}

/// Nanoseconds in a duration unit; None for a word that is not one. The one table of units,
/// read by the parser and by the formatter (which re-reads literals as they were written).
pub fn unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    })
}

/// Bytes in a size unit; None for a word that is not one.
pub fn size_unit(unit: &str) -> Option<u64> {
    Some(match unit {
        "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    })
}

pub(super) fn parse_int(s: &str) -> Option<i64> {
    s.replace('_', "").parse::<i64>().ok()
}

/// Undo the escapes the grammar accepts in strings.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}
