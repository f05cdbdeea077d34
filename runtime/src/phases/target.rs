//! Phase 5, target: the route's upstream, what the request wants of its pool (the
//! `hash(...)` and `affinity` values), and a target for each try by the pool's health and
//! balancing (`round_robin`, `weighted`, `least_conn`, `least_latency`, `hash(...)`).

use std::net::SocketAddr;

use gw_engine::graph::{BalanceInfo, RouteInfo, UpstreamInfo};
use gw_engine::request::Decision;

use crate::errors::{Code, GwError};
use crate::gateway::Loaded;
use crate::phases::inspect::balance_view;
use crate::pool::{Target, Wants};
use crate::upstream::Upstream;

/// The upstream a request goes to, and what it wants of the pool.
pub struct Selected<'a> {
    pub upstream: &'a Upstream,
    pub info: &'a UpstreamInfo,
    pub wants: Wants,
}

/// The target of one try.
pub struct Picked<'a> {
    pub upstream: &'a Upstream,
    pub info: &'a UpstreamInfo,
    pub target: &'a Target,
    /// Its index in the pool.
    pub index: usize,
}

/// The route's upstream, with the request's `hash(EXPR)` and `affinity EXPR` values.
pub fn select<'a>(
    loaded: &'a Loaded,
    route: &RouteInfo,
    decision: &Decision,
    parts: &http::request::Parts,
    peer: SocketAddr,
) -> Result<Selected<'a>, GwError> {
    let graph = &loaded.policy.graph;
    let up_index = route.upstream.ok_or_else(|| GwError::new(Code::NoUpstream, "the route has no upstream"))?;
    let upstream = &loaded.upstreams[up_index];
    let info = &graph.upstreams()[up_index];
    let mut wants = Wants::default();
    if upstream.balance == BalanceInfo::Hash || info.affinity {
        let view = balance_view(parts, peer);
        if upstream.balance == BalanceInfo::Hash {
            wants.key = graph.balance_key(up_index, &view, decision);
        }
        if info.affinity {
            wants.region = graph.affinity_key(up_index, &view, decision);
        }
    }
    Ok(Selected { upstream, info, wants })
}

/// A target for a try, other than those `tried`. None on a retry when no other target can
/// take it; on the first try, no target at all is a 503.
pub fn pick<'a>(sel: &Selected<'a>, tried: &[usize]) -> Result<Option<Picked<'a>>, GwError> {
    let pool = &sel.upstream.pool;
    match pool.pick(&sel.wants, tried) {
        Some(index) => Ok(Some(Picked { upstream: sel.upstream, info: sel.info, target: &pool.targets[index], index })),
        None if tried.is_empty() => Err(GwError::new(
            Code::NoHealthyUpstream,
            format!("no target of upstream `{}` is healthy", sel.upstream.name),
        )),
        None => Ok(None),
    }
}
