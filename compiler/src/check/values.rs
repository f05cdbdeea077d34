//! Values: ranges of quantities and rates, statuses, header names, addresses and URLs,
//! path and host patterns, regexes; the gateway, upstream and tenant blocks that hold them.

use crate::diagnostics::{Code, Diag};
use crate::value;

use super::*;

impl<'a> Checker<'a> {
    pub(super) fn range(&mut self, q: Quantity, min: u64, max: u64, what: &str, help: &str) {
        if q.value < min || q.value > max {
            let msg = if q.value < min {
                format!("{what} must be at least {}", show_min(what, min))
            } else {
                format!("{what} is too large")
            };
            self.err(Diag::error(Code::OutOfRange, msg).primary(q.span, "out of range").help(help.to_string()));
        }
    }

    pub(super) fn rate(&mut self, r: Rate, what: &str) {
        if r.count == 0 {
            self.err(
                Diag::error(Code::OutOfRange, format!("{what} of zero"))
                    .primary(r.span, "a rate must allow at least one per window")
                    .help("to refuse everything, use `deny` or `respond` instead"),
            );
        }
        if r.window_ns == 0 {
            self.err(
                Diag::error(Code::OutOfRange, format!("{what} with an empty window"))
                    .primary(r.span, "the window must be longer than zero")
                    .help("write a window like `/s` or `/10s`"),
            );
        }
    }

    pub(super) fn status(&mut self, q: Quantity, min: u64, what: &str) {
        if q.value < min || q.value > 599 {
            self.err(
                Diag::error(Code::InvalidStatus, format!("{} is not a valid status for {what}", q.value))
                    .primary(q.span, "invalid status")
                    .help(format!("use a status from {min} to 599")),
            );
        }
    }

