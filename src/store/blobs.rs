//! File contents in the [`Bucket`]: one object per File id (`files/<file id>`), stored whole
//! before its record is inserted, so a File that exists always has all its bytes; deleted
//! before its record, so no bytes outlive the record that owns them (a crash in between leaves
//! a record, which the next sweep deletes).
//!
//! Object-store I/O is awaited here; the store's (blocking) calls run off the async threads.

use std::sync::Arc;

use super::{Record, Store, StoreError, StoreExt};
use crate::bucket::{Bucket, BucketError};
use crate::model::{FileObject, Kind};

/// The key of a File's bytes.
pub fn key(id: &str) -> String {
    format!("files/{id}")
}

/// The folder (key prefix) File bytes are staged in before [`commit`].
pub const FOLDER: &str = "files";

/// A failure of the store or of the bucket.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// The File would take its project past `max` stored bytes; nothing was kept.
    #[error("the project's Files may take at most {0} bytes")]
    OverLimit(u64),
}

pub type Result<T> = std::result::Result<T, BlobError>;

/// Run blocking store work off the async threads.
async fn db<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> super::Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("store task: {e}")))??)
}

/// Store the staged bytes `tmp` (from `bucket.temp_file(FOLDER)`) and then record `obj`,
/// saving `updates` (e.g. the Upload the File was made from) in the same transaction as the
/// File's record; either both happen or neither.
///
/// With `max_bytes` (the project's storage limit), the File is recorded only if the project's
/// Files then take at most that many bytes, counted in the transaction that records it (see
/// [`super::Tx::stored_bytes`]): otherwise [`BlobError::OverLimit`], and nothing is kept.
pub async fn commit(
    store: &Arc<dyn Store>,
    bucket: &Bucket,
    tmp: tempfile::NamedTempFile,
    obj: &FileObject,
    updates: Vec<Record>,
    max_bytes: Option<u64>,
) -> Result<()> {
    let k = key(&obj.id);
    bucket.put_temp(&k, tmp).await?;
    record(store, bucket, &k, obj, updates, max_bytes).await
}

/// Record `obj`, whose bytes are stored as `k`, within `max_bytes` (see [`commit`]); should
/// that fail, the bytes are deleted.
async fn record(
    store: &Arc<dyn Store>,
    bucket: &Bucket,
    k: &str,
    obj: &FileObject,
    updates: Vec<Record>,
    max_bytes: Option<u64>,
) -> Result<()> {
    let rec = Record::of(obj)?;
    let size = obj.bytes;
    let inserted = db(store, move |s| {
        s.within(|tx| {
            if let Some(max) = max_bytes
                && (tx.stored_bytes()?.max(0) as u64).saturating_add(size) > max
            {
                return Ok(Err(BlobError::OverLimit(max)));
            }
            tx.insert(&rec)?;
            for u in &updates {
                tx.update(u)?;
            }
            Ok(Ok(()))
        })
    })
    .await
    .and_then(|r| r);
    if let Err(e) = inserted {
        if let Err(d) = bucket.delete(k).await {
            tracing::warn!(key = %k, error = %d, "deleting the bytes of a File not recorded");
        }
        return Err(e);
    }
    Ok(())
}

/// Store `bytes` as a new File, within `max_bytes` (see [`commit`]).
pub async fn create(
    store: &Arc<dyn Store>,
    bucket: &Bucket,
    filename: &str,
    purpose: &str,
    bytes: Vec<u8>,
    max_bytes: Option<u64>,
) -> Result<FileObject> {
    // Names of files guest code wrote arrive here as they are: control and bidirectional
    // characters are shown, not obeyed.
    let obj = FileObject::new(
        crate::model::shown_file_name(filename),
        purpose.to_string(),
        bytes.len() as u64,
    );
    let k = key(&obj.id);
    bucket.put_bytes(&k, bytes).await?;
    record(store, bucket, &k, &obj, vec![], max_bytes).await?;
    Ok(obj)
}

/// The File `id`, unless it has expired by `now`: an expired File is deleted there and then
/// (see [`remove`]; should that fail, the sweep deletes it later) and is as gone as a deleted
/// one.
pub async fn find_live(
    store: &Arc<dyn Store>,
    bucket: &Bucket,
    id: &str,
    now: i64,
) -> Result<Option<FileObject>> {
    let id2 = id.to_string();
    match db(store, move |s| s.find::<FileObject>(&id2)).await? {
        Some(f) if f.expired(now) => {
            if let Err(e) = remove(store, bucket, id).await {
                tracing::warn!(file = %id, error = %e, "deleting an expired file");
            }
            Ok(None)
        }
        found => Ok(found),
    }
}

/// Delete a File: its bytes first, then its record, so that a crash in between leaves a
/// record that the next sweep deletes, never bytes no record owns. Whether the record was
/// there.
pub async fn remove(store: &Arc<dyn Store>, bucket: &Bucket, id: &str) -> Result<bool> {
    bucket.delete(&key(id)).await?;
    let id = id.to_string();
    db(store, move |s| s.delete(Kind::File, &id)).await
}

/// Delete every File that has expired by `now`, bytes and record; how many there were.
pub async fn sweep_expired(store: &Arc<dyn Store>, bucket: &Bucket, now: i64) -> Result<usize> {
    let mut n = 0;
    loop {
        let batch = db(store, move |s| s.expired(Kind::File, None, now, 256)).await?;
        if batch.is_empty() {
            return Ok(n);
        }
        for r in &batch {
            remove(store, bucket, &r.id).await?;
            n += 1;
        }
    }
}
