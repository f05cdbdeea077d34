//! Statements, each printed on one line from its AST and its source spelling.

use crate::source::Span;

use super::*;

/// The source text, read for the spelling of literals: a literal is printed as written when
/// the text under its span reads back to the value in the tree, else canonically.
#[derive(Clone, Copy)]
pub(super) struct Src<'a>(pub(super) &'a str);

impl<'a> Src<'a> {
    /// The text under `span` when `reads_back` accepts it.
    pub(super) fn spelled(self, span: Span, reads_back: impl Fn(&str) -> bool) -> Option<String> {
        self.0
            .get(span.start as usize..span.end as usize)
            .filter(|s| !s.is_empty() && reads_back(s))
            .map(str::to_string)
    }

    pub(super) fn duration(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| spelled_duration(s) == Some(q.value)).unwrap_or_else(|| duration(q.value))
    }

    pub(super) fn size(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| spelled_size(s) == Some(q.value)).unwrap_or_else(|| size(q.value))
    }

    /// A whole number (counts, weights, attempts).
    pub(super) fn count(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| spelled_int(s) == i64::try_from(q.value).ok()).unwrap_or_else(|| q.value.to_string())
    }

    pub(super) fn status(self, q: &Quantity) -> String {
        self.spelled(q.span, |s| s.len() == 3 && s.parse::<u64>().ok() == Some(q.value))
            .unwrap_or_else(|| status_code(q.value))
    }

    pub(super) fn rate(self, r: &Rate) -> String {
        self.spelled(r.span, |s| spelled_rate(s) == Some((r.count, r.window_ns))).unwrap_or_else(|| rate(r))
    }

    pub(super) fn string(self, s: &Str) -> String {
        self.spelled(s.span, |t| spelled_string(t).as_deref() == Some(s.value.as_str()))
            .unwrap_or_else(|| quote(&s.value))
    }

    /// A header name: the parser lowers its case, so any spelling that lowers to it is kept.
    pub(super) fn header(self, s: &Str) -> String {
        self.spelled(s.span, |t| spelled_string(t).is_some_and(|v| v.to_ascii_lowercase() == s.value))
            .unwrap_or_else(|| quote(&s.value))
    }

    pub(super) fn opt_string(self, s: &Option<Str>) -> Option<String> {
        s.as_ref().map(|s| self.string(s))
    }

    pub(super) fn value(self, v: &Value) -> String {
        let parts: Vec<String> = v
            .parts
            .iter()
            .map(|p| match p {
                ValuePart::Lit(s) => self.string(s),
                ValuePart::Env(s) => format!("env({})", self.string(s)),
                ValuePart::Fact(f, _) => {
                    let mut out = String::new();
                    write_fact(&mut out, f);
                    out
                }
                ValuePart::Gateway(g, _) => g.as_str().to_string(),
            })
            .collect();
        parts.join(" + ")
    }

    pub(super) fn regex(self, r: &Regex) -> String {
        self.spelled(r.span, |s| spelled_regex(s) == Some((r.pattern.clone(), r.case_insensitive)))
            .unwrap_or_else(|| regex(r))
    }

    pub(super) fn expr(self, e: &Expr) -> String {
        let mut s = String::new();
        write_expr(&mut s, e, Ctx::TOP, self);
        s
    }

    /// Does the source, from the end of `after` to the end of `span`, go on with `words`? (For
    /// defaults written out, `on_error local` and `per route`, which the tree does not keep.)
    pub(super) fn goes_on_with(self, after: Span, span: Span, words: &[&str]) -> bool {
        let Some(mut rest) = self.0.get(after.end as usize..span.end as usize) else { return false };
        for w in words {
            rest = rest.trim_start();
            match rest.strip_prefix(w) {
                Some(r) if !r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') => rest = r,
                _ => return false,
            }
        }
        true
    }

    pub(super) fn setting(self, k: &SettingKind, span: Span) -> String {
        match k {
            SettingKind::Listen(v) => format!("listen {}", self.value(v)),
            SettingKind::Admin { addr, token } => {
                let mut s = format!("admin {}", self.value(addr));
                if let Some(t) = token {
                    s.push_str(&format!(" token {}", self.value(t)));
                }
                s
            }
            SettingKind::State(StateStore::Local) => "state local".to_string(),
            SettingKind::State(StateStore::Redis { url, on_error }) => {
                let mut s = format!("state redis {}", self.value(url));
                match on_error {
                    OnError::Local if self.goes_on_with(url.span, span, &["on_error"]) => s.push_str(" on_error local"),
                    OnError::Local => {}
                    OnError::Allow => s.push_str(" on_error allow"),
                    OnError::Deny => s.push_str(" on_error deny"),
                }
                s
            }
            SettingKind::Audit { path, rotate } => {
                let mut s = format!("audit {}", self.value(path));
                if let Some(r) = rotate {
                    s.push_str(&format!(" rotate {}", self.size(r)));
                }
                s
            }
            SettingKind::MaxBody(q) => format!("max_body {}", self.size(q)),
            SettingKind::MaxHeaderBytes(q) => format!("max_header_bytes {}", self.size(q)),
            SettingKind::MaxHeaders(q) => format!("max_headers {}", self.count(q)),
            SettingKind::HeaderTimeout(q) => format!("header_timeout {}", self.duration(q)),
            SettingKind::IdleTimeout(q) => format!("idle_timeout {}", self.duration(q)),
            SettingKind::DrainTimeout(q) => format!("drain_timeout {}", self.duration(q)),
            SettingKind::Tls { cert, key } => format!("tls cert {} key {}", self.value(cert), self.value(key)),
            SettingKind::PolicyHeader(b) => format!("policy_header {b}"),
            SettingKind::Forwarded(m) => format!(
                "forwarded {}",
                match m {
                    ForwardedMode::Strip => "strip",
                    ForwardedMode::Append => "append",
                    ForwardedMode::Keep => "keep",
                }
            ),
        }
    }

    pub(super) fn upstream_stmt(self, k: &UpstreamStmtKind) -> String {
        match k {
            UpstreamStmtKind::Target(t) => {
                let mut s = format!("target {}", self.value(&t.url));
                if let Some(w) = &t.weight {
                    s.push_str(&format!(" weight {}", self.count(w)));
                }
                if let Some(r) = self.opt_string(&t.region) {
                    s.push_str(&format!(" region {r}"));
                }
                s
            }
            UpstreamStmtKind::Balance(b) => match b {
                Balance::RoundRobin => "balance round_robin".to_string(),
                Balance::Weighted => "balance weighted".to_string(),
                Balance::LeastConn => "balance least_conn".to_string(),
                Balance::LeastLatency => "balance least_latency".to_string(),
                Balance::Hash(e) => format!("balance hash({})", self.expr(e)),
            },
            UpstreamStmtKind::Header { name, value: v } => {
                format!("header {} = {}", self.header(name), self.value(v))
            }
            UpstreamStmtKind::Timeout(q) => format!("timeout {}", self.duration(q)),
            UpstreamStmtKind::ConnectTimeout(q) => format!("connect_timeout {}", self.duration(q)),
            UpstreamStmtKind::Health(h) => {
                let mut s =
                    format!("health {} {} every {}", h.method.as_str(), self.string(&h.path), self.duration(&h.every));
                if let Some(t) = &h.timeout {
                    s.push_str(&format!(" timeout {}", self.duration(t)));
                }
                for (word, q) in [("expect", &h.expect), ("healthy", &h.healthy), ("unhealthy", &h.unhealthy)] {
                    if let Some(q) = q {
                        s.push_str(&format!(" {word} {}", q.value));
                    }
                }
                s
            }
            UpstreamStmtKind::Retry(r) => {
                let mut s = format!("retry {}", self.count(&r.attempts));
                if !r.on.is_empty() {
                    let conds: Vec<String> =
                        r.on.iter()
                            .map(|c| match c {
                                RetryCond::ConnectError(_) => "connect_error".to_string(),
                                RetryCond::Timeout(_) => "timeout".to_string(),
                                RetryCond::Status(q) => self.count(q),
                            })
                            .collect();
                    s.push_str(" on ");
                    s.push_str(&conds.join(", "));
                }
                s
            }
            UpstreamStmtKind::MaxConnections(q) => format!("max_connections {}", self.count(q)),
            UpstreamStmtKind::Affinity(e) => format!("affinity {}", self.expr(e)),
        }
    }

    pub(super) fn tenant_stmt(self, k: &TenantStmtKind) -> String {
        match k {
            TenantStmtKind::Rate { rate: r, burst } => {
                let mut s = format!("rate {}", self.rate(r));
                if let Some(b) = burst {
                    s.push_str(&format!(" burst {}", self.count(b)));
                }
                s
            }
            TenantStmtKind::Tokens(r) => format!("tokens {}", self.rate(r)),
            TenantStmtKind::Concurrent(q) => format!("concurrent {}", self.count(q)),
            TenantStmtKind::Region(r) => format!("region {}", self.string(r)),
        }
    }

    pub(super) fn jwt_stmt(self, k: &JwtStmtKind) -> String {
        match k {
            JwtStmtKind::Alg(a) => format!("alg {}", a.name),
            JwtStmtKind::Secret(v) => format!("secret {}", self.value(v)),
            JwtStmtKind::Key(f) => format!("key {}", self.string(f)),
            JwtStmtKind::Jwks(f) => format!("jwks {}", self.string(f)),
            JwtStmtKind::Issuer(i) => format!("issuer {}", self.string(i)),
            JwtStmtKind::Audience(a) => format!("audience {}", self.string(a)),
            JwtStmtKind::Leeway(d) => format!("leeway {}", self.duration(d)),
            JwtStmtKind::TenantClaim(e) => format!("tenant {}", self.expr(e)),
            JwtStmtKind::TenantName(n) => format!("tenant {}", self.string(n)),
            JwtStmtKind::Message(m) => format!("message {}", self.string(m)),
        }
    }

    pub(super) fn route_stmt(self, k: &RouteStmtKind, span: Span) -> String {
        match k {
            RouteStmtKind::When(w) => {
                let mut s = format!("when {} {}", methods(&w.methods), self.string(&w.path));
                if let Some(h) = self.opt_string(&w.host) {
                    s.push_str(&format!(" host {h}"));
                }
                if let Some(c) = &w.cond {
                    s.push_str(&format!(" if {}", self.expr(c)));
                }
                s
            }
            RouteStmtKind::Auth(a) => {
                let mut methods = vec![];
                for m in &a.methods {
                    let mut s = m.set.name.clone();
                    if !m.via.is_empty() {
                        let via: Vec<String> = m
                            .via
                            .iter()
                            .map(|c| match c {
                                Credential::Header(h) => format!("header {}", self.header(h)),
                                Credential::Bearer(_) | Credential::Basic(_) => "bearer".to_string(),
                                Credential::Query(q) => format!("query {}", self.string(q)),
                            })
                            .collect();
                        s.push_str(" via ");
                        s.push_str(&via.join(", "));
                    }
                    methods.push(s);
                }
                let mut s = format!("auth {}", methods.join(" or "));
                if a.optional {
                    s.push_str(" optional");
                }
                if let Some(m) = self.opt_string(&a.message) {
                    s.push_str(&format!(" message {m}"));
                }
                s
            }
            RouteStmtKind::Allow { cond, status, message } => {
                let mut s = format!("allow if {}", self.expr(cond));
                if status.is_some() || message.is_some() {
                    let st = status.as_ref().map_or_else(|| status_code(403), |q| self.status(q));
                    let msg = self.opt_string(message).unwrap_or_else(|| quote(""));
                    s.push_str(&format!(" else {st} {msg}"));
                }
                s
            }
            RouteStmtKind::Deny { status, message, cond } => {
                format!("deny {} {} if {}", self.status(status), self.string(message), self.expr(cond))
            }
            RouteStmtKind::Limit(l) => self.limit(l, span),
            RouteStmtKind::LimitUse { name, cond } => match cond {
                Some(c) => format!("limit use {} if {}", name.name, self.expr(c)),
                None => format!("limit use {}", name.name),
            },
            RouteStmtKind::SetHeader { name, value: v } => {
                format!("set header {} = {}", self.header(name), self.value(v))
            }
            RouteStmtKind::StripHeaders(names) => {
                let names: Vec<String> = names.iter().map(|n| self.header(n)).collect();
                format!("strip header {}", names.join(", "))
            }
            RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) => {
                format!("rewrite prefix {} => {}", self.string(from), self.string(to))
            }
            RouteStmtKind::Rewrite(Rewrite::Path(p)) => format!("rewrite path {}", self.string(p)),
            RouteStmtKind::Respond { status, body, headers } => {
                let mut s = format!("respond {}", self.status(status));
                match body {
                    Some(ResponseBody::Json(j)) => {
                        s.push_str(" json ");
                        s.push_str(&self.json(j));
                    }
                    Some(ResponseBody::JsonTemplate(j)) => {
                        s.push_str(" json ");
                        self.json_template(&mut s, &j.value);
                    }
                    Some(ResponseBody::Text(t)) => {
                        s.push(' ');
                        s.push_str(&self.value(t));
                    }
                    None => {}
                }
                for (name, value) in headers {
                    s.push_str(&format!(" header {} = {}", self.header(name), self.value(value)));
                }
                s
            }
            RouteStmtKind::Cache { ttl, max, shared, statuses } => {
                let mut s = format!("cache {}", self.duration(ttl));
                if let Some(m) = max {
                    s.push_str(&format!(" max {}", self.size(m)));
                }
                if *shared {
                    s.push_str(" shared");
                }
                if !statuses.is_empty() {
                    let list: Vec<String> = statuses.iter().map(|q| self.status(q)).collect();
                    s.push_str(&format!(" status {}", list.join(", ")));
                }
                s
            }
            RouteStmtKind::Websocket => "websocket".to_string(),
            RouteStmtKind::Idempotent => "idempotent".to_string(),
            RouteStmtKind::AuthNone => "auth none".to_string(),
            RouteStmtKind::Cors(c) => {
                let list = |xs: &[Str]| xs.iter().map(|o| self.string(o)).collect::<Vec<_>>().join(", ");
                let mut s = format!("cors origins [{}]", list(&c.origins));
                // Clauses in the order written.
                for (word, _) in &c.clauses {
                    match *word {
                        "methods" => s.push_str(&format!(" methods {}", methods(&c.methods))),
                        "headers" => s.push_str(&format!(" headers [{}]", list(&c.headers))),
                        "expose" => s.push_str(&format!(" expose [{}]", list(&c.expose))),
                        "credentials" => s.push_str(" credentials"),
                        _ => {
                            if let Some(d) = &c.max_age {
                                s.push_str(&format!(" max_age {}", self.duration(d)));
                            }
                        }
                    }
                }
                s
            }
            RouteStmtKind::Serve(b) => format!("serve {}", b.builtin),
            RouteStmtKind::To(u) => format!("to {}", u.name),
        }
    }

    /// `limit NAME KIND [per KEY]`, split after the name (for alignment).
    pub(super) fn shared_limit(self, l: &SharedLimit) -> (String, String) {
        let as_limit = Limit { kind: l.kind.clone(), per: l.per.clone(), model: None, cond: None, shadow: false };
        let text = self.limit(&as_limit, l.span);
        let rest = text.strip_prefix("limit").unwrap_or(&text).to_string();
        (format!("limit {}", l.name.name), rest)
    }

    pub(super) fn limit(self, l: &Limit, span: Span) -> String {
        let mut s = String::from("limit ");
        // Where the kind ends, to find a `per route` written out after it.
        let kind_end = match &l.kind {
            LimitKind::Rate { rate: r, burst } => {
                s.push_str(&format!("rate {}", self.rate(r)));
                if let Some(b) = burst {
                    s.push_str(&format!(" burst {}", self.count(b)));
                }
                burst.map_or(r.span, |b| b.span)
            }
            LimitKind::Tokens { rate: r, estimate } => {
                s.push_str(&format!("tokens {}", self.rate(r)));
                if let Some(e) = estimate {
                    s.push_str(&format!(" estimate {}", self.count(e)));
                }
                estimate.map_or(r.span, |e| e.span)
            }
            LimitKind::Concurrent(q) => {
                s.push_str(&format!("concurrent {}", self.count(q)));
                q.span
            }
        };
        match &l.per {
            LimitKey::Route if self.goes_on_with(kind_end, span, &["per", "route"]) => s.push_str(" per route"),
            LimitKey::Route => {}
            LimitKey::Key => s.push_str(" per key"),
            LimitKey::Tenant => s.push_str(" per tenant"),
            LimitKey::Client => s.push_str(" per client"),
            LimitKey::Header(h) => s.push_str(&format!(" per header {}", self.header(h))),
            // `per claim["sub"]` keeps its spelling without parentheses, as written.
            LimitKey::Expr(e @ Expr { kind: ExprKind::Fact(Fact::Claim(_)), .. })
                if !self.0.get(..e.span.start as usize).is_some_and(|t| t.trim_end().ends_with('(')) =>
            {
                s.push_str(&format!(" per {}", self.expr(e)))
            }
            LimitKey::Expr(e) => s.push_str(&format!(" per ({})", self.expr(e))),
        }
        if let Some(m) = &l.model {
            s.push_str(" model ");
            s.push_str(&self.regex(m));
        }
        if let Some(c) = &l.cond {
            s.push_str(" if ");
            s.push_str(&self.expr(c));
        }
        if l.shadow {
            s.push_str(" shadow");
        }
        s
    }

    pub(super) fn test_stmt(self, k: &TestStmtKind) -> String {
        match k {
            TestStmtKind::Send(send) => {
                let mut s = format!("send {} {}", send.method.as_str(), self.string(&send.path));
                for (name, v) in &send.headers {
                    s.push_str(&format!(" header {} = {}", self.header(name), self.string(v)));
                }
                if let Some(b) = &send.body {
                    s.push_str(" body ");
                    s.push_str(&self.json(b));
                }
                if let Some(c) = self.opt_string(&send.client) {
                    s.push_str(&format!(" client {c}"));
                }
                s
            }
            TestStmtKind::Advance(q) => format!("advance {}", self.duration(q)),
            TestStmtKind::Expect(e) => match e {
                Expectation::Status { status, message } => {
                    let mut s = format!("expect {}", self.status(status));
                    if let Some(m) = self.opt_string(message) {
                        s.push(' ');
                        s.push_str(&m);
                    }
                    s
                }
                Expectation::Route(n) => format!("expect route {}", n.name),
                Expectation::Upstream(n) => format!("expect upstream {}", n.name),
                Expectation::Tenant(n) => format!("expect tenant {}", n.name),
                Expectation::Cache { result, .. } => format!("expect cache {}", result.as_str()),
                Expectation::Header { name, value: Some(v) } => {
                    format!("expect header {} = {}", self.header(name), self.string(v))
                }
                Expectation::Header { name, value: None } => format!("expect header {} absent", self.header(name)),
                Expectation::Limit { tenant: true, name } => format!("expect limit tenant {}", name.name),
                Expectation::Limit { tenant: false, name } => format!("expect limit {}", name.name),
                Expectation::Body(ResponseBody::Json(j)) => format!("expect body {}", self.json(j)),
                Expectation::Body(ResponseBody::Text(t)) => format!("expect body {}", self.value(t)),
                Expectation::Body(ResponseBody::JsonTemplate(j)) => {
                    let mut s = "expect body ".to_string();
                    self.json_template(&mut s, &j.value);
                    s
                }
                Expectation::Claim { name, value } => {
                    format!("expect claim {} = {}", self.string(name), self.string(value))
                }
            },
        }
    }

    /// A JSON literal on one line. Objects keep the key order, and strings and numbers the
    /// spelling, of the source when the source text under the span reads back to the same value
    /// (`serde_json::Map` here sorts its keys, so the tree alone has lost the order); otherwise
    /// the tree is printed, keys sorted.
    /// A JSON body with templates, in its order, each value as written.
    pub(super) fn json_template(self, out: &mut String, j: &JsonT) {
        match j {
            JsonT::Scalar(v) => write_json(out, v),
            JsonT::Text(v) => out.push_str(&self.value(v)),
            JsonT::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.json_template(out, item);
                }
                out.push(']');
            }
            JsonT::Object(kv) => {
                out.push('{');
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&self.string(k));
                    out.push_str(": ");
                    self.json_template(out, v);
                }
                out.push('}');
            }
        }
    }

    pub(super) fn json(self, j: &Json) -> String {
        let mut out = String::new();
        let from_source = self.0.get(j.span.start as usize..j.span.end as usize).and_then(|t| {
            let mut r = JsonReader { s: t, pos: 0 };
            let v = r.value()?;
            r.skip();
            (r.pos == t.len() && v.to_value() == j.value).then_some(v)
        });
        match from_source {
            Some(v) => v.write(&mut out),
            None => write_json(&mut out, &j.value),
        }
        out
    }
}

pub(super) fn methods(ms: &[Method]) -> String {
    ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("|")
}
