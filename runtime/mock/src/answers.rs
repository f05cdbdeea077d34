//! Answers the mock builds: JSON, OpenAI-shaped errors, 404/405.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use serde::Serialize;

use crate::body::MockBody;

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Bytes {
    match serde_json::to_vec(value) {
        Ok(v) => Bytes::from(v),
        Err(e) => {
            tracing::error!(error = %e, "mock upstream: cannot serialize a response");
            Bytes::from_static(br#"{"error":{"message":"mock upstream: serialization failed","type":"server_error","param":null,"code":null}}"#)
        }
    }
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let no_body = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut resp = Response::new(MockBody::full(if no_body { Bytes::new() } else { body }));
    *resp.status_mut() = status;
    if !no_body {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// An OpenAI error answer: `{"error":{"message","type","param":null,"code"}}`.
pub(crate) fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response<MockBody> {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    error_of_type(status, message, kind, code)
}

pub(crate) fn error_of_type(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response<MockBody> {
    let body = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    });
    json_response(status, to_json(&body))
}

pub(crate) fn injected(status: StatusCode) -> Response<MockBody> {
    let code = (status == StatusCode::TOO_MANY_REQUESTS).then_some("rate_limit_exceeded");
    error(status, &format!("mock upstream: injected status {}", status.as_u16()), code)
}

pub(crate) fn not_found(parts: &Parts) -> Response<MockBody> {
    // OpenAI's own answer for an unknown URL.
    error_of_type(
        StatusCode::NOT_FOUND,
        &format!("Unknown request URL: {} {}. Please check the URL for typos.", parts.method, parts.uri.path()),
        "invalid_request_error",
        Some("unknown_url"),
    )
}

pub(crate) fn method_not_allowed(parts: &Parts, allow: &'static str) -> Response<MockBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("mock upstream: {} {} is not supported (use {allow})", parts.method, parts.uri.path()),
        None,
    );
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
