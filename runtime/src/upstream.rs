//! Upstreams at run time: the pooled HTTP(S) client, and picking a target of a pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gw_engine::graph::{BalanceInfo, UpstreamInfo};
use http::uri::{Authority, Scheme};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::body::Body;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// One target of an upstream, parsed.
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The target URL's path without a trailing `/` ("" for none): prefixed to every request.
    pub base_path: String,
    pub weight: u64,
    /// Shared with the same target in later policy generations: health carries over a reload.
    pub stats: Arc<TargetStats>,
}

/// What the gateway has seen of one target (passive health: gw does not probe yet).
#[derive(Default)]
pub struct TargetStats {
    /// Requests being forwarded to it now, for `least_conn` and the operator view.
    pub in_flight: AtomicUsize,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub consecutive_failures: AtomicU64,
    pub last_failure_unix_ms: AtomicU64,
}

impl TargetStats {
    pub fn succeeded(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_failure_unix_ms.store(now, Ordering::Relaxed);
    }
}

/// Target stats by upstream name and target URL, kept for the life of the process.
#[derive(Default)]
pub struct StatsRegistry {
    by_target: Mutex<HashMap<String, Arc<TargetStats>>>,
}

impl StatsRegistry {
    fn get(&self, upstream: &str, url: &str) -> Arc<TargetStats> {
        let mut map = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(format!("{upstream} {url}")).or_default().clone()
    }
}

pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: BalanceInfo,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// `max_connections`: requests beyond it wait for a slot (up to the connect timeout),
    /// then get 503.
    pub slots: Option<Arc<Semaphore>>,
    pub queue_timeout: Duration,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(info: &UpstreamInfo, registry: &StatsRegistry) -> Result<Upstream, String> {
        let targets = info
            .targets
            .iter()
            .map(|t| {
                let url = t.url.get().ok_or_else(|| format!("upstream `{}`: target URL is unset", info.name))?;
                parse_target(url, t.weight, registry.get(&info.name, url))
                    .map_err(|e| format!("upstream `{}`: target {url:?}: {e}", info.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(format!("upstream `{}` has no target", info.name));
        }
        Ok(Upstream {
            name: info.name.clone(),
            targets,
            balance: info.balance.clone(),
            timeout: Duration::from_nanos(info.timeout_ns),
            connect_timeout: Duration::from_nanos(info.connect_timeout_ns),
            slots: info.max_connections.map(|n| Arc::new(Semaphore::new(n as usize))),
            queue_timeout: Duration::from_nanos(info.connect_timeout_ns),
            next: AtomicUsize::new(0),
        })
    }

    /// Pick a target. `hash_key` is the value of a `balance hash(...)` expression.
    pub fn pick(&self, hash_key: Option<&str>) -> &Target {
        let n = self.targets.len();
        if n == 1 {
            return &self.targets[0];
        }
        let total: u64 = self.targets.iter().map(|t| t.weight.max(1)).sum();
        let by_weight = |point: u64| {
            let mut acc = 0;
            for t in &self.targets {
                acc += t.weight.max(1);
                if point < acc {
                    return t;
                }
            }
            &self.targets[n - 1]
        };
        match self.balance {
            BalanceInfo::RoundRobin => &self.targets[self.next.fetch_add(1, Ordering::Relaxed) % n],
            BalanceInfo::Weighted => by_weight(self.next.fetch_add(1, Ordering::Relaxed) as u64 % total),
            BalanceInfo::LeastConn => self
                .targets
                .iter()
                .min_by_key(|t| t.stats.in_flight.load(Ordering::Relaxed))
                .unwrap_or(&self.targets[0]),
            BalanceInfo::Hash => {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                hash_key.unwrap_or("").hash(&mut h);
                by_weight(h.finish() % total)
            }
        }
    }
}

fn parse_target(url: &str, weight: u64, stats: Arc<TargetStats>) -> Result<Target, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let scheme = uri.scheme().cloned().ok_or("no scheme")?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err("the scheme must be http or https".into());
    }
    let authority = uri.authority().cloned().ok_or("no host")?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(Target { scheme, authority, base_path, weight, stats })
}

impl Upstream {
    /// The connection pool to send with: one per thread (its connections are driven by that
    /// thread's runtime, next to the requests using them) and per connect timeout, shared by
    /// every upstream and kept across reloads so a reload does not drop warm connections.
    pub fn client(&self) -> HttpClient {
        thread_local! {
            static CLIENTS: std::cell::RefCell<HashMap<Duration, HttpClient>> = Default::default();
        }
        CLIENTS.with(|c| {
            c.borrow_mut().entry(self.connect_timeout).or_insert_with(|| build_client(self.connect_timeout)).clone()
        })
    }
}

fn build_client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Nagle plus delayed ACKs costs tens of milliseconds per keep-alive exchange.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        // Per worker thread. Idle connections cost memory (about 15 KiB each) for 90 s: a
        // burst of 5,000 must not stay held after it (tests/load/conns.py).
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// Trust the webpki (Mozilla) roots, plus the PEM certificates in `SSL_CERT_FILE` when it is
/// set: the usual way to trust a private CA for upstreams on an internal network.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        match std::fs::read(&path) {
            Ok(pem) => {
                let mut reader = pem.as_slice();
                let certs: Vec<_> = rustls_pemfile::certs(&mut reader).filter_map(Result::ok).collect();
                let (added, ignored) = roots.add_parsable_certificates(certs);
                tracing::info!(added, ignored, "trusting extra upstream CA certificates from SSL_CERT_FILE");
            }
            Err(e) => tracing::warn!(error = %e, "SSL_CERT_FILE cannot be read; using the built-in roots only"),
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
