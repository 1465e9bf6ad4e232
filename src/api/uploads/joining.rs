//! Joining an Upload's Parts into one temporary file: each streamed from the bucket, hashed
//! and written off the async threads.

use std::io::Write;

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};

use super::super::files;
use crate::bucket::{Bucket, BucketError};

/// Why Parts could not be joined.
#[derive(Debug)]
pub(super) enum JoinError {
    /// The `i`th Part is not in the bucket.
    Missing(usize),
    Bucket(BucketError),
    /// Writing the joined bytes failed.
    Write(std::io::Error),
}

/// The objects `keys` of `bucket` joined in that order into the temporary file `out`, each
/// streamed (never whole in memory): the file, its size, its MD5 (hex) and its first bytes.
/// Hashing and writing happen off the async threads.
pub(super) async fn join(
    bucket: &Bucket,
    out: tempfile::NamedTempFile,
    keys: &[String],
) -> Result<(tempfile::NamedTempFile, u64, String, Vec<u8>), JoinError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || {
        let mut j = Joiner::new(out);
        while let Some(chunk) = rx.blocking_recv() {
            j.add(&chunk)?;
        }
        j.finish()
    });
    let read = async {
        for (i, key) in keys.iter().enumerate() {
            let (_, mut stream) = match bucket.get_stream(key).await {
                Ok(s) => s,
                Err(BucketError::NotFound(_)) => return Err(JoinError::Missing(i)),
                Err(e) => return Err(JoinError::Bucket(e)),
            };
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    crate::metrics::object_store_error("any");
                    JoinError::Bucket(BucketError::Unavailable {
                        key: key.clone(),
                        message: e.to_string(),
                    })
                })?;
                if tx.send(chunk).await.is_err() {
                    // The writer failed: it says why.
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| JoinError::Write(std::io::Error::other(e)))?;
    read?;
    written.map_err(JoinError::Write)
}

/// Bytes being joined into a temporary file, with their size, MD5 and first bytes.
pub(super) struct Joiner {
    out: std::io::BufWriter<tempfile::NamedTempFile>,
    md5: Md5,
    head: Vec<u8>,
    size: u64,
}

impl Joiner {
    fn new(out: tempfile::NamedTempFile) -> Joiner {
        Joiner {
            out: std::io::BufWriter::with_capacity(1 << 20, out),
            md5: Md5::new(),
            head: Vec::with_capacity(files::HEAD_BYTES),
            size: 0,
        }
    }

    fn add(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.md5.update(chunk);
        let room = files::HEAD_BYTES - self.head.len();
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        self.out.write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// The file, its size, its MD5 (hex) and its first bytes.
    fn finish(self) -> std::io::Result<(tempfile::NamedTempFile, u64, String, Vec<u8>)> {
        let out = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok((out, self.size, hex::encode(self.md5.finalize()), self.head))
    }
}
