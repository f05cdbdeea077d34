//! One route → its operator view (`RouteInfo`) and what `decide` runs (`RouteRt`).

use std::collections::HashMap;

use crate::ast::*;
use crate::diagnostics::Diag;
use crate::program::{Program, SetKind};
use crate::request::{Outcome, DEFAULT_ALLOW_MESSAGE};
use crate::value::{self};

use super::*;

/// What every route's lowering shares: the program, the node builder, the tables built
/// before routes, and the limit list routes append to.
pub(super) struct RouteCx<'a, 'p> {
    pub program: &'p Program,
    pub b: &'a mut Nodes,
    pub keysets: &'a [KeysetInfo],
    pub jwtsets: &'a [JwtSetInfo],
    pub basicsets: &'a [BasicSetInfo],
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
    set_headers: Vec<(String, Template)>,
    strip_headers: Vec<String>,
    rewrite: Option<RewriteInfo>,
    respond: Option<RespondInfo>,
    cache: Option<CacheInfo>,
    websocket: bool,
    idempotent: bool,
    cors: Option<gw_engine::cors::CorsPolicy>,
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
        let mut methods = vec![];
        let mut all_sources: Vec<CredentialSource> = vec![];
        for m in &a.methods {
            let name = &m.set.name;
            let set = match self.program.set_kind(name) {
                Some(SetKind::Jwt) => self.jwtsets.iter().position(|k| k.name == *name).map(SetRef::Jwt),
                Some(SetKind::Basic) => self.basicsets.iter().position(|k| k.name == *name).map(SetRef::Basic),
                Some(SetKind::Keys) | None => self.keysets.iter().position(|k| k.name == *name).map(SetRef::Keys),
            }
            .unwrap_or(SetRef::Undefined);
            let sources: Vec<CredentialSource> = self
                .program
                .auth_sources(m)
                .iter()
                .map(|c| match c {
                    Credential::Header(h) => CredentialSource::Header(h.value.clone()),
                    Credential::Bearer(_) => CredentialSource::Bearer,
                    Credential::Query(q) => CredentialSource::Query(q.value.clone()),
                    Credential::Basic(_) => CredentialSource::Basic,
                })
                .collect();
            for s in &sources {
                if !all_sources.contains(s) {
                    all_sources.push(s.clone());
                }
            }
            methods.push(AuthMethodRt { set, name: name.clone(), via: sources });
        }
        let (missing, invalid) = self.program.auth_messages(a);
        let infos = methods
            .iter()
            .map(|m| AuthMethodInfo { set: m.set, name: m.name.clone(), sources: m.via.clone() })
            .collect();
        (
            Some(AuthRt { methods, optional: a.optional, missing: missing.clone(), invalid: invalid.clone() }),
            Some(AuthInfo { methods: infos, sources: all_sources, optional: a.optional, missing, invalid }),
        )
    }

    fn stmt(&mut self, parts: &mut Parts, route: &Route, index: usize, kind: &RouteStmtKind) -> Result<(), Diag> {
        match kind {
            RouteStmtKind::Deny { status, message, cond } => {
                let n = self.root(parts, cond)?;
                let status = status.value as u16;
                parts.guard_infos.push(GuardInfo { kind: GuardKind::Deny, status, message: message.value.clone() });
                parts.guards.push(GuardRt { cond: n, refuse_when: true, status, message: message.value.clone() });
            }
            RouteStmtKind::Allow { cond, status, message } => {
                let n = self.root(parts, cond)?;
                let status = status.map(|s| s.value as u16).unwrap_or(403);
                let message =
                    message.as_ref().map(|m| m.value.clone()).unwrap_or_else(|| DEFAULT_ALLOW_MESSAGE.to_string());
                parts.guard_infos.push(GuardInfo { kind: GuardKind::Allow, status, message: message.clone() });
                parts.guards.push(GuardRt { cond: n, refuse_when: false, status, message });
            }
            RouteStmtKind::Limit(l) => self.limit(parts, route, index, l)?,
            RouteStmtKind::LimitUse { name, cond } => self.limit_use(parts, name, cond.as_ref())?,
            RouteStmtKind::SetHeader { name, value } => {
                parts.set_headers.push((name.value.clone(), template_of(self.program, value)))
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
            RouteStmtKind::Respond { status, body, headers } => {
                let status = status.value as u16;
                if parts.respond.is_none() {
                    let mut info = respond_info(self.program, status, body.as_ref())?;
                    info.headers =
                        headers.iter().map(|(n, v)| (n.value.clone(), template_of(self.program, v))).collect();
                    parts.respond = Some(info);
                }
                if parts.outcome.is_none() {
                    parts.outcome = Some(Outcome::Respond { status });
                    parts.action = Some(ActionInfo::Respond);
                }
            }
            RouteStmtKind::Cache { ttl, max, shared, statuses } => {
                let mut statuses: Vec<u16> = statuses.iter().map(|s| s.value as u16).collect();
                if statuses.is_empty() {
                    statuses.push(200);
                }
                parts.cache.get_or_insert(CacheInfo {
                    ttl_ns: ttl.value,
                    max_bytes: max.map(|m| m.value),
                    shared: *shared,
                    statuses,
                });
            }
            RouteStmtKind::Websocket => parts.websocket = true,
            RouteStmtKind::Idempotent => parts.idempotent = true,
            RouteStmtKind::Cors(c) => {
                let program = self.program;
                parts.cors.get_or_insert_with(|| program.cors_policy(route, c));
            }
            RouteStmtKind::Serve(builtin) => {
                if parts.outcome.is_none() {
                    parts.outcome = Some(Outcome::Serve { builtin: builtin.builtin });
                    parts.action = Some(ActionInfo::Serve { builtin: builtin.builtin });
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
        parts.lims.push(LimitRt { table, id: id.into(), cond, model, key });
        Ok(())
    }
}

impl RouteCx<'_, '_> {
    /// `limit use NAME`: the shared limit's one row of the limit table, keyed as it says.
    fn limit_use(&mut self, parts: &mut Parts, name: &Ident, cond: Option<&Expr>) -> Result<(), Diag> {
        let Some(shared) = self.program.shared_limit(&name.name) else {
            return Err(Diag::bug(format!("`limit use {}` names no shared limit", name.name)));
        };
        let cond = match cond {
            Some(c) => Some(self.root(parts, c)?),
            None => None,
        };
        let key = match &shared.per {
            LimitKey::Key => KeyRt::Key,
            LimitKey::Tenant => KeyRt::Tenant,
            LimitKey::Client => KeyRt::Client,
            LimitKey::Header(h) => KeyRt::Header(h.value.clone()),
            LimitKey::Route | LimitKey::Expr(_) => KeyRt::Route,
        };
        let kind = limit_kind(&shared.kind);
        parts.counts_tokens |= matches!(kind, LimitKindInfo::Tokens { .. });
        let id = shared_limit_id(&shared.name.name, &kind, &limit_per(&shared.per));
        let table = self.first_index.get(id.as_str()).copied();
        parts.limit_ix.extend(table);
        parts.lims.push(LimitRt { table, id: id.into(), cond, model: ModelRt::None, key });
        Ok(())
    }
}

/// A `respond` body (fixed bytes when it reads nothing of the request) with its content type.
fn respond_info(program: &Program, status: u16, body: Option<&ResponseBody>) -> Result<RespondInfo, Diag> {
    let text = Some("text/plain; charset=utf-8");
    let (body, content_type) = match body {
        None => (BodyTemplate::Fixed(vec![]), None),
        Some(ResponseBody::Text(v)) => {
            let t = template_of(program, v);
            match (t.reads_request(), program.value(v)) {
                (false, Some(fixed)) => (BodyTemplate::Fixed(fixed.into_bytes()), text),
                _ => (BodyTemplate::Text(t), text),
            }
        }
        Some(ResponseBody::Json(j)) => (
            BodyTemplate::Fixed(
                serde_json::to_vec(&j.value).map_err(|e| Diag::bug(format!("static JSON response: {e}")))?,
            ),
            Some("application/json"),
        ),
        Some(ResponseBody::JsonTemplate(j)) => {
            (BodyTemplate::Json(json_template(program, &j.value)), Some("application/json"))
        }
    };
    Ok(RespondInfo { status, body, content_type, headers: vec![] })
}

fn json_template(program: &Program, j: &JsonT) -> JsonBody {
    match j {
        JsonT::Scalar(v) => JsonBody::Scalar(v.clone()),
        JsonT::Text(v) => JsonBody::Text(template_of(program, v)),
        JsonT::Array(items) => JsonBody::Array(items.iter().map(|i| json_template(program, i)).collect()),
        JsonT::Object(kv) => {
            JsonBody::Object(kv.iter().map(|(k, v)| (k.value.clone(), json_template(program, v))).collect())
        }
    }
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
