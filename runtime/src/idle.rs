//! Connection activity: an IO wrapper that records when bytes last moved, so an idle
//! keep-alive connection can be closed after the policy's `idle_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// When a connection last read or wrote, as nanoseconds since it was created.
pub struct Activity {
    epoch: Instant,
    last_ns: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { epoch: Instant::now(), last_ns: AtomicU64::new(0) }
    }
}

impl Activity {
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.store(now, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(now.saturating_sub(self.last_ns.load(Ordering::Relaxed)))
    }
}

pin_project_lite::pin_project! {
    pub struct ActivityIo<I> {
        #[pin]
        inner: I,
        activity: std::sync::Arc<Activity>,
    }
}

impl<I> ActivityIo<I> {
    pub fn new(inner: I, activity: std::sync::Arc<Activity>) -> Self {
        ActivityIo { inner, activity }
    }
}

impl<I: AsyncRead> AsyncRead for ActivityIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<I: AsyncWrite> AsyncWrite for ActivityIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        res
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
