//! What `gw serve` implements. A policy using anything else is refused at load with
//! `gw::not_supported`, rather than served with a part of it silently ignored.

use gw_compiler::graph::{ActionInfo, Graph};

/// Built-in handlers `serve NAME` can name that this runtime answers.
pub const BUILTINS: &[&str] = &["health", "ready", "metrics", "upstreams", "usage", "tokens"];

/// One line per unsupported construct, naming where it is.
pub fn unsupported(graph: &Graph) -> Vec<String> {
    let mut out = vec![];
    for u in graph.upstreams() {
        if u.health.is_some() {
            out.push(format!("upstream `{}`: health checks", u.name));
        }
        if u.affinity {
            out.push(format!("upstream `{}`: affinity", u.name));
        }
        if u.retry.is_some() {
            out.push(format!("upstream `{}`: retry", u.name));
        }
    }
    for r in graph.routes() {
        let mut no = |what: &str| out.push(format!("route `{}`: {what}", r.name));
        if r.cache.is_some() {
            no("cache");
        }
        if r.cors.is_some() {
            no("cors");
        }
        if r.jwt.is_some() {
            no("jwt");
        }
        if let ActionInfo::Serve { builtin } = &r.action {
            if !BUILTINS.contains(&builtin.as_str()) {
                no(&format!("serve {builtin}"));
            }
        }
    }
    out
}
