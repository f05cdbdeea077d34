//! Key sets: files of `<sha256-hex> <tenant> <key-name>` lines. Keys are only ever stored as
//! SHA-256 hashes (of salt + key when a salt is given); a presented key is hashed and looked
//! up, and the final comparison is constant-time.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub tenant: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedKeys {
    pub salt: Option<String>,
    by_hash: HashMap<[u8; 32], KeyEntry>,
}

/// A line of a key file that could not be read: 1-based line number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLineError {
    pub line: usize,
    /// Byte range of the offending part within the file.
    pub start: usize,
    pub end: usize,
    pub reason: String,
}

/// The hash under which a key is stored.
pub fn hash_key(salt: Option<&str>, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    if let Some(s) = salt {
        h.update(s.as_bytes());
    }
    h.update(key.as_bytes());
    h.finalize().into()
}

impl LoadedKeys {
    /// Parse a key file. Blank lines and `#` comments are skipped.
    pub fn parse(text: &str, salt: Option<String>) -> (LoadedKeys, Vec<KeyLineError>) {
        let mut keys = LoadedKeys { salt, by_hash: HashMap::new() };
        let mut errors = vec![];
        let mut offset = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let line_start = offset;
            offset += raw.len();
            let line = raw.trim_end_matches(['\n', '\r']);
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let lead = line.len() - line.trim_start().len();
            let start = line_start + lead;
            let err = |reason: String, s: usize, e: usize| KeyLineError { line: i + 1, start: s, end: e, reason };
            let fields: Vec<&str> = content.split_whitespace().collect();
            if fields.len() != 3 {
                errors.push(err(format!("expected 3 fields, found {}", fields.len()), start, start + content.len()));
                continue;
            }
            let hash = fields[0];
            let mut bytes = [0u8; 32];
            if hash.len() != 64 || hex::decode_to_slice(hash, &mut bytes).is_err() {
                errors.push(err(
                    "the first field must be 64 hex digits (a SHA-256 hash)".into(),
                    start,
                    start + hash.len(),
                ));
                continue;
            }
            if keys.by_hash.contains_key(&bytes) {
                errors.push(err("this hash is listed twice".into(), start, start + hash.len()));
                continue;
            }
            keys.by_hash.insert(bytes, KeyEntry { tenant: fields[1].to_string(), name: fields[2].to_string() });
        }
        (keys, errors)
    }

    /// Find the entry for a presented key.
    pub fn lookup(&self, key: &str) -> Option<&KeyEntry> {
        let h = hash_key(self.salt.as_deref(), key);
        let (stored, entry) = self.by_hash.get_key_value(&h)?;
        bool::from(stored.ct_eq(&h)).then_some(entry)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.by_hash.values().map(|e| e.tenant.as_str())
    }

    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.by_hash.values().map(|e| e.name.as_str())
    }
}
