//! The embedded SQLite store (WAL mode): one connection, so one writer at a time.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::sql::{Backend, Conn, Dialect, Row, SqlStore, Value};
use super::{Result, StoreError};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_objects.sql"),
    include_str!("migrations/0002_chunks.sql"),
    include_str!("migrations/0003_tables.sql"),
    include_str!("migrations/0004_projects.sql"),
];

/// The SQLite [`Backend`].
pub struct Sqlite {
    conn: Mutex<Connection>,
}

/// The embedded default store.
pub type SqliteStore = SqlStore<Sqlite>;

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
        Ok(SqlStore::system(Sqlite {
            conn: Mutex::new(conn),
        }))
    }
}

/// `$1` → `?1`: the store's statements are written in PostgreSQL's style.
fn dialect(sql: &str) -> std::borrow::Cow<'_, str> {
    if sql.contains('$') {
        sql.replace('$', "?").into()
    } else {
        sql.into()
    }
}

struct Param<'a>(&'a Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn failed(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate(String::new())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            StoreError::Unavailable(e.into())
        }
        _ => other(e),
    }
}

/// A connection, in a transaction or not.
struct On<'a>(&'a Connection);

impl Conn for On<'_> {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(&dialect(sql)).map_err(failed)?;
        let n = stmt.column_count();
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(failed)?;
        let mut out = vec![];
        while let Some(r) = rows.next().map_err(failed)? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i).map_err(failed)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                });
            }
            out.push(row);
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(&dialect(sql)).map_err(failed)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(failed)?;
        Ok(n as u64)
    }
}

impl Sqlite {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Backend for Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn read(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()> {
        f(&mut On(&self.conn()))
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Dropping the transaction unfinished rolls it back.
        f(&mut On(&tx))?;
        tx.commit().map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::store::{Filter, Order, Page, Record, Store};

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
            project: "default".into(),
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
    fn a_database_of_the_first_schema_moves_into_the_tables_of_the_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            let rows = [
                ("thread_1", "thread", None, r#"{"id":"thread_1"}"#),
                (
                    "msg_b",
                    "thread.message",
                    Some("thread_1"),
                    r#"{"id":"msg_b","run_id":"run_1"}"#,
                ),
                (
                    "msg_a",
                    "thread.message",
                    Some("thread_1"),
                    r#"{"id":"msg_a","run_id":null}"#,
                ),
                (
                    "run_1",
                    "thread.run",
                    Some("thread_1"),
                    r#"{"id":"run_1","status":"queued","expires_at":9}"#,
                ),
                (
                    "file-1",
                    "file",
                    None,
                    r#"{"id":"file-1","purpose":"vision","expires_at":null}"#,
                ),
            ];
            for (id, kind, scope, body) in rows {
                conn.execute(
                    "INSERT INTO objects (id, kind, scope, created_at, body) VALUES (?1, ?2, ?3, 1, ?4)",
                    rusqlite::params![id, kind, scope, body],
                )
                .unwrap();
            }
        }
        let s = SqliteStore::open(&path).unwrap();
        let all = Page {
            limit: 10,
            order: Order::Asc,
            after: None,
            before: None,
        };
        // Order of creation is kept: msg_b was stored first.
        let (msgs, _) = s.list(Kind::Message, Some("thread_1"), None, &all).unwrap();
        let ids: Vec<_> = msgs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["msg_b", "msg_a"]);
        let f = Filter {
            field: "run_id",
            value: "run_1".into(),
        };
        let (msgs, _) = s.list(Kind::Message, None, Some(&f), &all).unwrap();
        assert_eq!(msgs[0].id, "msg_b");
        let queued = Filter {
            field: "status",
            value: "queued".into(),
        };
        assert_eq!(
            s.expired(Kind::Run, Some(&queued), 10, 5).unwrap()[0].id,
            "run_1"
        );
        assert_eq!(
            s.claim_run("n").unwrap().map(|c| c.run_id).as_deref(),
            Some("run_1")
        );
        let purpose = Filter {
            field: "purpose",
            value: "vision".into(),
        };
        assert_eq!(
            s.list(Kind::File, None, Some(&purpose), &all)
                .unwrap()
                .0
                .len(),
            1
        );
        // New objects come after the moved ones.
        s.insert_all(&[Record {
            kind: Kind::Message,
            id: "msg_c".into(),
            scope: Some("thread_1".into()),
            created_at: 1,
            body: r#"{"id":"msg_c"}"#.into(),
            project: "default".into(),
        }])
        .unwrap();
        let (msgs, _) = s.list(Kind::Message, Some("thread_1"), None, &all).unwrap();
        assert_eq!(msgs.last().unwrap().id, "msg_c");
    }
}
