//! The executor: route selection, auth, guards, limits and action for one request.

use std::cell::OnceCell;
use std::sync::Arc;

use crate::cors;
use crate::ijson::{self, BodyError};
use crate::lang::{Fact, Func, PathSeg};
use crate::request::{
    refused_before_body_note, AppliedLimit, Decision, Identity, Outcome, ReadBody, Request, TraceStep,
};
use crate::value::{self, Undecided, Val};

use super::*;

/// The JSON body, read (strictly) on first use only.
struct Body<'r> {
    req: &'r Request,
    parsed: OnceCell<Result<Option<serde_json::Value>, BodyError>>,
}

impl Body<'_> {
    fn get(&self) -> &Result<Option<serde_json::Value>, BodyError> {
        self.parsed.get_or_init(|| ijson::read_request(self.req))
    }

    /// A body field as a value: missing without a body, undecided for a refused body.
    fn field(&self, path: &[PathSeg]) -> Val {
        match self.get() {
            Ok(Some(b)) => value::body_lookup(b, path).map(Val::from_json).unwrap_or(Val::Missing),
            Ok(None) => Val::Missing,
            Err(e) => Val::Error(e.clone()),
        }
    }

    /// A body field as `exists` reads it: `field` without copying the field's value (a present
    /// field is `Null`, which exists, as every value `field` returns for it does).
    fn presence(&self, path: &[PathSeg]) -> Val {
        match self.get() {
            Ok(Some(b)) => match value::body_lookup(b, path) {
                None => Val::Missing,
                // `field` reads a number no double holds as missing (the strict reader admits none).
                Some(serde_json::Value::Number(n)) if n.as_f64().is_none() => Val::Missing,
                Some(_) => Val::Null,
            },
            Ok(None) => Val::Missing,
            Err(e) => Val::Error(e.clone()),
        }
    }

    /// The number of items of a body field that is an array or object; None for anything
    /// else (read the long way).
    fn size(&self, path: &[PathSeg]) -> Option<usize> {
        match value::body_lookup(self.get().as_ref().ok()?.as_ref()?, path)? {
            serde_json::Value::Array(a) => Some(a.len()),
            serde_json::Value::Object(m) => Some(m.len()),
            _ => None,
        }
    }
}

/// What an expression can see.
struct Ctx<'r> {
    req: &'r Request,
    host: &'r str,
    params: &'r [(String, String)],
    identity: Option<&'r Identity>,
    body: &'r Body<'r>,
}

/// Values of shared nodes already computed for this request. Small: only nodes evaluated
/// for this request's candidates land here.
#[derive(Default)]
struct Memo {
    entries: Vec<(NodeId, bool, Val)>,
}

impl Memo {
    fn get(&self, id: NodeId) -> Option<&Val> {
        self.entries.iter().find(|(n, _, _)| *n == id).map(|(_, _, v)| v)
    }

    /// Forget values that depend on params or identity (a new candidate, or after auth).
    fn new_context(&mut self) {
        self.entries.retain(|(_, contextual, _)| !contextual);
    }
}

impl Graph {
    /// Whether deciding `req` may read its body: some route the request's method, host and
    /// path select reads a body field or counts tokens. The runtime buffers the body (up to
    /// `max_body`) only then.
    /// A request every route could select refuses the credential of is refused without its
    /// body being read (see `refused_before_body`), so the body is not wanted then either.
    pub fn wants_body(&self, req: &Request) -> bool {
        let host = routing_host(req);
        let hosts = self.router.host_ids(&host);
        let bit = method_bit(&req.method);
        let candidates = self.router.candidates(&self.rt, &req.path, &hosts);
        let reads = candidates.iter().any(|&i| {
            let i = i as usize;
            self.rt.get(i).is_some_and(|r| r.method_ok(bit))
                && self.routes.get(i).is_some_and(|r| r.reads_body || r.counts_tokens)
        });
        reads && self.refused_before_body(req, &candidates, false).is_none()
    }

