//! The canonical formatter: an AST (plus the comments of its source) printed back as text.
//!
//! Style: 4-space indent; items separated by one blank line; every statement on its own line
//! without `;`; expressions with the fewest parentheses the parser needs; quantities in the
//! largest unit that divides them exactly; JSON on one line, keys in source order. Inside a
//! block, one blank line is kept where the source had blank lines. Comments are kept, each
//! exactly once and in their original order: a comment on its own line stays before what
//! follows it, a comment at the end of a line stays at the end of that statement's line, a
//! comment written inside a statement moves to its own line before the statement.
//!
//! `format_source` checks its own work: it re-parses the output and compares the trees with
//! spans erased (`strip_spans`), so a formatter bug can never silently change a policy.

use std::fmt;

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::source::{FileId, Span};
use crate::syntax::{self, Comment};

const INDENT: &str = "    ";

/// Why `format_source` refused to format.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatError {
    /// The input does not parse; nothing was formatted.
    Syntax(Vec<Diag>),
    /// A formatter bug: the formatted text does not parse back to the same policy (or lost a
    /// comment). The message says what differs.
    Unstable(String),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Syntax(diags) => {
                let errors = diags.iter().filter(|d| d.is_error()).count();
                write!(f, "the policy has {errors} syntax error(s)")?;
                if let Some(d) = diags.iter().find(|d| d.is_error()) {
                    write!(f, "; first: {}", d.message)?;
                }
                Ok(())
            }
            FormatError::Unstable(msg) => {
                write!(f, "bug in the formatter: formatting changed the meaning of the policy: {msg}")
            }
        }
    }
}

impl std::error::Error for FormatError {}

/// Parse, format, re-parse the output and compare the trees (ignoring spans) and the comments.
pub fn format_source(text: &str) -> Result<String, FormatError> {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    if diags.iter().any(|d| d.is_error()) {
        return Err(FormatError::Syntax(diags));
    }
    let out = format_file(&parsed.file, &parsed.comments, text);
    let (again, diags2) = syntax::parse(FileId(0), &out);
    if let Some(d) = diags2.iter().find(|d| d.is_error()) {
        let at = d.primary_span().map(|s| s.start).unwrap_or(0);
        return Err(FormatError::Unstable(format!(
            "the formatted text does not parse ({} at byte {at}):\n{out}",
            d.message
        )));
    }
    let before = strip_spans(&parsed.file);
    let after = strip_spans(&again.file);
    if before != after {
        return Err(FormatError::Unstable(describe_difference(&before, &after, &out)));
    }
    let texts = |cs: &[Comment]| cs.iter().map(|c| c.text.clone()).collect::<Vec<_>>();
    if texts(&parsed.comments) != texts(&again.comments) {
        return Err(FormatError::Unstable(format!(
            "comments changed: before {:?}, after {:?}",
            texts(&parsed.comments),
            texts(&again.comments)
        )));
    }
    Ok(out)
}

fn describe_difference(before: &File, after: &File, out: &str) -> String {
    if before.items.len() != after.items.len() {
        return format!(
            "{} items before, {} after formatting; formatted text:\n{out}",
            before.items.len(),
            after.items.len()
        );
    }
    for (i, (b, a)) in before.items.iter().zip(&after.items).enumerate() {
        if b != a {
            return format!("item {i} differs:\nbefore: {b:?}\nafter:  {a:?}");
        }
    }
    "the trees differ".to_string()
}

/// Format a whole file canonically. `text` is the source the AST and comments came from; it is
/// read only to place comments, to keep one blank line where the source separated statements
/// or comments with blank lines, and to keep the key order of JSON literals. With text that
/// does not match the AST (e.g. `""`), the output is still correct, only without those.
pub fn format_file(file: &File, comments: &[Comment], text: &str) -> String {
    let mut comments: Vec<&Comment> = comments.iter().collect();
    comments.sort_by_key(|c| c.span.start);
    let mut f = Fmt { text, comments, out: String::new() };
    f.file(file);
    f.out
}

/// One expression in canonical form (for messages and tools).
pub fn expr_to_string(e: &Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, e, Ctx::TOP);
    s
}

// ====================================================================== layout and comments

struct Fmt<'a> {
    text: &'a str,
    comments: Vec<&'a Comment>,
    out: String,
}

/// Where the comments of one block (or of the file) go, by index into `Fmt::comments`.
#[derive(Default)]
struct Slots {
    /// A comment at the end of the block's opening line.
    header: Option<usize>,
    /// Own-line comments before each child.
    leading: Vec<Vec<usize>>,
    /// Comments written inside each child's span.
    inner: Vec<Vec<usize>>,
    /// A comment at the end of each child's (last) line.
    trailing: Vec<Option<usize>>,
    /// Comments after the last child.
    tail: Vec<usize>,
}

/// A statement printed on one line, with the source range it came from.
struct Line {
    text: String,
    start: usize,
    end: usize,
}

/// One output line of a block body, with the source range it stands for (for blank lines).
struct Elem {
    text: String,
    start: usize,
    end: usize,
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{FEFF}')
}

