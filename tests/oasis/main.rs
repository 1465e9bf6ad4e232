//! The one integration-test binary. Tests run the real runtime: the first one to need it
//! fetches, pre-initializes and compiles it into the shared data dir (minutes, once); the
//! rest reuse the cache.

mod api;
mod bad_input;
mod bucket;
mod cli;
mod cluster;
mod conformance;
mod durability;
mod expiry;
mod files;
mod helpers;
mod hibernation;
mod hibernation_api;
mod hostile;
mod hostile2;
mod hostile_net;
mod metrics;
mod node_sdk;
mod projects;
mod projects_limits;
mod retrieval_extract;
mod runs;
mod sandbox;
mod services;
mod store_conformance;
mod uploads_cluster;
mod upstream_fake;
mod upstream_stream;
mod vector_store_limits;
mod vector_stores;
mod worker_processes;
mod workers;
