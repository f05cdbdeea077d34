//! What the mock keeps between requests (the recorded requests) and reads from each one
//! (the fault-injection headers).

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, StatusCode, Uri, Version};
use rand::Rng;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;
use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::watch;

use crate::config::MockConfig;

pub(crate) const LOG_CAPACITY: usize = 1000;
pub(crate) const MAX_BODY: usize = 32 << 20;
pub(crate) const BODY_TEXT_LIMIT: usize = 64 << 10;

/// The words of every completion, cycled.
pub(crate) const WORDS: [&str; 8] = ["Hello!", "This", "is", "the", "gw", "mock", "upstream", "speaking."];

pub(crate) const MODELS_JSON: &str = concat!(
    r#"{"object":"list","data":["#,
    r#"{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},"#,
    r#"{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},"#,
    r#"{"id":"gpt-3.5-turbo","object":"model","created":1677610602,"owned_by":"openai"},"#,
    r#"{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"}"#,
    r#"]}"#
);

pub(crate) struct State {
    pub(crate) cfg: MockConfig,
    pub(crate) log: Mutex<VecDeque<Record>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) stop: watch::Receiver<()>,
}

impl State {
    pub(crate) fn push(&self, record: Record) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// One received request, as `/mock/requests` and `x-mock-echo` show it.
pub(crate) struct Record {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("method", self.method.as_str())?;
        m.serialize_entry("path", self.uri.path())?;
        m.serialize_entry("query", self.uri.query().unwrap_or(""))?;
        m.serialize_entry("authority", &self.uri.authority().map(|a| a.as_str()))?;
        m.serialize_entry("version", version_str(self.version))?;
        m.serialize_entry("headers", &HeadersSer(&self.headers))?;
        m.serialize_entry("body_len", &self.body.len())?;
        let text = if self.body.len() < BODY_TEXT_LIMIT { std::str::from_utf8(&self.body).ok() } else { None };
        m.serialize_entry("body", &text)?;
        m.end()
    }
}

pub(crate) struct HeadersSer<'a>(&'a HeaderMap);

impl Serialize for HeadersSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0 {
            seq.serialize_element(&(name.as_str(), String::from_utf8_lossy(value.as_bytes())))?;
        }
        seq.end()
    }
}

pub(crate) fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "?",
    }
}

/// Fault injection asked for by `x-mock-*` request headers.
#[derive(Default)]
pub(crate) struct Faults {
    pub(crate) delay_ms: Option<u64>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) chunks: Option<usize>,
    pub(crate) chunk_delay_ms: Option<u64>,
    pub(crate) die_after: Option<usize>,
    pub(crate) echo: bool,
}

impl Faults {
    pub(crate) fn parse(h: &HeaderMap) -> Result<Faults, String> {
        let status = match header_num::<u16>(h, "x-mock-status")? {
            None => None,
            Some(n) if (200..=599).contains(&n) => StatusCode::from_u16(n).ok(),
            Some(_) => return Err("x-mock-status must be between 200 and 599".to_owned()),
        };
        let echo = match h.get("x-mock-echo").map(|v| v.as_bytes()) {
            None => false,
            Some(b"1" | b"true" | b"yes") => true,
            Some(b"0" | b"false" | b"no") => false,
            Some(_) => return Err("invalid x-mock-echo header (use 1 or 0)".to_owned()),
        };
        Ok(Faults {
            delay_ms: header_num(h, "x-mock-delay-ms")?,
            status,
            chunks: header_num(h, "x-mock-chunks")?,
            chunk_delay_ms: header_num(h, "x-mock-chunk-delay-ms")?,
            die_after: header_num(h, "x-mock-die-after")?,
            echo,
        })
    }
}

pub(crate) fn header_num<T: FromStr>(h: &HeaderMap, name: &str) -> Result<Option<T>, String> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| format!("invalid {name} header (expected a non-negative integer)")),
    }
}

pub(crate) fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::thread_rng().gen::<f64>() < rate
}
