//! Text templates: the values `set header` and `respond` build from literals, `env(...)`
//! values, request facts and what only the gateway knows (`request_id`, `trace_id`). A
//! template is rendered once the request is decided, from the request and its `Decision`
//! (identity, path parameters), so the graph and the reference evaluator, which already agree
//! on the decision, need not agree on anything new. A new fact slots in by its arm in `fact`.

use serde::Serialize;

use crate::graph::Resolved;
use crate::lang::{Fact, GatewayFact};
use crate::request::{path_fact, Decision, Request};
use crate::value::{Undecided, Val, INVALID_HEADER};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum TextPart {
    /// Literal text, or an `env(...)` value filled in at load (redacted when shown).
    Lit(Resolved),
    #[serde(serialize_with = "fact_name")]
    Fact(Fact),
    Gateway(GatewayFact),
}

fn fact_name<S: serde::Serializer>(f: &Fact, s: S) -> Result<S::Ok, S::Error> {
    format!("{f:?}").serialize(s)
}

/// Literal and fact parts joined, as `"team-" + tenant` reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Template {
    pub parts: Vec<TextPart>,
}

/// What a template may read about one request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub request: &'a Request,
    pub decision: &'a Decision,
    pub request_id: &'a str,
    pub trace_id: &'a str,
}

/// A rendered template: its text, or absent because a part is (an unauthenticated request's
/// `tenant`, a header the client did not send, an unset env var).
pub type Rendered = Result<Option<String>, Undecided>;

impl Template {
    /// The text, or `Ok(None)` when a part is absent; `Err` when a fact cannot be read as one
    /// text (a header sent twice, a malformed `%` escape): the request is refused with it.
    pub fn render(&self, facts: &Facts<'_>) -> Rendered {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TextPart::Lit(r) => match r.get() {
                    Some(v) => out.push_str(v),
                    None => return Ok(None),
                },
                TextPart::Gateway(GatewayFact::RequestId) => out.push_str(facts.request_id),
                TextPart::Gateway(GatewayFact::TraceId) => out.push_str(facts.trace_id),
                TextPart::Fact(f) => match fact(f, facts) {
                    Val::Missing => return Ok(None),
                    Val::Error(u) => return Err(u),
                    v => out.push_str(&v.key_string()),
                },
            }
        }
        Ok(Some(out))
    }

    /// As `render`, for a header `name`: a value with a control character (CR, LF, NUL, ...),
    /// which would split or end the header, is refused, never sent.
    pub fn render_header(&self, name: &str, facts: &Facts<'_>) -> Rendered {
        let Some(text) = self.render(facts)? else { return Ok(None) };
        match text.bytes().find(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
            None => Ok(Some(text)),
            Some(b) => Err(Undecided {
                code: INVALID_HEADER,
                message: format!(
                    "header `{name}`, which the route sets from the request, would hold the control character 0x{b:02x}"
                ),
            }),
        }
    }

    /// The template reads the request (a fact or a gateway fact), not only literals.
    pub fn reads_request(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, TextPart::Lit(_)))
    }
}

/// A `respond` JSON body whose values may be templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum JsonBody {
    Scalar(serde_json::Value),
    Text(Template),
    Array(Vec<JsonBody>),
    Object(Vec<(String, JsonBody)>),
}

impl JsonBody {
    /// The JSON with each template rendered to a string (serialized, so escaped as JSON needs)
    /// or to `null` when absent.
    pub fn render(&self, facts: &Facts<'_>) -> Result<serde_json::Value, Undecided> {
        use serde_json::Value as J;
        Ok(match self {
            JsonBody::Scalar(v) => v.clone(),
            JsonBody::Text(t) => t.render(facts)?.map(J::String).unwrap_or(J::Null),
            JsonBody::Array(items) => J::Array(items.iter().map(|i| i.render(facts)).collect::<Result<_, _>>()?),
            JsonBody::Object(kv) => {
                J::Object(kv.iter().map(|(k, v)| Ok((k.clone(), v.render(facts)?))).collect::<Result<_, _>>()?)
            }
        })
    }
}

/// A `respond` body: fixed bytes, text or JSON with templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum BodyTemplate {
    #[serde(serialize_with = "bytes_as_text")]
    Fixed(Vec<u8>),
    Text(Template),
    Json(JsonBody),
}

fn bytes_as_text<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    String::from_utf8_lossy(b).serialize(s)
}

