//! Oasis: a self-hosted, OpenAI-compatible Assistants API server whose `code_interpreter` runs
//! model-written Python in WASI CPython on wasmtime.
//!
//! # Layout
//! - [`sandbox`]: the code-interpreter sandbox (wasmtime, WASI, sessions). Knows no HTTP or SQL.
//! - [`cli`]: the `oasis` command line.
//! - [`bench`]: `oasis bench`, benchmarks that print numbers (never timed tests).

pub mod bench;
pub mod cli;
pub mod sandbox;
