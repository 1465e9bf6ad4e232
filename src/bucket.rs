//! Bytes by key in an object store (the `object_store` crate): the local file system by default,
//! or any S3-compatible store that several nodes share (`object_store_url = "s3://bucket/prefix"`).
//! Knows no SQL and no HTTP API: what a key means is its caller's business (File bytes are
//! `files/<file id>`, see `store/blobs.rs`).
//!
//! - A key is one or more `/`-separated segments of ASCII letters, digits, `-`, `_` and `.`,
//!   none empty or starting with `.` (so no `..`, no absolute key, no leading, trailing or
//!   doubled `/`): a key never leaves the bucket's prefix, and never names a temporary file.
//! - Local (the default): objects are files under the data dir (`<data dir>/files/<file id>`,
//!   where File bytes always were). A write lands whole: a temporary file in the object's
//!   folder, synced, renamed into place.
//! - S3: objects are `<prefix>/<key>` in the bucket; large ones are sent in parts, streamed from
//!   disk, never whole in memory. [`Bucket::local_path`] hands out a cached copy under
//!   `<data dir>/object-cache` (revalidated by ETag on each use; least recently used copies
//!   beyond [`CACHE_BUDGET`] are deleted; emptied when the server starts).
//! - Every failure of the store (down, refusing, a full disk) is [`BucketError::Unavailable`]:
//!   the API answers 503, and nothing is recorded as stored.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetResult, GetResultPayload, ObjectStore, RetryConfig, WriteMultipart,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

mod cache;

pub use cache::CACHE_BUDGET;
use cache::Cache;

/// Objects up to this size go in one request; larger ones in parts of [`PART_BYTES`].
const SINGLE_PUT_BYTES: u64 = 8 << 20;
const PART_BYTES: usize = 8 << 20;
/// Parts of one upload in flight at once (bounds its memory to about 5 parts).
const PARTS_IN_FLIGHT: usize = 4;
/// Tries of a failed S3 request (then the caller gets [`BucketError::Unavailable`]), and the
/// longest they may take together.
const S3_RETRIES: usize = 3;
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// A key that could leave the prefix or name a temporary file (a bug of the caller's).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("no object {0}")]
    NotFound(String),
    /// The store could not be reached, refused, or failed (a full disk for the local one).
    #[error("the object store failed on {key}: {message}")]
    Unavailable { key: String, message: String },
}

pub type Result<T> = std::result::Result<T, BucketError>;

fn unavailable(key: &str, e: impl std::fmt::Display) -> BucketError {
    crate::metrics::object_store_error("any");
    BucketError::Unavailable {
        key: key.to_string(),
        message: e.to_string(),
    }
}

fn failed(key: &str, e: object_store::Error) -> BucketError {
    match e {
        object_store::Error::NotFound { .. } => BucketError::NotFound(key.to_string()),
        e => unavailable(key, e),
    }
}

/// S3 client options by their `AWS_*` names (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID` …); `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct StoreOptions(pub Vec<(String, String)>);

impl StoreOptions {
    /// This process's `AWS_*` variables.
    pub fn from_env() -> StoreOptions {
        StoreOptions(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
        )
    }
}

impl From<Vec<(String, String)>> for StoreOptions {
    fn from(v: Vec<(String, String)>) -> StoreOptions {
        StoreOptions(v)
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// An object as listed: its key (relative to the bucket's prefix) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// Bytes by key in an object store; cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// Prepended to every key (empty for the local store, which is rooted instead).
    prefix: ObjectPath,
    backend: Backend,
    /// What it is, for logs: `file:///…` or `s3://bucket/prefix`.
    name: String,
}

enum Backend {
    /// Objects are the files under `root`.
    Local { root: PathBuf },
    /// Objects are elsewhere; copies are cached here.
    Remote(Cache),
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bucket({})", self.inner.name)
    }
}

/// Whether `key` may name an object (see the module's documentation).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg.len() <= 255
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

