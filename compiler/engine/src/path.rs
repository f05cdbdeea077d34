//! The request path every reader agrees on. Routes are matched, guards read and the upstream
//! receives one normal form, so `/%61dmin` cannot miss `when GET "/admin"` and reach a wider
//! route while the upstream's framework decodes it to `/admin`. Shared by `gw serve` and the
//! `test` blocks of `gw-check`, so both answer a path the same way.

use std::borrow::Cow;

/// Why a path is refused (400 `invalid_path`).
pub const NOT_NORMAL: &str = "the request path is not in normal form";

/// The path in normal form, or `Err(NOT_NORMAL)` for a path another server could read
/// differently. Refused: no leading `/`; a backslash; `.` or `..` segments, raw or encoded;
/// an encoded `/`, `\` or NUL; a `%` not followed by two hex digits. Normalised (RFC 3986
/// §6.2.2): an escape of a character that may stand unescaped in a path (letters, digits,
/// `-._~`, `!$&'()*+,;=`, `:`, `@`) is decoded, as every framework decodes it; any other escape
/// (a space, `?`, `#`, `%`, non-ASCII bytes...) is kept, with upper-case hex.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if !path.starts_with('/') || path.contains('\\') {
        return Err(NOT_NORMAL);
    }
    let normal = if path.contains('%') { Cow::Owned(decode_unreserved(path)?) } else { Cow::Borrowed(path) };
    if normal.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(NOT_NORMAL);
    }
    Ok(normal)
}

fn decode_unreserved(path: &str) -> Result<String, &'static str> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let byte = match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (Some(h), Some(l)) => h << 4 | l,
            _ => return Err(NOT_NORMAL),
        };
        match byte {
            // An encoded separator, dot (a `.`/`..` segment in disguise), backslash or NUL.
            b'/' | b'.' | b'\\' | 0 => return Err(NOT_NORMAL),
            b if may_stand_unescaped(b) => out.push(char::from(b)),
            b => out.push_str(&format!("%{b:02X}")),
        }
        i += 3;
    }
    Ok(out)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// RFC 3986 `pchar` without `%`: unreserved, sub-delims, `:` and `@`.
fn may_stand_unescaped(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_of_plain_characters_are_decoded_and_others_kept() {
        assert_eq!(normalize("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(normalize("/v1/models/gpt-4%3Alatest").as_deref(), Ok("/v1/models/gpt-4:latest"));
        assert_eq!(normalize("/a%7eb%2Bc").as_deref(), Ok("/a~b+c"));
        assert_eq!(normalize("/a%20b/%c3%a9").as_deref(), Ok("/a%20b/%C3%A9"));
        assert_eq!(normalize("/a%3fb%25").as_deref(), Ok("/a%3Fb%25"));
        assert!(matches!(normalize("/v1/chat/completions"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn paths_another_server_could_read_differently_are_refused() {
        for bad in [
            "",
            "v1",
            "/a\\b",
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E/b",
            "/%2e%2E",
            "/a%2fb",
            "/a%5Cb",
            "/a%00",
            "/a%",
            "/a%4",
            "/a%zz",
            "/a%+1",
            "/.%2e/x",
        ] {
            assert_eq!(normalize(bad), Err(NOT_NORMAL), "{bad:?}");
        }
        // An encoded dot is refused wherever it stands; a raw one in a name is fine.
        assert_eq!(normalize("/v1/a.b/%2Ec"), Err(NOT_NORMAL));
        assert_eq!(normalize("/v1/a.b/..c").as_deref(), Ok("/v1/a.b/..c"));
    }
}
