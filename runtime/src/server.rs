//! Listeners and connections: accept (TCP, optionally TLS), serve HTTP/1.1 and h2c with hyper,
//! guard against slow and idle clients, and drain gracefully on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{Body, BoxError};
use crate::idle::{ActivityIo, ConnState, InFlight, Phase};

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Tells connections to finish and tracks how many are left.
#[derive(Clone)]
pub struct Drain {
    stop: watch::Receiver<bool>,
    /// Set when the drain time is over: the connections still open are dropped.
    abort: Arc<watch::Sender<bool>>,
    live: Arc<AtomicUsize>,
    metrics: Option<(prometheus::IntGauge, prometheus::IntCounterVec)>,
}

/// Why a client connection closed (`gw_connections_closed_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The normal end: the client closed it, or an answer said `Connection: close`.
    Done,
    /// No request for `idle_timeout`.
    Idle,
    /// No complete request head within `header_timeout` of its first byte (or of the open).
    HeaderTimeout,
    /// The client reset or abandoned it mid-exchange.
    ClientReset,
    /// Bytes that are not HTTP, or a failed TLS handshake.
    ProtocolError,
    /// Closed by gw's graceful shutdown.
    Shutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Done => "done",
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::ClientReset => "client_reset",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// What a connection that ended with `error` ended by.
    fn of_error(error: &(dyn std::error::Error + 'static)) -> CloseReason {
        let mut source = Some(error);
        while let Some(e) = source {
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return CloseReason::HeaderTimeout;
                }
                if h.is_incomplete_message() || h.is_canceled() {
                    return CloseReason::ClientReset;
                }
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof) {
                    return CloseReason::ClientReset;
                }
            }
            source = e.source();
        }
        CloseReason::ProtocolError
    }
}

impl Drain {
    pub fn new(stop: watch::Receiver<bool>) -> Drain {
        let (abort, _) = watch::channel(false);
        Drain { stop, abort: Arc::new(abort), live: Arc::new(AtomicUsize::new(0)), metrics: None }
    }

    /// Also count open connections, and closed ones by reason, in these metrics.
    pub fn with_metrics(mut self, open: prometheus::IntGauge, closed: prometheus::IntCounterVec) -> Drain {
        self.metrics = Some((open, closed));
        self
    }

    fn opened(&self) {
        self.live.fetch_add(1, Ordering::SeqCst);
        if let Some((open, _)) = &self.metrics {
            open.inc();
        }
    }

    fn closed(&self, reason: CloseReason) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        if let Some((open, closed)) = &self.metrics {
            open.dec();
            closed.with_label_values(&[reason.as_str()]).inc();
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Wait until every connection has closed, or `timeout` passes; true if all closed.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.live() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Drop the connections still open (after the drain time): their requests end, and are
    /// counted and audited with the reason `shutdown`. Waits up to `timeout` for them.
    pub async fn abort(&self, timeout: Duration) -> bool {
        let _ = self.abort.send(true);
        self.wait(timeout).await
    }
}

/// Headers hyper parses without a heap allocation.
const HYPER_INLINE_HEADERS: usize = 100;

/// Limits applied to every client connection, from the policy at start.
#[derive(Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

pub fn http_builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper refuses heads beyond its own caps with a bare 431; the proxy answers the policy's
    // limits below them with the JSON error shape. hyper keeps up to 100 headers on the stack
    // and moves every request's headers to the heap once the cap is set: set it only when the
    // policy allows more than that.
    let mut h1 = builder.http1();
    // `Conn::serve` owns the head timer: hyper's would also bound the idle wait between
    // requests (it starts when hyper begins reading a head, not at the head's first byte).
    h1.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size((limits.max_header_bytes * 2 + 16 * 1024).max(8192));
    if limits.max_headers >= HYPER_INLINE_HEADERS {
        h1.max_headers(limits.max_headers * 2);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes + 16 * 1024).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// A connection handed from the accepting thread to a worker.
pub type Handoff = tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>;

/// Accept connections on `listener` until `drain` says stop, serving each with `service`:
/// here, or handed round robin to `workers` (each a thread with its own runtime).
pub async fn accept_loop<S, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnLimits,
    drain: Drain,
    service: S,
    workers: Vec<Handoff>,
) where
    S: Fn(ConnInfo, InFlight, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    let mut stop = drain.stop.clone();
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        drain.opened();
        if !workers.is_empty() {
            next = (next + 1) % workers.len();
            let handed = stream.into_std().map(|s| workers[next].send((s, peer)).is_ok()).unwrap_or(false);
            if !handed {
                drain.closed(CloseReason::Shutdown);
            }
            continue;
        }
        spawn_conn(stream, peer, tls.clone(), builder.clone(), limits, drain.clone(), service.clone());
    }
}

