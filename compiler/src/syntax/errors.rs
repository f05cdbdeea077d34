//! pest errors and the grammar's recovery rules turned into diagnostics that say in words
//! what was expected: the depth prescan, `describe`, misplaced and foreign tokens, stray items
//! and bad statements re-parsed alone to say precisely what is wrong.

use gw_grammar::pest::error::{ErrorVariant, InputLocation};
use gw_grammar::pest::Parser;
use gw_grammar::{GwpParser, Rule};

use crate::chars;
use crate::diagnostics::{did_you_mean, Code, Diag};

use super::keywords::*;
use super::*;

/// How a rule reads in an error message; `None` for rules that should not be named.
pub fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        EOI => "end of file",
        ident => "a name",
        ident_any => "a field name",
        string | string_inner => "a string in double quotes",
        header_name => "a header name in double quotes",
        path_pattern => "a path pattern in double quotes, like \"/v1/chat/completions\"",
        regex | regex_inner => "a regex like /^gpt-4/",
        int | number => "a whole number",
        duration_unit => "a duration unit (ms, s, m, h, d), as in `30s`",
        size_unit => "a size unit (B, KB, MB, GB, KiB, MiB, GiB), as in `10MB`",
        count_suffix | rate_window => "a rate window, as in `10/s` or `100k/min`",
        float => "a number",
        duration => "a duration like `30s`, `500ms`, `5m`",
        size => "a size like `10MB`",
        rate => "a rate like `10/s` or `100k/min`",
        status => "a three-digit HTTP status",
        value | env_call => "a string or env(\"NAME\")",
        template => "a string, env(\"NAME\"), a request fact, `request_id` or `trace_id`",
        method | methods => "an HTTP method (GET, POST, ...)",
        bool_lit => "`true` or `false`",
        expr | primary | paren | fact | reference | literal | call => "an expression",
        infix_op | op_and | op_or | op_eq | op_ne | op_ge | op_le | op_gt | op_lt => "an operator",
        json_value | json_object | json_array | json_pair => "a JSON value",
        json_template | jt_object | jt_array | jt_pair => "a JSON value, whose values may be templates",
        respond_header => "`header \"name\" = VALUE`",
        item | import_decl | gateway_decl | upstream_decl | keys_decl | jwt_decl | basic_decl | tenant_decl
        | matcher_decl | limit_decl | route_decl | test_decl => {
            "a declaration (gateway, upstream, keys, jwt, basic, tenant, matcher, limit, route, test, import)"
        }
        shared_key => "`key`, `tenant`, `client` or `header \"name\"`",
        auth_method => "a credential set's name",
        set_message => "`message \"...\"`",
        cors_clause | cors_methods | cors_headers | cors_expose | cors_credentials | cors_max_age => {
            "`methods`, `headers`, `expose`, `credentials` or `max_age`"
        }
        on_error_mode => "`local`, `allow` or `deny`",
        forwarded_mode => "`strip`, `append` or `keep`",
        balance_mode => "`round_robin`, `weighted`, `least_conn`, `least_latency` or `hash(...)`",
        limit_kind => "`rate`, `tokens` or `concurrent`",
        limit_key => "`key`, `tenant`, `route`, `client`, `header \"name\"`, `claim[\"name\"]` or `(expression)`",
        credential | cred_header | cred_bearer | cred_query => "`header \"name\"`, `bearer` or `query \"name\"`",
        builtin => "one of health, ready, metrics, tokens, usage, upstreams, config",
        cache_result => "`hit`, `miss` or `bypass`",
        retry_cond => "`connect_error`, `timeout` or a status code",
        string_list => "a list of strings like [\"*\"]",
        expectation | expect_status | expect_route | expect_upstream | expect_tenant | expect_cache | expect_claim
        | expect_header | expect_body | expect_limit => {
            "a status, `route NAME`, `upstream NAME`, `tenant NAME`, `cache hit|miss|bypass`, `claim \"name\" = \"value\"`, `header \"name\" = \"value\"`, `body ...` or `limit NAME`"
        }
        kw_if => "`if`",
        kw_from => "`from`",
        kw_every => "`every`",
        kw_cert => "`cert`",
        kw_key => "`key`",
        kw_secret => "`secret`",
        kw_header => "`header`",
        kw_origins => "`origins`",
        kw_local | state_local | state_redis => "`local` or `redis`",
        _ => {
            let name = format!("{rule:?}");
            if let Some(kw) = name.strip_prefix("kw_") {
                return KEYWORD_NAMES.iter().copied().find(|k| *k == kw);
            }
            return None;
        }
    })
}

