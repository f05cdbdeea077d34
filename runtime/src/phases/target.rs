//! Phase 5, target: the route's upstream, and one of its targets by the upstream's balancing
//! (`round_robin`, `least_conn`, `hash(...)` of the request, ...).

use std::net::SocketAddr;

use gw_engine::graph::{RouteInfo, UpstreamInfo};
use gw_engine::request::Decision;

use crate::errors::{Code, GwError};
use crate::exchange::Exchange;
use crate::gateway::Loaded;
use crate::phases::inspect::balance_view;
use crate::upstream::{Target, Upstream};

/// The upstream and target a request goes to.
pub struct Picked<'a> {
    pub upstream: &'a Upstream,
    pub info: &'a UpstreamInfo,
    pub target: &'a Target,
}

/// The route's upstream, and one of its targets by the upstream's balancing.
pub fn pick<'a>(
    loaded: &'a Loaded,
    route: &RouteInfo,
    decision: &Decision,
    parts: &http::request::Parts,
    peer: SocketAddr,
    x: &mut Exchange,
) -> Result<Picked<'a>, GwError> {
    let graph = &loaded.policy.graph;
    let up_index = route.upstream.ok_or_else(|| GwError::new(Code::NoUpstream, "the route has no upstream"))?;
    let upstream = &loaded.upstreams[up_index];
    let up_info = &graph.upstreams()[up_index];
    let hash_key = match upstream.balance {
        gw_engine::graph::BalanceInfo::Hash => graph.balance_key(up_index, &balance_view(parts, peer), decision),
        _ => None,
    };
    let target = upstream.pick(hash_key.as_deref());
    x.upstream = Some(upstream.name.clone());
    x.target = Some(
        target.authority.host().to_string() + &target.authority.port().map(|p| format!(":{p}")).unwrap_or_default(),
    );
    Ok(Picked { upstream, info: up_info, target })
}