impl<'a> Fmt<'a> {
    fn comment(&self, i: usize) -> &'a Comment {
        self.comments[i]
    }

    fn cstart(&self, i: usize) -> usize {
        self.comments[i].span.start as usize
    }

    fn cend(&self, i: usize) -> usize {
        self.comments[i].span.end as usize
    }

    /// The end of a span without the whitespace and comments pest lets a rule swallow when it
    /// ends in an optional part.
    fn eff_end(&self, span: Span) -> usize {
        let start = span.start as usize;
        let mut pos = (span.end as usize).min(self.text.len());
        loop {
            while pos > start {
                match self.text.get(..pos).and_then(|s| s.chars().next_back()) {
                    Some(c) if is_ws(c) => pos -= c.len_utf8(),
                    _ => break,
                }
            }
            // A comment ending at (or just after, for a trailing `\r`) `pos`?
            let k = self.comments.partition_point(|c| (c.span.start as usize) < pos);
            match k.checked_sub(1).map(|k| self.comments[k]) {
                Some(c) if (c.span.start as usize) >= start && (c.span.end as usize) >= pos => {
                    pos = c.span.start as usize;
                }
                _ => return pos,
            }
        }
    }

    /// Is there code before the comment on its line?
    fn is_trailing(&self, i: usize) -> bool {
        let start = self.cstart(i);
        let before = self.text.get(..start).unwrap_or("");
        let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
        before.get(line_start..).unwrap_or("").chars().any(|c| !is_ws(c))
    }

    fn same_line(&self, a: usize, b: usize) -> bool {
        a <= b && !self.text.get(a..b).unwrap_or("\n").contains('\n')
    }

    /// Did the source have an empty line between `a` and `b`?
    fn blank_between(&self, a: usize, b: usize) -> bool {
        if a >= b {
            return false;
        }
        let Some(gap) = self.text.get(a..b) else { return false };
        let segs: Vec<&str> = gap.split('\n').collect();
        segs.len() > 2 && segs[1..segs.len() - 1].iter().any(|s| s.chars().all(is_ws))
    }

    /// Give each comment of `cs` (in source order) its place among `children` (source ranges
    /// in order). `header`: a block whose first comment may stay on its opening line.
    fn assign(&self, cs: &[usize], children: &[(usize, usize)], header: bool) -> Slots {
        let n = children.len();
        let mut s = Slots {
            header: None,
            leading: vec![vec![]; n],
            inner: vec![vec![]; n],
            trailing: vec![None; n],
            tail: vec![],
        };
        // Children come in source order and do not overlap, so starts and ends are sorted.
        for (nth, &ci) in cs.iter().enumerate() {
            let pos = self.cstart(ci);
            let next = children.partition_point(|&(a, _)| a <= pos);
            if let Some(k) = next.checked_sub(1).filter(|&k| pos < children[k].1) {
                s.inner[k].push(ci);
                continue;
            }
            let next = (next < n).then_some(next);
            if self.is_trailing(ci) {
                let prev = children.partition_point(|&(_, b)| b <= pos).checked_sub(1);
                if let Some(k) = prev {
                    if self.same_line(children[k].1, pos) && s.trailing[k].is_none() {
                        s.trailing[k] = Some(ci);
                        continue;
                    }
                }
                if header && nth == 0 && prev.is_none() {
                    s.header = Some(ci);
                    continue;
                }
            }
            match next {
                Some(k) => s.leading[k].push(ci),
                None => s.tail.push(ci),
            }
        }
        s
    }

    fn file(&mut self, file: &File) {
        let spans: Vec<(usize, usize)> =
            file.items.iter().map(|it| (it.span().start as usize, self.eff_end(it.span()))).collect();
        let all: Vec<usize> = (0..self.comments.len()).collect();
        let slots = self.assign(&all, &spans, false);
        // What was printed last: None at the start, Some(true) after an item.
        let mut last: Option<(bool, usize)> = None;
        for (k, item) in file.items.iter().enumerate() {
            let single_line = !matches!(
                item,
                Item::Gateway(_) | Item::Upstream(_) | Item::Tenant(_) | Item::Route(_) | Item::Test(_)
            );
            let mut before: Vec<usize> = slots.leading[k].clone();
            if single_line {
                before.extend(slots.inner[k].iter().copied());
            }
            for ci in before {
                self.file_sep(last, self.cstart(ci));
                let text = &self.comment(ci).text;
                self.out.push_str(text);
                self.out.push('\n');
                last = Some((false, self.cend(ci)));
            }
            self.file_sep(last, spans[k].0);
            let mut end = spans[k].1;
            if single_line {
                let line = self.simple_item(item);
                self.out.push_str(&line);
            } else {
                self.block_item(item, &slots.inner[k]);
            }
            if let Some(ci) = slots.trailing[k] {
                self.out.push(' ');
                self.out.push_str(&self.comment(ci).text);
                end = self.cend(ci);
            }
            self.out.push('\n');
            last = Some((true, end));
        }
        for &ci in &slots.tail {
            self.file_sep(last, self.cstart(ci));
            self.out.push_str(&self.comment(ci).text);
            self.out.push('\n');
            last = Some((false, self.cend(ci)));
        }
    }

    /// The separator before the next top-level element starting at `start`.
    fn file_sep(&mut self, last: Option<(bool, usize)>, start: usize) {
        let blank = match last {
            None => false,
            Some((after_item, end)) => after_item || self.blank_between(end, start),
        };
        if blank {
            self.out.push('\n');
        }
    }

    fn simple_item(&self, item: &Item) -> String {
        match item {
            Item::Import(i) => format!("import {}", quote(&i.path.value)),
            Item::Keys(k) => {
                let mut s = format!("keys {} from {}", k.name.name, quote(&k.file.value));
                if let Some(salt) = &k.salt {
                    s.push_str(" salt ");
                    s.push_str(&value(salt));
                }
                s
            }
            Item::Matcher(m) => format!("matcher {} = {}", m.name.name, expr_to_string(&m.expr)),
            _ => String::new(),
        }
    }

    fn block_item(&mut self, item: &Item, cs: &[usize]) {
        let (header, lines): (String, Vec<Line>) = match item {
            Item::Gateway(g) => {
                ("gateway".to_string(), g.settings.iter().map(|s| self.line(setting(&s.kind), s.span)).collect())
            }
            Item::Upstream(u) => {
                let mut lines: Vec<Line> = vec![];
                for (i, s) in u.stmts.iter().enumerate() {
                    let mut text = upstream_stmt(&s.kind);
                    // `health ... every 10s` followed by `timeout 5s` would read as the health
                    // check's timeout: only a `;` keeps them apart.
                    if let UpstreamStmtKind::Health(HealthCheck { timeout: None, .. }) = s.kind {
                        if matches!(u.stmts.get(i + 1).map(|n| &n.kind), Some(UpstreamStmtKind::Timeout(_))) {
                            text.push(';');
                        }
                    }
                    lines.push(self.line(text, s.span));
                }
                (format!("upstream {}", u.name.name), lines)
            }
            Item::Tenant(t) => (
                format!("tenant {}", t.name.name),
                t.stmts.iter().map(|s| self.line(tenant_stmt(&s.kind), s.span)).collect(),
            ),
            Item::Route(r) => (
                format!("route {}", r.name.name),
                r.stmts.iter().map(|s| self.line(route_stmt(&s.kind, self.text), s.span)).collect(),
            ),
            Item::Test(t) => (
                format!("test {}", quote(&t.name.value)),
                t.stmts.iter().map(|s| self.line(test_stmt(&s.kind, self.text), s.span)).collect(),
            ),
            _ => return,
        };
        self.block(0, &header, lines, cs);
    }

    fn line(&self, text: String, span: Span) -> Line {
        Line { text, start: span.start as usize, end: self.eff_end(span) }
    }

    /// `header {`, one line per child with its comments, `}` (no newline after it).
    fn block(&mut self, depth: usize, header: &str, lines: Vec<Line>, cs: &[usize]) {
        let spans: Vec<(usize, usize)> = lines.iter().map(|l| (l.start, l.end)).collect();
        let slots = self.assign(cs, &spans, true);
        let pad = INDENT.repeat(depth);
        let inner_pad = INDENT.repeat(depth + 1);
        let mut elems: Vec<Elem> = vec![];
        let comment_elem =
            |f: &Self, ci: usize| Elem { text: f.comment(ci).text.clone(), start: f.cstart(ci), end: f.cend(ci) };
        for (k, line) in lines.into_iter().enumerate() {
            for &ci in slots.leading[k].iter().chain(&slots.inner[k]) {
                elems.push(comment_elem(self, ci));
            }
            let mut e = Elem { text: line.text, start: line.start, end: line.end };
            if let Some(ci) = slots.trailing[k] {
                e.text.push(' ');
                e.text.push_str(&self.comment(ci).text);
                e.end = self.cend(ci);
            }
            elems.push(e);
        }
        for &ci in &slots.tail {
            elems.push(comment_elem(self, ci));
        }
        self.out.push_str(&pad);
        self.out.push_str(header);
        self.out.push_str(" {");
        if let Some(ci) = slots.header {
            self.out.push(' ');
            self.out.push_str(&self.comment(ci).text);
        } else if elems.is_empty() {
            self.out.push('}');
            return;
        }
        self.out.push('\n');
        let mut prev_end: Option<usize> = None;
        for e in elems {
            if let Some(p) = prev_end {
                if self.blank_between(p, e.start) {
                    self.out.push('\n');
                }
            }
            self.out.push_str(&inner_pad);
            self.out.push_str(&e.text);
            self.out.push('\n');
            prev_end = Some(e.end);
        }
        self.out.push_str(&pad);
        self.out.push('}');
    }
}

