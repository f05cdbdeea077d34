//! The inputs outside the policy text, read by the stage that owns I/O: env vars the program
//! names, and the key files its key sets read. Run after `check` so they are read only for a
//! program whose names resolve; nothing later reads a file or the environment.

use std::collections::BTreeMap;
use std::path::Path;

use super::Loader;
use crate::ast::*;
use crate::check::Mode;
use crate::diagnostics::{Code, Diag};
use crate::keys::LoadedKeys;
use crate::source::{Sources, Span};

/// Collect env vars the program names, read them, and report unset ones.
pub fn env_vars(
    items: &[Item],
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> (BTreeMap<String, Option<String>>, Vec<Diag>) {
    let mut values = BTreeMap::new();
    let mut diags = vec![];
    let mut visit = |v: &Value| {
        for p in &v.parts {
            if let ValuePart::Env(name) = p {
                if values.contains_key(&name.value) {
                    continue;
                }
                let val = env(&name.value);
                if val.is_none() {
                    let d = match mode {
                        Mode::Check => {
                            Diag::warning(Code::EnvUnset, format!("environment variable `{}` is not set", name.value))
                        }
                        Mode::Serve => {
                            Diag::error(Code::EnvUnset, format!("environment variable `{}` is not set", name.value))
                        }
                    };
                    diags.push(
                        d.primary(name.span, "read here")
                            .help(format!("set `{}` in the gateway's environment before `gw serve`", name.value)),
                    );
                }
                values.insert(name.value.clone(), val);
            }
        }
    };
    for item in items {
        match item {
            Item::Gateway(g) => {
                for s in &g.settings {
                    match &s.kind {
                        SettingKind::Listen(v) | SettingKind::Audit { path: v, .. } => visit(v),
                        SettingKind::Admin { addr, token } => {
                            visit(addr);
                            if let Some(t) = token {
                                visit(t);
                            }
                        }
                        SettingKind::State(StateStore::Redis { url, .. }) => visit(url),
                        SettingKind::Tls { cert, key } => {
                            visit(cert);
                            visit(key);
                        }
                        _ => {}
                    }
                }
            }
            Item::Upstream(u) => {
                for s in &u.stmts {
                    match &s.kind {
                        UpstreamStmtKind::Target(t) => visit(&t.url),
                        UpstreamStmtKind::Header { value, .. } => visit(value),
                        _ => {}
                    }
                }
            }
            Item::Keys(k) => {
                if let Some(s) = &k.salt {
                    visit(s);
                }
            }
            Item::Jwt(j) => {
                for s in &j.stmts {
                    if let JwtStmtKind::Secret(v) = &s.kind {
                        visit(v);
                    }
                }
            }
            Item::Route(r) => {
                for s in &r.stmts {
                    crate::resolve::stmt_templates(&s.kind).into_iter().for_each(&mut visit);
                }
            }
            _ => {}
        }
    }
    (values, diags)
}

/// Read every key set's file (relative to the file that declares it).
pub fn key_files(
    items: &[Item],
    sources: &mut Sources,
    loader: &dyn Loader,
    env: &BTreeMap<String, Option<String>>,
) -> (BTreeMap<String, LoadedKeys>, Vec<std::path::PathBuf>, Vec<Diag>) {
    let mut sets = BTreeMap::new();
    let mut files = vec![];
    let mut diags = vec![];
    for item in items {
        let Item::Keys(k) = item else { continue };
        let base = sources.get(k.span.file).and_then(|f| f.path.parent().map(Path::to_path_buf)).unwrap_or_default();
        let path = base.join(&k.file.value);
        files.push(path.clone());
        let salt = match &k.salt {
            Some(v) => {
                let mut out = String::new();
                let mut ok = true;
                for p in &v.parts {
                    match p {
                        ValuePart::Lit(s) => out.push_str(&s.value),
                        ValuePart::Env(n) => match env.get(&n.value).and_then(|v| v.as_deref()) {
                            Some(val) => out.push_str(val),
                            None => ok = false,
                        },
                        ValuePart::Fact(..) | ValuePart::Gateway(..) => ok = false,
                    }
                }
                // An unset salt is reported as an env error; the set is loaded unsalted meanwhile.
                ok.then_some(out)
            }
            None => None,
        };
        let bytes = match loader.read(&path) {
            Ok(b) => b,
            Err(e) => {
                diags.push(
                    Diag::error(Code::KeysFileMissing, format!("cannot read key file `{}`", path.display()))
                        .primary(
                            k.file.span,
                            if e.kind() == std::io::ErrorKind::NotFound {
                                "no such file".to_string()
                            } else {
                                e.to_string()
                            },
                        )
                        .help("key file paths are relative to the policy file that names them"),
                );
                sets.insert(k.name.name.clone(), LoadedKeys::default());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (keys, errors) = LoadedKeys::parse(&text, salt);
        if !errors.is_empty() {
            let id = sources.add(&path, path.display().to_string(), text.into());
            for e in errors.iter().take(20) {
                diags.push(
                    Diag::error(Code::KeysFileMalformed, format!("line {} of key file `{}`: {}", e.line, path.display(), e.reason))
                        .primary(Span::new(id, e.start, e.end), "malformed entry")
                        .secondary(k.file.span, "key file named here")
                        .help("each line is `<sha256-hex> <tenant> <key-name>`; make a hash with `printf '%s' \"$KEY\" | sha256sum`"),
                );
            }
        }
        sets.insert(k.name.name.clone(), keys);
    }
    (sets, files, diags)
}
