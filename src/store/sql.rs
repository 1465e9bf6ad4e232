//! The store's SQL, written once for both backends.
//!
//! A backend ([`Backend`]) only opens connections and transactions and runs statements
//! ([`Conn`]); everything the store does is here, as statements in PostgreSQL's `$1` style
//! (the SQLite backend reads `$1` as `?1`). The few differences (row locks, the database's
//! clock) are [`Dialect`] methods.

use super::schema::{Table, table};
use super::{Filter, Order, Page, Record, Result, Store, StoreError, Tx};
use crate::model::Kind;

/// A statement parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Value {
    fn text(&self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub(super) fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    fn opt(s: Option<&str>) -> Value {
        s.map_or(Value::Null, |s| Value::Text(s.to_string()))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

pub type Row = Vec<Value>;

/// One connection, inside a transaction or not.
pub trait Conn {
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// What locks the rows a `SELECT` read until the transaction ends. SQLite's write
    /// transactions (`BEGIN IMMEDIATE`) already hold the one write lock.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// [`Self::for_update`], passing over rows another transaction holds.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The database's clock in milliseconds (one clock for every node).
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Dialect::Postgres => "CAST(extract(epoch from clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// Connections to one database.
pub trait Backend: Send + Sync + 'static {
    const DIALECT: Dialect;
    /// Run `f` on a connection (reads).
    fn read(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()>;
    /// Run `f` in one transaction: committed if it returns `Ok`, rolled back otherwise. A
    /// backend may run `f` again when the database asks for a retry (a deadlock).
    fn write(&self, f: &mut dyn FnMut(&mut dyn Conn) -> Result<()>) -> Result<()>;
}

/// A [`Store`] over any [`Backend`]: the system's view (every project: the run queue, sweeps,
/// node recovery) or one project's ([`Store::for_project`]), which reads and writes only that
/// project's objects.
pub struct SqlStore<B> {
    pub(super) backend: std::sync::Arc<B>,
    pub(super) project: Option<std::sync::Arc<str>>,
}

impl<B> SqlStore<B> {
    /// The system's view of `backend`.
    pub(super) fn system(backend: B) -> SqlStore<B> {
        SqlStore {
            backend: std::sync::Arc::new(backend),
            project: None,
        }
    }
}

impl<B> std::fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").finish_non_exhaustive()
    }
}

impl<B: Backend> SqlStore<B> {
    pub(super) fn reading<T>(&self, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.backend.read(&mut |c| {
            out = Some(f(c)?);
            Ok(())
        })?;
        Ok(out.expect("read ran"))
    }

    pub(super) fn writing<T>(&self, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.backend.write(&mut |c| {
            out = Some(f(c)?);
            Ok(())
        })?;
        Ok(out.expect("write ran"))
    }
}

const BASE: &str = "id, scope, created_at, body, project";

fn columns(t: &Table) -> String {
    let mut s = BASE.to_string();
    for (c, _) in t.extras {
        s.push_str(", ");
        s.push_str(c);
    }
    s
}

pub(super) fn record(kind: Kind, row: &Row) -> Result<Record> {
    let bad = || {
        StoreError::Other(anyhow::anyhow!(
            "a stored {} row is malformed",
            kind.as_str()
        ))
    };
    Ok(Record {
        kind,
        id: row.first().and_then(Value::text).ok_or_else(bad)?,
        scope: row.get(1).and_then(Value::text),
        created_at: row.get(2).and_then(Value::int).ok_or_else(bad)?,
        body: row.get(3).and_then(Value::text).ok_or_else(bad)?,
        project: row.get(4).and_then(Value::text).ok_or_else(bad)?,
    })
}

fn records(kind: Kind, rows: Vec<Row>) -> Result<Vec<Record>> {
    rows.iter().map(|r| record(kind, r)).collect()
}

fn filter_column(t: &Table, f: &Filter) -> Result<&'static str> {
    t.column_of(f.field).ok_or_else(|| {
        StoreError::Other(anyhow::anyhow!(
            "{} cannot be filtered by {}",
            t.name,
            f.field
        ))
    })
}

