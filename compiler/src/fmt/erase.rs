//! Span erasure: a tree with every span zeroed, for comparing two parses of one policy.

use crate::source::Span;

use super::*;

/// A copy of the tree with every span set to `Span::default()`, so that two parses of
/// differently laid out text compare equal when they mean the same.
pub fn strip_spans(file: &File) -> File {
    let mut f = file.clone();
    for item in &mut f.items {
        erase_item(item);
    }
    f
}

pub(super) fn z(span: &mut Span) {
    *span = Span::default();
}

pub(super) fn erase_ident(i: &mut Ident) {
    z(&mut i.span);
}

pub(super) fn erase_str(s: &mut Str) {
    z(&mut s.span);
}

pub(super) fn erase_q(q: &mut Quantity) {
    z(&mut q.span);
}

pub(super) fn erase_opt_q(q: &mut Option<Quantity>) {
    if let Some(q) = q {
        erase_q(q);
    }
}

pub(super) fn erase_opt_str(s: &mut Option<Str>) {
    if let Some(s) = s {
        erase_str(s);
    }
}

pub(super) fn erase_rate(r: &mut Rate) {
    z(&mut r.span);
}

pub(super) fn erase_value(v: &mut Value) {
    z(&mut v.span);
    for p in &mut v.parts {
        match p {
            ValuePart::Lit(s) | ValuePart::Env(s) => erase_str(s),
            ValuePart::Fact(_, span) | ValuePart::Gateway(_, span) => z(span),
        }
    }
}

pub(super) fn erase_regex(r: &mut Regex) {
    z(&mut r.span);
}

pub(super) fn erase_json(j: &mut Json) {
    z(&mut j.span);
}

fn erase_limit_kind(kind: &mut LimitKind, per: &mut LimitKey) {
    match kind {
        LimitKind::Rate { rate, burst } => {
            erase_rate(rate);
            erase_opt_q(burst);
        }
        LimitKind::Tokens { rate, estimate } => {
            erase_rate(rate);
            erase_opt_q(estimate);
        }
        LimitKind::Concurrent(q) => erase_q(q),
    }
    match per {
        LimitKey::Header(s) => erase_str(s),
        LimitKey::Expr(e) => erase_expr(e),
        LimitKey::Route | LimitKey::Key | LimitKey::Tenant | LimitKey::Client => {}
    }
}

fn erase_json_t(j: &mut JsonT) {
    match j {
        JsonT::Scalar(_) => {}
        JsonT::Text(v) => erase_value(v),
        JsonT::Array(items) => items.iter_mut().for_each(erase_json_t),
        JsonT::Object(kv) => {
            for (k, v) in kv {
                erase_str(k);
                erase_json_t(v);
            }
        }
    }
}

pub(super) fn erase_item(item: &mut Item) {
    match item {
        Item::Limit(l) => {
            z(&mut l.span);
            erase_ident(&mut l.name);
            erase_limit_kind(&mut l.kind, &mut l.per);
        }
        Item::Import(i) => {
            z(&mut i.span);
            erase_str(&mut i.path);
        }
        Item::Gateway(g) => {
            z(&mut g.span);
            for s in &mut g.settings {
                z(&mut s.span);
                erase_setting(&mut s.kind);
            }
        }
        Item::Upstream(u) => {
            z(&mut u.span);
            erase_ident(&mut u.name);
            for s in &mut u.stmts {
                z(&mut s.span);
                erase_upstream_stmt(&mut s.kind);
            }
        }
        Item::Keys(k) => {
            z(&mut k.span);
            erase_ident(&mut k.name);
            erase_str(&mut k.file);
            if let Some(v) = &mut k.salt {
                erase_value(v);
            }
            erase_opt_str(&mut k.message);
        }
        Item::Basic(b) => {
            z(&mut b.span);
            erase_ident(&mut b.name);
            erase_str(&mut b.file);
            erase_opt_str(&mut b.tenant);
            erase_opt_str(&mut b.message);
        }
        Item::Jwt(j) => {
            z(&mut j.span);
            erase_ident(&mut j.name);
            for s in &mut j.stmts {
                z(&mut s.span);
                match &mut s.kind {
                    JwtStmtKind::Alg(a) => erase_ident(a),
                    JwtStmtKind::Secret(v) => erase_value(v),
                    JwtStmtKind::Key(f)
                    | JwtStmtKind::Jwks(f)
                    | JwtStmtKind::Issuer(f)
                    | JwtStmtKind::Audience(f)
                    | JwtStmtKind::TenantName(f)
                    | JwtStmtKind::Message(f) => erase_str(f),
                    JwtStmtKind::Leeway(q) => erase_q(q),
                    JwtStmtKind::TenantClaim(e) => erase_expr(e),
                }
            }
        }
        Item::Tenant(t) => {
            z(&mut t.span);
            erase_ident(&mut t.name);
            for s in &mut t.stmts {
                z(&mut s.span);
                match &mut s.kind {
                    TenantStmtKind::Rate { rate, burst } => {
                        erase_rate(rate);
                        erase_opt_q(burst);
                    }
                    TenantStmtKind::Tokens(r) => erase_rate(r),
                    TenantStmtKind::Concurrent(q) => erase_q(q),
                    TenantStmtKind::Region(r) => erase_str(r),
                }
            }
        }
        Item::Matcher(m) => {
            z(&mut m.span);
            erase_ident(&mut m.name);
            erase_expr(&mut m.expr);
        }
        Item::Route(r) => {
            z(&mut r.span);
            erase_ident(&mut r.name);
            for s in &mut r.stmts {
                z(&mut s.span);
                erase_route_stmt(&mut s.kind);
            }
        }
        Item::Test(t) => {
            z(&mut t.span);
            erase_str(&mut t.name);
            for s in &mut t.stmts {
                z(&mut s.span);
                erase_test_stmt(&mut s.kind);
            }
        }
    }
}

