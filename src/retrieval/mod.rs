//! Retrieval for `file_search`: text out of documents, token chunks, embeddings, and a hybrid
//! (BM25 + dense vectors) index with attribute filters.
//!
//! Knows no HTTP, no SQL and no runs: `api` and `orchestrator` hand it bytes, chunks and
//! queries; the chunks and their vectors are persisted by `store`, and each node builds its
//! in-memory index of a vector store from them.

pub mod chunk;
pub mod embed;
pub mod extract;
pub mod filter;
pub mod index;
