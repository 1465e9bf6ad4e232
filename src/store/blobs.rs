//! File contents on disk: one blob per File id, written whole (fsync + atomic rename) before its
//! record is inserted, so a File that exists always has all its bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Result, Store, StoreError, StoreExt};
use crate::model::FileObject;

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
    let path = blob_path(dir, &obj.id);
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::Other(e.into()))?;
    tmp.persist(&path)
        .map_err(|e| StoreError::Other(e.error.into()))?;
    if let Err(e) = store.insert(obj) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(())
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
