//! Items and statements: the CST walk from pest pairs into the typed `ast`.

use gw_grammar::Rule;

use crate::source::Span;

use super::keywords::*;
use super::*;

impl Walker<'_> {
    /// The statements of a block, each read by `stmt`: a `bad_stmt` (the grammar's recovery
    /// rule) is reported against the block's keywords and skipped.
    fn block<'i, T>(
        &mut self,
        pairs: impl Iterator<Item = P<'i>>,
        block: Block,
        stmt: impl Fn(&mut Self, P<'i>) -> Option<T>,
    ) -> Vec<T> {
        let mut out = vec![];
        for p in pairs {
            if p.as_rule() == Rule::bad_stmt {
                self.bad_stmt(&p, block);
                continue;
            }
            let (span, reported) = (self.span(&p), self.diags.len());
            match stmt(self, p) {
                Some(s) => out.push(s),
                // A statement the parser accepted but the builder could not read must not
                // vanish from the program without a word: that would serve less than was written.
                None if self.diags.len() == reported => self.diags.push(
                    Diag::bug("a statement the parser accepted could not be built").primary(span, "this statement"),
                ),
                None => {}
            }
        }
        out
    }

    pub(super) fn item(&mut self, pair: P<'_>) -> Option<Item> {
        let span = self.span(&pair);
        Some(match pair.as_rule() {
            Rule::import_decl => {
                let s = inner(pair).find(|p| p.as_rule() == Rule::string)?;
                Item::Import(Import { path: self.string(s), span })
            }
            Rule::gateway_decl => {
                let settings = self.block(inner(pair).skip(1), Block::Gateway, Self::setting);
                Item::Gateway(Gateway { settings, span })
            }
            Rule::upstream_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let stmts = self.block(it, Block::Upstream, Self::upstream_stmt);
                Item::Upstream(Upstream { name, stmts, span })
            }
            Rule::keys_decl => {
                let mut it = inner(pair).filter(|p| !p.as_rule_name_is_kw());
                let name = self.ident(it.next()?);
                let file = self.string(it.next()?);
                let (mut salt, mut message) = (None, None);
                for p in it {
                    match p.as_rule() {
                        Rule::set_message => message = self.set_message(p),
                        _ => salt = Some(self.value(p)),
                    }
                }
                Item::Keys(KeySet { name, file, salt, message, span })
            }
            Rule::jwt_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let stmts = self.block(it, Block::Jwt, Self::jwt_stmt);
                Item::Jwt(JwtSet { name, stmts, span })
            }
            Rule::basic_decl => {
                let mut it = inner(pair).filter(|p| !p.as_rule_name_is_kw());
                let name = self.ident(it.next()?);
                let file = self.string(it.next()?);
                let (mut tenant, mut message) = (None, None);
                for p in it {
                    match p.as_rule() {
                        Rule::set_message => message = self.set_message(p),
                        _ => tenant = inner(p).find(|p| p.as_rule() == Rule::string).map(|s| self.string(s)),
                    }
                }
                Item::Basic(BasicSet { name, file, tenant, message, span })
            }
            Rule::tenant_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let stmts = self.block(it, Block::Tenant, Self::tenant_stmt);
                Item::Tenant(Tenant { name, stmts, span })
            }
            Rule::limit_decl => {
                let mut it = inner(pair).filter(|p| !p.as_rule_name_is_kw());
                let name = self.ident(it.next()?);
                let l = self.limit(it)?;
                Item::Limit(SharedLimit { name, kind: l.kind, per: l.per, span })
            }
            Rule::matcher_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let expr = self.expr(it.next()?)?;
                Item::Matcher(Matcher { name, expr, span })
            }
            Rule::route_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.ident(it.next()?);
                let stmts = self.block(it, Block::Route, Self::route_stmt);
                Item::Route(Route { name, stmts, span })
            }
            Rule::test_decl => {
                let mut it = inner(pair).skip(1);
                let name = self.string(it.next()?);
                let stmts = self.block(it, Block::Test, Self::test_stmt);
                Item::Test(Test { name, stmts, span })
            }
            _ => return None,
        })
    }

    // ------------------------------------------------------------ gateway

    pub(super) fn setting(&mut self, pair: P<'_>) -> Option<Setting> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let args: Vec<P<'_>> = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect();
        let mut args = args.into_iter();
        let kind = match rule {
            Rule::g_listen => SettingKind::Listen(self.value(args.next()?)),
            Rule::g_admin => {
                let addr = self.value(args.next()?);
                SettingKind::Admin { addr, token: args.next().map(|p| self.value(p)) }
            }
            Rule::g_state => {
                let store = args.next()?;
                match store.as_rule() {
                    Rule::state_redis => {
                        let mut it = inner(store).filter(|p| !p.as_rule_name_is_kw());
                        let url = self.value(it.next()?);
                        let on_error = match it.next().map(|p| p.as_str().trim().to_string()).as_deref() {
                            Some("allow") => OnError::Allow,
                            Some("deny") => OnError::Deny,
                            _ => OnError::Local,
                        };
                        SettingKind::State(StateStore::Redis { url, on_error })
                    }
                    _ => SettingKind::State(StateStore::Local),
                }
            }
            Rule::g_audit => {
                let path = self.value(args.next()?);
                SettingKind::Audit { path, rotate: args.next().and_then(|p| self.size(p)) }
            }
            Rule::g_max_body => SettingKind::MaxBody(self.size(args.next()?)?),
            Rule::g_max_header_bytes => SettingKind::MaxHeaderBytes(self.size(args.next()?)?),
            Rule::g_max_headers => SettingKind::MaxHeaders(self.uint(args.next()?)?),
            Rule::g_header_timeout => SettingKind::HeaderTimeout(self.duration(args.next()?)?),
            Rule::g_idle_timeout => SettingKind::IdleTimeout(self.duration(args.next()?)?),
            Rule::g_drain_timeout => SettingKind::DrainTimeout(self.duration(args.next()?)?),
            Rule::g_tls => {
                let cert = self.value(args.next()?);
                SettingKind::Tls { cert, key: self.value(args.next()?) }
            }
            Rule::g_policy_header => SettingKind::PolicyHeader(args.next()?.as_str().starts_with('t')),
            Rule::g_forwarded => SettingKind::Forwarded(match args.next()?.as_str().trim() {
                "strip" => ForwardedMode::Strip,
                "keep" => ForwardedMode::Keep,
                _ => ForwardedMode::Append,
            }),
            _ => return None,
        };
        Some(Setting { kind, span })
    }

    // ------------------------------------------------------------ upstream

    pub(super) fn upstream_stmt(&mut self, pair: P<'_>) -> Option<UpstreamStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::u_target => {
                let url = self.value(args.next()?);
                let mut weight = None;
                let mut region = None;
                for p in args {
                    let q = inner(p.clone()).find(|p| !p.as_rule_name_is_kw())?;
                    match p.as_rule() {
                        Rule::target_weight => weight = self.uint(q),
                        _ => region = Some(self.string(q)),
                    }
                }
                UpstreamStmtKind::Target(Target { url, weight, region })
            }
            Rule::u_balance => {
                let mode = args.next()?;
                let text = mode.as_str().trim().to_string();
                let b = match inner(mode).next() {
                    Some(h) if h.as_rule() == Rule::balance_hash => {
                        let e = inner(h).find(|p| p.as_rule() == Rule::expr)?;
                        Balance::Hash(self.expr(e)?)
                    }
                    _ => match text.as_str() {
                        "weighted" => Balance::Weighted,
                        "least_conn" => Balance::LeastConn,
                        "least_latency" => Balance::LeastLatency,
                        _ => Balance::RoundRobin,
                    },
                };
                UpstreamStmtKind::Balance(b)
            }
            Rule::u_header => {
                let name = self.header_name(args.next()?);
                UpstreamStmtKind::Header { name, value: self.value(args.next()?) }
            }
            Rule::u_timeout => UpstreamStmtKind::Timeout(self.duration(args.next()?)?),
            Rule::u_connect_timeout => UpstreamStmtKind::ConnectTimeout(self.duration(args.next()?)?),
            Rule::u_health => {
                let method = Method::parse(args.next()?.as_str())?;
                let path = self.string(args.next()?);
                let mut args = inner(args.next()?).filter(|p| !p.as_rule_name_is_kw());
                let every = self.duration(args.next()?)?;
                let mut h =
                    HealthCheck { method, path, every, timeout: None, expect: None, healthy: None, unhealthy: None };
                for p in args {
                    let slot = match p.as_rule() {
                        Rule::health_expect => &mut h.expect,
                        Rule::health_healthy => &mut h.healthy,
                        Rule::health_unhealthy => &mut h.unhealthy,
                        _ => {
                            h.timeout = Some(self.duration(p)?);
                            continue;
                        }
                    };
                    *slot = Some(self.uint(inner(p).find(|q| q.as_rule() == Rule::int)?)?);
                }
                UpstreamStmtKind::Health(h)
            }
            Rule::u_retry => {
                let attempts = self.uint(args.next()?)?;
                let mut on = vec![];
                for c in args {
                    let cspan = self.span(&c);
                    match c.as_str().trim() {
                        "connect_error" => on.push(RetryCond::ConnectError(cspan)),
                        "timeout" => on.push(RetryCond::Timeout(cspan)),
                        _ => {
                            let q = inner(c).next()?;
                            on.push(RetryCond::Status(self.uint(q)?));
                        }
                    }
                }
                UpstreamStmtKind::Retry(Retry { attempts, on })
            }
            Rule::u_max_connections => UpstreamStmtKind::MaxConnections(self.uint(args.next()?)?),
            Rule::u_affinity => UpstreamStmtKind::Affinity(self.expr(args.next()?)?),
            _ => return None,
        };
        Some(UpstreamStmt { kind, span })
    }

    fn set_message(&mut self, p: P<'_>) -> Option<Str> {
        inner(p).find(|p| p.as_rule() == Rule::string).map(|s| self.string(s))
    }

    // ------------------------------------------------------------ jwt

    pub(super) fn jwt_stmt(&mut self, pair: P<'_>) -> Option<JwtStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::j_alg => {
                let a = args.next()?;
                JwtStmtKind::Alg(Ident { name: a.as_str().to_string(), span: self.span(&a) })
            }
            Rule::j_secret => JwtStmtKind::Secret(self.value(args.next()?)),
            Rule::j_key => JwtStmtKind::Key(self.string(args.next()?)),
            Rule::j_jwks => JwtStmtKind::Jwks(self.string(args.next()?)),
            Rule::j_issuer => JwtStmtKind::Issuer(self.string(args.next()?)),
            Rule::j_audience => JwtStmtKind::Audience(self.string(args.next()?)),
            Rule::j_leeway => JwtStmtKind::Leeway(self.duration(args.next()?)?),
            Rule::j_tenant => {
                let a = args.next()?;
                match a.as_rule() {
                    Rule::string => JwtStmtKind::TenantName(self.string(a)),
                    _ => {
                        let fspan = self.span(&a);
                        JwtStmtKind::TenantClaim(Expr { kind: ExprKind::Fact(self.fact(a)?), span: fspan })
                    }
                }
            }
            Rule::j_message => JwtStmtKind::Message(self.string(args.next()?)),
            _ => return None,
        };
        Some(JwtStmt { kind, span })
    }

    // ------------------------------------------------------------ tenant

    pub(super) fn tenant_stmt(&mut self, pair: P<'_>) -> Option<TenantStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::t_rate => {
                let rate = self.rate(args.next()?)?;
                let burst = match args.next() {
                    Some(p) => Some(self.uint(p)?),
                    None => None,
                };
                TenantStmtKind::Rate { rate, burst }
            }
            Rule::t_tokens => TenantStmtKind::Tokens(self.rate(args.next()?)?),
            Rule::t_concurrent => TenantStmtKind::Concurrent(self.uint(args.next()?)?),
            Rule::t_region => TenantStmtKind::Region(self.string(args.next()?)),
            _ => return None,
        };
        Some(TenantStmt { kind, span })
    }

    // ------------------------------------------------------------ route

    pub(super) fn route_stmt(&mut self, pair: P<'_>) -> Option<RouteStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::r_when => RouteStmtKind::When(self.when(args)?),
            Rule::r_auth_none => RouteStmtKind::AuthNone,
            Rule::r_auth => RouteStmtKind::Auth(self.auth(args)?),
            Rule::r_allow => {
                let cond = self.expr(args.next()?)?;
                let status = match args.next() {
                    Some(p) => Some(self.uint(p)?),
                    None => None,
                };
                let message = args.next().map(|p| self.string(p));
                RouteStmtKind::Allow { cond, status, message }
            }
            Rule::r_deny => {
                let status = self.uint(args.next()?)?;
                let message = self.string(args.next()?);
                let cond = self.expr(args.next()?)?;
                RouteStmtKind::Deny { status, message, cond }
            }
            Rule::r_limit => RouteStmtKind::Limit(self.limit(args)?),
            Rule::r_limit_use => {
                let name = self.ident(args.next()?);
                let cond = match args.next() {
                    Some(p) => Some(self.expr(p)?),
                    None => None,
                };
                RouteStmtKind::LimitUse { name, cond }
            }
            Rule::r_set => {
                let name = self.header_name(args.next()?);
                RouteStmtKind::SetHeader { name, value: self.value(args.next()?) }
            }
            Rule::r_strip => RouteStmtKind::StripHeaders(args.map(|p| self.header_name(p)).collect()),
            Rule::r_rewrite => {
                let r = args.next()?;
                let rule = r.as_rule();
                let mut strs = inner(r).filter(|p| p.as_rule() == Rule::string).map(|p| self.string(p));
                match rule {
                    Rule::rewrite_prefix => {
                        let from = strs.next()?;
                        RouteStmtKind::Rewrite(Rewrite::Prefix { from, to: strs.next()? })
                    }
                    _ => RouteStmtKind::Rewrite(Rewrite::Path(strs.next()?)),
                }
            }
            Rule::r_respond => {
                let status = self.uint(args.next()?)?;
                let mut body = None;
                let mut headers = vec![];
                for p in args {
                    match p.as_rule() {
                        Rule::json_template => {
                            let span = self.span(&p);
                            let value = self.json_template(p)?;
                            body = Some(match value.as_literal() {
                                Some(value) => ResponseBody::Json(Json { value, span }),
                                None => ResponseBody::JsonTemplate(JsonTemplate { value, span }),
                            });
                        }
                        Rule::template => body = Some(ResponseBody::Text(self.value(p))),
                        Rule::respond_header => {
                            let mut it = inner(p).filter(|p| !p.as_rule_name_is_kw());
                            let name = self.header_name(it.next()?);
                            headers.push((name, self.value(it.next()?)));
                        }
                        _ => {}
                    }
                }
                RouteStmtKind::Respond { status, body, headers }
            }
            Rule::r_cache => {
                let ttl = self.duration(args.next()?)?;
                let (mut max, mut shared, mut statuses) = (None, false, vec![]);
                for p in args {
                    match p.as_rule() {
                        Rule::size => max = Some(self.size(p)?),
                        Rule::cache_shared => shared = true,
                        _ => {
                            for s in inner(p).filter(|s| s.as_rule() == Rule::status) {
                                statuses.push(self.uint(s)?);
                            }
                        }
                    }
                }
                RouteStmtKind::Cache { ttl, max, shared, statuses }
            }
            Rule::r_websocket => RouteStmtKind::Websocket,
            Rule::r_idempotent => RouteStmtKind::Idempotent,
            Rule::r_cors => RouteStmtKind::Cors(self.cors(args)?),
            Rule::r_serve => {
                let b = args.next()?;
                RouteStmtKind::Serve(BuiltinRef { builtin: Builtin::parse(b.as_str())?, span: self.span(&b) })
            }
            Rule::r_to => RouteStmtKind::To(self.ident(args.next()?)),
            _ => return None,
        };
        Some(RouteStmt { kind, span })
    }

    /// `when METHODS "path" [host "h"] [if EXPR]`, keywords skipped.
    fn when<'i>(&mut self, mut args: impl Iterator<Item = P<'i>>) -> Option<When> {
        let mp = args.next()?;
        let methods_span = self.span(&mp);
        let methods = inner(mp).filter_map(|m| Method::parse(m.as_str())).collect();
        let path = self.string(inner(args.next()?).next()?);
        let mut host = None;
        let mut cond = None;
        for p in args {
            match p.as_rule() {
                Rule::string => host = Some(self.string(p)),
                Rule::expr => cond = Some(self.expr(p)?),
                _ => {}
            }
        }
        Some(When { methods, methods_span, path, host, cond })
    }

    /// `cors origins [...] CLAUSE*`, keywords skipped.
    fn cors<'i>(&mut self, mut args: impl Iterator<Item = P<'i>>) -> Option<Cors> {
        let origins = inner(args.next()?).map(|p| self.string(p)).collect();
        let mut c = Cors {
            origins,
            methods: vec![],
            headers: vec![],
            expose: vec![],
            credentials: None,
            max_age: None,
            clauses: vec![],
        };
        for clause in args {
            let Some(p) = inner(clause).next() else { continue };
            let cspan = self.span(&p);
            let rule = p.as_rule();
            let arg = inner(p).find(|p| !p.as_rule_name_is_kw());
            let strings = |this: &mut Self, a: Option<P<'i>>| -> Vec<Str> {
                a.map(|l| inner(l).map(|s| this.string(s)).collect()).unwrap_or_default()
            };
            let word = match rule {
                Rule::cors_methods => {
                    c.methods =
                        arg.map(|m| inner(m).filter_map(|m| Method::parse(m.as_str())).collect()).unwrap_or_default();
                    "methods"
                }
                Rule::cors_headers => {
                    c.headers = strings(self, arg);
                    "headers"
                }
                Rule::cors_expose => {
                    c.expose = strings(self, arg);
                    "expose"
                }
                Rule::cors_credentials => {
                    c.credentials = Some(cspan);
                    "credentials"
                }
                _ => {
                    c.max_age = Some(self.duration(arg?)?);
                    "max_age"
                }
            };
            c.clauses.push((word, cspan));
        }
        Some(c)
    }

    /// `auth SET [via CREDENTIAL, ...] [or SET ...]... [optional] [message "..."]`, keywords skipped.
    fn auth<'i>(&mut self, args: impl Iterator<Item = P<'i>>) -> Option<Auth> {
        let mut auth = Auth { methods: vec![], optional: false, message: None };
        for p in args {
            match p.as_rule() {
                Rule::auth_method => {
                    let mut it = inner(p).filter(|p| !p.as_rule_name_is_kw());
                    let set = self.ident(it.next()?);
                    let via = self.credentials(it)?;
                    auth.methods.push(AuthMethod { set, via });
                }
                Rule::optional_flag => auth.optional = true,
                Rule::set_message => auth.message = self.set_message(p),
                _ => {}
            }
        }
        Some(auth)
    }

    fn credentials<'i>(&mut self, args: impl Iterator<Item = P<'i>>) -> Option<Vec<Credential>> {
        let mut via = vec![];
        for p in args.filter(|p| p.as_rule() == Rule::credential) {
            let c = inner(p).next()?;
            let cspan = self.span(&c);
            match c.as_rule() {
                Rule::cred_bearer => via.push(Credential::Bearer(cspan)),
                Rule::cred_header => {
                    let s = inner(c).find(|p| p.as_rule() == Rule::string)?;
                    via.push(Credential::Header(self.lower_string(s)));
                }
                _ => {
                    let s = inner(c).find(|p| p.as_rule() == Rule::string)?;
                    via.push(Credential::Query(self.string(s)));
                }
            }
        }
        Some(via)
    }

    pub(super) fn limit<'i>(&mut self, args: impl Iterator<Item = P<'i>>) -> Option<Limit> {
        let mut limit = Limit {
            kind: LimitKind::Concurrent(Quantity { value: 0, span: Span::default() }),
            per: LimitKey::Route,
            model: None,
            cond: None,
            shadow: false,
        };
        for p in args {
            match p.as_rule() {
                Rule::limit_kind => {
                    let k = inner(p).next()?;
                    let rule = k.as_rule();
                    let mut a = inner(k).filter(|p| !p.as_rule_name_is_kw());
                    limit.kind = match rule {
                        Rule::limit_rate => {
                            let rate = self.rate(a.next()?)?;
                            let burst = match a.next() {
                                Some(p) => Some(self.uint(p)?),
                                None => None,
                            };
                            LimitKind::Rate { rate, burst }
                        }
                        Rule::limit_tokens => {
                            let rate = self.rate(a.next()?)?;
                            let estimate = match a.next() {
                                Some(p) => Some(self.uint(p)?),
                                None => None,
                            };
                            LimitKind::Tokens { rate, estimate }
                        }
                        _ => LimitKind::Concurrent(self.uint(a.next()?)?),
                    };
                }
                Rule::limit_key | Rule::shared_key => {
                    let text = p.as_str().trim().to_string();
                    let k = inner(p).next();
                    limit.per = match k {
                        Some(k) if k.as_rule() == Rule::lk_header => {
                            let s = inner(k).find(|p| p.as_rule() == Rule::string)?;
                            LimitKey::Header(self.lower_string(s))
                        }
                        Some(k) if k.as_rule() == Rule::lk_expr => {
                            let e = inner(k).find(|p| p.as_rule() == Rule::expr)?;
                            LimitKey::Expr(self.expr(e)?)
                        }
                        Some(k) if k.as_rule() == Rule::lk_claim => {
                            let f = inner(k).find(|p| p.as_rule() == Rule::fact)?;
                            let span = self.span(&f);
                            LimitKey::Expr(Expr { kind: ExprKind::Fact(self.fact(f)?), span })
                        }
                        _ => match text.as_str() {
                            "key" => LimitKey::Key,
                            "tenant" => LimitKey::Tenant,
                            "client" => LimitKey::Client,
                            _ => LimitKey::Route,
                        },
                    };
                }
                Rule::regex => limit.model = Some(self.regex(p)),
                Rule::expr => limit.cond = Some(self.expr(p)?),
                Rule::shadow_flag => limit.shadow = true,
                _ => {}
            }
        }
        Some(limit)
    }

    // ------------------------------------------------------------ tests

    pub(super) fn test_stmt(&mut self, pair: P<'_>) -> Option<TestStmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut args = inner(pair).filter(|p| !p.as_rule_name_is_kw()).collect::<Vec<_>>().into_iter();
        let kind = match rule {
            Rule::t_send => {
                let method = Method::parse(args.next()?.as_str())?;
                let path = self.string(args.next()?);
                let mut send = Send { method, path, headers: vec![], body: None, client: None };
                for p in args {
                    match p.as_rule() {
                        Rule::send_header => {
                            let mut s = inner(p).filter(|p| p.as_rule() == Rule::string);
                            let name = self.lower_string(s.next()?);
                            send.headers.push((name, self.string(s.next()?)));
                        }
                        Rule::send_body => {
                            let j = inner(p).find(|p| p.as_rule() == Rule::json_value)?;
                            send.body = Some(self.json(j)?);
                        }
                        Rule::send_client => {
                            let s = inner(p).find(|p| p.as_rule() == Rule::string)?;
                            send.client = Some(self.string(s));
                        }
                        _ => {}
                    }
                }
                TestStmtKind::Send(send)
            }
            Rule::t_advance => TestStmtKind::Advance(self.duration(args.next()?)?),
            Rule::t_expect => {
                let e = args.next()?;
                let rule = e.as_rule();
                // `limit tenant NAME`, not `limit NAME`: said only by its keyword.
                let of_tenant = inner(e.clone()).any(|p| p.as_rule() == Rule::kw_tenant);
                let mut a = inner(e).filter(|p| !p.as_rule_name_is_kw());
                TestStmtKind::Expect(match rule {
                    Rule::expect_status => {
                        let status = self.uint(a.next()?)?;
                        Expectation::Status { status, message: a.next().map(|p| self.string(p)) }
                    }
                    Rule::expect_route => Expectation::Route(self.ident(a.next()?)),
                    Rule::expect_upstream => Expectation::Upstream(self.ident(a.next()?)),
                    Rule::expect_cache => {
                        let p = a.next()?;
                        let result = match p.as_str() {
                            "hit" => CacheResult::Hit,
                            "miss" => CacheResult::Miss,
                            _ => CacheResult::Bypass,
                        };
                        Expectation::Cache { result, span: self.span(&p) }
                    }
                    Rule::expect_header => {
                        let name = self.header_name(a.next()?);
                        let value = a.next().filter(|p| p.as_rule() == Rule::string).map(|p| self.string(p));
                        Expectation::Header { name, value }
                    }
                    Rule::expect_limit => Expectation::Limit { tenant: of_tenant, name: self.ident(a.next()?) },
                    Rule::expect_body => {
                        let p = a.next()?;
                        Expectation::Body(match p.as_rule() {
                            Rule::json_value => ResponseBody::Json(self.json(p)?),
                            _ => {
                                let s = self.string(p);
                                ResponseBody::Text(Value { span: s.span, parts: vec![ValuePart::Lit(s)] })
                            }
                        })
                    }
                    Rule::expect_claim => {
                        let name = self.string(a.next()?);
                        Expectation::Claim { name, value: self.string(a.next()?) }
                    }
                    _ => Expectation::Tenant(self.ident(a.next()?)),
                })
            }
            _ => return None,
        };
        Some(TestStmt { kind, span })
    }
}
