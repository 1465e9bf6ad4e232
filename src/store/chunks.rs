//! The chunks table: the text and vectors vector-store searches are built from.

use rusqlite::params;

use super::sqlite::{SqliteStore, other};
use super::{Record, Result, StoreError};

/// One chunk of a file in a vector store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub file_id: String,
    pub index: u32,
    pub text: String,
    /// The model that made `vector` (`""` when there is none).
    pub embedder: String,
    pub vector: Vec<f32>,
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl SqliteStore {
    pub(super) fn put_chunks_impl(
        &self,
        vector_store_id: &str,
        file_id: &str,
        chunks: &[StoredChunk],
        update: &Record,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(other)?;
        tx.execute(
            "DELETE FROM chunks WHERE vector_store_id = ?1 AND file_id = ?2",
            params![vector_store_id, file_id],
        )
        .map_err(other)?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO chunks (vector_store_id, file_id, idx, text, embedder, vector) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(other)?;
            for c in chunks {
                insert
                    .execute(params![
                        vector_store_id,
                        file_id,
                        c.index,
                        c.text,
                        c.embedder,
                        to_blob(&c.vector)
                    ])
                    .map_err(other)?;
            }
        }
        let n = tx
            .execute(
                "UPDATE objects SET body = ?3 WHERE id = ?1 AND kind = ?2 \
                 AND json_extract(body, '$.file.status') = 'in_progress'",
                params![update.id, update.kind.as_str(), update.body],
            )
            .map_err(other)?;
        if n == 0 {
            // The file left the store (or was cancelled) while it was being read: keep
            // nothing of it.
            return Err(StoreError::NotFound {
                kind: update.kind.noun(),
                id: update.id.clone(),
            });
        }
        tx.commit().map_err(other)
    }

    pub(super) fn chunks_impl(&self, vector_store_id: &str) -> Result<Vec<StoredChunk>> {
        let conn = self.conn();
        let mut q = conn
            .prepare(
                "SELECT file_id, idx, text, embedder, vector FROM chunks \
                 WHERE vector_store_id = ?1 ORDER BY file_id, idx",
            )
            .map_err(other)?;
        let rows = q
            .query_map(params![vector_store_id], |r| {
                Ok(StoredChunk {
                    file_id: r.get(0)?,
                    index: r.get(1)?,
                    text: r.get(2)?,
                    embedder: r.get(3)?,
                    vector: from_blob(&r.get::<_, Vec<u8>>(4)?),
                })
            })
            .map_err(other)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(other)
    }

    pub(super) fn delete_chunks_impl(
        &self,
        vector_store_id: Option<&str>,
        file_id: Option<&str>,
    ) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM chunks WHERE (?1 IS NULL OR vector_store_id = ?1) \
             AND (?2 IS NULL OR file_id = ?2)",
            params![vector_store_id, file_id],
        )
        .map_err(other)?;
        Ok(())
    }
}
