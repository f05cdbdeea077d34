//! Header hygiene: hop-by-hop removal (RFC 9110 §7.6.1), request ids, W3C trace context and
//! the `x-forwarded-for` / `forwarded` chain.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;

/// Headers that describe one connection, not the message: never passed on.
/// (Names made once: a `&str` name is parsed again on every lookup.)
const HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Remove hop-by-hop headers and every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(http::header::CONNECTION) {
        remove_connection_named(headers);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn remove_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// The client's `x-request-id` when it is a sane token, else a new random one.
pub fn request_id(headers: &HeaderMap) -> String {
    match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if is_sane_id(id) => id.to_string(),
        _ => random_hex(16),
    }
}

fn is_sane_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `bytes` (at most 32) random bytes as lowercase hex. Made three times per request (request
/// id, trace id, span id), so it fills a stack buffer and encodes by table.
pub fn random_hex(bytes: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut raw = [0u8; 32];
    let raw = &mut raw[..bytes.min(32)];
    rand::thread_rng().fill_bytes(raw);
    let mut text = String::with_capacity(raw.len() * 2);
    for b in raw.iter() {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    text
}

/// An address as text, the way `Display` writes it. IPv4 is written by hand: the formatter
/// machinery costs more than the rest of a request's header work, and it runs up to three
/// times per request (audit, explain, forwarded chain).
pub fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

/// The request's W3C trace: the client's trace id and flags when it sent a valid
/// `traceparent`, else a new trace. Decided once, as the request arrives, so the audit line and
/// the upstream's `traceparent` name the same trace.
#[derive(Debug, Clone)]
pub struct Trace {
    pub id: String,
    flags: String,
}

impl Trace {
    pub fn of(headers: &HeaderMap) -> Trace {
        let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        match incoming {
            Some((id, flags)) => Trace { id: id.to_string(), flags: flags.to_string() },
            None => Trace { id: random_hex(16), flags: "01".to_string() },
        }
    }

    /// The `traceparent` to send upstream: this trace continued with a new span id (this hop).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.id, random_hex(8), self.flags)
    }
}

/// The trace id of a `traceparent` this gateway made (`00-<trace id>-<parent>-<flags>`).
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` → (trace id, flags).
fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let [version, trace, parent, flags] = parts[..] else { return None };
    let hex_of =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex_of(version, 2)
        && version != "ff"
        && hex_of(trace, 32)
        && trace != "0".repeat(32)
        && hex_of(parent, 16)
        && parent != "0".repeat(16)
        && hex_of(flags, 2);
    valid.then_some((trace, flags))
}

/// Apply the policy's `forwarded` mode to the upstream request's headers.
pub fn apply_forwarded(headers: &mut HeaderMap, mode: gw_engine::lang::ForwardedMode, client_ip: &str) {
    use gw_engine::lang::ForwardedMode;
    match mode {
        ForwardedMode::Keep => {}
        ForwardedMode::Strip => {
            headers.remove("x-forwarded-for");
            headers.remove("forwarded");
        }
        ForwardedMode::Append => {
            let chain = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let value = if chain.is_empty() { client_ip.to_string() } else { format!("{chain}, {client_ip}") };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert("x-forwarded-for", v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_writes_what_display_writes() {
        let mut cases: Vec<std::net::IpAddr> =
            ["0.0.0.0", "127.0.0.1", "10.0.9.99", "100.200.255.1", "255.255.255.255"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect();
        cases.extend(
            ["::1", "::ffff:10.1.2.3", "2001:db8::8a2e:370:7334"]
                .iter()
                .map(|a| a.parse::<std::net::IpAddr>().unwrap()),
        );
        // Every value of one octet in every position.
        for n in 0..=255u8 {
            cases.push(std::net::Ipv4Addr::new(n, 1, n, 0).into());
            cases.push(std::net::Ipv4Addr::new(9, n, 99, n).into());
        }
        for ip in cases {
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn random_hex_is_lowercase_hex_of_the_asked_length_and_differs() {
        for bytes in [1, 8, 16, 32] {
            let a = random_hex(bytes);
            assert_eq!(a.len(), bytes * 2);
            assert!(a.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{a}");
        }
        assert_ne!(random_hex(16), random_hex(16));
        // The table covers every nibble: over many draws all 16 digits appear.
        let seen: std::collections::BTreeSet<char> =
            (0..64).flat_map(|_| random_hex(16).chars().collect::<Vec<_>>()).collect();
        assert_eq!(seen.len(), 16);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["content-type"]);
    }

    #[test]
    fn traceparent_is_continued_or_started() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let t = Trace::of(&h).traceparent();
        assert!(t.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{t}");
        assert!(!t.contains("00f067aa0ba902b7"));
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        let fresh = Trace::of(&h).traceparent();
        assert_eq!(fresh.len(), 55);
        assert!(parse_traceparent(&fresh).is_some());
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("bad id with spaces"));
        assert_eq!(request_id(&h).len(), 32);
    }
}
