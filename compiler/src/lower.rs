//! Stage 5: the validated program → the decision graph. Names become indices, regexes are
//! built, env values resolved, limit ids precomputed, route patterns compiled into one
//! automaton and expressions hash-consed into a DAG. The program has passed `check`, so a
//! failure here is a compiler bug (`Diag::bug`), except an automaton too large to build.

use std::collections::HashMap;
use std::sync::Arc;

use regex_automata::hybrid::dfa::DFA;
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::pool::Pool;
use regex_automata::MatchKind;
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, Hir, Repetition};

use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::graph::*;
use crate::program::Program;
use crate::request::{Outcome, DEFAULT_ALLOW_MESSAGE};
use crate::value::{self, Val};

/// Largest NFA the route automaton may have, in bytes (10,000 routes need a few MB).
pub const ROUTER_NFA_LIMIT: usize = 256 << 20;
/// Lazy DFA cache per thread: at least this, more if the automaton needs it.
const ROUTER_CACHE_MIN: usize = 4 << 20;
const ROUTER_CACHE_MAX: usize = 64 << 20;

/// Lower a validated program into its decision graph.
pub fn lower(program: &Program) -> Result<Graph, Diag> {
    let mut b = Nodes::default();

    let keysets: Vec<KeysetInfo> = program
        .keysets
        .iter()
        .map(|(name, keys)| KeysetInfo {
            name: name.clone(),
            len: keys.len(),
            salted: keys.salt.is_some(),
            keys: keys.clone(),
        })
        .collect();

    let mut upstreams = vec![];
    let mut balance_keys = vec![];
    for u in program.upstreams() {
        let (info, key) = upstream(program, &mut b, u)?;
        upstreams.push(info);
        balance_keys.push(key);
    }

    // The limit table, in eval's order, and the first index of each id (what eval reports).
    let table = limit_table(program);
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, id) in table.iter().enumerate() {
        first_index.entry(id.as_str()).or_insert(i);
    }
    let mut limits: Vec<LimitInfo> = vec![];

    let any_tenant_tokens =
        program.tenants().any(|t| t.stmts.iter().any(|s| matches!(s.kind, TenantStmtKind::Tokens(_))));
    let mut routes = vec![];
    let mut rts = vec![];
    for (index, route) in program.routes().enumerate() {
        let (info, rt) = lower_route(
            program,
            &mut b,
            route,
            index,
            &keysets,
            &upstreams,
            &first_index,
            &mut limits,
            any_tenant_tokens,
        )?;
        routes.push(info);
        rts.push(rt);
    }

    let mut tenants = vec![];
    let mut tenant_limits: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for t in program.tenants() {
        let mut ids = vec![];
        let mut region = None;
        for stmt in &t.stmts {
            if let TenantStmtKind::Region(r) = &stmt.kind {
                region.get_or_insert_with(|| r.value.clone());
            }
            let Some(kind) = tenant_limit_kind(&stmt.kind) else { continue };
            let id = tenant_limit_id(&t.name.name, &kind);
            limits.push(LimitInfo {
                id: id.clone(),
                kind,
                shadow: false,
                per: LimitPer::Tenant,
                owner: LimitOwner::Tenant { name: t.name.name.clone() },
                model: None,
                conditional: false,
            });
            if let Some(&ix) = first_index.get(id.as_str()) {
                ids.push((ix, id));
            }
        }
        tenants.push(TenantInfo { name: t.name.name.clone(), limits: ids.iter().map(|(i, _)| *i).collect(), region });
        // eval uses the first tenant of a name.
        tenant_limits.entry(t.name.name.clone()).or_insert(ids);
    }
    if limits.len() != table.len() || limits.iter().zip(&table).any(|(l, id)| l.id != *id) {
        return Err(Diag::bug("the graph's limits are not in the limit table's order"));
    }

    let router = build_router(program)?;
    let (nodes, meta, facts, regexes) = b.finish();
    Ok(Graph {
        settings: settings(program),
        routes,
        upstreams,
        limits,
        tenants,
        keysets,
        rt: rts,
        router,
        nodes,
        meta,
        facts,
        regexes,
        tenant_limits,
        balance_keys,
        model_path: vec![PathSeg::Field("model".to_string())],
    })
}

// ======================================================================= routes

/// Every limit's identity, in a fixed order: route limits in route order, then tenants'.
/// `AppliedLimit::limit` indexes this table.
fn limit_table(program: &Program) -> Vec<String> {
    let mut ids = vec![];
    for route in program.routes() {
        let limits = route.stmts.iter().filter_map(|s| match &s.kind {
            RouteStmtKind::Limit(l) => Some(l),
            _ => None,
        });
        for (i, l) in limits.enumerate() {
            ids.push(route_limit_id(&route.name.name, i, &limit_kind(&l.kind), &limit_per(&l.per)));
        }
    }
    for tenant in program.tenants() {
        for stmt in &tenant.stmts {
            if let Some(kind) = tenant_limit_kind(&stmt.kind) {
                ids.push(tenant_limit_id(&tenant.name.name, &kind));
            }
        }
    }
    ids
}

