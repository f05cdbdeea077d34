//! The response cache in Redis (`state redis`): one key per entry, `gw:cache:<sha256>`,
//! expiring with the entry's TTL, so every replica reads what any of them stored. An entry is
//! one binary value: stored-at and expires-at (ms, big-endian), the status, the headers as
//! JSON, then the body. Redis's `maxmemory` policy bounds the total; the route's `max` bounds
//! each entry. A Redis failure, or a value gw cannot read, is a miss.

use crate::redis_store::RedisStore;

use super::Entry;

/// Cache keys live apart from the limit counters (`gw:{lim}:`): no hash tag is needed, each
/// entry is read and written alone.
pub const KEY_PREFIX: &str = "gw:cache:";

pub async fn get(store: &RedisStore, key: &str, now_ms: u64) -> Option<Entry> {
    let bytes = match store.get_bytes(&format!("{KEY_PREFIX}{key}")).await {
        Ok(v) => v?,
        Err(e) => {
            tracing::debug!(error = %e, "response cache: Redis read failed, a miss");
            return None;
        }
    };
    decode(&bytes).filter(|e| e.expires_at_ms > now_ms)
}

pub async fn put(store: &RedisStore, key: &str, entry: &Entry, max_bytes: u64) -> bool {
    if entry.size() > max_bytes {
        return false;
    }
    let ttl = entry.expires_at_ms.saturating_sub(entry.stored_at_ms);
    match store.set_bytes(&format!("{KEY_PREFIX}{key}"), &encode(entry), ttl).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "response cache: Redis write failed, not stored");
            false
        }
    }
}

pub fn encode(e: &Entry) -> Vec<u8> {
    let headers: Vec<(&str, String)> = e.headers.iter().map(|(k, v)| (k.as_str(), hex::encode(v))).collect();
    let headers = serde_json::to_vec(&headers).unwrap_or_default();
    let mut out = Vec::with_capacity(22 + headers.len() + e.body.len());
    out.extend_from_slice(&e.stored_at_ms.to_be_bytes());
    out.extend_from_slice(&e.expires_at_ms.to_be_bytes());
    out.extend_from_slice(&e.status.to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(&e.body);
    out
}

pub fn decode(b: &[u8]) -> Option<Entry> {
    let stored_at_ms = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
    let expires_at_ms = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
    let status = u16::from_be_bytes(b.get(16..18)?.try_into().ok()?);
    let len = u32::from_be_bytes(b.get(18..22)?.try_into().ok()?) as usize;
    let headers: Vec<(String, String)> = serde_json::from_slice(b.get(22..22usize.checked_add(len)?)?).ok()?;
    let headers = headers.into_iter().map(|(k, v)| Some((k, hex::decode(v).ok()?))).collect::<Option<Vec<_>>>()?;
    let body = bytes::Bytes::copy_from_slice(b.get(22 + len..)?);
    Some(Entry { status, headers, body, stored_at_ms, expires_at_ms })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_and_garbage_is_a_miss() {
        let e = Entry {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec()), ("x-bin".into(), vec![0xff, 0])],
            body: bytes::Bytes::from_static(b"{\"ok\":true}\xff"),
            stored_at_ms: 1,
            expires_at_ms: 5_001,
        };
        assert_eq!(decode(&encode(&e)), Some(e.clone()));
        let bytes = encode(&e);
        for cut in [0, 5, 17, 21, 25] {
            assert!(decode(&bytes[..cut]).is_none(), "{cut}");
        }
        assert!(decode(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc8\xff\xff\xff\xff")
            .is_none());
    }
}