impl<'t> Walker<'t> {
    /// Refuse input nested deeper than MAX_DEPTH before pest's recursion sees it.
    pub(super) fn check_depth(&self) -> Option<Diag> {
        let bytes = self.text.as_bytes();
        let mut depth = 0usize;
        let mut i = 0;
        let mut in_string = false;
        let mut in_comment = false;
        // A backstop that ignores strings and comments (a regex like /#/ or /"/ hides the rest of
        // a line from the careful count): nesting stays bounded whatever the lexing says.
        let mut raw = 0usize;
        for (at, b) in bytes.iter().enumerate() {
            match b {
                b'(' | b'[' | b'{' => {
                    raw += 1;
                    if raw > 4 * MAX_DEPTH {
                        return Some(self.too_deep(at));
                    }
                }
                b')' | b']' | b'}' => raw = raw.saturating_sub(1),
                _ => {}
            }
        }
        while i < bytes.len() {
            let b = bytes[i];
            if in_comment {
                in_comment = b != b'\n';
            } else if in_string {
                match b {
                    b'\\' => i += 1,
                    b'"' | b'\n' => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'#' => in_comment = true,
                    b'"' => in_string = true,
                    b'(' | b'[' | b'{' => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Some(self.too_deep(i));
                        }
                    }
                    b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            i += 1;
        }
        None
    }

    pub(super) fn too_deep(&self, at: usize) -> Diag {
        Diag::error(Code::SyntaxTooDeep, format!("nesting deeper than {MAX_DEPTH} levels"))
            .primary(self.at(at, at + 1), "this bracket is too deeply nested")
            .help("flatten the expression or block; name parts of it with `matcher`")
    }