fn limit_kind(kind: &LimitKind) -> LimitKindInfo {
    match kind {
        LimitKind::Rate { rate, burst } => {
            LimitKindInfo::Rate { count: rate.count, window_ns: rate.window_ns, burst: burst.map(|q| q.value) }
        }
        LimitKind::Tokens { rate, estimate } => {
            LimitKindInfo::Tokens { count: rate.count, window_ns: rate.window_ns, estimate: estimate.map(|q| q.value) }
        }
        LimitKind::Concurrent(n) => LimitKindInfo::Concurrent { max: n.value },
    }
}

fn limit_per(per: &LimitKey) -> LimitPer {
    match per {
        LimitKey::Route => LimitPer::Route,
        LimitKey::Key => LimitPer::Key,
        LimitKey::Tenant => LimitPer::Tenant,
        LimitKey::Client => LimitPer::Client,
        LimitKey::Header(h) => LimitPer::Header(h.value.clone()),
        LimitKey::Expr(_) => LimitPer::Expr,
    }
}

fn tenant_limit_kind(stmt: &TenantStmtKind) -> Option<LimitKindInfo> {
    Some(match stmt {
        TenantStmtKind::Rate { rate, burst } => {
            LimitKindInfo::Rate { count: rate.count, window_ns: rate.window_ns, burst: burst.map(|q| q.value) }
        }
        TenantStmtKind::Tokens(rate) => {
            LimitKindInfo::Tokens { count: rate.count, window_ns: rate.window_ns, estimate: None }
        }
        TenantStmtKind::Concurrent(n) => LimitKindInfo::Concurrent { max: n.value },
        TenantStmtKind::Region(_) => return None,
    })
}

