//! The upstream HTTP/1 client. A request drives its upstream connection in its own task, and
//! a connection whose exchange ended cleanly waits in a pool of this worker thread for the
//! next request to the same target.
//!
//! Why not hyper's pooled client: it drives every connection in a task of its own, so each
//! chunk of a streamed answer crossed two tasks and, arriving alone at the client's side, left
//! in a write of its own (11 `writev` per 8-chunk SSE answer). Driven here, what arrived
//! together is decoded together and leaves together.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::body::{Body, BoxError};

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
type Key = (Scheme, Authority);

/// How long a connection may wait unused in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per target and worker thread (nginx's `keepalive 64`). Each costs
/// memory (hyper's buffers, 16 KiB and more) for up to 90 s: after a burst of 5,000 requests,
/// 256 per worker left gw at 4× its idle RSS, 64 at 2.4× (tests/load/conns.py).
const IDLE_MAX: usize = 64;
/// Idle connections per target and worker kept for the full [`IDLE_TIMEOUT`]; the rest of the
/// pool closes after [`IDLE_SURPLUS_TIMEOUT`] unused (see [`sweep_idle`]).
const IDLE_SPARE: usize = 4;
const IDLE_SURPLUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made: TCP, TLS or the HTTP/1 handshake.
    Connect(BoxError),
    /// The connection failed while the request was sent or its answer awaited.
    Exchange(hyper::Error),
    /// The connection ended with the answer still awaited.
    Closed,
}

impl Error {
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect error: {e}"),
            Error::Exchange(e) => write!(f, "{e}"),
            Error::Closed => f.write_str("the connection closed before the answer"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) => Some(e.as_ref()),
            Error::Exchange(e) => Some(e),
            Error::Closed => None,
        }
    }
}

/// A client for one connect timeout; cheap to clone.
#[derive(Clone)]
pub struct Client {
    connector: HttpsConnector<HttpConnector>,
}

impl Client {
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Client {
        Client { connector }
    }

    /// Send `req` (an absolute URI) on a pooled connection to its target, or a new one. A
    /// pooled connection that turns out closed before the request was written is dropped and
    /// the request goes on the next, or on a new connection: it was not sent.
    pub async fn request(&self, mut req: Request<Body>) -> Result<Response<Driven>, Error> {
        let key = key_of(req.uri()).map_err(|e| Error::Connect(e.into()))?;
        origin_form(&mut req, &key);
        while let Some(live) = checkout(&key) {
            match live.send(req).await {
                Ok((resp, live)) => return Ok(Driven::new(resp, live, key)),
                Err(Unsent::Back(r)) => req = *r,
                Err(Unsent::Failed(e)) => return Err(e),
            }
        }
        let live = self.connect(&key).await?;
        match live.send(req).await {
            Ok((resp, live)) => Ok(Driven::new(resp, live, key)),
            Err(Unsent::Back(_)) => Err(Error::Connect("the new connection closed before the request".into())),
            Err(Unsent::Failed(e)) => Err(e),
        }
    }

    /// Send a request that asks to upgrade (a websocket handshake) on a connection of its
    /// own, driven by a task of its own: after a `101` it carries the spliced session.
    pub async fn upgrade(&self, mut req: Request<Body>) -> Result<Response<Driven>, Error> {
        let key = key_of(req.uri()).map_err(|e| Error::Connect(e.into()))?;
        origin_form(&mut req, &key);
        let (mut send, conn) = self.handshake(&key).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let resp = send.send_request(req).await.map_err(Error::Exchange)?;
        Ok(resp.map(|body| Driven { body, live: None, key }))
    }

    async fn connect(&self, key: &Key) -> Result<Live, Error> {
        let (send, conn) = self.handshake(key).await?;
        Ok(Live { send, conn: Box::pin(conn), closed: false })
    }

    async fn handshake(&self, key: &Key) -> Result<(http1::SendRequest<Body>, http1::Connection<Io, Body>), Error> {
        let uri = Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Error::Connect(e.into()))?;
        let io: Io = self.connector.clone().call(uri).await.map_err(Error::Connect)?;
        http1::handshake(io).await.map_err(|e| Error::Connect(e.into()))
    }
}

fn key_of(uri: &Uri) -> Result<Key, &'static str> {
    match (uri.scheme(), uri.authority()) {
        (Some(s), Some(a)) => Ok((s.clone(), a.clone())),
        _ => Err("the upstream URI has no scheme or authority"),
    }
}