// ====================================================================== statements

fn setting(k: &SettingKind) -> String {
    match k {
        SettingKind::Listen(v) => format!("listen {}", value(v)),
        SettingKind::Admin { addr, token } => {
            let mut s = format!("admin {}", value(addr));
            if let Some(t) = token {
                s.push_str(&format!(" token {}", value(t)));
            }
            s
        }
        SettingKind::State(StateStore::Local) => "state local".to_string(),
        SettingKind::State(StateStore::Redis { url, on_error }) => {
            let mut s = format!("state redis {}", value(url));
            match on_error {
                OnError::Local => {}
                OnError::Allow => s.push_str(" on_error allow"),
                OnError::Deny => s.push_str(" on_error deny"),
            }
            s
        }
        SettingKind::Audit { path, rotate } => {
            let mut s = format!("audit {}", value(path));
            if let Some(r) = rotate {
                s.push_str(&format!(" rotate {}", size(r.value)));
            }
            s
        }
        SettingKind::MaxBody(q) => format!("max_body {}", size(q.value)),
        SettingKind::MaxHeaderBytes(q) => format!("max_header_bytes {}", size(q.value)),
        SettingKind::MaxHeaders(q) => format!("max_headers {}", q.value),
        SettingKind::HeaderTimeout(q) => format!("header_timeout {}", duration(q.value)),
        SettingKind::IdleTimeout(q) => format!("idle_timeout {}", duration(q.value)),
        SettingKind::DrainTimeout(q) => format!("drain_timeout {}", duration(q.value)),
        SettingKind::Tls { cert, key } => format!("tls cert {} key {}", value(cert), value(key)),
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

fn upstream_stmt(k: &UpstreamStmtKind) -> String {
    match k {
        UpstreamStmtKind::Target(t) => {
            let mut s = format!("target {}", value(&t.url));
            if let Some(w) = &t.weight {
                s.push_str(&format!(" weight {}", w.value));
            }
            if let Some(r) = &t.region {
                s.push_str(&format!(" region {}", quote(&r.value)));
            }
            s
        }
        UpstreamStmtKind::Balance(b) => match b {
            Balance::RoundRobin => "balance round_robin".to_string(),
            Balance::Weighted => "balance weighted".to_string(),
            Balance::LeastConn => "balance least_conn".to_string(),
            Balance::Hash(e) => format!("balance hash({})", expr_to_string(e)),
        },
        UpstreamStmtKind::Header { name, value: v } => format!("header {} = {}", quote(&name.value), value(v)),
        UpstreamStmtKind::Timeout(q) => format!("timeout {}", duration(q.value)),
        UpstreamStmtKind::ConnectTimeout(q) => format!("connect_timeout {}", duration(q.value)),
        UpstreamStmtKind::Health(h) => {
            let mut s =
                format!("health {} {} every {}", h.method.as_str(), quote(&h.path.value), duration(h.every.value));
            if let Some(t) = &h.timeout {
                s.push_str(&format!(" timeout {}", duration(t.value)));
            }
            s
        }
        UpstreamStmtKind::Retry(r) => {
            let mut s = format!("retry {}", r.attempts.value);
            if !r.on.is_empty() {
                let conds: Vec<String> =
                    r.on.iter()
                        .map(|c| match c {
                            RetryCond::ConnectError(_) => "connect_error".to_string(),
                            RetryCond::Timeout(_) => "timeout".to_string(),
                            RetryCond::Status(q) => q.value.to_string(),
                        })
                        .collect();
                s.push_str(" on ");
                s.push_str(&conds.join(", "));
            }
            s
        }
        UpstreamStmtKind::MaxConnections(q) => format!("max_connections {}", q.value),
        UpstreamStmtKind::Affinity(e) => format!("affinity {}", expr_to_string(e)),
    }
}

fn tenant_stmt(k: &TenantStmtKind) -> String {
    match k {
        TenantStmtKind::Rate { rate: r, burst } => {
            let mut s = format!("rate {}", rate(r));
            if let Some(b) = burst {
                s.push_str(&format!(" burst {}", b.value));
            }
            s
        }
        TenantStmtKind::Tokens(r) => format!("tokens {}", rate(r)),
        TenantStmtKind::Concurrent(q) => format!("concurrent {}", q.value),
        TenantStmtKind::Region(r) => format!("region {}", quote(&r.value)),
    }
}

fn methods(ms: &[Method]) -> String {
    ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("|")
}

fn route_stmt(k: &RouteStmtKind, src: &str) -> String {
    match k {
        RouteStmtKind::When(w) => {
            let mut s = format!("when {} {}", methods(&w.methods), quote(&w.path.value));
            if let Some(h) = &w.host {
                s.push_str(&format!(" host {}", quote(&h.value)));
            }
            if let Some(c) = &w.cond {
                s.push_str(&format!(" if {}", expr_to_string(c)));
            }
            s
        }
        RouteStmtKind::Auth(a) => {
            let mut s = format!("auth {}", a.keys.name);
            if !a.via.is_empty() {
                let via: Vec<String> = a
                    .via
                    .iter()
                    .map(|c| match c {
                        Credential::Header(h) => format!("header {}", quote(&h.value)),
                        Credential::Bearer(_) => "bearer".to_string(),
                        Credential::Query(q) => format!("query {}", quote(&q.value)),
                    })
                    .collect();
                s.push_str(" via ");
                s.push_str(&via.join(", "));
            }
            if a.optional {
                s.push_str(" optional");
            }
            s
        }
        RouteStmtKind::Allow { cond, status, message } => {
            let mut s = format!("allow if {}", expr_to_string(cond));
            if status.is_some() || message.is_some() {
                let st = status.map(|q| q.value).unwrap_or(403);
                let msg = message.as_ref().map(|m| m.value.as_str()).unwrap_or("");
                s.push_str(&format!(" else {} {}", status_code(st), quote(msg)));
            }
            s
        }
        RouteStmtKind::Deny { status, message, cond } => {
            format!("deny {} {} if {}", status_code(status.value), quote(&message.value), expr_to_string(cond))
        }
        RouteStmtKind::Limit(l) => limit(l),
        RouteStmtKind::SetHeader { name, value: v } => format!("set header {} = {}", quote(&name.value), value(v)),
        RouteStmtKind::StripHeaders(names) => {
            let names: Vec<String> = names.iter().map(|n| quote(&n.value)).collect();
            format!("strip header {}", names.join(", "))
        }
        RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) => {
            format!("rewrite prefix {} => {}", quote(&from.value), quote(&to.value))
        }
        RouteStmtKind::Rewrite(Rewrite::Path(p)) => format!("rewrite path {}", quote(&p.value)),
        RouteStmtKind::Respond { status, body } => {
            let mut s = format!("respond {}", status_code(status.value));
            match body {
                Some(ResponseBody::Json(j)) => {
                    s.push_str(" json ");
                    s.push_str(&json(j, src));
                }
                Some(ResponseBody::Text(t)) => {
                    s.push(' ');
                    s.push_str(&quote(&t.value));
                }
                None => {}
            }
            s
        }
        RouteStmtKind::Cache { ttl, max } => {
            let mut s = format!("cache {}", duration(ttl.value));
            if let Some(m) = max {
                s.push_str(&format!(" max {}", size(m.value)));
            }
            s
        }
        RouteStmtKind::Websocket => "websocket".to_string(),
        RouteStmtKind::AuthNone => "auth none".to_string(),
        RouteStmtKind::Cors { origins, methods: ms } => {
            let origins: Vec<String> = origins.iter().map(|o| quote(&o.value)).collect();
            let mut s = format!("cors origins [{}]", origins.join(", "));
            if !ms.is_empty() {
                s.push_str(" methods ");
                s.push_str(&methods(ms));
            }
            s
        }
        RouteStmtKind::Jwt { secret, issuer } => {
            let mut s = format!("jwt secret {}", value(secret));
            if let Some(i) = issuer {
                s.push_str(&format!(" issuer {}", quote(&i.value)));
            }
            s
        }
        RouteStmtKind::Serve(b) => format!("serve {}", b.name),
        RouteStmtKind::To(u) => format!("to {}", u.name),
    }
}

fn limit(l: &Limit) -> String {
    let mut s = String::from("limit ");
    match &l.kind {
        LimitKind::Rate { rate: r, burst } => {
            s.push_str(&format!("rate {}", rate(r)));
            if let Some(b) = burst {
                s.push_str(&format!(" burst {}", b.value));
            }
        }
        LimitKind::Tokens { rate: r, estimate } => {
            s.push_str(&format!("tokens {}", rate(r)));
            if let Some(e) = estimate {
                s.push_str(&format!(" estimate {}", e.value));
            }
        }
        LimitKind::Concurrent(q) => s.push_str(&format!("concurrent {}", q.value)),
    }
    match &l.per {
        LimitKey::Route => {}
        LimitKey::Key => s.push_str(" per key"),
        LimitKey::Tenant => s.push_str(" per tenant"),
        LimitKey::Client => s.push_str(" per client"),
        LimitKey::Header(h) => s.push_str(&format!(" per header {}", quote(&h.value))),
        LimitKey::Expr(e) => s.push_str(&format!(" per ({})", expr_to_string(e))),
    }
    if let Some(m) = &l.model {
        s.push_str(" model ");
        s.push_str(&regex(m));
    }
    if let Some(c) = &l.cond {
        s.push_str(" if ");
        s.push_str(&expr_to_string(c));
    }
    if l.shadow {
        s.push_str(" shadow");
    }
    s
}

fn test_stmt(k: &TestStmtKind, src: &str) -> String {
    match k {
        TestStmtKind::Send(send) => {
            let mut s = format!("send {} {}", send.method.as_str(), quote(&send.path.value));
            for (name, v) in &send.headers {
                s.push_str(&format!(" header {} = {}", quote(&name.value), quote(&v.value)));
            }
            if let Some(b) = &send.body {
                s.push_str(" body ");
                s.push_str(&json(b, src));
            }
            if let Some(c) = &send.client {
                s.push_str(&format!(" client {}", quote(&c.value)));
            }
            s
        }
        TestStmtKind::Advance(q) => format!("advance {}", duration(q.value)),
        TestStmtKind::Expect(e) => match e {
            Expectation::Status { status, message } => {
                let mut s = format!("expect {}", status_code(status.value));
                if let Some(m) = message {
                    s.push(' ');
                    s.push_str(&quote(&m.value));
                }
                s
            }
            Expectation::Route(n) => format!("expect route {}", n.name),
            Expectation::Upstream(n) => format!("expect upstream {}", n.name),
            Expectation::Tenant(n) => format!("expect tenant {}", n.name),
        },
    }
}

// ====================================================================== leaves

/// A string literal with the escapes the grammar reads back.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value(v: &Value) -> String {
    let parts: Vec<String> = v
        .parts
        .iter()
        .map(|p| match p {
            ValuePart::Lit(s) => quote(&s.value),
            ValuePart::Env(s) => format!("env({})", quote(&s.value)),
        })
        .collect();
    parts.join(" + ")
}

