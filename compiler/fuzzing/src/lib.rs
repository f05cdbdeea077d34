//! The properties the fuzz targets in `fuzz/` check, kept in this dev-only crate so that the
//! fuzz targets and the regression replay (`tests/regressions.rs`) run exactly the same code,
//! and the shipping compiler carries neither the generators nor `arbitrary`. Each property
//! takes the fuzzer's raw bytes and panics when it does not hold.
//!
//! - [`parse`]: any bytes as a policy file: the whole pipeline never panics, every diagnostic
//!   span lies inside its file on char boundaries, and every diagnostic renders.
//! - [`compile_structured`]: a policy generated from an `arbitrary` structure ([`gen`]),
//!   printed and compiled (and lowered, and its tests run, when it is valid).
//! - [`roundtrip`]: formatting a policy that parses keeps its meaning and is idempotent.
//! - [`differential`]: a generated policy and requests: the decision graph and the reference
//!   evaluator agree on every request; and every expression of the policy evaluates within the
//!   types the checker gave it (see [`typed_evaluation`]).
//!
//! Not a stable API: it exists for the fuzzers and their regression tests.

#![allow(clippy::unwrap_used, clippy::panic)]

pub mod gen;
mod props;
mod world;

pub use props::{
    compile_structured, differential, differential_case, differential_outcomes, parse, roundtrip,
    structured_policy_text, typed_evaluation,
};
