//! Lints: warnings about a policy that compiles but likely does not do what was meant.

use std::collections::BTreeMap;

use crate::diagnostics::{Code, Diag};
use crate::keys::LoadedKeys;
use crate::resolve::{stmt_exprs, walk};

use super::*;

/// Lints: warnings about a policy that compiles but likely does not do what was meant. They
/// run only on a policy without errors (until then they would be noise), after the key files
/// are read.
pub fn lints(items: &[Item], keysets: &BTreeMap<String, LoadedKeys>) -> Vec<Diag> {
    let mut out = vec![];
    for item in items {
        if let Item::Route(r) = item {
            auth_unspecified(r, &mut out);
        }
    }
    unknown_identities(items, keysets, &mut out);
    out
}

/// A route that forwards must say who may call it: `auth KEYSET`, or `auth none` when it is
/// public on purpose. (`jwt` counts as saying so; serve mode refuses it on its own.)
pub(super) fn auth_unspecified(r: &Route, out: &mut Vec<Diag>) {
    let says = r.stmts.iter().any(|s| matches!(s.kind, RouteStmtKind::Auth(_) | RouteStmtKind::AuthNone));
    let Some(to) = r.stmts.iter().find(|s| matches!(s.kind, RouteStmtKind::To(_))).filter(|_| !says) else {
        return;
    };
    out.push(
        Diag::warning(
            Code::AuthUnspecified,
            format!("route `{}` forwards without saying who may call it", r.name.name),
        )
        .primary(r.name.span, "no `auth` in this route")
        .secondary(to.span, "anyone who can reach the gateway is forwarded here")
        .help("add `auth KEYSET` to require a key, or `auth none` if this route is public on purpose"),
    );
}

/// `tenant == "nobody"` where no key file and no `tenant` block names `nobody` is a typo that
/// silently disables a rule; so is a key name no key file lists. (Lints run once every key
/// file was read without error, so the names they list are all there are.)
pub(super) fn unknown_identities(items: &[Item], keysets: &BTreeMap<String, LoadedKeys>, out: &mut Vec<Diag>) {
    let mut tenants: Vec<&str> = keysets.values().flat_map(|k| k.tenants()).collect();
    tenants.extend(items.iter().filter_map(|i| match i {
        Item::Tenant(t) => Some(t.name.name.as_str()),
        _ => None,
    }));
    // Tenants of `jwt` and `basic` sets: their fixed names; a tenant read from a claim can be
    // any name, and so can a token's subject or a basic user (not listed here): not linted.
    let mut open_tenants = false;
    let mut open_keys = false;
    for item in items {
        match item {
            Item::Jwt(j) => {
                open_keys = true;
                let named = j.stmts.iter().find_map(|s| match &s.kind {
                    JwtStmtKind::TenantName(n) => Some(Some(n.value.as_str())),
                    JwtStmtKind::TenantClaim(_) => Some(None),
                    _ => None,
                });
                match named {
                    Some(Some(n)) => tenants.push(n),
                    Some(None) => open_tenants = true,
                    None => tenants.push(j.name.name.as_str()),
                }
            }
            Item::Basic(b) => {
                open_keys = true;
                tenants.push(b.tenant.as_ref().map_or(b.name.name.as_str(), |t| t.value.as_str()));
            }
            _ => {}
        }
    }
    tenants.sort_unstable();
    tenants.dedup();
    let mut keys: Vec<&str> = keysets.values().flat_map(|k| k.key_names()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut exprs: Vec<&Expr> = vec![];
    for item in items {
        match item {
            Item::Matcher(m) => exprs.push(&m.expr),
            Item::Route(r) => r.stmts.iter().for_each(|s| exprs.extend(stmt_exprs(&s.kind))),
            _ => {}
        }
    }
    for e in exprs {
        walk(e, &mut |sub| {
            let ExprKind::Binary { op, lhs, rhs, .. } = &sub.kind else { return };
            if !matches!(op, BinOp::Eq | BinOp::Ne | BinOp::In) {
                return;
            }
            let (fact, names) = match (&lhs.kind, &rhs.kind) {
                (ExprKind::Fact(f @ (Fact::Tenant | Fact::Key)), _) => (f, &**rhs),
                (_, ExprKind::Fact(f @ (Fact::Tenant | Fact::Key))) if *op != BinOp::In => (f, &**lhs),
                _ => return,
            };
            let literals: Vec<&Expr> = match &names.kind {
                ExprKind::List(items) => items.iter().collect(),
                _ => vec![names],
            };
            if (*fact == Fact::Tenant && open_tenants) || (*fact == Fact::Key && open_keys) {
                return;
            }
            let (what, known, source) = match fact {
                Fact::Tenant => ("tenant", &tenants, "no key file and no `tenant` block names it"),
                _ => ("key", &keys, "no key file lists a key by that name"),
            };
            for lit in literals {
                let ExprKind::Lit(Lit::Str(name)) = &lit.kind else { continue };
                if known.binary_search(&name.as_str()).is_ok() {
                    continue;
                }
                let known_list = if known.is_empty() {
                    format!("no {what} is known")
                } else {
                    let shown: Vec<&str> = known.iter().take(10).copied().collect();
                    format!("known {what}s: {}{}", shown.join(", "), if known.len() > 10 { ", ..." } else { "" })
                };
                let help = match crate::diagnostics::did_you_mean(name, known.iter().copied()) {
                    Some(dym) => format!("{dym} ({known_list})"),
                    None => format!("{known_list}; a typo here silently disables the rule"),
                };
                out.push(
                    Diag::warning(Code::UnknownIdentity, format!("no {what} is named `{name}`"))
                        .primary(
                            lit.span,
                            if *op == BinOp::Ne {
                                format!("{source}, so this is always true")
                            } else {
                                format!("{source}, so this never matches")
                            },
                        )
                        .help(help),
                );
            }
        });
    }
}
