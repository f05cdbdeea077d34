//! The request phases, one module each, in the order `proxy::pipeline` runs them:
//!
//! 1. `inspect`: the head's size and framing, the path, the declared length; the request as
//!    the decision graph reads it.
//! 2. `decide`: the body read when a route needs it, the compiled graph asked; the refusals
//!    it decides (404, 405, 401, 403).
//! 3. `cache`: on a route with a `cache`, the stored answer looked up (a hit is answered after
//!    the limits, charging no tokens) and a miss's answer stored as it streams back.
//! 4. `limit`: the route's limits charged in the store; 429/503 refusals, rate headers, and
//!    what token budgets reconcile when the answer ends.
//! 5. `respond`: what a route answers itself (static responses and builtins).
//! 6. `target`: the route's upstream, and a target by its balancing.
//! 7. `upstream_request`: the request the upstream sees (path rewrite, query, credentials
//!    removed, headers set, forwarded and trace headers, the body).
//! 8. `forward`: the request sent, failures mapped to errors, websockets spliced.
//! 9. `finish`: the answer's headers, whether the connection carries another request, and
//!    the accounting when the answer's last byte leaves.
//!
//! Between 1 and 2, `cors`: the answer to a CORS preflight (decided by the graph, answered
//! without credentials or upstream) and the headers every answer of a route gets (CORS,
//! `www-authenticate`), which `decide` records and the proxy adds to whatever answers.
//!
//! A phase may use an earlier one, never a later one.

pub mod cache;
pub mod cors;
pub mod decide;
pub mod finish;
pub mod forward;
pub mod inspect;
pub mod limit;
pub mod respond;
pub mod target;
pub mod upstream_request;

use http::Response;

use crate::body::Body;
use crate::errors::GwError;
use crate::gateway::{Gateway, Loaded};
use crate::server::ConnInfo;

/// What every phase may read about the request it serves.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub gw: &'a Gateway,
    /// The policy this request is decided and forwarded under, even if a reload happens meanwhile.
    pub loaded: &'a std::sync::Arc<Loaded>,
    pub conn: ConnInfo,
    pub request_id: &'a str,
    /// The request's W3C trace, continued upstream and written to its audit line.
    pub trace: &'a crate::headers::Trace,
}

/// Why the pipeline ends before its last phase: a gateway-made error (the request's error
/// code in metrics and the audit log), or an answer of its own (a 405 with its `Allow`, a
/// refusal with its rate headers).
pub enum Stop {
    Error(GwError),
    Answer(Response<Body>),
}

impl From<GwError> for Stop {
    fn from(e: GwError) -> Stop {
        Stop::Error(e)
    }
}