pub(super) fn get(
    c: &mut dyn Conn,
    d: Dialect,
    p: Option<&str>,
    kind: Kind,
    id: &str,
    lock: bool,
) -> Result<Option<Record>> {
    let t = table(kind);
    let lock = if lock { d.for_update() } else { "" };
    let mut params = vec![id.into()];
    let mine = of_project(p, &mut params);
    let rows = c.query(
        &format!("SELECT {BASE} FROM {} WHERE id = $1{mine}{lock}", t.name),
        &params,
    )?;
    rows.first().map(|r| record(kind, r)).transpose()
}

/// ` AND project = $n` when `p` names a project (pushing it onto `params`), else nothing.
fn of_project(p: Option<&str>, params: &mut Vec<Value>) -> String {
    match p {
        Some(p) => {
            params.push(p.into());
            format!(" AND project = ${}", params.len())
        }
        None => String::new(),
    }
}

/// Insert a record into project `p` (the system's view writes the project the record names).
pub(super) fn insert(c: &mut dyn Conn, p: Option<&str>, r: &Record) -> Result<()> {
    let t = table(r.kind);
    let project = match p {
        Some(p) => p,
        None if !r.project.is_empty() => r.project.as_str(),
        None => {
            return Err(StoreError::Other(anyhow::anyhow!(
                "a {} was written outside any project",
                r.kind.as_str()
            )));
        }
    };
    let mut params = vec![
        Value::Text(r.id.clone()),
        Value::opt(r.scope.as_deref()),
        Value::Int(r.created_at),
        Value::Text(r.body.clone()),
        Value::from(project),
    ];
    params.extend(t.extra_values(&r.body));
    let marks = (1..=params.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("INSERT INTO {} ({}) VALUES ({marks})", t.name, columns(t));
    match c.execute(&sql, &params) {
        Err(StoreError::Duplicate(_)) => Err(StoreError::Duplicate(r.id.clone())),
        other => other.map(|_| ()),
    }
}

/// Replace a body (and its columns); with `status`, only while the row's status is that.
/// Whether a row changed.
pub(super) fn update(
    c: &mut dyn Conn,
    p: Option<&str>,
    r: &Record,
    status: Option<&str>,
) -> Result<bool> {
    let t = table(r.kind);
    let mut params = vec![Value::Text(r.id.clone()), Value::Text(r.body.clone())];
    let mut sets = "body = $2".to_string();
    for ((col, _), v) in t.extras.iter().zip(t.extra_values(&r.body)) {
        params.push(v);
        sets.push_str(&format!(", {col} = ${}", params.len()));
    }
    let mine = of_project(p, &mut params);
    let mut sql = format!("UPDATE {} SET {sets} WHERE id = $1{mine}", t.name);
    if let Some(s) = status {
        params.push(s.into());
        sql.push_str(&format!(" AND status = ${}", params.len()));
    }
    Ok(c.execute(&sql, &params)? > 0)
}

pub(super) fn delete(c: &mut dyn Conn, p: Option<&str>, kind: Kind, id: &str) -> Result<bool> {
    let t = table(kind);
    let mut params = vec![id.into()];
    let mine = of_project(p, &mut params);
    let n = c.execute(
        &format!("DELETE FROM {} WHERE id = $1{mine}", t.name),
        &params,
    )?;
    if n > 0 {
        for child in t.children() {
            c.execute(
                &format!("DELETE FROM {} WHERE scope = $1", child.name),
                &[id.into()],
            )?;
        }
        if kind == Kind::VectorStore {
            c.execute(
                "DELETE FROM chunks WHERE vector_store_id = $1",
                &[id.into()],
            )?;
        }
    }
    Ok(n > 0)
}

pub(super) fn list(
    c: &mut dyn Conn,
    p: Option<&str>,
    kind: Kind,
    scope: Option<&str>,
    filter: Option<&Filter>,
    page: &Page,
) -> Result<(Vec<Record>, bool)> {
    let t = table(kind);
    let mut cursor = |param: &'static str, id: &Option<String>| -> Result<Option<i64>> {
        let Some(id) = id else { return Ok(None) };
        // A cursor must be an object of this very listing (same kind, same thread).
        let mut sql = format!("SELECT seq FROM {} WHERE id = $1", t.name);
        let mut params = vec![Value::from(id.as_str())];
        if let Some(s) = scope {
            sql.push_str(" AND scope = $2");
            params.push(s.into());
        }
        sql.push_str(&of_project(p, &mut params));
        let rows = c.query(&sql, &params)?;
        rows.first()
            .and_then(|r| r.first())
            .and_then(Value::int)
            .map(Some)
            .ok_or_else(|| StoreError::BadCursor {
                param,
                id: id.clone(),
            })
    };
    let after = cursor("after", &page.after)?;
    let before = cursor("before", &page.before)?;
    // `after` continues in the listing's own order; `before` goes back against it: the page
    // is the `limit` objects just before the cursor (read backwards from it, then turned
    // round), and `has_more` says whether there are more before those.
    let (gt, lt) = match page.order {
        Order::Asc => (after, before),
        Order::Desc => (before, after),
    };
    let backwards = before.is_some() && after.is_none();
    let dir = match (page.order, backwards) {
        (Order::Asc, false) | (Order::Desc, true) => "ASC",
        (Order::Desc, false) | (Order::Asc, true) => "DESC",
    };
    let mut sql = format!("SELECT {BASE} FROM {} WHERE TRUE", t.name);
    let mut params: Vec<Value> = vec![];
    let mut and = |clause: &str, v: Value, params: &mut Vec<Value>| {
        params.push(v);
        sql.push_str(&format!(" AND {clause} ${}", params.len()));
    };
    if let Some(s) = scope {
        and("scope =", s.into(), &mut params);
    }
    if let Some(p) = p {
        and("project =", p.into(), &mut params);
    }
    if let Some(g) = gt {
        and("seq >", g.into(), &mut params);
    }
    if let Some(l) = lt {
        and("seq <", l.into(), &mut params);
    }
    if let Some(f) = filter {
        let col = filter_column(t, f)?;
        and(&format!("{col} ="), f.value.as_str().into(), &mut params);
    }
    params.push(Value::Int(page.limit as i64 + 1));
    sql.push_str(&format!(" ORDER BY seq {dir} LIMIT ${}", params.len()));
    let mut out = records(kind, c.query(&sql, &params)?)?;
    let more = out.len() > page.limit;
    out.truncate(page.limit);
    if backwards {
        out.reverse();
    }
    Ok((out, more))
}

