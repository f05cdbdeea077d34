//! A response body passed through frame by frame, with a hook that runs exactly once when the
//! body ends: cleanly, with an error, or dropped because the client went away. This is what
//! releases in-flight counts (and later concurrency slots) on every path.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// Data frames passed through.
    pub chunks: u64,
    pub bytes: u64,
    /// False when the body ended with an error or was dropped before its end.
    pub complete: bool,
}

type OnEnd = Box<dyn FnOnce(StreamEnd) + Send + Sync>;

pin_project_lite::pin_project! {
    pub struct Tracked {
        #[pin]
        inner: Body,
        chunks: u64,
        bytes: u64,
        on_end: Option<OnEnd>,
    }

    impl PinnedDrop for Tracked {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                f(StreamEnd { chunks: *this.chunks, bytes: *this.bytes, complete: false });
            }
        }
    }
}

impl Tracked {
    pub fn new(inner: Body, on_end: impl FnOnce(StreamEnd) + Send + Sync + 'static) -> Tracked {
        let mut t = Tracked { inner, chunks: 0, bytes: 0, on_end: Some(Box::new(on_end)) };
        // An empty body may never be polled: finish it now.
        if t.inner.is_end_stream() {
            if let Some(f) = t.on_end.take() {
                f(StreamEnd { chunks: 0, bytes: 0, complete: true });
            }
        }
        t
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.chunks += 1;
                    *this.bytes += data.len() as u64;
                }
                // hyper stops polling a body that says it has ended.
                if inner.is_end_stream() {
                    if let Some(f) = this.on_end.take() {
                        f(StreamEnd { chunks: *this.chunks, bytes: *this.bytes, complete: true });
                    }
                }
            }
            Poll::Ready(end) => {
                let complete = end.is_none();
                if let Some(f) = this.on_end.take() {
                    f(StreamEnd { chunks: *this.chunks, bytes: *this.bytes, complete });
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
