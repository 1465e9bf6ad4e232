//! The PostgreSQL store: a pool of connections, shared by every node of a cluster.
//!
//! Transactions run at READ COMMITTED; what a transaction reads through [`super::Tx::get`] is
//! locked (`FOR UPDATE`) until it ends, the run queue is claimed with `FOR UPDATE SKIP
//! LOCKED`, and a transaction the database cancels as a deadlock is run again. A database
//! that does not answer is [`StoreError::Unavailable`] (a 503), and a pooled connection it
//! broke is dropped, so requests recover once it is back.

use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::sql::{Backend, Conn, Dialect, Row, SqlStore, Value};
use super::{Result, StoreError};

/// Migrations, applied in order and recorded in `oasis_migrations`. Never edit one that has
/// shipped: add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_tables.sql"),
    include_str!("migrations/postgres/0002_projects.sql"),
];

/// Any number that names Oasis's migration lock among a database's advisory locks.
const MIGRATION_LOCK: i64 = 0x0a51_5001;

/// How often a transaction cancelled as a deadlock is tried again.
const ATTEMPTS: usize = 5;

/// The PostgreSQL [`Backend`].
pub struct Pg {
    /// Always `Some` until dropped (see `Drop`).
    pool: Option<r2d2::Pool<PostgresConnectionManager<NoTls>>>,
}

impl Drop for Pg {
    /// A `postgres` client closes its connection by blocking on a runtime of its own, which
    /// panics on a Tokio thread (where the server's last handle to the store usually goes):
    /// the pool is dropped on a thread of its own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// The store of a cluster.
pub type PgStore = SqlStore<Pg>;

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/db`) and bring its schema up to
    /// date (one node at a time).
    pub fn connect(url: &str) -> anyhow::Result<PgStore> {
        let config: postgres::Config = url.parse().context("reading the database URL")?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .min_idle(Some(1))
            // How long a request waits for a connection before it is a 503; also the longest
            // pause between reconnection attempts after an outage.
            .connection_timeout(Duration::from_secs(2))
            // A broken connection is noticed when used (and then dropped); testing each one on
            // checkout would cost a round trip per statement.
            .test_on_check_out(false)
            // A database that does not answer is reported once per request that needed it (a
            // 503 and a warning), not again for every connection the pool tried.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build(manager)
            .context("connecting to PostgreSQL")?;
        let mut client = pool.get().context("connecting to PostgreSQL")?;
        migrate(&mut client)?;
        drop(client);
        Ok(SqlStore::system(Pg { pool: Some(pool) }))
    }
}

fn migrate(c: &mut postgres::Client) -> anyhow::Result<()> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let done = (|| -> anyhow::Result<()> {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS oasis_migrations (\
               version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )?;
        let applied: i64 = c
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM oasis_migrations",
                &[],
            )?
            .get(0);
        if applied as usize > MIGRATIONS.len() {
            anyhow::bail!(
                "the database has schema version {applied}, newer than this Oasis knows ({})",
                MIGRATIONS.len()
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            let mut tx = c.transaction()?;
            tx.batch_execute(sql)
                .with_context(|| format!("applying migration {}", i + 1))?;
            tx.execute(
                "INSERT INTO oasis_migrations (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )?;
            tx.commit()?;
        }
        Ok(())
    })();
    c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    done
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Why a statement failed, as the store says it.
fn failed(e: postgres::Error, retry: &mut bool) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Duplicate(String::new()),
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            *retry = true;
            StoreError::Other(e.into())
        }
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("57P")
                || c.code().starts_with("53") =>
        {
            StoreError::Unavailable(e.into())
        }
        Some(_) => StoreError::Other(e.into()),
        // No SQLSTATE: the connection itself failed.
        None => StoreError::Unavailable(e.into()),
    }
}

/// A connection or transaction.
struct On<'a, C: GenericClient> {
    c: &'a mut C,
    retry: bool,
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn value(row: &postgres::Row, i: usize) -> std::result::Result<Value, postgres::Error> {
    let ty = row.columns()[i].type_().clone();
    Ok(if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into()))
    } else if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into()))
    } else if ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Bytes)
    } else {
        row.try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text)
    })
}

impl<C: GenericClient> Conn for On<'_, C> {
    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let rows = self
            .c
            .query(sql, &params(values))
            .map_err(|e| failed(e, &mut self.retry))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| value(r, i))
                    .collect::<std::result::Result<Row, _>>()
                    .map_err(|e| failed(e, &mut self.retry))
            })
            .collect()
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        self.c
            .execute(sql, &params(values))
            .map_err(|e| failed(e, &mut self.retry))
    }
}

impl Pg {
    fn client(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the store")
            .get()
            .map_err(|e| StoreError::Unavailable(anyhow::anyhow!("no database connection: {e}")))
    }
}

impl Backend for Pg {
    const DIALECT: Dialect = Dialect::Postgres;

    fn read(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()> {
        let mut client = self.client()?;
        f(&mut On {
            c: &mut *client,
            retry: false,
        })
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = self.client()?;
            let mut retry = false;
            let mut tx = client.transaction().map_err(|e| failed(e, &mut retry))?;
            let mut on = On {
                c: &mut tx,
                retry: false,
            };
            let done = f(&mut on);
            retry = on.retry;
            let done = done.and_then(|()| tx.commit().map_err(|e| failed(e, &mut retry)));
            match done {
                Err(_) if retry && attempt < ATTEMPTS => continue,
                other => return other,
            }
        }
    }
}
