//! What `gw serve` implements. In serve mode a policy using a construct the runtime does not
//! implement yet is refused with `gw::not_supported` at that construct, rather than served
//! with part of it silently ignored. `gw-check` accepts and tests every construct.
//!
//! A policy to serve must also have a route: one without would answer 404 to everything, and
//! it is most often a file caught half-written (truncated, then written) by a reload.

use crate::ast::{Item, RouteStmtKind};
use crate::diagnostics::{Code, Diag};
use crate::source::{FileId, Span};

const HELP: &str = "gw-check accepts and tests it, but gw serve cannot honour it yet; remove it to serve this \
                    policy (the language reference lists what the runtime implements)";

/// `jwt` guards the route: removing it would leave the route open, so its help says what to
/// write instead.
const JWT_HELP: &str = "gw serve cannot verify JWTs yet, and removing `jwt` would leave this route open: \
                        authenticate with `auth KEYSET` instead (or write `auth none` if the route is \
                        meant to be public)";

/// One `gw::not_supported` error per construct `gw serve` does not implement.
pub fn unsupported(items: &[Item]) -> Vec<Diag> {
    let mut out = vec![];
    let mut refuse = |what: &str, owner: &str, span| {
        out.push(
            Diag::error(Code::NotSupported, format!("{owner}: `{what}` is not implemented by gw serve yet"))
                .primary(span, format!("`{what}` is not implemented by the runtime yet"))
                .help(if what == "jwt" { JWT_HELP } else { HELP }),
        )
    };
    for item in items {
        if let Item::Route(r) = item {
            for stmt in &r.stmts {
                if matches!(
                    stmt.kind,
                    RouteStmtKind::Cache { .. } | RouteStmtKind::Cors { .. } | RouteStmtKind::Jwt { .. }
                ) {
                    refuse(stmt.kind.keyword(), &format!("route `{}`", r.name.name), stmt.span);
                }
            }
        }
    }
    out
}

/// `gw::no_routes` when no file of the policy declares a route, at the start of the root file
/// (the first file read).
pub fn no_routes(items: &[Item]) -> Option<Diag> {
    if items.iter().any(|i| matches!(i, Item::Route(_))) {
        return None;
    }
    Some(
        Diag::error(Code::NoRoutes, "the policy has no route: gw serve would answer 404 to every request")
            .primary(Span::new(FileId(0), 0, 0), "no `route` in this file or the files it imports")
            .help(
                "add a route; an empty policy is often a file read while it was being rewritten: on a \
                 reload the previous policy keeps serving until the file is whole",
            ),
    )
}