/// HTTP/1 sends the path and query only, and the target in `Host` (unless set already).
fn origin_form(req: &mut Request<Body>, key: &Key) {
    if !req.headers().contains_key(http::header::HOST) {
        let default_port = if key.0 == Scheme::HTTPS { 443 } else { 80 };
        let host = match key.1.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", key.1.host()),
            _ => key.1.host().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let path = req.uri().path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
}

/// A connection: the handle requests are sent with, and the connection future that does its
/// reading and writing whenever the request using it is polled.
struct Live {
    send: http1::SendRequest<Body>,
    conn: Pin<Box<http1::Connection<Io, Body>>>,
    /// The connection future has finished: the connection is gone.
    closed: bool,
}

enum Unsent {
    /// The connection closed before the request was written: here it is back.
    Back(Box<Request<Body>>),
    /// The request may have been (partly) written.
    Failed(Error),
}

impl Live {
    /// Drive the connection one step; true when it has finished (closed or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.conn.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }

    /// Send `req` and wait for the answer's head, driving the connection meanwhile.
    async fn send(mut self, req: Request<Body>) -> Result<(Response<Incoming>, Live), Unsent> {
        // A pooled connection may have been closed by the target while it waited: reading its
        // end now says so before anything is written.
        let ready = poll_fn(|cx| {
            if self.drive(cx) {
                return Poll::Ready(false);
            }
            self.send.poll_ready(cx).map(|r| r.is_ok())
        })
        .await;
        if !ready {
            return Err(Unsent::Back(Box::new(req)));
        }
        let result = {
            let Live { send, conn, closed } = &mut self;
            let mut answer = std::pin::pin!(send.try_send_request(req));
            poll_fn(|cx| {
                if !*closed && conn.as_mut().poll(cx).is_ready() {
                    *closed = true;
                }
                match answer.as_mut().poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    // hyper answers a request its connection ended under with an error (as the
                    // connection ends); should it not, nothing would wake this: say so, not hang.
                    Poll::Pending if *closed => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await
        };
        match result {
            Some(Ok(resp)) => Ok((resp, self)),
            Some(Err(mut e)) => match e.take_message() {
                Some(req) => Err(Unsent::Back(Box::new(req))),
                None => Err(Unsent::Failed(Error::Exchange(e.into_error()))),
            },
            None => Err(Unsent::Failed(Error::Closed)),
        }
    }
}

/// The answer's body, driving its connection as it is read; at its end the connection goes
/// back to the pool (unless the exchange closed it). Dropped before its end, it closes the
/// connection: the rest of that answer is unwanted.
pub struct Driven {
    body: Incoming,
    live: Option<Live>,
    key: Key,
}

impl Driven {
    fn new(resp: Response<Incoming>, live: Live, key: Key) -> Response<Driven> {
        resp.map(|body| Driven { body, live: Some(live), key })
    }

    /// The body has ended: the connection finishes the exchange and, if it stays open, waits
    /// in the pool.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut live) = self.live.take() {
            if !live.drive(cx) {
                checkin(self.key.clone(), live);
            }
        }
    }
}

impl Drop for Driven {
    /// A body read to its end whose last `poll_frame` never came (the reader stopped at
    /// `is_end_stream`): its connection is reusable all the same.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            if let Some(live) = self.live.take().filter(|l| !l.closed) {
                checkin(self.key.clone(), live);
            }
        }
    }
}

impl HttpBody for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.release(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(frame)) => return Poll::Ready(Some(frame)),
                Poll::Pending => {}
            }
            // Nothing decoded yet: let the connection read and decode what has arrived. When it
            // has decoded a frame, the next turn returns it; when it has nothing, both it and the
            // body have registered this task to be woken.
            let Some(live) = this.live.as_mut().filter(|l| !l.closed) else { return Poll::Pending };
            let finished = live.drive(cx);
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending if finished => continue,
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.release(cx);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(frame)) => return Poll::Ready(Some(frame)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

struct Idle {
    live: Live,
    since: Instant,
}

thread_local! {
    /// This worker thread's idle connections by target, the most recently used last. Keyed
    /// by the policy's upstream targets, never by what a client sends: a fast hash will do.
    static IDLE: RefCell<HashMap<Key, VecDeque<Idle>, rustc_hash::FxBuildHasher>> = RefCell::default();
    static CHECKINS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Close this worker thread's idle connections that are expired or closed by their target, and
/// those beyond [`IDLE_SPARE`] per target unused for [`IDLE_SURPLUS_TIMEOUT`]: the pool is used
/// last-in first-out, so a connection left that long at the front is more than the current
/// traffic needs. Called once a second on every worker (and every [`SWEEP_EVERY`] check-ins):
/// after a burst, the connections it opened and their buffers go, while a quiet target keeps a
/// few warm ones for the full [`IDLE_TIMEOUT`].
pub fn sweep_idle() {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| c.since.elapsed() < IDLE_TIMEOUT && !c.live.send.is_closed());
            while list.len() > IDLE_SPARE && list.front().is_some_and(|c| c.since.elapsed() >= IDLE_SURPLUS_TIMEOUT) {
                list.pop_front();
            }
        }
        idle.retain(|_, list| !list.is_empty());
    });
}

/// Every this many check-ins, every target's expired connections are dropped.
const SWEEP_EVERY: u64 = 1024;

/// The most recently used idle connection to `key` that is not expired.
fn checkout(key: &Key) -> Option<Live> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop_back() {
            if conn.since.elapsed() < IDLE_TIMEOUT && !conn.live.send.is_closed() {
                return Some(conn.live);
            }
        }
        None
    })
}

fn checkin(key: Key, live: Live) {
    // Now and then, forget the expired connections of targets no longer asked for.
    if CHECKINS.with(|n| n.replace(n.get().wrapping_add(1))).is_multiple_of(SWEEP_EVERY) {
        sweep_idle();
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(key).or_default();
        while list.front().is_some_and(|c| c.since.elapsed() >= IDLE_TIMEOUT) {
            list.pop_front();
        }
        if list.len() < IDLE_MAX {
            list.push_back(Idle { live, since: Instant::now() });
        }
    });
}