    /// Whether deciding `req` may run a slow password hash: a `basic` set that a route its
    /// method, host and path select tries has not checked its credential before (checked
    /// pairs, right or wrong, are remembered). The runtime then calls `check_passwords` off its
    /// event loop.
    pub fn needs_password_check(&self, req: &Request) -> bool {
        if self.basicsets.is_empty() || req.header("authorization").is_none() {
            return false;
        }
        self.basic_attempts(req).into_iter().any(|(m, credential)| {
            let SetRef::Basic(i) = m.set else { return false };
            let Some(set) = self.basicsets.get(i) else { return false };
            crate::basic::basic_credential(credential).is_some_and(|(user, pw)| !set.htpasswd.remembers(&user, &pw))
        })
    }

    /// Check `req`'s basic credential against every `basic` set that a route its method, host
    /// and path select tries. The outcomes go to the request's auth memo, so `wants_body` and
    /// `decide` then answer without hashing; it changes no decision.
    pub fn check_passwords(&self, req: &Request) {
        for (m, credential) in self.basic_attempts(req) {
            self.verify(m, credential, req);
        }
    }

    /// The `basic` methods of the routes `req`'s method, host and path select, each with the
    /// credential the request presents to it.
    fn basic_attempts<'g, 'r>(&'g self, req: &'r Request) -> Vec<(&'g AuthMethodRt, &'r str)> {
        let host = routing_host(req);
        let hosts = self.router.host_ids(&host);
        let bit = method_bit(&req.method);
        let mut attempts = vec![];
        for &index in &self.router.candidates(&self.rt, &req.path, &hosts) {
            let Some(auth) = self.rt.get(index as usize).filter(|r| r.method_ok(bit)).and_then(|r| r.auth.as_ref())
            else {
                continue;
            };
            for m in auth.methods.iter().filter(|m| matches!(m.set, SetRef::Basic(_))) {
                if let Some(credential) = m.credential(req) {
                    attempts.push((m, credential));
                }
            }
        }
        attempts
    }

    /// `eval::refused_before_body`: the 401 every route the request could select (whatever
    /// its body) gives, if they all refuse its credential.
    fn refused_before_body(&self, req: &Request, candidates: &[u32], traced: bool) -> Option<Decision> {
        let bit = method_bit(&req.method);
        // A preflight to a CORS route is answered without credentials.
        if cors::is_preflight(req)
            && candidates.iter().any(|&i| self.routes.get(i as usize).is_some_and(|r| r.cors.is_some()))
        {
            return None;
        }
        let mut refusals: Vec<(usize, bool, &str)> = vec![];
        for &index in candidates {
            let index = index as usize;
            let Some(route) = self.rt.get(index) else { continue };
            if !route.method_ok(bit) {
                continue;
            }
            let auth = route.auth.as_ref()?;
            match self.authenticate(auth, req) {
                Ok(_) => return None,
                Err((invalid, message)) => refusals.push((index, invalid, message)),
            }
            if route.cond.is_none() {
                break;
            }
        }
        let &(index, _, message) = refusals.iter().find(|r| r.1).or(refusals.first())?;
        let route = self.rt.get(index)?;
        let mut d = Decision::new(Outcome::Unauthorized { message: message.to_string() });
        let mut trace = Trace::new(traced);
        trace.note("auth", || refused_before_body_note(message));
        d.trace = trace.into_steps();
        d.route = Some(route.name.clone());
        d.route_index = Some(index);
        d.params = route.path.params_of_match(&req.path);
        Some(d)
    }

    /// The key of `hash(EXPR)` balancing for a decided request (None if the upstream does
    /// not balance by hash).
    pub fn balance_key(&self, upstream: usize, req: &Request, decision: &Decision) -> Option<String> {
        self.upstream_key(*self.balance_keys.get(upstream)?, req, decision)
    }

