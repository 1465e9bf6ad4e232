//! What nodes share through the store: who is alive (`nodes`, heart-beaten), which node drives
//! which run (`runs.node`, `runs.claimed_at`), and the run queue, claimed with
//! `FOR UPDATE SKIP LOCKED` so claimers never wait on each other.

use super::sql::{Backend, SqlStore, Value};
use super::{Claim, Record, Result};
use crate::model::Kind;

/// Claim the oldest queued run no worker holds, free or reserved for `node`; with how long it
/// waited (ms, if known).
pub(super) fn claim_run<B: Backend>(s: &SqlStore<B>, node: &str) -> Result<Option<Claim>> {
    let d = B::DIALECT;
    let sql = format!(
        "UPDATE runs SET node = $1, claimed_at = {now} WHERE seq = (\
           SELECT seq FROM runs WHERE status = 'queued' AND claimed_at IS NULL \
           AND (node IS NULL OR node = $1) ORDER BY seq LIMIT 1{skip}\
         ) RETURNING id, project, claimed_at - queued_at",
        now = d.now_ms(),
        skip = d.skip_locked()
    );
    s.writing(|c| {
        let rows = c.query(&sql, &[node.into()])?;
        Ok(rows.first().and_then(|r| match r.as_slice() {
            [Value::Text(id), Value::Text(project), waited] => Some(Claim {
                run_id: id.clone(),
                project: project.clone(),
                waited_ms: waited.int(),
            }),
            _ => None,
        }))
    })
}

/// Say `node` is alive, by the database's clock.
pub(super) fn heartbeat<B: Backend>(s: &SqlStore<B>, node: &str) -> Result<()> {
    let now = B::DIALECT.now_ms();
    let sql = format!(
        "INSERT INTO nodes (id, started_at, heartbeat_at) VALUES ($1, {now}, {now}) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = {now}"
    );
    s.writing(|c| c.execute(&sql, &[node.into()]).map(|_| ()))
}

/// Nodes silent for `lapse_ms`, and nodes named by unfinished runs that no longer heart-beat
/// at all.
pub(super) fn lost_nodes<B: Backend>(s: &SqlStore<B>, lapse_ms: i64) -> Result<Vec<String>> {
    let now = B::DIALECT.now_ms();
    let sql = format!(
        "SELECT id FROM nodes WHERE heartbeat_at < {now} - $1 \
         UNION SELECT DISTINCT node FROM runs WHERE node IS NOT NULL \
         AND status IN ('queued', 'in_progress', 'cancelling') \
         AND node NOT IN (SELECT id FROM nodes)"
    );
    s.reading(|c| {
        let rows = c.query(&sql, &[Value::Int(lapse_ms)])?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(Value::Text(id)) => Some(id),
                _ => None,
            })
            .collect())
    })
}

pub(super) fn forget_node<B: Backend>(s: &SqlStore<B>, node: &str) -> Result<()> {
    s.writing(|c| {
        c.execute("DELETE FROM nodes WHERE id = $1", &[node.into()])
            .map(|_| ())
    })
}

/// The unfinished runs `node` drives or is to drive, each with whether a worker holds it.
pub(super) fn node_runs<B: Backend>(s: &SqlStore<B>, node: &str) -> Result<Vec<(Record, bool)>> {
    s.reading(|c| {
        let rows = c.query(
            "SELECT id, scope, created_at, body, project, claimed_at FROM runs WHERE node = $1 \
             AND status IN ('queued', 'in_progress', 'cancelling') ORDER BY seq",
            &[node.into()],
        )?;
        rows.iter()
            .map(|r| {
                let rec = super::sql::record(Kind::Run, r)?;
                Ok((rec, !matches!(r.get(5), Some(Value::Null) | None)))
            })
            .collect()
    })
}

/// Take the lease of session `id` for `ttl_ms`, unless another node holds it unexpired; the
/// session's generation if taken.
pub(super) fn take_lease<B: Backend>(
    s: &SqlStore<B>,
    id: &str,
    node: &str,
    ttl_ms: i64,
) -> Result<Option<i64>> {
    let now = B::DIALECT.now_ms();
    let sql = format!(
        "INSERT INTO leases (id, node, expires_at, generation) VALUES ($1, $2, {now} + $3, 0) \
         ON CONFLICT (id) DO UPDATE SET node = $2, expires_at = {now} + $3 \
         WHERE leases.node IS NULL OR leases.node = $2 \
         OR leases.expires_at < {now} \
         RETURNING generation"
    );
    s.writing(|c| {
        let rows = c.query(&sql, &[id.into(), node.into(), Value::Int(ttl_ms)])?;
        Ok(rows.first().and_then(|r| match r.first() {
            Some(Value::Int(g)) => Some(*g),
            _ => None,
        }))
    })
}

/// Extend `node`'s lease of `id`; whether it still held it.
pub(super) fn renew_lease<B: Backend>(
    s: &SqlStore<B>,
    id: &str,
    node: &str,
    ttl_ms: i64,
) -> Result<bool> {
    let now = B::DIALECT.now_ms();
    let sql = format!("UPDATE leases SET expires_at = {now} + $3 WHERE id = $1 AND node = $2");
    s.writing(|c| Ok(c.execute(&sql, &[id.into(), node.into(), Value::Int(ttl_ms)])? > 0))
}

/// Give up `node`'s lease of `id`, counting a turn whose state is shared (`bump`); the
/// generation after, or `None` if the lease had passed to another node.
pub(super) fn release_lease<B: Backend>(
    s: &SqlStore<B>,
    id: &str,
    node: &str,
    bump: bool,
) -> Result<Option<i64>> {
    s.writing(|c| {
        let rows = c.query(
            "UPDATE leases SET node = NULL, expires_at = 0, generation = generation + $3 \
             WHERE id = $1 AND node = $2 RETURNING generation",
            &[id.into(), node.into(), Value::Int(bump as i64)],
        )?;
        Ok(rows.first().and_then(|r| match r.first() {
            Some(Value::Int(g)) => Some(*g),
            _ => None,
        }))
    })
}

/// Forget session `id`'s lease (the session was deleted).
pub(super) fn drop_lease<B: Backend>(s: &SqlStore<B>, id: &str) -> Result<()> {
    s.writing(|c| {
        c.execute("DELETE FROM leases WHERE id = $1", &[id.into()])
            .map(|_| ())
    })
}
