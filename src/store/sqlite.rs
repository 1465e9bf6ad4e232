//! The embedded SQLite store (WAL mode).

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Filter, Order, Page, Record, Result, Store, StoreError};
use crate::model::Kind;

/// Migrations, applied in order; `PRAGMA user_version` records how many ran. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_objects.sql"),
    include_str!("migrations/0002_chunks.sql"),
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

pub(super) fn other(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Other(e.into())
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        let mut conn =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            anyhow::bail!(
                "{} has schema version {version}, newer than this Oasis knows ({})",
                path.display(),
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("applying migration {}", i + 1))?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn kind_of(s: &str) -> Result<Kind> {
    Ok(match s {
        "file" => Kind::File,
        "assistant" => Kind::Assistant,
        "thread" => Kind::Thread,
        "thread.message" => Kind::Message,
        "thread.run" => Kind::Run,
        "thread.run.step" => Kind::RunStep,
        "oasis.transcript" => Kind::Transcript,
        "upload" => Kind::Upload,
        "vector_store" => Kind::VectorStore,
        "vector_store.file" => Kind::VectorStoreFile,
        "vector_store.files_batch" => Kind::FileBatch,
        other_kind => return Err(other(anyhow::anyhow!("unknown stored kind {other_kind}"))),
    })
}

fn row_to_record(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, Option<String>, i64, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn record(t: (String, String, Option<String>, i64, String)) -> Result<Record> {
    Ok(Record {
        kind: kind_of(&t.1)?,
        id: t.0,
        scope: t.2,
        created_at: t.3,
        body: t.4,
    })
}

impl Store for SqliteStore {
    fn put_chunks(
        &self,
        vector_store_id: &str,
        file_id: &str,
        chunks: &[super::StoredChunk],
        update: &Record,
    ) -> Result<()> {
        self.put_chunks_impl(vector_store_id, file_id, chunks, update)
    }

    fn chunks(&self, vector_store_id: &str) -> Result<Vec<super::StoredChunk>> {
        self.chunks_impl(vector_store_id)
    }

    fn delete_chunks(&self, vector_store_id: Option<&str>, file_id: Option<&str>) -> Result<()> {
        self.delete_chunks_impl(vector_store_id, file_id)
    }

    fn insert_all(&self, records: &[Record]) -> Result<()> {
        self.insert_and_update(records, &[])
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT id, kind, scope, created_at, body FROM objects WHERE id = ?1 AND kind = ?2",
                params![id, kind.as_str()],
                row_to_record,
            )
            .optional()
            .map_err(other)?;
        row.map(record).transpose()
    }

    fn update(&self, kind: Kind, id: &str, body: &str) -> Result<()> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE objects SET body = ?3 WHERE id = ?1 AND kind = ?2",
                params![id, kind.as_str(), body],
            )
            .map_err(other)?;
        if n == 0 {
            return Err(StoreError::NotFound {
                kind: kind.noun(),
                id: id.to_string(),
            });
        }
        Ok(())
    }

    fn update_all(&self, records: &[Record]) -> Result<()> {
        self.insert_and_update(&[], records)
    }

    fn insert_and_update(&self, inserts: &[Record], updates: &[Record]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(other)?;
        for r in inserts {
            let res = tx.execute(
                "INSERT INTO objects (id, kind, scope, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.id, r.kind.as_str(), r.scope, r.created_at, r.body],
            );
            match res {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::Duplicate(r.id.clone()));
                }
                Err(e) => return Err(other(e)),
            }
        }
        for r in updates {
            let n = tx
                .execute(
                    "UPDATE objects SET body = ?3 WHERE id = ?1 AND kind = ?2",
                    params![r.id, r.kind.as_str(), r.body],
                )
                .map_err(other)?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    kind: r.kind.noun(),
                    id: r.id.clone(),
                });
            }
        }
        tx.commit().map_err(other)
    }

    fn expired(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, kind, scope, created_at, body FROM objects \
                 WHERE kind = ?1 AND json_extract(body, '$.expires_at') <= ?2 \
                 AND (?3 IS NULL OR json_extract(body, ?3) = ?4) \
                 ORDER BY seq LIMIT ?5",
            )
            .map_err(other)?;
        let path = filter.map(|f| format!("$.{}", f.field));
        let value = filter.map(|f| f.value.clone());
        let rows = stmt
            .query_map(
                params![kind.as_str(), now, path, value, limit as i64],
                row_to_record,
            )
            .map_err(other)?;
        let mut out = vec![];
        for r in rows {
            out.push(record(r.map_err(other)?)?);
        }
        Ok(out)
    }

    fn delete(&self, kind: Kind, id: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(other)?;
        let n = tx
            .execute(
                "DELETE FROM objects WHERE id = ?1 AND kind = ?2",
                params![id, kind.as_str()],
            )
            .map_err(other)?;
        if n > 0 {
            tx.execute("DELETE FROM objects WHERE scope = ?1", params![id])
                .map_err(other)?;
            if kind == Kind::VectorStore {
                tx.execute("DELETE FROM chunks WHERE vector_store_id = ?1", params![id])
                    .map_err(other)?;
            }
        }
        tx.commit().map_err(other)?;
        Ok(n > 0)
    }

    fn list(
        &self,
        kind: Kind,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<Record>, bool)> {
        let conn = self.conn();
        let cursor = |param: &'static str, id: &Option<String>| -> Result<Option<i64>> {
            let Some(id) = id else { return Ok(None) };
            // A cursor must be an object of this very listing (same kind, same thread).
            conn.query_row(
                "SELECT seq FROM objects WHERE id = ?1 AND kind = ?2 \
                 AND (?3 IS NULL OR scope = ?3)",
                params![id, kind.as_str(), scope],
                |r| r.get(0),
            )
            .optional()
            .map_err(other)?
            .map(Some)
            .ok_or_else(|| StoreError::BadCursor {
                param,
                id: id.clone(),
            })
        };
        let after = cursor("after", &page.after)?;
        let before = cursor("before", &page.before)?;
        // `after` continues in the listing's own order; `before` goes back against it: the
        // page is the `limit` objects just before the cursor (read backwards from it, then
        // turned round), and `has_more` says whether there are more before those.
        let (gt, lt) = match page.order {
            Order::Asc => (after, before),
            Order::Desc => (before, after),
        };
        let backwards = before.is_some() && after.is_none();
        let dir = match (page.order, backwards) {
            (Order::Asc, false) | (Order::Desc, true) => "ASC",
            (Order::Desc, false) | (Order::Asc, true) => "DESC",
        };
        let sql = format!(
            "SELECT id, kind, scope, created_at, body FROM objects \
             WHERE kind = ?1 AND (?2 IS NULL OR scope = ?2) \
             AND (?3 IS NULL OR seq > ?3) AND (?4 IS NULL OR seq < ?4) \
             AND (?5 IS NULL OR json_extract(body, ?5) = ?6) \
             ORDER BY seq {dir} LIMIT ?7"
        );
        let path = filter.map(|f| format!("$.{}", f.field));
        let value = filter.map(|f| f.value.clone());
        let limit = page.limit as i64 + 1;
        let mut stmt = conn.prepare_cached(&sql).map_err(other)?;
        let rows = stmt
            .query_map(
                params![kind.as_str(), scope, gt, lt, path, value, limit],
                row_to_record,
            )
            .map_err(other)?;
        let mut out = vec![];
        for r in rows {
            out.push(record(r.map_err(other)?)?);
        }
        let more = out.len() > page.limit;
        out.truncate(page.limit);
        if backwards {
            out.reverse();
        }
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, scope: Option<&str>) -> Record {
        Record {
            kind: if scope.is_some() {
                Kind::Message
            } else {
                Kind::Thread
            },
            id: id.into(),
            scope: scope.map(str::to_string),
            created_at: 1,
            body: format!("{{\"id\":\"{id}\",\"run_id\":null}}"),
        }
    }

    fn page(order: Order, after: Option<&str>, before: Option<&str>, limit: usize) -> Page {
        Page {
            limit,
            order,
            after: after.map(str::to_string),
            before: before.map(str::to_string),
        }
    }

    #[test]
    fn pages_walk_forward_and_back_in_both_orders() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let recs: Vec<Record> = (0..5).map(|i| rec(&format!("m{i}"), Some("t"))).collect();
        s.insert_all(&recs).unwrap();
        let ids = |v: Vec<Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let (a, more) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Asc, None, None, 2),
            )
            .unwrap();
        assert_eq!((ids(a), more), (vec!["m0".to_string(), "m1".into()], true));
        let (a, more) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Asc, Some("m3"), None, 2),
            )
            .unwrap();
        assert_eq!((ids(a), more), (vec!["m4".to_string()], false));
        let (a, _) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Desc, None, None, 2),
            )
            .unwrap();
        assert_eq!(ids(a), vec!["m4".to_string(), "m3".into()]);
        let (a, _) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Desc, Some("m3"), None, 10),
            )
            .unwrap();
        assert_eq!(ids(a), vec!["m2".to_string(), "m1".into(), "m0".into()]);
        let (a, _) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Desc, None, Some("m2"), 10),
            )
            .unwrap();
        assert_eq!(ids(a), vec!["m4".to_string(), "m3".into()]);
        // `before` is the page just before the cursor, in the listing's order.
        let (a, more) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Desc, None, Some("m1"), 2),
            )
            .unwrap();
        assert_eq!((ids(a), more), (vec!["m3".to_string(), "m2".into()], true));
        let (a, more) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Asc, None, Some("m3"), 1),
            )
            .unwrap();
        assert_eq!((ids(a), more), (vec!["m2".to_string()], true));
        let (a, more) = s
            .list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Asc, None, Some("m2"), 5),
            )
            .unwrap();
        assert_eq!((ids(a), more), (vec!["m0".to_string(), "m1".into()], false));
        // A cursor from another thread is no cursor here.
        s.insert_all(&[rec("x0", Some("other"))]).unwrap();
        let e = s.list(
            Kind::Message,
            Some("t"),
            None,
            &page(Order::Asc, Some("x0"), None, 2),
        );
        assert!(matches!(
            e,
            Err(StoreError::BadCursor { param: "after", .. })
        ));
        let e = s.list(
            Kind::Message,
            Some("t"),
            None,
            &page(Order::Asc, Some("nope"), None, 2),
        );
        assert!(matches!(
            e,
            Err(StoreError::BadCursor { param: "after", .. })
        ));
    }

    #[test]
    fn expired_finds_objects_whose_expires_at_has_passed_matching_a_filter() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        let at = |id: &str, expires: &str, status: &str| Record {
            kind: Kind::Upload,
            id: id.into(),
            scope: None,
            created_at: 1,
            body: format!("{{\"id\":\"{id}\",\"expires_at\":{expires},\"status\":\"{status}\"}}"),
        };
        s.insert_all(&[
            at("a", "100", "pending"),
            at("b", "200", "pending"),
            at("c", "null", "pending"),
            at("d", "50", "completed"),
        ])
        .unwrap();
        let ids = |v: Vec<Record>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.expired(Kind::Upload, None, 150, 10).unwrap()),
            ["a", "d"]
        );
        let pending = Filter {
            field: "status",
            value: "pending".into(),
        };
        let found = s.expired(Kind::Upload, Some(&pending), 200, 10).unwrap();
        assert_eq!(ids(found), ["a", "b"]);
        assert_eq!(ids(s.expired(Kind::Upload, None, 1000, 1).unwrap()), ["a"]);
        assert!(s.expired(Kind::File, None, 1000, 10).unwrap().is_empty());
    }

    #[test]
    fn an_insert_and_an_update_happen_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.insert_all(&[rec("t", None)]).unwrap();
        let mut changed = rec("t", None);
        changed.body = "{\"id\":\"t\",\"run_id\":\"changed\"}".into();
        // The update names an object that does not exist: the insert is undone too.
        let e = s.insert_and_update(&[rec("u", None)], &[changed.clone(), rec("nope", None)]);
        assert!(matches!(e, Err(StoreError::NotFound { .. })));
        assert!(s.get(Kind::Thread, "u").unwrap().is_none());
        assert_eq!(
            s.get(Kind::Thread, "t").unwrap().unwrap().body,
            rec("t", None).body
        );
        s.insert_and_update(&[rec("u", None)], &[changed.clone()])
            .unwrap();
        assert!(s.get(Kind::Thread, "u").unwrap().is_some());
        assert_eq!(
            s.get(Kind::Thread, "t").unwrap().unwrap().body,
            changed.body
        );
    }

    #[test]
    fn deleting_a_thread_deletes_its_messages_in_one_go_and_a_failed_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("db")).unwrap();
        s.insert_all(&[rec("t", None), rec("m1", Some("t")), rec("m2", Some("t"))])
            .unwrap();
        // A batch with a duplicate id is refused whole.
        let e = s.insert_all(&[rec("m3", Some("t")), rec("m1", Some("t"))]);
        assert!(matches!(e, Err(StoreError::Duplicate(_))));
        assert!(s.get(Kind::Message, "m3").unwrap().is_none());
        assert!(s.delete(Kind::Thread, "t").unwrap());
        assert!(s.get(Kind::Message, "m1").unwrap().is_none());
        assert!(!s.delete(Kind::Thread, "t").unwrap());
    }
}