#[allow(clippy::too_many_arguments)]
fn lower_route(
    program: &Program,
    b: &mut Nodes,
    route: &Route,
    index: usize,
    keysets: &[KeysetInfo],
    upstreams: &[UpstreamInfo],
    first_index: &HashMap<&str, usize>,
    limits: &mut Vec<LimitInfo>,
    any_tenant_tokens: bool,
) -> Result<(RouteInfo, RouteRt), Diag> {
    let name = route.name.name.clone();
    let when = route.when();
    let mut reads_body = false;
    let mut cond = None;
    if let Some(c) = when.and_then(|w| w.cond.as_ref()) {
        let n = b.root(program, c)?;
        reads_body |= b.reads_body(n);
        cond = Some(n);
    }
    let methods: Vec<Method> = when.map(|w| w.methods.clone()).unwrap_or_default();
    let any_method = methods.contains(&Method::Any);
    let method_mask = methods.iter().fold(0u8, |m, x| m | method_bit(x.as_str()));

    let (auth_rt, auth_info) = match route.auth() {
        None => (None, None),
        Some(a) => {
            let keyset = keysets.iter().position(|k| k.name == a.keys.name);
            let sources: Vec<CredentialSource> = if a.via.is_empty() {
                CredentialSource::defaults()
            } else {
                a.via
                    .iter()
                    .map(|c| match c {
                        Credential::Header(h) => CredentialSource::Header(h.value.clone()),
                        Credential::Bearer(_) => CredentialSource::Bearer,
                        Credential::Query(q) => CredentialSource::Query(q.value.clone()),
                    })
                    .collect()
            };
            (
                Some(AuthRt { keyset, keys: a.keys.name.clone(), via: sources.clone(), optional: a.optional }),
                Some(AuthInfo { keyset, keyset_name: a.keys.name.clone(), sources, optional: a.optional }),
            )
        }
    };

    let mut guards = vec![];
    let mut guard_infos = vec![];
    let mut lims = vec![];
    let mut limit_ix = vec![];
    let mut set_headers = vec![];
    let mut strip_headers = vec![];
    let mut rewrite = None;
    let mut respond = None;
    let mut cache = None;
    let mut websocket = false;
    let mut cors = None;
    let mut jwt = None;
    let mut action = None;
    let mut outcome = None;
    let mut counts_tokens = auth_rt.is_some() && any_tenant_tokens;
    let mut limit_no = 0;
    for stmt in &route.stmts {
        match &stmt.kind {
            RouteStmtKind::Deny { status, message, cond } => {
                let n = b.root(program, cond)?;
                reads_body |= b.reads_body(n);
                let status = status.value as u16;
                guard_infos.push(GuardInfo { kind: "deny", status, message: message.value.clone() });
                guards.push(GuardRt { cond: n, refuse_when: true, status, message: message.value.clone() });
            }
            RouteStmtKind::Allow { cond, status, message } => {
                let n = b.root(program, cond)?;
                reads_body |= b.reads_body(n);
                let status = status.map(|s| s.value as u16).unwrap_or(403);
                let message =
                    message.as_ref().map(|m| m.value.clone()).unwrap_or_else(|| DEFAULT_ALLOW_MESSAGE.to_string());
                guard_infos.push(GuardInfo { kind: "allow", status, message: message.clone() });
                guards.push(GuardRt { cond: n, refuse_when: false, status, message });
            }
            RouteStmtKind::Limit(l) => {
                let lcond = match &l.cond {
                    Some(c) => {
                        let n = b.root(program, c)?;
                        reads_body |= b.reads_body(n);
                        Some(n)
                    }
                    None => None,
                };
                let model = match &l.model {
                    None => ModelRt::None,
                    Some(r) => {
                        reads_body = true;
                        match value::build_regex(&r.pattern, r.case_insensitive) {
                            Ok(re) => ModelRt::Regex(re),
                            Err(_) => ModelRt::Never,
                        }
                    }
                };
                let per = limit_per(&l.per);
                let key = match &l.per {
                    LimitKey::Route => KeyRt::Route,
                    LimitKey::Key => KeyRt::Key,
                    LimitKey::Tenant => KeyRt::Tenant,
                    LimitKey::Client => KeyRt::Client,
                    LimitKey::Header(h) => KeyRt::Header(h.value.clone()),
                    LimitKey::Expr(e) => {
                        let n = b.root(program, e)?;
                        reads_body |= b.reads_body(n);
                        KeyRt::Expr(n)
                    }
                };
                let kind = limit_kind(&l.kind);
                counts_tokens |= matches!(kind, LimitKindInfo::Tokens { .. });
                let id = route_limit_id(&name, limit_no, &kind, &per);
                limit_no += 1;
                let table = first_index.get(id.as_str()).copied();
                if let Some(t) = table {
                    limit_ix.push(t);
                }
                limits.push(LimitInfo {
                    id: id.clone(),
                    kind,
                    shadow: l.shadow,
                    per,
                    owner: LimitOwner::Route { route: index, name: name.clone() },
                    model: l.model.as_ref().map(|r| r.pattern.clone()),
                    conditional: l.cond.is_some(),
                });
                lims.push(LimitRt { table, id, cond: lcond, model, key });
            }
            RouteStmtKind::SetHeader { name, value } => {
                set_headers.push((name.value.clone(), resolve(program, value, false)))
            }
            RouteStmtKind::StripHeaders(hs) => strip_headers.extend(hs.iter().map(|h| h.value.clone())),
            RouteStmtKind::Rewrite(r) => {
                rewrite.get_or_insert_with(|| match r {
                    Rewrite::Prefix { from, to } => {
                        RewriteInfo::Prefix { from: from.value.clone(), to: to.value.clone() }
                    }
                    Rewrite::Path(t) => RewriteInfo::Path { template: t.value.clone(), parts: template(&t.value) },
                });
            }
            RouteStmtKind::Respond { status, body } => {
                let status = status.value as u16;
                if respond.is_none() {
                    let (bytes, content_type) = match body {
                        None => (vec![], None),
                        Some(ResponseBody::Text(s)) => (s.value.as_bytes().to_vec(), Some("text/plain; charset=utf-8")),
                        Some(ResponseBody::Json(j)) => (
                            serde_json::to_vec(&j.value)
                                .map_err(|e| Diag::bug(format!("static JSON response: {e}")))?,
                            Some("application/json"),
                        ),
                    };
                    respond = Some(RespondInfo { status, body: bytes, content_type });
                }
                if outcome.is_none() {
                    outcome = Some(Outcome::Respond { status });
                    action = Some(ActionInfo::Respond);
                }
            }
            RouteStmtKind::Cache { ttl, max } => {
                cache.get_or_insert(CacheInfo { ttl_ns: ttl.value, max_bytes: max.map(|m| m.value) });
            }
            RouteStmtKind::Websocket => websocket = true,
            RouteStmtKind::Cors { origins, methods } => {
                cors.get_or_insert_with(|| CorsInfo {
                    origins: origins.iter().map(|o| o.value.clone()).collect(),
                    methods: methods.clone(),
                });
            }
            RouteStmtKind::Jwt { secret, issuer } => {
                jwt.get_or_insert_with(|| JwtInfo {
                    secret: resolve(program, secret, true),
                    issuer: issuer.as_ref().map(|i| i.value.clone()),
                });
            }
            RouteStmtKind::Serve(builtin) => {
                if outcome.is_none() {
                    outcome = Some(Outcome::Serve { builtin: builtin.name.clone() });
                    action = Some(ActionInfo::Serve { builtin: builtin.name.clone() });
                }
            }
            RouteStmtKind::To(u) => {
                if outcome.is_none() {
                    outcome = Some(Outcome::Forward { upstream: u.name.clone() });
                    let upstream = upstreams.iter().position(|x| x.name == u.name);
                    action = Some(ActionInfo::Forward { name: u.name.clone(), upstream });
                }
            }
            RouteStmtKind::When(_) | RouteStmtKind::Auth(_) | RouteStmtKind::AuthNone => {}
        }
    }
    let action = action.unwrap_or(ActionInfo::None);
    let upstream = match &action {
        ActionInfo::Forward { upstream, .. } => *upstream,
        _ => None,
    };
    let path = when.map(|w| w.path.value.clone()).unwrap_or_default();
    let info = RouteInfo {
        name: name.clone(),
        index,
        routable: when.is_some(),
        methods: methods.clone(),
        path: path.clone(),
        host: when.and_then(|w| w.host.as_ref()).map(|h| h.value.clone()),
        has_condition: cond.is_some(),
        auth: auth_info,
        guards: guard_infos,
        limits: limit_ix,
        set_headers,
        strip_headers,
        rewrite,
        respond,
        cache,
        websocket,
        cors,
        jwt,
        action,
        upstream,
        // Over the syntax too: `false and body.x` folds away but still makes the route one
        // that refuses a body the strict reader refuses (as eval decides).
        reads_body: reads_body || program.route_reads_body(route),
        counts_tokens,
    };
    let rt = RouteRt {
        name,
        routable: when.is_some(),
        any_method,
        method_mask,
        methods: methods.iter().map(|m| m.as_str().to_string()).collect(),
        path: PathPattern::parse(&path),
        cond,
        auth: auth_rt,
        guards,
        limits: lims,
        outcome: outcome.unwrap_or(Outcome::NoRoute),
    };
    Ok((info, rt))
}

