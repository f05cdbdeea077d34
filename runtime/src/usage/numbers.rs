//! The usage of a JSON answer read without building the document: a typed reader that skips
//! everything but `usage` (or `response.usage`). It reads exactly what [`super::Accounting`]'s
//! `read_usage` reads from a parsed `Value`; anything it cannot type (a duplicate key, a number
//! that is not a whole non-negative one, a `usage` that is not an object...) makes it give up,
//! and the caller reads the document the long way.

use serde::Deserialize;

#[derive(Deserialize)]
struct Doc {
    usage: Option<Numbers>,
    response: Option<Response>,
}

#[derive(Deserialize)]
struct Response {
    usage: Option<Numbers>,
}

#[derive(Deserialize)]
struct Numbers {
    prompt_tokens: Option<u64>,
    input_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// `(prompt, completion)` as `read_usage` would take them, when the document reports a
/// completion; None when it does not, or when it cannot be read this way.
pub(super) fn usage_of(json: &[u8]) -> Option<(Option<u64>, u64)> {
    let doc: Doc = serde_json::from_slice(json).ok()?;
    let n = doc.usage.or_else(|| doc.response.and_then(|r| r.usage))?;
    let completion = n.completion_tokens.or(n.output_tokens)?;
    Some((n.prompt_tokens.or(n.input_tokens), completion))
}

#[cfg(test)]
mod tests {
    use super::usage_of;
    use crate::usage::Accounting;

    /// What the long way reads: the document parsed, then `read_usage`.
    fn long_way(json: &str) -> (Option<u64>, Option<u64>) {
        let mut acc = Accounting::default();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(json) {
            acc.read_usage(&v);
        }
        (acc.prompt, acc.completion)
    }

    #[test]
    fn the_short_way_reads_what_the_long_way_reads_or_gives_up() {
        let docs = [
            // Read the short way.
            (
                r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13}}"#,
                true,
            ),
            (r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#, true),
            (r#"{"usage":{"completion_tokens":4}}"#, true),
            (r#"{"usage":{"prompt_tokens":null,"completion_tokens":4}}"#, true),
            (r#"{"usage":{"prompt_tokens":1,"input_tokens":2,"completion_tokens":4,"output_tokens":9}}"#, true),
            (r#"{"usage":null,"response":{"usage":{"input_tokens":1,"output_tokens":2}}}"#, true),
            (r#"{"response":{"id":"r","usage":{"input_tokens":1,"output_tokens":2,"x":[1,{"a":"b"}]}}}"#, true),
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":8,"prompt_tokens_details":{"cached_tokens":0}}}"#,
                true,
            ),
            // The short way gives up; the long way decides.
            (r#"{"usage":{"prompt_tokens":5}}"#, false),
            (r#"{"usage":{},"response":{"usage":{"input_tokens":1,"output_tokens":2}}}"#, false),
            (
                r#"{"usage":{"prompt_tokens":5,"completion_tokens":8},"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
                false,
            ),
            (r#"{"usage":"lots","response":{"usage":{"input_tokens":1,"output_tokens":2}}}"#, false),
            (r#"{"usage":{"prompt_tokens":5.0,"completion_tokens":8}}"#, false),
            (r#"{"usage":{"prompt_tokens":-5,"completion_tokens":8}}"#, false),
            (r#"{"usage":{"prompt_tokens":5,"completion_tokens":"8"}}"#, false),
            (r#"{"usage":{"prompt_tokens":5,"completion_tokens":18446744073709551616}}"#, false),
            (r#"{"usage":{"prompt_tokens":5,"completion_tokens":8}} trailing"#, false),
            (r#"{"usage":{"prompt_tokens":5,"completion_tokens":8}"#, false),
            (r#"[{"usage":{"prompt_tokens":5,"completion_tokens":8}}]"#, false),
            (r#"{"response":"done","usage":{"prompt_tokens":5,"completion_tokens":8}}"#, false),
            (r#"{"choices":[],"x":1}"#, false),
            ("", false),
        ];
        for (doc, short) in docs {
            let fast = usage_of(doc.as_bytes());
            assert_eq!(fast.is_some(), short, "{doc}");
            if let Some((prompt, completion)) = fast {
                assert_eq!(long_way(doc), (prompt, Some(completion)), "{doc}");
            }
        }
    }
}
