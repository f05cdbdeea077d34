//! `POST …/embeddings`: deterministic 8-dimensional embeddings.

use std::borrow::Cow;

use http::{Response, StatusCode};
use serde::Deserialize;

use crate::answers::{error, json_response, to_json};
use crate::body::MockBody;
use crate::chat::count_words;

#[derive(Deserialize)]
pub(crate) struct EmbeddingRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A deterministic unit vector of 8 components derived from the input's hash.
pub(crate) fn embedding(seed: u64) -> [f32; 8] {
    let mut v = [0f64; 8];
    for (k, x) in v.iter_mut().enumerate() {
        let r = splitmix64(seed.wrapping_add(k as u64));
        *x = (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    v.map(|x| (x / norm) as f32)
}

pub(crate) fn embeddings(body: &[u8]) -> Response<MockBody> {
    use serde_json::Value;
    let req: EmbeddingRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request. ({e})"),
                None,
            )
        }
    };
    // (hash, token estimate) per input.
    let items: Vec<(u64, u64)> = match &req.input {
        Some(Value::String(s)) => vec![(fnv1a(s.as_bytes()), count_words(s))],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => {
            vec![(fnv1a(Value::Array(a.clone()).to_string().as_bytes()), a.len() as u64)]
        }
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| match v {
                Value::String(s) => (fnv1a(s.as_bytes()), count_words(s)),
                Value::Array(t) => (fnv1a(v.to_string().as_bytes()), t.len() as u64),
                other => (fnv1a(other.to_string().as_bytes()), 1),
            })
            .collect(),
        Some(Value::Array(_)) => return error(StatusCode::BAD_REQUEST, "'input' cannot be an empty array", None),
        Some(_) => return error(StatusCode::BAD_REQUEST, "'input' must be a string or an array", None),
        None => return error(StatusCode::BAD_REQUEST, "'input' is a required property", None),
    };
    let tokens: u64 = items.iter().map(|&(_, t)| t).sum();
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, &(seed, _))| serde_json::json!({"object": "embedding", "index": i, "embedding": embedding(seed)}))
        .collect();
    let model: &str = if req.model.is_empty() { "text-embedding-3-small" } else { &req.model };
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    json_response(StatusCode::OK, to_json(&body))
}