    /// The value of the upstream's `affinity EXPR` for this request, None when it has none
    /// or the value is absent.
    pub fn affinity_key(&self, upstream: usize, req: &Request, decision: &Decision) -> Option<String> {
        let node = (*self.affinity_keys.get(upstream)?)?;
        let host = req.routing_host();
        let body = Body { req, parsed: OnceCell::new() };
        let cx =
            Ctx { req, host: &host, params: &decision.params, identity: decision.identity.as_deref(), body: &body };
        match self.eval(node, &cx, &mut Memo::default()) {
            crate::value::Val::Missing | crate::value::Val::Null | crate::value::Val::Error(_) => None,
            v => Some(v.key_string()),
        }
    }

    fn upstream_key(&self, node: Option<NodeId>, req: &Request, decision: &Decision) -> Option<String> {
        let node = node?;
        let host = req.routing_host();
        let body = Body { req, parsed: OnceCell::new() };
        let cx =
            Ctx { req, host: &host, params: &decision.params, identity: decision.identity.as_deref(), body: &body };
        Some(self.eval(node, &cx, &mut Memo::default()).key_string())
    }

    /// Decide what the policy does with `req`: exactly what `eval::decide` answers. No
    /// explanation is built (`Decision::trace` is empty): this is the proxy's path.
    pub fn decide(&self, req: &Request) -> Decision {
        self.decide_with(req, false)
    }

    /// `decide`, with the explanation of each step in `Decision::trace` (`/admin/explain`,
    /// gw-check, policy tests).
    pub fn decide_traced(&self, req: &Request) -> Decision {
        self.decide_with(req, true)
    }