    /// Turn a pest error at `offset` (where the sub-parse began) into words.
    pub(super) fn pest_error(&self, e: gw_grammar::pest::error::Error<Rule>, offset: usize) -> Diag {
        let pos = match e.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        } + offset;
        let mut expected: Vec<String> = match &e.variant {
            ErrorVariant::ParsingError { positives, .. } => {
                positives.iter().filter_map(|r| describe(*r)).map(str::to_string).collect()
            }
            ErrorVariant::CustomError { .. } => vec![],
        };
        if expected.is_empty() {
            // Rules name most of what may come; a literal (`{`, `=`) is only in the attempts.
            if let Some(attempts) = e.parse_attempts() {
                // pest does not export the token type: literals print as themselves, character
                // ranges as `a..z` and built-in rules in capitals; keep the literals, but not
                // whitespace and comments, which may come anywhere.
                expected.extend(attempts.expected_tokens().into_iter().map(|t| t.to_string()).filter_map(|t| {
                    let builtin = t.contains("..") || t.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                    let skipped = t.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}').is_empty();
                    (!builtin && !skipped && t != "#").then(|| format!("`{t}`"))
                }));
            }
        }
        expected.sort_unstable();
        expected.dedup();
        if let Some(d) = self.misplaced(pos) {
            return d;
        }
        if let Some(d) = self.unclosed_at_eof(pos, offset) {
            return d;
        }
        let found = self.token_at(pos);
        let line_rest = self.text.get(pos..).unwrap_or("").lines().next().unwrap_or("");
        if found == "\"" && !line_rest[1..].contains('"') {
            return Diag::error(Code::SyntaxUnexpected, "unterminated string")
                .primary(self.at(pos, pos + line_rest.len()), "this string is not closed on its line")
                .help("close the string with `\"`; write a quote inside a string as `\\\"`");
        }
        let what = match expected.len() {
            0 => "something else".to_string(),
            1 => expected[0].clone(),
            _ => {
                let (last, rest) = expected.split_last().map_or((String::new(), &[][..]), |(l, r)| (l.clone(), r));
                format!("{} or {}", rest.join(", "), last)
            }
        };
        let end = (pos + found.len().max(1)).min(self.text.len()).max(pos);
        Diag::error(Code::SyntaxUnexpected, format!("expected {what}, found {}", describe_found(found)))
            .primary(self.at(pos, end), format!("expected {what} here"))
    }

    /// A mistake recognised wherever the parser stops: an operator from another language
    /// (`&&`, `||`, `!`), or a character no name or keyword contains (a NUL byte, a Cyrillic
    /// `р` that looks like `p`).
    pub(super) fn misplaced(&self, pos: usize) -> Option<Diag> {
        let rest = self.text.get(pos..)?;
        for (op, word) in [("&&", "and"), ("||", "or"), ("&", "and")] {
            if rest.starts_with(op) {
                return Some(self.foreign_operator(pos, op, word));
            }
        }
        if rest.starts_with('!') && !rest.starts_with("!=") {
            return Some(self.foreign_operator(pos, "!", "not"));
        }
        let c = rest.chars().next().filter(|c| chars::is_foreign(*c))?;
        let span = self.at(pos, pos + c.len_utf8());
        let is_name_char = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
        let before = self.text[..pos].chars().next_back().is_some_and(is_name_char);
        let after = rest[c.len_utf8()..].chars().next().is_some_and(is_name_char);
        let in_name = c.is_alphanumeric() || before || after;
        let name = chars::describe(c);
        let d = if in_name {
            Diag::error(Code::SyntaxCharacter, format!("{name} is not allowed in a name"))
        } else {
            Diag::error(Code::SyntaxCharacter, format!("{name} is not allowed outside a string"))
        };
        let label = match chars::ascii_lookalike(c) {
            Some(a) => format!("this looks like `{a}` but is {name}"),
            None => format!("this is {name}"),
        };
        // (After the last character that is not a name's, which may take several bytes.)
        let word_start =
            self.text[..pos].char_indices().rev().find(|&(_, c)| !is_name_char(c)).map_or(0, |(i, c)| i + c.len_utf8());
        let word_end = rest.find(|c: char| !is_name_char(c)).map_or(self.text.len(), |i| pos + i);
        let word = &self.text[word_start..word_end];
        let help = match chars::ascii_spelling(word) {
            Some(ascii) => format!("did you mean `{ascii}`? names are ASCII letters, digits, `_` and `-`"),
            None => "names and keywords are ASCII letters, digits, `_` and `-`; other characters may appear \
                     only inside strings"
                .to_string(),
        };
        Some(d.primary(span, label).help(help))
    }

    pub(super) fn foreign_operator(&self, pos: usize, op: &str, word: &str) -> Diag {
        Diag::error(Code::SyntaxOperator, format!("`{op}` is not a gw operator: write `{word}`"))
            .primary(self.at(pos, pos + op.len()), format!("write `{word}` here"))
            .help("gw's boolean operators are words: `and`, `or`, `not` (as in `a == 1 and not b exists`)")
    }

    /// At the end of the file inside a block: say which `{` was left open.
    pub(super) fn unclosed_at_eof(&self, pos: usize, from: usize) -> Option<Diag> {
        if !self.token_at(pos).is_empty() {
            return None;
        }
        let open = unclosed_brace(self.text, from)?;
        let line_start = self.text[..open].rfind('\n').map_or(0, |i| i + 1);
        let header = self.text[line_start..open].trim();
        let block = if header.is_empty() { "block".to_string() } else { format!("`{header}` block") };
        let last_end = self.text.trim_end().len();
        let last_start = self.text[..last_end]
            .char_indices()
            .rev()
            .find(|&(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8())
            .min(last_end);
        let d = Diag::error(Code::SyntaxUnexpected, format!("the file ends inside the {block}: a `}}` is missing"))
            .primary(self.at(last_start.max(open), last_end.max(open + 1)), "the file ends here, inside the block")
            .secondary(self.at(open, open + 1), "this `{` is never closed");
        Some(d.help("close the block with `}` after its last statement"))
    }

    /// The token starting at `pos`, for "found ..." in messages.
    pub(super) fn token_at(&self, pos: usize) -> &'t str {
        let rest = self.text.get(pos..).unwrap_or("");
        let rest = rest.trim_end_matches(['\r']);
        if rest.is_empty() {
            return "";
        }
        let first = rest.chars().next().unwrap_or(' ');
        if first.is_alphanumeric() || first == '_' {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-')).unwrap_or(rest.len());
            &rest[..end]
        } else {
            &rest[..first.len_utf8()]
        }
    }

    pub(super) fn stray_item(&mut self, pair: &P<'_>) {
        let span = self.span(pair);
        if let Some(d) = self.misplaced(span.start as usize) {
            self.diags.push(d);
            return;
        }
        let word = self.token_at(span.start as usize);
        if let Some((rule, usage_line)) = usage(Block::Top, word) {
            let start = span.start as usize;
            let rest = self.text.get(start..).unwrap_or("");
            let d = match parse_detailed(rule, rest) {
                Err(e) => self.pest_error(e, start),
                Ok(_) => Diag::error(Code::SyntaxUnexpected, format!("could not read this `{word}` declaration"))
                    .primary(span, "not understood"),
            };
            let d =
                if d.help.is_none() { d.help(format!("a `{word}` declaration looks like: {usage_line}")) } else { d };
            self.diags.push(d);
            return;
        }
        let word_span = self.at(span.start as usize, span.start as usize + word.len().max(1));
        let mut d =
            Diag::error(Code::SyntaxUnknownItem, format!("expected a declaration, found {}", describe_found(word)))
                .primary(word_span, "not a declaration");
        d = match did_you_mean(word, ITEM_KEYWORDS.iter().copied()) {
            Some(h) => d.help(h),
            None => d.help("a policy is made of: gateway, upstream, keys, tenant, matcher, route, test and import"),
        };
        self.diags.push(d);
    }

    pub(super) fn bad_stmt(&mut self, pair: &P<'_>, block: Block) {
        let span = self.span(pair);
        if let Some(d) = self.misplaced(span.start as usize) {
            self.diags.push(d);
            return;
        }
        let word = self.token_at(span.start as usize);
        let word_span = self.at(span.start as usize, span.start as usize + word.len().max(1));
        if let Some((rule, usage_line)) = usage(block, word) {
            let start = span.start as usize;
            let rest = self.text.get(start..).unwrap_or("");
            let d = match parse_detailed(rule, rest) {
                Err(e) => self.pest_error(e, start),
                Ok(_) => Diag::error(Code::SyntaxBadStatement, format!("could not read this `{word}` statement"))
                    .primary(span, "not understood"),
            };
            let d = if d.code == Code::SyntaxUnexpected { Diag { code: Code::SyntaxBadStatement, ..d } } else { d };
            let d = if d.help.is_none() { d.help(format!("write it as: {usage_line}")) } else { d };
            self.diags.push(d);
            return;
        }
        if ITEM_KEYWORDS.contains(&word) {
            self.diags.push(
                Diag::error(Code::SyntaxUnexpected, format!("`{word}` inside {}: a `}}` is missing", block.name()))
                    .primary(word_span, format!("a new `{word}` starts here"))
                    .help("close the block above with `}` before starting another declaration"),
            );
            return;
        }
        let mut d = Diag::error(
            Code::SyntaxUnknownStatement,
            format!("{} is not a statement of {}", describe_found(word), block.name()),
        )
        .primary(word_span, "unknown statement");
        d = match did_you_mean(word, block.keywords().iter().copied()) {
            Some(h) => d.help(h),
            None => d.help(format!("{} may contain: {}", block.name(), block.keywords().join(", "))),
        };
        self.diags.push(d);
    }
}

