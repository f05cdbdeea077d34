//! The gw policy compiler: `.gwp` text in, an immutable decision graph out.
//!
//! Stages, one module each, data flowing one way:
//! `load` (files, imports) → `syntax` (pest → `ast`) → `resolve` (names) → `check` (types,
//! values, semantic rules, lints) → `lower` (AST → `graph`). `eval` is the reference
//! evaluator the graph must agree with; `fmt` prints an AST back as canonical text.

pub mod ast;
pub mod diagnostics;
pub mod source;
pub mod syntax;
pub mod keys;
pub mod program;
pub mod request;
pub mod value;
