//! The response cache's key and bypass rules, shared by `gw serve` and gw-check's test
//! runner so a `test` block predicts hits exactly as the gateway serves them.
//!
//! The key is an exact match on the route, method, path (in normal form), raw query and body,
//! plus the tenant unless the cache is `shared`. A body that is strict JSON (`ijson`) is keyed
//! in canonical form (keys sorted, no whitespace), so `{"a":1,"b":2}` and `{"b": 2, "a": 1}`
//! share an entry; any other body is keyed by its bytes, since two parsers may read it apart.

use sha2::{Digest, Sha256};

/// Why a request does not use the cache at all (it is forwarded, and its answer not stored).
pub fn bypass(headers: &[(String, String)], body: Option<&serde_json::Value>) -> Option<&'static str> {
    let says_no_cache = |name: &str| {
        headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).any(|(_, v)| {
            v.split(',').any(|d| {
                let d = d.trim();
                d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store")
            })
        })
    };
    if says_no_cache("cache-control") || says_no_cache("pragma") {
        return Some("the client asked for no cache");
    }
    // A streamed answer is never stored: keeping it would mean buffering a stream.
    if body.and_then(|b| b.get("stream")).and_then(serde_json::Value::as_bool) == Some(true) {
        return Some("a streamed request");
    }
    None
}

/// The entry a request reads and writes: a SHA-256 over the length-prefixed parts, as hex.
pub fn key(
    route: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    tenant: Option<&str>,
    body: &[u8],
    canonical: Option<&serde_json::Value>,
) -> String {
    let mut h = Sha256::new();
    let mut part = |tag: u8, bytes: &[u8]| {
        h.update([tag]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    part(b'r', route.as_bytes());
    part(b'm', method.as_bytes());
    part(b'p', path.as_bytes());
    if let Some(q) = query {
        part(b'q', q.as_bytes());
    }
    if let Some(t) = tenant {
        part(b't', t.as_bytes());
    }
    match canonical {
        Some(v) => part(b'j', &serde_json::to_vec(v).unwrap_or_default()),
        None if !body.is_empty() => part(b'b', body),
        None => {}
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn json_key(body: &str, tenant: Option<&str>) -> String {
        let v = crate::ijson::read(body.as_bytes()).ok().flatten();
        key("r", "POST", "/v1/x", None, tenant, body.as_bytes(), v.as_ref())
    }

    #[test]
    fn key_order_does_not_matter_but_the_tenant_and_values_do() {
        assert_eq!(json_key(r#"{"a":1,"b":[1,2]}"#, Some("t")), json_key(r#"{ "b": [1, 2], "a": 1 }"#, Some("t")));
        assert_ne!(json_key(r#"{"a":1}"#, Some("t")), json_key(r#"{"a":1}"#, Some("u")));
        assert_ne!(json_key(r#"{"a":1}"#, Some("t")), json_key(r#"{"a":1}"#, None));
        assert_ne!(json_key(r#"{"a":1}"#, None), json_key(r#"{"a":2}"#, None));
        assert_ne!(json_key(r#"{"a":1}"#, None), json_key(r#"{"a":1.0}"#, None));
        // Not strict JSON (a member twice): keyed by its bytes, never merged with another body.
        assert_ne!(json_key(r#"{"a":1,"a":2}"#, None), json_key(r#"{"a":2}"#, None));
        // Parts cannot run into each other.
        assert_ne!(
            key("r", "GET", "/ab", Some("c"), None, b"", None),
            key("r", "GET", "/a", Some("bc"), None, b"", None)
        );
    }

    #[test]
    fn no_cache_and_streams_bypass() {
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(bypass(&h("Cache-Control", "max-age=0, no-cache"), None).is_some());
        assert!(bypass(&h("cache-control", "NO-STORE"), None).is_some());
        assert!(bypass(&h("pragma", "no-cache"), None).is_some());
        assert!(bypass(&h("cache-control", "max-age=60"), None).is_none());
        assert!(bypass(&[], Some(&serde_json::json!({"stream": true}))).is_some());
        assert!(bypass(&[], Some(&serde_json::json!({"stream": false}))).is_none());
    }
}
