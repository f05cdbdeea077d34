//! `POST …/chat/completions`: the request read without building a JSON tree, the answer as
//! JSON or as server-sent events (`Sse`, a hand-written body), and `MockBody`, every answer's body.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::answers::{error, json_response, now_secs, to_json};
use crate::body::{MockBody, Sse, Usage};
use crate::state::{Faults, State, WORDS};

#[derive(Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: PromptWords,
}

#[derive(Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
pub(crate) struct ChatMessage {
    #[serde(default)]
    content: Words,
}

/// The prompt-token estimate of a `messages` array: words of the contents plus 4 per message.
#[derive(Default)]
pub(crate) struct PromptWords(u64);

impl<'de> Deserialize<'de> for PromptWords {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PromptWords;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_unit<E>(self) -> Result<PromptWords, E> {
                Ok(PromptWords(0))
            }
            fn visit_none<E>(self) -> Result<PromptWords, E> {
                Ok(PromptWords(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptWords, A::Error> {
                let mut n = 0u64;
                while let Some(m) = seq.next_element::<ChatMessage>()? {
                    n += m.content.0 + 4;
                }
                Ok(PromptWords(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// Whitespace-separated words in a message content: a string, or an array of parts whose `text`
/// fields are counted; anything else counts 0. Parsed without allocating.
#[derive(Default)]
pub(crate) struct Words(u64);

pub(crate) fn count_words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Words;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("message content")
            }
            fn visit_str<E>(self, s: &str) -> Result<Words, E> {
                Ok(Words(count_words(s)))
            }
            fn visit_unit<E>(self) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_none<E>(self) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Words, E> {
                Ok(Words(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
                let mut n = 0;
                while let Some(w) = seq.next_element::<Words>()? {
                    n += w.0;
                }
                Ok(Words(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Words, A::Error> {
                let mut n = 0;
                while let Some(TextKey(is_text)) = map.next_key()? {
                    if is_text {
                        n += map.next_value::<Words>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Words(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map key: is it `text`?
pub(crate) struct TextKey(bool);

impl<'de> Deserialize<'de> for TextKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TextKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, s: &str) -> Result<TextKey, E> {
                Ok(TextKey(s == "text"))
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<TextKey, E> {
                Ok(TextKey(b == b"text"))
            }
        }
        d.deserialize_identifier(V)
    }
}

#[derive(Serialize)]
pub(crate) struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
pub(crate) struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
pub(crate) struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

pub(crate) fn completion_text(words: usize) -> String {
    let mut s = String::with_capacity(words * 8);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[i % WORDS.len()]);
    }
    s
}

pub(crate) fn chat(state: &State, faults: &Faults, body: &[u8]) -> Response<MockBody> {
    let req: ChatRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("We could not parse the JSON body of your request. ({e})"),
                None,
            )
        }
    };
    let model: &str = if req.model.is_empty() { "mock" } else { &req.model };
    let chunks = faults.chunks.unwrap_or(state.cfg.stream_chunks);
    let prompt_tokens = req.messages.0;
    let completion_tokens = chunks as u64;
    let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    let id = format!("chatcmpl-mock{:010}", state.next_id());
    let created = now_secs();

    if req.stream == Some(true) {
        let include_usage = req.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
        let model_json = serde_json::to_string(model).unwrap_or_else(|_| "\"mock\"".to_owned());
        let sse = Sse {
            prefix: format!(
                r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":{model_json}"#
            ),
            chunks,
            next: 0,
            delay: Duration::from_millis(faults.chunk_delay_ms.unwrap_or(state.cfg.chunk_delay_ms)),
            die_after: faults.die_after,
            usage: include_usage.then_some(usage),
            sleep: None,
            armed: false,
            flushed: false,
            done: false,
        };
        let mut resp = Response::new(MockBody::Sse(sse));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return resp;
    }

    let content = completion_text(chunks);
    let body = to_json(&Completion {
        id: &id,
        object: "chat.completion",
        created,
        model,
        choices: [CompletionChoice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: &content },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage,
    });
    match faults.die_after {
        None => json_response(StatusCode::OK, body),
        Some(n) => {
            let len = body.len();
            let cut = n.min(len.saturating_sub(1));
            let mut resp = Response::new(MockBody::Truncated {
                data: Some(body.slice(..cut)).filter(|b| !b.is_empty()),
                len: len as u64,
                flushed: false,
            });
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
    }
}
