//! The gateway's shared state: the policy being served (in an `ArcSwap`, so a request keeps
//! the policy it started with while a reload swaps in the next), and what outlives a policy:
//! metrics and limit counters.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use gw_compile::Style;

use crate::audit::{Audit, AuditHandle, FileSink};
use crate::metrics::Metrics;
use crate::policy::{self, Policy, PolicySource};
use crate::pool::Registry;
use crate::store::Limiter;
use crate::traffic::Traffic;
use crate::upstream::Upstream;

/// A policy plus what the runtime built from it. Immutable once built.
pub struct Loaded {
    pub policy: Policy,
    /// Aligned with `policy.graph.upstreams()`.
    pub upstreams: Vec<Upstream>,
    /// Every header any route reads a credential from: sent twice, a request is ambiguous.
    pub credential_headers: Vec<http::HeaderName>,
}

impl Loaded {
    fn build(policy: Policy, registry: &Registry) -> Result<Loaded, String> {
        let upstreams =
            policy.graph.upstreams().iter().map(|u| Upstream::new(u, registry)).collect::<Result<Vec<_>, _>>()?;
        let mut credential_headers: Vec<http::HeaderName> = vec![];
        for source in policy.graph.routes().iter().filter_map(|r| r.auth.as_ref()).flat_map(|a| &a.sources) {
            let name = match source {
                gw_engine::graph::CredentialSource::Header(h) => http::HeaderName::from_bytes(h.as_bytes()).ok(),
                gw_engine::graph::CredentialSource::Bearer | gw_engine::graph::CredentialSource::Basic => {
                    Some(http::header::AUTHORIZATION)
                }
                gw_engine::graph::CredentialSource::Query(_) => None,
            };
            if let Some(name) = name.filter(|n| !credential_headers.contains(n)) {
                credential_headers.push(name);
            }
        }
        Ok(Loaded { policy, upstreams, credential_headers })
    }

    /// Start the active health checks of the upstreams a route uses (an upstream no route
    /// sends to is not probed). They stop when this generation is dropped.
    fn start_checks(&self) {
        let graph = &self.policy.graph;
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if graph.routes().iter().any(|r| r.upstream == Some(i)) {
                upstream.start_checks(&graph.upstreams()[i]);
            }
        }
    }
}

/// The outcome of the last reload attempt, for `/admin/policy`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub ok: bool,
    pub generation: u64,
    pub at_unix_ms: u128,
    pub diagnostics: String,
}

pub struct Gateway {
    pub current: ArcSwap<Loaded>,
    pub source: PolicySource,
    pub metrics: Metrics,
    pub limiter: Arc<Limiter>,
    /// Per-target health, by upstream name and URL: survives reloads.
    pub upstream_stats: Arc<Registry>,
    pub traffic: Traffic,
    /// Every route's response cache (in memory; in Redis through the limiter's store):
    /// outlives reloads, keyed by route name.
    pub cache: Arc<crate::cache::ResponseCache>,
    /// The last requests' audit records, for `/admin/requests`.
    pub recent: crate::recent::Recent,
    /// The audit log, when the policy asks for one (set up at start).
    pub audit: Option<Audit>,
    pub audit_handle: Option<AuditHandle>,
    pub last_reload: Mutex<Option<ReloadReport>>,
    /// Slow password hashes (bcrypt, SHA-crypt) run on blocking threads, one per core at most,
    /// so that a flood of new passwords queues instead of stalling every connection.
    pub password_checks: tokio::sync::Semaphore,
    reload_lock: tokio::sync::Mutex<()>,
}

/// How long a Redis limit check may take before the policy's `on_error` fallback applies.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(150);

/// Audit records queued for the writer; beyond this they are dropped and counted.
const AUDIT_QUEUE: usize = 8192;

