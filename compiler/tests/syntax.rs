//! Parser tests: each construct of the language reads into the AST it means.

// Helpers outside `#[test]` functions fail the test by panicking.
#![allow(clippy::panic)]

use gw_compiler::ast::*;
use gw_compiler::source::FileId;
use gw_compiler::syntax;

fn parse(text: &str) -> File {
    let (parsed, diags) = syntax::parse(FileId(0), text);
    assert!(diags.is_empty(), "unexpected diagnostics for {text:?}: {diags:#?}");
    parsed.file
}

fn route(text: &str) -> Route {
    match parse(text).items.into_iter().next() {
        Some(Item::Route(r)) => r,
        other => panic!("expected a route, got {other:?}"),
    }
}

fn stmt(text: &str) -> RouteStmtKind {
    let r = route(&format!("route r {{ {text} }}"));
    r.stmts.into_iter().next().map(|s| s.kind).unwrap_or_else(|| panic!("no statement in {text}"))
}

fn expr(text: &str) -> Expr {
    match parse(&format!("matcher m = {text}")).items.into_iter().next() {
        Some(Item::Matcher(m)) => m.expr,
        other => panic!("expected a matcher, got {other:?}"),
    }
}

/// An expression as a fully parenthesised string, to check precedence.
fn shape(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Binary { op, lhs, rhs, .. } => format!("({} {} {})", shape(lhs), op.as_str(), shape(rhs)),
        ExprKind::Not(i) => format!("(not {})", shape(i)),
        ExprKind::Exists(i) => format!("({} exists)", shape(i)),
        ExprKind::Fact(f) => format!("{f:?}"),
        ExprKind::Ref(r) => r.name.clone(),
        ExprKind::Lit(Lit::Int(n)) => n.to_string(),
        ExprKind::Lit(Lit::Str(s)) => format!("{s:?}"),
        ExprKind::Lit(Lit::Bool(b)) => b.to_string(),
        ExprKind::Lit(Lit::Float(f)) => f.to_string(),
        ExprKind::Lit(Lit::Regex(r)) => format!("/{}/", r.pattern),
        ExprKind::List(items) => format!("[{}]", items.iter().map(shape).collect::<Vec<_>>().join(", ")),
        ExprKind::Call { func, args } => {
            format!("{}({})", func.as_str(), args.iter().map(shape).collect::<Vec<_>>().join(", "))
        }
    }
}

#[test]
fn precedence_is_or_then_and_then_not_then_comparison() {
    assert_eq!(shape(&expr("a or b and c")), "(a or (b and c))");
    assert_eq!(shape(&expr("not a == 1 and b")), "((not (a == 1)) and b)");
    assert_eq!(shape(&expr("(a or b) and c")), "((a or b) and c)");
    assert_eq!(shape(&expr("not not a")), "(not (not a))");
    assert_eq!(shape(&expr("a and b and c")), "((a and b) and c)");
}

#[test]
fn every_operator_reads() {
    for (src, op) in [
        ("==", BinOp::Eq),
        ("!=", BinOp::Ne),
        (">", BinOp::Gt),
        (">=", BinOp::Ge),
        ("<", BinOp::Lt),
        ("<=", BinOp::Le),
        ("contains", BinOp::Contains),
        ("starts_with", BinOp::StartsWith),
        ("ends_with", BinOp::EndsWith),
        ("in", BinOp::In),
    ] {
        let e = expr(&format!("body.x {src} 1"));
        assert!(matches!(e.kind, ExprKind::Binary { op: o, .. } if o == op), "{src}");
    }
    let e = expr("body.model matches /^gpt-4\\/x/i");
    let ExprKind::Binary { op: BinOp::Matches, rhs, .. } = e.kind else { panic!("not matches") };
    let ExprKind::Lit(Lit::Regex(r)) = rhs.kind else { panic!("not a regex") };
    assert_eq!(r.pattern, "^gpt-4/x");
    assert!(r.case_insensitive);
}

#[test]
fn facts_read_with_names_and_paths() {
    let ExprKind::Exists(inner) = expr("header[\"X-Tenant\"] exists").kind else { panic!("not exists") };
    assert_eq!(inner.kind, ExprKind::Fact(Fact::Header("x-tenant".into())));
    assert!(matches!(expr("header.X-Api-Key").kind, ExprKind::Fact(Fact::Header(h)) if h == "x-api-key"));
    assert!(matches!(expr("query[\"model\"]").kind, ExprKind::Fact(Fact::Query(q)) if q == "model"));
    assert!(matches!(expr("param.id").kind, ExprKind::Fact(Fact::Param(p)) if p == "id"));
    assert_eq!(
        expr("body.messages[0][\"role name\"]").kind,
        ExprKind::Fact(Fact::Body(vec![
            PathSeg::Field("messages".into()),
            PathSeg::Index(0),
            PathSeg::Field("role name".into())
        ]))
    );
    for (src, fact) in [
        ("method", Fact::Method),
        ("path", Fact::Path),
        ("host", Fact::Host),
        ("client_ip", Fact::ClientIp),
        ("tenant", Fact::Tenant),
        ("key", Fact::Key),
    ] {
        assert_eq!(expr(src).kind, ExprKind::Fact(fact), "{src}");
    }
}

