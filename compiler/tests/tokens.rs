//! Token counting against reference counts: tiktoken's and OpenAI's cookbook examples for each
//! encoding, the chat per-message accounting, prompts of every request shape, reservations.
//!
//! `cargo test --release -p gw-compiler --test tokens -- --ignored --nocapture` prints the
//! load time of each encoding and the cost of counting 1 KB and 100 KB prompts.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use gw_compiler::tokens::{
    choices, count_chat_prompt, count_prompt, count_text, encoding_for_model, requested_completion, reservation,
    warm_up, Encoding, Reservation, IMAGE_PART_TOKENS,
};
use serde_json::{json, Value};

use Encoding::{Cl100kBase as CL, O200kBase as O200, P50kBase as P50, R50kBase as R50};

/// (text, r50k, p50k, cl100k, o200k) from OpenAI's cookbook "How to count tokens with tiktoken"
/// (its `compare_encodings` examples) and tiktoken's README.
const REFERENCE: &[(&str, u64, u64, u64, u64)] = &[
    ("hello world", 2, 2, 2, 2),
    ("tiktoken is great!", 6, 6, 6, 6),
    ("antidisestablishmentarianism", 5, 5, 6, 6),
    ("2 + 2 = 4", 5, 5, 7, 7),
    ("お誕生日おめでとう", 14, 14, 9, 8),
];

#[test]
fn reference_strings_for_each_encoding() {
    for &(text, r50, p50, cl, o200) in REFERENCE {
        assert_eq!(count_text(text, R50), r50, "r50k_base {text:?}");
        assert_eq!(count_text(text, P50), p50, "p50k_base {text:?}");
        assert_eq!(count_text(text, CL), cl, "cl100k_base {text:?}");
        assert_eq!(count_text(text, O200), o200, "o200k_base {text:?}");
    }
}

#[test]
fn empty_and_special_token_text() {
    for enc in Encoding::ALL {
        assert_eq!(count_text("", enc), 0);
        // A special-token string in user text is ordinary text: several tokens, never one.
        assert!(count_text("<|endoftext|>", enc) > 1, "{enc}");
    }
}

#[test]
fn encoding_names_round_trip() {
    for enc in Encoding::ALL {
        assert_eq!(Encoding::from_name(enc.name()), Some(enc));
        assert_eq!(enc.to_string().parse::<Encoding>(), Ok(enc));
    }
    assert_eq!(Encoding::from_name("gpt2"), Some(R50));
    assert!("o300k".parse::<Encoding>().is_err());
    assert_eq!(Encoding::default(), CL);
}

#[test]
fn models_map_to_their_encodings() {
    let o200 = [
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "gpt-4o-mini",
        "chatgpt-4o-latest",
        "o1",
        "o1-mini",
        "o1-preview",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-4.1",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1-codex",
        "GPT-4o",
        "ft:gpt-4o-mini-2024-07-18:org:custom:abc123",
        "openai/gpt-4o",
    ];
    for m in o200 {
        assert_eq!(encoding_for_model(m, R50), O200, "{m}");
    }
    let cl = [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-32k",
        "gpt-4-turbo",
        "gpt-4-turbo-2024-04-09",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-instruct",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "ft:gpt-3.5-turbo-0125:org::xyz",
    ];
    for m in cl {
        assert_eq!(encoding_for_model(m, R50), CL, "{m}");
    }
    assert_eq!(encoding_for_model("text-davinci-003", CL), P50);
    // Anything else: the declared default.
    for m in ["llama-3.1-70b", "claude-3-5-sonnet", "mistral-large", "", "o", "gpt-"] {
        assert_eq!(encoding_for_model(m, CL), CL, "{m}");
        assert_eq!(encoding_for_model(m, O200), O200, "{m}");
    }
}