fn check_key(key: &str) -> Result<()> {
    if valid_key(key) {
        Ok(())
    } else {
        Err(BucketError::InvalidKey(key.to_string()))
    }
}

impl Bucket {
    /// The bucket `url` names (`s3://bucket/prefix`, `s3a://…`, or `file:///folder`), or
    /// without one the local file system rooted at `data_dir`. S3 clients take `options`;
    /// their cached copies are kept in `<data_dir>/object-cache`.
    pub fn open(
        url: Option<&str>,
        options: &StoreOptions,
        data_dir: &Path,
    ) -> anyhow::Result<Bucket> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Bucket::local(data_dir),
            Some(u) if u.starts_with("file://") => {
                let root = &u["file://".len()..];
                anyhow::ensure!(
                    root.starts_with('/'),
                    "object_store_url {u:?}: a file:// URL needs an absolute path (file:///srv/oasis)"
                );
                Bucket::local(Path::new(root))
            }
            Some(u) => Bucket::s3(u, options, &data_dir.join("object-cache")),
        }
    }

    /// The local file system under `root` (created if absent).
    pub fn local(root: &Path) -> anyhow::Result<Bucket> {
        std::fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", root.display()))?;
        let store = LocalFileSystem::new_with_prefix(root)?;
        let root = std::fs::canonicalize(root)?;
        Ok(Bucket {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                prefix: ObjectPath::default(),
                name: format!("file://{}", root.display()),
                backend: Backend::Local { root },
            }),
        })
    }

    /// An S3-compatible store: `url` is `s3://bucket/prefix` (or `s3a://`); `options` are the
    /// client's by `AWS_*` name (unknown names are ignored, as `AmazonS3Builder::from_env`
    /// does); copies are cached in `cache_dir`, which is emptied.
    pub fn s3(url: &str, options: &StoreOptions, cache_dir: &Path) -> anyhow::Result<Bucket> {
        let rest = url
            .strip_prefix("s3://")
            .or_else(|| url.strip_prefix("s3a://"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "object_store_url {url:?}: expected s3://bucket/prefix (or file:///folder)"
                )
            })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(!bucket.is_empty(), "object_store_url {url:?}: no bucket");
        let prefix = prefix.trim_matches('/');
        anyhow::ensure!(
            prefix.is_empty() || valid_key(prefix),
            "object_store_url {url:?}: the prefix must be segments of letters, digits, '-', '_' \
             and '.'"
        );
        let mut builder = AmazonS3Builder::new();
        for (k, v) in &options.0 {
            match k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                Ok(key) => builder = builder.with_config(key, v),
                Err(_) => tracing::debug!(option = %k, "not an S3 client option; ignored"),
            }
        }
        let store = builder
            .with_url(url)
            .with_retry(RetryConfig {
                max_retries: S3_RETRIES,
                retry_timeout: S3_RETRY_TIMEOUT,
                ..Default::default()
            })
            .build()?;
        let cache = Cache::open(cache_dir)?;
        Ok(Bucket {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix),
                name: format!("s3://{bucket}/{prefix}"),
                backend: Backend::Remote(cache),
            }),
        })
    }

    /// Whether objects are files on this machine (then [`Bucket::local_path`] is the object).
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Local { .. })
    }

    fn location(&self, key: &str) -> Result<ObjectPath> {
        check_key(key)?;
        Ok(key
            .split('/')
            .fold(self.inner.prefix.clone(), |p, seg| p.child(seg)))
    }

    /// A new temporary file to write bytes into before they are put with
    /// [`Bucket::put_temp`]: for the local store in `folder` (a key prefix, e.g. `files`, so the
    /// put is a rename), otherwise in the cache's staging folder. Deleted when dropped;
    /// leftovers of a crash start with `.tmp` and are never objects.
    pub async fn temp_file(&self, folder: &str) -> Result<tempfile::NamedTempFile> {
        check_key(folder)?;
        let dir = match &self.inner.backend {
            Backend::Local { root } => root.join(folder),
            Backend::Remote(cache) => cache.staging.clone(),
        };
        let f = folder.to_string();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::NamedTempFile::new_in(&dir)
        })
        .await
        .map_err(|e| unavailable(&f, e))?
        .map_err(|e| unavailable(&f, e))
    }

    /// Store the bytes of `tmp` (from [`Bucket::temp_file`]) as `key`, whole or not at all;
    /// `tmp` is gone afterwards either way.
    pub async fn put_temp(&self, key: &str, tmp: tempfile::NamedTempFile) -> Result<()> {
        let loc = self.location(key)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let dest = root.join(key);
                blocking(key, move || place(tmp, &dest)).await
            }
            Backend::Remote(cache) => {
                cache.forget(key);
                let (file, size) = blocking(key, move || {
                    let f = tmp.reopen()?;
                    let size = f.metadata()?.len();
                    Ok((f, size))
                })
                .await?;
                // `tmp` was moved into the closure and dropped there: on Unix the reopened
                // handle still reads its bytes.
                self.upload(&loc, key, tokio::fs::File::from_std(file), size)
                    .await
            }
        }
    }

    /// Store a copy of the file at `path` as `key` (streamed; `path` is left as it is).
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let loc = self.location(key)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let (src, dest) = (path.to_path_buf(), root.join(key));
                blocking(key, move || {
                    let mut tmp = temp_beside(&dest)?;
                    std::io::copy(&mut std::fs::File::open(&src)?, tmp.as_file_mut())?;
                    place(tmp, &dest)
                })
                .await
            }
            Backend::Remote(cache) => {
                cache.forget(key);
                let f = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| unavailable(key, format!("{}: {e}", path.display())))?;
                let size = f.metadata().await.map_err(|e| unavailable(key, e))?.len();
                self.upload(&loc, key, f, size).await
            }
        }
    }

    /// Store `bytes` as `key`.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let loc = self.location(key)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let dest = root.join(key);
                blocking(key, move || {
                    let mut tmp = temp_beside(&dest)?;
                    tmp.write_all(&bytes)?;
                    place(tmp, &dest)
                })
                .await
            }
            Backend::Remote(cache) => {
                cache.forget(key);
                let size = bytes.len() as u64;
                if size <= SINGLE_PUT_BYTES {
                    self.inner
                        .store
                        .put(&loc, bytes.into())
                        .await
                        .map_err(|e| failed(key, e))?;
                    return Ok(());
                }
                self.upload(&loc, key, &bytes[..], size).await
            }
        }
    }

    /// Send what `r` reads (`size` bytes) to `loc`: in one request if small, else in parts.
    async fn upload(
        &self,
        loc: &ObjectPath,
        key: &str,
        mut r: impl AsyncRead + Unpin,
        size: u64,
    ) -> Result<()> {
        let store = &self.inner.store;
        if size <= SINGLE_PUT_BYTES {
            let mut buf = Vec::with_capacity(size as usize);
            r.read_to_end(&mut buf)
                .await
                .map_err(|e| unavailable(key, e))?;
            store
                .put(loc, buf.into())
                .await
                .map_err(|e| failed(key, e))?;
            return Ok(());
        }
        let up = store.put_multipart(loc).await.map_err(|e| failed(key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(up, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let sent: Result<()> = async {
            loop {
                let n = r.read(&mut buf).await.map_err(|e| unavailable(key, e))?;
                if n == 0 {
                    return Ok(());
                }
                w.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| failed(key, e))?;
                w.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => w.finish().await.map(drop).map_err(|e| failed(key, e)),
            Err(e) => {
                // Parts already sent are dropped by the store.
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// The bytes of `key` as a stream, and their number.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, std::io::Result<Bytes>>)> {
        let loc = self.location(key)?;
        let got = self
            .inner
            .store
            .get(&loc)
            .await
            .map_err(|e| failed(key, e))?;
        let size = got.meta.size;
        Ok((size, stream_of(got)))
    }

    /// The bytes of `key`, whole in memory: for small objects (check their size first).
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let loc = self.location(key)?;
        let got = self
            .inner
            .store
            .get(&loc)
            .await
            .map_err(|e| failed(key, e))?;
        Ok(got.bytes().await.map_err(|e| failed(key, e))?.to_vec())
    }

    /// Write the bytes of `key` to `dest` (a temporary file beside it, renamed when whole, so
    /// a partial download is never seen there); how many there were.
    pub async fn get_to_file(&self, key: &str, dest: &Path) -> Result<u64> {
        let loc = self.location(key)?;
        let got = self
            .inner
            .store
            .get(&loc)
            .await
            .map_err(|e| failed(key, e))?;
        let staging = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        write_stream(key, stream_of(got), &staging, dest).await
    }

    /// A path on this machine where the bytes of `key` can be read: the object itself for the
    /// local store, otherwise a cached copy (fetched if absent or changed). Read it soon: a
    /// copy unused for [`CACHE_PINNED`] may be evicted, and one whose object is deleted is.
    pub async fn local_path(&self, key: &str) -> Result<PathBuf> {
        let loc = self.location(key)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let path = root.join(key);
                match tokio::fs::metadata(&path).await {
                    Ok(m) if m.is_file() => Ok(path),
                    Ok(_) => Err(BucketError::NotFound(key.to_string())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(BucketError::NotFound(key.to_string()))
                    }
                    Err(e) => Err(unavailable(key, e)),
                }
            }
            Backend::Remote(cache) => {
                let path = cache.dir.join(key);
                let etag = cache.etag(key, &path).await;
                let opts = GetOptions {
                    if_none_match: etag,
                    ..Default::default()
                };
                match self.inner.store.get_opts(&loc, opts).await {
                    Ok(got) => {
                        let etag = got.meta.e_tag.clone();
                        let size = write_stream(key, stream_of(got), &cache.staging, &path).await?;
                        cache.insert(key, size, etag);
                        Ok(path)
                    }
                    Err(object_store::Error::NotModified { .. }) => {
                        cache.touch(key);
                        Ok(path)
                    }
                    Err(e) => {
                        if matches!(e, object_store::Error::NotFound { .. }) {
                            cache.forget(key);
                        }
                        Err(failed(key, e))
                    }
                }
            }
        }
    }

    /// Delete `key` (one that does not exist is deleted already).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let loc = self.location(key)?;
        if let Backend::Remote(cache) = &self.inner.backend {
            cache.forget(key);
        }
        match self.inner.store.delete(&loc).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed(key, e)),
        }
    }

    /// Delete every object under the folder `prefix` (one with none is deleted already). For
    /// the local store the folder goes too, with any temporary file a crash left in it.
    pub async fn delete_folder(&self, prefix: &str) -> Result<()> {
        let loc = self.location(prefix)?;
        match &self.inner.backend {
            Backend::Local { root } => {
                let dir = root.join(prefix);
                blocking(prefix, move || match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
                .await
            }
            Backend::Remote(cache) => {
                let found: Vec<ObjectPath> = match self
                    .inner
                    .store
                    .list(Some(&loc))
                    .try_collect::<Vec<_>>()
                    .await
                {
                    Ok(v) => v.into_iter().map(|m| m.location).collect(),
                    Err(object_store::Error::NotFound { .. }) => vec![],
                    Err(e) => return Err(failed(prefix, e)),
                };
                let base = self.inner.prefix.clone();
                for l in &found {
                    if let Some(parts) = l.prefix_match(&base) {
                        let key: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
                        let key = key.join("/");
                        if valid_key(&key) {
                            cache.forget(&key);
                        }
                    }
                }
                // In bulk (S3's DeleteObjects, a thousand keys a request).
                let gone = futures::stream::iter(found.into_iter().map(Ok)).boxed();
                let mut deleted = self.inner.store.delete_stream(gone);
                while let Some(d) = deleted.next().await {
                    match d {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(failed(prefix, e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// The objects under the folder `prefix` (`""` for all), by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let loc = if prefix.is_empty() {
            self.inner.prefix.clone()
        } else {
            self.location(prefix)?
        };
        let base = self.inner.prefix.clone();
        let found: Vec<object_store::ObjectMeta> =
            match self.inner.store.list(Some(&loc)).try_collect().await {
                Ok(v) => v,
                Err(object_store::Error::NotFound { .. }) => vec![],
                Err(e) => return Err(failed(prefix, e)),
            };
        let mut out: Vec<Listed> = found
            .into_iter()
            .filter_map(|m| {
                let parts: Vec<String> = m
                    .location
                    .prefix_match(&base)?
                    .map(|p| p.as_ref().to_string())
                    .collect();
                let key = parts.join("/");
                // Temporary files of the local store are no objects.
                valid_key(&key).then_some(Listed { key, size: m.size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Whether the store answers (for a readiness check).
    pub async fn ping(&self) -> Result<()> {
        match &self.inner.backend {
            Backend::Local { root } => match tokio::fs::metadata(root).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(unavailable("", format!("{} is no folder", root.display()))),
                Err(e) => Err(unavailable("", e)),
            },
            Backend::Remote(_) => {
                let probe = self.inner.prefix.child(".oasis-ping");
                match self.inner.store.head(&probe).await {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(unavailable("", e)),
                }
            }
        }
    }
}

/// Run blocking file work off the async threads; its failures are the store's.
async fn blocking<T: Send + 'static>(
    key: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(key, e))?
        .map_err(|e| unavailable(key, e))
}

/// A temporary file in `dest`'s folder (created if absent).
fn temp_beside(dest: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    tempfile::NamedTempFile::new_in(dir)
}

/// Sync `tmp` and rename it to `dest` (copied across file systems if it must be).
fn place(tmp: tempfile::NamedTempFile, dest: &Path) -> std::io::Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    tmp.as_file().sync_all()?;
    match tmp.persist(dest) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::CrossesDevices => {
            let mut src = e.file;
            src.as_file_mut().rewind()?;
            let mut out = temp_beside(dest)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
            out.as_file().sync_all()?;
            out.persist(dest).map_err(|e| e.error)?;
            Ok(())
        }
        Err(e) => Err(e.error),
    }
}

/// The bytes `got` holds, as a stream: a local file is read in larger pieces than
/// `GetResult::into_stream`'s 8 KiB (one blocking task each).
fn stream_of(got: GetResult) -> BoxStream<'static, std::io::Result<Bytes>> {
    match got.payload {
        GetResultPayload::File(file, _) => {
            let file = tokio::fs::File::from_std(file);
            tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).boxed()
        }
        GetResultPayload::Stream(s) => s.map_err(std::io::Error::from).boxed(),
    }
}

/// Write `stream` to a temporary file in `staging`, then rename it to `dest` once whole; the
/// number of bytes.
async fn write_stream(
    key: &str,
    mut stream: BoxStream<'static, std::io::Result<Bytes>>,
    staging: &Path,
    dest: &Path,
) -> Result<u64> {
    let dir = staging.to_path_buf();
    let tmp = blocking(key, move || {
        std::fs::create_dir_all(&dir)?;
        tempfile::NamedTempFile::new_in(&dir)
    })
    .await?;
    let handle = tmp.as_file().try_clone().map_err(|e| unavailable(key, e))?;
    let mut out = tokio::fs::File::from_std(handle);
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| unavailable(key, e))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| unavailable(key, e))?;
        n += chunk.len() as u64;
    }
    out.flush().await.map_err(|e| unavailable(key, e))?;
    drop(out);
    let dest = dest.to_path_buf();
    blocking(key, move || place(tmp, &dest)).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_leave_the_prefix() {
        for ok in ["file-abc", "files/file-abc", "a/b.c/d_e-1"] {
            assert!(valid_key(ok), "{ok}");
        }
        for bad in [
            "", "/", "..", ".", "../x", "a/../b", "/abs", "a/", "a//b", ".tmpX", "a/.tmp", "a\\b",
            "a b", "a#1", "é",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_local_store_keeps_objects_as_files_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::open(None, &StoreOptions::default(), dir.path()).unwrap();
        assert!(b.is_local());
        b.ping().await.unwrap();
        b.put_bytes("files/file-a", b"hello".to_vec())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("files/file-a")).unwrap(),
            b"hello"
        );
        let mut tmp = b.temp_file("files").await.unwrap();
        assert!(
            tmp.path()
                .starts_with(dir.path().canonicalize().unwrap().join("files"))
        );
        tmp.write_all(b"world").unwrap();
        b.put_temp("files/file-b", tmp).await.unwrap();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, b"copied").unwrap();
        b.put_file("other/x", &src).await.unwrap();
        assert!(src.exists());
        // Temporary files are no objects.
        let _pending = b.temp_file("files").await.unwrap();
        let keys: Vec<String> = b
            .list("files")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, ["files/file-a", "files/file-b"]);
        assert_eq!(b.get_bytes("files/file-b").await.unwrap(), b"world");
        let out = dir.path().join("out/copy");
        assert_eq!(b.get_to_file("other/x", &out).await.unwrap(), 6);
        assert_eq!(std::fs::read(&out).unwrap(), b"copied");
        assert_eq!(
            b.local_path("files/file-a").await.unwrap(),
            dir.path().canonicalize().unwrap().join("files/file-a")
        );
        b.delete("files/file-a").await.unwrap();
        b.delete("files/file-a").await.unwrap();
        assert!(matches!(
            b.get_bytes("files/file-a").await,
            Err(BucketError::NotFound(_))
        ));
        assert!(matches!(
            b.local_path("files/file-a").await,
            Err(BucketError::NotFound(_))
        ));
        assert!(b.list("nothing").await.unwrap().is_empty());
        b.put_bytes("up/u1/p1", b"1".to_vec()).await.unwrap();
        b.put_bytes("up/u1/p2", b"2".to_vec()).await.unwrap();
        b.put_bytes("up/u2/p1", b"3".to_vec()).await.unwrap();
        b.delete_folder("up/u1").await.unwrap();
        b.delete_folder("up/u1").await.unwrap();
        assert!(!dir.path().join("up/u1").exists());
        let keys: Vec<String> = b
            .list("up")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(keys, ["up/u2/p1"]);
        assert!(matches!(
            b.put_bytes("../escape", vec![]).await,
            Err(BucketError::InvalidKey(_))
        ));
    }

    #[test]
    fn urls_name_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions(vec![
            ("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:1".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_PROFILE".into(), "ignored".into()),
        ]);
        let b = Bucket::open(Some("s3://bkt/some/prefix"), &opts, dir.path()).unwrap();
        assert!(!b.is_local());
        assert_eq!(format!("{b:?}"), "Bucket(s3://bkt/some/prefix)");
        assert_eq!(
            b.location("files/x").unwrap().as_ref(),
            "some/prefix/files/x"
        );
        assert!(format!("{opts:?}").contains("AWS_REGION"));
        assert!(!format!("{opts:?}").contains("us-east-1"));
        let local = dir.path().join("elsewhere");
        let b = Bucket::open(
            Some(&format!("file://{}", local.display())),
            &opts,
            dir.path(),
        )
        .unwrap();
        assert!(b.is_local() && local.is_dir());
        for bad in [
            "http://x/y",
            "s3://",
            "s3:///p",
            "file://relative",
            "s3://b/../x",
        ] {
            assert!(Bucket::open(Some(bad), &opts, dir.path()).is_err(), "{bad}");
        }
    }
}