#[test]
fn literals_and_calls() {
    assert_eq!(shape(&expr("[1, \"a\", true, 2.5, -3]")), "[1, \"a\", true, 2.5, -3]");
    assert_eq!(shape(&expr("len(lower(header.x)) > 3")), "(len(lower(Header(\"x\"))) > 3)");
    assert_eq!(shape(&expr("number(query.n) <= 1_000")), "(number(Query(\"n\")) <= 1000)");
    assert!(matches!(expr("\"a\\n\\\"b\\u{e9}\"").kind, ExprKind::Lit(Lit::Str(s)) if s == "a\n\"bé"));
}

#[test]
fn quantities_convert_to_base_units() {
    let file = parse(
        "gateway { max_body 10MB; max_header_bytes 64KiB; header_timeout 1500ms; idle_timeout 2m; drain_timeout 1h }",
    );
    let Some(Item::Gateway(g)) = file.items.first() else { panic!("no gateway") };
    let values: Vec<u64> = g
        .settings
        .iter()
        .map(|s| match &s.kind {
            SettingKind::MaxBody(q)
            | SettingKind::MaxHeaderBytes(q)
            | SettingKind::HeaderTimeout(q)
            | SettingKind::IdleTimeout(q)
            | SettingKind::DrainTimeout(q) => q.value,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(values, vec![10_000_000, 65_536, 1_500_000_000, 120_000_000_000, 3_600_000_000_000]);
}

#[test]
fn rates_read_counts_suffixes_and_windows() {
    let file = parse("tenant t { rate 100/s burst 200; tokens 500k/min } tenant u { rate 5/10s; tokens 2M/d }");
    let rates: Vec<(u64, u64)> = file
        .items
        .iter()
        .flat_map(|i| match i {
            Item::Tenant(t) => t.stmts.clone(),
            _ => vec![],
        })
        .filter_map(|s| match s.kind {
            TenantStmtKind::Rate { rate, .. } | TenantStmtKind::Tokens(rate) => Some((rate.count, rate.window_ns)),
            _ => None,
        })
        .collect();
    let s = 1_000_000_000;
    assert_eq!(rates, vec![(100, s), (500_000, 60 * s), (5, 10 * s), (2_000_000, 86_400 * s)]);
}

#[test]
fn when_reads_methods_path_host_and_condition() {
    let RouteStmtKind::When(w) = stmt("when GET|POST \"/v1/jobs/{id}\" host \"*.example.com\" if header.x == \"1\"")
    else {
        panic!("not when")
    };
    assert_eq!(w.methods, vec![Method::Get, Method::Post]);
    assert_eq!(w.path.value, "/v1/jobs/{id}");
    assert_eq!(w.host.map(|h| h.value), Some("*.example.com".to_string()));
    assert!(w.cond.is_some());
}

#[test]
fn auth_reads_sources_and_optional() {
    let RouteStmtKind::Auth(a) = stmt("auth customers via header \"X-Key\", bearer, query \"key\" optional") else {
        panic!("not auth")
    };
    assert_eq!(a.methods[0].set.name, "customers");
    assert!(a.optional);
    let via = &a.methods[0].via;
    assert!(matches!(&via[0], Credential::Header(h) if h.value == "x-key"));
    assert!(matches!(&via[1], Credential::Bearer(_)));
    assert!(matches!(&via[2], Credential::Query(q) if q.value == "key"));
    let RouteStmtKind::Auth(a) = stmt("auth customers") else { panic!("not auth") };
    assert!(a.methods[0].via.is_empty() && !a.optional && a.message.is_none());
}

#[test]
fn auth_tries_several_sets_in_order_with_one_message() {
    let RouteStmtKind::Auth(a) = stmt("auth customers via header \"x-key\" or tokens or staff message \"no\"") else {
        panic!("not auth")
    };
    let names: Vec<&str> = a.methods.iter().map(|m| m.set.name.as_str()).collect();
    assert_eq!(names, ["customers", "tokens", "staff"]);
    assert_eq!(a.methods[0].via.len(), 1);
    assert_eq!(a.message.map(|m| m.value), Some("no".to_string()));
}

#[test]
fn limits_read_every_part() {
    let RouteStmtKind::Limit(l) =
        stmt("limit tokens 100k/min estimate 500 per tenant model /^gpt-4/ if body.stream == true shadow")
    else {
        panic!("not a limit")
    };
    assert!(matches!(l.kind, LimitKind::Tokens { rate, estimate: Some(e) } if rate.count == 100_000 && e.value == 500));
    assert_eq!(l.per, LimitKey::Tenant);
    assert_eq!(l.model.map(|m| m.pattern), Some("^gpt-4".to_string()));
    assert!(l.cond.is_some() && l.shadow);

    let RouteStmtKind::Limit(l) = stmt("limit rate 10/s burst 20 per header \"X-User\"") else { panic!() };
    assert!(matches!(l.kind, LimitKind::Rate { burst: Some(b), .. } if b.value == 20));
    assert!(matches!(l.per, LimitKey::Header(h) if h.value == "x-user"));

    let RouteStmtKind::Limit(l) = stmt("limit concurrent 5 per (body.user)") else { panic!() };
    assert!(matches!(l.kind, LimitKind::Concurrent(q) if q.value == 5));
    assert!(matches!(l.per, LimitKey::Expr(_)));

    let RouteStmtKind::Limit(l) = stmt("limit rate 1/s") else { panic!() };
    assert_eq!(l.per, LimitKey::Route);
    for (src, key) in [("key", LimitKey::Key), ("client", LimitKey::Client), ("route", LimitKey::Route)] {
        let RouteStmtKind::Limit(l) = stmt(&format!("limit rate 1/s per {src}")) else { panic!() };
        assert_eq!(l.per, key);
    }
}

#[test]
fn guards_transforms_and_actions_read() {
    assert!(
        matches!(stmt("deny 403 \"no\" if true"), RouteStmtKind::Deny { status, message, .. } if status.value == 403 && message.value == "no")
    );
    assert!(
        matches!(stmt("allow if false else 451 \"gone\""), RouteStmtKind::Allow { status: Some(s), message: Some(m), .. } if s.value == 451 && m.value == "gone")
    );
    assert!(matches!(stmt("allow if true"), RouteStmtKind::Allow { status: None, message: None, .. }));
    assert!(
        matches!(stmt("set header \"X-A\" = \"v\" + env(\"E\")"), RouteStmtKind::SetHeader { name, value } if name.value == "x-a" && value.parts.len() == 2)
    );
    assert!(matches!(stmt("strip header \"a\", \"b\""), RouteStmtKind::StripHeaders(h) if h.len() == 2));
    assert!(
        matches!(stmt("rewrite prefix \"/proxy\" => \"\""), RouteStmtKind::Rewrite(Rewrite::Prefix { from, to }) if from.value == "/proxy" && to.value.is_empty())
    );
    assert!(
        matches!(stmt("rewrite path \"/v2/{id}\""), RouteStmtKind::Rewrite(Rewrite::Path(p)) if p.value == "/v2/{id}")
    );
    assert!(
        matches!(stmt("respond 200 json {\"ok\": [1, null]}"), RouteStmtKind::Respond { body: Some(ResponseBody::Json(j)), .. } if j.value == serde_json::json!({"ok": [1, null]}))
    );
    assert!(matches!(stmt("respond 204"), RouteStmtKind::Respond { body: None, .. }));
    assert!(
        matches!(stmt("respond 200 \"pong\""), RouteStmtKind::Respond { body: Some(ResponseBody::Text(t)), .. } if matches!(t.parts.as_slice(), [ValuePart::Lit(s)] if s.value == "pong"))
    );
    assert!(matches!(
        stmt("respond 200 json {\"t\": tenant, \"n\": [1, \"x\"]} header \"x-t\" = tenant"),
        RouteStmtKind::Respond { body: Some(ResponseBody::JsonTemplate(_)), headers, .. } if headers.len() == 1
    ));
    assert!(matches!(
        stmt("respond 204 header \"allow\" = \"GET\""),
        RouteStmtKind::Respond { body: None, headers, .. } if headers.len() == 1
    ));
    assert!(
        matches!(stmt("cache 30s max 1MB"), RouteStmtKind::Cache { ttl, max: Some(m), shared: false, statuses } if ttl.value == 30_000_000_000 && m.value == 1_000_000 && statuses.is_empty())
    );
    assert!(
        matches!(stmt("cache 5s shared status 200, 404"), RouteStmtKind::Cache { max: None, shared: true, statuses, .. } if statuses.iter().map(|s| s.value).collect::<Vec<_>>() == [200, 404])
    );
    assert!(matches!(stmt("websocket"), RouteStmtKind::Websocket));
    assert!(
        matches!(stmt("cors origins [\"*\"] methods GET|POST"), RouteStmtKind::Cors(c) if c.origins.len() == 1 && c.methods.len() == 2)
    );
    assert!(matches!(
        stmt("cors origins [\"https://a.b\"] headers [\"content-type\"] expose [\"x-r\"] credentials max_age 10m"),
        RouteStmtKind::Cors(c) if c.headers.len() == 1 && c.expose.len() == 1 && c.credentials.is_some() && c.max_age.is_some()
    ));
    assert!(matches!(stmt("serve tokens"), RouteStmtKind::Serve(b) if b.builtin.as_str() == "tokens"));
    assert!(matches!(stmt("to gpu"), RouteStmtKind::To(u) if u.name == "gpu"));
}

#[test]
fn upstreams_read_every_statement() {
    let file = parse(
        r#"upstream gpu {
            balance hash(header["x-user"])
            target "http://10.0.0.1:8000" weight 3 region "east"
            header "authorization" = "Bearer " + env("K")
            timeout 60s; connect_timeout 2s
            health GET "/health" every 10s timeout 2s
            retry 2 on connect_error, timeout, 502
            max_connections 100
            affinity header["x-region"]
        }"#,
    );
    let Some(Item::Upstream(u)) = file.items.first() else { panic!("no upstream") };
    let kws: Vec<&str> = u.stmts.iter().map(|s| s.kind.keyword()).collect();
    assert_eq!(
        kws,
        ["balance", "target", "header", "timeout", "connect_timeout", "health", "retry", "max_connections", "affinity"]
    );
    let retry = u.stmts.iter().find_map(|s| match &s.kind {
        UpstreamStmtKind::Retry(r) => Some(r.clone()),
        _ => None,
    });
    let retry = retry.expect("retry");
    assert_eq!(retry.attempts.value, 2);
    assert_eq!(retry.on.len(), 3);
}

#[test]
fn gateway_keys_imports_and_tests_read() {
    let file = parse(
        r#"import "common.gwp"
        gateway {
            listen "127.0.0.1:8080"; admin "127.0.0.1:9090" token env("T")
            state redis env("R") on_error deny
            audit "a.jsonl" rotate 100MB
            max_headers 50; tls cert "c.pem" key "k.pem"; policy_header false; forwarded strip
        }
        keys k from "k.keys" salt env("SALT")
        test "t" {
            send POST "/x?a=1" header "X-A" = "b" body {"m": 1} client "10.0.0.1"
            advance 1s
            expect 200 "ok"
            expect route r; expect upstream u; expect tenant t
        }"#,
    );
    assert!(matches!(&file.items[0], Item::Import(i) if i.path.value == "common.gwp"));
    let Item::Gateway(g) = &file.items[1] else { panic!() };
    assert_eq!(g.settings.len(), 8);
    assert!(g
        .settings
        .iter()
        .any(|s| matches!(&s.kind, SettingKind::State(StateStore::Redis { on_error: OnError::Deny, .. }))));
    assert!(g.settings.iter().any(|s| matches!(&s.kind, SettingKind::PolicyHeader(false))));
    assert!(matches!(&file.items[2], Item::Keys(k) if k.salt.is_some()));
    let Item::Test(t) = &file.items[3] else { panic!() };
    assert_eq!(t.stmts.len(), 6);
    let TestStmtKind::Send(s) = &t.stmts[0].kind else { panic!() };
    assert_eq!(s.headers[0].0.value, "x-a");
    assert_eq!(s.client.as_ref().map(|c| c.value.as_str()), Some("10.0.0.1"));
}

#[test]
fn semicolons_and_newlines_are_interchangeable() {
    let a = parse("route r { when GET \"/\"; to u }");
    let b = parse("route r {\n  when GET \"/\"\n  to u\n}");
    assert_eq!(a.items.len(), b.items.len());
    let (Item::Route(x), Item::Route(y)) = (&a.items[0], &b.items[0]) else { panic!() };
    assert_eq!(x.stmts.len(), 2);
    assert_eq!(y.stmts.len(), 2);
}

#[test]
fn comments_are_collected_for_the_formatter() {
    let (parsed, diags) = syntax::parse(FileId(0), "# top\nroute r { # trailing\n when GET \"/#not\" # x\n to u }\n");
    assert!(diags.is_empty());
    let texts: Vec<&str> = parsed.comments.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["# top", "# trailing", "# x"]);
}

#[test]
fn one_run_reports_many_mistakes() {
    let (_, diags) = syntax::parse(
        FileId(0),
        "route a {\n  wehn GET \"/\"\n  to u\n  timeout 5s\n}\nroute b { deny 4033 \"x\" if true; to u }\n",
    );
    let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(
        codes,
        ["gw::syntax::unknown_statement", "gw::syntax::unknown_statement", "gw::syntax::bad_statement"],
        "{diags:#?}"
    );
    assert_eq!(diags[0].help.as_deref(), Some("did you mean `when`?"));
}
