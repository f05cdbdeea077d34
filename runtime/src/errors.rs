//! The one error shape every gateway-made answer uses, OpenAI-compatible so client SDKs
//! surface it: `{"error": {"message", "type", "code", "request_id"}}`. Messages are fixed
//! texts or policy-authored ones: never internal addresses, upstream errors or secrets.
//!
//! Every code is a row of the registry below (status, code, OpenAI `type`), like the
//! compiler's diagnostic codes; README.md's error table is tested against it.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, Body};

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = ($status:literal, $code:literal, $kind:literal),)*) => {
        /// The code of a gateway-made error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The stable machine-readable code: `no_route`, `invalid_api_key`, ...
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $code,)*
                }
            }

            /// The status it is answered with (a guard chooses its own for `denied`).
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$name => $status,)*
                }
            }

            /// The OpenAI error `type`.
            pub fn kind(self) -> &'static str {
                match self {
                    $(Code::$name => $kind,)*
                }
            }
        }
    };
}

codes! {
    // The request cannot be read one way, or is malformed.
    InvalidPath = (400, "invalid_path", "invalid_request_error"),
    AmbiguousFraming = (400, "ambiguous_framing", "invalid_request_error"),
    AmbiguousCredentials = (400, "ambiguous_credentials", "invalid_request_error"),
    InvalidHost = (400, "invalid_host", "invalid_request_error"),
    InvalidHeader = (400, "invalid_header", "invalid_request_error"),
    InvalidContentLength = (400, "invalid_content_length", "invalid_request_error"),
    BadBody = (400, "bad_body", "invalid_request_error"),
    /// The body of `serve tokens` or `POST /admin/tokens` is not a request gw can count.
    BadTokenRequest = (400, "bad_token_request", "invalid_request_error"),
    /// The body of `POST /admin/explain` is not a request description.
    BadRequestDescription = (400, "bad_request_description", "invalid_request_error"),
    /// A route whose decision reads the body got one gw cannot read as every JSON parser
    /// would, or a value of a type its guards cannot compare.
    InvalidBody = (400, "invalid_body", "invalid_request_error"),
    /// `number()` of text that is not a plain number.
    InvalidNumber = (400, "invalid_number", "invalid_request_error"),
    /// A query parameter a guard reads that is not text once decoded, or is repeated.
    InvalidQuery = (400, "invalid_query", "invalid_request_error"),
    RequestTooLargeForBudget = (400, "request_too_large_for_budget", "invalid_request_error"),
    RequestTooLarge = (413, "request_too_large", "invalid_request_error"),
    /// A compressed body on a route whose decision reads the body.
    UnsupportedContentEncoding = (415, "unsupported_content_encoding", "invalid_request_error"),
    HeadersTooLarge = (431, "headers_too_large", "invalid_request_error"),
    // The policy's decision.
    MissingApiKey = (401, "missing_api_key", "authentication_error"),
    InvalidApiKey = (401, "invalid_api_key", "authentication_error"),
    InvalidAdminToken = (401, "invalid_admin_token", "authentication_error"),
    /// A refused credential on a route whose 401 says the same whatever failed (a policy's
    /// `message`, or a route that also takes JWTs or basic auth).
    Unauthorized = (401, "unauthorized", "authentication_error"),
    /// A CORS preflight for an origin, method or header the route's `cors` does not allow.
    CorsPreflightRefused = (403, "cors_preflight_refused", "permission_error"),
    /// A guard refused, with the status it chose (403 unless it says otherwise).
    Denied = (403, "denied", "permission_error"),
    NoRoute = (404, "no_route", "not_found_error"),
    MethodNotAllowed = (405, "method_not_allowed", "invalid_request_error"),
    // Limits.
    RateLimitExceeded = (429, "rate_limit_exceeded", "rate_limit_error"),
    TokenLimitExceeded = (429, "token_limit_exceeded", "rate_limit_error"),
    ConcurrencyLimitExceeded = (429, "concurrency_limit_exceeded", "rate_limit_error"),
    LimitStoreUnavailable = (503, "limit_store_unavailable", "upstream_error"),
    // The upstream.
    NoUpstream = (502, "no_upstream", "upstream_error"),
    UpstreamUnavailable = (502, "upstream_unavailable", "upstream_error"),
    UpstreamBusy = (503, "upstream_busy", "upstream_error"),
    /// Every target of the upstream is down by its health checks (or, on a retry, every
    /// other one): answered at once, never waited on.
    NoHealthyUpstream = (503, "no_healthy_upstream", "upstream_error"),
    UpstreamTimeout = (504, "upstream_timeout", "upstream_error"),
    /// A bug in gw.
    Internal = (500, "internal", "server_error"),
}

