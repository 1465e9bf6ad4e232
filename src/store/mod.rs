//! Storage: the only module that speaks SQL.
//!
//! [`Store`] is a small, backend-neutral trait over JSON records, with the few operations
//! several processes need to share one database correctly: transactions that lock what they
//! read ([`Store::atomically`]), status compare-and-set ([`Tx::update_if`]), the run queue
//! ([`Store::claim_run`]) and node liveness. Its SQL is written once (`sql`, `chunks`,
//! `cluster`; tables in `schema`) over two backends: [`SqliteStore`], the embedded default
//! (WAL mode, one writer), and [`PgStore`] (PostgreSQL, a pool of connections). Every method
//! is one transaction.

pub mod blobs;
mod chunks;
mod cluster;
pub mod postgres;
mod schema;
pub mod sql;
pub mod sqlite;

pub use chunks::StoredChunk;
pub use postgres::PgStore;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{Kind, Object};

pub use sqlite::SqliteStore;

/// Open the store `url` names: `postgres://…` (or `postgresql://…`) for PostgreSQL, otherwise
/// the SQLite database at `default_path`.
pub fn open(
    url: Option<&str>,
    default_path: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    match url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(std::sync::Arc::new(PgStore::connect(u)?))
        }
        Some(u) => anyhow::bail!(
            "the database URL must start with postgres:// (got {})",
            u.split(':').next().unwrap_or("")
        ),
        None => Ok(std::sync::Arc::new(SqliteStore::open(default_path)?)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no {kind} found with id '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("no object with id '{id}' to paginate from ({param})")]
    BadCursor { param: &'static str, id: String },
    #[error("an object with id '{0}' already exists")]
    Duplicate(String),
    /// The database does not answer (down, restarting, out of connections): a 503.
    #[error("the database is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stored object.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    pub scope: Option<String>,
    pub created_at: i64,
    pub body: String,
    /// The project that owns it: read from the store; on insert, the project of the store's
    /// view ([`Store::for_project`]) wins, and the system's view writes this one.
    pub project: String,
}

impl Record {
    pub fn of<T: Object>(obj: &T) -> Result<Record> {
        Ok(Record {
            kind: T::KIND,
            id: obj.id().to_string(),
            scope: obj.scope().map(str::to_string),
            created_at: obj.created_at(),
            body: to_json(obj)?,
            project: String::new(),
        })
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            StoreError::Other(anyhow::anyhow!(
                "stored {} {} is unreadable: {e}",
                self.kind.as_str(),
                self.id
            ))
        })
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(e.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A page request: `limit` objects after/before a cursor id, by creation order.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: usize,
    pub order: Order,
    pub after: Option<String>,
    pub before: Option<String>,
}

/// Restrict a list to objects whose JSON `field` equals `value`.
#[derive(Debug, Clone)]
pub struct Filter {
    pub field: &'static str,
    pub value: String,
}

/// A run [`Store::claim_run`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub run_id: String,
    /// The project the run belongs to (its worker works through that project's view).
    pub project: String,
    /// How long it waited since it was queued (ms, by the database's clock), once known.
    pub waited_ms: Option<i64>,
}

/// A transaction of [`Store::atomically`]: what it reads stays locked until it ends.
pub trait Tx {
    /// An object, locked.
    fn get(&mut self, kind: Kind, id: &str) -> Result<Option<Record>>;
    fn insert(&mut self, r: &Record) -> Result<()>;
    /// Replace an object's body; `NotFound` if it is gone.
    fn update(&mut self, r: &Record) -> Result<()>;
    /// Replace an object's body if its `status` is still `status` (compare-and-set); whether
    /// it was.
    fn update_if(&mut self, r: &Record, status: &str) -> Result<bool>;
    /// Delete an object and every object scoped to it; whether it existed.
    fn delete(&mut self, kind: Kind, id: &str) -> Result<bool>;
    fn list(
        &mut self,
        kind: Kind,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<Record>, bool)>;
    /// Say which node drives a run (`None`: any) and whether a worker holds it now.
    fn set_run_owner(&mut self, run_id: &str, node: Option<&str>, claimed: bool) -> Result<()>;
    /// The node whose worker holds a run, if one does.
    fn run_holder(&mut self, run_id: &str) -> Result<Option<String>>;
    /// How many runs of this view's project are not finished (queued, in progress, waiting
    /// for tool outputs or cancelling). Serialises with every other transaction asking the
    /// same for the same project, so a limit checked here and a run inserted after cannot be
    /// overtaken.
    fn active_runs(&mut self) -> Result<i64>;
    /// Bytes of the Files of this view's project, serialised like [`Tx::active_runs`] with
    /// every other transaction asking the same: a limit checked here and a File inserted
    /// after cannot be overtaken.
    fn stored_bytes(&mut self) -> Result<i64>;
}

