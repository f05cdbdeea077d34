//! The byte bound of a prompt (`tokens::prompt_bound`) is never below its exact count, in any of
//! the four encodings: a token budget reserves the bound instead of counting when it has room for
//! it, so a bound below the count would let a budget be overdrawn.
//!
//! Checked on text (every token of a byte-level BPE stands for at least one byte) over arbitrary
//! and adversarial UTF-8 and over a large corpus (every text file of this repository, whole and
//! line by line), and on whole request bodies of every shape the accounting reads.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use gw_compiler::tokens::{count_prompt, count_text, model_encoding, prompt_bound, Encoding, Meter};
use proptest::prelude::*;
use serde_json::{json, Value};

fn assert_text_bounded(text: &str) {
    for enc in Encoding::ALL {
        let n = count_text(text, enc);
        assert!(n <= text.len() as u64, "{enc}: {n} tokens > {} bytes in {text:?}", text.len());
    }
}

/// Pieces that stress the pre-tokenizers: contractions, digit runs, whitespace runs before
/// words, multi-byte scripts, combining marks, emoji sequences, special-token text, controls.
fn adversarial_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'s".to_string()),
        Just("'LL".to_string()),
        Just("<|endoftext|>".to_string()),
        Just("<|fim_prefix|>".to_string()),
        Just("\u{FEFF}".to_string()),
        Just("e\u{301}\u{302}\u{303}".to_string()),
        Just("👩‍👩‍👧‍👦".to_string()),
        Just("🏳️‍🌈".to_string()),
        Just("\r\n".to_string()),
        Just("\u{0}\u{1}\u{7f}".to_string()),
        "[0-9]{1,40}",
        "[ \t\n\u{a0}\u{3000}]{1,20}",
        "[a-zA-Z]{1,30}",
        "[\u{4e00}-\u{9fff}]{1,20}",
        "[\u{0600}-\u{06ff}\u{0900}-\u{097f}]{1,20}",
        "[!-/:-@\\[-`{-~]{1,20}",
        any::<String>(),
        proptest::char::any().prop_map(|c| c.to_string().repeat(50)),
    ]
}

fn adversarial_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(adversarial_piece(), 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_text_has_more_tokens_than_bytes(text in adversarial_text()) {
        assert_text_bounded(&text);
    }

    #[test]
    fn no_arbitrary_string_has_more_tokens_than_bytes(text in any::<String>()) {
        assert_text_bounded(&text);
    }

    #[test]
    fn the_prompt_bound_covers_every_encoding(body in request_body(), model in model_name()) {
        let mut body = body;
        if let (Some(model), Some(fields)) = (model, body.as_object_mut()) {
            fields.insert("model".into(), Value::String(model));
        }
        let bound = prompt_bound(&body);
        for enc in Encoding::ALL {
            let exact = count_prompt(&body, enc);
            prop_assert_eq!(exact.is_some(), bound.is_some(), "same shapes counted: {}", body);
            prop_assert!(exact <= bound, "{}: {:?} > bound {:?} for {}", enc, exact, bound, body);
        }
    }
}

fn model_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("gpt-4o".to_string())),
        Just(Some("gpt-4".to_string())),
        Just(Some("text-davinci-003".to_string())),
        Just(Some("gpt2".to_string())),
        Just(Some("llama-3-8b".to_string())),
    ]
}