pub(super) fn erase_setting(k: &mut SettingKind) {
    match k {
        SettingKind::Listen(v) => erase_value(v),
        SettingKind::Admin { addr, token } => {
            erase_value(addr);
            if let Some(t) = token {
                erase_value(t);
            }
        }
        SettingKind::State(StateStore::Local) => {}
        SettingKind::State(StateStore::Redis { url, .. }) => erase_value(url),
        SettingKind::Audit { path, rotate } => {
            erase_value(path);
            erase_opt_q(rotate);
        }
        SettingKind::MaxBody(q)
        | SettingKind::MaxHeaderBytes(q)
        | SettingKind::MaxHeaders(q)
        | SettingKind::HeaderTimeout(q)
        | SettingKind::IdleTimeout(q)
        | SettingKind::DrainTimeout(q) => erase_q(q),
        SettingKind::Tls { cert, key } => {
            erase_value(cert);
            erase_value(key);
        }
        SettingKind::PolicyHeader(_) | SettingKind::Forwarded(_) => {}
    }
}

pub(super) fn erase_upstream_stmt(k: &mut UpstreamStmtKind) {
    match k {
        UpstreamStmtKind::Target(t) => {
            erase_value(&mut t.url);
            erase_opt_q(&mut t.weight);
            erase_opt_str(&mut t.region);
        }
        UpstreamStmtKind::Balance(Balance::Hash(e)) => erase_expr(e),
        UpstreamStmtKind::Balance(_) => {}
        UpstreamStmtKind::Header { name, value } => {
            erase_str(name);
            erase_value(value);
        }
        UpstreamStmtKind::Timeout(q) | UpstreamStmtKind::ConnectTimeout(q) | UpstreamStmtKind::MaxConnections(q) => {
            erase_q(q)
        }
        UpstreamStmtKind::Health(h) => {
            erase_str(&mut h.path);
            erase_q(&mut h.every);
            erase_opt_q(&mut h.timeout);
            erase_opt_q(&mut h.expect);
            erase_opt_q(&mut h.healthy);
            erase_opt_q(&mut h.unhealthy);
        }
        UpstreamStmtKind::Retry(r) => {
            erase_q(&mut r.attempts);
            for c in &mut r.on {
                match c {
                    RetryCond::ConnectError(s) | RetryCond::Timeout(s) => z(s),
                    RetryCond::Status(q) => erase_q(q),
                }
            }
        }
        UpstreamStmtKind::Affinity(e) => erase_expr(e),
    }
}

