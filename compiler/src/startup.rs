//! What `gw serve` checks as it starts, checked ahead of time in serve mode: values read from
//! `env(...)` (known only then) must pass the checks their literal forms pass, the Redis URL
//! must be one the store accepts, and the files the gateway reads at start (TLS certificate and
//! key) must be there; the audit log's folder it creates itself. `gw-check --serve` runs this,
//! so CI can ask exactly what `gw serve` will accept. Paths resolve as the runtime resolves them: relative to
//! the root policy file's folder.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ast::*;
use crate::check::check_url;
use crate::diagnostics::{Code, Diag};

/// Schemes the Redis client accepts.
const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];

/// Every start-up problem visible before starting, one diagnostic each.
pub fn startup(items: &[Item], env: &BTreeMap<String, Option<String>>, root: &Path) -> Vec<Diag> {
    let dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out = vec![];
    for item in items {
        match item {
            Item::Gateway(g) => {
                for s in &g.settings {
                    match &s.kind {
                        SettingKind::Listen(v) => address(v, env, "listen", &mut out),
                        SettingKind::Admin { addr, .. } => address(addr, env, "admin", &mut out),
                        SettingKind::State(StateStore::Redis { url, .. }) => redis(url, env, &mut out),
                        SettingKind::Tls { cert, key } => {
                            pem(cert, env, &dir, "certificate", "CERTIFICATE-----", &mut out);
                            pem(key, env, &dir, "private key", "PRIVATE KEY-----", &mut out);
                        }
                        _ => {}
                    }
                }
            }
            Item::Upstream(u) => {
                for s in &u.stmts {
                    if let UpstreamStmtKind::Target(t) = &s.kind {
                        if let Some(url) = from_env(&t.url, env) {
                            if let Err(why) = check_url(&url) {
                                out.push(
                                    Diag::error(Code::InvalidUrl, format!("`{url}` is not a valid upstream URL"))
                                        .primary(t.url.span, format!("the environment gives `{url}`: {why}"))
                                        .help("set the variable to a URL like http://10.0.0.1:8000"),
                                );
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The value, when it reads `env(...)` and every variable is set (unset ones are
/// `gw::env_unset`; literals are checked by `check`).
fn from_env(v: &Value, env: &BTreeMap<String, Option<String>>) -> Option<String> {
    if !v.parts.iter().any(|p| matches!(p, ValuePart::Env(_))) {
        return None;
    }
    resolve(v, env)
}

/// The value with every variable substituted, if all are set.
fn resolve(v: &Value, env: &BTreeMap<String, Option<String>>) -> Option<String> {
    let mut out = String::new();
    for p in &v.parts {
        match p {
            ValuePart::Lit(s) => out.push_str(&s.value),
            ValuePart::Env(n) => out.push_str(env.get(&n.value)?.as_deref()?),
            ValuePart::Fact(..) | ValuePart::Gateway(..) => return None,
        }
    }
    Some(out)
}

fn address(v: &Value, env: &BTreeMap<String, Option<String>>, what: &str, out: &mut Vec<Diag>) {
    let Some(addr) = from_env(v, env) else { return };
    if addr.parse::<std::net::SocketAddr>().is_err() {
        out.push(
            Diag::error(Code::InvalidUrl, format!("`{addr}` is not a socket address"))
                .primary(v.span, format!("{what} needs `ip:port`; the environment gives `{addr}`"))
                .help("set the variable to an address like 127.0.0.1:8080 or [::1]:8080"),
        );
    }
}

fn redis(v: &Value, env: &BTreeMap<String, Option<String>>, out: &mut Vec<Diag>) {
    let Some(url) = resolve(v, env) else { return };
    if !REDIS_SCHEMES.iter().any(|s| url.starts_with(s)) {
        // The URL may hold a password: show its scheme only.
        let scheme = url.split_once("://").map_or("(none)", |(s, _)| s);
        out.push(
            Diag::error(Code::InvalidUrl, "the Redis URL is not one the store accepts")
                .primary(v.span, format!("scheme `{scheme}`"))
                .help("write it as redis://host:6379 (rediss:// for TLS, unix:///path for a socket)"),
        );
    }
}

/// A PEM file the gateway reads at start must be readable and hold the `marker` block.
fn pem(v: &Value, env: &BTreeMap<String, Option<String>>, dir: &Path, what: &str, marker: &str, out: &mut Vec<Diag>) {
    let Some(path) = resolve(v, env).map(|p| dir.join(p)) else { return };
    let problem = match std::fs::read(&path) {
        Err(e) => Some(format!("cannot read `{}`: {}", path.display(), reason(&e))),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            (!text.lines().any(|l| l.starts_with("-----BEGIN ") && l.ends_with(marker)))
                .then(|| format!("`{}` holds no PEM {what}", path.display()))
        }
    };
    if let Some(problem) = problem {
        out.push(
            Diag::error(Code::StartupUnavailable, format!("the TLS {what}: {problem}"))
                .primary(v.span, format!("TLS {what} named here"))
                .help("TLS paths are relative to the policy file gw serve is given; the file is PEM"),
        );
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
