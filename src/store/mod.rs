//! Storage: the only module that speaks SQL.
//!
//! [`Store`] is a small, backend-neutral trait over JSON records; [`sqlite::SqliteStore`] is the
//! embedded default (WAL mode, versioned migrations). A Postgres implementation would satisfy
//! the same trait. Every method is one transaction.

pub mod blobs;
mod chunks;
pub mod sqlite;

pub use chunks::StoredChunk;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{Kind, Object};

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no {kind} found with id '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("no object with id '{id}' to paginate from ({param})")]
    BadCursor { param: &'static str, id: String },
    #[error("an object with id '{0}' already exists")]
    Duplicate(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stored object.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    pub scope: Option<String>,
    pub created_at: i64,
    pub body: String,
}

impl Record {
    pub fn of<T: Object>(obj: &T) -> Result<Record> {
        Ok(Record {
            kind: T::KIND,
            id: obj.id().to_string(),
            scope: obj.scope().map(str::to_string),
            created_at: obj.created_at(),
            body: to_json(obj)?,
        })
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            StoreError::Other(anyhow::anyhow!(
                "stored {} {} is unreadable: {e}",
                self.kind.as_str(),
                self.id
            ))
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(e.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A page request: `limit` objects after/before a cursor id, by creation order.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: usize,
    pub order: Order,
    pub after: Option<String>,
    pub before: Option<String>,
}

/// Restrict a list to objects whose JSON `field` equals `value`.
#[derive(Debug, Clone)]
pub struct Filter {
    pub field: &'static str,
    pub value: String,
}

pub trait Store: Send + Sync + 'static {
    /// Insert all records, or none.
    fn insert_all(&self, records: &[Record]) -> Result<()>;
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>>;
    /// Replace an object's body.
    fn update(&self, kind: Kind, id: &str, body: &str) -> Result<()>;
    /// Replace the bodies of all these objects, or of none.
    fn update_all(&self, records: &[Record]) -> Result<()>;
    /// Delete an object and every object scoped to it (a thread's messages). Returns whether
    /// it existed.
    fn delete(&self, kind: Kind, id: &str) -> Result<bool>;
    /// A page of objects of `kind` (within `scope`, matching `filter`), and whether more follow.
    fn list(
        &self,
        kind: Kind,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<Record>, bool)>;
    /// Insert `inserts` and replace the bodies of `updates`, all or none (a completed Upload
    /// and the File it made).
    fn insert_and_update(&self, inserts: &[Record], updates: &[Record]) -> Result<()>;
    /// Up to `limit` objects of `kind` (matching `filter`) whose JSON `expires_at` is at or
    /// before `now`, oldest first. Objects without an `expires_at` never expire.
    fn expired(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Record>>;
    /// Replace a file's chunks in a vector store and save `update` (the store's file, now
    /// done), all or none; `NotFound` (and nothing kept) if that record is gone or no longer
    /// `in_progress` (cancelled meanwhile).
    fn put_chunks(
        &self,
        vector_store_id: &str,
        file_id: &str,
        chunks: &[StoredChunk],
        update: &Record,
    ) -> Result<()>;
    /// Every chunk of a vector store, by file and position.
    fn chunks(&self, vector_store_id: &str) -> Result<Vec<StoredChunk>>;
    /// Delete the chunks of a store, of a file (in every store), or of a file in a store.
    fn delete_chunks(&self, vector_store_id: Option<&str>, file_id: Option<&str>) -> Result<()>;
}

/// Typed helpers over any [`Store`].
pub trait StoreExt: Store {
    fn insert<T: Object>(&self, obj: &T) -> Result<()> {
        self.insert_all(&[Record::of(obj)?])
    }

    fn find<T: Object>(&self, id: &str) -> Result<Option<T>> {
        self.get(T::KIND, id)?.map(|r| r.decode()).transpose()
    }

    fn fetch<T: Object>(&self, id: &str) -> Result<T> {
        self.find(id)?.ok_or_else(|| StoreError::NotFound {
            kind: T::KIND.noun(),
            id: id.to_string(),
        })
    }

    /// Save several objects in one transaction.
    fn save_all(&self, records: &[Record]) -> Result<()> {
        self.update_all(records)
    }

    fn save<T: Object>(&self, obj: &T) -> Result<()> {
        self.update(T::KIND, obj.id(), &to_json(obj)?)
    }

    fn page<T: Object>(
        &self,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<T>, bool)> {
        let (records, more) = self.list(T::KIND, scope, filter, page)?;
        let items = records
            .iter()
            .map(Record::decode)
            .collect::<Result<Vec<T>>>()?;
        Ok((items, more))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
