//! One route → its operator view (`RouteInfo`) and what `decide` runs (`RouteRt`).

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::program::Program;
use crate::request::{Outcome, DEFAULT_ALLOW_MESSAGE};
use crate::value::{self};

use super::*;

/// What every route's lowering shares: the program, the node builder, the tables built
/// before routes, and the limit list routes append to.
pub(super) struct RouteCx<'a, 'p> {
    pub program: &'p Program,
    pub b: &'a mut Nodes,
    pub keysets: &'a [KeysetInfo],
    pub upstreams: &'a [UpstreamInfo],
    /// The first index of each limit id in the limit table (what eval reports).
    pub first_index: &'a HashMap<&'p str, usize>,
    pub limits: &'a mut Vec<LimitInfo>,
    /// A tenant has a token budget: an authenticated route must count tokens.
    pub any_tenant_tokens: bool,
}

/// The route's statements as they are lowered, in order; the first `respond`, `serve` or `to`
/// decides the outcome and later ones are ignored (check warns about them).
#[derive(Default)]
struct Parts {
    reads_body: bool,
    guards: Vec<GuardRt>,
    guard_infos: Vec<GuardInfo>,
    lims: Vec<LimitRt>,
    limit_ix: Vec<usize>,
    set_headers: Vec<(String, Resolved)>,
    strip_headers: Vec<String>,
    rewrite: Option<RewriteInfo>,
    respond: Option<RespondInfo>,
    cache: Option<CacheInfo>,
    websocket: bool,
    idempotent: bool,
    cors: Option<CorsInfo>,
    jwt: Option<JwtInfo>,
    action: Option<ActionInfo>,
    outcome: Option<Outcome>,
    counts_tokens: bool,
    limit_no: usize,
}

impl RouteCx<'_, '_> {
    /// An expression root, noting whether it reads the body.
    fn root(&mut self, parts: &mut Parts, e: &Expr) -> Result<NodeId, Diag> {
        let n = self.b.root(self.program, e)?;
        parts.reads_body |= self.b.reads_body(n);
        Ok(n)
    }

    pub(super) fn lower_route(&mut self, route: &Route, index: usize) -> Result<(RouteInfo, RouteRt), Diag> {
        let name = route.name.name.clone();
        let when = route.when();
        let mut parts = Parts::default();
        let cond = match when.and_then(|w| w.cond.as_ref()) {
            Some(c) => Some(self.root(&mut parts, c)?),
            None => None,
        };
        let methods: Vec<Method> = when.map(|w| w.methods.clone()).unwrap_or_default();
        let (auth_rt, auth_info) = self.auth(route);
        parts.counts_tokens = auth_rt.is_some() && self.any_tenant_tokens;
        for stmt in &route.stmts {
            self.stmt(&mut parts, route, index, &stmt.kind)?;
        }
        let action = parts.action.unwrap_or(ActionInfo::None);
        let upstream = match &action {
            ActionInfo::Forward { upstream, .. } => *upstream,
            _ => None,
        };
        let path = when.map(|w| w.path.value.clone()).unwrap_or_default();
        let info = RouteInfo {
            name: name.clone(),
            index,
            routable: when.is_some(),
            methods: methods.clone(),
            path: path.clone(),
            host: when.and_then(|w| w.host.as_ref()).map(|h| h.value.clone()),
            has_condition: cond.is_some(),
            auth: auth_info,
            guards: parts.guard_infos,
            limits: parts.limit_ix,
            set_headers: parts.set_headers,
            strip_headers: parts.strip_headers,
            rewrite: parts.rewrite,
            respond: parts.respond,
            cache: parts.cache,
            websocket: parts.websocket,
            idempotent: parts.idempotent,
            cors: parts.cors,
            jwt: parts.jwt,
            action,
            upstream,
            // Over the syntax too: `false and body.x` folds away but still makes the route one
            // that refuses a body the strict reader refuses (as eval decides).
            reads_body: parts.reads_body || self.program.route_reads_body(route),
            counts_tokens: parts.counts_tokens,
        };
        let rt = RouteRt {
            name,
            routable: when.is_some(),
            any_method: methods.contains(&Method::Any),
            method_mask: methods.iter().fold(0u8, |m, x| m | method_bit(x.as_str())),
            methods: methods.iter().map(|m| m.as_str().to_string()).collect(),
            path: PathPattern::parse(&path),
            cond,
            auth: auth_rt,
            guards: parts.guards,
            limits: parts.lims,
            outcome: parts.outcome.unwrap_or(Outcome::NoRoute),
        };
        Ok((info, rt))
    }

