//! The strict body reader: the only way a request body becomes JSON for a decision, used by the
//! decision graph, the reference evaluator and `gw-check` test blocks alike. It accepts only a
//! body every mainstream JSON parser reads the same way (I-JSON, RFC 7493, as the bar), so the
//! facts a guard reads are the facts the upstream reads. serde_json does the tokenizing; a
//! visitor adds the I-JSON rules it does not enforce (duplicate names, number range, depth).

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::request::Request;
use crate::value::{Undecided, UNSUPPORTED_CONTENT_ENCODING};

/// Deepest nesting of arrays and objects a body may have (the top-level object is level 1).
pub const MAX_DEPTH: usize = 64;

/// 2^53 − 1: the largest integer every double-based parser (JavaScript, serde_json's f64,
/// Go's float64) holds exactly. Python reads bigger integers exactly; the others round.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a body was refused: its code and words for the client.
pub type BodyError = Undecided;

/// The body of a request as a decision reads it. A body in a content coding (`gzip`, ...) is
/// one gw cannot read while the upstream may: refused (415) rather than read as something else.
pub fn read_request(req: &Request) -> Result<Option<Value>, BodyError> {
    let Some(body) = &req.body else { return Ok(None) };
    let coded = req.headers.iter().find(|(k, v)| {
        k.eq_ignore_ascii_case("content-encoding") && !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("identity")
    });
    if let Some((_, coding)) = coded {
        if !body.is_empty() {
            return Err(Undecided {
                code: UNSUPPORTED_CONTENT_ENCODING,
                message: format!(
                    "gw does not read a body in content coding `{}` on this route; send it uncompressed",
                    coding.trim()
                ),
            });
        }
    }
    read(body)
}

/// Read a request body: `Ok(None)` for an empty body (every body fact is missing), the JSON
/// object otherwise, or why it is refused.
pub fn read(bytes: &[u8]) -> Result<Option<Value>, BodyError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let refuse = |m: String| Err(Undecided::body(m));
    // Python's json.loads(bytes) detects these encodings and decodes them; we refuse them all.
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return refuse("the body starts with a byte-order mark; send UTF-8 JSON without one".into());
    }
    if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
        return refuse("the body is UTF-16 or UTF-32; send UTF-8 JSON".into());
    }
    if bytes.iter().take(4).any(|b| *b == 0) {
        return refuse("the body looks like UTF-16 or UTF-32 (NUL bytes); send UTF-8 JSON".into());
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return refuse(format!("the body is not valid UTF-8 (at byte {})", e.valid_up_to())),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict { depth: 1 }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Undecided::body(format!("the body is not strict JSON: {e}")))?;
    if !value.is_object() {
        return refuse("the body is not a JSON object".into());
    }
    Ok(Some(value))
}

/// Builds a `Value` while enforcing the I-JSON rules at every level.
struct Strict {
    /// The nesting level of the value being read.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn number<E: de::Error>(n: Number, magnitude_ok: bool, shown: impl std::fmt::Display) -> Result<Value, E> {
    if !magnitude_ok {
        return Err(E::custom(format_args!(
            "the number {shown} is beyond ±(2^53−1), where JSON parsers disagree about its value"
        )));
    }
    Ok(Value::Number(n))
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        number(n.into(), n <= MAX_SAFE_INTEGER, n)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        number(n.into(), n.unsigned_abs() <= MAX_SAFE_INTEGER, n)
    }

    /// Decimals are rounded to the nearest double, as every mainstream parser does (serde_json
    /// with `float_roundtrip`, Python, JavaScript, Go). A double's magnitude above 2^53 − 1 is
    /// refused: it may have been an integer literal that the parsers read differently.
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        match Number::from_f64(f) {
            Some(n) => number(n, f.abs() <= MAX_SAFE_INTEGER as f64, f),
            None => Err(E::custom("a number is not finite")),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.deeper::<A::Error>()?;
        let mut items = vec![];
        while let Some(v) = seq.next_element_seed(Strict { depth })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.deeper::<A::Error>()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // Parsers keep the first or the last; the guard and the upstream could differ.
                return Err(de::Error::custom(format_args!("duplicate member name {}", crate::value::shown(&key))));
            }
            let v = map.next_value_seed(Strict { depth })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

