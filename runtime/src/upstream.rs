//! Upstreams at run time: the pooled HTTP(S) client, an upstream's settings and its `pool`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gw_engine::graph::{BalanceInfo, RetryInfo, UpstreamInfo};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use crate::body::Body;
use crate::pool::{probe, Pool, Registry};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

pub struct Upstream {
    pub name: String,
    pub pool: Pool,
    pub balance: BalanceInfo,
    pub retry: Option<RetryInfo>,
    /// The whole exchange, every try included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// `max_connections`: requests beyond it wait for a slot (up to the connect timeout),
    /// then get 503.
    pub slots: Option<Arc<Semaphore>>,
    pub queue_timeout: Duration,
    /// Dropped with this policy generation: its health checks stop.
    alive: Arc<()>,
}

impl Upstream {
    pub fn new(info: &UpstreamInfo, registry: &Registry) -> Result<Upstream, String> {
        Ok(Upstream {
            name: info.name.clone(),
            pool: Pool::new(info, registry)?,
            balance: info.balance.clone(),
            retry: info.retry.clone(),
            timeout: Duration::from_nanos(info.timeout_ns),
            connect_timeout: Duration::from_nanos(info.connect_timeout_ns),
            slots: info.max_connections.map(|n| Arc::new(Semaphore::new(n as usize))),
            queue_timeout: Duration::from_nanos(info.connect_timeout_ns),
            alive: Arc::new(()),
        })
    }

    /// Start the upstream's active health checks (`health`), for as long as this policy
    /// generation is served.
    pub fn start_checks(&self, info: &UpstreamInfo) {
        let Some(spec) = &info.health else { return };
        let targets = self.pool.targets.iter().map(|t| (t.addr.clone(), t.health.clone())).collect();
        let client = build_client(self.connect_timeout);
        let send = move |req| {
            let client = client.clone();
            async move { client.request(req).await.map(|r| r.status()).map_err(|e| describe(&e, e.is_connect())) }
        };
        probe::start(&self.name, targets, spec, Arc::downgrade(&self.alive), send);
    }
}

/// A failed request in a few words: what kind, and the innermost cause.
pub fn describe(e: &(dyn std::error::Error + 'static), connect: bool) -> String {
    let mut cause = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if connect {
        format!("connect error: {cause}")
    } else {
        cause
    }
}

impl Upstream {
    /// The client to send with: one per thread and connect timeout, its idle connections
    /// pooled per thread (`client`), shared by every upstream and kept across reloads so a
    /// reload does not drop warm connections.
    pub fn client(&self) -> crate::client::Client {
        thread_local! {
            // Keyed by the policy's connect timeouts (a fast hash will do).
            static CLIENTS: std::cell::RefCell<HashMap<Duration, crate::client::Client, rustc_hash::FxBuildHasher>> = Default::default();
        }
        CLIENTS.with(|c| {
            c.borrow_mut()
                .entry(self.connect_timeout)
                .or_insert_with(|| crate::client::Client::new(connector(self.connect_timeout)))
                .clone()
        })
    }
}

/// The health checks' client (hyper's pooled client: probes are few and need no streaming).
fn build_client(connect_timeout: Duration) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(4)
        .pool_timer(TokioTimer::new())
        .build(connector(connect_timeout))
}

/// TCP (no Nagle, the connect timeout) and TLS for `https` targets, HTTP/1.
fn connector(connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Nagle plus delayed ACKs costs tens of milliseconds per keep-alive exchange.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
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
