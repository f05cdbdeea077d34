//! The files of `jwt` and `basic` sets (PEM keys, JWKS documents, htpasswd files), read when
//! the policy is loaded and watched with it, so a changed file is a reload like a key file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gw_engine::basic::Htpasswd;
use gw_engine::jwt::{JwtAlg, JwtVerifier, KeySource, TenantFrom};

use super::Loader;
use crate::ast::*;
use crate::diagnostics::{Code, Diag};
use crate::source::{Sources, Span};

pub type JwtSets = BTreeMap<String, Arc<JwtVerifier>>;
pub type BasicSets = BTreeMap<String, (String, Arc<Htpasswd>)>;

/// Load every `jwt` and `basic` set: (jwt sets, basic sets, the files read, diagnostics).
pub fn credential_files(
    items: &[Item],
    sources: &mut Sources,
    loader: &dyn Loader,
    env: &BTreeMap<String, Option<String>>,
) -> (JwtSets, BasicSets, Vec<PathBuf>, Vec<Diag>) {
    let mut jwts = BTreeMap::new();
    let mut basics = BTreeMap::new();
    let mut files = vec![];
    let mut diags = vec![];
    for item in items {
        match item {
            Item::Jwt(j) => {
                let base = base_dir(sources, j.span.file);
                if let Some(v) = jwt_set(j, &base, loader, env, &mut files, &mut diags) {
                    jwts.insert(j.name.name.clone(), Arc::new(v));
                }
            }
            Item::Basic(b) => {
                let path = base_dir(sources, b.span.file).join(&b.file.value);
                files.push(path.clone());
                let set = match loader.read(&path) {
                    Ok(bytes) => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        let (set, errors) = Htpasswd::parse(&text);
                        // The file's lines are never shown: a refused line may hold a password.
                        for e in errors.iter().take(20) {
                            diags.push(
                                Diag::error(
                                    Code::KeysFileMalformed,
                                    format!("line {} of htpasswd file `{}`: {}", e.line, path.display(), e.reason),
                                )
                                .primary(b.file.span, format!("line {} of this file is refused", e.line))
                                .help("each line is `user:hash`; make one with `htpasswd -nB USER`"),
                            );
                        }
                        set
                    }
                    Err(e) => {
                        diags.push(unreadable(Code::KeysFileMissing, "htpasswd file", &path, b.file.span, &e));
                        Htpasswd::default()
                    }
                };
                let tenant = b.tenant.as_ref().map_or_else(|| b.name.name.clone(), |t| t.value.clone());
                basics.insert(b.name.name.clone(), (tenant, Arc::new(set)));
            }
            _ => {}
        }
    }
    (jwts, basics, files, diags)
}

fn base_dir(sources: &Sources, file: crate::source::FileId) -> PathBuf {
    sources.get(file).and_then(|f| f.path.parent().map(Path::to_path_buf)).unwrap_or_default()
}

fn unreadable(code: Code, what: &str, path: &Path, span: Span, e: &std::io::Error) -> Diag {
    let reason = if e.kind() == std::io::ErrorKind::NotFound { "no such file".to_string() } else { e.to_string() };
    Diag::error(code, format!("cannot read {what} `{}`", path.display()))
        .primary(span, reason)
        .help("paths are relative to the policy file that names them")
}

/// One `jwt` set with its key material; None when `check` already refused its algorithm.
fn jwt_set(
    j: &JwtSet,
    base: &Path,
    loader: &dyn Loader,
    env: &BTreeMap<String, Option<String>>,
    files: &mut Vec<PathBuf>,
    diags: &mut Vec<Diag>,
) -> Option<JwtVerifier> {
    let alg = j.stmts.iter().find_map(|s| match &s.kind {
        JwtStmtKind::Alg(a) => JwtAlg::parse(&a.name),
        _ => None,
    })?;
    let mut material: Option<(Vec<u8>, Span, bool)> = None;
    let mut secret = None;
    for s in &j.stmts {
        match &s.kind {
            JwtStmtKind::Secret(v) => {
                let mut out = String::new();
                let mut ok = true;
                for p in &v.parts {
                    match p {
                        ValuePart::Lit(l) => out.push_str(&l.value),
                        ValuePart::Env(n) => match env.get(&n.value).and_then(|v| v.as_deref()) {
                            Some(val) => out.push_str(val),
                            None => ok = false,
                        },
                        // The grammar's `value` reads no request facts; a secret never would.
                        ValuePart::Fact(..) | ValuePart::Gateway(..) => ok = false,
                    }
                }
                // An unset secret is an env diagnostic; the set verifies nothing meanwhile.
                secret = Some((ok && !out.is_empty()).then_some(out));
            }
            JwtStmtKind::Key(f) | JwtStmtKind::Jwks(f) => {
                let path = base.join(&f.value);
                files.push(path.clone());
                match loader.read(&path) {
                    Ok(b) => material = Some((b, f.span, matches!(s.kind, JwtStmtKind::Jwks(_)))),
                    Err(e) => diags.push(unreadable(Code::JwtInvalid, "key file", &path, f.span, &e)),
                }
            }
            _ => {}
        }
    }
    let built = match (&secret, &material) {
        (Some(Some(s)), _) => JwtVerifier::new(&j.name.name, alg, KeySource::Secret(s.as_bytes())),
        (_, Some((bytes, span, jwks))) => {
            let text;
            let source = if *jwks {
                text = String::from_utf8_lossy(bytes).into_owned();
                KeySource::Jwks(&text)
            } else {
                KeySource::Pem(bytes)
            };
            JwtVerifier::new(&j.name.name, alg, source).map_err(|why| {
                diags.push(
                    Diag::error(Code::JwtInvalid, format!("the key of jwt set `{}` is unusable", j.name.name))
                        .primary(*span, why)
                        .help("give the issuer's public key as PEM (`key`) or its JWKS document (`jwks`)"),
                );
                String::new()
            })
        }
        _ => JwtVerifier::new(&j.name.name, alg, KeySource::None),
    };
    let mut v = built.ok()?;
    for s in &j.stmts {
        match &s.kind {
            JwtStmtKind::Issuer(i) => v.issuer = Some(i.value.clone()),
            JwtStmtKind::Audience(a) => v.audience = Some(a.value.clone()),
            JwtStmtKind::Leeway(q) => v.leeway_s = q.value / 1_000_000_000,
            JwtStmtKind::TenantName(n) => v.tenant = TenantFrom::Name(n.value.clone()),
            JwtStmtKind::TenantClaim(Expr { kind: ExprKind::Fact(Fact::Claim(p)), .. }) => {
                v.tenant = TenantFrom::Claim(p.clone())
            }
            _ => {}
        }
    }
    Some(v)
}