/// A JSON value of any shape (small), for the fields the accounting reads as JSON text.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Floats re-serialise longer than short inputs (`1e2` as `100.0`): the bound measures
        // the same re-serialised text, so it must still hold.
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        adversarial_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn content_part() -> impl Strategy<Value = Value> {
    prop_oneof![
        adversarial_text().prop_map(|t| json!({"type": "text", "text": t})),
        Just(json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}})),
        Just(json!({"type": "image"})),
        adversarial_text().prop_map(|t| json!({"type": "refusal", "refusal": t})),
        any_json(),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    let content = prop_oneof![
        adversarial_text().prop_map(Value::String),
        proptest::collection::vec(content_part(), 0..4).prop_map(Value::Array),
        any_json(),
    ];
    (
        prop_oneof![Just("user"), Just("assistant"), Just("system"), Just("tool")],
        content,
        proptest::option::of(adversarial_text()),
        proptest::option::of(proptest::collection::vec((adversarial_text(), adversarial_text()), 0..3)),
        proptest::option::of(any_json()),
    )
        .prop_map(|(role, content, name, calls, extra)| {
            let mut m = json!({"role": role, "content": content});
            if let Some(name) = name {
                m["name"] = json!(name);
            }
            if let Some(calls) = calls {
                let calls: Vec<Value> = calls
                    .into_iter()
                    .map(|(n, a)| json!({"type": "function", "function": {"name": n, "arguments": a}}))
                    .collect();
                m["tool_calls"] = json!(calls);
            }
            if let Some(extra) = extra {
                m["extra"] = extra;
            }
            m
        })
}

fn request_body() -> impl Strategy<Value = Value> {
    let texts = prop_oneof![
        adversarial_text().prop_map(Value::String),
        proptest::collection::vec(adversarial_text().prop_map(Value::String), 0..4).prop_map(Value::Array),
        proptest::collection::vec(any::<u32>().prop_map(|n| json!(n)), 0..8).prop_map(Value::Array),
        proptest::collection::vec(proptest::collection::vec(any::<u16>().prop_map(|n| json!(n)), 0..4), 0..3)
            .prop_map(|v| json!(v)),
    ];
    prop_oneof![
        (proptest::collection::vec(message(), 0..5), proptest::option::of(any_json())).prop_map(|(ms, tools)| {
            let mut b = json!({"messages": ms});
            if let Some(tools) = tools {
                b["tools"] = tools;
            }
            b
        }),
        texts.clone().prop_map(|p| json!({"prompt": p})),
        texts.prop_map(|i| json!({"input": i})),
        (proptest::collection::vec(message(), 1..4), adversarial_text())
            .prop_map(|(items, ins)| json!({"input": items, "instructions": ins})),
        (adversarial_text(), adversarial_text()).prop_map(|(i, ins)| json!({"input": i, "instructions": ins})),
        any_json(),
    ]
}

/// Every text file of the repository (sources, docs, policies, fixtures): at least 1 MB of code,
/// prose in several languages, policies and JSON, each whole (up to 64 KB) and line by line.
#[test]
fn the_bound_holds_over_the_repository_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = vec![];
    collect(root, &mut files);
    let mut bytes = 0;
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let mut end = text.len().min(64 * 1024);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        bytes += text.len();
        assert_text_bounded(text);
        for line in text.lines().take(200) {
            assert_text_bounded(line);
        }
    }
    assert!(bytes > 1 << 20, "the corpus is {bytes} bytes, expected more than 1 MB");
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            collect(&path, out);
        } else if ["rs", "md", "gwp", "toml", "json", "keys", "txt"].iter().any(|e| name.ends_with(&format!(".{e}"))) {
            out.push(path);
        }
    }
}

#[test]
fn the_bound_is_tight_enough_to_be_useful() {
    // English prose: about 4 bytes a token, so the bound reserves about 4× the exact count.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}]});
    let (exact, bound) = (count_prompt(&body, Encoding::Cl100kBase).unwrap(), prompt_bound(&body).unwrap());
    assert!(exact < bound && bound <= 6 * exact, "exact {exact}, bound {bound}");
}