    pub(super) fn header_name(&mut self, s: &Str) {
        let ok = !s.value.is_empty()
            && s.value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            self.err(
                Diag::error(
                    Code::InvalidHeaderName,
                    format!("`{}` is not a valid header name", s.value.escape_debug()),
                )
                .primary(s.span, "invalid header name")
                .help("header names are letters, digits and `-` (RFC 9110 token characters)"),
            );
        }
    }

    pub(super) fn address(&mut self, v: &Value, what: &str) {
        let Some(lit) = literal_value(v) else { return };
        if lit.parse::<std::net::SocketAddr>().is_err() {
            self.err(
                Diag::error(Code::InvalidUrl, format!("`{lit}` is not a socket address"))
                    .primary(v.span, format!("{what} needs `ip:port`"))
                    .help("write an address like \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
        }
    }

    pub(super) fn gateway(&mut self, g: &Gateway) {
        for s in &g.settings {
            match &s.kind {
                SettingKind::Listen(v) => self.address(v, "listen"),
                SettingKind::Admin { addr, .. } => self.address(addr, "admin"),
                SettingKind::MaxBody(q) => self.range(*q, 1, 1 << 32, "max_body", "use a size from 1B to 4GB"),
                SettingKind::MaxHeaderBytes(q) => {
                    self.range(*q, 1024, 1 << 24, "max_header_bytes", "use a size from 1KiB to 16MiB")
                }
                SettingKind::MaxHeaders(q) => self.range(*q, 1, 10_000, "max_headers", "use a count from 1 to 10000"),
                SettingKind::HeaderTimeout(q) | SettingKind::IdleTimeout(q) | SettingKind::DrainTimeout(q) => {
                    self.range(*q, 1_000_000, 86_400_000_000_000, s.kind.keyword(), "use a duration from 1ms to 1d")
                }
                SettingKind::Audit { rotate: Some(q), .. } => {
                    self.range(*q, 1024, u64::MAX, "rotate", "rotate at 1KiB or more")
                }
                _ => {}
            }
        }
    }

    pub(super) fn upstream(&mut self, u: &Upstream) {
        let mut targets = 0;
        for s in &u.stmts {
            match &s.kind {
                UpstreamStmtKind::Target(t) => {
                    targets += 1;
                    if let Some(url) = literal_value(&t.url) {
                        if let Err(why) = check_url(&url) {
                            self.err(
                                Diag::error(Code::InvalidUrl, format!("`{url}` is not a valid upstream URL"))
                                    .primary(t.url.span, why)
                                    .help("write it as http://host:port or https://host[:port][/base-path]"),
                            );
                        }
                    }
                    if let Some(w) = t.weight {
                        self.range(
                            w,
                            1,
                            1000,
                            "weight",
                            "use a weight from 1 to 1000; remove the target to stop using it",
                        );
                    }
                }
                UpstreamStmtKind::Header { name, .. } => self.header_name(name),
                UpstreamStmtKind::Timeout(q) | UpstreamStmtKind::ConnectTimeout(q) => {
                    self.range(*q, 1_000_000, 86_400_000_000_000, s.kind.keyword(), "use a duration from 1ms to 1d")
                }
                UpstreamStmtKind::Health(h) => {
                    self.range(
                        h.every,
                        100_000_000,
                        86_400_000_000_000,
                        "health interval",
                        "check at most every 100ms",
                    );
                    if let Some(t) = h.timeout {
                        self.range(t, 1_000_000, 3_600_000_000_000, "health timeout", "use a duration from 1ms to 1h");
                    }
                    if let Some(q) = h.expect {
                        self.status(q, 100, "a health check");
                    }
                    for (q, what) in [(h.healthy, "healthy"), (h.unhealthy, "unhealthy")] {
                        if let Some(q) = q {
                            self.range(q, 1, 100, what, "use a count of checks in a row from 1 to 100");
                        }
                    }
                    if !h.path.value.starts_with('/') {
                        self.err(
                            Diag::error(Code::InvalidPathPattern, "health check path must start with `/`")
                                .primary(h.path.span, "not an absolute path")
                                .help("write it like \"/health\""),
                        );
                    }
                }
                UpstreamStmtKind::Retry(r) => {
                    self.range(r.attempts, 0, 10, "retry", "retry at most 10 times");
                    for c in &r.on {
                        if let RetryCond::Status(q) = c {
                            self.status(*q, 500, "a retry condition");
                        }
                    }
                }
                UpstreamStmtKind::MaxConnections(q) => {
                    self.range(*q, 1, 1_000_000, "max_connections", "use a count from 1 to 1000000")
                }
                UpstreamStmtKind::Affinity(e) | UpstreamStmtKind::Balance(Balance::Hash(e)) => {
                    self.no_identity_facts(e, "an upstream");
                    self.ty(e);
                }
                UpstreamStmtKind::Balance(_) => {}
            }
        }
        if targets == 0 {
            self.err(
                Diag::error(Code::OutOfRange, format!("upstream `{}` has no target", u.name.name))
                    .primary(u.name.span, "no `target` in this upstream")
                    .help("add `target \"http://host:port\"`"),
            );
        }
    }

    pub(super) fn tenant(&mut self, t: &Tenant) {
        for s in &t.stmts {
            match &s.kind {
                TenantStmtKind::Rate { rate, burst } => {
                    self.rate(*rate, "rate");
                    if let Some(b) = burst {
                        self.range(*b, 1, 1_000_000_000, "burst", "a burst must allow at least one request");
                    }
                }
                TenantStmtKind::Tokens(r) => self.rate(*r, "token budget"),
                TenantStmtKind::Concurrent(q) => {
                    self.range(*q, 1, 1_000_000, "concurrent", "allow at least one request at a time")
                }
                TenantStmtKind::Region(_) => {}
            }
        }
    }

    /// Validate a path pattern; the names of its params if it is valid.
    pub(super) fn path_pattern(&mut self, p: &Str) -> Option<Vec<String>> {
        let bad = |msg: &str, help: &str| {
            Diag::error(Code::InvalidPathPattern, msg.to_string())
                .primary(p.span, "invalid path pattern")
                .help(help.to_string())
        };
        if !p.value.starts_with('/') {
            self.err(bad("a path pattern must start with `/`", "write it like \"/v1/chat/completions\""));
            return None;
        }
        if p.value.contains(['?', '#']) || p.value.chars().any(char::is_whitespace) {
            self.err(bad(
                "a path pattern cannot contain `?`, `#` or spaces",
                "match query parameters with `if query[\"name\"] == ...`",
            ));
            return None;
        }
        let segs: Vec<&str> = p.value.split('/').skip(1).collect();
        let mut names = vec![];
        for (i, seg) in segs.iter().enumerate() {
            if *seg == "*" {
                if i != segs.len() - 1 {
                    self.err(bad(
                        "`*` may only be the last segment",
                        "write `/prefix/*` to match everything under /prefix",
                    ));
                    return None;
                }
                continue;
            }
            if seg.contains(['{', '}', '*']) {
                let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                    self.err(bad(
                        "a parameter must be a whole segment like `{id}`",
                        "write `/jobs/{id}`, not `/jobs/job-{id}`",
                    ));
                    return None;
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    self.err(bad("a parameter name must be letters, digits or `_`", "write `{id}`"));
                    return None;
                }
                if names.iter().any(|n| n == name) {
                    self.err(bad(&format!("parameter `{name}` appears twice"), "give each parameter its own name"));
                    return None;
                }
                names.push(name.to_string());
            }
        }
        Some(names)
    }

    pub(super) fn host_pattern(&mut self, h: &Str) {
        let host = h.value.strip_prefix("*.").unwrap_or(&h.value);
        let ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.contains('*');
        if !ok {
            self.err(
                Diag::error(Code::InvalidPathPattern, format!("`{}` is not a host pattern", h.value.escape_debug()))
                    .primary(h.span, "invalid host")
                    .help("write a host name like \"api.example.com\" or \"*.example.com\", without port"),
            );
        }
    }

    pub(super) fn regex(&mut self, r: &Regex) {
        if let Err(e) = value::build_regex(&r.pattern, r.case_insensitive) {
            let too_large = e.size_limit().is_some();
            let (code, msg) = if too_large {
                (Code::RegexTooLarge, "regex is too large".to_string())
            } else {
                (Code::RegexInvalid, "invalid regex".to_string())
            };
            let detail =
                e.syntax_error().map(|s| first_line(&s.to_string())).unwrap_or_else(|| first_line(&e.to_string()));
            let help = if too_large {
                format!(
                    "a compiled regex may use at most {} bytes; simplify it or split it with `or`",
                    value::REGEX_SIZE_LIMIT
                )
            } else {
                detail
            };
            self.err(
                Diag::error(code, msg)
                    .primary(r.span, if too_large { "compiles too large" } else { "does not compile" })
                    .help(help),
            );
        }
    }
}

pub fn check_url(url: &str) -> Result<(), &'static str> {
    // One parser for check, startup and lowering: the engine's, whose value the runtime uses.
    gw_engine::graph::TargetAddr::parse(url).map(|_| ())
}
