//! Searching vector stores: each store's index built from its stored chunks (once per change),
//! queries embedded with the model the chunks were embedded with.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{FileObject, StoredVectorStoreFile, VectorStore, VectorStoreFileStatus, now};
use crate::retrieval::filter::{Attributes, Filter};
use crate::retrieval::index::{Index, IndexedChunk, Mode, SearchOptions};
use crate::store::StoreExt;

use super::Vectors;

/// A search over one or more stores.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub queries: Vec<String>,
    pub max_results: usize,
    /// 0..1: hits scoring less are dropped.
    pub score_threshold: f32,
    pub filter: Option<Filter>,
}

/// One passage found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub vector_store_id: String,
    pub file_id: String,
    pub file_name: String,
    pub score: f32,
    pub text: String,
    pub attributes: Attributes,
}

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("vector store {0} has expired")]
    Expired(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl Vectors {
    /// The best passages in `stores` for the request, best first.
    pub async fn search(
        &self,
        stores: &[String],
        req: &SearchRequest,
    ) -> Result<Vec<SearchHit>, SearchError> {
        let mut hits = vec![];
        // The queries' vectors, made once (for the first store that has vectors).
        let mut vectors: Option<Vec<Vec<f32>>> = None;
        for id in stores {
            let vs = {
                let store = self.store.clone();
                let id = id.clone();
                tokio::task::spawn_blocking(move || store.fetch::<VectorStore>(&id))
                    .await
                    .map_err(|e| SearchError::Internal(e.into()))??
            };
            if vs.expires_at.is_some_and(|t| t <= now()) {
                return Err(SearchError::Expired(vs.id));
            }
            let index = self.index(id).await?;
            if index.is_empty() {
                continue;
            }
            if index.dim() > 0 && vectors.is_none() {
                let embedder = self.embedder().await.map_err(SearchError::Internal)?;
                vectors = Some(
                    embedder
                        .embed(&req.queries)
                        .await
                        .map_err(|e| SearchError::Internal(anyhow::anyhow!("{e}")))?,
                );
            }
            let vectors = vectors.as_ref().filter(|_| index.dim() > 0);
            let queries: Vec<(&str, Option<&[f32]>)> = req
                .queries
                .iter()
                .enumerate()
                .map(|(i, q)| (q.as_str(), vectors.as_ref().map(|v| v[i].as_slice())))
                .collect();
            let opts = SearchOptions {
                max_results: req.max_results,
                score_threshold: req.score_threshold,
                filter: req.filter.clone(),
                mode: if vectors.is_some() {
                    Mode::Hybrid
                } else {
                    Mode::Bm25
                },
                ..SearchOptions::default()
            };
            for h in index.search_many(&queries, &opts) {
                hits.push(SearchHit {
                    vector_store_id: id.clone(),
                    file_id: h.file_id,
                    file_name: h.file_name,
                    score: h.score,
                    text: h.text,
                    attributes: h.attributes,
                });
            }
            let (v, id) = (self.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || v.touch(&id)).await;
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(req.max_results);
        Ok(hits)
    }

    /// The index of a store as its files are now: built from the stored chunks of its
    /// completed files, kept until the store changes on this node.
    async fn index(&self, vector_store_id: &str) -> Result<Arc<Index>, SearchError> {
        let (v1, id1) = (self.clone(), vector_store_id.to_string());
        let version = tokio::task::spawn_blocking(move || v1.change_count(&id1))
            .await
            .map_err(|e| SearchError::Internal(e.into()))??;
        if let Some((v, index)) = self
            .inner
            .indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(vector_store_id)
            && *v == version
        {
            return Ok(index.clone());
        }
        let (v2, id) = (self.clone(), vector_store_id.to_string());
        let index = tokio::task::spawn_blocking(move || v2.build_index(&id))
            .await
            .map_err(|e| SearchError::Internal(e.into()))??;
        let index = Arc::new(index);
        self.inner
            .indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vector_store_id.to_string(), (version, index.clone()));
        Ok(index)
    }

    fn build_index(&self, vector_store_id: &str) -> Result<Index, SearchError> {
        let files: HashMap<String, StoredVectorStoreFile> = self
            .files_of(vector_store_id)?
            .into_iter()
            .filter(|f| f.file.status == VectorStoreFileStatus::Completed)
            .map(|f| (f.file.id.clone(), f))
            .collect();
        let mut names: HashMap<String, String> = HashMap::new();
        let mut chunks = vec![];
        for c in self.store.chunks(vector_store_id)? {
            let Some(f) = files.get(&c.file_id) else {
                continue;
            };
            if !names.contains_key(&c.file_id) {
                let name = self
                    .store
                    .find::<FileObject>(&c.file_id)?
                    .map(|f| f.filename)
                    .unwrap_or_else(|| c.file_id.clone());
                names.insert(c.file_id.clone(), name);
            }
            chunks.push(IndexedChunk {
                file_name: names[&c.file_id].clone(),
                file_id: c.file_id,
                chunk_index: c.index,
                text: c.text,
                vector: c.vector,
                attributes: f.file.attributes.clone(),
            });
        }
        Ok(Index::build(chunks))
    }
}
