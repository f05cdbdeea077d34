//! Upstreams (targets, balancing, pools) and the policy's global settings.

use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::program::Program;

use super::*;

pub(super) fn resolve(program: &Program, v: &Value, always_secret: bool) -> Resolved {
    let env: Vec<String> = v
        .parts
        .iter()
        .filter_map(|p| match p {
            ValuePart::Env(n) => Some(n.value.clone()),
            ValuePart::Lit(_) | ValuePart::Fact(..) | ValuePart::Gateway(..) => None,
        })
        .collect();
    Resolved { value: program.value(v), secret: always_secret || !env.is_empty(), env }
}

/// A template value: literal and env runs joined into one part each, facts kept.
pub fn template_of(program: &Program, v: &Value) -> Template {
    let mut parts: Vec<TextPart> = vec![];
    let mut run: Vec<ValuePart> = vec![];
    let flush = |run: &mut Vec<ValuePart>, parts: &mut Vec<TextPart>| {
        if !run.is_empty() {
            let lits = Value { parts: std::mem::take(run), span: v.span };
            parts.push(TextPart::Lit(resolve(program, &lits, false)));
        }
    };
    for p in &v.parts {
        match p {
            ValuePart::Lit(_) | ValuePart::Env(_) => run.push(p.clone()),
            ValuePart::Fact(f, _) => {
                flush(&mut run, &mut parts);
                parts.push(TextPart::Fact(f.clone()));
            }
            ValuePart::Gateway(g, _) => {
                flush(&mut run, &mut parts);
                parts.push(TextPart::Gateway(*g));
            }
        }
    }
    flush(&mut run, &mut parts);
    Template { parts }
}

/// An upstream's info, and the nodes of its `hash(EXPR)` and `affinity EXPR`.
pub(super) type Lowered = (UpstreamInfo, Option<NodeId>, Option<NodeId>);

pub(super) fn upstream(program: &Program, b: &mut Nodes, u: &Upstream) -> Result<Lowered, Diag> {
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
    let (mut key, mut affinity) = (None, None);
    for stmt in &u.stmts {
        match &stmt.kind {
            UpstreamStmtKind::Target(t) => {
                let url = resolve(program, &t.url, false);
                // Parsed here, once: an `env(...)` URL is known now, and the runtime sends
                // to the typed address without parsing again.
                let addr = match url.get().map(TargetAddr::parse) {
                    None => None,
                    Some(Ok(addr)) => Some(addr),
                    Some(Err(why)) => {
                        let shown = if url.secret {
                            "the value of env(...)".to_string()
                        } else {
                            format!("`{}`", url.get().unwrap_or(""))
                        };
                        return Err(Diag::error(Code::InvalidUrl, format!("{shown} is not a valid upstream URL"))
                            .primary(t.url.span, why)
                            .help("write it as http://host:port or https://host[:port][/base-path]"));
                    }
                };
                info.targets.push(TargetInfo {
                    url,
                    addr,
                    weight: t.weight.map(|w| w.value).unwrap_or(1),
                    region: t.region.as_ref().map(|r| r.value.clone()),
                })
            }
            UpstreamStmtKind::Balance(bal) => {
                if balance.is_none() {
                    balance = Some(match bal {
                        Balance::RoundRobin => BalanceInfo::RoundRobin,
                        Balance::Weighted => BalanceInfo::Weighted,
                        Balance::LeastConn => BalanceInfo::LeastConn,
                        Balance::LeastLatency => BalanceInfo::LeastLatency,
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
                    expect_status: h.expect.map(|q| q.value as u16),
                    healthy_after: h.healthy.map_or(DEFAULT_HEALTHY_AFTER, |q| q.value as u32),
                    unhealthy_after: h.unhealthy.map_or(DEFAULT_UNHEALTHY_AFTER, |q| q.value as u32),
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
            UpstreamStmtKind::Affinity(e) => {
                if affinity.is_none() {
                    affinity = Some(b.root(program, e)?);
                    info.affinity = true;
                }
            }
        }
    }
    info.balance = balance.unwrap_or(BalanceInfo::RoundRobin);
    info.timeout_ns = timeout.unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_NS);
    info.connect_timeout_ns = connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT_NS);
    Ok((info, key, affinity))
}

pub(super) fn settings(program: &Program) -> Settings {
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
