//! Generated items: gateway settings, upstreams, key sets, tenants, routes, tests, and the
//! whole policy.

use std::fmt::Write as _;

use arbitrary::Arbitrary;

use gw_compiler::fmt as gwfmt;

use super::*;

#[derive(Arbitrary, Debug, Clone)]
pub enum GenSetting {
    Listen(GenValue),
    Admin(GenValue, Option<GenValue>),
    StateLocal,
    StateRedis(GenValue, u8),
    Audit(GenValue, Option<u16>),
    MaxBody(u16, u8),
    MaxHeaders(u16),
    HeaderTimeout(GenDuration),
    IdleTimeout(GenDuration),
    DrainTimeout(GenDuration),
    PolicyHeader(bool),
    Forwarded(u8),
}

impl GenSetting {
    fn print(&self) -> String {
        const SIZES: &[&str] = &["B", "KB", "MB", "GB", "KiB", "MiB", "GiB"];
        match self {
            GenSetting::Listen(GenValue::Lit(GenStr::Pool(p))) => format!("listen \"127.0.0.1:{}\"", 8000 + *p as u32),
            GenSetting::Listen(v) => format!("listen {}", v.print()),
            GenSetting::Admin(v, t) => match t {
                Some(t) => format!("admin {} token {}", v.print(), t.print()),
                None => format!("admin {}", v.print()),
            },
            GenSetting::StateLocal => "state local".into(),
            GenSetting::StateRedis(v, m) => {
                format!("state redis {} on_error {}", v.print(), pick(&["local", "allow", "deny"], *m))
            }
            GenSetting::Audit(v, r) => match r {
                Some(r) => format!("audit {} rotate {r}MB", v.print()),
                None => format!("audit {}", v.print()),
            },
            GenSetting::MaxBody(n, u) => format!("max_body {n}{}", pick(SIZES, *u)),
            GenSetting::MaxHeaders(n) => format!("max_headers {}", n % 1024),
            GenSetting::HeaderTimeout(d) => format!("header_timeout {}", d.print()),
            GenSetting::IdleTimeout(d) => format!("idle_timeout {}", d.print()),
            GenSetting::DrainTimeout(d) => format!("drain_timeout {}", d.print()),
            GenSetting::PolicyHeader(b) => format!("policy_header {b}"),
            GenSetting::Forwarded(m) => format!("forwarded {}", pick(&["strip", "append", "keep"], *m)),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenUpstreamStmt {
    Target(Option<u8>, Option<u8>),
    Balance(u8),
    BalanceHash(GenStrExpr),
    Header(u8, GenValue),
    Timeout(GenDuration),
    ConnectTimeout(GenDuration),
    Health(u8, GenDuration, Option<GenDuration>, Option<(u8, u8)>),
    Retry(u8, Vec<u16>),
    MaxConnections(u16),
    Affinity(GenStrExpr),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenUpstream {
    stmts: Vec<GenUpstreamStmt>,
}

impl GenUpstream {
    fn print(&self, name: &str) -> String {
        let mut out = format!("upstream {name} {{\n    target \"http://127.0.0.1:9000\"\n");
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.stmts.iter().take(6).enumerate() {
            let line = match s {
                GenUpstreamStmt::Target(w, r) => {
                    let mut t = "target \"http://10.0.0.2:80\"".to_string();
                    if let Some(w) = w {
                        let _ = write!(t, " weight {w}");
                    }
                    if let Some(r) = r {
                        let _ = write!(t, " region \"r{}\"", r % 3);
                    }
                    t
                }
                GenUpstreamStmt::Balance(m) => {
                    format!("balance {}", pick(&["round_robin", "weighted", "least_conn", "least_latency"], *m))
                }
                GenUpstreamStmt::BalanceHash(e) => format!("balance hash({})", e.print(Scope::NONE, 0)),
                GenUpstreamStmt::Header(h, v) => format!("header {} = {}", gwfmt::quote(pick(HEADERS, *h)), v.print()),
                GenUpstreamStmt::Timeout(d) => format!("timeout {}", d.print()),
                GenUpstreamStmt::ConnectTimeout(d) => format!("connect_timeout {}", d.print()),
                GenUpstreamStmt::Health(m, d, t, opts) => {
                    let mut h = format!("health {} \"/health\" every {}", pick(METHODS, *m), d.print());
                    if let Some(t) = t {
                        let _ = write!(h, " timeout {}", t.print());
                    }
                    if let Some((rise, fall)) = opts {
                        let _ = write!(h, " expect 204 healthy {} unhealthy {}", rise % 5 + 1, fall % 5 + 1);
                    }
                    h
                }
                GenUpstreamStmt::Retry(n, on) => {
                    let mut r = format!("retry {}", n % 6);
                    if !on.is_empty() {
                        let conds: Vec<String> = on
                            .iter()
                            .take(4)
                            .map(|c| match c % 4 {
                                0 => "connect_error".to_string(),
                                1 => "timeout".to_string(),
                                3 if c % 64 == 63 => (c / 64 % 1000).to_string(),
                                _ => (500 + c % 100).to_string(),
                            })
                            .collect();
                        let _ = write!(r, " on {}", conds.join(", "));
                    }
                    r
                }
                GenUpstreamStmt::MaxConnections(n) => format!("max_connections {n}"),
                GenUpstreamStmt::Affinity(e) => format!("affinity {}", e.print(Scope::NONE, 0)),
            };
            // Each statement once (but `target`), except that a seventh of the time a repeat is kept.
            let keyword = line.split(' ').next().unwrap_or_default().to_string();
            if keyword != "target" && !seen.insert(keyword) && i % 7 != 6 {
                continue;
            }
            let _ = writeln!(out, "    {line}");
        }
        out.push_str("}\n");
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenKeys {
    file: u8,
    salt: Option<u8>,
}

impl GenKeys {
    fn print(&self, name: &str) -> String {
        let file = match self.file % 32 {
            30 => "bad.keys",
            31 => "missing.keys",
            n => pick(&["k.keys", "keys/k.keys", "s.keys"], n),
        };
        // s.keys holds hashes salted with "pepper", which env("SALT") also gives.
        let salt = match (file, self.salt) {
            ("s.keys", Some(s)) if s % 2 == 0 => " salt env(\"SALT\")",
            ("s.keys", _) => " salt \"pepper\"",
            (_, Some(s)) if s % 16 == 1 => " salt \"pep\" + env(\"PER\")",
            (_, Some(s)) if s % 16 == 2 => " salt env(\"UNSET_SALT\")",
            _ => "",
        };
        format!("keys {name} from \"{file}\"{salt}\n")
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenTenantStmt {
    Rate(GenRate, Option<u8>),
    Tokens(GenRate),
    Concurrent(u8),
    Region(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenTenant {
    /// Rarely (1 in 16) a name from the pool, which may repeat an earlier tenant; as rarely
    /// `*`, every tenant's defaults (the pool's other tenants are named in key files only).
    name: u8,
    stmts: Vec<GenTenantStmt>,
}

impl GenTenant {
    fn print(&self, index: usize) -> String {
        let mut seen = std::collections::HashSet::new();
        let stmts: Vec<String> = self
            .stmts
            .iter()
            .take(5)
            .filter(|s| seen.insert(std::mem::discriminant(*s)) || self.name % 8 == 7)
            .map(|s| match s {
                GenTenantStmt::Rate(r, b) => match b {
                    Some(b) => format!("rate {} burst {b}", r.print()),
                    None => format!("rate {}", r.print()),
                },
                GenTenantStmt::Tokens(r) => format!("tokens {}", r.print()),
                GenTenantStmt::Concurrent(n) => format!("concurrent {n}"),
                GenTenantStmt::Region(r) => format!("region \"r{}\"", r % 3),
            })
            .collect();
        let name = match self.name % 16 {
            15 => pick(TENANTS, self.name / 16),
            14 => "*",
            _ => pick(TENANTS, index as u8),
        };
        format!("tenant {name} {{ {} }}\n", stmts.join("; "))
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenSeg {
    Word(u8),
    Param(u8),
    Star,
    Any(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenPath {
    segs: Vec<GenSeg>,
    trailing_slash: bool,
    /// 1 in 16: no leading `/`.
    relative: u8,
}

impl GenPath {
    fn print(&self) -> String {
        let mut out = String::new();
        let n = self.segs.len().min(5);
        for (i, s) in self.segs.iter().take(n).enumerate() {
            if i > 0 || self.relative % 16 != 15 {
                out.push('/');
            }
            match s {
                GenSeg::Star if i + 1 < n => out.push('x'),
                GenSeg::Word(w) => out.push_str(pick(WORDS, *w)),
                GenSeg::Param(p) => {
                    let _ = write!(out, "{{{}}}", pick(PARAMS, *p));
                }
                GenSeg::Star => out.push('*'),
                GenSeg::Any(s) => out.push_str(s),
            }
        }
        if self.trailing_slash || out.is_empty() {
            out.push('/');
        }
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenHost {
    Exact(u8),
    Wildcard(u8),
    Any(String),
}

impl GenHost {
    fn print(&self) -> String {
        match self {
            GenHost::Exact(i) => pick(HOSTS, *i).to_string(),
            GenHost::Wildcard(i) => format!("*.{}", pick(HOSTS, *i)),
            GenHost::Any(s) if s.len() % 8 == 7 => s.clone(),
            GenHost::Any(s) => format!("{}.example.com", s.len()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenWhen {
    methods: Vec<u8>,
    path: GenPath,
    host: Option<GenHost>,
    /// Written only 1 in 4 times: most random conditions are false, and hide the route.
    cond: Option<(u8, GenBool)>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenCred {
    Header(u8),
    Bearer,
    Query(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenAuth {
    keyset: u8,
    via: Vec<GenCred>,
    optional: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenPer {
    Key,
    Tenant,
    Route,
    Client,
    Header(u8),
    Expr(GenStrExpr),
    List(GenStrExpr, GenBody),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenLimitKind {
    Rate(GenRate, Option<u8>),
    Tokens(GenRate, Option<u16>),
    Concurrent(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenLimit {
    kind: GenLimitKind,
    per: Option<GenPer>,
    model: Option<GenRegex>,
    cond: Option<GenBool>,
    shadow: bool,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenRouteStmt {
    Allow(GenBool, Option<(u16, GenStr)>),
    Deny(u16, GenStr, GenBool),
    Limit(GenLimit),
    Set(u8, GenValue),
    /// `set header H = "lit" + FACT [+ request_id | trace_id]`: a template.
    SetTemplate(u8, GenStr, GenStrFact, Option<bool>),
    Strip(Vec<u8>),
    RewritePrefix(GenPath, GenPath),
    RewritePath(GenPath),
    Cache(GenDuration, Option<u16>),
    Websocket,
    Idempotent,
    Cors(Vec<u8>, Vec<u8>),
    /// `limit use sN [if COND]`: one of the `SHARED` limits (an unknown name 1 in 8).
    LimitUse(u8, Option<GenBool>),
    /// A `cors` with the other clauses (headers, expose, credentials, max_age) by bits.
    CorsClauses(u8, Option<u8>),
}

/// The shared limits a generated policy declares when a route uses one; `s0` and `s1` count
/// per tenant/key (needing `auth`), `s2` per header, `s3` per client.
const SHARED: &[&str] = &[
    "limit s0 rate 3/s per tenant",
    "limit s1 tokens 1k/min per key",
    "limit s2 concurrent 2 per header \"x-user\"",
    "limit s3 rate 1/min burst 2 per client",
];

#[derive(Arbitrary, Debug, Clone)]
pub enum GenAction {
    To(u8),
    Respond(u16, Option<GenJson>, Option<GenStr>),
    Serve(u8),
    To2(u8),
    /// Only with a rare byte: no action at all.
    Nothing(u8),
    /// `respond` with a body and a header that read the request: JSON (`true`) or text.
    RespondTemplate(u16, bool, GenStr, GenStrFact, u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenRoute {
    when: GenWhen,
    /// 1 in 16: no `when`.
    no_when: u8,
    auth: Option<GenAuth>,
    stmts: Vec<GenRouteStmt>,
    action: GenAction,
    /// 1 in 16: the same name as the previous route.
    same_name_as_previous: u8,
}

fn status(n: u16) -> String {
    // Mostly statuses that mean something; sometimes anything three digits long.
    match n % 16 {
        0 => format!("{:03}", n % 1000),
        1 => "200".into(),
        2 => "401".into(),
        3 => "429".into(),
        4 => "400".into(),
        5 => "402".into(),
        _ => "403".into(),
    }
}

/// What requests need to know about a generated route.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteShape {
    pub(crate) methods: Vec<String>,
    pub(crate) path: String,
    pub(crate) host: Option<String>,
}

impl GenLimit {
    fn print(&self, sc: Scope) -> String {
        let l = self;
        let mut t = match &l.kind {
            GenLimitKind::Rate(r, b) => match b {
                Some(b) => format!("limit rate {} burst {b}", r.print()),
                None => format!("limit rate {}", r.print()),
            },
            GenLimitKind::Tokens(r, e) => match e {
                Some(e) => format!("limit tokens {} estimate {e}", r.print()),
                None => format!("limit tokens {}", r.print()),
            },
            GenLimitKind::Concurrent(n) => format!("limit concurrent {n}"),
        };
        if let Some(p) = &l.per {
            let per = match p {
                GenPer::Key | GenPer::Tenant if !sc.auth => "client".to_string(),
                GenPer::Key => "key".to_string(),
                GenPer::Tenant => "tenant".to_string(),
                GenPer::Route => "route".to_string(),
                GenPer::Client => "client".to_string(),
                GenPer::Header(h) => format!("header {}", gwfmt::quote(pick(HEADERS, *h))),
                GenPer::Expr(e) => format!("({})", e.print(sc, 0)),
                GenPer::List(e, b) => format!("([{}, {}])", e.print(sc, 0), b.print()),
            };
            let _ = write!(t, " per {per}");
        }
        if let Some(m) = &l.model {
            let _ = write!(t, " model {}", m.print());
        }
        if let Some(c) = &l.cond {
            let _ = write!(t, " if {}", c.print(sc, 0));
        }
        if l.shadow {
            t.push_str(" shadow");
        }
        t
    }
}

impl GenRouteStmt {
    /// One statement, on one line without its indent.
    fn print(&self, sc: Scope) -> String {
        match self {
            GenRouteStmt::Allow(c, e) => match e {
                Some((st, msg)) => {
                    format!("allow if {} else {} {}", c.print(sc, 0), status(*st), gwfmt::quote(&msg.get()))
                }
                None => format!("allow if {}", c.print(sc, 0)),
            },
            GenRouteStmt::Deny(st, msg, c) => {
                format!("deny {} {} if {}", status(*st), gwfmt::quote(&msg.get()), c.print(sc, 0))
            }
            GenRouteStmt::Limit(l) => l.print(sc),
            GenRouteStmt::LimitUse(n, cond) => {
                // Per tenant and per key mostly only where there is `auth`.
                let n = match *n as usize % 8 {
                    7 => "nope".to_string(),
                    i if !sc.auth && i < 2 => format!("s{}", 2 + i),
                    i => format!("s{}", i % SHARED.len()),
                };
                match cond {
                    Some(c) => format!("limit use {n} if {}", c.print(sc, 0)),
                    None => format!("limit use {n}"),
                }
            }
            GenRouteStmt::Set(h, v) => format!("set header {} = {}", gwfmt::quote(pick(HEADERS, *h)), v.print()),
            GenRouteStmt::SetTemplate(h, lit, fact, gateway) => {
                let tail = match gateway {
                    None => "",
                    Some(true) => " + request_id",
                    Some(false) => " + trace_id",
                };
                let (name, lit, fact) = (gwfmt::quote(pick(HEADERS, *h)), gwfmt::quote(&lit.get()), fact.print(sc));
                format!("set header {name} = {lit} + {fact}{tail}")
            }
            GenRouteStmt::Strip(hs) => {
                let mut names: Vec<String> = hs.iter().take(3).map(|h| gwfmt::quote(pick(HEADERS, *h))).collect();
                if names.is_empty() {
                    names.push("\"cookie\"".into());
                }
                format!("strip header {}", names.join(", "))
            }
            GenRouteStmt::RewritePrefix(a, b) => {
                format!("rewrite prefix {} => {}", gwfmt::quote(&a.print()), gwfmt::quote(&b.print()))
            }
            GenRouteStmt::RewritePath(p) => format!("rewrite path {}", gwfmt::quote(&p.print())),
            GenRouteStmt::Cache(d, m) => match m {
                // The options ride on the size's bits: `shared`, a status list, both or neither.
                Some(m) => {
                    let shared = if m % 2 == 1 { " shared" } else { "" };
                    let status = if m % 4 >= 2 { " status 200, 404" } else { "" };
                    format!("cache {} max {m}KB{shared}{status}", d.print())
                }
                None => format!("cache {}", d.print()),
            },
            GenRouteStmt::Websocket => "websocket".into(),
            GenRouteStmt::Idempotent => "idempotent".into(),
            GenRouteStmt::Cors(origins, methods) => {
                let o: Vec<String> = origins
                    .iter()
                    .take(3)
                    .map(|o| gwfmt::quote(pick(&["*", "https://app.example.com", "http://x"], *o)))
                    .collect();
                let mut t = format!("cors origins [{}]", o.join(", "));
                if !methods.is_empty() {
                    let m: Vec<&str> = methods.iter().take(3).map(|m| pick(METHODS, *m)).collect();
                    let _ = write!(t, " methods {}", m.join("|"));
                }
                t
            }
            GenRouteStmt::CorsClauses(bits, age) => {
                let mut t = "cors origins [\"https://app.example.com\", \"https://*.example.org\"]".to_string();
                if bits & 1 != 0 {
                    t.push_str(" headers [\"content-type\", \"authorization\"]");
                }
                if bits & 2 != 0 {
                    t.push_str(" expose [\"x-request-id\"]");
                }
                if bits & 4 != 0 {
                    t.push_str(" credentials");
                }
                if let Some(a) = age {
                    let _ = write!(t, " max_age {}s", a);
                }
                t
            }
        }
    }
}

impl GenRoute {
    fn print(&self, name: &str, sc: Scope, keysets: usize, shapes: &mut Vec<RouteShape>) -> String {
        let mut out = format!("route {name} {{\n");
        // The `when` condition is decided before `auth`; guards and limits after it.
        let when_sc = Scope { auth: false, jwt: false, ..sc };
        // A high key-set byte also tries the JWT set `j0` (a layout's meaning is kept).
        let jwt = self.auth.as_ref().is_some_and(|a| a.keyset >= 128);
        let sc = Scope { auth: self.auth.is_some(), jwt, ..sc };
        if self.no_when % 16 != 15 {
            let w = &self.when;
            let mut methods: Vec<&str> = w.methods.iter().take(3).map(|m| pick(METHODS, *m)).collect();
            if methods.is_empty() {
                methods.push("GET");
            }
            let path = w.path.print();
            let host = w.host.as_ref().map(GenHost::print);
            let _ = write!(out, "    when {} {}", methods.join("|"), gwfmt::quote(&path));
            if let Some(h) = &host {
                let _ = write!(out, " host {}", gwfmt::quote(h));
            }
            if let Some((_, c)) = w.cond.as_ref().filter(|(n, _)| n % 4 == 0) {
                let _ = write!(out, " if {}", c.print(when_sc, 0));
            }
            out.push('\n');
            shapes.push(RouteShape { methods: methods.iter().map(|m| m.to_string()).collect(), path, host });
        }
        if let Some(a) = &self.auth {
            let _ = write!(out, "    auth k{}", if keysets == 0 { 0 } else { a.keyset as usize % keysets });
            if !a.via.is_empty() {
                let via: Vec<String> = a
                    .via
                    .iter()
                    .take(3)
                    .map(|c| match c {
                        GenCred::Header(h) => format!("header {}", gwfmt::quote(pick(HEADERS, *h))),
                        GenCred::Bearer => "bearer".into(),
                        GenCred::Query(q) => format!("query {}", gwfmt::quote(pick(QUERIES, *q))),
                    })
                    .collect();
                let _ = write!(out, " via {}", via.join(", "));
            }
            if jwt {
                out.push_str(" or j0");
            }
            if a.optional {
                out.push_str(" optional");
            }
            out.push('\n');
        }
        for s in self.stmts.iter().take(6) {
            let _ = writeln!(out, "    {}", s.print(sc));
        }
        match &self.action {
            GenAction::To(u) | GenAction::To2(u) => {
                let _ = writeln!(out, "    to u{}", *u as usize % UPSTREAMS);
            }
            GenAction::RespondTemplate(st, json, lit, fact, h) => {
                let (lit, fact) = (gwfmt::quote(&lit.get()), fact.print(sc));
                let body = if *json {
                    format!(" json {{\"v\": {lit} + {fact}, \"id\": request_id, \"n\": [1, null]}}")
                } else {
                    format!(" {lit} + {fact} + trace_id")
                };
                let header = gwfmt::quote(pick(HEADERS, *h));
                let _ = writeln!(out, "    respond {}{body} header {header} = {fact}", status(*st));
            }
            GenAction::Respond(st, json, text) => {
                let _ = write!(out, "    respond {}", status(*st));
                match (json, text) {
                    (Some(j), _) => {
                        let _ = write!(out, " json {}", j.print_json(0));
                    }
                    (None, Some(t)) => {
                        let _ = write!(out, " {}", gwfmt::quote(&t.get()));
                    }
                    (None, None) => {}
                }
                out.push('\n');
            }
            GenAction::Serve(b) => {
                let b = pick(&["health", "ready", "metrics", "tokens", "usage", "upstreams", "config"], *b);
                let _ = writeln!(out, "    serve {b}");
            }
            GenAction::Nothing(n) if n % 16 == 15 => {}
            GenAction::Nothing(n) => {
                let _ = writeln!(out, "    to u{}", *n as usize % UPSTREAMS);
            }
        }
        out.push_str("}\n");
        out
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenExpect {
    Status(u16, Option<GenStr>),
    Route(u8),
    Upstream(u8),
    Tenant(u8),
    /// `expect header H = "v"` or `absent` (`None`).
    Header(u8, Option<GenStr>),
    /// `expect limit sN` (a shared limit, maybe undeclared) or `expect limit tenant *`.
    Limit(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenTestStmt {
    Send(GenRequest),
    Expect(GenExpect),
    Advance(GenDuration),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenTest {
    first: GenRequest,
    stmts: Vec<GenTestStmt>,
}

/// A whole generated policy.
#[derive(Arbitrary, Debug, Clone)]
pub struct GenPolicy {
    // Decoded in this order: routes first, so that short inputs still make routes.
    routes: Vec<GenRoute>,
    matchers: Vec<GenBool>,
    keysets: Vec<GenKeys>,
    tenants: Vec<GenTenant>,
    upstreams: Vec<GenUpstream>,
    gateway: Option<Vec<GenSetting>>,
    tests: Vec<GenTest>,
    import_lib: bool,
}

/// A printed policy and what requests need to know about it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Printed {
    pub(crate) text: String,
    pub(crate) routes: Vec<RouteShape>,
}

impl GenPolicy {
    pub(crate) fn print(&self) -> Printed {
        let mut p = Printed::default();
        let out = &mut p.text;
        if self.import_lib {
            out.push_str("import \"lib.gwp\"\n\n");
        }
        if let Some(settings) = &self.gateway {
            out.push_str("gateway {\n");
            let mut seen = std::collections::HashSet::new();
            for (i, s) in settings.iter().take(6).enumerate() {
                let line = s.print();
                let keyword = line.split(' ').next().unwrap_or_default().to_string();
                // Each setting once, except that a seventh of the time a repeat is kept.
                if seen.insert(keyword) || i % 7 == 6 {
                    let _ = writeln!(out, "    {line}");
                }
            }
            out.push_str("}\n\n");
        }
        // Routes name upstreams u0..u3: always declare all four, with generated statements for
        // the first ones.
        for i in 0..UPSTREAMS {
            match self.upstreams.get(i) {
                Some(u) => out.push_str(&u.print(&format!("u{i}"))),
                None => {
                    let _ = writeln!(out, "upstream u{i} {{ target \"http://127.0.0.1:900{i}\" }}");
                }
            }
        }
        out.push('\n');
        // Routes name key sets k0..: there is always a k0.
        let keysets = self.keysets.len().clamp(1, 3);
        for i in 0..keysets {
            match self.keysets.get(i) {
                Some(k) => out.push_str(&k.print(&format!("k{i}"))),
                None => out.push_str("keys k0 from \"k.keys\"\n"),
            }
        }
        // The JWT set routes may also try (`auth kN or j0`); tokens are `world::TOKENS`.
        out.push_str("jwt j0 { alg HS256; secret \"fuzz-jwt-secret\"; tenant claim[\"org\"] }\n");
        for (i, t) in self.tenants.iter().take(4).enumerate() {
            out.push_str(&t.print(i));
        }
        let matchers = self.matchers.len().min(5);
        for (i, m) in self.matchers.iter().take(matchers).enumerate() {
            // A matcher refers only to earlier ones, so there are no cycles.
            let _ = writeln!(out, "matcher m{i} = {}", m.print(Scope { matchers: i, auth: false, jwt: false }, 0));
        }
        out.push('\n');
        let uses_shared =
            self.routes.iter().take(8).any(|r| r.stmts.iter().any(|s| matches!(s, GenRouteStmt::LimitUse(..))));
        if uses_shared {
            for l in SHARED {
                let _ = writeln!(out, "{l}");
            }
        }
        let sc = Scope { matchers, auth: false, jwt: false };
        let mut name = 0;
        for (i, r) in self.routes.iter().take(8).enumerate() {
            if !(r.same_name_as_previous % 16 == 15 && i > 0) {
                name = i;
            }
            out.push_str(&r.print(&format!("r{name}"), sc, keysets, &mut p.routes));
            out.push('\n');
        }
        let routes = p.routes.clone();
        for (i, t) in self.tests.iter().take(3).enumerate() {
            let _ = writeln!(out, "test \"t{i}\" {{");
            let _ = writeln!(out, "    {}", t.first.print_send(&routes));
            for s in t.stmts.iter().take(6) {
                let line = match s {
                    GenTestStmt::Send(r) => r.print_send(&routes),
                    GenTestStmt::Expect(GenExpect::Status(st, msg)) => match msg {
                        Some(m) => format!("expect {} {}", status(*st), gwfmt::quote(&m.get())),
                        None => format!("expect {}", status(*st)),
                    },
                    GenTestStmt::Expect(GenExpect::Route(r)) => {
                        format!("expect route r{}", *r as usize % self.routes.len().clamp(1, 8))
                    }
                    GenTestStmt::Expect(GenExpect::Upstream(u)) => {
                        format!("expect upstream u{}", *u as usize % UPSTREAMS)
                    }
                    GenTestStmt::Expect(GenExpect::Tenant(t)) => format!("expect tenant {}", pick(TENANTS, *t)),
                    GenTestStmt::Expect(GenExpect::Header(h, v)) => match v {
                        Some(v) => {
                            format!("expect header {} = {}", gwfmt::quote(pick(HEADERS, *h)), gwfmt::quote(&v.get()))
                        }
                        None => format!("expect header {} absent", gwfmt::quote(pick(HEADERS, *h))),
                    },
                    // A shared limit only when they are declared (else 1 in 16: undeclared).
                    GenTestStmt::Expect(GenExpect::Limit(n)) => match n % 5 {
                        i if i < 4 && (uses_shared || n % 16 == 15) => format!("expect limit s{i}"),
                        _ => "expect limit tenant *".to_string(),
                    },
                    GenTestStmt::Advance(d) => format!("advance {}", d.print()),
                };
                let _ = writeln!(out, "    {line}");
            }
            out.push_str("}\n");
        }
        p
    }
}

// ---------------------------------------------------------------- requests