/// The cookbook's example conversation (`example_messages`).
fn cookbook_messages() -> Value {
    json!([
        {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
        {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
        {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
        {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
        {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
        {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
    ])
}

#[test]
fn cookbook_example_messages_match_the_api() {
    // The cookbook prints the count the API reported for these messages: 129 for the
    // gpt-3.5-turbo and gpt-4 models, 124 for gpt-4o and gpt-4o-mini.
    for (model, expected) in
        [("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)]
    {
        let body = json!({"model": model, "messages": cookbook_messages()});
        assert_eq!(count_chat_prompt(&body, CL), Some(expected), "{model}");
        assert_eq!(count_prompt(&body, CL), Some(expected), "{model}");
    }
    // No model: the declared default decides.
    let body = json!({"messages": cookbook_messages()});
    assert_eq!(count_chat_prompt(&body, CL), Some(129));
    assert_eq!(count_chat_prompt(&body, O200), Some(124));
}

#[test]
fn per_message_accounting_by_hand() {
    // 3 per message + role + content (+ name + 1), + 3 priming.
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "hello world"},
        {"role": "user", "name": "bob", "content": "hello world"},
    ]});
    let role = |r| count_text(r, O200);
    let expected = 3 + role("system") + 2 + 3 + role("user") + 2 + count_text("bob", O200) + 1 + 3;
    assert_eq!(count_chat_prompt(&body, CL), Some(expected));
    // Empty conversation: just the reply priming.
    assert_eq!(count_chat_prompt(&json!({"messages": []}), CL), Some(3));
    // Null content (an assistant message that only calls a tool) costs nothing for content.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "assistant", "content": null}]});
    assert_eq!(count_chat_prompt(&body, CL), Some(3 + role("assistant") + 3));
}

#[test]
fn content_parts_text_and_images() {
    let parts = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "text", "text": "tiktoken is great!"},
    ]}]});
    let plain = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello worldtiktoken is great!"}]});
    let parts_n = count_chat_prompt(&parts, CL).unwrap();
    let expected = 3 + count_text("user", O200) + 2 + IMAGE_PART_TOKENS + 6 + 3;
    assert_eq!(parts_n, expected);
    assert_ne!(parts_n, count_chat_prompt(&plain, CL).unwrap());
}

#[test]
fn tool_calls_and_tool_messages() {
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]});
    let t = |s| count_text(s, O200);
    let expected = 3
        + t("assistant")
        + (t("get_weather") + t("{\"city\":\"Paris\"}") + 1)
        + 3
        + t("tool")
        + t("call_1")
        + t("sunny")
        + 3;
    assert_eq!(count_chat_prompt(&body, CL), Some(expected));
}

#[test]
fn tools_definitions_count_as_json_text() {
    let tools = json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}]);
    let bare = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let mut with_tools = bare.clone();
    with_tools["tools"] = tools.clone();
    let n_bare = count_chat_prompt(&bare, CL).unwrap();
    let n_tools = count_chat_prompt(&with_tools, CL).unwrap();
    assert_eq!(n_tools - n_bare, count_text(&tools.to_string(), O200));
    let mut with_functions = bare.clone();
    let functions = json!([tools[0]["function"]]);
    with_functions["functions"] = functions.clone();
    assert_eq!(count_chat_prompt(&with_functions, CL).unwrap() - n_bare, count_text(&functions.to_string(), O200));
}

#[test]
fn completions_prompt_shapes() {
    let m = "gpt-3.5-turbo-instruct";
    assert_eq!(count_prompt(&json!({"model": m, "prompt": "hello world"}), O200), Some(2));
    assert_eq!(count_prompt(&json!({"model": m, "prompt": ["hello world", "2 + 2 = 4"]}), O200), Some(9));
    assert_eq!(count_prompt(&json!({"model": m, "prompt": [15339, 1917]}), O200), Some(2));
    assert_eq!(count_prompt(&json!({"model": m, "prompt": [[15339, 1917], [1, 2, 3]]}), O200), Some(5));
    assert_eq!(count_prompt(&json!({"model": m, "prompt": {"not": "valid"}}), O200), None);
}

#[test]
fn embeddings_input_shapes() {
    let m = "text-embedding-3-small";
    assert_eq!(count_prompt(&json!({"model": m, "input": "antidisestablishmentarianism"}), O200), Some(6));
    assert_eq!(count_prompt(&json!({"model": m, "input": ["hello world", "tiktoken is great!"]}), O200), Some(8));
    assert_eq!(count_prompt(&json!({"model": m, "input": [1, 2, 3, 4]}), O200), Some(4));
    assert_eq!(count_prompt(&json!({"model": m, "input": [[1, 2], [3]]}), O200), Some(3));
    assert_eq!(count_prompt(&json!({"model": m, "input": 42}), O200), None);
}

#[test]
fn responses_input_items_use_chat_accounting() {
    let body = json!({"model": "gpt-4o", "instructions": "hello world", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tiktoken is great!"}]}
    ]});
    assert_eq!(count_prompt(&body, CL), Some(2 + 3 + count_text("user", O200) + 6 + 3));
}

#[test]
fn no_prompt_field_is_none() {
    for body in [json!({"model": "gpt-4o"}), json!({}), json!([1, 2]), json!("text"), json!({"messages": "hi"})] {
        assert_eq!(count_prompt(&body, CL), None, "{body}");
        assert_eq!(reservation(&body, CL, Some(100)), None, "{body}");
    }
}