/// Serve one accepted connection on the current runtime (TLS handshake first, when set up).
fn spawn_conn<S, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnLimits,
    drain: Drain,
    service: S,
) where
    S: Fn(ConnInfo, InFlight, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    let conn = Conn { peer, limits, builder, drain, service };
    match tls {
        None => {
            tokio::spawn(conn.serve(stream, false));
        }
        Some(acceptor) => {
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
                match handshake {
                    Ok(Ok(tls_stream)) => conn.serve(tls_stream, true).await,
                    _ => conn.drain.closed(CloseReason::ProtocolError),
                }
            });
        }
    }
}

/// Start `n` worker threads, each with a single-threaded runtime serving the connections
/// handed to it: a connection's tasks (hyper's server side, the upstream connections it uses)
/// then stay on one thread, with no cross-thread wake-ups or work stealing per request.
/// `chores` run on every worker thread once a second (see [`every_second`]).
pub fn start_workers<S, F>(
    n: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnLimits,
    drain: Drain,
    service: S,
    chores: Chores,
) -> Result<Vec<Handoff>, String>
where
    S: Fn(ConnInfo, InFlight, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    (0..n)
        .map(|i| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start worker runtime {i}: {e}"))?;
            let (tls, builder, drain, service) = (tls.clone(), builder.clone(), drain.clone(), service.clone());
            let chores = chores.clone();
            std::thread::Builder::new()
                .name(format!("gw-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        tokio::spawn(every_second(chores));
                        while let Some((std_stream, peer)) = rx.recv().await {
                            match tokio::net::TcpStream::from_std(std_stream) {
                                Ok(stream) => spawn_conn(
                                    stream,
                                    peer,
                                    tls.clone(),
                                    builder.clone(),
                                    limits,
                                    drain.clone(),
                                    service.clone(),
                                ),
                                Err(_) => drain.closed(CloseReason::ClientReset),
                            }
                        }
                        // No more connections will come; the ones open finish here, and the
                        // process exits when the drain is over.
                        std::future::pending::<()>().await;
                    })
                })
                .map_err(|e| format!("cannot start worker thread {i}: {e}"))?;
            Ok(tx)
        })
        .collect()
}

/// Work a serving thread does for itself now and then (its thread-local pools, its allocator
/// heap), whatever its traffic.
pub type Chores = Arc<dyn Fn() + Send + Sync>;

/// Run `chores` once a second, forever, on the current thread.
pub async fn every_second(chores: Chores) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        chores();
    }
}

struct Conn<S> {
    peer: SocketAddr,
    limits: ConnLimits,
    builder: Arc<auto::Builder<TokioExecutor>>,
    drain: Drain,
    service: S,
}

impl<S, F> Conn<S>
where
    S: Fn(ConnInfo, InFlight, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, BoxError>> + Send + 'static,
{
    async fn serve<I>(self, io: I, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let state = Arc::new(ConnState::default());
        let info = ConnInfo { peer: self.peer, tls };
        let service = self.service.clone();
        let state2 = state.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let in_flight = state2.begin(req.version() == http::Version::HTTP_2);
            service(info, in_flight, req)
        });
        let io = TokioIo::new(ActivityIo::new(io, state.clone()));
        // Boxed so it can be dropped before the close is counted: dropping it ends (and
        // accounts) the requests still running on it.
        let mut conn = Box::pin(self.builder.serve_connection_with_upgrades(io, svc));
        let mut stop = self.drain.stop.clone();
        let mut abort = self.drain.abort.subscribe();
        let mut stopping = *stop.borrow();
        // Why gw is closing it, once it has decided to.
        let mut closing = None;
        if stopping {
            closing = Some(CloseReason::Shutdown);
            conn.as_mut().graceful_shutdown();
        }
        let limits = self.limits;
        let tick =
            limits.idle_timeout.min(limits.header_timeout).min(Duration::from_secs(1)).max(Duration::from_millis(10));
        let reason = loop {
            tokio::select! {
                res = conn.as_mut() => {
                    break match res {
                        Ok(()) => closing.unwrap_or(CloseReason::Done),
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                            closing.unwrap_or_else(|| CloseReason::of_error(e.as_ref()))
                        }
                    };
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    closing = Some(CloseReason::Shutdown);
                    conn.as_mut().graceful_shutdown();
                }
                _ = abort.changed() => {
                    state.abort();
                    break CloseReason::Shutdown;
                }
                _ = tokio::time::sleep(tick) => match state.phase() {
                    // A head still arriving after `header_timeout`: slowloris, or a client that
                    // connected and said nothing.
                    Phase::Head(t) if t >= limits.header_timeout => {
                        tracing::debug!(peer = %self.peer, "no complete request head within the header timeout");
                        break CloseReason::HeaderTimeout;
                    }
                    Phase::Idle(t) if t >= limits.idle_timeout && !stopping => {
                        stopping = true;
                        closing = Some(CloseReason::Idle);
                        conn.as_mut().graceful_shutdown();
                    }
                    _ => {}
                },
            }
        };
        drop(conn);
        self.drain.closed(reason);
    }
}

/// What a connection's service returns for one request.
pub type ResponseFuture = std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;
