//! The question and the answer: a `Request` as the decision sees it, and the `Decision` both
//! the decision graph and the reference evaluator return. Keeping these in one place is what
//! lets the two be compared field by field.

use std::sync::Arc;

use serde::Serialize;

use crate::lang::Builtin;
use crate::value::{Undecided, Val, INVALID_HEADER, INVALID_PATH, INVALID_QUERY};

/// The facts of one HTTP request that a decision may read. Header names are lower-case;
/// `host` is lower-case without a port; `path` has no query string.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct Request {
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// The raw body bytes, if the caller has them; read (strictly, by `ijson::read`) only when
    /// a candidate route reads it. Written as text in JSON (explain requests, traces).
    #[serde(with = "body_text")]
    pub body: Option<Vec<u8>>,
    pub client_ip: Option<String>,
    /// Names of headers whose value is not UTF-8 text (kept lossily in `headers`). A guard
    /// that reads one cannot know what the upstream reads: `header_fact` is undecided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_headers: Vec<String>,
    /// Names of query parameters whose value is not plain text once decoded (a malformed `%`
    /// escape, or bytes that are not UTF-8).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_query: Vec<String>,
    /// The request's time (Unix seconds) for JWT `exp`/`nbf`; None: the wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<u64>,
    /// Credentials already verified for this request (see [`AuthMemo`]).
    #[serde(skip)]
    pub auth_memo: AuthMemo,
}

/// The credential checks already made for one request: a key hashed, a token verified or a
/// password checked once, though both `wants_body` and `decide` (and every candidate route
/// naming the same set) ask. A clone starts empty, so a memo never passes from one request to
/// another; equality ignores it. Debug output names only how many entries it holds: it keeps
/// the credentials it was asked about, as the request's own headers do.
#[derive(Default)]
pub struct AuthMemo(std::sync::Mutex<Vec<Checked>>);

/// (credential set, credential, the identity it proved or None).
type Checked = (u64, String, Option<Arc<Identity>>);

impl AuthMemo {
    /// The outcome for `credential` checked against the set `set`, computed once.
    pub fn get_or_check(
        &self,
        set: u64,
        credential: &str,
        check: impl FnOnce() -> Option<Identity>,
    ) -> Option<Arc<Identity>> {
        let found = {
            let memo = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            memo.iter().find(|(s, c, _)| *s == set && c == credential).map(|(_, _, id)| id.clone())
        };
        if let Some(outcome) = found {
            return outcome;
        }
        let outcome = check().map(Arc::new);
        let mut memo = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        memo.push((set, credential.to_string(), outcome.clone()));
        outcome
    }
}

impl Clone for AuthMemo {
    fn clone(&self) -> AuthMemo {
        AuthMemo::default()
    }
}

impl PartialEq for AuthMemo {
    fn eq(&self, _: &AuthMemo) -> bool {
        true
    }
}

impl std::fmt::Debug for AuthMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "AuthMemo({n} checked)")
    }
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        let mut req = Request { method: method.to_string(), ..Request::default() };
        match path.split_once('?') {
            Some((p, q)) => {
                req.path = p.to_string();
                req.set_query(q);
            }
            None => req.path = path.to_string(),
        }
        req
    }

    /// Add a header from its bytes: a value that is not UTF-8 is kept lossily and noted.
    pub fn push_header_bytes(&mut self, name: &str, value: &[u8]) {
        let text = match std::str::from_utf8(value) {
            Ok(t) => t.to_string(),
            Err(_) => {
                self.unreadable_headers.push(name.to_ascii_lowercase());
                String::from_utf8_lossy(value).into_owned()
            }
        };
        self.headers.push((name.to_string(), text));
    }

    /// Set the query from the raw query string, noting values that do not decode cleanly.
    pub fn set_query(&mut self, raw: &str) {
        for part in raw.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (name, _) = percent_decode(k);
            let (value, clean) = percent_decode(v);
            if !clean {
                self.unreadable_query.push(name.clone());
            }
            self.query.push((name, value));
        }
    }

    /// A header as a guard reads it: missing, its text, or undecided when its value is not
    /// UTF-8 or the header appears more than once (readers take the first, the last, or join).
    pub fn header_fact(&self, name: &str) -> Val {
        let mut values = self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let Some((_, first)) = values.next() else { return Val::Missing };
        let why = if values.next().is_some() {
            "appears more than once"
        } else if self.unreadable_headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            "is not UTF-8 text"
        } else {
            return Val::Str(first.clone());
        };
        Val::Error(Undecided {
            code: INVALID_HEADER,
            message: format!("header `{name}`, which the policy reads, {why}"),
        })
    }

    /// A query parameter as a guard reads it, with the same rules as `header_fact`.
    pub fn query_fact(&self, name: &str) -> Val {
        let mut values = self.query.iter().filter(|(k, _)| k == name);
        let Some((_, first)) = values.next() else { return Val::Missing };
        let why = if values.next().is_some() {
            "appears more than once"
        } else if self.unreadable_query.iter().any(|q| q == name) {
            "is not plain text once decoded (a malformed `%` escape, or not UTF-8)"
        } else {
            return Val::Str(first.clone());
        };
        Val::Error(Undecided {
            code: INVALID_QUERY,
            message: format!("query parameter `{name}`, which the policy reads, {why}"),
        })
    }

    /// Set the body from text.
    pub fn with_body(mut self, text: impl Into<String>) -> Request {
        self.body = Some(text.into().into_bytes());
        self
    }

    /// The time JWTs are checked at: `now`, else the wall clock.
    pub fn unix_now(&self) -> u64 {
        self.now.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The `Host` to route on: the explicit field, else the header, lower-cased, port removed.
    pub fn routing_host(&self) -> String {
        let raw = if self.host.is_empty() { self.header("host").unwrap_or("") } else { &self.host };
        normalize_host(raw)
    }
}

