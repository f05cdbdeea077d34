//! JSON as written: an order-keeping reader and writer, so a `respond` body keeps its keys'
//! order and its numbers' spelling.

use super::*;

/// JSON as written, in order (duplicate keys included), strings and numbers with their source
/// spelling (`raw`).
pub(super) enum OJson {
    Obj(Vec<(JsonStr, OJson)>),
    Arr(Vec<OJson>),
    Str(JsonStr),
    Num { value: serde_json::Number, raw: String },
    Bool(bool),
    Null,
}

impl OJson {
    pub(super) fn to_value(&self) -> serde_json::Value {
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

    pub(super) fn write(&self, out: &mut String) {
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
pub(super) struct JsonStr {
    pub(super) value: String,
    pub(super) raw: String,
}

/// Reads the grammar's JSON (policy strings and escapes, `#` comments as whitespace) from
/// source text the parser has already accepted. `None` on anything unexpected.
pub(super) struct JsonReader<'t> {
    pub(super) s: &'t str,
    pub(super) pos: usize,
}

impl<'t> JsonReader<'t> {
    pub(super) fn rest(&self) -> &'t str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(super) fn skip(&mut self) {
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

    pub(super) fn eat(&mut self, c: char) -> bool {
        self.skip();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    pub(super) fn value(&mut self) -> Option<OJson> {
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
    pub(super) fn string(&mut self) -> Option<JsonStr> {
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
pub(super) fn write_json(out: &mut String, v: &serde_json::Value) {
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