/// A transaction handed to [`Store::atomically`]'s closure.
struct SqlTx<'a> {
    c: &'a mut dyn Conn,
    d: Dialect,
    p: Option<&'a str>,
}

impl SqlTx<'_> {
    /// Hold the counter row `what.<project>` until the transaction ends: the next transaction
    /// that asks for it waits here, and then sees what this one wrote.
    fn serialise(&mut self, what: &str) -> Result<()> {
        let project = self.p.unwrap_or("");
        self.c.execute(
            "INSERT INTO counters (key, value) VALUES ($1, 1) \
             ON CONFLICT (key) DO UPDATE SET value = counters.value + 1",
            &[format!("{what}.{project}").as_str().into()],
        )?;
        Ok(())
    }
}

/// Bytes of project `p`'s Files (every project's for `None`).
fn stored_bytes(c: &mut dyn Conn, p: Option<&str>) -> Result<i64> {
    let mut params = vec![];
    let mine = of_project(p, &mut params);
    let rows = c.query(
        &format!("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM files WHERE TRUE{mine}"),
        &params,
    )?;
    Ok(first_int(&rows))
}

impl Tx for SqlTx<'_> {
    fn get(&mut self, kind: Kind, id: &str) -> Result<Option<Record>> {
        get(self.c, self.d, self.p, kind, id, true)
    }

    fn insert(&mut self, r: &Record) -> Result<()> {
        insert(self.c, self.p, r)
    }

    fn update(&mut self, r: &Record) -> Result<()> {
        if !update(self.c, self.p, r, None)? {
            return Err(StoreError::NotFound {
                kind: r.kind.noun(),
                id: r.id.clone(),
            });
        }
        Ok(())
    }

    fn update_if(&mut self, r: &Record, status: &str) -> Result<bool> {
        update(self.c, self.p, r, Some(status))
    }

    fn delete(&mut self, kind: Kind, id: &str) -> Result<bool> {
        delete(self.c, self.p, kind, id)
    }

    fn list(
        &mut self,
        kind: Kind,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<Record>, bool)> {
        list(self.c, self.p, kind, scope, filter, page)
    }

    fn set_run_owner(&mut self, run_id: &str, node: Option<&str>, claimed: bool) -> Result<()> {
        // Unclaimed, a queued run starts waiting now (what `claim_run` measures).
        let now = self.d.now_ms();
        let sets = if claimed {
            format!("claimed_at = {now}")
        } else {
            format!("claimed_at = NULL, queued_at = {now}")
        };
        self.c.execute(
            &format!("UPDATE runs SET node = $2, {sets} WHERE id = $1"),
            &[run_id.into(), Value::opt(node)],
        )?;
        Ok(())
    }

    fn active_runs(&mut self) -> Result<i64> {
        self.serialise("runs")?;
        let mut params = vec![];
        let mine = of_project(self.p, &mut params);
        let rows = self.c.query(
            &format!(
                "SELECT count(*) FROM runs WHERE status IN \
                 ('queued', 'in_progress', 'requires_action', 'cancelling'){mine}"
            ),
            &params,
        )?;
        Ok(first_int(&rows))
    }

    fn stored_bytes(&mut self) -> Result<i64> {
        self.serialise("files")?;
        stored_bytes(self.c, self.p)
    }

    fn run_holder(&mut self, run_id: &str) -> Result<Option<String>> {
        let rows = self.c.query(
            "SELECT node FROM runs WHERE id = $1 AND claimed_at IS NOT NULL",
            &[run_id.into()],
        )?;
        Ok(rows.first().and_then(|r| r.first()).and_then(Value::text))
    }
}

