//! The gw gateway runtime: serves HTTP through a compiled policy graph.

pub mod mock;
