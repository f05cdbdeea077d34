//! CORS answered by gw: which origins, methods and headers a route allows, the preflight
//! answer, and the headers added to the route's other answers. Data the compiler builds from
//! `cors ...`; the decision, the policy tests and the runtime all ask it the same questions.

use serde::Serialize;

use crate::request::Request;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum OriginPattern {
    /// `"*"`: any origin.
    Any,
    /// `https://app.example.com`, compared case-insensitively.
    Exact(String),
    /// `https://*.example.com`: the scheme, then any subdomain (not the apex) of the suffix,
    /// with the pattern's port if it has one.
    Subdomains { scheme: String, suffix: String },
}

impl OriginPattern {
    pub fn parse(s: &str) -> Option<OriginPattern> {
        if s == "*" {
            return Some(OriginPattern::Any);
        }
        let (scheme, rest) = s.split_once("://")?;
        if scheme.is_empty() || rest.is_empty() || rest.contains('/') || s.chars().any(|c| c.is_whitespace()) {
            return None;
        }
        match rest.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => Some(OriginPattern::Subdomains {
                scheme: scheme.to_ascii_lowercase(),
                suffix: suffix.to_ascii_lowercase(),
            }),
            Some(_) => None,
            None if rest.contains('*') => None,
            None => Some(OriginPattern::Exact(s.to_ascii_lowercase())),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => *o == origin,
            OriginPattern::Subdomains { scheme, suffix } => {
                let Some(host) = origin.strip_prefix(scheme.as_str()).and_then(|r| r.strip_prefix("://")) else {
                    return false;
                };
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host[..host.len() - suffix.len()].ends_with('.')
                    && host[..host.len() - suffix.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

/// A route's `cors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorsPolicy {
    pub origins: Vec<OriginPattern>,
    /// Upper-case method names a preflight may ask for.
    pub methods: Vec<String>,
    /// Lower-case request header names a preflight may ask for; `*` allows any.
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age_s: Option<u64>,
}

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(req: &Request) -> bool {
    req.method == "OPTIONS" && req.header("origin").is_some() && req.header("access-control-request-method").is_some()
}

impl CorsPolicy {
    fn any_origin(&self) -> bool {
        self.origins.contains(&OriginPattern::Any)
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.matches(origin))
    }

    /// Answers of the route depend on `Origin` (so caches must key on it) unless every origin
    /// gets the same `*`.
    pub fn varies(&self) -> bool {
        !self.any_origin() || self.credentials
    }

    /// Whether the preflight `req` is allowed; Err says why not (for the refusal's message).
    pub fn check_preflight(&self, req: &Request) -> Result<(), String> {
        let origin = req.header("origin").unwrap_or("");
        if !self.origin_allowed(origin) {
            return Err("CORS preflight refused: origin not allowed".into());
        }
        let method = req.header("access-control-request-method").unwrap_or("").trim();
        if !self.methods.iter().any(|m| m == method) {
            return Err("CORS preflight refused: method not allowed".into());
        }
        for h in requested_headers(req) {
            if !self.header_allowed(&h) {
                return Err("CORS preflight refused: request header not allowed".into());
            }
        }
        Ok(())
    }

    fn header_allowed(&self, h: &str) -> bool {
        self.headers.iter().any(|a| a == "*" || a == h)
    }

    /// The headers of an allowed preflight's answer.
    pub fn preflight_headers(&self, req: &Request) -> Vec<(&'static str, String)> {
        let mut out = self.origin_headers(req.header("origin"));
        out.push(("access-control-allow-methods", self.methods.join(", ")));
        let asked = requested_headers(req);
        if !asked.is_empty() {
            out.push(("access-control-allow-headers", asked.join(", ")));
        }
        if let Some(s) = self.max_age_s {
            out.push(("access-control-max-age", s.to_string()));
        }
        out.push(("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".into()));
        out
    }

    /// The headers added to every other answer of the route (forwarded or gw's own).
    pub fn response_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        let mut out = self.origin_headers(origin);
        if out.iter().any(|(n, _)| *n == "access-control-allow-origin") && !self.expose.is_empty() {
            out.push(("access-control-expose-headers", self.expose.join(", ")));
        }
        if self.varies() {
            out.push(("vary", "Origin".into()));
        }
        out
    }

    fn origin_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        let mut out = vec![];
        match origin {
            Some(_) if self.any_origin() && !self.credentials => out.push(("access-control-allow-origin", "*".into())),
            Some(o) if self.origin_allowed(o) => {
                out.push(("access-control-allow-origin", o.to_string()));
                if self.credentials {
                    out.push(("access-control-allow-credentials", "true".into()));
                }
            }
            _ => {}
        }
        out
    }
}

/// `Access-Control-Request-Headers`, lower-cased, split on commas.
fn requested_headers(req: &Request) -> Vec<String> {
    req.header("access-control-request-headers")
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        let p = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(p.matches("https://app.example.com") && p.matches("https://a.b.example.com"));
        assert!(!p.matches("https://example.com") && !p.matches("http://app.example.com"));
        assert!(!p.matches("https://evilexample.com") && !p.matches("https://app.example.com.evil.net"));
        assert!(OriginPattern::parse("https://a.*.com").is_none());
        assert!(OriginPattern::parse("app.example.com").is_none());
        let e = OriginPattern::parse("http://127.0.0.1:8000").unwrap();
        assert!(e.matches("http://127.0.0.1:8000") && !e.matches("http://127.0.0.1:8001"));
    }
}