/// `"/v2/{id}/x"` → literal and param parts.
fn template(t: &str) -> Vec<TemplatePart> {
    let mut parts = vec![];
    let mut rest = t;
    while let Some((before, after)) = rest.split_once('{') {
        let Some((name, tail)) = after.split_once('}') else { break };
        if !before.is_empty() {
            parts.push(TemplatePart::Lit(before.to_string()));
        }
        parts.push(TemplatePart::Param(name.to_string()));
        rest = tail;
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Lit(rest.to_string()));
    }
    parts
}

// ======================================================================= route automaton

/// Literal paths into a map; one pattern per other routable route over
/// `path 0xFF [host token]`, in route order, so pattern id order is priority order.
fn build_router(program: &Program) -> Result<Router, Diag> {
    let mut host_exact = HostMap::default();
    let mut host_wild = HostMap::default();
    let mut next_host = 0u32;
    let mut route_host = vec![];
    for route in program.routes() {
        let host = route.when().and_then(|w| w.host.as_ref()).map(|h| {
            let (map, key) = match h.value.strip_prefix("*.") {
                Some(suffix) => (&mut host_wild, suffix.to_string()),
                None => (&mut host_exact, h.value.to_ascii_lowercase()),
            };
            *map.entry(key).or_insert_with(|| {
                next_host += 1;
                next_host - 1
            })
        });
        route_host.push(host);
    }
    let mut token_width = 1usize;
    let mut capacity = 255u64;
    while capacity < u64::from(next_host) {
        token_width += 1;
        capacity *= 255;
    }

    let mut hirs = vec![];
    let mut pattern_route = vec![];
    let mut literal = LiteralMap::default();
    for (index, route) in program.routes().enumerate() {
        let Some(when) = route.when() else { continue };
        let index32 = u32::try_from(index).map_err(|_| Diag::bug("too many routes"))?;
        let pattern = PathPattern::parse(&when.path.value);
        if let PathPattern::Segs { segs, star: false } = &pattern {
            if segs.iter().all(|s| matches!(s, Seg::Lit(_))) {
                // No params, no `*`: the path must equal the pattern string.
                literal
                    .entry(when.path.value.clone())
                    .or_default()
                    .push((index32, route_host.get(index).copied().flatten()));
                continue;
            }
        }
        let mut parts = vec![path_hir(&pattern), Hir::literal(vec![SEP])];
        if let Some(Some(h)) = route_host.get(index) {
            let token = host_token(*h, token_width);
            parts.push(Hir::literal(token.get(..token_width).unwrap_or(&[]).to_vec()));
        }
        hirs.push(Hir::concat(parts));
        pattern_route.push(index32);
    }

    let too_large = |e: &dyn std::fmt::Display| {
        Diag::error(Code::RegexTooLarge, format!("the routes' patterns do not fit in one automaton: {e}"))
            .help("split the policy, or use fewer and more general path patterns")
    };
    if hirs.is_empty() {
        return Ok(Router {
            literal,
            automaton: None,
            pattern_route,
            route_host,
            host_exact,
            host_wild,
            token_width,
            nfa_bytes: 0,
            cache_bytes: 0,
        });
    }
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .utf8(false)
                .shrink(false)
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(ROUTER_NFA_LIMIT)),
        )
        .build_many_from_hir(&hirs)
        .map_err(|e| too_large(&e))?;
    let config = DFA::config().match_kind(MatchKind::All).minimum_cache_clear_count(None);
    let minimum = config.get_minimum_cache_capacity(&nfa).map_err(|e| too_large(&e))?;
    if minimum > ROUTER_CACHE_MAX {
        return Err(too_large(&format!("needs a {minimum}-byte cache")));
    }
    // The lazily built DFA is at worst a trie of the patterns: room for about that many states
    // keeps traffic spread over every route from thrashing it. A cap, not an allocation.
    let nfa_bytes = nfa.memory_usage();
    let cache_bytes =
        nfa_bytes.saturating_mul(16).max(minimum.saturating_mul(2)).clamp(ROUTER_CACHE_MIN, ROUTER_CACHE_MAX);
    let dfa =
        DFA::builder().configure(config.cache_capacity(cache_bytes)).build_from_nfa(nfa).map_err(|e| too_large(&e))?;
    let dfa = Arc::new(dfa);
    let for_pool = Arc::clone(&dfa);
    let pool = Pool::new(Box::new(move || for_pool.create_cache()) as CacheFn);
    Ok(Router {
        literal,
        automaton: Some(Automaton { dfa, pool }),
        pattern_route,
        route_host,
        host_exact,
        host_wild,
        token_width,
        nfa_bytes,
        cache_bytes,
    })
}