#[test]
fn budgets_meter_known_families_exactly_and_unknown_ones_by_the_bound() {
    assert_eq!(Meter::for_body(&json!({"model": "gpt-4o"})), Meter::Exact(Encoding::O200kBase));
    assert_eq!(Meter::for_body(&json!({"model": "gpt2"})), Meter::Exact(Encoding::R50kBase));
    assert_eq!(Meter::for_body(&json!({"model": "davinci"})), Meter::Exact(Encoding::R50kBase));
    assert_eq!(Meter::for_body(&json!({"model": "code-davinci-002"})), Meter::Exact(Encoding::P50kBase));
    // An unknown family, or no model, is never counted in another family's encoding.
    for body in [json!({"model": "llama-3-8b"}), json!({}), json!({"model": 4}), json!({"model": "adam"})] {
        assert_eq!(Meter::for_body(&body), Meter::Bytes, "{body}");
    }
}

#[test]
fn legacy_families_map_as_tiktoken_maps_them() {
    let r50 = Some(Encoding::R50kBase);
    let p50 = Some(Encoding::P50kBase);
    let cl = Some(Encoding::Cl100kBase);
    for (model, enc) in [
        ("gpt2", r50),
        ("GPT2", r50),
        ("davinci", r50),
        ("curie", r50),
        ("babbage", r50),
        ("ada", r50),
        ("curie:ft-acme-2023-01-01", r50),
        ("text-davinci-001", r50),
        ("text-curie-001", r50),
        ("text-babbage-001", r50),
        ("text-ada-001", r50),
        ("text-similarity-davinci-001", r50),
        ("text-search-ada-doc-001", r50),
        ("code-search-ada-code-001", r50),
        ("text-davinci-002", p50),
        ("text-davinci-003", p50),
        ("text-davinci-edit-001", p50),
        ("code-davinci-002", p50),
        ("code-cushman-001", p50),
        ("davinci-002", cl),
        ("babbage-002", cl),
        ("text-embedding-ada-002", cl),
        ("adam", None),
        ("davinci-3", None),
        ("llama-3-8b", None),
    ] {
        assert_eq!(model_encoding(model), enc, "{model}");
    }
}

/// Counts are remembered per text (keyed by encoding and content): the same long text again is
/// a hit with the same count, in each encoding apart, and what is remembered stays bounded.
#[test]
fn long_texts_are_counted_once_and_remembered() {
    use gw_compiler::tokens::memo;
    let text = format!("{} unique {}", "A system prompt that repeats on every request. ".repeat(8), line!());
    let first: Vec<u64> = Encoding::ALL.iter().map(|e| count_text(&text, *e)).collect();
    let (hits, _, _) = memo::stats();
    let again: Vec<u64> = Encoding::ALL.iter().map(|e| count_text(&text, *e)).collect();
    assert_eq!(first, again);
    assert!(memo::stats().0 >= hits + 4, "the second counts are hits");
    // Different encodings keep their own counts.
    assert_ne!(
        count_text(&"お誕生日おめでとう".repeat(20), Encoding::R50kBase),
        count_text(&"お誕生日おめでとう".repeat(20), Encoding::O200kBase)
    );
    for i in 0..(memo::SHARDS * memo::SHARD_ENTRIES + 100) {
        let t = format!("{i:0>width$}", width = memo::MIN_BYTES);
        assert_eq!(count_text(&t, Encoding::Cl100kBase), count_text(&t, Encoding::Cl100kBase));
    }
    assert!(memo::stats().2 <= memo::SHARDS * memo::SHARD_ENTRIES, "bounded: {:?}", memo::stats());
}

#[test]
#[ignore = "timing report; run in release with --ignored --nocapture"]
fn report_memo_cost() {
    let text = "The gateway counts the prompt tokens of every request that a token budget applies to. ".repeat(48);
    gw_compiler::tokens::load(Encoding::O200kBase);
    let t = std::time::Instant::now();
    let n = count_text(&text, Encoding::O200kBase);
    let cold = t.elapsed();
    let t = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(count_text(&text, Encoding::O200kBase), n);
    }
    println!("{} bytes, {n} tokens: counted {cold:?}, remembered {:?} each", text.len(), t.elapsed() / 1000);
}
