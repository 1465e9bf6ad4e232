//! Reading files into chunks: the store's `in_progress` files are the queue, worked through
//! a few at a time off the request path, and again after a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bucket::BucketError;
use crate::model::{FileObject, Kind, LastError, StoredVectorStoreFile, VectorStoreFileStatus};
use crate::retrieval::chunk::{ChunkSpec, chunk};
use crate::retrieval::extract::{ExtractError, extract_bounded_with};
use crate::store::blobs::{self, BlobError};
use crate::store::{Filter, Order, Page, Record, StoreError, StoreExt, StoredChunk};

use super::Vectors;

/// How many texts go to the embedder at once.
const EMBED_BATCH: usize = 256;

/// How often the queue is looked at even when nothing woke it (another node may have added
/// work).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Files read at once on this node, so that one slow file (a PDF that runs into the
/// extraction time limit) does not hold up every other store's.
const LANES: usize = 2;

/// The oldest waiting files a lane looks through for one no one reads yet (on a cluster,
/// other nodes' lanes hold some of them).
const LOOK_AHEAD: usize = 32;

/// How long a node's claim of a file it reads lasts (on a cluster): beyond the extraction
/// time limit and the embedding of what it extracted. A node that dies holding one leaves
/// the file to the others after this long.
const CLAIM_MS: i64 = 10 * 60 * 1000;

impl Vectors {
    /// Work the ingestion queue until the task is dropped: [`LANES`] files at a time.
    pub async fn ingest_forever(self) {
        futures::future::join_all((0..LANES).map(|_| self.clone().lane())).await;
    }

    async fn lane(self) {
        loop {
            match self.next_pending().await {
                Ok(Some((f, claim))) => {
                    // Another lane may be idle while more files wait.
                    self.inner.wake.notify_one();
                    if let Err(e) = self.ingest_one(f).await {
                        // The object store is down: the file stays queued (claimed by this
                        // lane meanwhile) and is tried again later.
                        tracing::warn!(error = %e, "a file to read could not be fetched");
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                    drop(claim);
                }
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, self.inner.wake.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the ingestion queue");
                    let _ = tokio::time::timeout(IDLE_POLL, self.inner.wake.notified()).await;
                }
            }
        }
    }

    /// The oldest file waiting to be read, in any store, that no other lane (of this node, or
    /// on a cluster of any node) is reading, claimed for this lane.
    async fn next_pending(&self) -> anyhow::Result<Option<(StoredVectorStoreFile, Claim)>> {
        let store = self.inner.store.clone();
        let node = self.inner.config.node.clone();
        let found = tokio::task::spawn_blocking(move || {
            // Alone, other lanes hold at most LANES - 1 of the oldest: one more is free.
            let page = Page {
                limit: if node.is_some() { LOOK_AHEAD } else { LANES },
                order: Order::Asc,
                after: None,
                before: None,
            };
            let filter = Filter {
                field: "file.status",
                value: "in_progress".into(),
            };
            store.page::<StoredVectorStoreFile>(None, Some(&filter), &page)
        })
        .await??;
        for f in found.0 {
            let free = self
                .inner
                .reading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(f.key.clone());
            if !free {
                continue;
            }
            let mut claim = Claim {
                vectors: self.clone(),
                key: f.key.clone(),
                shared: false,
            };
            let Some(node) = self.inner.config.node.clone() else {
                return Ok(Some((f, claim)));
            };
            let (store, lease) = (self.inner.store.clone(), claim.lease_id());
            let taken =
                tokio::task::spawn_blocking(move || store.take_lease(&lease, &node, CLAIM_MS))
                    .await??;
            if taken.is_some() {
                claim.shared = true;
                return Ok(Some((f, claim)));
            }
        }
        Ok(None)
    }