/// A path pattern as bytes: exactly the paths `eval::match_path` accepts. Paths are UTF-8, so
/// byte classes that exclude `/` and the separator match what eval's string splitting does.
fn path_hir(p: &PathPattern) -> Hir {
    let any = || Hir::class(Class::Bytes(ClassBytes::new([ClassBytesRange::new(0x00, 0xFE)])));
    let rep = |sub: Hir, min: u32, max: Option<u32>| {
        Hir::repetition(Repetition { min, max, greedy: true, sub: Box::new(sub) })
    };
    match p {
        PathPattern::Any => Hir::concat(vec![Hir::literal(*b"/"), rep(any(), 0, None)]),
        PathPattern::Segs { segs, star } => {
            let seg_class = || {
                Hir::class(Class::Bytes(ClassBytes::new([
                    ClassBytesRange::new(0x00, b'/' - 1),
                    ClassBytesRange::new(b'/' + 1, 0xFE),
                ])))
            };
            let mut parts = vec![];
            for (i, s) in segs.iter().enumerate() {
                if i > 0 {
                    parts.push(Hir::literal(*b"/"));
                }
                match s {
                    Seg::Lit(l) => parts.push(Hir::literal(l.as_bytes().to_vec())),
                    Seg::Param(_) => parts.push(rep(seg_class(), 1, None)),
                }
            }
            if *star {
                parts.push(rep(Hir::concat(vec![Hir::literal(*b"/"), rep(any(), 0, None)]), 0, Some(1)));
            }
            Hir::concat(parts)
        }
    }
}