fn regex(r: &Regex) -> String {
    format!("/{}/{}", r.pattern.replace('/', "\\/"), if r.case_insensitive { "i" } else { "" })
}

fn status_code(n: u64) -> String {
    format!("{n:03}")
}

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// The largest unit of `units` (largest first) that divides `n`, as (count, unit).
fn largest_unit(n: u64, units: &[(&'static str, u64)]) -> Option<(u64, &'static str)> {
    units.iter().find(|(_, m)| n.checked_rem(*m) == Some(0)).map(|&(u, m)| (n / m, u))
}

/// A duration in nanoseconds, e.g. `90s`, `5m`, `2h`.
pub fn duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let units = [("d", DAY), ("h", HOUR), ("m", MIN), ("s", SEC), ("ms", MS)];
    match largest_unit(ns, &units) {
        Some((n, u)) => format!("{n}{u}"),
        // Finer than the language can write: the nearest millisecond.
        None => format!("{}ms", ns / MS),
    }
}

/// A size in bytes: decimal units when one divides, else binary ones, else bytes.
pub fn size(bytes: u64) -> String {
    if bytes == 0 {
        return "0B".to_string();
    }
    let decimal = [("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000)];
    let binary = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    match largest_unit(bytes, &decimal).or_else(|| largest_unit(bytes, &binary)) {
        Some((n, u)) => format!("{n}{u}"),
        None => format!("{bytes}B"),
    }
}

/// A rate, e.g. `100/s`, `500k/min`, `10/30s`.
pub fn rate(r: &Rate) -> String {
    let count = match r.count {
        0 => "0".to_string(),
        c if c % 1_000_000 == 0 => format!("{}M", c / 1_000_000),
        c if c % 1_000 == 0 => format!("{}k", c / 1_000),
        c => c.to_string(),
    };
    let window = if r.window_ns == 0 {
        "0s".to_string()
    } else {
        let units = [("d", DAY), ("h", HOUR), ("min", MIN), ("s", SEC), ("ms", MS)];
        match largest_unit(r.window_ns, &units) {
            Some((1, u)) => u.to_string(),
            Some((n, u)) => format!("{n}{u}"),
            None => format!("{}ms", r.window_ns / MS),
        }
    };
    format!("{count}/{window}")
}

/// A JSON literal on one line. Objects keep the key order of the source when the source text
/// under the span reads back to the same value (`serde_json::Map` here sorts its keys, so the
/// tree alone has lost the order); otherwise the tree is printed, keys sorted.
fn json(j: &Json, src: &str) -> String {
    let mut out = String::new();
    let from_source = src.get(j.span.start as usize..j.span.end as usize).and_then(|t| {
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

/// JSON as written, in order (duplicate keys included).
enum OJson {
    Obj(Vec<(String, OJson)>),
    Arr(Vec<OJson>),
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
    Null,
}

impl OJson {
    fn to_value(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            OJson::Obj(kv) => J::Object(kv.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
            OJson::Arr(items) => J::Array(items.iter().map(OJson::to_value).collect()),
            OJson::Str(s) => J::String(s.clone()),
            OJson::Num(n) => J::Number(n.clone()),
            OJson::Bool(b) => J::Bool(*b),
            OJson::Null => J::Null,
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            OJson::Obj(kv) => {
                out.push('{');
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&quote(k));
                    out.push_str(": ");
                    v.write(out);
                }
                out.push('}');
            }
            OJson::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            OJson::Str(s) => out.push_str(&quote(s)),
            OJson::Num(n) => out.push_str(&n.to_string()),
            OJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OJson::Null => out.push_str("null"),
        }
    }
}

/// Reads the grammar's JSON (policy strings and escapes, `#` comments as whitespace) from
/// source text the parser has already accepted. `None` on anything unexpected.
struct JsonReader<'t> {
    s: &'t str,
    pos: usize,
}

impl<'t> JsonReader<'t> {
    fn rest(&self) -> &'t str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn skip(&mut self) {
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else { return };
            if is_ws(c) {
                self.pos += c.len_utf8();
            } else if c == '#' {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else {
                return;
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<OJson> {
        self.skip();
        let rest = self.rest();
        let c = rest.chars().next()?;
        Some(match c {
            '{' => {
                self.pos += 1;
                let mut kv = vec![];
                if !self.eat('}') {
                    loop {
                        self.skip();
                        let k = self.string()?;
                        if !self.eat(':') {
                            return None;
                        }
                        kv.push((k, self.value()?));
                        if self.eat('}') {
                            break;
                        }
                        if !self.eat(',') {
                            return None;
                        }
                    }
                }
                OJson::Obj(kv)
            }
            '[' => {
                self.pos += 1;
                let mut items = vec![];
                if !self.eat(']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(']') {
                            break;
                        }
                        if !self.eat(',') {
                            return None;
                        }
                    }
                }
                OJson::Arr(items)
            }
            '"' => OJson::Str(self.string()?),
            't' | 'f' | 'n' => {
                let (word, v) = match c {
                    't' => ("true", OJson::Bool(true)),
                    'f' => ("false", OJson::Bool(false)),
                    _ => ("null", OJson::Null),
                };
                if !rest.starts_with(word) {
                    return None;
                }
                self.pos += word.len();
                v
            }
            '-' | '0'..='9' => {
                let len = rest
                    .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
                    .unwrap_or(rest.len());
                let n = serde_json::from_str::<serde_json::Number>(&rest[..len]).ok()?;
                self.pos += len;
                OJson::Num(n)
            }
            _ => return None,
        })
    }

    /// A policy string literal at the current position, unescaped.
    fn string(&mut self) -> Option<String> {
        let rest = self.rest();
        if !rest.starts_with('"') {
            return None;
        }
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let body = &rest[1..i];
                    self.pos += i + 1;
                    return Some(syntax::unescape(body));
                }
                _ => {}
            }
        }
        None
    }
}

