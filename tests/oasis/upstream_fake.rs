//! The scripted upstream model server of the upstream backend's unit tests
//! (`src/backend/upstream/test_server.rs`), compiled into this binary too: one fake upstream
//! for both.

#[path = "../../src/backend/upstream/test_server.rs"]
mod server;

pub use server::*;
