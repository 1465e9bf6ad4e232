//! The chunks table: the text and vectors vector-store searches are built from.

use super::sql::{Conn, Value, update};
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

/// Replace a file's chunks in a store and save its record, if that record is still
/// `in_progress` (one transaction: the caller's).
pub(super) fn put(
    c: &mut dyn Conn,
    p: Option<&str>,
    vector_store_id: &str,
    file_id: &str,
    chunks: &[StoredChunk],
    done: &Record,
) -> Result<()> {
    c.execute(
        "DELETE FROM chunks WHERE vector_store_id = $1 AND file_id = $2",
        &[vector_store_id.into(), file_id.into()],
    )?;
    for ch in chunks {
        c.execute(
            "INSERT INTO chunks (vector_store_id, file_id, idx, text, embedder, vector) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                vector_store_id.into(),
                file_id.into(),
                Value::Int(ch.index as i64),
                ch.text.as_str().into(),
                ch.embedder.as_str().into(),
                Value::Bytes(to_blob(&ch.vector)),
            ],
        )?;
    }
    if !update(c, p, done, Some("in_progress"))? {
        // The file left the store (or was cancelled) while it was being read: keep nothing
        // of it.
        return Err(StoreError::NotFound {
            kind: done.kind.noun(),
            id: done.id.clone(),
        });
    }
    // Every node's index of the store is now out of date (`counters`, see `Store::counter`).
    c.execute(
        "INSERT INTO counters (key, value) VALUES ($1, 1) \
         ON CONFLICT (key) DO UPDATE SET value = counters.value + 1",
        &[format!("vector_store.{vector_store_id}").as_str().into()],
    )?;
    Ok(())
}

/// ` AND vector_store_id IN (that project's stores)` when `p` names a project.
fn of_project(p: Option<&str>, params: &mut Vec<Value>) -> String {
    match p {
        Some(p) => {
            params.push(p.into());
            format!(
                " AND vector_store_id IN (SELECT id FROM vector_stores WHERE project = ${})",
                params.len()
            )
        }
        None => String::new(),
    }
}

pub(super) fn all(
    c: &mut dyn Conn,
    p: Option<&str>,
    vector_store_id: &str,
) -> Result<Vec<StoredChunk>> {
    let mut params = vec![vector_store_id.into()];
    let mine = of_project(p, &mut params);
    let rows = c.query(
        &format!(
            "SELECT file_id, idx, text, embedder, vector FROM chunks \
             WHERE vector_store_id = $1{mine} ORDER BY file_id, idx"
        ),
        &params,
    )?;
    rows.into_iter()
        .map(|r| match r.as_slice() {
            [
                Value::Text(file_id),
                Value::Int(idx),
                Value::Text(text),
                Value::Text(embedder),
                Value::Bytes(v),
            ] => Ok(StoredChunk {
                file_id: file_id.clone(),
                index: *idx as u32,
                text: text.clone(),
                embedder: embedder.clone(),
                vector: from_blob(v),
            }),
            _ => Err(StoreError::Other(anyhow::anyhow!(
                "a stored chunk is malformed"
            ))),
        })
        .collect()
}

pub(super) fn delete(
    c: &mut dyn Conn,
    p: Option<&str>,
    vector_store_id: Option<&str>,
    file_id: Option<&str>,
) -> Result<()> {
    let mut sql = "DELETE FROM chunks WHERE TRUE".to_string();
    let mut params = vec![];
    for (col, v) in [("vector_store_id", vector_store_id), ("file_id", file_id)] {
        if let Some(v) = v {
            params.push(Value::from(v));
            sql.push_str(&format!(" AND {col} = ${}", params.len()));
        }
    }
    sql.push_str(&of_project(p, &mut params));
    c.execute(&sql, &params)?;
    Ok(())
}