impl Strict {
    /// The level of this container's members, or an error past `MAX_DEPTH`.
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format_args!("the body nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(self.depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &[u8]) -> String {
        match read(body) {
            Err(e) => e.message,
            Ok(v) => panic!("accepted {:?} as {v:?}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn ordinary_bodies_are_read() {
        let v = read(br#" {"model": "gpt-4o", "max_tokens": 9000, "t": 0.7, "n": -3, "s": "\u00e9\ud83d\ude00"} "#)
            .expect("reads")
            .expect("a body");
        assert_eq!(v["max_tokens"], 9000);
        assert_eq!(v["s"], "é😀");
        assert_eq!(read(b"").expect("empty is fine"), None);
        assert!(read(format!("{{\"a\": {MAX_SAFE_INTEGER}, \"b\": -{MAX_SAFE_INTEGER}}}").as_bytes()).is_ok());
    }

    #[test]
    fn every_corner_the_parsers_disagree_on_is_refused() {
        assert!(refused(b"\xEF\xBB\xBF{\"max_tokens\": 9000}").contains("byte-order mark"));
        let utf16: Vec<u8> = "{\"max_tokens\": 9000}".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(refused(&utf16).contains("UTF-16"));
        let utf16be: Vec<u8> = "{\"a\": 1}".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert!(refused(&utf16be).contains("UTF-16"));
        assert!(refused(b"{\"a\": \"\xff\"}").contains("UTF-8"));
        assert!(refused(b"{\"max_tokens\": 9000, \"t\": NaN}").contains("strict JSON"));
        refused(b"{\"t\": Infinity}");
        refused(b"{\"t\": -Infinity}");
        refused(b"{\"t\": 1e400}");
        assert!(refused(b"{\"a\": 1, \"a\": 2}").contains("duplicate member name \"a\""));
        let long = format!("{{\"{k}\": 1, \"{k}\": 2}}", k = "k".repeat(10_000));
        assert!(refused(long.as_bytes()).len() < 200);
        assert!(refused(b"{\"x\": [{\"a\": 1, \"\\u0061\": 2}]}").contains("duplicate"));
        assert!(refused(b"{\"a\": 9007199254740992}").contains("2^53"));
        refused(b"{\"a\": -9007199254740992}");
        refused(b"{\"a\": 100000000000000000000000}");
        refused(b"{\"a\": 1e16}");
        refused(br#"{"a": "\ud800"}"#);
        refused(br#"{"a": "\udc00\ud800"}"#);
        refused(br#"{"\ud800": 1}"#);
        refused(br#"{"a": "\x"}"#);
        refused(b"{\"a\": 1} {\"a\": 2}");
        refused(b"{\"a\": 1}x");
        refused(b"{\"a\": 1}\x0c");
        refused(b"{\"a\": 1,}");
        refused(b"{'a': 1}");
        refused(b"{\"a\": 01}");
        refused(b"   ");
        assert!(refused(b"[1, 2]").contains("not a JSON object"));
        refused(b"\"text\"");
        refused(b"null");
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(refused(deep.as_bytes()).contains("deeper"));
        let ok = format!("{{\"a\": {}1{}}}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(read(ok.as_bytes()).is_ok());
        let very_deep = format!("{{\"a\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        refused(very_deep.as_bytes());
    }

    #[test]
    fn decimals_round_to_the_nearest_double() {
        let v = read(b"{\"a\": 0.1, \"b\": 2.5e-3, \"c\": 1.00000000000000000001, \"d\": -0.0}").unwrap().unwrap();
        assert_eq!(v["a"].as_f64(), Some(0.1));
        assert_eq!(v["b"].as_f64(), Some(0.0025));
        assert_eq!(v["c"].as_f64(), Some(1.0));
        // The classic case a fast, not correctly rounded parser gets wrong by one ulp.
        let v = read(b"{\"a\": 2.2250738585072011e-308, \"b\": 0.30000000000000004}").unwrap().unwrap();
        assert_eq!(v["a"].as_f64(), Some(2.225_073_858_507_201e-308));
        assert_eq!(v["b"].as_f64(), Some(0.1 + 0.2));
    }
}
