//! `MockBody`, the body of every mock answer: a buffer, a truncated one (`x-mock-die-after`), or
//! a streamed completion (`Sse`).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

use crate::state::WORDS;

#[derive(Serialize, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) total_tokens: u64,
}

/// A streamed completion: `chunks` content chunks `delay` apart, then the final chunk, the usage
/// chunk (if asked for) and `[DONE]` together.
pub(crate) struct Sse {
    /// `data: {"id":…,"object":…,"created":…,"model":…` (no closing brace).
    pub(crate) prefix: String,
    pub(crate) chunks: usize,
    pub(crate) next: usize,
    pub(crate) delay: Duration,
    pub(crate) die_after: Option<usize>,
    pub(crate) usage: Option<Usage>,
    pub(crate) sleep: Option<Pin<Box<Sleep>>>,
    pub(crate) armed: bool,
    /// Whether the abort asked for by `die_after` was preceded by a `Pending` (so a flush).
    pub(crate) flushed: bool,
    pub(crate) done: bool,
}

impl Sse {
    pub(crate) fn chunk(&self, i: usize) -> Bytes {
        let word = WORDS[i % WORDS.len()];
        let mut s = String::with_capacity(self.prefix.len() + 96);
        s.push_str(&self.prefix);
        s.push_str(r#","choices":[{"index":0,"delta":{"#);
        if i == 0 {
            s.push_str(r#""role":"assistant","#);
        }
        s.push_str(r#""content":""#);
        s.push_str(word);
        s.push_str(" \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
        Bytes::from(s)
    }

    pub(crate) fn tail(&self) -> Bytes {
        let mut s = String::with_capacity(2 * self.prefix.len() + 220);
        s.push_str(&self.prefix);
        s.push_str(r#","choices":[{"index":0,"delta":{"#);
        if self.chunks == 0 {
            s.push_str(r#""role":"assistant","content":"""#);
        }
        s.push_str("},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n");
        if let Some(u) = self.usage {
            s.push_str(&self.prefix);
            s.push_str(&format!(
                ",\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
                u.prompt_tokens, u.completion_tokens, u.total_tokens
            ));
        }
        s.push_str("data: [DONE]\n\n");
        Bytes::from(s)
    }

    pub(crate) fn arm(&mut self) {
        let deadline = Instant::now() + self.delay;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
    }

    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.armed {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
            }
            self.armed = false;
        }
        let i = self.next;
        if self.die_after.is_some_and(|n| n.min(self.chunks) == i) {
            if !self.flushed {
                // Let hyper flush what it has buffered (head, earlier chunks) before the abort.
                self.flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.done = true;
            return Poll::Ready(Some(Err(io::Error::other("mock upstream: x-mock-die-after, aborting the response"))));
        }
        if i < self.chunks {
            let frame = self.chunk(i);
            self.next += 1;
            if self.next < self.chunks && !self.delay.is_zero() {
                self.arm();
            }
            Poll::Ready(Some(Ok(Frame::data(frame))))
        } else {
            self.done = true;
            Poll::Ready(Some(Ok(Frame::data(self.tail()))))
        }
    }
}

/// The body of every mock answer.
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    /// Announces `len` bytes, sends `data`, returns `Pending` once (so hyper flushes), then fails
    /// (aborting the connection or stream).
    Truncated {
        data: Option<Bytes>,
        len: u64,
        flushed: bool,
    },
    Sse(Sse),
}

impl MockBody {
    pub(crate) fn full(b: Bytes) -> MockBody {
        MockBody::Full(Some(b).filter(|b| !b.is_empty()))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Truncated { data, len, flushed } => match data.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None if !*flushed => {
                    *flushed = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None if *len > 0 => {
                    *len = 0;
                    Poll::Ready(Some(Err(io::Error::other("mock upstream: x-mock-die-after, aborting the response"))))
                }
                None => Poll::Ready(None),
            },
            MockBody::Sse(sse) => sse.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Truncated { .. } => false,
            MockBody::Sse(sse) => sse.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            MockBody::Truncated { len, .. } => SizeHint::with_exact(*len),
            MockBody::Sse(_) => SizeHint::default(),
        }
    }
}
