//! The runtime's contract with the compiler: the decision graph gw executes, and everything
//! it reads. `gw-compiler` lowers a checked policy into a `graph::Graph`; the runtime asks it
//! `decide(request)`. Nothing here knows the policy language's syntax or its reference
//! evaluator, so the fast engine and the evaluator it is tested against share no logic.
//!
//! `lang` is the vocabulary both sides share (facts, operators, methods), `request` the
//! request and the decision, `value` the three-valued expression semantics, `ijson` the
//! strict body reader, `template` the text `set header` and `respond` build from a request,
//! `keys` key sets, `jwt` and `basic` the other credential sets, `cors` the CORS answers,
//! `cache` the response cache's key and bypass rules, `gcra` and `tokens` the limit arithmetic.

pub mod basic;
pub mod cache;
pub mod cors;
pub mod gcra;
pub mod graph;
pub mod ijson;
pub mod jwt;
pub mod keys;
pub mod lang;
pub mod path;
pub mod request;
pub mod template;
pub mod tokens;
pub mod value;