/// JSON on one line with `": "` and `", "` separators; strings use the policy's escapes.
fn write_json(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => out.push_str(&n.to_string()),
        J::String(s) => out.push_str(&quote(s)),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(out, item);
            }
            out.push(']');
        }
        J::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&quote(k));
                out.push_str(": ");
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

// ====================================================================== expressions

/// What the position of a subexpression allows without parentheses.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    /// The loosest binding level allowed: 1 `or`, 2 `and`, 3 comparisons, 4 `exists`, 5 atoms.
    min: u8,
    /// Whether a bare `not ...` may stand here. `not` reads a whole comparison chain to its
    /// right, so it may not be the left operand of a comparison, nor the right one when another
    /// comparison follows.
    not_ok: bool,
    /// Whether a comparison operator follows this subexpression.
    followed_by_cmp: bool,
}

impl Ctx {
    const TOP: Ctx = Ctx { min: 0, not_ok: true, followed_by_cmp: false };
}

fn level(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary { op, .. } => op.precedence(),
        ExprKind::Not(_) => 0,
        ExprKind::Exists(_) => 4,
        _ => 5,
    }
}

fn write_expr(out: &mut String, e: &Expr, ctx: Ctx) {
    let parens = match e.kind {
        ExprKind::Not(_) => !ctx.not_ok,
        _ => level(e) < ctx.min,
    };
    if parens {
        out.push('(');
        write_expr(out, e, Ctx::TOP);
        out.push(')');
        return;
    }
    match &e.kind {
        ExprKind::Binary { op, lhs, rhs, .. } => {
            let p = op.precedence();
            let cmp = p >= 3;
            write_expr(out, lhs, Ctx { min: p, not_ok: !cmp, followed_by_cmp: cmp });
            out.push(' ');
            out.push_str(op.as_str());
            out.push(' ');
            let rhs_ctx =
                Ctx { min: p + 1, not_ok: !cmp || !ctx.followed_by_cmp, followed_by_cmp: ctx.followed_by_cmp };
            write_expr(out, rhs, rhs_ctx);
        }
        ExprKind::Not(inner) => {
            out.push_str("not ");
            write_expr(out, inner, Ctx { min: 3, not_ok: true, followed_by_cmp: false });
        }
        ExprKind::Exists(inner) => {
            write_expr(out, inner, Ctx { min: 5, not_ok: false, followed_by_cmp: false });
            out.push_str(" exists");
        }
        ExprKind::Lit(l) => write_lit(out, l),
        ExprKind::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, item, Ctx::TOP);
            }
            out.push(']');
        }
        ExprKind::Fact(f) => write_fact(out, f),
        ExprKind::Ref(id) => out.push_str(&id.name),
        ExprKind::Call { func, args } => {
            out.push_str(func.as_str());
            out.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_expr(out, a, Ctx::TOP);
            }
            out.push(')');
        }
    }
}

