//! Vector stores at work: files read into chunks off the request path (`ingest.rs`), and
//! searches over a store's chunks (`search.rs`).
//!
//! The store is the truth: a file's chunks and vectors live in `store` (the `chunks` table),
//! and the store's files with `in_progress` status are the ingestion queue, so a restart resumes
//! it. Each node builds its in-memory index of a store from those chunks on first search and
//! keeps it until the store's files change. Knows no axum and no SQL.

mod ingest;
mod search;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OnceCell};

use crate::model::{
    FileCounts, Kind, StoredVectorStoreFile, VectorStore, VectorStoreFileStatus, VectorStoreStatus,
    now,
};
use crate::retrieval::embed::{Embedder, UpstreamEmbeddings, UpstreamEmbeddingsConfig, WordLlama};
use crate::retrieval::extract::{ExtractLimits, Isolation};
use crate::retrieval::index::Index;
use crate::store::{Filter, Order, Page, Result, Store, StoreExt};

pub use search::{SearchError, SearchHit, SearchRequest};

/// How a node embeds: the built-in model (default) or an upstream `/v1/embeddings`.
#[derive(Debug, Clone, Default)]
pub enum EmbeddingsConfig {
    #[default]
    BuiltIn,
    Upstream(UpstreamEmbeddingsConfig),
}

/// What the vector-store service needs.
#[derive(Debug, Clone)]
pub struct VectorsConfig {
    /// Where the built-in embedding model is cached.
    pub data_dir: PathBuf,
    /// Where File bytes live.
    pub bucket: crate::bucket::Bucket,
    pub embeddings: EmbeddingsConfig,
    pub limits: ExtractLimits,
    /// This node's name on a shared store (a cluster): files being read are claimed there,
    /// and index changes counted there for the other nodes. `None`: alone on its store.
    pub node: Option<String>,
    /// Where documents are read: a bounded child process of the `oasis` executable (in
    /// production always), or this process (unit tests only: no time or memory bound).
    pub extract: Isolation,
}

/// The vector-store service, shared by the API and the run workers.
#[derive(Clone)]
pub struct Vectors {
    inner: Arc<Inner>,
    /// The store as this handle's project sees it ([`Vectors::for_project`]); the system's
    /// view for the root handle, whose ingestion lanes read every project's files.
    store: Arc<dyn Store>,
}

/// A store's changes seen on this node, and counted in the store by every node.
type Version = (u64, i64);

/// The store counter of a vector store's changes.
fn counter_key(vector_store_id: &str) -> String {
    format!("vector_store.{vector_store_id}")
}

/// Seconds within which a store's `last_active_at` is not written again.
const TOUCH_EVERY_SECS: i64 = 60;

struct Inner {
    store: Arc<dyn Store>,
    config: VectorsConfig,
    embedder: OnceCell<Arc<dyn Embedder>>,
    /// Built indexes by store id, with the change counts they were built at.
    indexes: Mutex<HashMap<String, (Version, Arc<Index>)>>,
    /// Each store's change count (files added, read, removed, re-attributed) on this node.
    changes: Mutex<HashMap<String, u64>>,
    wake: Notify,
    /// Told whenever a store's files change (a file read, added or removed).
    changes_seen: Notify,
    /// Keys of the files this node's ingestion lanes are reading.
    reading: Mutex<std::collections::HashSet<String>>,
}

impl Vectors {
    pub fn new(store: Arc<dyn Store>, config: VectorsConfig) -> Vectors {
        Vectors {
            store: store.clone(),
            inner: Arc::new(Inner {
                store,
                config,
                embedder: OnceCell::new(),
                indexes: Mutex::new(HashMap::new()),
                changes: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                changes_seen: Notify::new(),
                reading: Mutex::new(Default::default()),
            }),
        }
    }

    /// This service as project `project` sees it: only its stores are found and searched.
    pub fn for_project(&self, project: &str) -> Vectors {
        Vectors {
            inner: self.inner.clone(),
            store: self.inner.store.for_project(project),
        }
    }

    /// The embedder, loaded (and for the built-in one, downloaded) on first use.
    async fn embedder(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        let config = self.inner.config.clone();
        let e = self
            .inner
            .embedder
            .get_or_try_init(|| async move {
                let e: Arc<dyn Embedder> = match config.embeddings {
                    EmbeddingsConfig::BuiltIn => {
                        let dir = config.data_dir.clone();
                        Arc::new(tokio::task::spawn_blocking(move || WordLlama::load(&dir)).await??)
                    }
                    EmbeddingsConfig::Upstream(c) => Arc::new(UpstreamEmbeddings::new(c)),
                };
                anyhow::Ok(e)
            })
            .await?;
        Ok(e.clone())
    }