impl Code {
    /// The code of a decision that refused a request it could not read
    /// (`Outcome::Invalid`); `None` for a code the registry does not know (a bug).
    pub fn of_refusal(code: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GwError {
    pub status: StatusCode,
    pub message: String,
    pub code: Code,
    /// Close the connection after answering: the request's framing cannot be trusted, so
    /// nothing after it on the connection can be either.
    pub close: bool,
}

impl GwError {
    pub fn new(code: Code, message: impl Into<String>) -> GwError {
        GwError {
            status: StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            code,
            close: false,
        }
    }

    /// Answer with another status than the code's (a guard's `deny STATUS`).
    pub fn with_status(mut self, status: u16) -> GwError {
        self.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self
    }

    pub fn closing(mut self) -> GwError {
        self.close = true;
        self
    }

    /// The OpenAI `type`: the code's, or the status's when a guard chose the status.
    pub fn kind(&self) -> &'static str {
        if self.status.as_u16() == self.code.status() {
            self.code.kind()
        } else {
            kind_of_status(self.status.as_u16())
        }
    }

    pub fn to_json(&self, request_id: &str) -> String {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "code": self.code.as_str(),
                "request_id": request_id,
            }
        })
        .to_string()
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut resp = Response::new(full(self.to_json(request_id)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.close {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The OpenAI `type` of an answer with this status.
fn kind_of_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        502..=504 => "upstream_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry's `type` column follows one rule, so a guard's own status reads the same.
    #[test]
    fn every_type_is_the_one_of_its_status() {
        for code in Code::ALL {
            assert_eq!(code.kind(), kind_of_status(code.status()), "{code:?}");
        }
    }

    #[test]
    fn codes_are_unique() {
        for (i, a) in Code::ALL.iter().enumerate() {
            assert!(Code::ALL[i + 1..].iter().all(|b| a.as_str() != b.as_str()), "{a:?} twice");
        }
    }

    /// `(status, code)` pairs of README.md's error table (the `### Errors` section).
    fn readme_table() -> Vec<(u16, String)> {
        let readme = include_str!("../../README.md");
        let section = readme.split("\n### Errors\n").nth(1).expect("README.md has an Errors section");
        let section = section.split("\n#").next().unwrap_or(section);
        let mut pairs = vec![];
        for row in section.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let Some(status) = cells[1].split_whitespace().next().and_then(|s| s.parse::<u16>().ok()) else {
                continue;
            };
            for code in cells[2].split('`').skip(1).step_by(2) {
                pairs.push((status, code.to_string()));
            }
        }
        pairs
    }

    #[test]
    fn readme_error_table_matches_the_registry() {
        let table = readme_table();
        for code in Code::ALL {
            assert!(
                table.iter().any(|(s, c)| c == code.as_str() && *s == code.status()),
                "README.md's error table lacks `{}` ({})",
                code.as_str(),
                code.status()
            );
        }
        for (status, code) in &table {
            let known = Code::ALL.iter().find(|c| c.as_str() == code);
            assert!(known.is_some(), "README.md lists `{code}`, which gw does not answer");
            if let Some(known) = known {
                assert!(
                    *status == known.status() || *known == Code::Denied,
                    "README.md lists `{code}` with {status}, gw answers {}",
                    known.status()
                );
            }
        }
    }
}
