//! Oasis: a self-hosted, OpenAI-compatible Assistants API server whose `code_interpreter` runs
//! model-written Python in WASI CPython on wasmtime.
//!
//! # Layout
//! - [`api`]: the HTTP API (axum, OpenAI's wire format and errors).
//! - [`server`]: `oasis serve`: settings, state, lifecycle.
//! - [`model`]: the Assistants API's objects as stored.
//! - [`backend`]: model backends (an upstream Chat Completions server, the built-in model).
//! - [`outbound`]: what the HTTP clients share.
//! - [`orchestrator`]: the run lifecycle: the shared run queue, workers, the thread lock.
//! - [`retrieval`]: file_search's extraction, chunking, embeddings and hybrid index.
//! - [`vectors`]: vector stores at work: ingestion queue and searches.
//! - [`store`]: records behind a trait; SQLite by default, or PostgreSQL for a cluster. The only
//!   module that speaks SQL.
//! - [`bucket`]: bytes by key in an object store (the local file system by default, or an
//!   S3-compatible one several nodes share). Speaks no SQL.
//! - [`roaming`]: code-interpreter sessions shared by the nodes of a cluster (a lease per
//!   session in the store, state and files in the bucket).
//! - [`sandbox`]: the code-interpreter sandbox (wasmtime, WASI, sessions). Knows no HTTP or SQL.
//! - [`disk`]: file helpers (hashing, atomic writes) the pinned downloads and the sandbox share.
//! - [`metrics`]: what `GET /metrics` shows operators (names, labels, the calls that record).
//! - [`tenancy`]: projects and their API keys (the keys file), limits, session keys.
//! - [`cli`]: the `oasis` command line.
//! - [`bench`]: `oasis bench`, benchmarks that print numbers (never timed tests).

pub mod api;
pub mod backend;
pub mod bench;
pub mod bucket;
pub mod cli;
pub mod disk;
pub mod metrics;
pub mod model;
pub mod orchestrator;
pub mod outbound;
pub mod retrieval;
pub mod roaming;
pub mod sandbox;
pub mod server;
pub mod store;
pub mod tenancy;
pub mod vectors;
