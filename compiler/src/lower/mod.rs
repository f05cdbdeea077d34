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
use crate::diagnostics::Diag;
use crate::graph::*;
use crate::program::Program;
use crate::template::{BodyTemplate, JsonBody, Template, TextPart};

mod nodes;
mod route;
mod router;
mod upstream;

use nodes::Nodes;
use route::RouteCx;
use router::build_router;
pub use upstream::template_of;
use upstream::{settings, upstream};

/// Largest NFA the route automaton may have, in bytes (10,000 routes need a few MB).
pub const ROUTER_NFA_LIMIT: usize = 256 << 20;
/// Lazy DFA cache per thread: at least this, more if the automaton needs it.
const ROUTER_CACHE_MIN: usize = 4 << 20;
const ROUTER_CACHE_MAX: usize = 64 << 20;

/// A tenant's limits as (table index, id, kind keyword): the kind decides what `tenant *`
/// still adds.
type KindedIds = Vec<(usize, String, &'static str)>;

/// Lower a validated program into its decision graph.
pub fn lower(program: &Program) -> Result<Graph, Diag> {
    let mut b = Nodes::default();

    let (keysets, jwtsets, basicsets) = credential_sets(program);

    let mut upstreams = vec![];
    let (mut balance_keys, mut affinity_keys) = (vec![], vec![]);
    for u in program.upstreams() {
        let (info, key, affinity) = upstream(program, &mut b, u)?;
        upstreams.push(info);
        balance_keys.push(key);
        affinity_keys.push(affinity);
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
    let mut cx = RouteCx {
        program,
        b: &mut b,
        keysets: &keysets,
        jwtsets: &jwtsets,
        basicsets: &basicsets,
        upstreams: &upstreams,
        first_index: &first_index,
        limits: &mut limits,
        any_tenant_tokens,
    };
    for (index, route) in program.routes().enumerate() {
        let (info, rt) = cx.lower_route(route, index)?;
        routes.push(info);
        rts.push(rt);
    }

    let (tenants, tenant_limits, default_tenant_limits) = lower_tenants(program, &first_index, &mut limits);
    for shared in program.shared_limits() {
        limits.push(LimitInfo {
            id: shared_id(shared),
            kind: limit_kind(&shared.kind),
            shadow: false,
            per: limit_per(&shared.per),
            owner: LimitOwner::Shared { name: shared.name.name.clone() },
            model: None,
            conditional: false,
        });
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
        jwtsets,
        basicsets,
        rt: rts,
        router,
        nodes,
        meta,
        facts,
        regexes,
        tenant_limits,
        default_tenant_limits,
        balance_keys,
        affinity_keys,
        model_path: vec![PathSeg::Field("model".to_string())],
    })
}

/// The credential sets as the graph holds them (hashes and verifiers, read by `load`).
fn credential_sets(program: &Program) -> (Vec<KeysetInfo>, Vec<JwtSetInfo>, Vec<BasicSetInfo>) {
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

    let jwtsets: Vec<JwtSetInfo> =
        program.jwtsets.iter().map(|(name, v)| JwtSetInfo { name: name.clone(), verifier: v.clone() }).collect();
    let basicsets: Vec<BasicSetInfo> = program
        .basicsets
        .iter()
        .map(|(name, (tenant, h))| BasicSetInfo {
            name: name.clone(),
            tenant: tenant.clone(),
            users: h.len(),
            htpasswd: h.clone(),
        })
        .collect();

    (keysets, jwtsets, basicsets)
}

/// A tenant's limit ids by table index, as `Graph::tenant_limits` holds them.
type TenantLimits = HashMap<String, LimitIds>;

/// (index into the limit table, limit id) of each limit.
type LimitIds = Vec<(usize, Arc<str>)>;

/// Tenants and their limits (appended to `limits`), with what `tenant *` gives every tenant
/// for the kinds its own block does not set.
fn lower_tenants(
    program: &Program,
    first_index: &HashMap<&str, usize>,
    limits: &mut Vec<LimitInfo>,
) -> (Vec<TenantInfo>, TenantLimits, LimitIds) {
    let mut tenants = vec![];
    let mut tenant_limits: TenantLimits = HashMap::new();
    // Each tenant's own limits with the kind of each, before `tenant *` fills the gaps.
    let mut own: Vec<(String, KindedIds)> = vec![];
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
                ids.push((ix, id, stmt.kind.keyword()));
            }
        }
        tenants.push(TenantInfo {
            name: t.name.name.clone(),
            limits: ids.iter().map(|(i, _, _)| *i).collect(),
            region,
        });
        own.push((t.name.name.clone(), ids));
    }
    let every: Vec<(usize, String, &str)> =
        own.iter().find(|(n, _)| n == EVERY_TENANT).map(|(_, ids)| ids.clone()).unwrap_or_default();
    for (name, ids) in own {
        let kinds: Vec<&str> = ids.iter().map(|(_, _, k)| *k).collect();
        let defaults = every.iter().filter(|(_, _, k)| !kinds.contains(k));
        let all = ids.iter().chain(defaults).map(|(i, id, _)| (*i, Arc::from(id.as_str()))).collect();
        // eval uses the first tenant of a name.
        tenant_limits.entry(name).or_insert(all);
    }
    let default_tenant_limits = every.into_iter().map(|(i, id, _)| (i, Arc::from(id))).collect();
    (tenants, tenant_limits, default_tenant_limits)
}

// ======================================================================= limit identities

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
    for shared in program.shared_limits() {
        ids.push(shared_id(shared));
    }
    ids
}

fn shared_id(l: &SharedLimit) -> String {
    shared_limit_id(&l.name.name, &limit_kind(&l.kind), &limit_per(&l.per))
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