pub trait Store: Send + Sync + 'static {
    /// The view of this store that reads and writes only `project`'s objects: another
    /// project's object is not found, not listed, not changed and not deleted.
    fn for_project(&self, project: &str) -> std::sync::Arc<dyn Store>;
    /// The project of this view; `None` for the system's view (every project), which the run
    /// queue, the sweeps of expired objects and node recovery use.
    fn project(&self) -> Option<&str>;
    /// Bytes of the Files of this view's project (of every project for the system's view).
    fn stored_bytes(&self) -> Result<i64>;
    /// Run `f` in one transaction, committed if it returns `Ok`. `f` may run more than once
    /// (the database can ask for a retry), so it must not have effects outside `tx`.
    fn atomically(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>>;
    /// A page of objects of `kind` (within `scope`, matching `filter`), and whether more follow.
    fn list(
        &self,
        kind: Kind,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<Record>, bool)>;
    /// Up to `limit` objects of `kind` (matching `filter`) whose JSON `expires_at` is at or
    /// before `now`, oldest first. Objects without an `expires_at` never expire.
    fn expired(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Record>>;
    /// Replace a file's chunks in a vector store and save `update` (the store's file, now
    /// done), all or none; `NotFound` (and nothing kept) if that record is gone or no longer
    /// `in_progress` (cancelled meanwhile).
    fn put_chunks(
        &self,
        vector_store_id: &str,
        file_id: &str,
        chunks: &[StoredChunk],
        update: &Record,
    ) -> Result<()>;
    /// Every chunk of a vector store, by file and position.
    fn chunks(&self, vector_store_id: &str) -> Result<Vec<StoredChunk>>;
    /// Delete the chunks of a store, of a file (in every store), or of a file in a store.
    fn delete_chunks(&self, vector_store_id: Option<&str>, file_id: Option<&str>) -> Result<()>;
    /// Take the oldest queued run that no worker holds and that is free or reserved for
    /// `node`, marking it held by `node`; with how long it waited since it was queued (ms, by
    /// the database's clock; known once its owner was set). Claimers never wait on each other.
    fn claim_run(&self, node: &str) -> Result<Option<Claim>>;
    /// How many queued runs no worker holds yet.
    fn queued_runs(&self) -> Result<i64>;
    /// Say `node` is alive.
    fn heartbeat(&self, node: &str) -> Result<()>;
    /// Nodes that have not heart-beaten for `lapse_ms` (by the database's clock), and nodes
    /// unfinished runs name that are not known at all.
    fn lost_nodes(&self, lapse_ms: i64) -> Result<Vec<String>>;
    fn forget_node(&self, node: &str) -> Result<()>;
    /// The unfinished runs reserved for or held by `node`, each with whether it is held.
    fn node_runs(&self, node: &str) -> Result<Vec<(Record, bool)>>;
    /// Whether the database answers.
    fn ping(&self) -> Result<()>;
    /// Take the lease of code-interpreter session `id` for `ttl_ms` (by the database's clock)
    /// unless another node holds it unexpired; the session's generation (turns shared so far)
    /// if taken.
    fn take_lease(&self, id: &str, node: &str, ttl_ms: i64) -> Result<Option<i64>>;
    /// Extend `node`'s lease of `id`; whether it still held it.
    fn renew_lease(&self, id: &str, node: &str, ttl_ms: i64) -> Result<bool>;
    /// Give up `node`'s lease of `id`, counting one more generation if `bump`; the generation
    /// after, or `None` if the lease had passed to another node.
    fn release_lease(&self, id: &str, node: &str, bump: bool) -> Result<Option<i64>>;
    /// Forget session `id`'s lease (the session was deleted).
    fn drop_lease(&self, id: &str) -> Result<()>;
    /// Count one more change of `key`.
    fn bump(&self, key: &str) -> Result<()>;
    /// How many changes of `key` were counted.
    fn counter(&self, key: &str) -> Result<i64>;

    /// Insert all records, or none.
    fn insert_all(&self, records: &[Record]) -> Result<()> {
        self.insert_and_update(records, &[])
    }
    /// Replace an object's body.
    fn update(&self, kind: Kind, id: &str, body: &str) -> Result<()> {
        let r = Record {
            kind,
            id: id.to_string(),
            scope: None,
            created_at: 0,
            body: body.to_string(),
            project: String::new(),
        };
        self.atomically(&mut |tx| tx.update(&r))
    }
    /// Replace the bodies of all these objects, or of none.
    fn update_all(&self, records: &[Record]) -> Result<()> {
        self.insert_and_update(&[], records)
    }
    /// Delete an object and every object scoped to it (a thread's messages). Returns whether
    /// it existed.
    fn delete(&self, kind: Kind, id: &str) -> Result<bool> {
        let mut existed = false;
        self.atomically(&mut |tx| {
            existed = tx.delete(kind, id)?;
            Ok(())
        })?;
        Ok(existed)
    }
    /// Insert `inserts` and replace the bodies of `updates`, all or none (a completed Upload
    /// and the File it made).
    fn insert_and_update(&self, inserts: &[Record], updates: &[Record]) -> Result<()> {
        self.atomically(&mut |tx| {
            for r in inserts {
                tx.insert(r)?;
            }
            for r in updates {
                tx.update(r)?;
            }
            Ok(())
        })
    }
}

/// A page of records as objects.
fn decoded<T: DeserializeOwned>((records, more): (Vec<Record>, bool)) -> Result<(Vec<T>, bool)> {
    let items = records
        .iter()
        .map(Record::decode)
        .collect::<Result<Vec<T>>>()?;
    Ok((items, more))
}

/// Typed helpers over any [`Store`].
pub trait StoreExt: Store {
    fn insert<T: Object>(&self, obj: &T) -> Result<()> {
        self.insert_all(&[Record::of(obj)?])
    }

    fn find<T: Object>(&self, id: &str) -> Result<Option<T>> {
        self.get(T::KIND, id)?.map(|r| r.decode()).transpose()
    }

    fn fetch<T: Object>(&self, id: &str) -> Result<T> {
        self.find(id)?.ok_or_else(|| StoreError::NotFound {
            kind: T::KIND.noun(),
            id: id.to_string(),
        })
    }

    /// Run `f` in one transaction and return what it returns (see [`Store::atomically`]).
    fn within<T>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.atomically(&mut |tx| {
            out = Some(f(tx)?);
            Ok(())
        })?;
        Ok(out.expect("the transaction ran"))
    }

    /// Save several objects in one transaction.
    fn save_all(&self, records: &[Record]) -> Result<()> {
        self.update_all(records)
    }

    fn save<T: Object>(&self, obj: &T) -> Result<()> {
        self.update(T::KIND, obj.id(), &to_json(obj)?)
    }

    fn page<T: Object>(
        &self,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<T>, bool)> {
        decoded(self.list(T::KIND, scope, filter, page)?)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Typed helpers over a [`Tx`].
pub trait TxExt: Tx {
    /// An object, locked; `NotFound` if there is none.
    fn fetch<T: Object>(&mut self, id: &str) -> Result<T> {
        self.get(T::KIND, id)?
            .ok_or_else(|| StoreError::NotFound {
                kind: T::KIND.noun(),
                id: id.to_string(),
            })?
            .decode()
    }

    fn add<T: Object>(&mut self, obj: &T) -> Result<()> {
        self.insert(&Record::of(obj)?)
    }

    fn save<T: Object>(&mut self, obj: &T) -> Result<()> {
        self.update(&Record::of(obj)?)
    }

    fn page<T: Object>(
        &mut self,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<T>, bool)> {
        decoded(self.list(T::KIND, scope, filter, page)?)
    }
}

impl<X: Tx + ?Sized> TxExt for X {}
