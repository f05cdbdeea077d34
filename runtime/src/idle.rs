//! Connection state for the timers of `server`: whether a request is in flight, since when the
//! connection has been idle, and since when the head of its next request has been arriving.
//! `header_timeout` runs from the first byte of a request head, `idle_timeout` while no request
//! is in flight and no head is arriving.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `head_since_ns` when no head is arriving.
const NONE: u64 = u64::MAX;

/// One client connection's requests and timers; times are nanoseconds since it opened.
pub struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    idle_since_ns: AtomicU64,
    head_since_ns: AtomicU64,
    /// HTTP/2 multiplexes: only its first request is bounded by `header_timeout`.
    h2: AtomicBool,
    /// The server dropped the connection at the end of a drain: requests cut off by it end
    /// with the reason `shutdown`, not `client_closed`.
    aborted: AtomicBool,
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request is in flight.
    Busy,
    /// A request head has been arriving for this long (since the connection opened, for the
    /// first one).
    Head(Duration),
    /// Nothing in flight nor arriving for this long.
    Idle(Duration),
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ns: AtomicU64::new(0),
            // The first head is due within `header_timeout` of the connection opening.
            head_since_ns: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        }
    }
}

impl ConnState {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(NONE - 1)
    }

    /// A request was dispatched: its head is complete. The returned guard ends it.
    pub fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since_ns.store(NONE, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Bytes arrived: with nothing in flight, they start the next request head.
    fn read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 && self.head_since_ns.load(Ordering::Relaxed) == NONE {
            let _ = self.head_since_ns.compare_exchange(NONE, self.now(), Ordering::SeqCst, Ordering::Relaxed);
        }
    }

    pub fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Phase::Busy;
        }
        let now = self.now();
        let head = self.head_since_ns.load(Ordering::SeqCst);
        if head != NONE && !self.h2.load(Ordering::Relaxed) {
            return Phase::Head(Duration::from_nanos(now.saturating_sub(head)));
        }
        Phase::Idle(Duration::from_nanos(now.saturating_sub(self.idle_since_ns.load(Ordering::SeqCst))))
    }

    /// Mark the connection as cut off by the server's shutdown.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }
}

/// A request in flight on a connection; dropping it (when the answer's last byte is out, or
/// the request is abandoned) makes the connection idle once no other request is in flight.
pub struct InFlight(Arc<ConnState>);

impl InFlight {
    /// A request on no real connection (tests, internal callers).
    pub fn detached() -> InFlight {
        Arc::new(ConnState::default()).begin(false)
    }

    /// Whether the server cut the connection off at the end of a drain.
    pub fn aborted(&self) -> bool {
        self.0.aborted.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        if state.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            state.idle_since_ns.store(state.now(), Ordering::SeqCst);
            // Bytes read while the request was in flight belong to it (its body), or to a
            // pipelined head whose timer then starts at its next byte.
            state.head_since_ns.store(NONE, Ordering::SeqCst);
        }
    }
}

pin_project_lite::pin_project! {
    /// The connection's IO, telling its state when bytes arrive.
    pub struct ActivityIo<I> {
        #[pin]
        inner: I,
        state: Arc<ConnState>,
    }
}

impl<I> ActivityIo<I> {
    pub fn new(inner: I, state: Arc<ConnState>) -> Self {
        ActivityIo { inner, state }
    }
}

impl<I: AsyncRead> AsyncRead for ActivityIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.read();
        }
        res
    }
}

impl<I: AsyncWrite> AsyncWrite for ActivityIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_busy_then_idle_then_receiving_a_head() {
        let state = Arc::new(ConnState::default());
        assert!(matches!(state.phase(), Phase::Head(_)), "the first head is due from the open");
        let a = state.begin(false);
        let b = state.begin(false);
        state.read();
        assert_eq!(state.phase(), Phase::Busy);
        drop(a);
        assert_eq!(state.phase(), Phase::Busy);
        drop(b);
        assert!(matches!(state.phase(), Phase::Idle(_)), "body bytes read in flight start no head");
        state.read();
        assert!(matches!(state.phase(), Phase::Head(_)));
        let h2 = state.begin(true);
        drop(h2);
        state.read();
        assert!(matches!(state.phase(), Phase::Idle(_)), "HTTP/2 frames between requests are not a head");
    }
}