// ======================================================================= expressions

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ConstKey {
    Missing,
    Str(String),
    Num(u64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Const(ConstKey),
    Fact(u32),
    List(Box<[NodeId]>),
    Not(NodeId),
    Exists(NodeId),
    Truthy(NodeId),
    And(NodeId, NodeId),
    Or(NodeId, NodeId),
    Bin(BinOp, NodeId, NodeId),
    Match(NodeId, u32),
    Call(Func, Box<[NodeId]>),
}

fn key_of(node: &Node) -> Option<Key> {
    Some(match node {
        Node::Const(v) => Key::Const(match v {
            Val::Missing => ConstKey::Missing,
            Val::Str(s) => ConstKey::Str(s.clone()),
            Val::Num(n) => ConstKey::Num(n.to_bits()),
            Val::Bool(b) => ConstKey::Bool(*b),
            Val::List(_) | Val::Json(_) | Val::Null | Val::Error(_) => return None,
        }),
        Node::Fact(f) => Key::Fact(*f),
        Node::List(xs) => Key::List(xs.clone()),
        Node::Not(x) => Key::Not(*x),
        Node::Exists(x) => Key::Exists(*x),
        Node::Truthy(x) => Key::Truthy(*x),
        Node::And(a, b) => Key::And(*a, *b),
        Node::Or(a, b) => Key::Or(*a, *b),
        Node::Bin(op, a, b) => Key::Bin(*op, *a, *b),
        Node::Match(x, r) => Key::Match(*x, *r),
        Node::Call(f, xs) => Key::Call(*f, xs.clone()),
    })
}

/// The expression DAG under construction: every distinct sub-expression once, children
/// before parents (so the Vec is in topological order).
#[derive(Default)]
struct Nodes {
    nodes: Vec<Node>,
    refs: Vec<u32>,
    contextual: Vec<bool>,
    body: Vec<bool>,
    intern: HashMap<Key, NodeId>,
    facts: Vec<Fact>,
    fact_ix: HashMap<Fact, u32>,
    regexes: Vec<Option<regex_automata::meta::Regex>>,
    regex_ix: HashMap<(String, bool), u32>,
    matchers: HashMap<String, NodeId>,
    visiting: Vec<String>,
}

type Finished = (Vec<Node>, Vec<NodeMeta>, Vec<Fact>, Vec<Option<regex_automata::meta::Regex>>);

impl Nodes {
    fn finish(self) -> Finished {
        let meta = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeMeta {
                shared: !matches!(n, Node::Const(_)) && self.refs.get(i).copied().unwrap_or(0) >= 2,
                contextual: self.contextual.get(i).copied().unwrap_or(true),
            })
            .collect();
        (self.nodes, meta, self.facts, self.regexes)
    }

    /// Lower an expression used directly by a route (condition, guard, limit).
    fn root(&mut self, program: &Program, e: &Expr) -> Result<NodeId, Diag> {
        let id = self.expr(program, e)?;
        self.count(id);
        Ok(id)
    }

    fn count(&mut self, id: NodeId) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r = r.saturating_add(1);
        }
    }

    fn reads_body(&self, id: NodeId) -> bool {
        self.body.get(id as usize).copied().unwrap_or(false)
    }

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    fn const_of(&self, id: NodeId) -> Option<&Val> {
        match self.node(id) {
            Some(Node::Const(v)) => Some(v),
            _ => None,
        }
    }

    fn push(&mut self, node: Node) -> Result<NodeId, Diag> {
        let id = u32::try_from(self.nodes.len()).map_err(|_| Diag::bug("too many expression nodes"))?;
        let children = node.children();
        let (mut contextual, mut body) = match &node {
            Node::Fact(f) => match self.facts.get(*f as usize) {
                Some(Fact::Param(_) | Fact::Tenant | Fact::Key) => (true, false),
                Some(Fact::Body(_)) => (false, true),
                _ => (false, false),
            },
            _ => (false, false),
        };
        for c in &children {
            contextual |= self.contextual.get(*c as usize).copied().unwrap_or(true);
            body |= self.reads_body(*c);
            self.count(*c);
        }
        if let Some(k) = key_of(&node) {
            self.intern.insert(k, id);
        }
        self.nodes.push(node);
        self.refs.push(0);
        self.contextual.push(contextual);
        self.body.push(body);
        Ok(id)
    }

    fn konst(&mut self, v: Val) -> Result<NodeId, Diag> {
        let node = Node::Const(v);
        if let Some(id) = key_of(&node).and_then(|k| self.intern.get(&k)) {
            return Ok(*id);
        }
        self.push(node)
    }

    /// Intern a node, folding what is constant: `and`/`or` with a constant side, operators
    /// over constants, `truthy` of what is already a boolean.
    fn mk(&mut self, node: Node) -> Result<NodeId, Diag> {
        let is_const = |s: &Self, id: NodeId| s.const_of(id).map(Val::truthy);
        match &node {
            Node::Truthy(x) if self.node(*x).is_some_and(Node::is_boolean) => return Ok(*x),
            Node::And(a, b) => match (is_const(self, *a), is_const(self, *b)) {
                (Some(false), _) | (_, Some(false)) => return self.konst(Val::Bool(false)),
                (Some(true), _) => return self.mk(Node::Truthy(*b)),
                (_, Some(true)) => return self.mk(Node::Truthy(*a)),
                _ => {}
            },
            Node::Or(a, b) => match (is_const(self, *a), is_const(self, *b)) {
                (Some(true), _) | (_, Some(true)) => return self.konst(Val::Bool(true)),
                (Some(false), _) => return self.mk(Node::Truthy(*b)),
                (_, Some(false)) => return self.mk(Node::Truthy(*a)),
                _ => {}
            },
            _ => {}
        }
        if !matches!(node, Node::Fact(_) | Node::Const(_))
            && node.children().iter().all(|c| self.const_of(*c).is_some())
        {
            let folded = node.apply(&self.regexes, |c| self.const_of(c).cloned().unwrap_or(Val::Missing));
            if let Some(v @ (Val::Missing | Val::Str(_) | Val::Num(_) | Val::Bool(_))) = folded {
                return self.konst(v);
            }
        }
        if let Some(id) = key_of(&node).and_then(|k| self.intern.get(&k)) {
            return Ok(*id);
        }
        self.push(node)
    }

    fn fact(&mut self, f: &Fact) -> Result<NodeId, Diag> {
        let slot = match self.fact_ix.get(f) {
            Some(s) => *s,
            None => {
                let s = u32::try_from(self.facts.len()).map_err(|_| Diag::bug("too many facts"))?;
                self.facts.push(f.clone());
                self.fact_ix.insert(f.clone(), s);
                s
            }
        };
        self.mk(Node::Fact(slot))
    }

    fn regex(&mut self, r: &Regex) -> u32 {
        let key = (r.pattern.clone(), r.case_insensitive);
        if let Some(ix) = self.regex_ix.get(&key) {
            return *ix;
        }
        let ix = self.regexes.len() as u32;
        self.regexes.push(value::build_regex(&r.pattern, r.case_insensitive).ok());
        self.regex_ix.insert(key, ix);
        ix
    }

    fn matcher(&mut self, program: &Program, m: &Matcher) -> Result<NodeId, Diag> {
        if let Some(id) = self.matchers.get(&m.name.name) {
            return Ok(*id);
        }
        if self.visiting.contains(&m.name.name) {
            return Err(
                Diag::bug(format!("matcher `{}` refers to itself", m.name.name)).primary(m.name.span, "in this cycle")
            );
        }
        self.visiting.push(m.name.name.clone());
        let id = self.expr(program, &m.expr);
        self.visiting.pop();
        let id = id?;
        self.matchers.insert(m.name.name.clone(), id);
        Ok(id)
    }

    fn expr(&mut self, program: &Program, e: &Expr) -> Result<NodeId, Diag> {
        match &e.kind {
            ExprKind::Lit(Lit::Str(s)) => self.konst(Val::Str(s.clone())),
            ExprKind::Lit(Lit::Int(n)) => self.konst(Val::Num(*n as f64)),
            ExprKind::Lit(Lit::Float(f)) => self.konst(Val::Num(*f)),
            ExprKind::Lit(Lit::Bool(b)) => self.konst(Val::Bool(*b)),
            ExprKind::Lit(Lit::Regex(_)) => self.konst(Val::Missing),
            ExprKind::List(items) => {
                let ids = items.iter().map(|i| self.expr(program, i)).collect::<Result<Vec<_>, _>>()?;
                self.mk(Node::List(ids.into()))
            }
            ExprKind::Fact(f) => self.fact(f),
            ExprKind::Ref(name) => match program.matcher(&name.name) {
                Some(m) => {
                    let x = self.matcher(program, m)?;
                    self.mk(Node::Truthy(x))
                }
                None => self.konst(Val::Missing),
            },
            ExprKind::Not(x) => {
                let x = self.expr(program, x)?;
                self.mk(Node::Not(x))
            }
            ExprKind::Exists(x) => {
                let x = self.expr(program, x)?;
                self.mk(Node::Exists(x))
            }
            ExprKind::Binary { op: BinOp::Matches, lhs, rhs, .. } => {
                let ExprKind::Lit(Lit::Regex(r)) = &rhs.kind else { return self.konst(Val::Bool(false)) };
                let re = self.regex(r);
                if self.regexes.get(re as usize).is_none_or(Option::is_none) {
                    return self.konst(Val::Bool(false));
                }
                let x = self.expr(program, lhs)?;
                self.mk(Node::Match(x, re))
            }
            ExprKind::Binary { op, lhs, rhs, .. } => {
                let a = self.expr(program, lhs)?;
                let b = self.expr(program, rhs)?;
                self.mk(match op {
                    BinOp::And => Node::And(a, b),
                    BinOp::Or => Node::Or(a, b),
                    op => Node::Bin(*op, a, b),
                })
            }
            ExprKind::Call { func, args } => {
                let ids = args.iter().map(|a| self.expr(program, a)).collect::<Result<Vec<_>, _>>()?;
                self.mk(Node::Call(*func, ids.into()))
            }
        }
    }
}

