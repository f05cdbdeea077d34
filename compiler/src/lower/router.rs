//! The route automaton: every routable route's method, path and host in one lazy DFA.

use std::sync::Arc;

use crate::diagnostics::{Code, Diag};
use crate::program::Program;

use super::*;

/// Literal paths into a map; one pattern per other routable route over
/// `path 0xFF [host token]`, in route order, so pattern id order is priority order.
pub(super) fn build_router(program: &Program) -> Result<Router, Diag> {
    let mut host_exact = HostMap::default();
    let mut host_wild = HostMap::default();
    let mut next_host = 0u32;
    let mut route_host = vec![];
    for route in program.routes() {
        let host = route.when().and_then(|w| w.host.as_ref()).map(|h| {
            let (map, key) = match h.value.strip_prefix("*.") {
                Some(suffix) => (&mut host_wild, suffix.to_string()),
                None => (&mut host_exact, h.value.to_ascii_lowercase()),
            };
            *map.entry(key).or_insert_with(|| {
                next_host += 1;
                next_host - 1
            })
        });
        route_host.push(host);
    }
    let mut token_width = 1usize;
    let mut capacity = 255u64;
    while capacity < u64::from(next_host) {
        token_width += 1;
        capacity *= 255;
    }

    let mut hirs = vec![];
    let mut pattern_route = vec![];
    let mut literal = LiteralMap::default();
    for (index, route) in program.routes().enumerate() {
        let Some(when) = route.when() else { continue };
        let index32 = u32::try_from(index).map_err(|_| Diag::bug("too many routes"))?;
        let pattern = PathPattern::parse(&when.path.value);
        if let PathPattern::Segs { segs, star: false } = &pattern {
            if segs.iter().all(|s| matches!(s, Seg::Lit(_))) {
                // No params, no `*`: the path must equal the pattern string.
                literal
                    .entry(when.path.value.clone())
                    .or_default()
                    .push((index32, route_host.get(index).copied().flatten()));
                continue;
            }
        }
        let mut parts = vec![path_hir(&pattern), Hir::literal(vec![SEP])];
        if let Some(Some(h)) = route_host.get(index) {
            let token = host_token(*h, token_width);
            parts.push(Hir::literal(token.get(..token_width).unwrap_or(&[]).to_vec()));
        }
        hirs.push(Hir::concat(parts));
        pattern_route.push(index32);
    }

    let too_large = |e: &dyn std::fmt::Display| {
        Diag::error(Code::RegexTooLarge, format!("the routes' patterns do not fit in one automaton: {e}"))
            .help("split the policy, or use fewer and more general path patterns")
    };
    if hirs.is_empty() {
        return Ok(Router {
            literal,
            automaton: None,
            pattern_route,
            route_host,
            host_exact,
            host_wild,
            token_width,
            nfa_bytes: 0,
            cache_bytes: 0,
        });
    }
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .utf8(false)
                .shrink(false)
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(ROUTER_NFA_LIMIT)),
        )
        .build_many_from_hir(&hirs)
        .map_err(|e| too_large(&e))?;
    let config = DFA::config().match_kind(MatchKind::All).minimum_cache_clear_count(None);
    let minimum = config.get_minimum_cache_capacity(&nfa).map_err(|e| too_large(&e))?;
    if minimum > ROUTER_CACHE_MAX {
        return Err(too_large(&format!("needs a {minimum}-byte cache")));
    }
    // The lazily built DFA is at worst a trie of the patterns: room for about that many states
    // keeps traffic spread over every route from thrashing it. A cap, not an allocation.
    let nfa_bytes = nfa.memory_usage();
    let cache_bytes =
        nfa_bytes.saturating_mul(16).max(minimum.saturating_mul(2)).clamp(ROUTER_CACHE_MIN, ROUTER_CACHE_MAX);
    let dfa =
        DFA::builder().configure(config.cache_capacity(cache_bytes)).build_from_nfa(nfa).map_err(|e| too_large(&e))?;
    let dfa = Arc::new(dfa);
    let for_pool = Arc::clone(&dfa);
    let pool = Pool::new(Box::new(move || for_pool.create_cache()) as CacheFn);
    Ok(Router {
        literal,
        automaton: Some(Automaton { dfa, pool }),
        pattern_route,
        route_host,
        host_exact,
        host_wild,
        token_width,
        nfa_bytes,
        cache_bytes,
    })
}

/// A path pattern as bytes: exactly the paths `eval::match_path` accepts. Paths are UTF-8, so
/// byte classes that exclude `/` and the separator match what eval's string splitting does.
pub(super) fn path_hir(p: &PathPattern) -> Hir {
    let any = || Hir::class(Class::Bytes(ClassBytes::new([ClassBytesRange::new(0x00, 0xFE)])));
    let rep = |sub: Hir, min: u32, max: Option<u32>| {
        Hir::repetition(Repetition { min, max, greedy: true, sub: Box::new(sub) })
    };
    match p {
        PathPattern::Any => Hir::concat(vec![Hir::literal(*b"/"), rep(any(), 0, None)]),
        PathPattern::Segs { segs, star } => {
            let seg_class = || {
                Hir::class(Class::Bytes(ClassBytes::new([
                    ClassBytesRange::new(0x00, b'/' - 1),
                    ClassBytesRange::new(b'/' + 1, 0xFE),
                ])))
            };
            let mut parts = vec![];
            for (i, s) in segs.iter().enumerate() {
                if i > 0 {
                    parts.push(Hir::literal(*b"/"));
                }
                match s {
                    Seg::Lit(l) => parts.push(Hir::literal(l.as_bytes().to_vec())),
                    Seg::Param(_) => parts.push(rep(seg_class(), 1, None)),
                }
            }
            if *star {
                parts.push(rep(Hir::concat(vec![Hir::literal(*b"/"), rep(any(), 0, None)]), 0, Some(1)));
            }
            Hir::concat(parts)
        }
    }
}
