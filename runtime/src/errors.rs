//! The one error shape every gateway-made answer uses, OpenAI-compatible so client SDKs
//! surface it: `{"error": {"message", "type", "code", "request_id"}}`. Messages are fixed
//! texts or policy-authored ones: never internal addresses, upstream errors or secrets.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, Body};

/// Why the gateway answered instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GwError {
    pub status: StatusCode,
    pub message: String,
    /// A stable machine-readable code: `no_route`, `invalid_api_key`, ...
    pub code: &'static str,
    /// Close the connection after answering: the request's framing cannot be trusted, so
    /// nothing after it on the connection can be either.
    pub close: bool,
}

impl GwError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> GwError {
        GwError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            code,
            close: false,
        }
    }

    pub fn closing(mut self) -> GwError {
        self.close = true;
        self
    }

    /// The OpenAI `type` for the status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            502..=504 => "upstream_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn to_json(&self, request_id: &str) -> String {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "code": self.code,
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

pub fn bad_request(code: &'static str, message: impl Into<String>) -> GwError {
    GwError::new(400, code, message)
}