    fn auth(&self, route: &Route) -> (Option<AuthRt>, Option<AuthInfo>) {
        let Some(a) = route.auth() else { return (None, None) };
        let keyset = self.keysets.iter().position(|k| k.name == a.keys.name);
        let sources: Vec<CredentialSource> = if a.via.is_empty() {
            CredentialSource::defaults()
        } else {
            a.via
                .iter()
                .map(|c| match c {
                    Credential::Header(h) => CredentialSource::Header(h.value.clone()),
                    Credential::Bearer(_) => CredentialSource::Bearer,
                    Credential::Query(q) => CredentialSource::Query(q.value.clone()),
                })
                .collect()
        };
        (
            Some(AuthRt { keyset, keys: a.keys.name.clone(), via: sources.clone(), optional: a.optional }),
            Some(AuthInfo { keyset, keyset_name: a.keys.name.clone(), sources, optional: a.optional }),
        )
    }

    fn stmt(&mut self, parts: &mut Parts, route: &Route, index: usize, kind: &RouteStmtKind) -> Result<(), Diag> {
        match kind {
            RouteStmtKind::Deny { status, message, cond } => {
                let n = self.root(parts, cond)?;
                let status = status.value as u16;
                parts.guard_infos.push(GuardInfo { kind: "deny", status, message: message.value.clone() });
                parts.guards.push(GuardRt { cond: n, refuse_when: true, status, message: message.value.clone() });
            }
            RouteStmtKind::Allow { cond, status, message } => {
                let n = self.root(parts, cond)?;
                let status = status.map(|s| s.value as u16).unwrap_or(403);
                let message =
                    message.as_ref().map(|m| m.value.clone()).unwrap_or_else(|| DEFAULT_ALLOW_MESSAGE.to_string());
                parts.guard_infos.push(GuardInfo { kind: "allow", status, message: message.clone() });
                parts.guards.push(GuardRt { cond: n, refuse_when: false, status, message });
            }
            RouteStmtKind::Limit(l) => self.limit(parts, route, index, l)?,
            RouteStmtKind::SetHeader { name, value } => {
                parts.set_headers.push((name.value.clone(), resolve(self.program, value, false)))
            }
            RouteStmtKind::StripHeaders(hs) => parts.strip_headers.extend(hs.iter().map(|h| h.value.clone())),
            RouteStmtKind::Rewrite(r) => {
                parts.rewrite.get_or_insert_with(|| match r {
                    Rewrite::Prefix { from, to } => {
                        RewriteInfo::Prefix { from: from.value.clone(), to: to.value.clone() }
                    }
                    Rewrite::Path(t) => RewriteInfo::Path { template: t.value.clone(), parts: template(&t.value) },
                });
            }
            RouteStmtKind::Respond { status, body } => {
                let status = status.value as u16;
                if parts.respond.is_none() {
                    parts.respond = Some(respond_info(status, body.as_ref())?);
                }
                if parts.outcome.is_none() {
                    parts.outcome = Some(Outcome::Respond { status });
                    parts.action = Some(ActionInfo::Respond);
                }
            }
            RouteStmtKind::Cache { ttl, max } => {
                parts.cache.get_or_insert(CacheInfo { ttl_ns: ttl.value, max_bytes: max.map(|m| m.value) });
            }
            RouteStmtKind::Websocket => parts.websocket = true,
            RouteStmtKind::Idempotent => parts.idempotent = true,
            RouteStmtKind::Cors { origins, methods } => {
                parts.cors.get_or_insert_with(|| CorsInfo {
                    origins: origins.iter().map(|o| o.value.clone()).collect(),
                    methods: methods.clone(),
                });
            }
            RouteStmtKind::Jwt { secret, issuer } => {
                let program = self.program;
                parts.jwt.get_or_insert_with(|| JwtInfo {
                    secret: resolve(program, secret, true),
                    issuer: issuer.as_ref().map(|i| i.value.clone()),
                });
            }
            RouteStmtKind::Serve(builtin) => {
                if parts.outcome.is_none() {
                    parts.outcome = Some(Outcome::Serve { builtin: builtin.name.clone() });
                    parts.action = Some(ActionInfo::Serve { builtin: builtin.name.clone() });
                }
            }
            RouteStmtKind::To(u) => {
                if parts.outcome.is_none() {
                    parts.outcome = Some(Outcome::Forward { upstream: u.name.clone() });
                    let upstream = self.upstreams.iter().position(|x| x.name == u.name);
                    parts.action = Some(ActionInfo::Forward { name: u.name.clone(), upstream });
                }
            }
            RouteStmtKind::When(_) | RouteStmtKind::Auth(_) | RouteStmtKind::AuthNone => {}
        }
        Ok(())
    }