/// The body as text in JSON: the bytes, lossily decoded when shown.
mod body_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(body: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        body.as_ref().map(|b| String::from_utf8_lossy(b)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(String::into_bytes))
    }
}

pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        raw.split_once(']').map(|(h, _)| format!("{h}]")).unwrap_or_else(|| raw.to_string())
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
            _ => raw.to_string(),
        }
    };
    without_port.to_ascii_lowercase()
}

/// `a=1&b=x%20y` → pairs, percent-decoded ( `+` is a space).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    let mut req = Request::default();
    req.set_query(q);
    req.query
}

/// A path, or a segment a `{param}` captured, as a guard reads it: percent-decoded as the
/// upstream's framework decodes it (`/%61dmin` is `/admin`; `+` stays `+`); undecided when an
/// escape is malformed or the bytes are not UTF-8. Routes match the path `crate::path` put in
/// normal form.
pub fn path_fact(raw: &str) -> Val {
    match decode(raw, false) {
        (text, true) => Val::Str(text),
        (_, false) => Val::Error(Undecided {
            code: INVALID_PATH,
            message: "the path, which the policy reads, has a malformed `%` escape or is not UTF-8 once decoded"
                .to_string(),
        }),
    }
}

/// `percent_decode` for a query (`+` is a space).
fn percent_decode(s: &str) -> (String, bool) {
    decode(s, true)
}

/// Decode `%XX` (and `+` as a space in a query); false when a `%` is not followed by two hex
/// digits or the bytes are not UTF-8 (the text is then lossy).
fn decode(s: &str, plus_is_space: bool) -> (String, bool) {
    let mut clean = true;
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                // Two hex digits exactly (`from_str_radix` alone would take `%+1`).
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => {
                        clean = false;
                        out.push(b'%');
                    }
                }
            }
            b'%' => {
                clean = false;
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => (s, clean),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), false),
    }
}

/// Who the request authenticated as. Never holds the key, token or password itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The credential set that accepted the request (key set, `jwt` or `basic` set).
    pub keys: String,
    pub tenant: String,
    /// The key's name, the token's `sub`, or the basic-auth user.
    pub key_name: String,
    /// The verified token's claims (a `jwt` set only). Not serialized: explain output and
    /// logs name the subject, not the token's content.
    #[serde(skip)]
    pub claims: Option<std::sync::Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// The message of an `allow` guard's refusal when the policy gives none.
pub const DEFAULT_ALLOW_MESSAGE: &str = "request not allowed by policy";

/// The message of a 401 when no credential was sent.
pub const MISSING_KEY: &str = "missing API key";
/// The message of a 401 when the credential is not in the route's key set.
pub const INVALID_KEY: &str = "invalid API key";
/// The `www-authenticate` of a 401 on a route that accepts basic auth (browsers then ask).
pub const BASIC_CHALLENGE: &str = "Basic realm=\"gw\", charset=\"UTF-8\"";

/// The 401 messages of a route that also accepts JWTs or basic auth.
pub const MISSING_CREDENTIALS: &str = "missing credentials";
pub const INVALID_CREDENTIALS: &str = "invalid credentials";