    fn decide_with(&self, req: &Request, traced: bool) -> Decision {
        let host = routing_host(req);
        let host: &str = &host;
        let hosts = self.router.host_ids(host);
        let candidates = self.router.candidates(&self.rt, &req.path, &hosts);
        let body = Body { req, parsed: OnceCell::new() };
        let bit = method_bit(&req.method);
        let mut trace = Trace::new(traced);
        let mut allowed: Vec<String> = vec![];
        let mut memo = Memo::default();
        let preflight = cors::is_preflight(req)
            .then(|| method_bit(req.header("access-control-request-method").unwrap_or("").trim()));

        for &index in &candidates {
            let index = index as usize;
            let Some(route) = self.rt.get(index) else { continue };
            if let (Some(asked), Some(policy)) = (preflight, self.routes.get(index).and_then(|r| r.cors.as_ref())) {
                if route.method_ok(asked) || route.method_ok(bit) {
                    let (allowed, message) = match policy.check_preflight(req) {
                        Ok(()) => (true, String::new()),
                        Err(m) => (false, m),
                    };
                    trace.note("route", || cat(&["`", &route.name, "` answers the CORS preflight"]));
                    let mut d = Decision::new(Outcome::Preflight { allowed, message });
                    d.route = Some(route.name.clone());
                    d.route_index = Some(index);
                    d.params = route.path.params_of_match(&req.path);
                    d.trace = trace.into_steps();
                    return d;
                }
            }
            if !route.method_ok(bit) {
                for m in &route.methods {
                    if !allowed.contains(m) {
                        allowed.push(m.clone());
                    }
                }
                continue;
            }
            let params = route.path.params_of_match(&req.path);
            let mut undecided = None;
            if let Some(cond) = route.cond {
                memo.new_context();
                let cx = Ctx { req, host, params: &params, identity: None, body: &body };
                match self.eval(cond, &cx, &mut memo).truth() {
                    Ok(true) => {}
                    Ok(false) => {
                        trace.note("route", || {
                            cat(&["`", &route.name, "` matches the path but its condition is false"])
                        });
                        continue;
                    }
                    Err(u) => undecided = Some(u),
                }
            }
            let mut d = match undecided {
                Some(u) => {
                    trace.note("route", || cat(&["`", &route.name, "`'s condition cannot be decided: ", &u.message]));
                    Decision::invalid(u)
                }
                None => {
                    trace.note("route", || cat(&["`", &route.name, "` matches"]));
                    self.decide_route(index, route, req, host, &params, &body, &mut memo, &mut trace)
                }
            };
            // Only a refusing route can be overruled by the refusal of all candidates (a
            // credential every candidate refuses is refused whatever the body).
            if matches!(d.outcome, Outcome::Unauthorized { .. } | Outcome::Invalid { .. }) {
                if let Some(refused) = self.refused_before_body(req, &candidates, traced) {
                    return refused;
                }
            }
            if body.parsed.get().is_some() {
                trace.note("body", || body_note(&body));
            }
            d.route = Some(route.name.clone());
            d.route_index = Some(index);
            d.params = params;
            d.trace = trace.into_steps();
            d.body = ReadBody(body.parsed.into_inner().and_then(Result::ok).flatten().map(std::sync::Arc::new));
            return d;
        }
        if let Some(refused) = self.refused_before_body(req, &candidates, traced) {
            return refused;
        }
        if body.parsed.get().is_some() {
            trace.note("body", || body_note(&body));
        }
        let mut d = if allowed.is_empty() {
            trace.note("route", || "no route matches".to_string());
            Decision::new(Outcome::NoRoute)
        } else {
            trace.note("route", || format!("the path matches routes for {} only", allowed.join(", ")));
            Decision::new(Outcome::MethodNotAllowed { allowed })
        };
        d.trace = trace.into_steps();
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_route(
        &self,
        index: usize,
        route: &RouteRt,
        req: &Request,
        host: &str,
        params: &[(String, String)],
        body: &Body<'_>,
        memo: &mut Memo,
        trace: &mut Trace,
    ) -> Decision {
        let mut identity = None;
        if let Some(auth) = &route.auth {
            match self.authenticate(auth, req) {
                Ok(None) => trace.note("auth", || "no credential; auth is optional".to_string()),
                Err((_, message)) => {
                    trace.note("auth", || message.to_string());
                    return Decision::new(Outcome::Unauthorized { message: message.to_string() });
                }
                Ok(Some(id)) => {
                    trace
                        .note("auth", || cat(&["`", &id.key_name, "` of `", &id.keys, "`, tenant `", &id.tenant, "`"]));
                    identity = Some(id);
                }
            }
            memo.new_context();
        }
        let cx = Ctx { req, host, params, identity: identity.as_deref(), body };
        let undecided = |trace: &mut Trace, what: &'static str, u: Undecided| {
            trace.note(what, || cat(&["cannot be decided: ", &u.message]));
            let mut d = Decision::invalid(u);
            d.identity = identity.clone();
            d
        };

        // A route whose decision reads the body takes only a body the strict reader accepts.
        if self.routes.get(index).is_some_and(|r| r.reads_body || r.counts_tokens) {
            if let Err(e) = body.get() {
                return undecided(trace, "body", e.clone());
            }
        }

        for (i, g) in route.guards.iter().enumerate() {
            match self.eval(g.cond, &cx, memo).truth() {
                Err(u) => return undecided(trace, "guard", u),
                Ok(holds) if holds == g.refuse_when => {
                    trace.note("guard", || format!("guard {} refused the request with {}", i + 1, g.status));
                    let mut d = Decision::new(Outcome::Denied { status: g.status, message: g.message.clone() });
                    d.identity = identity;
                    return d;
                }
                Ok(_) => {}
            }
        }

        let mut applied = vec![];
        for l in &route.limits {
            if let Some(c) = l.cond {
                match self.eval(c, &cx, memo).truth() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(u) => return undecided(trace, "limit", u),
                }
            }
            match &l.model {
                ModelRt::None => {}
                ModelRt::Never => continue,
                ModelRt::Regex(re) => match value::regex_match(re, &body.field(&self.model_path)).truth() {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(u) => return undecided(trace, "limit", u),
                },
            }
            let key = match self.limit_key(&l.key, &cx, memo) {
                Ok(k) => k,
                Err(u) => return undecided(trace, "limit", u),
            };
            if let Some(t) = l.table {
                applied.push(AppliedLimit { limit: t, id: l.id.clone(), key });
            }
        }
        if let Some(id) = &identity {
            let ls = self.tenant_limits.get(&id.tenant).unwrap_or(&self.default_tenant_limits);
            for (t, lid) in ls {
                applied.push(AppliedLimit { limit: *t, id: lid.clone(), key: id.tenant.clone() });
            }
        }
        for l in &applied {
            trace.note("limit", || cat(&[&l.id, " keyed by `", &l.key, "`"]));
        }
        trace.note("action", || action_note(&route.outcome));
        let mut d = Decision::new(route.outcome.clone());
        d.identity = identity;
        d.limits = applied;
        d
    }

    /// The route's credential sets in order: the identity of the first that accepts the
    /// request, None when none found a credential and auth is optional, else the refusal
    /// (whether a credential was presented, and the message).
    fn authenticate<'a>(&self, auth: &'a AuthRt, req: &Request) -> Result<Option<Arc<Identity>>, (bool, &'a str)> {
        let mut presented = false;
        for m in &auth.methods {
            let Some(credential) = m.credential(req) else { continue };
            presented = true;
            if let Some(id) = self.verify(m, credential, req) {
                return Ok(Some(id));
            }
        }
        match (presented, auth.optional) {
            (true, _) => Err((true, &auth.invalid)),
            (false, true) => Ok(None),
            (false, false) => Err((false, &auth.missing)),
        }
    }

    /// The identity `credential` proves in the method's set; checked once per request.
    fn verify(&self, m: &AuthMethodRt, credential: &str, req: &Request) -> Option<Arc<Identity>> {
        let set = match m.set {
            SetRef::Keys(i) => i as u64,
            SetRef::Jwt(i) => (1 << 62) | i as u64,
            SetRef::Basic(i) => (2 << 62) | i as u64,
            SetRef::Undefined => return None,
        };
        req.auth_memo.get_or_check(set, credential, || self.check_credential(m, credential, req))
    }

    fn check_credential(&self, m: &AuthMethodRt, credential: &str, req: &Request) -> Option<Identity> {
        match m.set {
            SetRef::Keys(i) => {
                let entry = self.keysets.get(i)?.keys.lookup(credential)?;
                Some(Identity {
                    keys: m.name.clone(),
                    tenant: entry.tenant.clone(),
                    key_name: entry.name.clone(),
                    claims: None,
                })
            }
            SetRef::Jwt(i) => {
                let v = self.jwtsets.get(i)?.verifier.verify(credential, req.unix_now())?;
                Some(Identity {
                    keys: m.name.clone(),
                    tenant: v.tenant,
                    key_name: v.subject,
                    claims: Some(std::sync::Arc::new(v.claims)),
                })
            }
            SetRef::Basic(i) => {
                let set = self.basicsets.get(i)?;
                let (user, password) = crate::basic::basic_credential(credential)?;
                set.htpasswd.verify(&user, &password).then(|| Identity {
                    keys: m.name.clone(),
                    tenant: set.tenant.clone(),
                    key_name: user,
                    claims: None,
                })
            }
            SetRef::Undefined => None,
        }
    }

    fn limit_key(&self, key: &KeyRt, cx: &Ctx<'_>, memo: &mut Memo) -> Result<String, Undecided> {
        let id = cx.identity;
        Ok(match key {
            KeyRt::Route => String::new(),
            KeyRt::Key => id.map(|i| format!("{}/{}", i.keys, i.key_name)).unwrap_or_else(|| "-".into()),
            KeyRt::Tenant => id.map(|i| i.tenant.clone()).unwrap_or_else(|| "-".into()),
            KeyRt::Client => cx.req.client_ip.clone().unwrap_or_else(|| "-".into()),
            KeyRt::Header(h) => cx.req.header(h).unwrap_or("-").to_string(),
            KeyRt::Expr(n) => match self.eval(*n, cx, memo) {
                Val::Error(u) => return Err(u),
                v => v.key_string(),
            },
        })
    }

    fn eval(&self, id: NodeId, cx: &Ctx<'_>, memo: &mut Memo) -> Val {
        let meta = self.meta.get(id as usize).copied().unwrap_or_default();
        if meta.shared {
            if let Some(v) = memo.get(id) {
                return v.clone();
            }
        }
        let v = match self.nodes.get(id as usize) {
            None => Val::Missing,
            Some(Node::Fact(f)) => match self.facts.get(*f as usize) {
                Some(f) => self.fact(f, cx),
                None => Val::Missing,
            },
            Some(Node::Exists(x)) => match self.body_path(*x) {
                // Whether a body field is there needs no copy of it (for `body.messages`, the
                // whole conversation).
                Some(path) => value::exists(&cx.body.presence(path)),
                None => value::exists(&self.eval(*x, cx, memo)),
            },
            // Nor does the length of a body array or object.
            Some(Node::Call(Func::Len, xs)) if xs.len() == 1 => {
                match self.body_path(xs[0]).and_then(|p| cx.body.size(p)) {
                    Some(n) => Val::Num(n as f64),
                    None => value::call(Func::Len, &[self.eval(xs[0], cx, memo)]),
                }
            }
            Some(node) => node.apply(&self.regexes, |c| self.eval(c, cx, memo)).unwrap_or(Val::Missing),
        };
        if meta.shared {
            memo.entries.push((id, meta.contextual, v.clone()));
        }
        v
    }

    /// The path of a node that is a body fact.
    fn body_path(&self, id: NodeId) -> Option<&[PathSeg]> {
        match self.nodes.get(id as usize)? {
            Node::Fact(f) => match self.facts.get(*f as usize)? {
                Fact::Body(path) => Some(path),
                _ => None,
            },
            _ => None,
        }
    }

    fn fact(&self, f: &Fact, cx: &Ctx<'_>) -> Val {
        let s = |v: Option<&str>| v.map(|v| Val::Str(v.to_string())).unwrap_or(Val::Missing);
        match f {
            Fact::Method => Val::Str(cx.req.method.clone()),
            Fact::Path => crate::request::path_fact(&cx.req.path),
            Fact::Host => Val::Str(cx.host.to_string()),
            Fact::ClientIp => s(cx.req.client_ip.as_deref()),
            Fact::Tenant => s(cx.identity.map(|i| i.tenant.as_str())),
            Fact::Key => s(cx.identity.map(|i| i.key_name.as_str())),
            Fact::Header(h) => cx.req.header_fact(h),
            Fact::Query(q) => cx.req.query_fact(q),
            Fact::Param(p) => match cx.params.iter().find(|(k, _)| k == p) {
                Some((_, v)) => crate::request::path_fact(v),
                None => Val::Missing,
            },
            Fact::Body(path) => cx.body.field(path),
            Fact::Claim(path) => crate::jwt::claim_fact(cx.identity.and_then(|i| i.claims.as_deref()), path),
        }
    }
}

