//! The grammar of the gw policy language, kept in one crate so that pest_derive's build cost
//! and pest's quirks stay in one place. `gwp.pest` is the grammar; `README.md` its reference.

use pest_derive::Parser;

/// The generated pest parser for `.gwp` files.
#[derive(Parser)]
#[grammar = "gwp.pest"]
pub struct GwpParser;

pub use pest;