/// The 401 messages of an `auth` (missing, invalid): the policy's `message` for both when it
/// sets one; otherwise API-key wording when only key sets are tried.
pub fn auth_messages(message: Option<&str>, keys_only: bool) -> (String, String) {
    match message {
        Some(m) => (m.to_string(), m.to_string()),
        None if keys_only => (MISSING_KEY.to_string(), INVALID_KEY.to_string()),
        None => (MISSING_CREDENTIALS.to_string(), INVALID_CREDENTIALS.to_string()),
    }
}

/// The trace line of a refusal made before the body is read.
pub fn refused_before_body_note(message: &str) -> String {
    format!("{message}: every route the request could select refuses the credential (decided before the body is read)")
}

/// What happens to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// No route matches: 404.
    NoRoute,
    /// A route matches the path but not the method: 405 with `Allow`.
    MethodNotAllowed { allowed: Vec<String> },
    /// Missing or unknown credential: 401.
    Unauthorized { message: String },
    /// A CORS preflight answered by gw: 204 when allowed, else 403 with the reason.
    Preflight { allowed: bool, message: String },
    /// A guard refused the request.
    Denied { status: u16, message: String },
    /// The request cannot be decided as sent: 400 with `code` (`invalid_body`: a body the
    /// strict reader refuses, or a body value of a type the policy's comparison cannot use;
    /// `invalid_number`: `number()` of text that is not a plain decimal number), or 415 with
    /// `unsupported_content_encoding` (a compressed body on a route that reads the body).
    Invalid { code: &'static str, message: String },
    /// Send it to this upstream (by name).
    Forward { upstream: String },
    /// Answer with a static response.
    Respond { status: u16 },
    /// Answer with a built-in handler.
    Serve { builtin: Builtin },
}

impl Outcome {
    /// The status the client gets, taking a forwarded request as answered with 200.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::NoRoute => 404,
            Outcome::MethodNotAllowed { .. } => 405,
            Outcome::Unauthorized { .. } => 401,
            Outcome::Preflight { allowed: true, .. } => 204,
            Outcome::Preflight { allowed: false, .. } => 403,
            Outcome::Denied { status, .. } => *status,
            Outcome::Invalid { code, .. } if *code == crate::value::UNSUPPORTED_CONTENT_ENCODING => 415,
            Outcome::Invalid { .. } => 400,
            Outcome::Forward { .. } | Outcome::Serve { .. } => 200,
            Outcome::Respond { status } => *status,
        }
    }
}

/// A limit that applies to this request, with the counter key it is charged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedLimit {
    /// Index into the graph's limit table.
    pub limit: usize,
    /// The stable identity of the limit (survives reloads while the limit is unchanged).
    pub id: Arc<str>,
    /// The counter within the limit: the key name, tenant, header value, ...
    pub key: String,
}

/// One step of the explanation of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceStep {
    pub step: String,
    pub detail: String,
}

/// The answer to "what does the policy do with this request, and why".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The chosen route's name.
    pub route: Option<String>,
    pub route_index: Option<usize>,
    /// Shared: the decision, its explain trace, the audit record and the limits all name it.
    pub identity: Option<Arc<Identity>>,
    /// Path parameters captured by the route's pattern, in pattern order.
    pub params: Vec<(String, String)>,
    pub limits: Vec<AppliedLimit>,
    pub trace: Vec<TraceStep>,
    /// The body as deciding read it, when it did (strictly, `ijson`).
    #[serde(skip)]
    pub body: ReadBody,
}

/// The request body as the decision read it, kept so that later stages (token counting) read
/// the very value the guards read instead of parsing the bytes again. A by-product of
/// deciding, not part of what was decided: equality ignores it.
#[derive(Clone, Default)]
pub struct ReadBody(pub Option<std::sync::Arc<serde_json::Value>>);

impl PartialEq for ReadBody {
    fn eq(&self, _: &ReadBody) -> bool {
        true
    }
}

impl Eq for ReadBody {}

impl std::fmt::Debug for ReadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ReadBody(read)" } else { "ReadBody(not read)" })
    }
}

impl Decision {
    /// The decision for a request that cannot be decided as sent (400).
    pub fn invalid(u: Undecided) -> Decision {
        Decision::new(Outcome::Invalid { code: u.code, message: u.message })
    }

    pub fn new(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            route: None,
            route_index: None,
            identity: None,
            params: vec![],
            limits: vec![],
            trace: vec![],
            body: ReadBody::default(),
        }
    }

    /// Equal in everything but the wording of the trace: what the differential tests compare.
    pub fn same_decision(&self, other: &Decision) -> bool {
        self.outcome == other.outcome
            && self.route == other.route
            && self.identity == other.identity
            && self.params == other.params
            && self.limits == other.limits
    }
}