// ======================================================================= upstreams, settings

fn resolve(program: &Program, v: &Value, always_secret: bool) -> Resolved {
    let env: Vec<String> = v
        .parts
        .iter()
        .filter_map(|p| match p {
            ValuePart::Env(n) => Some(n.value.clone()),
            ValuePart::Lit(_) => None,
        })
        .collect();
    Resolved { value: program.value(v), secret: always_secret || !env.is_empty(), env }
}

fn upstream(program: &Program, b: &mut Nodes, u: &Upstream) -> Result<(UpstreamInfo, Option<NodeId>), Diag> {
    let mut info = UpstreamInfo {
        name: u.name.name.clone(),
        targets: vec![],
        balance: BalanceInfo::RoundRobin,
        headers: vec![],
        timeout_ns: DEFAULT_UPSTREAM_TIMEOUT_NS,
        connect_timeout_ns: DEFAULT_CONNECT_TIMEOUT_NS,
        health: None,
        retry: None,
        max_connections: None,
        affinity: false,
    };
    let (mut balance, mut timeout, mut connect) = (None, None, None);
    let mut key = None;
    for stmt in &u.stmts {
        match &stmt.kind {
            UpstreamStmtKind::Target(t) => info.targets.push(TargetInfo {
                url: resolve(program, &t.url, false),
                weight: t.weight.map(|w| w.value).unwrap_or(1),
                region: t.region.as_ref().map(|r| r.value.clone()),
            }),
            UpstreamStmtKind::Balance(bal) => {
                if balance.is_none() {
                    balance = Some(match bal {
                        Balance::RoundRobin => BalanceInfo::RoundRobin,
                        Balance::Weighted => BalanceInfo::Weighted,
                        Balance::LeastConn => BalanceInfo::LeastConn,
                        Balance::Hash(e) => {
                            key = Some(b.root(program, e)?);
                            BalanceInfo::Hash
                        }
                    });
                }
            }
            UpstreamStmtKind::Header { name, value } => {
                info.headers.push((name.value.clone(), resolve(program, value, false)))
            }
            UpstreamStmtKind::Timeout(q) => {
                timeout.get_or_insert(q.value);
            }
            UpstreamStmtKind::ConnectTimeout(q) => {
                connect.get_or_insert(q.value);
            }
            UpstreamStmtKind::Health(h) => {
                info.health.get_or_insert_with(|| HealthInfo {
                    method: h.method,
                    path: h.path.value.clone(),
                    every_ns: h.every.value,
                    timeout_ns: h.timeout.map(|t| t.value).unwrap_or(DEFAULT_HEALTH_TIMEOUT_NS),
                });
            }
            UpstreamStmtKind::Retry(r) => {
                info.retry.get_or_insert_with(|| RetryInfo {
                    attempts: r.attempts.value,
                    on_connect_error: r.on.iter().any(|c| matches!(c, RetryCond::ConnectError(_))),
                    on_timeout: r.on.iter().any(|c| matches!(c, RetryCond::Timeout(_))),
                    statuses: r
                        .on
                        .iter()
                        .filter_map(|c| match c {
                            RetryCond::Status(q) => Some(q.value as u16),
                            _ => None,
                        })
                        .collect(),
                });
            }
            UpstreamStmtKind::MaxConnections(q) => {
                info.max_connections.get_or_insert(q.value);
            }
            UpstreamStmtKind::Affinity(_) => info.affinity = true,
        }
    }
    info.balance = balance.unwrap_or(BalanceInfo::RoundRobin);
    info.timeout_ns = timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_NS);
    info.connect_timeout_ns = connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT_NS);
    Ok((info, key))
}

