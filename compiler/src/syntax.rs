//! Stage 1: text → AST. pest's pairs are the concrete tree; this module walks them into the
//! typed `ast`, keeping spans, and turns pest's raw errors into diagnostics that say in words
//! what was expected. The grammar's recovery rules (`bad_stmt`, `stray_item`, `bad_eq`) let one
//! run report many mistakes; each is re-parsed alone here to say precisely what is wrong.

use gw_grammar::pest::error::{ErrorVariant, InputLocation};
use gw_grammar::pest::iterators::Pair;
use gw_grammar::pest::Parser;
use gw_grammar::{GwpParser, Rule};

use crate::ast::*;
use crate::chars;
use crate::diagnostics::{did_you_mean, Code, Diag};
use crate::source::{FileId, Span};

/// Deepest nesting of `(`, `[` and `{` accepted; deeper input gets a diagnostic, never a
/// stack overflow.
pub const MAX_DEPTH: usize = 64;
/// Most operands in one expression.
pub const MAX_OPERANDS: usize = 256;

/// A `# comment`, kept for the formatter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub span: Span,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub file: File,
    pub comments: Vec<Comment>,
}

/// Parse one file. Always returns what could be read, plus every diagnostic found.
pub fn parse(file: FileId, text: &str) -> (Parsed, Vec<Diag>) {
    let mut p = Walker { file, text, diags: vec![] };
    if let Some(d) = p.check_depth() {
        return (Parsed::default(), vec![d]);
    }
    let pairs = match GwpParser::parse(Rule::file, text) {
        Ok(pairs) => pairs,
        Err(e) => {
            let d = p.pest_error(e, 0);
            return (Parsed::default(), vec![d]);
        }
    };
    let mut parsed = Parsed::default();
    let mut last_stray_was_reported = false;
    for pair in pairs.clone().flatten() {
        if pair.as_rule() == Rule::COMMENT {
            parsed.comments.push(Comment { span: p.span(&pair), text: pair.as_str().trim_end().to_string() });
        }
    }
    if let Some(top) = pairs.into_iter().next() {
        for pair in inner(top) {
            match pair.as_rule() {
                Rule::EOI => {}
                Rule::stray_item => {
                    if !last_stray_was_reported {
                        p.stray_item(&pair);
                    }
                    last_stray_was_reported = true;
                }
                _ => {
                    last_stray_was_reported = false;
                    if let Some(item) = p.item(pair) {
                        parsed.file.items.push(item);
                    }
                }
            }
        }
    }
    (parsed, p.diags)
}

