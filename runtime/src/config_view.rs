//! `serve config` and `GET /admin/config`: the policy as served, as JSON (routes, upstreams,
//! limits, tenants, key sets, settings), with every secret left out. Built field by field
//! from the graph rather than by dumping it, so a setting added later shows only once someone
//! decides how: nothing read from the environment is shown (`<redacted>`), header values set
//! upstream are never shown (only their names), a Redis URL and the admin token not at all,
//! and key sets only by name and size (no hashes, no salt).

use gw_engine::graph::{ActionInfo, Graph, RouteInfo, Settings, StateSettings, UpstreamInfo, REDACTED};
use serde_json::{json, Value};

use crate::gateway::Gateway;

pub fn config_view(gw: &Gateway) -> Value {
    let p = gw.policy();
    let graph = &p.policy.graph;
    json!({
        "generation": p.policy.generation,
        "hash": p.policy.hash,
        "settings": settings(graph.settings()),
        "routes": graph.routes().iter().filter(|r| r.routable).map(|r| route(graph, r)).collect::<Vec<_>>(),
        "upstreams": graph.upstreams().iter().map(upstream).collect::<Vec<_>>(),
        "tenants": graph.tenants().iter().map(|t| json!({
            "name": t.name,
            "region": t.region,
            "limits": t.limits.iter().filter_map(|&i| graph.limits().get(i)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "keysets": graph.keysets().iter().map(|k| json!({"name": k.name, "keys": k.len, "salted": k.salted})).collect::<Vec<_>>(),
    })
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn settings(s: &Settings) -> Value {
    let state = match &s.state {
        StateSettings::Local => json!({"kind": "local"}),
        // The URL may carry a password: only that there is one.
        StateSettings::Redis { on_error, .. } => json!({"kind": "redis", "url": REDACTED, "on_error": on_error}),
    };
    json!({
        "listen": s.listen,
        "admin": s.admin.as_ref().map(|a| json!({"addr": a.addr, "token": a.token.is_some()})),
        "state": state,
        "audit": s.audit.as_ref().map(|a| json!({"path": a.path, "rotate_bytes": a.rotate_bytes})),
        "max_body": s.max_body,
        "max_header_bytes": s.max_header_bytes,
        "max_headers": s.max_headers,
        "header_timeout_ms": ms(s.header_timeout_ns),
        "idle_timeout_ms": ms(s.idle_timeout_ns),
        "drain_timeout_ms": ms(s.drain_timeout_ns),
        "tls": s.tls.is_some(),
        "policy_header": s.policy_header,
        "forwarded": s.forwarded,
    })
}

fn route(graph: &Graph, r: &RouteInfo) -> Value {
    let action = match &r.action {
        ActionInfo::Forward { name, .. } => json!({"kind": "to", "upstream": name}),
        ActionInfo::Respond => json!({"kind": "respond", "status": r.respond.as_ref().map(|x| x.status)}),
        ActionInfo::Serve { builtin } => json!({"kind": "serve", "builtin": builtin}),
        ActionInfo::None => Value::Null,
    };
    json!({
        "name": r.name,
        "methods": r.methods,
        "path": r.path,
        "host": r.host,
        "conditional": r.has_condition,
        "auth": r.auth.as_ref().map(|a| {
            let methods: Vec<Value> = a
                .methods
                .iter()
                .map(|m| {
                    let kind = match m.set {
                        gw_engine::graph::SetRef::Keys(_) => "keys",
                        gw_engine::graph::SetRef::Jwt(_) => "jwt",
                        gw_engine::graph::SetRef::Basic(_) => "basic",
                        gw_engine::graph::SetRef::Undefined => "undefined",
                    };
                    json!({"set": m.name, "kind": kind, "via": m.sources})
                })
                .collect();
            json!({"methods": methods, "optional": a.optional})
        }),
        "guards": r.guards,
        "limits": r.limits.iter().filter_map(|&i| graph.limits().get(i)).collect::<Vec<_>>(),
        // Names only: a value set on a header may be a credential.
        "set_headers": r.set_headers.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "strip_headers": r.strip_headers,
        "rewrite": r.rewrite,
        "cache": r.cache,
        "websocket": r.websocket,
        "cors": r.cors.is_some(),
        "action": action,
    })
}

fn upstream(u: &UpstreamInfo) -> Value {
    json!({
        "name": u.name,
        // A target read from the environment is redacted whole.
        "targets": u.targets.iter().map(|t| json!({"url": t.url, "weight": t.weight, "region": t.region})).collect::<Vec<_>>(),
        "balance": u.balance,
        "headers": u.headers.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        "timeout_ms": ms(u.timeout_ns),
        "connect_timeout_ms": ms(u.connect_timeout_ns),
        "health": u.health,
        "retry": u.retry,
        "max_connections": u.max_connections,
        "affinity": u.affinity,
    })
}
