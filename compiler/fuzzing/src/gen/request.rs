//! Generated requests aimed at a printed policy's routes.

use std::fmt::Write as _;

use arbitrary::Arbitrary;

use gw_compiler::ast::Method;
use gw_compiler::fmt as gwfmt;
use gw_compiler::request::Request;

use super::*;
use crate::world::KEYS;

#[derive(Arbitrary, Debug, Clone)]
pub enum GenPathSeg {
    Word(u8),
    Num(u16),
    Any(String),
}

impl GenPathSeg {
    fn get(&self) -> String {
        match self {
            GenPathSeg::Word(w) => pick(WORDS, *w).to_string(),
            GenPathSeg::Num(n) => format!("p{n}"),
            GenPathSeg::Any(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenReqPath {
    /// A path the aimed-at route's pattern matches (when there is one).
    Instance(Vec<GenPathSeg>, u8),
    Instance2(Vec<GenPathSeg>, u8),
    Instance3(Vec<GenPathSeg>, u8),
    Words(Vec<GenPathSeg>),
    Any(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenReqHost {
    Route(u8),
    Route2(u8),
    Route3(u8),
    None,
    Pool(u8),
    Any(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum GenCredStyle {
    ApiKey,
    Bearer,
    OddBearer,
    Header(u8),
    Query(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub struct GenRequest {
    route: u8,
    /// 1 in 4: a method from a pool instead of the route's.
    method: u8,
    path: GenReqPath,
    /// Mostly the aimed-at route's host (if it has one).
    host: GenReqHost,
    host_as_header: bool,
    key: Option<(u8, GenCredStyle)>,
    headers: Vec<(u8, GenStr)>,
    query: Vec<(u8, GenStr)>,
    body: Option<GenJson>,
    raw_body: Option<String>,
    client: Option<u8>,
}

fn instantiate(pattern: &str, segs: &[GenPathSeg], tail: u8) -> String {
    let mut fill = segs.iter().map(GenPathSeg::get);
    let mut out = vec![];
    for seg in pattern.split('/') {
        if seg.starts_with('{') && seg.ends_with('}') && seg.len() >= 2 {
            out.push(fill.next().unwrap_or_else(|| "p1".into()));
        } else if seg == "*" {
            for _ in 0..tail % 3 {
                out.push(fill.next().unwrap_or_default());
            }
        } else {
            out.push(seg.to_string());
        }
    }
    let mut p = out.join("/");
    match tail / 3 % 16 {
        0 => p.push('/'),
        1 => {
            p.pop();
        }
        2 => p = p.to_ascii_uppercase(),
        _ => {}
    }
    if p.is_empty() && tail.is_multiple_of(2) {
        p.push('/');
    }
    p
}

impl GenRequest {
    pub(crate) fn build(&self, routes: &[RouteShape]) -> Request {
        let shape =
            if routes.is_empty() { RouteShape::default() } else { routes[self.route as usize % routes.len()].clone() };
        let mut req = Request::default();
        let m = self.method;
        req.method = match shape.methods.get(m as usize / 4 % shape.methods.len().max(1)) {
            Some(route_method) if m % 4 != 3 && route_method != "ANY" => route_method.clone(),
            _ => pick(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "BREW", ""], m / 4).into(),
        };
        let path = match &self.path {
            GenReqPath::Instance(segs, tail)
            | GenReqPath::Instance2(segs, tail)
            | GenReqPath::Instance3(segs, tail) => instantiate(&shape.path, segs, *tail),
            GenReqPath::Words(segs) if segs.is_empty() => "/".to_string(),
            GenReqPath::Words(segs) => segs.iter().take(4).map(|s| format!("/{}", s.get())).collect(),
            GenReqPath::Any(s) => s.clone(),
        };
        match path.split_once('?') {
            Some((p, q)) => {
                req.path = p.to_string();
                req.query = gw_compiler::request::parse_query(q);
            }
            None => req.path = path,
        }
        let host = match &self.host {
            GenReqHost::None => String::new(),
            GenReqHost::Route(i) | GenReqHost::Route2(i) | GenReqHost::Route3(i) => match &shape.host {
                Some(h) => match h.strip_prefix("*.") {
                    Some(rest) => format!("{}.{rest}", pick(WORDS, *i)),
                    None if i % 4 == 0 => format!("{h}:8443"),
                    None if i % 4 == 1 => h.to_ascii_uppercase(),
                    None => h.clone(),
                },
                None if i % 2 == 0 => String::new(),
                None => pick(HOSTS, *i).to_string(),
            },
            GenReqHost::Pool(i) => pick(HOSTS, *i).to_string(),
            GenReqHost::Any(s) => s.clone(),
        };
        if self.host_as_header {
            if !host.is_empty() {
                req.headers.push(("host".into(), host));
            }
        } else {
            req.host = host;
        }
        if let Some((k, style)) = &self.key {
            let key = match *k as usize % 8 {
                i if i < KEYS.len() => KEYS[i].0.to_string(),
                // A high byte carries a JWT of the `j0` set instead.
                _ if *k >= 192 => crate::world::TOKENS[*k as usize % crate::world::TOKENS.len()].to_string(),
                _ => "sk-wrong".into(),
            };
            match style {
                GenCredStyle::ApiKey => req.headers.push(("x-api-key".into(), key)),
                GenCredStyle::Bearer => req.headers.push(("authorization".into(), format!("Bearer {key}"))),
                GenCredStyle::OddBearer => req.headers.push(("Authorization".into(), format!("bearer  {key} "))),
                GenCredStyle::Header(h) => req.headers.push((pick(HEADERS, *h).into(), key)),
                GenCredStyle::Query(q) => req.query.push((pick(QUERIES, *q).into(), key)),
            }
        }
        for (h, v) in self.headers.iter().take(4) {
            req.headers.push((pick(HEADERS, *h).into(), v.get()));
        }
        for (q, v) in self.query.iter().take(3) {
            req.query.push((pick(QUERIES, *q).into(), v.get()));
        }
        req.body = match (&self.body, &self.raw_body) {
            (Some(j), _) => Some(j.to_value(0).to_string().into_bytes()),
            (None, Some(raw)) => Some(raw.clone().into_bytes()),
            (None, None) => None,
        };
        req.client_ip = self.client.map(|c| format!("10.0.0.{}", c % 4));
        req
    }

    /// As a test's `send` statement (which has no host field: the host is a header).
    pub(crate) fn print_send(&self, routes: &[RouteShape]) -> String {
        let req = self.build(routes);
        let method = if Method::parse(&req.method).is_some() { req.method.clone() } else { "GET".to_string() };
        let mut path = req.path.clone();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !req.query.is_empty() {
            let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            path = format!("{path}?{}", q.join("&"));
        }
        let mut out = format!("send {method} {}", gwfmt::quote(&path));
        if !req.host.is_empty() {
            let _ = write!(out, " header \"host\" = {}", gwfmt::quote(&req.host));
        }
        for (k, v) in &req.headers {
            let _ = write!(out, " header {} = {}", gwfmt::quote(k), gwfmt::quote(v));
        }
        if let Some(j) = &self.body {
            let _ = write!(out, " body {}", j.print_json(0));
        }
        if let Some(c) = &req.client_ip {
            let _ = write!(out, " client {}", gwfmt::quote(c));
        }
        out
    }
}