pub(super) fn erase_route_stmt(k: &mut RouteStmtKind) {
    match k {
        RouteStmtKind::When(w) => {
            z(&mut w.methods_span);
            erase_str(&mut w.path);
            erase_opt_str(&mut w.host);
            if let Some(c) = &mut w.cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::Auth(a) => {
            for m in &mut a.methods {
                erase_ident(&mut m.set);
                for c in &mut m.via {
                    match c {
                        Credential::Header(s) | Credential::Query(s) => erase_str(s),
                        Credential::Bearer(s) | Credential::Basic(s) => z(s),
                    }
                }
            }
            erase_opt_str(&mut a.message);
        }
        RouteStmtKind::Allow { cond, status, message } => {
            erase_expr(cond);
            erase_opt_q(status);
            erase_opt_str(message);
        }
        RouteStmtKind::Deny { status, message, cond } => {
            erase_q(status);
            erase_str(message);
            erase_expr(cond);
        }
        RouteStmtKind::LimitUse { name, cond } => {
            erase_ident(name);
            if let Some(c) = cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::Limit(l) => {
            erase_limit_kind(&mut l.kind, &mut l.per);
            if let Some(m) = &mut l.model {
                erase_regex(m);
            }
            if let Some(c) = &mut l.cond {
                erase_expr(c);
            }
        }
        RouteStmtKind::SetHeader { name, value } => {
            erase_str(name);
            erase_value(value);
        }
        RouteStmtKind::StripHeaders(names) => names.iter_mut().for_each(erase_str),
        RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) => {
            erase_str(from);
            erase_str(to);
        }
        RouteStmtKind::Rewrite(Rewrite::Path(p)) => erase_str(p),
        RouteStmtKind::Respond { status, body, headers } => {
            erase_q(status);
            match body {
                Some(ResponseBody::Json(j)) => erase_json(j),
                Some(ResponseBody::JsonTemplate(j)) => {
                    z(&mut j.span);
                    erase_json_t(&mut j.value);
                }
                Some(ResponseBody::Text(t)) => erase_value(t),
                None => {}
            }
            for (name, value) in headers {
                erase_str(name);
                erase_value(value);
            }
        }
        RouteStmtKind::Cache { ttl, max, statuses, .. } => {
            erase_q(ttl);
            erase_opt_q(max);
            statuses.iter_mut().for_each(erase_q);
        }
        RouteStmtKind::Websocket | RouteStmtKind::Idempotent | RouteStmtKind::AuthNone => {}
        RouteStmtKind::Cors(c) => {
            c.origins.iter_mut().for_each(erase_str);
            c.headers.iter_mut().for_each(erase_str);
            c.expose.iter_mut().for_each(erase_str);
            if let Some(s) = &mut c.credentials {
                z(s);
            }
            erase_opt_q(&mut c.max_age);
            c.clauses.iter_mut().for_each(|(_, s)| z(s));
        }
        RouteStmtKind::Serve(b) => z(&mut b.span),
        RouteStmtKind::To(i) => erase_ident(i),
    }
}

pub(super) fn erase_test_stmt(k: &mut TestStmtKind) {
    match k {
        TestStmtKind::Send(s) => {
            erase_str(&mut s.path);
            for (n, v) in &mut s.headers {
                erase_str(n);
                erase_str(v);
            }
            if let Some(b) = &mut s.body {
                erase_json(b);
            }
            erase_opt_str(&mut s.client);
        }
        TestStmtKind::Advance(q) => erase_q(q),
        TestStmtKind::Expect(e) => match e {
            Expectation::Status { status, message } => {
                erase_q(status);
                erase_opt_str(message);
            }
            Expectation::Route(i) | Expectation::Upstream(i) | Expectation::Tenant(i) => erase_ident(i),
            Expectation::Cache { span, .. } => z(span),
            Expectation::Limit { name, .. } => erase_ident(name),
            Expectation::Body(ResponseBody::Json(j)) => erase_json(j),
            Expectation::Body(ResponseBody::Text(t)) => erase_value(t),
            Expectation::Body(ResponseBody::JsonTemplate(j)) => z(&mut j.span),
            Expectation::Header { name, value } => {
                erase_str(name);
                if let Some(v) = value {
                    erase_str(v);
                }
            }
            Expectation::Claim { name, value } => {
                erase_str(name);
                erase_str(value);
            }
        },
    }
}

pub(super) fn erase_expr(e: &mut Expr) {
    z(&mut e.span);
    match &mut e.kind {
        ExprKind::Lit(Lit::Regex(r)) => erase_regex(r),
        ExprKind::Lit(_) | ExprKind::Fact(_) => {}
        ExprKind::List(items) => items.iter_mut().for_each(erase_expr),
        ExprKind::Ref(i) => erase_ident(i),
        ExprKind::Not(inner) | ExprKind::Exists(inner) => erase_expr(inner),
        ExprKind::Binary { op_span, lhs, rhs, .. } => {
            z(op_span);
            erase_expr(lhs);
            erase_expr(rhs);
        }
        ExprKind::Call { args, .. } => args.iter_mut().for_each(erase_expr),
    }
}
