//! A route's `cache`: its values (TTL, size bound, statuses) and where it can apply. A cache
//! stores what an upstream answered, so it needs a route that forwards (`to`), and never a
//! WebSocket session, which is no answer to store.

use crate::diagnostics::{Code, Diag};

use super::*;

impl<'a> Checker<'a> {
    pub(super) fn route_cache(&mut self, r: &Route) {
        let mut first: Option<&RouteStmt> = None;
        for s in &r.stmts {
            let RouteStmtKind::Cache { ttl, max, statuses, .. } = &s.kind else { continue };
            self.range(*ttl, 1_000_000_000, 30 * 86_400_000_000_000, "cache ttl", "cache for 1s to 30d");
            if let Some(m) = max {
                self.range(*m, 1_000, 1_000_000_000, "cache max bytes", "a cache holds from 1KB to 1GB");
            }
            for (i, st) in statuses.iter().enumerate() {
                self.status(*st, 200, "a cached answer");
                if let Some(dup) = statuses[..i].iter().find(|d| d.value == st.value) {
                    self.err(
                        Diag::error(Code::CacheInvalid, format!("status {} is listed twice", st.value))
                            .primary(st.span, "listed again here")
                            .secondary(dup.span, "first listed here")
                            .help("list each status once"),
                    );
                }
            }
            match first {
                Some(f) => self.err(
                    Diag::error(Code::CacheInvalid, format!("route `{}` has two `cache` statements", r.name.name))
                        .primary(s.span, "a second cache")
                        .secondary(f.span, "first given here")
                        .help("a route has one cache: merge them into one `cache` statement"),
                ),
                None => first = Some(s),
            }
        }
        let Some(cache) = first else { return };
        let action = r
            .stmts
            .iter()
            .find(|s| matches!(s.kind, RouteStmtKind::To(_) | RouteStmtKind::Respond { .. } | RouteStmtKind::Serve(_)));
        if let Some(a) = action.filter(|a| !matches!(a.kind, RouteStmtKind::To(_))) {
            self.err(
                Diag::error(
                    Code::CacheInvalid,
                    format!("route `{}` caches, but answers itself with `{}`", r.name.name, a.kind.keyword()),
                )
                .primary(cache.span, "nothing to cache: no upstream answers this route")
                .secondary(a.span, "the route answers here")
                .help("remove `cache`, or forward the route with `to UPSTREAM`"),
            );
        }
        if let Some(ws) = r.stmts.iter().find(|s| matches!(s.kind, RouteStmtKind::Websocket)) {
            self.err(
                Diag::error(Code::CacheInvalid, format!("route `{}` caches a WebSocket route", r.name.name))
                    .primary(cache.span, "a WebSocket session is not an answer to store")
                    .secondary(ws.span, "the route accepts WebSocket sessions here")
                    .help("remove `cache` (a WebSocket upgrade is always forwarded)"),
            );
        }
    }
}
