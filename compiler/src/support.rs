//! What serve mode adds to the checks. `gw serve` implements every construct of the language
//! (there is no "accepted by gw-check, refused by gw serve" list any more:
//! `tests/serve_support.rs` compiles a policy with the constructs that used to be refused in
//! both modes).
//!
//! A policy to serve must also have a route: one without would answer 404 to everything, and
//! it is most often a file caught half-written (truncated, then written) by a reload.

use crate::ast::Item;
use crate::diagnostics::{Code, Diag};
use crate::source::{FileId, Span};

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
