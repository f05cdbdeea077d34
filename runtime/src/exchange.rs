//! What the pipeline learns about a request (for metrics and its audit record) and what it
//! holds until its answer ends (concurrency slots, its place in the tenant's traffic).

use std::sync::Arc;

use crate::budget::Reconcile;
use crate::store::Held;
use crate::traffic::TenantTraffic;

/// What a request holds until its answer's last byte: concurrency slots, and its place in
/// the tenant's traffic. Dropping it gives everything back.
#[derive(Default)]
pub struct Hold {
    pub limits: Option<Held>,
    pub tenant: Option<TenantGuard>,
    /// Its place in its route's traffic (usage per route).
    pub route: Option<TenantGuard>,
}

impl Hold {
    /// Give everything back, with the tokens the request used (for the tenant's and the
    /// route's traffic).
    pub fn release(mut self, tokens: Option<(u64, u64)>) {
        let Some((p, c)) = tokens else { return };
        for guard in [self.tenant.as_mut(), self.route.as_mut()].into_iter().flatten() {
            guard.prompt_tokens = p;
            guard.completion_tokens = c;
        }
    }
}

pub struct TenantGuard {
    tenant: Arc<TenantTraffic>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Drop for TenantGuard {
    fn drop(&mut self) {
        self.tenant.finished(self.prompt_tokens, self.completion_tokens);
    }
}

/// What the pipeline learns about a request, for metrics and the audit record written when
/// its answer ends.
#[derive(Default)]
pub struct Exchange {
    pub route: Option<String>,
    pub key_name: Option<String>,
    pub tenant: Option<String>,
    pub upstream: Option<String>,
    /// `host:port` of the target that answered.
    pub target: Option<String>,
    pub upstream_ms: Option<f64>,
    /// The code of a gateway-made error answer, or of an upstream failure.
    pub error: Option<&'static str>,
    /// Request body bytes read (counted as they stream).
    pub request_bytes: Arc<std::sync::atomic::AtomicU64>,
    pub hold: Hold,
    /// Set when the request has token budgets: read the upstream's usage from the answer.
    pub usage: Option<UsagePlan>,
    /// What the route's cache did: `hit`, `miss` or `bypass` (None without a cache).
    pub cache: Option<&'static str>,
    /// Shadow limits that would have refused the request.
    pub shadow_refused: Vec<String>,
    /// Headers the answer gets whoever makes it (CORS, `www-authenticate`): `phases::cors`.
    pub answer_headers: Vec<(&'static str, String)>,
}

/// How to read an answer's token usage, and what to reconcile with it.
pub struct UsagePlan {
    pub reconcile: Reconcile,
    /// How streamed completion text is counted when no usage comes.
    pub meter: gw_engine::tokens::Meter,
    /// gw asked the upstream for a usage chunk the client did not ask for: remove it.
    pub strip_usage_chunk: bool,
}

impl TenantGuard {
    /// The request counts in its tenant's traffic until the guard drops.
    pub fn start(tenant: Arc<TenantTraffic>) -> TenantGuard {
        tenant.started();
        TenantGuard { tenant, prompt_tokens: 0, completion_tokens: 0 }
    }
}