    /// Read one file into chunks and vectors, and record the outcome (never left
    /// `in_progress`), unless its bytes could not be fetched from the object store: then it is
    /// left queued, and the store's error is handed back.
    async fn ingest_one(&self, mut f: StoredVectorStoreFile) -> Result<(), BucketError> {
        let vs_id = f.file.vector_store_id.clone();
        let outcome = match self.fetch(&f).await {
            Ok(Some((file, path))) => self.read_chunks(&f, &file, &path).await,
            Ok(None) => Err(ExtractError::Invalid("the file was deleted".into())),
            Err(Fetch::Bucket(e)) => return Err(e),
            Err(Fetch::Other(e)) => Err(ExtractError::Failed(e)),
        };
        let store = self.inner.store.clone();
        let saved = match outcome {
            Ok((chunks, usage)) => {
                f.file.status = VectorStoreFileStatus::Completed;
                f.file.usage_bytes = usage;
                f.file.last_error = None;
                let file_id = f.file.id.clone();
                let vs = vs_id.clone();
                tokio::task::spawn_blocking(move || {
                    let record = Record::of(&f)?;
                    store.put_chunks(&vs, &file_id, &chunks, &record)
                })
                .await
            }
            Err(e) => {
                tracing::info!(file = %f.file.id, vector_store = %vs_id, error = %e, "a file could not be read");
                f.file.status = VectorStoreFileStatus::Failed;
                f.file.last_error = Some(LastError {
                    code: e.code().to_string(),
                    message: e.to_string(),
                });
                tokio::task::spawn_blocking(move || finish_if_pending(&*store, &f)).await
            }
        };
        match saved {
            Ok(Ok(())) | Ok(Err(StoreError::NotFound { .. })) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "recording a read file"),
            Err(e) => tracing::warn!(error = %e, "recording a read file"),
        }
        self.changed(&vs_id);
        Ok(())
    }

    /// The File of `f` and a path on this node to read its bytes at (the object itself or a
    /// cached copy); `None` if the File or its bytes are gone.
    async fn fetch(
        &self,
        f: &StoredVectorStoreFile,
    ) -> Result<Option<(FileObject, PathBuf)>, Fetch> {
        let bucket = &self.inner.config.bucket;
        let now = crate::model::now();
        let file = match blobs::find_live(&self.inner.store, bucket, &f.file.id, now).await {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(None),
            Err(BlobError::Bucket(e)) => return Err(Fetch::Bucket(e)),
            Err(e) => return Err(Fetch::Other(e.to_string())),
        };
        match bucket.local_path(&blobs::key(&file.id)).await {
            Ok(path) => Ok(Some((file, path))),
            Err(BucketError::NotFound(_)) => Ok(None),
            Err(e) => Err(Fetch::Bucket(e)),
        }
    }

    /// The file's chunks with their vectors, and the bytes they take.
    async fn read_chunks(
        &self,
        f: &StoredVectorStoreFile,
        file: &FileObject,
        path: &Path,
    ) -> Result<(Vec<StoredChunk>, u64), ExtractError> {
        let config = &self.inner.config;
        let text =
            extract_bounded_with(&config.extract, &file.filename, path, &config.limits).await?;
        let spec = ChunkSpec {
            max_tokens: f.chunking.max_chunk_size_tokens as usize,
            overlap_tokens: f.chunking.chunk_overlap_tokens as usize,
        };
        let texts = tokio::task::spawn_blocking(move || chunk(&text, spec))
            .await
            .map_err(|e| ExtractError::Failed(e.to_string()))?;
        if texts.is_empty() {
            return Err(ExtractError::Invalid(
                "the file holds no text to search".into(),
            ));
        }
        let embedder = self
            .embedder()
            .await
            .map_err(|e| ExtractError::Failed(format!("the embedding model: {e:#}")))?;
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let v = embedder
                .embed(batch)
                .await
                .map_err(|e| ExtractError::Failed(format!("embedding: {e}")))?;
            vectors.extend(v);
        }
        let model = embedder.id();
        let mut usage = 0u64;
        let chunks: Vec<StoredChunk> = texts
            .into_iter()
            .zip(vectors)
            .enumerate()
            .map(|(i, (text, vector))| {
                usage += (text.len() + vector.len() * 4) as u64;
                StoredChunk {
                    file_id: f.file.id.clone(),
                    index: i as u32,
                    text,
                    embedder: model.clone(),
                    vector,
                }
            })
            .collect();
        Ok((chunks, usage))
    }
}

/// Why a file's bytes could not be fetched: the object store (try again later), or anything
/// else (the file fails).
enum Fetch {
    Bucket(BucketError),
    Other(String),
}

/// Save a failed file's record, unless it has left `in_progress` meanwhile (cancelled,
/// removed).
fn finish_if_pending(
    store: &dyn crate::store::Store,
    f: &StoredVectorStoreFile,
) -> crate::store::Result<()> {
    match store.find::<StoredVectorStoreFile>(&f.key)? {
        Some(now) if Vectors::is_pending(&now) => store.update(
            Kind::VectorStoreFile,
            &f.key,
            &serde_json::to_string(f).map_err(|e| StoreError::Other(e.into()))?,
        ),
        _ => Ok(()),
    }
}

/// A file a lane of this node is reading (released when dropped).
struct Claim {
    vectors: Vectors,
    key: String,
    /// Whether it is also claimed in the store, for the other nodes of a cluster.
    shared: bool,
}

impl Claim {
    fn lease_id(&self) -> String {
        format!("ingest.{}", self.key)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.vectors
            .inner
            .reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        if self.shared
            && let Some(node) = self.vectors.inner.config.node.clone()
        {
            let (store, lease) = (self.vectors.inner.store.clone(), self.lease_id());
            tokio::task::spawn_blocking(move || store.release_lease(&lease, &node, false));
        }
    }
}