/// The children of a pair, without comments.
fn inner(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| p.as_rule() != Rule::COMMENT)
}

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
        method | methods => "an HTTP method (GET, POST, ...)",
        bool_lit => "`true` or `false`",
        expr | primary | paren | fact | reference | literal | call => "an expression",
        infix_op | op_and | op_or | op_eq | op_ne | op_ge | op_le | op_gt | op_lt => "an operator",
        json_value | json_object | json_array | json_pair => "a JSON value",
        item | import_decl | gateway_decl | upstream_decl | keys_decl | tenant_decl | matcher_decl | route_decl
        | test_decl => "a declaration (gateway, upstream, keys, tenant, matcher, route, test, import)",
        on_error_mode => "`local`, `allow` or `deny`",
        forwarded_mode => "`strip`, `append` or `keep`",
        balance_mode => "`round_robin`, `weighted`, `least_conn` or `hash(...)`",
        limit_kind => "`rate`, `tokens` or `concurrent`",
        limit_key => "`key`, `tenant`, `route`, `client`, `header \"name\"` or `(expression)`",
        credential | cred_header | cred_bearer | cred_query => "`header \"name\"`, `bearer` or `query \"name\"`",
        builtin => "one of health, ready, metrics, tokens, usage, upstreams",
        retry_cond => "`connect_error`, `timeout` or a status code",
        string_list => "a list of strings like [\"*\"]",
        expectation | expect_status | expect_route | expect_upstream | expect_tenant => {
            "a status, `route NAME`, `upstream NAME` or `tenant NAME`"
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

/// Every keyword, for did-you-mean and for `describe`.
pub const KEYWORD_NAMES: &[&str] = &[
    "import",
    "gateway",
    "upstream",
    "keys",
    "tenant",
    "matcher",
    "route",
    "test",
    "listen",
    "admin",
    "token",
    "state",
    "local",
    "redis",
    "on_error",
    "allow",
    "deny",
    "audit",
    "rotate",
    "max_body",
    "max_header_bytes",
    "max_headers",
    "header_timeout",
    "idle_timeout",
    "drain_timeout",
    "tls",
    "cert",
    "key",
    "policy_header",
    "forwarded",
    "strip",
    "append",
    "keep",
    "target",
    "weight",
    "region",
    "balance",
    "round_robin",
    "weighted",
    "least_conn",
    "hash",
    "header",
    "timeout",
    "connect_timeout",
    "health",
    "every",
    "retry",
    "on",
    "connect_error",
    "max_connections",
    "affinity",
    "from",
    "salt",
    "rate",
    "burst",
    "tokens",
    "concurrent",
    "when",
    "host",
    "if",
    "else",
    "auth",
    "via",
    "bearer",
    "query",
    "optional",
    "limit",
    "per",
    "model",
    "estimate",
    "client",
    "shadow",
    "set",
    "rewrite",
    "prefix",
    "path",
    "respond",
    "json",
    "cache",
    "max",
    "websocket",
    "cors",
    "origins",
    "methods",
    "jwt",
    "secret",
    "issuer",
    "serve",
    "to",
    "send",
    "body",
    "advance",
    "expect",
    "env",
    "and",
    "or",
    "not",
    "contains",
    "matches",
    "in",
    "starts_with",
    "ends_with",
    "exists",
    "method",
    "client_ip",
    "param",
];

const ITEM_KEYWORDS: &[&str] = &["import", "gateway", "upstream", "keys", "tenant", "matcher", "route", "test"];
const GATEWAY_STMTS: &[&str] = &[
    "listen",
    "admin",
    "state",
    "audit",
    "max_body",
    "max_header_bytes",
    "max_headers",
    "header_timeout",
    "idle_timeout",
    "drain_timeout",
    "tls",
    "policy_header",
    "forwarded",
];
const UPSTREAM_STMTS: &[&str] =
    &["target", "balance", "header", "timeout", "connect_timeout", "health", "retry", "max_connections", "affinity"];
const TENANT_STMTS: &[&str] = &["rate", "tokens", "concurrent", "region"];
const ROUTE_STMTS: &[&str] = &[
    "when",
    "auth",
    "allow",
    "deny",
    "limit",
    "set",
    "strip",
    "rewrite",
    "respond",
    "cache",
    "websocket",
    "cors",
    "jwt",
    "serve",
    "to",
];
const TEST_STMTS: &[&str] = &["send", "expect", "advance"];

/// The usage line of each statement, shown as help when one is written wrongly.
fn usage(block: Block, word: &str) -> Option<(Rule, &'static str)> {
    use Rule::*;
    Some(match (block, word) {
        (Block::Gateway, "listen") => (g_listen, "listen \"127.0.0.1:8080\""),
        (Block::Gateway, "admin") => (g_admin, "admin \"127.0.0.1:9090\" token env(\"GW_ADMIN_TOKEN\")"),
        (Block::Gateway, "state") => (g_state, "state local   or   state redis env(\"GW_REDIS_URL\") on_error local|allow|deny"),
        (Block::Gateway, "audit") => (g_audit, "audit \"logs/audit.jsonl\" [rotate 100MB]"),
        (Block::Gateway, "max_body") => (g_max_body, "max_body 10MB"),
        (Block::Gateway, "max_header_bytes") => (g_max_header_bytes, "max_header_bytes 64KB"),
        (Block::Gateway, "max_headers") => (g_max_headers, "max_headers 100"),
        (Block::Gateway, "header_timeout") => (g_header_timeout, "header_timeout 10s"),
        (Block::Gateway, "idle_timeout") => (g_idle_timeout, "idle_timeout 60s"),
        (Block::Gateway, "drain_timeout") => (g_drain_timeout, "drain_timeout 30s"),
        (Block::Gateway, "tls") => (g_tls, "tls cert \"cert.pem\" key \"key.pem\""),
        (Block::Gateway, "policy_header") => (g_policy_header, "policy_header false"),
        (Block::Gateway, "forwarded") => (g_forwarded, "forwarded strip|append|keep"),
        (Block::Upstream, "target") => (u_target, "target \"http://10.0.0.1:8000\" [weight 3] [region \"east\"]"),
        (Block::Upstream, "balance") => (u_balance, "balance round_robin|weighted|least_conn|hash(EXPR)"),
        (Block::Upstream, "header") => (u_header, "header \"authorization\" = \"Bearer \" + env(\"KEY\")"),
        (Block::Upstream, "timeout") => (u_timeout, "timeout 60s"),
        (Block::Upstream, "connect_timeout") => (u_connect_timeout, "connect_timeout 5s"),
        (Block::Upstream, "health") => (u_health, "health GET \"/health\" every 10s [timeout 2s]"),
        (Block::Upstream, "retry") => (u_retry, "retry 2 on connect_error, 502, 503"),
        (Block::Upstream, "max_connections") => (u_max_connections, "max_connections 100"),
        (Block::Upstream, "affinity") => (u_affinity, "affinity header[\"x-region\"]"),
        (Block::Tenant, "rate") => (t_rate, "rate 100/s [burst 200]"),
        (Block::Tenant, "tokens") => (t_tokens, "tokens 500k/min"),
        (Block::Tenant, "concurrent") => (t_concurrent, "concurrent 20"),
        (Block::Tenant, "region") => (t_region, "region \"east\""),
        (Block::Route, "when") => (r_when, "when POST|GET \"/v1/path/{param}\" [host \"api.example.com\"] [if EXPR]"),
        (Block::Route, "auth") => (r_auth, "auth KEYSET [via header \"x-api-key\", bearer, query \"key\"] [optional]"),
        (Block::Route, "allow") => (r_allow, "allow if EXPR [else 403 \"message\"]"),
        (Block::Route, "deny") => (r_deny, "deny 403 \"message\" if EXPR"),
        (Block::Route, "limit") => (r_limit, "limit rate 10/s [burst 20] | tokens 100k/min | concurrent 5 [per key|tenant|route|client|header \"h\"|(EXPR)] [model /re/] [if EXPR] [shadow]"),
        (Block::Route, "set") => (r_set, "set header \"x-name\" = \"value\""),
        (Block::Route, "strip") => (r_strip, "strip header \"x-forwarded-for\", \"cookie\""),
        (Block::Route, "rewrite") => (r_rewrite, "rewrite prefix \"/proxy\" => \"\"   or   rewrite path \"/v2/{id}\""),
        (Block::Route, "respond") => (r_respond, "respond 200 json {\"ok\": true}   or   respond 204"),
        (Block::Route, "cache") => (r_cache, "cache 60s [max 10MB]"),
        (Block::Route, "websocket") => (r_websocket, "websocket"),
        (Block::Route, "cors") => (r_cors, "cors origins [\"https://app.example.com\"] [methods GET|POST]"),
        (Block::Route, "jwt") => (r_jwt, "jwt secret env(\"JWT_SECRET\") [issuer \"https://issuer\"]"),
        (Block::Route, "serve") => (r_serve, "serve health|ready|metrics|tokens|usage|upstreams"),
        (Block::Route, "to") => (r_to, "to UPSTREAM"),
        (Block::Test, "send") => (t_send, "send POST \"/path\" [header \"name\" = \"value\"] [body {...}] [client \"1.2.3.4\"]"),
        (Block::Test, "expect") => (t_expect, "expect 403 [\"message\"] | route NAME | upstream NAME | tenant NAME"),
        (Block::Test, "advance") => (t_advance, "advance 1s"),
        (Block::Top, "import") => (import_decl, "import \"common.gwp\""),
        (Block::Top, "gateway") => (gateway_decl, "gateway { listen \"127.0.0.1:8080\" ... }"),
        (Block::Top, "upstream") => (upstream_decl, "upstream NAME { target \"http://host:port\" ... }"),
        (Block::Top, "keys") => (keys_decl, "keys NAME from \"keys/file.keys\" [salt env(\"SALT\")]"),
        (Block::Top, "tenant") => (tenant_decl, "tenant NAME { rate 10/s; tokens 20k/min; concurrent 2 }"),
        (Block::Top, "matcher") => (matcher_decl, "matcher NAME = EXPR"),
        (Block::Top, "route") => (route_decl, "route NAME { when POST \"/path\" ... to UPSTREAM }"),
        (Block::Top, "test") => (test_decl, "test \"name\" { send GET \"/path\"; expect 200 }"),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Top,
    Gateway,
    Upstream,
    Tenant,
    Route,
    Test,
}

impl Block {
    fn keywords(self) -> &'static [&'static str] {
        match self {
            Block::Top => ITEM_KEYWORDS,
            Block::Gateway => GATEWAY_STMTS,
            Block::Upstream => UPSTREAM_STMTS,
            Block::Tenant => TENANT_STMTS,
            Block::Route => ROUTE_STMTS,
            Block::Test => TEST_STMTS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Block::Top => "a policy file",
            Block::Gateway => "a `gateway` block",
            Block::Upstream => "an `upstream` block",
            Block::Tenant => "a `tenant` block",
            Block::Route => "a `route` block",
            Block::Test => "a `test` block",
        }
    }
}

struct Walker<'t> {
    file: FileId,
    text: &'t str,
    diags: Vec<Diag>,
}

type P<'i> = Pair<'i, Rule>;

impl<'t> Walker<'t> {
    /// The pair's span without the whitespace pest's implicit skipping leaves at its end.
    fn span(&self, pair: &P<'_>) -> Span {
        let s = pair.as_span();
        let trimmed = s.as_str().trim_end_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        Span::new(self.file, s.start(), s.start() + trimmed.len())
    }

    fn at(&self, start: usize, end: usize) -> Span {
        Span::new(self.file, start, end)
    }

    /// Refuse input nested deeper than MAX_DEPTH before pest's recursion sees it.
    fn check_depth(&self) -> Option<Diag> {
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

    fn too_deep(&self, at: usize) -> Diag {
        Diag::error(Code::SyntaxTooDeep, format!("nesting deeper than {MAX_DEPTH} levels"))
            .primary(self.at(at, at + 1), "this bracket is too deeply nested")
            .help("flatten the expression or block; name parts of it with `matcher`")
    }

    /// Turn a pest error at `offset` (where the sub-parse began) into words.
    fn pest_error(&self, e: gw_grammar::pest::error::Error<Rule>, offset: usize) -> Diag {
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
    fn misplaced(&self, pos: usize) -> Option<Diag> {
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
        let word_start = self.text[..pos].rfind(|c: char| !is_name_char(c)).map_or(0, |i| i + 1);
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

    fn foreign_operator(&self, pos: usize, op: &str, word: &str) -> Diag {
        Diag::error(Code::SyntaxOperator, format!("`{op}` is not a gw operator: write `{word}`"))
            .primary(self.at(pos, pos + op.len()), format!("write `{word}` here"))
            .help("gw's boolean operators are words: `and`, `or`, `not` (as in `a == 1 and not b exists`)")
    }

    /// At the end of the file inside a block: say which `{` was left open.
    fn unclosed_at_eof(&self, pos: usize, from: usize) -> Option<Diag> {
        if !self.token_at(pos).is_empty() {
            return None;
        }
        let open = unclosed_brace(self.text, from)?;
        let line_start = self.text[..open].rfind('\n').map_or(0, |i| i + 1);
        let header = self.text[line_start..open].trim();
        let block = if header.is_empty() { "block".to_string() } else { format!("`{header}` block") };
        let last_end = self.text.trim_end().len();
        let last_start = self.text[..last_end].rfind(char::is_whitespace).map_or(0, |i| i + 1).min(last_end);
        let d = Diag::error(Code::SyntaxUnexpected, format!("the file ends inside the {block}: a `}}` is missing"))
            .primary(self.at(last_start.max(open), last_end.max(open + 1)), "the file ends here, inside the block")
            .secondary(self.at(open, open + 1), "this `{` is never closed");
        Some(d.help("close the block with `}` after its last statement"))
    }

    /// The token starting at `pos`, for "found ..." in messages.
    fn token_at(&self, pos: usize) -> &'t str {
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

    fn stray_item(&mut self, pair: &P<'_>) {
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

    fn bad_stmt(&mut self, pair: &P<'_>, block: Block) {
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

    fn item(&mut self, pair: P<'_>) -> Option<Item> {
        let span = self.span(&pair);
        Some(match pair.as_rule() {
            Rule::import_decl => {
                let s = inner(pair).find(|p| p.as_rule() == Rule::string)?;
                Item::Import(Import { path: self.string(s), span })
            }
            Rule::gateway_decl => {
                let mut settings = vec![];
                for p in inner(pair).skip(1) {
                    if p.as_rule() == Rule::bad_stmt {
                        self.bad_stmt(&p, Block::Gateway);
                    } else if let Some(s) = self.setting(p) {
                        settings.push(s);
                    }
                }
                Item::Gateway(Gateway { settings, span })
            }
            Rule::upstream_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let mut stmts = vec![];
                for p in it {
                    if p.as_rule() == Rule::bad_stmt {
                        self.bad_stmt(&p, Block::Upstream);
                    } else if let Some(s) = self.upstream_stmt(p) {
                        stmts.push(s);
                    }
                }
                Item::Upstream(Upstream { name, stmts, span })
            }
            Rule::keys_decl => {
                let mut it = inner(pair).filter(|p| !p.as_rule_name_is_kw());
                let name = self.ident(it.next()?);
                let file = self.string(it.next()?);
                let salt = it.next().map(|p| self.value(p));
                Item::Keys(KeySet { name, file, salt, span })
            }
            Rule::tenant_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let mut stmts = vec![];
                for p in it {
                    if p.as_rule() == Rule::bad_stmt {
                        self.bad_stmt(&p, Block::Tenant);
                    } else if let Some(s) = self.tenant_stmt(p) {
                        stmts.push(s);
                    }
                }
                Item::Tenant(Tenant { name, stmts, span })
            }
            Rule::matcher_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let expr = self.expr(it.next()?)?;
                Item::Matcher(Matcher { name, expr, span })
            }
            Rule::route_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let mut stmts = vec![];
                for p in it {
                    if p.as_rule() == Rule::bad_stmt {
                        self.bad_stmt(&p, Block::Route);
                    } else if let Some(s) = self.route_stmt(p) {
                        stmts.push(s);
                    }
                }
                Item::Route(Route { name, stmts, span })
            }
            Rule::test_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.string(it.next()?);
                let mut stmts = vec![];
                for p in it {
                    if p.as_rule() == Rule::bad_stmt {
                        self.bad_stmt(&p, Block::Test);
                    } else if let Some(s) = self.test_stmt(p) {
                        stmts.push(s);
                    }
                }
                Item::Test(Test { name, stmts, span })
            }
            _ => return None,
        })
    }

    // ------------------------------------------------------------ gateway

    fn setting(&mut self, pair: P<'_>) -> Option<Setting> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let args: Vec<P<'_>> = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect();
        let mut args = args.into_iter();
        let kind = match rule {
            Rule::g_listen => SettingKind::Listen(self.value(args.next()?)),
            Rule::g_admin => {
                let addr = self.value(args.next()?);
                SettingKind::Admin { addr, token: args.next().map(|p| self.value(p)) }
            }
            Rule::g_state => {
                let store = args.next()?;
                match store.as_rule() {
                    Rule::state_redis => {
                        let mut it = inner(store).filter(|p| !p.as_rule_name_is_kw());
                        let url = self.value(it.next()?);
                        let on_error = match it.next().map(|p| p.as_str().trim().to_string()).as_deref() {
                            Some("allow") => OnError::Allow,
                            Some("deny") => OnError::Deny,
                            _ => OnError::Local,
                        };
                        SettingKind::State(StateStore::Redis { url, on_error })
                    }
                    _ => SettingKind::State(StateStore::Local),
                }
            }
            Rule::g_audit => {
                let path = self.value(args.next()?);
                SettingKind::Audit { path, rotate: args.next().and_then(|p| self.size(p)) }
            }
            Rule::g_max_body => SettingKind::MaxBody(self.size(args.next()?)?),
            Rule::g_max_header_bytes => SettingKind::MaxHeaderBytes(self.size(args.next()?)?),
            Rule::g_max_headers => SettingKind::MaxHeaders(self.uint(args.next()?)?),
            Rule::g_header_timeout => SettingKind::HeaderTimeout(self.duration(args.next()?)?),
            Rule::g_idle_timeout => SettingKind::IdleTimeout(self.duration(args.next()?)?),
            Rule::g_drain_timeout => SettingKind::DrainTimeout(self.duration(args.next()?)?),
            Rule::g_tls => {
                let cert = self.value(args.next()?);
                SettingKind::Tls { cert, key: self.value(args.next()?) }
            }
            Rule::g_policy_header => SettingKind::PolicyHeader(args.next()?.as_str().starts_with('t')),
            Rule::g_forwarded => SettingKind::Forwarded(match args.next()?.as_str().trim() {
                "strip" => ForwardedMode::Strip,
                "keep" => ForwardedMode::Keep,
                _ => ForwardedMode::Append,
            }),
            _ => return None,
        };
        Some(Setting { kind, span })
    }

    // ------------------------------------------------------------ upstream

    fn upstream_stmt(&mut self, pair: P<'_>) -> Option<UpstreamStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::u_target => {
                let url = self.value(args.next()?);
                let mut weight = None;
                let mut region = None;
                for p in args {
                    let q = inner(p.clone()).find(|p| !p.as_rule_name_is_kw())?;
                    match p.as_rule() {
                        Rule::target_weight => weight = self.uint(q),
                        _ => region = Some(self.string(q)),
                    }
                }
                UpstreamStmtKind::Target(Target { url, weight, region })
            }
            Rule::u_balance => {
                let mode = args.next()?;
                let text = mode.as_str().trim().to_string();
                let b = match inner(mode).next() {
                    Some(h) if h.as_rule() == Rule::balance_hash => {
                        let e = inner(h).find(|p| p.as_rule() == Rule::expr)?;
                        Balance::Hash(self.expr(e)?)
                    }
                    _ => match text.as_str() {
                        "weighted" => Balance::Weighted,
                        "least_conn" => Balance::LeastConn,
                        _ => Balance::RoundRobin,
                    },
                };
                UpstreamStmtKind::Balance(b)
            }
            Rule::u_header => {
                let name = self.header_name(args.next()?);
                UpstreamStmtKind::Header { name, value: self.value(args.next()?) }
            }
            Rule::u_timeout => UpstreamStmtKind::Timeout(self.duration(args.next()?)?),
            Rule::u_connect_timeout => UpstreamStmtKind::ConnectTimeout(self.duration(args.next()?)?),
            Rule::u_health => {
                let method = Method::parse(args.next()?.as_str())?;
                let path = self.string(args.next()?);
                let mut args = inner(args.next()?).filter(|p| !p.as_rule_name_is_kw());
                let every = self.duration(args.next()?)?;
                let timeout = match args.next() {
                    Some(p) => Some(self.duration(p)?),
                    None => None,
                };
                UpstreamStmtKind::Health(HealthCheck { method, path, every, timeout })
            }
            Rule::u_retry => {
                let attempts = self.uint(args.next()?)?;
                let mut on = vec![];
                for c in args {
                    let cspan = self.span(&c);
                    match c.as_str().trim() {
                        "connect_error" => on.push(RetryCond::ConnectError(cspan)),
                        "timeout" => on.push(RetryCond::Timeout(cspan)),
                        _ => {
                            let q = inner(c).next()?;
                            on.push(RetryCond::Status(self.uint(q)?));
                        }
                    }
                }
                UpstreamStmtKind::Retry(Retry { attempts, on })
            }
            Rule::u_max_connections => UpstreamStmtKind::MaxConnections(self.uint(args.next()?)?),
            Rule::u_affinity => UpstreamStmtKind::Affinity(self.expr(args.next()?)?),
            _ => return None,
        };
        Some(UpstreamStmt { kind, span })
    }

    // ------------------------------------------------------------ tenant

    fn tenant_stmt(&mut self, pair: P<'_>) -> Option<TenantStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::t_rate => {
                let rate = self.rate(args.next()?)?;
                let burst = match args.next() {
                    Some(p) => Some(self.uint(p)?),
                    None => None,
                };
                TenantStmtKind::Rate { rate, burst }
            }
            Rule::t_tokens => TenantStmtKind::Tokens(self.rate(args.next()?)?),
            Rule::t_concurrent => TenantStmtKind::Concurrent(self.uint(args.next()?)?),
            Rule::t_region => TenantStmtKind::Region(self.string(args.next()?)),
            _ => return None,
        };
        Some(TenantStmt { kind, span })
    }

    // ------------------------------------------------------------ route

    fn route_stmt(&mut self, pair: P<'_>) -> Option<RouteStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::r_when => {
                let mp = args.next()?;
                let methods_span = self.span(&mp);
                let methods = inner(mp).filter_map(|m| Method::parse(m.as_str())).collect();
                let path = self.string(inner(args.next()?).next()?);
                let mut host = None;
                let mut cond = None;
                for p in args {
                    match p.as_rule() {
                        Rule::string => host = Some(self.string(p)),
                        Rule::expr => cond = Some(self.expr(p)?),
                        _ => {}
                    }
                }
                RouteStmtKind::When(When { methods, methods_span, path, host, cond })
            }
            Rule::r_auth_none => RouteStmtKind::AuthNone,
            Rule::r_auth => {
                let keys = self.ident(args.next()?);
                let mut via = vec![];
                let mut optional = false;
                for p in args {
                    match p.as_rule() {
                        Rule::credential => {
                            let c = inner(p).next()?;
                            let cspan = self.span(&c);
                            match c.as_rule() {
                                Rule::cred_bearer => via.push(Credential::Bearer(cspan)),
                                Rule::cred_header => {
                                    let s = inner(c).find(|p| p.as_rule() == Rule::string)?;
                                    via.push(Credential::Header(self.lower_string(s)));
                                }
                                _ => {
                                    let s = inner(c).find(|p| p.as_rule() == Rule::string)?;
                                    via.push(Credential::Query(self.string(s)));
                                }
                            }
                        }
                        Rule::optional_flag => optional = true,
                        _ => {}
                    }
                }
                RouteStmtKind::Auth(Auth { keys, via, optional })
            }
            Rule::r_allow => {
                let cond = self.expr(args.next()?)?;
                let status = match args.next() {
                    Some(p) => Some(self.uint(p)?),
                    None => None,
                };
                let message = args.next().map(|p| self.string(p));
                RouteStmtKind::Allow { cond, status, message }
            }
            Rule::r_deny => {
                let status = self.uint(args.next()?)?;
                let message = self.string(args.next()?);
                let cond = self.expr(args.next()?)?;
                RouteStmtKind::Deny { status, message, cond }
            }
            Rule::r_limit => RouteStmtKind::Limit(self.limit(args)?),
            Rule::r_set => {
                let name = self.header_name(args.next()?);
                RouteStmtKind::SetHeader { name, value: self.value(args.next()?) }
            }
            Rule::r_strip => RouteStmtKind::StripHeaders(args.map(|p| self.header_name(p)).collect()),
            Rule::r_rewrite => {
                let r = args.next()?;
                let rule = r.as_rule();
                let mut strs = inner(r).filter(|p| p.as_rule() == Rule::string).map(|p| self.string(p));
                match rule {
                    Rule::rewrite_prefix => {
                        let from = strs.next()?;
                        RouteStmtKind::Rewrite(Rewrite::Prefix { from, to: strs.next()? })
                    }
                    _ => RouteStmtKind::Rewrite(Rewrite::Path(strs.next()?)),
                }
            }
            Rule::r_respond => {
                let status = self.uint(args.next()?)?;
                let body = match args.next() {
                    Some(p) if p.as_rule() == Rule::json_value => Some(ResponseBody::Json(self.json(p)?)),
                    Some(p) => Some(ResponseBody::Text(self.string(p))),
                    None => None,
                };
                RouteStmtKind::Respond { status, body }
            }
            Rule::r_cache => {
                let ttl = self.duration(args.next()?)?;
                let max = match args.next() {
                    Some(p) => Some(self.size(p)?),
                    None => None,
                };
                RouteStmtKind::Cache { ttl, max }
            }
            Rule::r_websocket => RouteStmtKind::Websocket,
            Rule::r_cors => {
                let origins = inner(args.next()?).map(|p| self.string(p)).collect();
                let methods = match args.next() {
                    Some(m) => inner(m).filter_map(|m| Method::parse(m.as_str())).collect(),
                    None => vec![],
                };
                RouteStmtKind::Cors { origins, methods }
            }
            Rule::r_jwt => {
                let secret = self.value(args.next()?);
                RouteStmtKind::Jwt { secret, issuer: args.next().map(|p| self.string(p)) }
            }
            Rule::r_serve => {
                let b = args.next()?;
                RouteStmtKind::Serve(Ident { name: b.as_str().to_string(), span: self.span(&b) })
            }
            Rule::r_to => RouteStmtKind::To(self.ident(args.next()?)),
            _ => return None,
        };
        Some(RouteStmt { kind, span })
    }

    fn limit<'i>(&mut self, args: impl Iterator<Item = P<'i>>) -> Option<Limit> {
        let mut limit = Limit {
            kind: LimitKind::Concurrent(Quantity { value: 0, span: Span::default() }),
            per: LimitKey::Route,
            model: None,
            cond: None,
            shadow: false,
        };
        for p in args {
            match p.as_rule() {
                Rule::limit_kind => {
                    let k = inner(p).next()?;
                    let rule = k.as_rule();
                    let mut a = inner(k).filter(|p| !p.as_rule_name_is_kw());
                    limit.kind = match rule {
                        Rule::limit_rate => {
                            let rate = self.rate(a.next()?)?;
                            let burst = match a.next() {
                                Some(p) => Some(self.uint(p)?),
                                None => None,
                            };
                            LimitKind::Rate { rate, burst }
                        }
                        Rule::limit_tokens => {
                            let rate = self.rate(a.next()?)?;
                            let estimate = match a.next() {
                                Some(p) => Some(self.uint(p)?),
                                None => None,
                            };
                            LimitKind::Tokens { rate, estimate }
                        }
                        _ => LimitKind::Concurrent(self.uint(a.next()?)?),
                    };
                }
                Rule::limit_key => {
                    let text = p.as_str().trim().to_string();
                    let k = inner(p).next();
                    limit.per = match k {
                        Some(k) if k.as_rule() == Rule::lk_header => {
                            let s = inner(k).find(|p| p.as_rule() == Rule::string)?;
                            LimitKey::Header(self.lower_string(s))
                        }
                        Some(k) if k.as_rule() == Rule::lk_expr => {
                            let e = inner(k).find(|p| p.as_rule() == Rule::expr)?;
                            LimitKey::Expr(self.expr(e)?)
                        }
                        _ => match text.as_str() {
                            "key" => LimitKey::Key,
                            "tenant" => LimitKey::Tenant,
                            "client" => LimitKey::Client,
                            _ => LimitKey::Route,
                        },
                    };
                }
                Rule::regex => limit.model = Some(self.regex(p)),
                Rule::expr => limit.cond = Some(self.expr(p)?),
                Rule::shadow_flag => limit.shadow = true,
                _ => {}
            }
        }
        Some(limit)
    }

    // ------------------------------------------------------------ tests

    fn test_stmt(&mut self, pair: P<'_>) -> Option<TestStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::t_send => {
                let method = Method::parse(args.next()?.as_str())?;
                let path = self.string(args.next()?);
                let mut send = Send { method, path, headers: vec![], body: None, client: None };
                for p in args {
                    match p.as_rule() {
                        Rule::send_header => {
                            let mut s = inner(p).filter(|p| p.as_rule() == Rule::string);
                            let name = self.lower_string(s.next()?);
                            send.headers.push((name, self.string(s.next()?)));
                        }
                        Rule::send_body => {
                            let j = inner(p).find(|p| p.as_rule() == Rule::json_value)?;
                            send.body = Some(self.json(j)?);
                        }
                        Rule::send_client => {
                            let s = inner(p).find(|p| p.as_rule() == Rule::string)?;
                            send.client = Some(self.string(s));
                        }
                        _ => {}
                    }
                }
                TestStmtKind::Send(send)
            }
            Rule::t_advance => TestStmtKind::Advance(self.duration(args.next()?)?),
            Rule::t_expect => {
                let e = args.next()?;
                let rule = e.as_rule();
                let mut a = inner(e).filter(|p| !p.as_rule_name_is_kw());
                TestStmtKind::Expect(match rule {
                    Rule::expect_status => {
                        let status = self.uint(a.next()?)?;
                        Expectation::Status { status, message: a.next().map(|p| self.string(p)) }
                    }
                    Rule::expect_route => Expectation::Route(self.ident(a.next()?)),
                    Rule::expect_upstream => Expectation::Upstream(self.ident(a.next()?)),
                    _ => Expectation::Tenant(self.ident(a.next()?)),
                })
            }
            _ => return None,
        };
        Some(TestStmt { kind, span })
    }

    // ------------------------------------------------------------ expressions

    fn expr(&mut self, pair: P<'_>) -> Option<Expr> {
        let span = self.span(&pair);
        let mut toks: Vec<Tok> = vec![];
        for p in inner(pair) {
            let pspan = self.span(&p);
            match p.as_rule() {
                Rule::prefix_op => toks.push(Tok::Not(pspan)),
                Rule::postfix => toks.push(Tok::Exists(pspan)),
                Rule::op_and => toks.push(Tok::Op(BinOp::And, pspan)),
                Rule::op_or => toks.push(Tok::Op(BinOp::Or, pspan)),
                Rule::op_eq => toks.push(Tok::Op(BinOp::Eq, pspan)),
                Rule::op_ne => toks.push(Tok::Op(BinOp::Ne, pspan)),
                Rule::op_ge => toks.push(Tok::Op(BinOp::Ge, pspan)),
                Rule::op_le => toks.push(Tok::Op(BinOp::Le, pspan)),
                Rule::op_gt => toks.push(Tok::Op(BinOp::Gt, pspan)),
                Rule::op_lt => toks.push(Tok::Op(BinOp::Lt, pspan)),
                Rule::op_contains => toks.push(Tok::Op(BinOp::Contains, pspan)),
                Rule::op_matches => toks.push(Tok::Op(BinOp::Matches, pspan)),
                Rule::op_in => toks.push(Tok::Op(BinOp::In, pspan)),
                Rule::op_starts => toks.push(Tok::Op(BinOp::StartsWith, pspan)),
                Rule::op_ends => toks.push(Tok::Op(BinOp::EndsWith, pspan)),
                Rule::bad_eq => {
                    self.diags.push(
                        Diag::error(Code::SyntaxAssign, "`=` is not a comparison")
                            .primary(pspan, "assignment is not allowed in an expression")
                            .help("to compare, write `==`"),
                    );
                    toks.push(Tok::Op(BinOp::Eq, pspan));
                }
                _ => toks.push(Tok::Operand(self.primary(p)?)),
            }
        }
        let operands = toks.iter().filter(|t| matches!(t, Tok::Operand(_))).count();
        let prefixes = toks.iter().filter(|t| matches!(t, Tok::Not(_))).count();
        if operands > MAX_OPERANDS || prefixes > MAX_OPERANDS {
            self.diags.push(
                Diag::error(Code::SyntaxTooLong, format!("expression with more than {MAX_OPERANDS} operands"))
                    .primary(span, "this expression is too long")
                    .help("split it into named matchers and combine those"),
            );
            return None;
        }
        let mut pos = 0;
        let e = climb(&mut toks, &mut pos, 0)?;
        Some(e)
    }

    fn primary(&mut self, pair: P<'_>) -> Option<Expr> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::paren => {
                let e = inner(pair).next()?;
                let mut e = self.expr(e)?;
                e.span = span;
                return Some(e);
            }
            Rule::string => ExprKind::Lit(Lit::Str(self.string(pair).value)),
            Rule::int => match parse_int(pair.as_str()) {
                Some(n) => ExprKind::Lit(Lit::Int(n)),
                None => {
                    self.number_error(span);
                    return None;
                }
            },
            Rule::float => match pair.as_str().parse::<f64>() {
                Ok(f) if f.is_finite() => ExprKind::Lit(Lit::Float(f)),
                _ => {
                    self.number_error(span);
                    return None;
                }
            },
            Rule::bool_lit => ExprKind::Lit(Lit::Bool(pair.as_str() == "true")),
            Rule::regex => ExprKind::Lit(Lit::Regex(self.regex(pair))),
            Rule::list => {
                let mut items = vec![];
                for p in inner(pair) {
                    items.push(self.expr(p)?);
                }
                ExprKind::List(items)
            }
            Rule::call => {
                let mut it = inner(pair);
                let func = match it.next()?.as_str() {
                    "lower" => Func::Lower,
                    "upper" => Func::Upper,
                    "number" => Func::Number,
                    _ => Func::Len,
                };
                let mut args = vec![];
                for p in it {
                    args.push(self.expr(p)?);
                }
                ExprKind::Call { func, args }
            }
            Rule::fact => ExprKind::Fact(self.fact(pair)?),
            Rule::reference => ExprKind::Ref(self.ident(inner(pair).next()?)),
            _ => return None,
        };
        Some(Expr { kind, span })
    }

    fn fact(&mut self, pair: P<'_>) -> Option<Fact> {
        let span = self.span(&pair);
        let mut it = inner(pair);
        let head = it.next()?;
        let head_text = head.as_str().to_string();
        let mut segs = vec![];
        for acc in it {
            let a = inner(acc).next()?;
            segs.push(match a.as_rule() {
                Rule::int => match a.as_str().parse::<usize>() {
                    Ok(n) => PathSeg::Index(n),
                    Err(_) => {
                        self.number_error(self.span(&a));
                        return None;
                    }
                },
                Rule::string => PathSeg::Field(self.string(a).value),
                _ => PathSeg::Field(a.as_str().to_string()),
            });
        }
        let named = |this: &mut Self, kind: &str, segs: Vec<PathSeg>| -> Option<String> {
            match segs.as_slice() {
                // Header names are case-insensitive; query and param names are not.
                [PathSeg::Field(f)] => Some(if kind == "header" { f.to_ascii_lowercase() } else { f.clone() }),
                _ => {
                    this.diags.push(
                        Diag::error(Code::SyntaxFact, format!("`{kind}` needs exactly one name"))
                            .primary(span, format!("write `{kind}[\"name\"]` or `{kind}.name`"))
                            .help(format!("for example `{kind}[\"x-tenant\"]`")),
                    );
                    None
                }
            }
        };
        let plain = |this: &mut Self, fact: Fact, segs: &[PathSeg]| -> Option<Fact> {
            if segs.is_empty() {
                Some(fact)
            } else {
                this.diags.push(
                    Diag::error(Code::SyntaxFact, format!("`{head_text}` has no fields"))
                        .primary(span, "this fact is a plain value")
                        .help(format!("write `{head_text}` alone")),
                );
                None
            }
        };
        match head_text.as_str() {
            "method" => plain(self, Fact::Method, &segs),
            "path" => plain(self, Fact::Path, &segs),
            "host" => plain(self, Fact::Host, &segs),
            "client_ip" => plain(self, Fact::ClientIp, &segs),
            "tenant" => plain(self, Fact::Tenant, &segs),
            "key" => plain(self, Fact::Key, &segs),
            "header" => named(self, "header", segs).map(Fact::Header),
            "query" => named(self, "query", segs).map(Fact::Query),
            "param" => named(self, "param", segs).map(Fact::Param),
            _ => Some(Fact::Body(segs)),
        }
    }

    // ------------------------------------------------------------ leaves

    fn ident(&self, pair: P<'_>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    fn string(&mut self, pair: P<'_>) -> Str {
        let span = self.span(&pair);
        let raw = pair.as_str();
        let body = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(raw);
        let body_start = pair.as_span().start() + usize::from(raw.starts_with('"'));
        self.bad_escapes(body, body_start);
        Str { value: unescape(body), span }
    }

    /// Report every escape the language does not have (`\q`, `\u{110000}`), at the escape.
    fn bad_escapes(&mut self, body: &str, body_start: usize) {
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                continue;
            }
            let Some((j, next)) = chars.next() else { continue };
            let end = match next {
                '"' | '\\' | 'n' | 't' | 'r' | '0' => continue,
                'u' => {
                    let rest = &body[j + 1..];
                    let close = rest.find('}').filter(|_| rest.starts_with('{'));
                    let code = close.and_then(|c| u32::from_str_radix(&rest[1..c], 16).ok());
                    if code.and_then(char::from_u32).is_some() {
                        continue;
                    }
                    j + 1 + close.map_or(0, |c| c + 1)
                }
                other => j + other.len_utf8(),
            };
            let escape = &body[i..end];
            self.diags.push(
                Diag::error(Code::SyntaxEscape, format!("unknown escape `{escape}` in a string"))
                    .primary(self.at(body_start + i, body_start + end), "not an escape gw knows")
                    .help(
                        "a string knows \\\" \\\\ \\n \\t \\r \\0 and \\u{hex}; write a backslash as \\\\ (in a \
                         regex, written /like\\sthis/, any escape goes)",
                    ),
            );
        }
    }

    fn lower_string(&mut self, pair: P<'_>) -> Str {
        let mut s = self.string(pair);
        s.value = s.value.to_ascii_lowercase();
        s
    }

    fn header_name(&mut self, pair: P<'_>) -> Str {
        let p = if pair.as_rule() == Rule::header_name { inner(pair).next() } else { Some(pair) };
        match p {
            Some(p) => self.lower_string(p),
            None => Str { value: String::new(), span: Span::default() },
        }
    }

    fn value(&mut self, pair: P<'_>) -> Value {
        let span = self.span(&pair);
        let mut parts = vec![];
        for p in inner(pair) {
            match p.as_rule() {
                Rule::env_call => {
                    if let Some(s) = inner(p).find(|p| p.as_rule() == Rule::string) {
                        parts.push(ValuePart::Env(self.string(s)));
                    }
                }
                Rule::string => parts.push(ValuePart::Lit(self.string(p))),
                _ => {}
            }
        }
        Value { parts, span }
    }

    fn regex(&self, pair: P<'_>) -> Regex {
        let span = self.span(&pair);
        let mut pattern = String::new();
        let mut flags = "";
        for p in inner(pair) {
            match p.as_rule() {
                Rule::regex_inner => pattern = p.as_str().replace("\\/", "/"),
                Rule::regex_flags => flags = p.as_str(),
                _ => {}
            }
        }
        Regex { pattern, case_insensitive: flags.contains('i'), span }
    }

    fn json(&mut self, pair: P<'_>) -> Option<Json> {
        let span = self.span(&pair);
        let value = self.json_value(pair)?;
        Some(Json { value, span })
    }

    fn json_value(&mut self, pair: P<'_>) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        let p = if pair.as_rule() == Rule::json_value { inner(pair).next()? } else { pair };
        Some(match p.as_rule() {
            Rule::json_object => {
                let mut map = serde_json::Map::new();
                for kv in inner(p) {
                    let mut it = inner(kv);
                    let k = self.string(it.next()?).value;
                    let v = self.json_value(it.next()?)?;
                    map.insert(k, v);
                }
                J::Object(map)
            }
            Rule::json_array => {
                let mut items = vec![];
                for v in inner(p) {
                    items.push(self.json_value(v)?);
                }
                J::Array(items)
            }
            Rule::string => J::String(self.string(p).value),
            Rule::json_number => match serde_json::from_str::<serde_json::Number>(p.as_str()) {
                Ok(n) => J::Number(n),
                Err(_) => {
                    self.number_error(self.span(&p));
                    return None;
                }
            },
            Rule::json_true => J::Bool(true),
            Rule::json_false => J::Bool(false),
            _ => J::Null,
        })
    }

    fn number_error(&mut self, span: Span) {
        self.diags.push(
            Diag::error(Code::SyntaxNumber, "number out of range")
                .primary(span, "this number does not fit")
                .help(format!("numbers must lie between 0 and {}", i64::MAX)),
        );
    }

    /// A whole number that must not be negative (weights, counts, statuses).
    fn uint(&mut self, pair: P<'_>) -> Option<Quantity> {
        let span = self.span(&pair);
        match parse_int(pair.as_str()) {
            Some(n) if n >= 0 => Some(Quantity { value: n as u64, span }),
            Some(_) => {
                self.diags.push(
                    Diag::error(Code::OutOfRange, "negative number")
                        .primary(span, "must not be negative")
                        .help("use a number of 1 or more"),
                );
                None
            }
            None => {
                self.number_error(span);
                None
            }
        }
    }

    fn unit_number(&mut self, pair: &P<'_>) -> Option<(u64, String)> {
        let span = self.span(pair);
        let mut n = None;
        let mut unit = String::new();
        for p in inner(pair.clone()) {
            match p.as_rule() {
                Rule::number => n = p.as_str().parse::<u64>().ok(),
                _ => unit = p.as_str().to_string(),
            }
        }
        match n {
            Some(n) => Some((n, unit)),
            None => {
                self.number_error(span);
                None
            }
        }
    }

    fn scaled(&mut self, span: Span, n: u64, mul: u64, what: &str) -> Option<Quantity> {
        match n.checked_mul(mul) {
            Some(v) => Some(Quantity { value: v, span }),
            None => {
                self.diags.push(
                    Diag::error(Code::SyntaxNumber, format!("{what} too large"))
                        .primary(span, format!("this {what} overflows"))
                        .help(format!("a {what} must fit in 64 bits in its base unit")),
                );
                None
            }
        }
    }

    fn duration(&mut self, pair: P<'_>) -> Option<Quantity> {
        let span = self.span(&pair);
        let (n, unit) = self.unit_number(&pair)?;
        self.scaled(span, n, unit_ns(&unit), "duration")
    }

    fn size(&mut self, pair: P<'_>) -> Option<Quantity> {
        let span = self.span(&pair);
        let (n, unit) = self.unit_number(&pair)?;
        let mul = match unit.as_str() {
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => 1,
        };
        self.scaled(span, n, mul, "size")
    }

    fn rate(&mut self, pair: P<'_>) -> Option<Rate> {
        let span = self.span(&pair);
        let mut n = None;
        let mut mul = 1u64;
        let mut window = String::new();
        for p in inner(pair) {
            match p.as_rule() {
                Rule::number => n = p.as_str().parse::<u64>().ok(),
                Rule::count_suffix => mul = if p.as_str() == "k" { 1_000 } else { 1_000_000 },
                _ => window = p.as_str().to_string(),
            }
        }
        let Some(n) = n else {
            self.number_error(span);
            return None;
        };
        let count = self.scaled(span, n, mul, "rate")?.value;
        let digits: String = window.chars().take_while(|c| c.is_ascii_digit()).collect();
        let unit = &window[digits.len()..];
        let times = if digits.is_empty() { 1 } else { digits.parse::<u64>().ok()? };
        let window_ns = self.scaled(span, times, unit_ns(unit), "rate window")?.value;
        Some(Rate { count, window_ns, span })
    }
}