fn settings(program: &Program) -> Settings {
    let literal = |s: &str| Resolved { value: Some(s.to_string()), secret: false, env: vec![] };
    let mut out = Settings {
        listen: literal(DEFAULT_LISTEN),
        admin: None,
        state: StateSettings::Local,
        audit: None,
        max_body: DEFAULT_MAX_BODY,
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        max_headers: DEFAULT_MAX_HEADERS,
        header_timeout_ns: DEFAULT_HEADER_TIMEOUT_NS,
        idle_timeout_ns: DEFAULT_IDLE_TIMEOUT_NS,
        drain_timeout_ns: DEFAULT_DRAIN_TIMEOUT_NS,
        tls: None,
        policy_header: true,
        forwarded: ForwardedMode::Append,
    };
    let Some(g) = program.gateway() else { return out };
    // `check` refuses a setting given twice; should one slip through, the first wins.
    let mut seen: Vec<&'static str> = vec![];
    for s in &g.settings {
        let kw = s.kind.keyword();
        if seen.contains(&kw) {
            continue;
        }
        seen.push(kw);
        match &s.kind {
            SettingKind::Listen(v) => out.listen = resolve(program, v, false),
            SettingKind::Admin { addr, token } => {
                out.admin = Some(AdminSettings {
                    addr: resolve(program, addr, false),
                    token: token.as_ref().map(|t| resolve(program, t, true)),
                })
            }
            SettingKind::State(StateStore::Local) => out.state = StateSettings::Local,
            SettingKind::State(StateStore::Redis { url, on_error }) => {
                out.state = StateSettings::Redis { url: resolve(program, url, true), on_error: *on_error }
            }
            SettingKind::Audit { path, rotate } => {
                out.audit =
                    Some(AuditSettings { path: resolve(program, path, false), rotate_bytes: rotate.map(|r| r.value) })
            }
            SettingKind::MaxBody(q) => out.max_body = q.value,
            SettingKind::MaxHeaderBytes(q) => out.max_header_bytes = q.value,
            SettingKind::MaxHeaders(q) => out.max_headers = q.value,
            SettingKind::HeaderTimeout(q) => out.header_timeout_ns = q.value,
            SettingKind::IdleTimeout(q) => out.idle_timeout_ns = q.value,
            SettingKind::DrainTimeout(q) => out.drain_timeout_ns = q.value,
            SettingKind::Tls { cert, key } => {
                out.tls = Some(TlsSettings { cert: resolve(program, cert, false), key: resolve(program, key, false) })
            }
            SettingKind::PolicyHeader(b) => out.policy_header = *b,
            SettingKind::Forwarded(m) => out.forwarded = *m,
        }
    }
    out
}