fn write_lit(out: &mut String, l: &Lit) {
    match l {
        Lit::Str(s) => out.push_str(&quote(s)),
        Lit::Int(n) => out.push_str(&n.to_string()),
        Lit::Float(f) => {
            // `Display` for f64 is the shortest text that reads back exactly and never uses an
            // exponent, which the grammar would not accept.
            let s = f.to_string();
            out.push_str(&s);
            if !s.contains('.') {
                out.push_str(".0");
            }
        }
        Lit::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Lit::Regex(r) => out.push_str(&regex(r)),
    }
}

/// A name usable after `.` (the grammar's `ident_any`).
fn is_field_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn write_fact(out: &mut String, f: &Fact) {
    match f {
        Fact::Method => out.push_str("method"),
        Fact::Path => out.push_str("path"),
        Fact::Host => out.push_str("host"),
        Fact::ClientIp => out.push_str("client_ip"),
        Fact::Tenant => out.push_str("tenant"),
        Fact::Key => out.push_str("key"),
        Fact::Header(n) => out.push_str(&format!("header[{}]", quote(n))),
        Fact::Query(n) => out.push_str(&format!("query[{}]", quote(n))),
        Fact::Param(n) => out.push_str(&format!("param[{}]", quote(n))),
        Fact::Body(segs) => {
            out.push_str("body");
            for seg in segs {
                match seg {
                    PathSeg::Field(name) if is_field_name(name) => {
                        out.push('.');
                        out.push_str(name);
                    }
                    PathSeg::Field(name) => out.push_str(&format!("[{}]", quote(name))),
                    PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
                }
            }
        }
    }
}

