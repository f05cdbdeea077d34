//! Credential rules: `jwt` sets (a verifiable algorithm, key material that fits it), `auth`
//! (how each set's credential is read), `claim` facts (known only after a `jwt` set), and
//! `cors` (origins gw can compare, never `"*"` with credentials).

use gw_engine::cors::OriginPattern;
use gw_engine::jwt::JwtAlg;

use crate::diagnostics::{Code, Diag};

use super::*;

/// Longest clock skew a `jwt` set may allow.
const MAX_LEEWAY_NS: u64 = 3_600_000_000_000;

impl Checker<'_> {
    /// What kind of credential set `name` is: `keys`, `jwt` or `basic`.
    pub(super) fn set_kind(&self, name: &str) -> Option<&'static str> {
        self.items.iter().find_map(|i| match i {
            Item::Keys(k) if k.name.name == name => Some("keys"),
            Item::Jwt(j) if j.name.name == name => Some("jwt"),
            Item::Basic(b) if b.name.name == name => Some("basic"),
            _ => None,
        })
    }

    pub(super) fn jwt_set(&mut self, j: &JwtSet) {
        let mut alg = None;
        let mut keys = vec![];
        for s in &j.stmts {
            match &s.kind {
                JwtStmtKind::Alg(a) => match JwtAlg::parse(&a.name) {
                    Some(x) => alg = Some((x, a.span)),
                    None => {
                        let why = if a.name.eq_ignore_ascii_case("none") {
                            "an unsigned token proves nothing: `none` is never accepted"
                        } else {
                            "not an algorithm gw verifies"
                        };
                        self.err(
                            Diag::error(Code::JwtInvalid, format!("`{}` is not a JWT algorithm gw accepts", a.name))
                                .primary(a.span, why)
                                .help(format!("write one of {}", JwtAlg::NAMES)),
                        );
                        alg = Some((JwtAlg::HS256, Span::default()));
                    }
                },
                JwtStmtKind::Secret(_) => keys.push(("secret", s.span)),
                JwtStmtKind::Key(_) => keys.push(("key", s.span)),
                JwtStmtKind::Jwks(_) => keys.push(("jwks", s.span)),
                JwtStmtKind::Leeway(q) => self.range(*q, 0, MAX_LEEWAY_NS, "leeway", "a clock skew of 0s to 1h"),
                JwtStmtKind::TenantClaim(e) => {
                    if !matches!(&e.kind, ExprKind::Fact(Fact::Claim(p)) if !p.is_empty()) {
                        self.err(
                            Diag::error(Code::JwtInvalid, "a token's tenant comes from a claim or is a name")
                                .primary(e.span, "not a claim")
                                .help("write `tenant claim[\"org\"]` or `tenant \"name\"`"),
                        );
                    }
                }
                JwtStmtKind::Issuer(_)
                | JwtStmtKind::Audience(_)
                | JwtStmtKind::TenantName(_)
                | JwtStmtKind::Message(_) => {}
            }
        }
        let Some((alg, _)) = alg else {
            self.err(
                Diag::error(Code::JwtInvalid, format!("jwt set `{}` does not say its algorithm", j.name.name))
                    .primary(j.name.span, "no `alg`")
                    .help("pin the algorithm the issuer signs with, e.g. `alg RS256`: a token never chooses it"),
            );
            return;
        };
        match keys.as_slice() {
            [] => self.err(
                Diag::error(Code::JwtInvalid, format!("jwt set `{}` has no key", j.name.name))
                    .primary(j.name.span, "nothing to verify signatures with")
                    .help(if alg.is_hmac() {
                        "add `secret env(\"JWT_SECRET\")`"
                    } else {
                        "add `key \"issuer.pem\"` or `jwks \"issuer.jwks.json\"`"
                    }),
            ),
            [(what, span)] => {
                let fits = if alg.is_hmac() { *what == "secret" } else { *what != "secret" };
                if !fits {
                    let help = if alg.is_hmac() {
                        format!("{alg:?} verifies with a shared secret: `secret env(\"JWT_SECRET\")`")
                    } else {
                        format!("{alg:?} verifies with the issuer's public key: `key \"issuer.pem\"` or `jwks \"...\"`")
                    };
                    self.err(
                        Diag::error(Code::JwtInvalid, format!("`{what}` does not fit {alg:?}"))
                            .primary(*span, "the wrong kind of key for the algorithm")
                            .help(help),
                    );
                }
            }
            [_, (what, span), ..] => self.err(
                Diag::error(Code::JwtInvalid, format!("jwt set `{}` has more than one key source", j.name.name))
                    .primary(*span, format!("a second key source (`{what}`)"))
                    .help("give one of `secret`, `key` or `jwks`"),
            ),
        }
    }

    /// The sets of an `auth`: header names, `via` only where a set reads one, each set once.
    pub(super) fn auth(&mut self, a: &Auth) {
        let mut seen: Vec<&str> = vec![];
        for m in &a.methods {
            for c in &m.via {
                if let Credential::Header(h) = c {
                    self.header_name(h);
                }
            }
            if self.set_kind(&m.set.name) == Some("basic") && !m.via.is_empty() {
                self.err(
                    Diag::error(Code::AuthInvalid, format!("basic set `{}` takes no `via`", m.set.name))
                        .primary(m.set.span, "read from `Authorization: Basic` only")
                        .help(format!("write `{}` without `via`", m.set.name)),
                );
            }
            if seen.contains(&m.set.name.as_str()) {
                self.err(
                    Diag::error(Code::AuthInvalid, format!("`{}` is tried twice", m.set.name))
                        .primary(m.set.span, "named again here")
                        .help("name each credential set once; list several sources in one `via`"),
                );
            }
            seen.push(&m.set.name);
        }
    }

    /// Whether the route's `auth` tries a `jwt` set (so `claim` is known after it).
    pub(super) fn auth_has_jwt(&self, a: Option<&Auth>) -> bool {
        a.is_some_and(|a| a.methods.iter().any(|m| self.set_kind(&m.set.name) == Some("jwt")))
    }

    /// `claim` is known only after a `jwt` set accepted the request.
    pub(super) fn no_claim_facts(&mut self, e: &Expr, place: &str) {
        let mut found = vec![];
        self.visit_with_matchers(e, &mut |sub| {
            if let ExprKind::Fact(Fact::Claim(_)) = &sub.kind {
                found.push(sub.span);
            }
        });
        for span in found {
            self.err(
                Diag::error(Code::FactUnavailable, format!("`claim` is not known in {place}"))
                    .primary(span, "claims are only known after a `jwt` set accepted the request")
                    .help("add a `jwt` set to the route's `auth` (`auth tokens`), and test claims in guards or limits"),
            );
        }
    }

    pub(super) fn cors(&mut self, c: &Cors) {
        if c.origins.is_empty() {
            self.err(
                Diag::error(Code::CorsInvalid, "`cors` allows no origin")
                    .primary(c.clauses.first().map_or(Span::default(), |x| x.1), "an empty list")
                    .help("list the origins, e.g. `origins [\"https://app.example.com\"]`"),
            );
        }
        for o in &c.origins {
            match OriginPattern::parse(&o.value) {
                None => self.err(
                    Diag::error(Code::CorsInvalid, format!("`{}` is not an origin", o.value))
                        .primary(o.span, "not `scheme://host[:port]`")
                        .help("write `\"https://app.example.com\"`, `\"https://*.example.com\"` or `\"*\"`"),
                ),
                Some(OriginPattern::Any) => {
                    if let Some(cred) = c.credentials {
                        self.err(
                            Diag::error(
                                Code::CorsInvalid,
                                "`\"*\"` with `credentials` lets any site act as its visitors",
                            )
                            .primary(o.span, "any origin")
                            .secondary(cred, "with credentials")
                            .help("list the origins that may send credentials, or drop `credentials`"),
                        );
                    }
                }
                Some(_) => {}
            }
        }
        for h in c.headers.iter().filter(|h| h.value != "*").chain(&c.expose) {
            self.header_name(h);
        }
    }
}
