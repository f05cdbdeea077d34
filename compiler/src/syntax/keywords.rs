//! The keywords the grammar knows, per block, and the usage line of each statement: what
//! did-you-mean and the syntax diagnostics offer. Pinned against `grammar/gwp.pest` by the
//! tests below, so a statement added to the grammar cannot miss them.

use gw_grammar::Rule;

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
    "least_latency",
    "hash",
    "header",
    "timeout",
    "connect_timeout",
    "health",
    "every",
    "healthy",
    "unhealthy",
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
    "shared",
    "status",
    "websocket",
    "idempotent",
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
    "request_id",
    "trace_id",
    "absent",
    "use",
    "claim",
    "basic",
    "alg",
    "jwks",
    "audience",
    "leeway",
    "message",
    "headers",
    "expose",
    "credentials",
    "max_age",
];

pub(super) const ITEM_KEYWORDS: &[&str] =
    &["import", "gateway", "upstream", "keys", "jwt", "basic", "tenant", "matcher", "limit", "route", "test"];

pub(super) const GATEWAY_STMTS: &[&str] = &[
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

pub(super) const UPSTREAM_STMTS: &[&str] =
    &["target", "balance", "header", "timeout", "connect_timeout", "health", "retry", "max_connections", "affinity"];
pub(super) const TENANT_STMTS: &[&str] = &["rate", "tokens", "concurrent", "region"];
pub(super) const ROUTE_STMTS: &[&str] = &[
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
    "idempotent",
    "cors",
    "serve",
    "to",
];

pub(super) const JWT_STMTS: &[&str] =
    &["alg", "secret", "key", "jwks", "issuer", "audience", "leeway", "tenant", "message"];

pub(super) const TEST_STMTS: &[&str] = &["send", "expect", "advance"];

/// The usage line of each statement, shown as help when one is written wrongly.
pub(super) fn usage(block: Block, word: &str) -> Option<(Rule, &'static str)> {
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
        (Block::Upstream, "balance") => (u_balance, "balance round_robin|weighted|least_conn|least_latency|hash(EXPR)"),
        (Block::Upstream, "header") => (u_header, "header \"authorization\" = \"Bearer \" + env(\"KEY\")"),
        (Block::Upstream, "timeout") => (u_timeout, "timeout 60s"),
        (Block::Upstream, "connect_timeout") => (u_connect_timeout, "connect_timeout 5s"),
        (Block::Upstream, "health") => (u_health, "health GET \"/health\" every 10s [timeout 2s] [expect 200] [healthy 2] [unhealthy 1]"),
        (Block::Upstream, "retry") => (u_retry, "retry 2 on connect_error, 502, 503"),
        (Block::Upstream, "max_connections") => (u_max_connections, "max_connections 100"),
        (Block::Upstream, "affinity") => (u_affinity, "affinity header[\"x-region\"]"),
        (Block::Tenant, "rate") => (t_rate, "rate 100/s [burst 200]"),
        (Block::Tenant, "tokens") => (t_tokens, "tokens 500k/min"),
        (Block::Tenant, "concurrent") => (t_concurrent, "concurrent 20"),
        (Block::Tenant, "region") => (t_region, "region \"east\""),
        (Block::Route, "when") => (r_when, "when POST|GET \"/v1/path/{param}\" [host \"api.example.com\"] [if EXPR]"),
        (Block::Route, "auth") => (r_auth, "auth SET [via header \"x-api-key\", bearer, query \"key\"] [or SET ...] [optional] [message \"...\"]"),
        (Block::Route, "allow") => (r_allow, "allow if EXPR [else 403 \"message\"]"),
        (Block::Route, "deny") => (r_deny, "deny 403 \"message\" if EXPR"),
        (Block::Route, "limit") => (r_limit, "limit rate 10/s [burst 20] | tokens 100k/min | concurrent 5 [per key|tenant|route|client|header \"h\"|claim[\"sub\"]|(EXPR)] [model /re/] [if EXPR] [shadow]"),
        (Block::Route, "set") => (r_set, "set header \"x-name\" = \"value\""),
        (Block::Route, "strip") => (r_strip, "strip header \"x-forwarded-for\", \"cookie\""),
        (Block::Route, "rewrite") => (r_rewrite, "rewrite prefix \"/proxy\" => \"\"   or   rewrite path \"/v2/{id}\""),
        (Block::Route, "respond") => (r_respond, "respond 200 json {\"ok\": true}   or   respond 204"),
        (Block::Route, "cache") => (r_cache, "cache 60s [max 10MB] [shared] [status 200, 404]"),
        (Block::Route, "websocket") => (r_websocket, "websocket"),
        (Block::Route, "idempotent") => (r_idempotent, "idempotent"),
        (Block::Route, "cors") => (r_cors, "cors origins [\"https://app.example.com\"] [methods GET|POST] [headers [\"content-type\"]] [expose [\"x-request-id\"]] [credentials] [max_age 10m]"),
        (Block::Jwt, "alg") => (j_alg, "alg HS256|HS384|HS512|RS256|RS384|RS512|ES256|ES384|EdDSA"),
        (Block::Jwt, "secret") => (j_secret, "secret env(\"JWT_SECRET\")"),
        (Block::Jwt, "key") => (j_key, "key \"keys/issuer.pem\""),
        (Block::Jwt, "jwks") => (j_jwks, "jwks \"keys/issuer.jwks.json\""),
        (Block::Jwt, "issuer") => (j_issuer, "issuer \"https://auth.example.com\""),
        (Block::Jwt, "audience") => (j_audience, "audience \"my-api\""),
        (Block::Jwt, "leeway") => (j_leeway, "leeway 30s"),
        (Block::Jwt, "tenant") => (j_tenant, "tenant claim[\"org\"]   or   tenant \"name\""),
        (Block::Jwt, "message") => (j_message, "message \"invalid or expired token\""),
        (Block::Route, "serve") => (r_serve, "serve health|ready|metrics|tokens|usage|upstreams|config"),
        (Block::Route, "to") => (r_to, "to UPSTREAM"),
        (Block::Test, "send") => (t_send, "send POST \"/path\" [header \"name\" = \"value\"] [body {...}] [client \"1.2.3.4\"]"),
        (Block::Test, "expect") => (t_expect, "expect 403 [\"message\"] | route NAME | upstream NAME | tenant NAME | claim \"sub\" = \"v\" | header \"name\" = \"value\" | header \"name\" absent | body {json} | limit NAME | limit tenant NAME | cache hit|miss|bypass"),
        (Block::Test, "advance") => (t_advance, "advance 1s"),
        (Block::Top, "import") => (import_decl, "import \"common.gwp\""),
        (Block::Top, "gateway") => (gateway_decl, "gateway { listen \"127.0.0.1:8080\" ... }"),
        (Block::Top, "upstream") => (upstream_decl, "upstream NAME { target \"http://host:port\" ... }"),
        (Block::Top, "keys") => (keys_decl, "keys NAME from \"keys/file.keys\" [salt env(\"SALT\")] [message \"...\"]"),
        (Block::Top, "jwt") => (jwt_decl, "jwt NAME { alg RS256; key \"keys/issuer.pem\"; issuer \"https://...\" }"),
        (Block::Top, "basic") => (basic_decl, "basic NAME from \"users.htpasswd\" [tenant \"name\"] [message \"...\"]"),
        (Block::Top, "tenant") => (tenant_decl, "tenant NAME { rate 10/s; tokens 20k/min; concurrent 2 }"),
        (Block::Top, "matcher") => (matcher_decl, "matcher NAME = EXPR"),
        (Block::Top, "limit") => (limit_decl, "limit NAME rate 10/s|tokens 100k/min|concurrent 5 [per key|tenant|client|header \"name\"]"),
        (Block::Top, "route") => (route_decl, "route NAME { when POST \"/path\" ... to UPSTREAM }"),
        (Block::Top, "test") => (test_decl, "test \"name\" { send GET \"/path\"; expect 200 }"),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    Top,
    Gateway,
    Upstream,
    Tenant,
    Route,
    Test,
    Jwt,
}

impl Block {
    pub(super) fn keywords(self) -> &'static [&'static str] {
        match self {
            Block::Top => ITEM_KEYWORDS,
            Block::Gateway => GATEWAY_STMTS,
            Block::Upstream => UPSTREAM_STMTS,
            Block::Tenant => TENANT_STMTS,
            Block::Route => ROUTE_STMTS,
            Block::Test => TEST_STMTS,
            Block::Jwt => JWT_STMTS,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Block::Top => "a policy file",
            Block::Gateway => "a `gateway` block",
            Block::Upstream => "an `upstream` block",
            Block::Tenant => "a `tenant` block",
            Block::Route => "a `route` block",
            Block::Test => "a `test` block",
            Block::Jwt => "a `jwt` block",
        }
    }
}