// ====================================================================== span erasure

/// A copy of the tree with every span set to `Span::default()`, so that two parses of
/// differently laid out text compare equal when they mean the same.
pub fn strip_spans(file: &File) -> File {
    let mut f = file.clone();
    for item in &mut f.items {
        erase_item(item);
    }
    f
}

fn z(span: &mut Span) {
    *span = Span::default();
}

fn erase_ident(i: &mut Ident) {
    z(&mut i.span);
}

fn erase_str(s: &mut Str) {
    z(&mut s.span);
}

fn erase_q(q: &mut Quantity) {
    z(&mut q.span);
}

fn erase_opt_q(q: &mut Option<Quantity>) {
    if let Some(q) = q {
        erase_q(q);
    }
}

fn erase_opt_str(s: &mut Option<Str>) {
    if let Some(s) = s {
        erase_str(s);
    }
}

fn erase_rate(r: &mut Rate) {
    z(&mut r.span);
}

fn erase_value(v: &mut Value) {
    z(&mut v.span);
    for p in &mut v.parts {
        match p {
            ValuePart::Lit(s) | ValuePart::Env(s) => erase_str(s),
        }
    }
}

fn erase_regex(r: &mut Regex) {
    z(&mut r.span);
}

fn erase_json(j: &mut Json) {
    z(&mut j.span);
}

fn erase_item(item: &mut Item) {
    match item {
        Item::Import(i) => {
            z(&mut i.span);
            erase_str(&mut i.path);
        }
        Item::Gateway(g) => {
            z(&mut g.span);
            for s in &mut g.settings {
                z(&mut s.span);
                erase_setting(&mut s.kind);
            }
        }
        Item::Upstream(u) => {
            z(&mut u.span);
            erase_ident(&mut u.name);
            for s in &mut u.stmts {
                z(&mut s.span);
                erase_upstream_stmt(&mut s.kind);
            }
        }
        Item::Keys(k) => {
            z(&mut k.span);
            erase_ident(&mut k.name);
            erase_str(&mut k.file);
            if let Some(v) = &mut k.salt {
                erase_value(v);
            }
        }
        Item::Tenant(t) => {
            z(&mut t.span);
            erase_ident(&mut t.name);
            for s in &mut t.stmts {
                z(&mut s.span);
                match &mut s.kind {
                    TenantStmtKind::Rate { rate, burst } => {
                        erase_rate(rate);
                        erase_opt_q(burst);
                    }
                    TenantStmtKind::Tokens(r) => erase_rate(r),
                    TenantStmtKind::Concurrent(q) => erase_q(q),
                    TenantStmtKind::Region(r) => erase_str(r),
                }
            }
        }
        Item::Matcher(m) => {
            z(&mut m.span);
            erase_ident(&mut m.name);
            erase_expr(&mut m.expr);
        }
        Item::Route(r) => {
            z(&mut r.span);
            erase_ident(&mut r.name);
            for s in &mut r.stmts {
                z(&mut s.span);
                erase_route_stmt(&mut s.kind);
            }
        }
        Item::Test(t) => {
            z(&mut t.span);
            erase_str(&mut t.name);
            for s in &mut t.stmts {
                z(&mut s.span);
                erase_test_stmt(&mut s.kind);
            }
        }
    }
}

fn erase_setting(k: &mut SettingKind) {
    match k {
        SettingKind::Listen(v) => erase_value(v),
        SettingKind::Admin { addr, token } => {
            erase_value(addr);
            if let Some(t) = token {
                erase_value(t);
            }
        }
        SettingKind::State(StateStore::Local) => {}
        SettingKind::State(StateStore::Redis { url, .. }) => erase_value(url),
        SettingKind::Audit { path, rotate } => {
            erase_value(path);
            erase_opt_q(rotate);
        }
        SettingKind::MaxBody(q)
        | SettingKind::MaxHeaderBytes(q)
        | SettingKind::MaxHeaders(q)
        | SettingKind::HeaderTimeout(q)
        | SettingKind::IdleTimeout(q)
        | SettingKind::DrainTimeout(q) => erase_q(q),
        SettingKind::Tls { cert, key } => {
            erase_value(cert);
            erase_value(key);
        }
        SettingKind::PolicyHeader(_) | SettingKind::Forwarded(_) => {}
    }
}