fn unit_ns(unit: &str) -> u64 {
    match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => 1,
    }
}

fn parse_int(s: &str) -> Option<i64> {
    s.replace('_', "").parse::<i64>().ok()
}

fn describe_found(tok: &str) -> String {
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
const MAX_FOUND_CHARS: usize = 40;

/// The innermost `{` after `from` that is never closed (outside strings and comments).
fn unclosed_brace(text: &str, from: usize) -> Option<usize> {
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
fn parse_detailed(rule: Rule, text: &str) -> Result<(), gw_grammar::pest::error::Error<Rule>> {
    static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = DETAIL.lock().unwrap_or_else(|e| e.into_inner());
    gw_grammar::pest::set_error_detail(true);
    let result = GwpParser::parse(rule, text).map(|_| ());
    gw_grammar::pest::set_error_detail(false);
    result
}

/// Undo the escapes the grammar accepts in strings.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Tokens of a flat expression, before precedence is applied.
enum Tok {
    Operand(Expr),
    Op(BinOp, Span),
    Not(Span),
    Exists(Span),
    Taken,
}

/// Precedence climbing over the flat token list: `or` < `and` < `not` < comparisons.
/// Loops, not recursion, for chains, so long expressions cannot overflow the stack.
fn climb(toks: &mut [Tok], pos: &mut usize, min_prec: u8) -> Option<Expr> {
    let mut lhs = unary(toks, pos)?;
    while let Some(Tok::Op(op, op_span)) = toks.get(*pos) {
        let (op, op_span) = (*op, *op_span);
        let prec = op.precedence();
        if prec < min_prec {
            break;
        }
        *pos += 1;
        let rhs = climb(toks, pos, prec + 1)?;
        let span = lhs.span.to(rhs.span);
        lhs = Expr { kind: ExprKind::Binary { op, op_span, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span };
    }
    Some(lhs)
}

/// `not` binds looser than comparisons: `not a == b` is `not (a == b)`.
fn unary(toks: &mut [Tok], pos: &mut usize) -> Option<Expr> {
    if let Some(Tok::Not(span)) = toks.get(*pos) {
        let span = *span;
        *pos += 1;
        let inner = climb(toks, pos, 3)?;
        let full = span.to(inner.span);
        return Some(Expr { kind: ExprKind::Not(Box::new(inner)), span: full });
    }
    let tok = std::mem::replace(toks.get_mut(*pos)?, Tok::Taken);
    *pos += 1;
    let Tok::Operand(mut e) = tok else { return None };
    if let Some(Tok::Exists(span)) = toks.get(*pos) {
        let span = e.span.to(*span);
        *pos += 1;
        e = Expr { kind: ExprKind::Exists(Box::new(e)), span };
    }
    Some(e)
}

/// Keyword pairs carry no data: skipping them lets statement walkers take arguments by position.
trait RuleExt {
    fn as_rule_name_is_kw(&self) -> bool;
}

impl RuleExt for P<'_> {
    fn as_rule_name_is_kw(&self) -> bool {
        is_keyword_rule(self.as_rule())
    }
}

fn is_keyword_rule(rule: Rule) -> bool {
    // Decided once per rule from its name, not once per pair: this is on every walk. A rule
    // pest does not list in `all_rules` falls back to reading its name.
    static KEYWORD: std::sync::OnceLock<Vec<Option<bool>>> = std::sync::OnceLock::new();
    let by_name = |r: Rule| format!("{r:?}").starts_with("kw_");
    let table = KEYWORD.get_or_init(|| {
        let size = Rule::all_rules().iter().map(|r| *r as usize + 1).max().unwrap_or(0);
        let mut t = vec![None; size];
        for r in Rule::all_rules() {
            if let Some(slot) = t.get_mut(*r as usize) {
                *slot = Some(by_name(*r));
            }
        }
        t
    });
    table.get(rule as usize).copied().flatten().unwrap_or_else(|| by_name(rule))
}
