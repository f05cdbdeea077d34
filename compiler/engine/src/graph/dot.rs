//! The graph as Graphviz, for `gw-check compile --emit dot`.

use super::*;

impl Graph {
    /// Graphviz of routes → auth → guards → limits → action/upstream (`gw-check compile --emit dot`).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph gw {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
        for (u, up) in self.upstreams.iter().enumerate() {
            let targets: Vec<String> =
                up.targets.iter().map(|t| t.url.shown().unwrap_or("<unset>").to_string()).collect();
            out.push_str(&format!(
                "  u{u} [shape=cylinder, label={}];\n",
                dot_str(&format!("upstream {}\n{}", up.name, targets.join("\n")))
            ));
        }
        for r in &self.routes {
            let i = r.index;
            let when = if r.routable {
                let methods: Vec<&str> = r.methods.iter().map(|m| m.as_str()).collect();
                let host = r.host.as_deref().map(|h| format!(" host {h}")).unwrap_or_default();
                let cond = if r.has_condition { " if …" } else { "" };
                format!("{} {}{host}{cond}", methods.join("|"), r.path)
            } else {
                "(no when: never selected)".to_string()
            };
            out.push_str(&format!(
                "  r{i} [shape=oval, label={}];\n",
                dot_str(&format!("route {} (#{i})\n{when}", r.name))
            ));
            let mut prev = format!("r{i}");
            if let Some(a) = &r.auth {
                let sources: Vec<String> = a
                    .sources
                    .iter()
                    .map(|s| match s {
                        CredentialSource::Header(h) => format!("header {h}"),
                        CredentialSource::Bearer => "bearer".to_string(),
                        CredentialSource::Query(q) => format!("query {q}"),
                        CredentialSource::Basic => "basic".to_string(),
                    })
                    .collect();
                let opt = if a.optional { " (optional)" } else { "" };
                let id = format!("r{i}_auth");
                out.push_str(&format!(
                    "  {id} [label={}];\n",
                    dot_str(&format!(
                        "auth {}{opt}\nvia {}",
                        a.methods.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" or "),
                        sources.join(", ")
                    ))
                ));
                out.push_str(&format!("  {prev} -> {id} [label=\"401\"];\n"));
                prev = id;
            }
            for (g, guard) in r.guards.iter().enumerate() {
                let id = format!("r{i}_g{g}");
                out.push_str(&format!(
                    "  {id} [shape=diamond, label={}];\n",
                    dot_str(&format!("{} → {} {}", guard.kind, guard.status, guard.message))
                ));
                out.push_str(&format!("  {prev} -> {id};\n"));
                prev = id;
            }
            for l in &r.limits {
                if let Some(info) = self.limits.get(*l) {
                    let id = format!("r{i}_l{l}");
                    out.push_str(&format!("  {id} [shape=note, label={}];\n", dot_str(&info.id)));
                    out.push_str(&format!("  {prev} -> {id};\n"));
                    prev = id;
                }
            }
            match &r.action {
                ActionInfo::Forward { upstream: Some(u), .. } => out.push_str(&format!("  {prev} -> u{u};\n")),
                action => {
                    let label = match action {
                        ActionInfo::Forward { name, .. } => format!("to {name} (undefined)"),
                        ActionInfo::Respond => format!("respond {}", r.respond.as_ref().map(|x| x.status).unwrap_or(0)),
                        ActionInfo::Serve { builtin } => format!("serve {builtin}"),
                        ActionInfo::None => "no action (404)".to_string(),
                    };
                    let id = format!("r{i}_action");
                    out.push_str(&format!("  {id} [shape=plaintext, label={}];\n", dot_str(&label)));
                    out.push_str(&format!("  {prev} -> {id};\n"));
                }
            }
        }
        out.push_str("}\n");
        out
    }
}

fn dot_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
