//! File contents on disk: one blob per File id, written whole (fsync + atomic rename) before its
//! record is inserted, so a File that exists always has all its bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Record, Result, Store, StoreError, StoreExt};
use crate::model::{FileObject, Kind};

/// Where a file's bytes live.
pub fn blob_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id)
}

/// Move a staged blob into place and record `obj`; either both happen or neither.
pub fn commit(
    store: &dyn Store,
    dir: &Path,
    tmp: tempfile::NamedTempFile,
    obj: &FileObject,
) -> Result<()> {
    commit_with(store, dir, tmp, obj, &[])
}

/// [`commit`], saving `updates` (e.g. the Upload the File was made from) in the same
/// transaction as the File's record.
pub fn commit_with(
    store: &dyn Store,
    dir: &Path,
    tmp: tempfile::NamedTempFile,
    obj: &FileObject,
    updates: &[Record],
) -> Result<()> {
    let path = blob_path(dir, &obj.id);
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::Other(e.into()))?;
    tmp.persist(&path)
        .map_err(|e| StoreError::Other(e.error.into()))?;
    if let Err(e) = store.insert_and_update(&[Record::of(obj)?], updates) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(())
}

/// The File `id`, unless it has expired by `now`: an expired File is deleted there and then
/// (see [`remove_expired`]) and is as gone as a deleted one.
pub fn find_live(store: &dyn Store, dir: &Path, id: &str, now: i64) -> Result<Option<FileObject>> {
    match store.find::<FileObject>(id)? {
        Some(f) if f.expired(now) => {
            remove_expired(store, dir, id)?;
            Ok(None)
        }
        found => Ok(found),
    }
}

/// Delete an expired File: its bytes first, then its record, so that a crash in between
/// leaves a record that the next sweep deletes, never bytes no record owns.
pub fn remove_expired(store: &dyn Store, dir: &Path, id: &str) -> Result<()> {
    match std::fs::remove_file(blob_path(dir, id)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Other(e.into())),
    }
    store.delete(Kind::File, id)?;
    Ok(())
}

/// Delete every File that has expired by `now`, bytes and record; how many there were.
pub fn sweep_expired(store: &dyn Store, dir: &Path, now: i64) -> Result<usize> {
    let mut n = 0;
    loop {
        let batch = store.expired(Kind::File, None, now, 256)?;
        if batch.is_empty() {
            return Ok(n);
        }
        for r in &batch {
            remove_expired(store, dir, &r.id)?;
            n += 1;
        }
    }
}

/// Store `bytes` as a new File.
pub fn create(
    store: &dyn Store,
    dir: &Path,
    filename: &str,
    purpose: &str,
    bytes: &[u8],
) -> Result<FileObject> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| StoreError::Other(e.into()))?;
    tmp.write_all(bytes)
        .map_err(|e| StoreError::Other(e.into()))?;
    // Names of files guest code wrote arrive here as they are: control and bidirectional
    // characters are shown, not obeyed.
    let obj = FileObject::new(
        crate::model::shown_file_name(filename),
        purpose.to_string(),
        bytes.len() as u64,
    );
    commit(store, dir, tmp, &obj)?;
    Ok(obj)
}