    /// Note that a store's files changed: its index is rebuilt on next search, and the
    /// ingestion worker looks for new work.
    pub fn changed(&self, vector_store_id: &str) {
        *self
            .inner
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(vector_store_id.to_string())
            .or_default() += 1;
        self.inner.wake.notify_one();
        self.inner.changes_seen.notify_waiters();
        // Other nodes rebuild their index of the store when its count in the store moves.
        if self.inner.config.node.is_some() {
            let (store, key) = (self.store.clone(), counter_key(vector_store_id));
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.bump(&key) {
                    tracing::warn!(error = %e, "counting a vector store's change");
                }
            });
        }
    }

    /// Wait until none of the store's files is waiting to be read, or until `until`: whether
    /// they all were read. (Changes made on this node wake it; others are seen within a
    /// second.)
    pub async fn wait_until_read(
        &self,
        vector_store_id: &str,
        until: tokio::time::Instant,
    ) -> Result<bool> {
        loop {
            let seen = self.inner.changes_seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            let (this, id) = (self.clone(), vector_store_id.to_string());
            let pending = tokio::task::spawn_blocking(move || {
                this.files_of(&id)
                    .map(|files| files.iter().any(Vectors::is_pending))
            })
            .await
            .map_err(|e| anyhow::anyhow!("checking a store's files panicked: {e}"))??;
            if !pending {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(false);
            }
            let next = until.min(now + std::time::Duration::from_secs(1));
            let _ = tokio::time::timeout_at(next, seen).await;
        }
    }

    /// A store's changes seen on this node, and (on a cluster) counted by every node.
    fn change_count(&self, vector_store_id: &str) -> Result<Version> {
        let here = self
            .inner
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(vector_store_id)
            .copied()
            .unwrap_or_default();
        let everywhere = match self.inner.config.node {
            Some(_) => self.store.counter(&counter_key(vector_store_id))?,
            None => 0,
        };
        Ok((here, everywhere))
    }

    /// A store's files (every state), at most 10,000.
    pub fn files_of(&self, vector_store_id: &str) -> Result<Vec<StoredVectorStoreFile>> {
        let page = Page {
            limit: 10_000,
            order: Order::Asc,
            after: None,
            before: None,
        };
        Ok(self
            .store
            .page::<StoredVectorStoreFile>(Some(vector_store_id), None, &page)?
            .0)
    }

    /// `vs` with its counts, usage and status as they are now (and expiry applied).
    pub fn with_counts(&self, mut vs: VectorStore) -> Result<VectorStore> {
        let files = self.files_of(&vs.id)?;
        let mut counts = FileCounts::default();
        let mut usage = 0;
        for f in &files {
            counts.add(f.file.status);
            usage += f.file.usage_bytes;
        }
        vs.file_counts = counts;
        vs.usage_bytes = usage;
        vs.status = if vs.expires_at.is_some_and(|t| t <= now()) {
            VectorStoreStatus::Expired
        } else if counts.in_progress > 0 {
            VectorStoreStatus::InProgress
        } else {
            VectorStoreStatus::Completed
        };
        Ok(vs)
    }

    /// Every store's file record of `file_id` (a File being deleted leaves every store).
    pub fn remove_file_everywhere(&self, file_id: &str) -> Result<()> {
        let page = Page {
            limit: 10_000,
            order: Order::Asc,
            after: None,
            before: None,
        };
        let filter = Filter {
            field: "file.id",
            value: file_id.to_string(),
        };
        let (records, _) = self
            .store
            .list(Kind::VectorStoreFile, None, Some(&filter), &page)?;
        for r in records {
            let f: StoredVectorStoreFile = r.decode()?;
            self.store.delete(Kind::VectorStoreFile, &f.key)?;
            self.changed(&f.file.vector_store_id);
        }
        self.store.delete_chunks(None, Some(file_id))
    }

    /// Remove one file from one store (its chunks too). Whether it was there.
    pub fn remove_file(&self, vector_store_id: &str, file_id: &str) -> Result<bool> {
        let key = StoredVectorStoreFile::key_of(vector_store_id, file_id);
        let existed = self.store.delete(Kind::VectorStoreFile, &key)?;
        self.store
            .delete_chunks(Some(vector_store_id), Some(file_id))?;
        self.changed(vector_store_id);
        Ok(existed)
    }

    /// Mark a store used now (its expiry counts from its last activity). A store used in the
    /// last minute is not written again: expiry is counted in days, and a busy store would
    /// otherwise be rewritten on every search.
    pub fn touch(&self, vector_store_id: &str) -> Result<()> {
        let Some(mut vs) = self.store.find::<VectorStore>(vector_store_id)? else {
            return Ok(());
        };
        let t = now();
        if vs
            .last_active_at
            .is_some_and(|at| t - at < TOUCH_EVERY_SECS)
        {
            return Ok(());
        }
        vs.last_active_at = Some(t);
        vs.expires_at = VectorStore::expiry_time(&vs.expires_after, t);
        self.store.save(&vs)
    }

    /// Whether a file record is still waiting to be read.
    pub fn is_pending(f: &StoredVectorStoreFile) -> bool {
        f.file.status == VectorStoreFileStatus::InProgress
    }
}