pub(super) fn describe_found(tok: &str) -> String {
    if tok.is_empty() {
        "end of file".to_string()
    } else if tok == "\n" || tok == "\r" {
        "end of line".to_string()
    } else if let Some((cut, _)) = tok.char_indices().nth(MAX_FOUND_CHARS) {
        format!("`{}…`", &tok[..cut])
    } else {
        format!("`{tok}`")
    }
}

/// Longest token quoted in a message; a longer one is cut (a 5 MB word stays one line).
pub(super) const MAX_FOUND_CHARS: usize = 40;

/// The innermost `{` after `from` that is never closed (outside strings and comments).
pub(super) fn unclosed_brace(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut open = vec![];
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => i = text[i..].find('\n').map_or(bytes.len(), |n| i + n),
            b'"' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => open.push(i),
            b'}' => {
                open.pop();
            }
            _ => {}
        }
        i += 1;
    }
    open.pop()
}

/// Parse `text` as `rule` with pest's error detail on, so that a failure lists the literal
/// tokens expected. Only failing statements are parsed this way (detail halves parse speed);
/// the switch is global, so the lock keeps two detailed parses from switching it off under
/// each other.
pub(super) fn parse_detailed(rule: Rule, text: &str) -> Result<(), gw_grammar::pest::error::Error<Rule>> {
    static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = DETAIL.lock().unwrap_or_else(|e| e.into_inner());
    gw_grammar::pest::set_error_detail(true);
    let result = GwpParser::parse(rule, text).map(|_| ());
    gw_grammar::pest::set_error_detail(false);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules `describe` does not name (punctuation, recovery rules, silent helpers): an error
    /// that expects one of them shows the others instead. A rule added to the grammar fails
    /// here until it gets a description or is added to this list.
    const UNNAMED: &[&str] = &[
        "WHITESPACE",
        "COMMENT",
        "file",
        "stray_item",
        "stray_block",
        "gateway_stmt",
        "g_listen",
        "g_admin",
        "g_state",
        "g_audit",
        "g_max_body",
        "g_max_header_bytes",
        "g_max_headers",
        "g_header_timeout",
        "g_idle_timeout",
        "g_drain_timeout",
        "g_tls",
        "g_policy_header",
        "g_forwarded",
        "upstream_stmt",
        "u_target",
        "target_weight",
        "target_region",
        "u_balance",
        "balance_hash",
        "u_header",
        "u_timeout",
        "u_connect_timeout",
        "u_health",
        "health_every",
        "health_expect",
        "health_healthy",
        "health_unhealthy",
        "health_space",
        "u_retry",
        "u_max_connections",
        "u_affinity",
        "jwt_stmt",
        "j_alg",
        "j_secret",
        "j_key",
        "j_jwks",
        "j_issuer",
        "j_audience",
        "j_leeway",
        "j_tenant",
        "j_message",
        "basic_tenant",
        "tenant_every",
        "tenant_stmt",
        "t_rate",
        "t_tokens",
        "t_concurrent",
        "t_region",
        "route_stmt",
        "r_when",
        "r_auth_none",
        "r_auth",
        "optional_flag",
        "r_allow",
        "r_deny",
        "r_limit",
        "r_limit_use",
        "limit_rate",
        "limit_tokens",
        "limit_concurrent",
        "lk_header",
        "lk_expr",
        "lk_claim",
        "shadow_flag",
        "r_set",
        "r_strip",
        "r_rewrite",
        "rewrite_prefix",
        "rewrite_path",
        "r_respond",
        "r_cache",
        "cache_shared",
        "cache_status",
        "r_websocket",
        "r_idempotent",
        "r_cors",
        "r_to",
        "r_serve",
        "test_stmt",
        "t_send",
        "send_header",
        "send_body",
        "send_client",
        "t_advance",
        "t_expect",
        "bad_stmt",
        "bad_word",
        "bad_rest",
        "value_atom",
        "template_atom",
        "prefix_op",
        "op_contains",
        "op_matches",
        "op_in",
        "op_starts",
        "op_ends",
        "postfix",
        "bad_eq",
        "call_name",
        "fact_head",
        "accessor",
        "list",
        "json_number",
        "json_true",
        "json_false",
        "json_null",
        "semi",
        "ident_start",
        "ident_char",
        "escape",
        "bad_escape",
        "regex_flags",
        "keyword",
        "kw_as",
        "kw_none",
    ];

    #[test]
    fn every_rule_is_described_or_listed_as_unnamed() {
        let unnamed: Vec<String> =
            Rule::all_rules().iter().filter(|r| describe(**r).is_none()).map(|r| format!("{r:?}")).collect();
        assert_eq!(unnamed, UNNAMED, "rules without a description");
    }
}