    /// A route `limit`: its run-time form, and its row of the graph's limit list.
    fn limit(&mut self, parts: &mut Parts, route: &Route, index: usize, l: &Limit) -> Result<(), Diag> {
        let cond = match &l.cond {
            Some(c) => Some(self.root(parts, c)?),
            None => None,
        };
        let model = match &l.model {
            None => ModelRt::None,
            Some(r) => {
                parts.reads_body = true;
                match value::build_regex(&r.pattern, r.case_insensitive) {
                    Ok(re) => ModelRt::Regex(re),
                    Err(_) => ModelRt::Never,
                }
            }
        };
        let per = limit_per(&l.per);
        let key = match &l.per {
            LimitKey::Route => KeyRt::Route,
            LimitKey::Key => KeyRt::Key,
            LimitKey::Tenant => KeyRt::Tenant,
            LimitKey::Client => KeyRt::Client,
            LimitKey::Header(h) => KeyRt::Header(h.value.clone()),
            LimitKey::Expr(e) => KeyRt::Expr(self.root(parts, e)?),
        };
        let kind = limit_kind(&l.kind);
        parts.counts_tokens |= matches!(kind, LimitKindInfo::Tokens { .. });
        let name = &route.name.name;
        let id = route_limit_id(name, parts.limit_no, &kind, &per);
        parts.limit_no += 1;
        let table = self.first_index.get(id.as_str()).copied();
        parts.limit_ix.extend(table);
        self.limits.push(LimitInfo {
            id: id.clone(),
            kind,
            shadow: l.shadow,
            per,
            owner: LimitOwner::Route { route: index, name: name.clone() },
            model: l.model.as_ref().map(|r| r.pattern.clone()),
            conditional: l.cond.is_some(),
        });
        parts.lims.push(LimitRt { table, id, cond, model, key });
        Ok(())
    }
}

/// A `respond` body as bytes with its content type.
fn respond_info(status: u16, body: Option<&ResponseBody>) -> Result<RespondInfo, Diag> {
    let (bytes, content_type) = match body {
        None => (vec![], None),
        Some(ResponseBody::Text(s)) => (s.value.as_bytes().to_vec(), Some("text/plain; charset=utf-8")),
        Some(ResponseBody::Json(j)) => (
            serde_json::to_vec(&j.value).map_err(|e| Diag::bug(format!("static JSON response: {e}")))?,
            Some("application/json"),
        ),
    };
    Ok(RespondInfo { status, body: bytes, content_type })
}

/// `"/v2/{id}/x"` → literal and param parts.
pub(super) fn template(t: &str) -> Vec<TemplatePart> {
    let mut parts = vec![];
    let mut rest = t;
    while let Some((before, after)) = rest.split_once('{') {
        let Some((name, tail)) = after.split_once('}') else { break };
        if !before.is_empty() {
            parts.push(TemplatePart::Lit(before.to_string()));
        }
        parts.push(TemplatePart::Param(name.to_string()));
        rest = tail;
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Lit(rest.to_string()));
    }
    parts
}
