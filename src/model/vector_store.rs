//! Vector stores, their files and file batches, as stored and served.
//!
//! A store's `file_counts`, `usage_bytes` and `status` (and a batch's counts) are counted anew
//! from its files whenever it is read, so they can never disagree with them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Kind, LastError, Metadata, Object, object_tag};

object_tag! {
    /// `"vector_store"`.
    VectorStoreTag = "vector_store";
    /// `"vector_store.file"`.
    VectorStoreFileTag = "vector_store.file";
    /// `"vector_store.files_batch"`.
    FileBatchTag = "vector_store.files_batch";
}

pub use crate::retrieval::filter::{AttrValue, Attributes};

/// `expires_after` of a vector store: `days` (1 to 365) after it was last active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreExpiry {
    pub anchor: LastActiveAnchor,
    #[schemars(range(min = 1, max = 365))]
    pub days: u32,
}

/// The one anchor a store's expiry counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LastActiveAnchor {
    LastActiveAt,
}

/// How many of a store's (or a batch's) files are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileCounts {
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub total: u64,
}

impl FileCounts {
    pub fn add(&mut self, status: VectorStoreFileStatus) {
        match status {
            VectorStoreFileStatus::InProgress => self.in_progress += 1,
            VectorStoreFileStatus::Completed => self.completed += 1,
            VectorStoreFileStatus::Failed => self.failed += 1,
            VectorStoreFileStatus::Cancelled => self.cancelled += 1,
        }
        self.total += 1;
    }
}

/// A vector store's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VectorStoreStatus {
    Expired,
    InProgress,
    Completed,
}

/// A vector store as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VectorStore {
    pub id: String,
    pub object: VectorStoreTag,
    pub created_at: i64,
    pub name: String,
    pub usage_bytes: u64,
    pub file_counts: FileCounts,
    pub status: VectorStoreStatus,
    pub expires_after: Option<StoreExpiry>,
    pub expires_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub metadata: Metadata,
}

impl VectorStore {
    /// When a store with this expiry, last active at `last_active_at`, expires.
    pub fn expiry_time(expires_after: &Option<StoreExpiry>, last_active_at: i64) -> Option<i64> {
        expires_after
            .as_ref()
            .map(|e| last_active_at + i64::from(e.days) * 86_400)
    }
}

impl Object for VectorStore {
    const KIND: Kind = Kind::VectorStore;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
}

/// A file's state in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VectorStoreFileStatus {
    InProgress,
    Completed,
    Cancelled,
    Failed,
}

/// How a file was chunked: always shown as `static` sizes (`auto` is 800 tokens with 400
/// overlap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChunkingShown {
    Static { r#static: StaticChunking },
    Other,
}

/// `static` chunking: chunks of at most `max_chunk_size_tokens` (100 to 4096) tokens, each
/// sharing `chunk_overlap_tokens` (at most half of that) with the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticChunking {
    #[schemars(range(min = 100, max = 4096))]
    pub max_chunk_size_tokens: u32,
    #[schemars(range(min = 0))]
    pub chunk_overlap_tokens: u32,
}

impl StaticChunking {
    /// OpenAI's `auto`.
    pub const AUTO: StaticChunking = StaticChunking {
        max_chunk_size_tokens: 800,
        chunk_overlap_tokens: 400,
    };
}

/// How to chunk: `auto` (800 tokens, 400 overlap) or `static` sizes.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChunkingParam {
    Auto {},
    Static { r#static: StaticChunking },
}

/// A file in a vector store, as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VectorStoreFile {
    /// The File's id.
    pub id: String,
    pub object: VectorStoreFileTag,
    pub created_at: i64,
    pub usage_bytes: u64,
    pub vector_store_id: String,
    pub status: VectorStoreFileStatus,
    pub last_error: Option<LastError>,
    pub chunking_strategy: ChunkingShown,
    pub attributes: Attributes,
}

/// A store's file as kept: the served object, keyed by store and file (a File may be in
/// several stores), with the batch that added it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVectorStoreFile {
    /// `<vector_store_id>/<file_id>`.
    pub key: String,
    pub file: VectorStoreFile,
    pub batch_id: Option<String>,
    /// The chunking asked for (`file.chunking_strategy` shows it).
    pub chunking: StaticChunking,
}

impl StoredVectorStoreFile {
    pub fn key_of(vector_store_id: &str, file_id: &str) -> String {
        format!("{vector_store_id}/{file_id}")
    }
}

impl Object for StoredVectorStoreFile {
    const KIND: Kind = Kind::VectorStoreFile;
    fn id(&self) -> &str {
        &self.key
    }
    fn created_at(&self) -> i64 {
        self.file.created_at
    }
    fn scope(&self) -> Option<&str> {
        Some(&self.file.vector_store_id)
    }
}

/// A batch's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileBatchStatus {
    InProgress,
    Completed,
    Cancelled,
    Failed,
}

/// A batch of files added to a store together, as served (its counts are counted on read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileBatch {
    pub id: String,
    pub object: FileBatchTag,
    pub created_at: i64,
    pub vector_store_id: String,
    pub status: FileBatchStatus,
    pub file_counts: FileCounts,
}

impl Object for FileBatch {
    const KIND: Kind = Kind::FileBatch;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
    fn scope(&self) -> Option<&str> {
        Some(&self.vector_store_id)
    }
}