/// The explanation being built, or nothing: each note's text is made only when traced, so
/// the proxy's path formats no strings.
struct Trace(Option<Vec<TraceStep>>);

impl Trace {
    fn new(traced: bool) -> Trace {
        Trace(traced.then(Vec::new))
    }

    fn note(&mut self, step: &'static str, detail: impl FnOnce() -> String) {
        if let Some(steps) = &mut self.0 {
            steps.push(TraceStep { step: step.to_string(), detail: detail() });
        }
    }

    fn into_steps(self) -> Vec<TraceStep> {
        self.0.unwrap_or_default()
    }
}

fn body_note(body: &Body<'_>) -> String {
    match body.parsed.get() {
        Some(Ok(Some(_))) => "the body was read as JSON (once)".to_string(),
        Some(Ok(None)) => "the request has no body".to_string(),
        Some(Err(e)) => cat(&["the body was refused: ", &e.message]),
        None => "the body was not read".to_string(),
    }
}

/// Concatenate without the formatting machinery.
fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

fn action_note(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Forward { upstream } => cat(&["forward to `", upstream, "`"]),
        Outcome::Respond { status } => format!("respond {status}"),
        Outcome::Serve { builtin } => format!("serve {builtin}"),
        Outcome::NoRoute => "the route has no action".to_string(),
        other => format!("{other:?}"),
    }
}
