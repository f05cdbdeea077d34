//! Read models of the running gateway, shared by the admin endpoints and the builtins a
//! route can serve (`serve usage`, `serve upstreams`): the policy served, tenants' traffic and
//! limits, upstreams and their targets.

use crate::gateway::{unix_ms, Gateway};

/// The policy being served and its last reload.
pub fn policy_view(gw: &Gateway) -> serde_json::Value {
    let p = gw.policy();
    let last = gw.last_reload.lock().map(|l| l.clone()).unwrap_or(None);
    serde_json::json!({
        "source": gw.source.describe(),
        "generation": p.policy.generation,
        "hash": p.policy.hash,
        "short_hash": p.policy.short_hash(),
        "loaded_at_unix_ms": unix_ms(p.policy.loaded_at),
        "files": p.policy.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "warnings": p.policy.warnings,
        "routes": p.policy.graph.routes().iter().map(|r| &r.name).collect::<Vec<_>>(),
        "upstreams": p.policy.graph.upstreams().iter().map(|u| &u.name).collect::<Vec<_>>(),
        "last_reload": last,
    })
}

/// Per tenant: traffic now, and the limits the tenant is charged to (its block's, then those
/// of `tenant *` it does not override). Per route: traffic now (the forwarded requests and
/// cache hits, with their tokens), and its cache's entries and bytes held in this process.
pub fn usage_view(gw: &Gateway) -> serde_json::Value {
    let p = gw.policy();
    let graph = &p.policy.graph;
    let traffic = gw.traffic.view();
    let limits_of = |tenant: &str| -> Vec<serde_json::Value> {
        let ids = graph.tenant_limits.get(tenant).unwrap_or(&graph.default_tenant_limits);
        ids.iter().filter_map(|(i, _)| graph.limits().get(*i)).map(|l| limit_state(gw, l, tenant)).collect()
    };
    // `tenant *` is every tenant's defaults, not a tenant.
    let declared = || graph.tenants().iter().filter(|t| t.name != "*");
    let tenants: Vec<serde_json::Value> = declared()
        .map(|t| {
            let seen = traffic.iter().find(|v| v.tenant == t.name);
            serde_json::json!({
                "tenant": t.name,
                "traffic": seen,
                "limits": limits_of(&t.name),
            })
        })
        .collect();
    // Tenants seen in traffic but no longer (or never) declared, e.g. named only in a key
    // file, with the `tenant *` limits they are charged to.
    let undeclared: Vec<serde_json::Value> = traffic
        .iter()
        .filter(|v| !declared().any(|t| t.name == v.tenant))
        .map(|v| {
            let mut row = serde_json::to_value(v).unwrap_or_default();
            if let Some(obj) = row.as_object_mut() {
                obj.insert("limits".into(), limits_of(&v.tenant).into());
            }
            row
        })
        .collect();
    let by_route = gw.traffic.route_view();
    let routes: Vec<serde_json::Value> = graph
        .routes()
        .iter()
        .filter(|r| matches!(r.action, gw_engine::graph::ActionInfo::Forward { .. }))
        .map(|r| {
            let mut traffic = by_route.iter().find(|v| v.tenant == r.name).and_then(|v| serde_json::to_value(v).ok());
            if let Some(t) = traffic.as_mut().and_then(|t| t.as_object_mut()) {
                t.remove("tenant");
            }
            let cache = r.cache.as_ref().map(|_| {
                let (entries, bytes) = gw.cache.memory.usage(&r.name);
                serde_json::json!({"entries": entries, "bytes": bytes, "in_redis": gw.limiter.redis().is_some()})
            });
            serde_json::json!({"route": r.name, "traffic": traffic, "cache": cache})
        })
        .collect();
    serde_json::json!({
        "generation": p.policy.generation,
        "tenants": tenants,
        "undeclared_tenants": undeclared,
        "routes": routes,
    })
}

/// A tenant limit as declared, with its counter's state now (in this process's store: with
/// `state redis`, the shared counters are in Redis and `state` is `null`).
fn limit_state(gw: &Gateway, l: &gw_engine::graph::LimitInfo, tenant: &str) -> serde_json::Value {
    use gw_engine::gcra::Gcra;
    use gw_engine::graph::LimitKindInfo;
    let local = gw.limiter.redis().is_none();
    let state = match (&l.kind, local) {
        (_, false) => serde_json::Value::Null,
        (LimitKindInfo::Rate { count, window_ns, burst }, true) => {
            let gcra = Gcra::new(*count, *window_ns, *burst);
            serde_json::json!({"capacity": gcra.burst(), "remaining": gw.limiter.local.remaining(&l.id, tenant, gcra)})
        }
        (LimitKindInfo::Tokens { count, window_ns, .. }, true) => {
            let gcra = Gcra::new(*count, *window_ns, None);
            serde_json::json!({"capacity": gcra.burst(), "remaining": gw.limiter.local.remaining(&l.id, tenant, gcra)})
        }
        (LimitKindInfo::Concurrent { max }, true) => {
            serde_json::json!({"capacity": max, "in_use": gw.limiter.local.held(&l.id, tenant)})
        }
    };
    serde_json::json!({"limit": l, "state": state})
}

/// Each upstream and what the gateway has seen of its targets: whether each takes new
/// requests, why not (failed health checks, ejection after failures in traffic) and since
/// when, its load and latency.
pub fn upstreams_view(gw: &Gateway) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    let p = gw.policy();
    let now = crate::pool::health::now_ms();
    let upstreams: Vec<serde_json::Value> = p
        .upstreams
        .iter()
        .zip(p.policy.graph.upstreams())
        .map(|(u, info)| {
            let targets: Vec<serde_json::Value> = u
                .pool
                .targets
                .iter()
                .map(|t| {
                    let h = &t.health;
                    let status = h.status(now);
                    let ejected_ms = h.ejected_until().saturating_sub(now);
                    serde_json::json!({
                        // Scheme, host, port and base path: a target URL carries no credentials.
                        "target": t.id,
                        "weight": t.weight,
                        "region": t.region,
                        "health": if h.available(now) { "ok" } else { "failing" },
                        "state": status.state,
                        "reason": status.reason,
                        "since_unix_ms": match status.since_unix_ms { 0 => None, ms => Some(ms) },
                        "ejected_for_ms": (ejected_ms > 0).then_some(ejected_ms),
                        "ejections": h.ejections.load(Relaxed),
                        "in_flight": h.in_flight.load(Relaxed),
                        "requests": h.requests.load(Relaxed),
                        "failures": h.failures.load(Relaxed),
                        "consecutive_failures": h.consecutive_failures(),
                        "latency_ewma_ms": h.latency_ns() / 1e6,
                        "last_failure_unix_ms": match h.last_failure_unix_ms.load(Relaxed) { 0 => None, ms => Some(ms) },
                    })
                })
                .collect();
            serde_json::json!({
                "name": u.name,
                "balance": u.balance,
                "timeout_ms": u.timeout.as_millis() as u64,
                "health_checks": match &info.health {
                    Some(h) => serde_json::json!({
                        "method": h.method.as_str(),
                        "path": h.path,
                        "every_ms": h.every_ns / 1_000_000,
                        "timeout_ms": h.timeout_ns / 1_000_000,
                    }),
                    None => serde_json::json!("passive"),
                },
                "retry": info.retry,
                "targets": targets,
            })
        })
        .collect();
    serde_json::json!({ "generation": p.policy.generation, "upstreams": upstreams })
}
