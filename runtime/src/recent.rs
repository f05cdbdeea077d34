//! The last requests, for the operator (`GET /admin/requests`): the most recent audit records
//! in memory, in a bounded ring, whether or not the policy writes an audit file. A record
//! carries a key's name, never the key, so nothing here is key material. Pushing takes one
//! short lock; the oldest record goes when the ring is full.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::audit::AuditRecord;

/// Records kept.
pub const CAPACITY: usize = 1000;

pub struct Recent {
    ring: Mutex<VecDeque<std::sync::Arc<AuditRecord>>>,
    capacity: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Recent::with_capacity(CAPACITY)
    }
}

/// Which records to show: each filter given must match.
#[derive(Debug, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub route: Option<String>,
    /// An exact status (`429`) or a class (`4xx`).
    pub status: Option<String>,
    pub limit: usize,
}

impl Filter {
    /// From a query string: `tenant`, `route`, `status` and `limit` (default 100, at most the
    /// ring's size); any other parameter, or a malformed one, is an error.
    pub fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut f = Filter { limit: 100, ..Filter::default() };
        for (k, v) in gw_engine::request::parse_query(query.unwrap_or("")) {
            match k.as_str() {
                "tenant" => f.tenant = Some(v),
                "route" => f.route = Some(v),
                "status" => {
                    let ok = v.len() == 3
                        && v.as_bytes()[0].is_ascii_digit()
                        && (v[1..].bytes().all(|b| b.is_ascii_digit()) || &v[1..] == "xx");
                    if !ok {
                        return Err(format!("status must be a status like 429 or a class like 4xx, not `{v}`"));
                    }
                    f.status = Some(v);
                }
                "limit" => f.limit = v.parse().map_err(|_| format!("limit must be a whole number, not `{v}`"))?,
                // The admin token may come as `?token=` (see admin.rs).
                "token" => {}
                other => return Err(format!("unknown parameter `{other}`: use tenant, route, status, limit")),
            }
        }
        Ok(f)
    }

    fn matches(&self, r: &AuditRecord) -> bool {
        let status = r.status.to_string();
        self.tenant.as_ref().is_none_or(|t| r.tenant.as_ref() == Some(t))
            && self.route.as_ref().is_none_or(|x| r.route.as_ref() == Some(x))
            && self.status.as_ref().is_none_or(|s| match s.strip_suffix("xx") {
                Some(class) => status.starts_with(class),
                None => *s == status,
            })
    }
}

impl Recent {
    pub fn with_capacity(capacity: usize) -> Recent {
        Recent { ring: Mutex::new(VecDeque::with_capacity(capacity.min(CAPACITY))), capacity: capacity.max(1) }
    }

    pub fn push(&self, r: impl Into<std::sync::Arc<AuditRecord>>) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(r.into());
    }

    /// The records the filter matches, newest first.
    pub fn query(&self, f: &Filter) -> Vec<AuditRecord> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter()
            .rev()
            .filter(|r| f.matches(r))
            .take(f.limit.min(self.capacity))
            .map(|r| AuditRecord::clone(r))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(i: u16, tenant: &str, route: &str, status: u16) -> AuditRecord {
        AuditRecord {
            request_id: format!("r{i}"),
            tenant: Some(tenant.into()),
            route: Some(route.into()),
            status,
            ..AuditRecord::default()
        }
    }

    #[test]
    fn the_ring_is_bounded_and_filters_newest_first() {
        let recent = Recent::with_capacity(4);
        for i in 0..6 {
            recent.push(rec(i, if i % 2 == 0 { "a" } else { "b" }, "chat", if i == 5 { 429 } else { 200 }));
        }
        let ids = |f: &str| -> Vec<String> {
            recent.query(&Filter::parse(Some(f)).unwrap()).into_iter().map(|r| r.request_id).collect()
        };
        assert_eq!(ids(""), ["r5", "r4", "r3", "r2"], "the oldest two are gone");
        assert_eq!(ids("tenant=a"), ["r4", "r2"]);
        assert_eq!(ids("status=4xx"), ["r5"]);
        assert_eq!(ids("status=200&limit=1"), ["r4"]);
        assert_eq!(ids("route=models"), Vec::<String>::new());
        for bad in ["status=4x", "status=abc", "limit=-1", "key=sk-1"] {
            assert!(Filter::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
