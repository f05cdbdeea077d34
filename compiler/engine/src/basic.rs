//! Basic-auth sets: `user:hash` lines of an htpasswd file. Only slow, salted password hashes
//! are accepted (bcrypt `$2a$`/`$2b$`/`$2y$`, SHA-crypt `$5$`/`$6$`); a plain-text password,
//! or a hash that is fast to brute-force (`{SHA}`, `$apr1$`, DES crypt), is refused when the
//! file is read. A password that verified once is remembered (per user, as a SHA-256 digest)
//! so that a client sending it on every request costs one bcrypt, not one per request; a
//! refused (user, password) pair is remembered too (a bounded set of digests), since one
//! decision may ask twice (the route, then the credential check of every candidate).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keys::KeyLineError;

#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// user → digest of the last password that verified.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// Digests of (user, password) pairs that were refused; emptied when it reaches `REFUSED_MAX`.
    refused: Mutex<std::collections::HashSet<[u8; 32]>>,
}

/// How many refused pairs are remembered at most.
const REFUSED_MAX: usize = 4096;

impl PartialEq for Htpasswd {
    fn eq(&self, other: &Self) -> bool {
        self.users == other.users
    }
}

impl Htpasswd {
    /// Read an htpasswd file. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> (Htpasswd, Vec<KeyLineError>) {
        let mut out = Htpasswd::default();
        let mut errors = vec![];
        let mut offset = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += raw.len();
            let line = raw.trim_end_matches(['\n', '\r']);
            let content = line.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let lead = line.len() - line.trim_start().len();
            let err = |reason: &str| KeyLineError {
                line: i + 1,
                start: start + lead,
                end: start + lead + content.len(),
                reason: reason.to_string(),
            };
            let Some((user, hash)) = content.split_once(':') else {
                errors.push(err("expected `user:hash`"));
                continue;
            };
            if user.is_empty() || user.chars().any(char::is_whitespace) {
                errors.push(err("the user name is empty or has a space"));
                continue;
            }
            if let Err(why) = hash_kind(hash) {
                errors.push(err(why));
                continue;
            }
            if out.users.insert(user.to_string(), hash.to_string()).is_some() {
                errors.push(err("this user is listed twice"));
            }
        }
        (out, errors)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether `verify` would answer (user, password) from memory, without a slow hash.
    pub fn remembers(&self, user: &str, password: &str) -> bool {
        let digest = pair_digest(user, password);
        self.verified.lock().is_ok_and(|seen| seen.get(user).is_some_and(|d| bool::from(d.ct_eq(&digest))))
            || self.refused.lock().is_ok_and(|r| r.contains(&digest))
    }

    /// Whether `password` is `user`'s. Unknown users cost a hash check too, so that timing
    /// does not tell which users exist.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let digest = pair_digest(user, password);
        if let Ok(seen) = self.verified.lock() {
            if seen.get(user).is_some_and(|d| bool::from(d.ct_eq(&digest))) {
                return true;
            }
        }
        if self.refused.lock().is_ok_and(|r| r.contains(&digest)) {
            return false;
        }
        let ok = match self.users.get(user) {
            None => {
                let _ = bcrypt::verify(password, DUMMY_BCRYPT);
                false
            }
            Some(hash) => match hash_kind(hash) {
                Ok(Kind::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
                Ok(Kind::Sha256) => sha_crypt::sha256_check(password, hash).is_ok(),
                Ok(Kind::Sha512) => sha_crypt::sha512_check(password, hash).is_ok(),
                Err(_) => false,
            },
        };
        if ok {
            if let Ok(mut seen) = self.verified.lock() {
                seen.insert(user.to_string(), digest);
            }
        } else if let Ok(mut refused) = self.refused.lock() {
            if refused.len() >= REFUSED_MAX {
                refused.clear();
            }
            refused.insert(digest);
        }
        ok
    }
}

/// What the memory of verified and refused pairs keeps of a (user, password) pair.
fn pair_digest(user: &str, password: &str) -> [u8; 32] {
    Sha256::new().chain_update(user).chain_update([0]).chain_update(password).finalize().into()
}

/// A bcrypt hash of a random password, checked for unknown users.
const DUMMY_BCRYPT: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

enum Kind {
    Bcrypt,
    Sha256,
    Sha512,
}

fn hash_kind(hash: &str) -> Result<Kind, &'static str> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        Ok(Kind::Bcrypt)
    } else if hash.starts_with("$5$") {
        Ok(Kind::Sha256)
    } else if hash.starts_with("$6$") {
        Ok(Kind::Sha512)
    } else if hash.starts_with("{SHA}") || hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        Err("a fast, weak hash (SHA-1, MD5): store a bcrypt hash (`htpasswd -B`) or SHA-crypt (`$5$`, `$6$`)")
    } else {
        Err("a plain-text password (or DES crypt): store a bcrypt hash (`htpasswd -B`) or SHA-crypt (`$5$`, `$6$`)")
    }
}

/// The user and password of an `Authorization: Basic` header value, if it is one.
pub fn basic_credential(authorization: &str) -> Option<(String, String)> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = decode_base64(rest.trim())?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Standard base64 with padding, strictly (a credential read two ways is refused).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { val(c)? };
            n = (n << 6) | v;
        }
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_and_weak_hashes_are_refused() {
        let (_, errors) = Htpasswd::parse("alice:secret\nbob:{SHA}abc\ncarol:$apr1$x$y\n");
        assert_eq!(errors.len(), 3);
        assert!(errors[0].reason.contains("plain-text"));
    }

    #[test]
    fn bcrypt_and_sha256_crypt_verify() {
        let h = bcrypt::hash("pw1", 4).unwrap();
        let s = sha_crypt::sha256_simple("pw2", &sha_crypt::Sha256Params::new(1000).unwrap()).unwrap();
        let (set, errors) = Htpasswd::parse(&format!("alice:{h}\nbob:{s}\n"));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(set.verify("alice", "pw1") && set.verify("alice", "pw1"));
        assert!(!set.verify("alice", "pw2") && !set.verify("carol", "pw1"));
        assert!(set.verify("bob", "pw2") && !set.verify("bob", "pw1"));
        assert!(!set.verify("bob", "pw1"), "a refused pair stays refused (remembered)");
        // What was checked is remembered; what was not needs the slow hash.
        assert!(set.remembers("alice", "pw1") && set.remembers("bob", "pw1") && set.remembers("carol", "pw1"));
        assert!(!set.remembers("alice", "pw3") && !set.remembers("dave", "x"));
        // An unknown user costs a real bcrypt check (the dummy hash is a valid one).
        assert_eq!(bcrypt::verify("pw1", DUMMY_BCRYPT).ok(), Some(false));
    }

    #[test]
    fn basic_header_is_read_strictly() {
        assert_eq!(basic_credential("Basic YWxpY2U6cHc="), Some(("alice".into(), "pw".into())));
        assert_eq!(basic_credential("basic YWxpY2U6cHc="), Some(("alice".into(), "pw".into())));
        assert_eq!(basic_credential("Basic YWxpY2U6cHc"), None);
        assert_eq!(basic_credential("Bearer YWxpY2U6cHc="), None);
        assert_eq!(basic_credential("Basic !!!!"), None);
    }
}