#[test]
fn requested_completion_prefers_max_completion_tokens() {
    assert_eq!(requested_completion(&json!({"max_tokens": 100})), Some(100));
    assert_eq!(requested_completion(&json!({"max_completion_tokens": 50, "max_tokens": 100})), Some(50));
    assert_eq!(requested_completion(&json!({"max_output_tokens": 70})), Some(70));
    assert_eq!(requested_completion(&json!({"max_tokens": null})), None);
    assert_eq!(requested_completion(&json!({"max_tokens": -1})), None);
    assert_eq!(requested_completion(&json!({})), None);
}

#[test]
fn reservations() {
    let chat = |extra: Value| {
        let mut b = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // Prompt 9 = 3 + 1 ("user") + 2 + 3.
    assert_eq!(
        reservation(&chat(json!({"max_tokens": 100})), CL, Some(7)),
        Some(Reservation { prompt: 9, completion: 100 })
    );
    assert_eq!(
        reservation(&chat(json!({"max_completion_tokens": 20, "max_tokens": 100})), CL, None),
        Some(Reservation { prompt: 9, completion: 20 })
    );
    // None requested: the declared estimate, else nothing.
    assert_eq!(reservation(&chat(json!({})), CL, Some(7)), Some(Reservation { prompt: 9, completion: 7 }));
    assert_eq!(reservation(&chat(json!({})), CL, None), Some(Reservation { prompt: 9, completion: 0 }));
    // Every choice is billed.
    let r = reservation(&chat(json!({"max_tokens": 100, "n": 3})), CL, None).unwrap();
    assert_eq!(r, Reservation { prompt: 9, completion: 300 });
    assert_eq!(r.total(), 309);
    assert_eq!(choices(&json!({"n": 2, "best_of": 5})), 5);
    assert_eq!(choices(&json!({"n": 0})), 1);
    // Absurd numbers saturate instead of overflowing.
    let r = reservation(&chat(json!({"max_tokens": u64::MAX, "n": 2})), CL, None).unwrap();
    assert_eq!(r.completion, u64::MAX);
    assert_eq!(r.total(), u64::MAX);
}

fn prose(bytes: usize) -> String {
    const PARAGRAPH: &str = "The gateway counts the prompt tokens of every request that a token budget applies to, \
        reserves the prompt plus the requested completion before forwarding, and reconciles the \
        reservation with the usage the upstream reports. Numbers like 3.14159 and 2024-06-01, \
        code such as `fn main() { println!(\"hi\"); }` and punctuation (!?;:) all count. ";
    let mut s = String::with_capacity(bytes + PARAGRAPH.len());
    while s.len() < bytes {
        s.push_str(PARAGRAPH);
    }
    s.truncate(bytes);
    s
}

fn median_time(mut f: impl FnMut() -> u64, runs: usize) -> (Duration, u64) {
    let mut times = Vec::with_capacity(runs);
    let mut n = 0;
    for _ in 0..runs {
        let t = Instant::now();
        n = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[runs / 2], n)
}

#[test]
#[ignore = "timing report; run in release with --ignored --nocapture"]
fn report_load_and_counting_cost() {
    for enc in Encoding::ALL {
        let t = Instant::now();
        assert!(gw_compiler::tokens::load(enc));
        println!("load {enc}: {:?}", t.elapsed());
    }
    warm_up();
    let random: String = {
        // A long run without spaces (base64-like), the slow case for BPE.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..100 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % 64) as usize] as char
            })
            .collect()
    };
    let inputs = [
        ("1 KB prose", prose(1024)),
        ("100 KB prose", prose(100 * 1024)),
        ("100 KB 'a'", "a".repeat(100 * 1024)),
        ("100 KB base64-like", random),
    ];
    for enc in [O200, CL] {
        for (name, text) in &inputs {
            let runs = if text.len() > 10_000 { 11 } else { 201 };
            let (t, n) = median_time(|| count_text(text, enc), runs);
            let per_kb = t.as_secs_f64() * 1e6 / (text.len() as f64 / 1024.0);
            println!("{enc} {name}: {n} tokens, median {t:?} ({per_kb:.1} µs/KB)");
        }
        let body = json!({"model": if enc == O200 { "gpt-4o" } else { "gpt-4" }, "messages": cookbook_messages(), "max_tokens": 256});
        let (t, n) = median_time(|| reservation(&body, CL, None).map_or(0, |r| r.total()), 1001);
        println!("{enc} reservation of the cookbook conversation: {n} tokens, median {t:?}");
    }
}