#[cfg(test)]
mod tests {
    //! The lists above are written by hand for readable messages; these tests hold them to the
    //! grammar, so a keyword or statement added to `gwp.pest` fails here until it is listed.

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const GRAMMAR: &str = include_str!("../../../grammar/gwp.pest");

    /// Keyword rules `describe` leaves unnamed today (naming them would change messages).
    const UNNAMED_KEYWORDS: &[&str] = &["as", "none"];

    /// The grammar's rules, name → body (the text between the outer braces).
    fn rules() -> BTreeMap<&'static str, &'static str> {
        let mut out = BTreeMap::new();
        let mut rest = GRAMMAR;
        while let Some(eq) = rest.find(" = ").or_else(|| rest.find("= ")) {
            let line_start = rest[..eq].rfind('\n').map_or(0, |i| i + 1);
            let name = rest[line_start..eq].trim();
            let Some(open) = rest[eq..].find('{').map(|i| eq + i) else { break };
            let (mut depth, mut in_str, mut esc, mut end) = (0, false, false, open);
            for (i, c) in rest[open..].char_indices() {
                match (in_str, esc, c) {
                    (true, true, _) => esc = false,
                    (true, false, '\\') => esc = true,
                    (true, false, '"') => in_str = false,
                    (true, false, _) => {}
                    (false, _, '"') => in_str = true,
                    (false, _, '{') => depth += 1,
                    (false, _, '}') => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if !name.starts_with("//") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(name, rest[open + 1..end].trim());
            }
            rest = &rest[end + 1..];
        }
        out
    }

    /// The keyword a statement rule starts with: `kw_listen ~ value` → `listen`.
    fn first_keyword(body: &str) -> Option<&str> {
        body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find(|w| !w.is_empty())?.strip_prefix("kw_")
    }

    /// `serve BUILTIN`: the grammar's `builtin` rule names exactly the engine's `Builtin`s,
    /// so a builtin added to one and not the other fails here, not at run time.
    #[test]
    fn builtin_names_are_the_engines_builtins() {
        let body = rules()["builtin"];
        let named: BTreeSet<&str> = body.split('"').skip(1).step_by(2).collect();
        let engine: BTreeSet<&str> = gw_engine::lang::Builtin::ALL.iter().map(|b| b.as_str()).collect();
        assert_eq!(named, engine, "grammar `builtin` rule: {body}");
    }

    #[test]
    fn keyword_names_are_the_grammars_keyword_rules() {
        let rules = rules();
        let mut from_grammar = BTreeSet::new();
        for (name, body) in &rules {
            if let Some(kw) = name.strip_prefix("kw_") {
                assert!(body.starts_with(&format!("\"{kw}\"")), "rule {name} does not read `{kw}`: {body}");
                from_grammar.insert(kw);
            }
        }
        // The generated `Rule` agrees with the text read here.
        let generated: BTreeSet<String> =
            Rule::all_rules().iter().filter_map(|r| format!("{r:?}").strip_prefix("kw_").map(str::to_string)).collect();
        assert_eq!(generated, from_grammar.iter().map(|s| s.to_string()).collect());
        let listed: BTreeSet<&str> = KEYWORD_NAMES.iter().chain(UNNAMED_KEYWORDS).copied().collect();
        assert_eq!(listed, from_grammar, "KEYWORD_NAMES differs from the grammar's kw_ rules");
        assert_eq!(KEYWORD_NAMES.len() + UNNAMED_KEYWORDS.len(), listed.len(), "a keyword is listed twice");
    }

    #[test]
    fn block_keywords_and_usage_lines_cover_every_statement_of_the_grammar() {
        let rules = rules();
        let blocks = [
            (Block::Top, "item"),
            (Block::Gateway, "gateway_stmt"),
            (Block::Upstream, "upstream_stmt"),
            (Block::Tenant, "tenant_stmt"),
            (Block::Route, "route_stmt"),
            (Block::Test, "test_stmt"),
            (Block::Jwt, "jwt_stmt"),
        ];
        for (block, choice) in blocks {
            let alternatives: Vec<&str> =
                rules[choice].split('|').map(str::trim).filter(|a| !matches!(*a, "bad_stmt" | "stray_item")).collect();
            let mut words = BTreeSet::new();
            for alt in &alternatives {
                let word = first_keyword(rules[alt]).unwrap_or_else(|| panic!("{alt} does not start with a keyword"));
                words.insert(word);
                let (rule, line) =
                    usage(block, word).unwrap_or_else(|| panic!("no usage line for `{word}` in {block:?}"));
                let rule = format!("{rule:?}");
                assert!(alternatives.contains(&rule.as_str()), "usage of `{word}` names {rule}, not a {choice}");
                assert!(line.starts_with(word), "usage of `{word}` reads {line:?}");
            }
            let listed: BTreeSet<&str> = block.keywords().iter().copied().collect();
            assert_eq!(listed, words, "the keywords of {block:?} differ from the grammar's {choice}");
            assert_eq!(listed.len(), block.keywords().len(), "a keyword of {block:?} is listed twice");
        }
    }
}