/// The first column of the first row as an integer (0 if there is none, or it is NULL).
fn first_int(rows: &[Row]) -> i64 {
    rows.first()
        .and_then(|r| r.first())
        .and_then(Value::int)
        .unwrap_or(0)
}

impl<B: Backend> Store for SqlStore<B> {
    fn for_project(&self, project: &str) -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(SqlStore {
            backend: self.backend.clone(),
            project: Some(project.into()),
        })
    }

    fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    fn stored_bytes(&self) -> Result<i64> {
        self.reading(|c| stored_bytes(c, self.project.as_deref()))
    }

    fn atomically(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let p = self.project.as_deref();
        self.backend.write(&mut |c| {
            f(&mut SqlTx {
                c,
                d: B::DIALECT,
                p,
            })
        })
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>> {
        self.reading(|c| get(c, B::DIALECT, self.project.as_deref(), kind, id, false))
    }

    fn list(
        &self,
        kind: Kind,
        scope: Option<&str>,
        filter: Option<&Filter>,
        page: &Page,
    ) -> Result<(Vec<Record>, bool)> {
        self.reading(|c| list(c, self.project.as_deref(), kind, scope, filter, page))
    }

    fn expired(
        &self,
        kind: Kind,
        filter: Option<&Filter>,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Record>> {
        let t = table(kind);
        let mut sql = format!("SELECT {BASE} FROM {} WHERE expires_at <= $1", t.name);
        let mut params = vec![Value::Int(now)];
        if let Some(f) = filter {
            params.push(f.value.as_str().into());
            sql.push_str(&format!(" AND {} = $2", filter_column(t, f)?));
        }
        sql.push_str(&of_project(self.project.as_deref(), &mut params));
        params.push(Value::Int(limit as i64));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
        self.reading(|c| records(kind, c.query(&sql, &params)?))
    }

    fn put_chunks(
        &self,
        vector_store_id: &str,
        file_id: &str,
        chunks: &[super::StoredChunk],
        update: &Record,
    ) -> Result<()> {
        self.writing(|c| {
            super::chunks::put(
                c,
                self.project.as_deref(),
                vector_store_id,
                file_id,
                chunks,
                update,
            )
        })
    }

    fn chunks(&self, vector_store_id: &str) -> Result<Vec<super::StoredChunk>> {
        self.reading(|c| super::chunks::all(c, self.project.as_deref(), vector_store_id))
    }

    fn delete_chunks(&self, vector_store_id: Option<&str>, file_id: Option<&str>) -> Result<()> {
        self.writing(|c| {
            super::chunks::delete(c, self.project.as_deref(), vector_store_id, file_id)
        })
    }

    fn claim_run(&self, node: &str) -> Result<Option<super::Claim>> {
        super::cluster::claim_run(self, node)
    }

    fn queued_runs(&self) -> Result<i64> {
        self.reading(|c| {
            let rows = c.query(
                "SELECT count(*) FROM runs WHERE status = 'queued' AND claimed_at IS NULL",
                &[],
            )?;
            Ok(rows
                .first()
                .and_then(|r| r.first())
                .and_then(Value::int)
                .unwrap_or(0))
        })
    }

    fn heartbeat(&self, node: &str) -> Result<()> {
        super::cluster::heartbeat(self, node)
    }

    fn lost_nodes(&self, lapse_ms: i64) -> Result<Vec<String>> {
        super::cluster::lost_nodes(self, lapse_ms)
    }

    fn forget_node(&self, node: &str) -> Result<()> {
        super::cluster::forget_node(self, node)
    }

    fn node_runs(&self, node: &str) -> Result<Vec<(Record, bool)>> {
        super::cluster::node_runs(self, node)
    }

    fn take_lease(&self, id: &str, node: &str, ttl_ms: i64) -> Result<Option<i64>> {
        super::cluster::take_lease(self, id, node, ttl_ms)
    }

    fn renew_lease(&self, id: &str, node: &str, ttl_ms: i64) -> Result<bool> {
        super::cluster::renew_lease(self, id, node, ttl_ms)
    }

    fn release_lease(&self, id: &str, node: &str, bump: bool) -> Result<Option<i64>> {
        super::cluster::release_lease(self, id, node, bump)
    }

    fn drop_lease(&self, id: &str) -> Result<()> {
        super::cluster::drop_lease(self, id)
    }

    fn bump(&self, key: &str) -> Result<()> {
        self.writing(|c| {
            c.execute(
                "INSERT INTO counters (key, value) VALUES ($1, 1) \
                 ON CONFLICT (key) DO UPDATE SET value = counters.value + 1",
                &[key.into()],
            )
            .map(|_| ())
        })
    }

    fn counter(&self, key: &str) -> Result<i64> {
        self.reading(|c| {
            let rows = c.query("SELECT value FROM counters WHERE key = $1", &[key.into()])?;
            Ok(rows
                .first()
                .and_then(|r| r.first())
                .and_then(Value::int)
                .unwrap_or(0))
        })
    }

    fn ping(&self) -> Result<()> {
        self.reading(|c| c.query("SELECT 1", &[]).map(|_| ()))
    }
}
