//! Run orchestration (issue 4): the run lifecycle. No axum, no SQL, no wasmtime types here.
//!
//! So far: [`state`], the one transition function every run-status change must go through.

pub mod state;
