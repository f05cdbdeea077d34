//! The gw gateway runtime: serves HTTP through a compiled policy graph.
//!
//! Data flows one way: `server` accepts connections → `proxy` runs the request phases of
//! `phases` in order on the `gateway`'s current policy → `upstream` forwards → `stream`
//! passes the answer back. `runtime/README.md` has the map.

pub mod account;
pub mod admin;
pub mod audit;
pub mod body;
pub mod budget;
pub mod cache;
pub mod client;
pub mod config_view;
pub mod errors;
pub mod exchange;
pub mod gateway;
pub mod headers;
pub mod idle;
pub mod limits;
pub mod metrics;
pub mod phases;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod recent;
pub mod redis_store;
pub mod server;
pub mod signals;
pub mod store;
pub mod stream;
pub mod tls;
pub mod traffic;
pub mod upstream;
pub mod usage;
pub mod views;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use gateway::Gateway;
use server::{ConnLimits, Drain};

/// Listener overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin: Option<String>,
    /// Threads serving proxy connections (each with its own runtime); 0 means one per CPU.
    pub workers: usize,
    /// Run once a second on every thread that serves connections: the binary passes its
    /// allocator's collect, so memory freed after a burst goes back to the OS (issue 15).
    pub release_memory: Option<fn()>,
}

/// Serve until SIGTERM/SIGINT, then drain. Returns an error message for start-up failures.
pub async fn serve(gw: Arc<Gateway>, overrides: Overrides) -> Result<(), String> {
    let mut signals = signals::Signals::install();
    let loaded = gw.policy();
    let settings = loaded.policy.graph.settings().clone();
    // Token tables load on first use, once per encoding actually used (gw_engine::tokens).
    let listen = overrides.listen.or_else(|| settings.listen.get().map(str::to_string)).unwrap_or_default();
    let listener = TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let tls = match &settings.tls {
        Some(t) => {
            let cert = gw.source.resolve(t.cert.get().unwrap_or(""));
            let key = gw.source.resolve(t.key.get().unwrap_or(""));
            Some(tls::acceptor(&cert, &key)?)
        }
        None => None,
    };
    let limits = ConnLimits {
        header_timeout: Duration::from_nanos(settings.header_timeout_ns),
        idle_timeout: Duration::from_nanos(settings.idle_timeout_ns),
        max_headers: settings.max_headers as usize,
        max_header_bytes: settings.max_header_bytes as usize,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = Drain::new(stop_rx).with_metrics(gw.metrics.connections.clone(), gw.metrics.connections_closed.clone());
    let builder = Arc::new(server::http_builder(limits));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen);
    tracing::info!(
        generation = loaded.policy.generation,
        hash = loaded.policy.short_hash(),
        "gw listening on {scheme}://{bound} with {}",
        gw.source.describe()
    );
    let worker_count = match overrides.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    let release_memory = overrides.release_memory;
    let chores: server::Chores = Arc::new(move || {
        client::sweep_idle();
        if let Some(release) = release_memory {
            release();
        }
    });
    let workers = server::start_workers(
        worker_count,
        tls.clone(),
        builder.clone(),
        limits,
        drain.clone(),
        proxy::service(gw.clone()),
        chores.clone(),
    )?;
    tokio::spawn(server::every_second(chores));
    let proxy = tokio::spawn(server::accept_loop(
        listener,
        tls,
        builder.clone(),
        limits,
        drain.clone(),
        proxy::service(gw.clone()),
        workers,
    ));

    let admin_addr = overrides.admin.or_else(|| settings.admin.as_ref().and_then(|a| a.addr.get().map(str::to_string)));
    let admin_drain = Drain::new(drain_receiver(&stop_tx));
    if let Some(addr) = admin_addr {
        let listener = TcpListener::bind(&addr).await.map_err(|e| format!("cannot listen on {addr} (admin): {e}"))?;
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
        tracing::info!("admin listening on http://{bound}");
        let gw2 = gw.clone();
        let service = move |info, in_flight, req| {
            let gw = gw2.clone();
            Box::pin(admin::handle(gw, info, in_flight, req)) as server::ResponseFuture
        };
        tokio::spawn(server::accept_loop(listener, None, builder, limits, admin_drain.clone(), service, vec![]));
    }
    drop(loaded);
    let (gw_hup, mut hangup) = (gw.clone(), signals.hangup.take());
    tokio::spawn(async move {
        while hangup.recv().await {
            tracing::info!("SIGHUP: reloading the policy");
            gw_hup.reload().await;
        }
    });
    if let Some(handle) = gw.audit_handle.clone() {
        let mut user1 = signals.user1.take();
        tokio::spawn(async move {
            while user1.recv().await {
                tracing::info!("SIGUSR1: reopening the audit log");
                handle.reopen();
            }
        });
    }
    if matches!(gw.source, policy::PolicySource::File(_)) {
        tokio::spawn(reload_on_file_change(gw.clone()));
    }

    signals.shutdown().await;
    let drain_timeout = Duration::from_nanos(gw.policy().policy.graph.settings().drain_timeout_ns);
    tracing::info!(
        connections = drain.live(),
        "shutting down: no new connections, draining for up to {drain_timeout:?}"
    );
    let _ = stop_tx.send(true);
    let _ = proxy.await;
    if drain.wait(drain_timeout).await {
        tracing::info!("drained, exiting");
    } else {
        tracing::warn!(connections = drain.live(), "drain timeout reached, closing the remaining connections");
        // Their requests end here, each counted and audited with the reason `shutdown`.
        drain.abort(Duration::from_secs(2)).await;
    }
    if let Some(handle) = &gw.audit_handle {
        if tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await.is_err() {
            tracing::warn!("the audit log did not flush within 5 s");
        }
    }
    Ok(())
}

fn drain_receiver(tx: &tokio::sync::watch::Sender<bool>) -> tokio::sync::watch::Receiver<bool> {
    tx.subscribe()
}

/// How long the policy's files must be quiet before a change reloads: an editor's
/// write-rename-write is one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(100);

/// Reload when a file the policy reads changes (the policy, its imports, its key files).
async fn reload_on_file_change(gw: Arc<Gateway>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let files = gw.policy().policy.files.clone();
    let watcher = match watch::watch_files(files, RELOAD_DEBOUNCE, move || {
        // A full channel means a reload is already pending: this change is in it.
        let _ = tx.try_send(());
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("not watching the policy files ({e}); reload with SIGHUP or POST /admin/reload");
            return;
        }
    };
    while rx.recv().await.is_some() {
        tracing::info!("a policy file changed: reloading");
        let report = gw.reload().await;
        if report.ok {
            if let Err(e) = watcher.set_files(gw.policy().policy.files.clone()) {
                tracing::warn!("cannot watch the new policy's files: {e}");
            }
        }
    }
}
