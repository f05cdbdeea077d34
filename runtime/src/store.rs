//! Where limit counters live: in this process (`state local`), or in Redis (`state redis`)
//! with the policy's fallback when Redis fails. The proxy talks only to `Limiter`.

use std::sync::Arc;

use gw_compiler::gcra::Gcra;

use crate::limits::{LimitCheck, LimitResult, LocalLimiter};

/// Which store charged a request: its slots are released and its tokens reconciled there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    Local,
    Redis,
    /// Nothing was charged (no limits, or a fallback of `allow`/`deny`).
    None,
}

pub struct Limiter {
    pub local: LocalLimiter,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { local: LocalLimiter::default() }
    }
}

impl Limiter {
    /// Check (and, when admitted, charge) all of a request's limits.
    pub async fn check(&self, checks: &[LimitCheck]) -> (Vec<LimitResult>, Ticket) {
        if checks.is_empty() {
            return (vec![], Ticket::None);
        }
        (self.local.check(checks), Ticket::Local)
    }

    /// Reconcile a token reservation where it was made.
    pub fn adjust(self: &Arc<Self>, ticket: Ticket, id: &str, key: &str, gcra: Gcra, delta: i64) {
        if delta == 0 {
            return;
        }
        if ticket == Ticket::Local {
            self.local.adjust(id, key, gcra, delta);
        }
    }

    /// Give back a concurrency slot where it was taken. Callable from a drop hook.
    pub fn release(self: &Arc<Self>, ticket: Ticket, id: &str, key: &str, _lease: &str) {
        if ticket == Ticket::Local {
            self.local.release(id, key);
        }
    }
}

/// Concurrency slots a request holds; dropping this gives them back, so every way a request
/// can end (finished, failed, cancelled by the client, a WebSocket closing) releases them.
pub struct Held {
    limiter: Arc<Limiter>,
    ticket: Ticket,
    /// (limit id, counter key, lease)
    slots: Vec<(String, String, String)>,
}

impl Held {
    pub fn new(limiter: Arc<Limiter>, ticket: Ticket, checks: &[LimitCheck]) -> Held {
        let slots = checks
            .iter()
            .filter_map(|c| match &c.charge {
                crate::limits::Charge::Concurrent { lease, .. } => Some((c.id.clone(), c.key.clone(), lease.clone())),
                _ => None,
            })
            .collect();
        Held { limiter, ticket, slots }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (id, key, lease) in self.slots.drain(..) {
            self.limiter.release(self.ticket, &id, &key, &lease);
        }
    }
}