fn erase_upstream_stmt(k: &mut UpstreamStmtKind) {
    match k {
        UpstreamStmtKind::Target(t) => {
            erase_value(&mut t.url);
            erase_opt_q(&mut t.weight);
            erase_opt_str(&mut t.region);
        }
        UpstreamStmtKind::Balance(Balance::Hash(e)) => erase_expr(e),
        UpstreamStmtKind::Balance(_) => {}
        UpstreamStmtKind::Header { name, value } => {
            erase_str(name);
            erase_value(value);
        }
        UpstreamStmtKind::Timeout(q) | UpstreamStmtKind::ConnectTimeout(q) | UpstreamStmtKind::MaxConnections(q) => {
            erase_q(q)
        }
        UpstreamStmtKind::Health(h) => {
            erase_str(&mut h.path);
            erase_q(&mut h.every);
            erase_opt_q(&mut h.timeout);
        }
        UpstreamStmtKind::Retry(r) => {
            erase_q(&mut r.attempts);
            for c in &mut r.on {
                match c {
                    RetryCond::ConnectError(s) | RetryCond::Timeout(s) => z(s),
                    RetryCond::Status(q) => erase_q(q),
                }
            }
        }
        UpstreamStmtKind::Affinity(e) => erase_expr(e),
    }
}

fn erase_route_stmt(k: &mut RouteStmtKind) {
    match k {
        RouteStmtKind::When(w) => {
            z(&mut w.methods_span);
            erase_str(&mut w.path);
            erase_opt_str(&mut w.host);
            if let Some(c) = &mut w.cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::Auth(a) => {
            erase_ident(&mut a.keys);
            for c in &mut a.via {
                match c {
                    Credential::Header(s) | Credential::Query(s) => erase_str(s),
                    Credential::Bearer(s) => z(s),
                }
            }
        }
        RouteStmtKind::Allow { cond, status, message } => {
            erase_expr(cond);
            erase_opt_q(status);
            erase_opt_str(message);
        }
        RouteStmtKind::Deny { status, message, cond } => {
            erase_q(status);
            erase_str(message);
            erase_expr(cond);
        }
        RouteStmtKind::Limit(l) => {
            match &mut l.kind {
                LimitKind::Rate { rate, burst } => {
                    erase_rate(rate);
                    erase_opt_q(burst);
                }
                LimitKind::Tokens { rate, estimate } => {
                    erase_rate(rate);
                    erase_opt_q(estimate);
                }
                LimitKind::Concurrent(q) => erase_q(q),
            }
            match &mut l.per {
                LimitKey::Header(s) => erase_str(s),
                LimitKey::Expr(e) => erase_expr(e),
                LimitKey::Route | LimitKey::Key | LimitKey::Tenant | LimitKey::Client => {}
            }
            if let Some(m) = &mut l.model {
                erase_regex(m);
            }
            if let Some(c) = &mut l.cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::SetHeader { name, value } => {
            erase_str(name);
            erase_value(value);
        }
        RouteStmtKind::StripHeaders(names) => names.iter_mut().for_each(erase_str),
        RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) => {
            erase_str(from);
            erase_str(to);
        }
        RouteStmtKind::Rewrite(Rewrite::Path(p)) => erase_str(p),
        RouteStmtKind::Respond { status, body } => {
            erase_q(status);
            match body {
                Some(ResponseBody::Json(j)) => erase_json(j),
                Some(ResponseBody::Text(t)) => erase_str(t),
                None => {}
            }
        }
        RouteStmtKind::Cache { ttl, max } => {
            erase_q(ttl);
            erase_opt_q(max);
        }
        RouteStmtKind::Websocket | RouteStmtKind::AuthNone => {}
        RouteStmtKind::Cors { origins, .. } => origins.iter_mut().for_each(erase_str),
        RouteStmtKind::Jwt { secret, issuer } => {
            erase_value(secret);
            erase_opt_str(issuer);
        }
        RouteStmtKind::Serve(i) | RouteStmtKind::To(i) => erase_ident(i),
    }
}

fn erase_test_stmt(k: &mut TestStmtKind) {
    match k {
        TestStmtKind::Send(s) => {
            erase_str(&mut s.path);
            for (n, v) in &mut s.headers {
                erase_str(n);
                erase_str(v);
            }
            if let Some(b) = &mut s.body {
                erase_json(b);
            }
            erase_opt_str(&mut s.client);
        }
        TestStmtKind::Advance(q) => erase_q(q),
        TestStmtKind::Expect(e) => match e {
            Expectation::Status { status, message } => {
                erase_q(status);
                erase_opt_str(message);
            }
            Expectation::Route(i) | Expectation::Upstream(i) | Expectation::Tenant(i) => erase_ident(i),
        },
    }
}

fn erase_expr(e: &mut Expr) {
    z(&mut e.span);
    match &mut e.kind {
        ExprKind::Lit(Lit::Regex(r)) => erase_regex(r),
        ExprKind::Lit(_) | ExprKind::Fact(_) => {}
        ExprKind::List(items) => items.iter_mut().for_each(erase_expr),
        ExprKind::Ref(i) => erase_ident(i),
        ExprKind::Not(inner) | ExprKind::Exists(inner) => erase_expr(inner),
        ExprKind::Binary { op_span, lhs, rhs, .. } => {
            z(op_span);
            erase_expr(lhs);
            erase_expr(rhs);
        }
        ExprKind::Call { args, .. } => args.iter_mut().for_each(erase_expr),
    }
}