pub fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl Gateway {
    /// Load the first policy; an error is the rendered diagnostics.
    pub fn start(source: PolicySource, style: Style) -> Result<Arc<Gateway>, String> {
        let policy = policy::load(&source, 1, style).map_err(|e| e.rendered)?;
        let upstream_stats = Arc::new(Registry::default());
        let loaded = Loaded::build(policy, &upstream_stats)?;
        loaded.start_checks();
        let metrics = Metrics::new();
        metrics.set_policy(1, loaded.policy.short_hash());
        let limiter = match &loaded.policy.graph.settings().state {
            gw_engine::graph::StateSettings::Local => Limiter::default(),
            gw_engine::graph::StateSettings::Redis { url, on_error } => {
                let url = url.get().ok_or("state redis: the URL is unset")?;
                Limiter::with_redis(url, *on_error, REDIS_TIMEOUT, metrics.redis.clone())
                    .map_err(|e| format!("state redis: {e}"))?
            }
        };
        let (audit, audit_handle) = match &loaded.policy.graph.settings().audit {
            Some(a) => {
                let path = source.resolve(a.path.get().unwrap_or("audit.jsonl"));
                let sink = FileSink::open(&path, a.rotate_bytes)
                    .map_err(|e| format!("cannot open the audit log {path}: {e}"))?;
                let (audit, handle) = Audit::start(Box::new(sink), AUDIT_QUEUE, metrics.audit_dropped.clone());
                (Some(audit), Some(handle))
            }
            None => (None, None),
        };
        Ok(Arc::new(Gateway {
            current: ArcSwap::from_pointee(loaded),
            source,
            metrics,
            limiter: Arc::new(limiter),
            upstream_stats,
            traffic: Traffic::default(),
            cache: Arc::default(),
            recent: crate::recent::Recent::default(),
            audit,
            audit_handle,
            last_reload: Mutex::new(None),
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn policy(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// The metrics text, with each target's health state as of now.
    pub fn render_metrics(&self) -> String {
        let loaded = self.policy();
        let now = crate::pool::health::now_ms();
        self.metrics.target_healthy.reset();
        for u in &loaded.upstreams {
            for t in &u.pool.targets {
                let up = t.health.available(now) as i64;
                self.metrics.target_healthy.with_label_values(&[&u.name, &t.id]).set(up);
            }
        }
        self.metrics.render()
    }

    /// Compile the policy again off the request path and swap it in; on failure keep serving
    /// the current one. Listener addresses cannot change live: such a change is refused.
    pub async fn reload(self: &Arc<Self>) -> ReloadReport {
        let _one_at_a_time = self.reload_lock.lock().await;
        let old = self.policy();
        let next_generation = old.policy.generation + 1;
        let source = self.source.clone();
        let registry = self.upstream_stats.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            policy::load(&source, next_generation, Style::Plain)
                .map_err(|e| e.rendered)
                .and_then(|p| Loaded::build(p, &registry))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        let report = match compiled {
            Ok(loaded) => match needs_restart(&old, &loaded) {
                Some(why) => ReloadReport {
                    ok: false,
                    generation: old.policy.generation,
                    at_unix_ms: unix_ms(SystemTime::now()),
                    diagnostics: format!("not applied: {why} cannot change without a restart"),
                },
                None => {
                    let hash = loaded.policy.short_hash().to_string();
                    loaded.start_checks();
                    self.current.store(Arc::new(loaded));
                    self.metrics.set_policy(next_generation, &hash);
                    ReloadReport {
                        ok: true,
                        generation: next_generation,
                        at_unix_ms: unix_ms(SystemTime::now()),
                        diagnostics: String::new(),
                    }
                }
            },
            Err(rendered) => ReloadReport {
                ok: false,
                generation: old.policy.generation,
                at_unix_ms: unix_ms(SystemTime::now()),
                diagnostics: rendered,
            },
        };
        self.metrics.reloads.with_label_values(&[if report.ok { "ok" } else { "failed" }]).inc();
        if report.ok {
            tracing::info!(generation = report.generation, "policy reloaded");
        } else {
            tracing::error!(
                generation = report.generation,
                "policy reload failed, still serving the previous policy:\n{}",
                report.diagnostics
            );
        }
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        report
    }
}

/// Settings bound at start (listeners, TLS) that a reload cannot change.
fn needs_restart(old: &Loaded, new: &Loaded) -> Option<&'static str> {
    let (a, b) = (old.policy.graph.settings(), new.policy.graph.settings());
    if a.listen.get() != b.listen.get() {
        return Some("the listen address");
    }
    if a.admin.as_ref().map(|s| s.addr.get()) != b.admin.as_ref().map(|s| s.addr.get()) {
        return Some("the admin address");
    }
    if a.tls.as_ref().map(|t| (t.cert.get(), t.key.get())) != b.tls.as_ref().map(|t| (t.cert.get(), t.key.get())) {
        return Some("TLS");
    }
    let store = |s: &gw_engine::graph::StateSettings| match s {
        gw_engine::graph::StateSettings::Local => None,
        gw_engine::graph::StateSettings::Redis { url, on_error } => Some((url.get().map(str::to_string), *on_error)),
    };
    if store(&a.state) != store(&b.state) {
        return Some("the state store");
    }
    let audit =
        |s: &gw_engine::graph::Settings| s.audit.as_ref().map(|a| (a.path.get().map(str::to_string), a.rotate_bytes));
    if audit(a) != audit(b) {
        return Some("the audit log");
    }
    None
}