impl BodyTemplate {
    /// The body's bytes for one request. Text with an absent part is empty.
    pub fn render(&self, facts: &Facts<'_>) -> Result<Vec<u8>, Undecided> {
        Ok(match self {
            BodyTemplate::Fixed(b) => b.clone(),
            BodyTemplate::Text(t) => t.render(facts)?.unwrap_or_default().into_bytes(),
            BodyTemplate::Json(j) => j.render(facts)?.to_string().into_bytes(),
        })
    }
}

/// A fact as a template reads it, with the rules a guard reads it by.
fn fact(f: &Fact, facts: &Facts<'_>) -> Val {
    let (req, d) = (facts.request, facts.decision);
    let text = |v: Option<&str>| v.map(|v| Val::Str(v.to_string())).unwrap_or(Val::Missing);
    match f {
        Fact::Method => Val::Str(req.method.clone()),
        Fact::Path => path_fact(&req.path),
        Fact::Host => Val::Str(req.routing_host()),
        Fact::ClientIp => text(req.client_ip.as_deref()),
        Fact::Tenant => text(d.identity.as_ref().map(|i| i.tenant.as_str())),
        Fact::Key => text(d.identity.as_ref().map(|i| i.key_name.as_str())),
        Fact::Header(h) => req.header_fact(h),
        Fact::Query(q) => req.query_fact(q),
        Fact::Param(p) => match d.params.iter().find(|(k, _)| k == p) {
            Some((_, v)) => path_fact(v),
            None => Val::Missing,
        },
        Fact::Claim(path) => crate::jwt::claim_fact(d.identity.as_ref().and_then(|i| i.claims.as_deref()), path),
        // `check` refuses body facts in a template (the body may be streamed, never read).
        Fact::Body(_) => Val::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Identity, Outcome};

    fn lit(s: &str) -> TextPart {
        TextPart::Lit(Resolved { value: Some(s.to_string()), secret: false, env: vec![] })
    }

    fn decided() -> Decision {
        let mut d = Decision::new(Outcome::Forward { upstream: "u".into() });
        d.identity = Some(std::sync::Arc::new(Identity {
            keys: "k".into(),
            tenant: "acme".into(),
            key_name: "ci".into(),
            claims: None,
        }));
        d.params = vec![("id".into(), "a%0d%0aevil".into())];
        d
    }

    #[test]
    fn facts_and_gateway_facts_are_joined() {
        let mut req = Request::new("GET", "/x");
        req.headers.push(("x-team".into(), "blue".into()));
        let d = decided();
        let facts = Facts { request: &req, decision: &d, request_id: "rid", trace_id: "tid" };
        let t = Template {
            parts: vec![
                lit("t="),
                TextPart::Fact(Fact::Tenant),
                lit(";"),
                TextPart::Fact(Fact::Header("x-team".into())),
                TextPart::Gateway(GatewayFact::RequestId),
                TextPart::Gateway(GatewayFact::TraceId),
            ],
        };
        assert_eq!(t.render_header("x", &facts), Ok(Some("t=acme;bluerid tid".replace(' ', ""))));
        let absent = Template { parts: vec![lit("q="), TextPart::Fact(Fact::Query("nope".into()))] };
        assert_eq!(absent.render_header("x", &facts), Ok(None));
    }

    #[test]
    fn a_json_body_escapes_what_the_request_puts_in_it_and_absent_is_null() {
        let mut req = Request::new("GET", "/x?note=%22%5C%0A%7D");
        req.headers.push(("x-a".into(), "a".into()));
        let d = decided();
        let facts = Facts { request: &req, decision: &d, request_id: "r", trace_id: "t" };
        let body = BodyTemplate::Json(JsonBody::Object(vec![
            ("note".into(), JsonBody::Text(Template { parts: vec![TextPart::Fact(Fact::Query("note".into()))] })),
            ("none".into(), JsonBody::Text(Template { parts: vec![TextPart::Fact(Fact::Query("nope".into()))] })),
            ("n".into(), JsonBody::Array(vec![JsonBody::Scalar(serde_json::json!(1))])),
        ]));
        let bytes = body.render(&facts).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, serde_json::json!({"note": "\"\\\n}", "none": null, "n": [1]}));
    }

    #[test]
    fn a_control_character_from_the_request_is_refused() {
        let req = Request::new("GET", "/x");
        let d = decided();
        let facts = Facts { request: &req, decision: &d, request_id: "r", trace_id: "t" };
        let t = Template { parts: vec![TextPart::Fact(Fact::Param("id".into()))] };
        assert_eq!(t.render(&facts), Ok(Some("a\r\nevil".to_string())));
        let err = t.render_header("x-id", &facts).unwrap_err();
        assert_eq!(err.code, INVALID_HEADER);
        assert!(err.message.contains("0x0d"), "{}", err.message);
    }
}
