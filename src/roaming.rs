//! Code-interpreter sessions shared by the nodes of a cluster.
//!
//! A session is live on at most one node at a time: a node takes the session's lease (a row in
//! the store) before a turn, renews it while the turn runs, and gives it back after. Every
//! turn ends with the session hibernated (`hibernate_every_turn`), so its state and its
//! `/mnt/data` are uploaded to the object store before the lease is given back, and the
//! lease's generation counts the turns shared that way. A node whose own copy is at another
//! generation (another node ran turns since, or it restarted) drops its copy and fetches the
//! shared one first; a node that needs a session another node is running waits for that turn
//! to end (or for its lease to lapse, if that node died: the session then resumes from its
//! last shared state).
//!
//! Objects, under `sessions/<id>/`: `state.<generation>` (the hibernated state),
//! `manifest.<generation>.json` (each file of `/mnt/data`: path, size, SHA-256) and
//! `files/<sha256>` (file contents, shared by generations). Objects of a generation are
//! written before the generation is counted and never changed after, so a node that dies while
//! uploading leaves the last counted generation whole.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::bucket::Bucket;
use crate::sandbox::{ExecOptions, ExecResult, SandboxError, Sessions};
use crate::store::Store;

/// How often a node waiting for a session another node runs asks again.
const WAIT_STEP: Duration = Duration::from_millis(50);

/// One file of a session's `/mnt/data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    sha256: String,
    size: u64,
}

/// A session's `/mnt/data` at one generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, Entry>,
}

/// Files' sizes and modification times (ns) by path, to hash only changed ones.
type Stamps = HashMap<String, (u64, i128)>;

/// What this node knows of its copy of a session.
#[derive(Debug, Clone)]
struct Copy {
    /// The generation the copy is at.
    generation: i64,
    manifest: Manifest,
    /// The files' stamps when last hashed.
    seen: Stamps,
    /// When it was last brought up to date or shared.
    used: Instant,
}

/// Copies of sessions this node remembers at most (the least recently used is forgotten: its
/// next turn here fetches the shared state, as after a restart).
const COPIES_KEPT: usize = 10_000;

pub struct Roaming {
    store: Arc<dyn Store>,
    bucket: Bucket,
    node: String,
    lease: Duration,
    copies: Mutex<HashMap<String, Copy>>,
    /// One turn at a time per session on this node.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The manifest a push replaced, until its generation's objects are deleted.
    dropped: Mutex<HashMap<String, Manifest>>,
}

impl std::fmt::Debug for Roaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roaming")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Internal(anyhow::anyhow!("{what}: {e}"))
}

/// An object-store failure while `doing` something: the store down is `Unavailable` (a 503).
fn bucket(doing: &str, e: crate::bucket::BucketError) -> SandboxError {
    match e {
        crate::bucket::BucketError::Unavailable { .. } => SandboxError::Unavailable {
            what: "object store",
            message: format!("{doing}: {e}"),
        },
        e => internal(doing, e),
    }
}

fn key(id: &str, rest: &str) -> String {
    format!("sessions/{id}/{rest}")
}

impl Roaming {
    pub fn new(store: Arc<dyn Store>, bucket: Bucket, node: String, lease: Duration) -> Roaming {
        Roaming {
            store,
            bucket,
            node,
            lease,
            copies: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
            dropped: Mutex::new(HashMap::new()),
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T, SandboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| internal("the store task failed", e))?
            .map_err(|e| match e {
                crate::store::StoreError::Unavailable(e) => SandboxError::Unavailable {
                    what: "database",
                    message: format!("the session lease: {e:#}"),
                },
                e => internal("the session lease", e),
            })
    }

    /// Run `code` in session `id` with its lease held, from the shared state, sharing the
    /// state the turn leaves.
    pub async fn execute(
        &self,
        sessions: &Sessions,
        id: &str,
        image: Option<&str>,
        code: String,
        opts: ExecOptions,
    ) -> Result<ExecResult, SandboxError> {
        let _turn = self.one_turn(id).await;
        let Some(generation) = self.take(id, opts.cancel.as_ref()).await? else {
            return Ok(ExecResult::cancelled_before_start());
        };
        let renewing = self.keep_renewed(id);
        let (result, shared) = self.turn(sessions, id, generation, image, code, opts).await;
        renewing.abort();
        let (sid, node) = (id.to_string(), self.node.clone());
        let after = self.db(move |s| s.release_lease(&sid, &node, shared)).await;
        let counted = {
            let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
            match after {
                Ok(Some(g)) if shared => {
                    if let Some(c) = copies.get_mut(id) {
                        c.generation = g;
                    }
                    Some(g)
                }
                // Not shared, or the lease had lapsed meanwhile: this copy is no one's (and
                // the objects it uploaded belong to no counted generation).
                _ => {
                    copies.remove(id);
                    self.dropped
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(id);
                    None
                }
            }
        };
        if let Some(g) = counted {
            self.forget_generation(id, g - 1).await;
        }
        result
    }

    /// Wait for this node's other turns of session `id`; this one lasts until the guard is
    /// dropped.
    async fn one_turn(&self, id: &str) -> Turn<'_> {
        let lock = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            turns.entry(id.to_string()).or_default().clone()
        };
        Turn {
            roaming: self,
            id: id.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Remember this node's copy of session `id` (forgetting the least recently used one past
    /// [`COPIES_KEPT`]).
    fn keep_copy(&self, id: &str, copy: Copy) {
        let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        if copies.len() >= COPIES_KEPT
            && !copies.contains_key(id)
            && let Some(oldest) = copies
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
        {
            copies.remove(&oldest);
        }
        copies.insert(id.to_string(), copy);
    }

    /// Bring this node's copy of session `id` up to date (to read its files or state here).
    pub async fn refresh(&self, sessions: &Sessions, id: &str) -> Result<(), SandboxError> {
        let _turn = self.one_turn(id).await;
        let Some(generation) = self.take(id, None).await? else {
            return Ok(());
        };
        let current = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|c| c.generation == generation);
        let pulled = if current {
            Ok(())
        } else {
            self.pull(sessions, id, generation).await
        };
        let (sid, node) = (id.to_string(), self.node.clone());
        self.db(move |s| s.release_lease(&sid, &node, false))
            .await?;
        pulled
    }

    /// Take the lease of `id`, waiting while another node runs a turn of it; its generation,
    /// or `None` if `cancel` fired first.
    async fn take(
        &self,
        id: &str,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<Option<i64>, SandboxError> {
        let started = Instant::now();
        loop {
            let (sid, node, ttl) = (id.to_string(), self.node.clone(), self.ttl_ms());
            if let Some(g) = self.db(move |s| s.take_lease(&sid, &node, ttl)).await? {
                if started.elapsed() > WAIT_STEP {
                    crate::metrics::lease_handover(started.elapsed().as_secs_f64());
                }
                return Ok(Some(g));
            }
            let wait = tokio::time::sleep(WAIT_STEP);
            match cancel {
                Some(c) => tokio::select! {
                    _ = c.cancelled() => return Ok(None),
                    _ = wait => {}
                },
                None => wait.await,
            }
        }
    }

    /// Renew the lease of `id` while a turn runs (until the task is aborted).
    fn keep_renewed(&self, id: &str) -> tokio::task::JoinHandle<()> {
        let (store, sid, node, ttl) = (
            self.store.clone(),
            id.to_string(),
            self.node.clone(),
            self.ttl_ms(),
        );
        let every = self.lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (store, id, node) = (store.clone(), sid.clone(), node.clone());
                let held =
                    tokio::task::spawn_blocking(move || store.renew_lease(&id, &node, ttl)).await;
                if !matches!(held, Ok(Ok(true))) {
                    tracing::warn!(session = %sid, "could not renew the session's lease");
                }
            }
        })
    }

    /// One turn with the lease held: bring the local copy to `generation`, run the call, share
    /// what it left. The call's result, and whether the state was shared.
    async fn turn(
        &self,
        sessions: &Sessions,
        id: &str,
        generation: i64,
        image: Option<&str>,
        code: String,
        opts: ExecOptions,
    ) -> (Result<ExecResult, SandboxError>, bool) {
        let current = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|c| c.generation == generation);
        if !current && let Err(e) = self.pull(sessions, id, generation).await {
            return (Err(e), false);
        }
        let result = sessions.execute(id, image, code, opts).await;
        if result.is_err() {
            return (result, false);
        }
        match self.push(sessions, id, generation + 1).await {
            Ok(()) => (result, true),
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "could not share the session's state");
                (result, false)
            }
        }
    }

    /// Replace this node's copy of `id` by the shared one at `generation` (none at 0).
    async fn pull(
        &self,
        sessions: &Sessions,
        id: &str,
        generation: i64,
    ) -> Result<(), SandboxError> {
        // The live interpreter and files here are an older copy: drop them.
        sessions.remove(id).await?;
        let data = sessions.data_dir(id)?;
        let state = sessions.state_path(id)?;
        let manifest = if generation == 0 {
            Manifest::default()
        } else {
            let bytes = self
                .bucket
                .get_bytes(&key(id, &format!("manifest.{generation}.json")))
                .await
                .map_err(|e| bucket("fetching the session's files", e))?;
            serde_json::from_slice::<Manifest>(&bytes)
                .map_err(|e| internal("reading the session's manifest", e))?
        };
        let mut seen = HashMap::new();
        if generation > 0 {
            tokio::fs::create_dir_all(&data)
                .await
                .map_err(|e| internal("making the session's folder", e))?;
            for (rel, entry) in &manifest.files {
                let dest = inside(&data, rel).ok_or_else(|| {
                    internal("the session's manifest", format!("bad path {rel:?}"))
                })?;
                if let Some(parent) = dest.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| internal("making the session's folder", e))?;
                }
                self.bucket
                    .get_to_file(&key(id, &format!("files/{}", entry.sha256)), &dest)
                    .await
                    .map_err(|e| bucket("fetching the session's files", e))?;
                if let Ok(meta) = tokio::fs::metadata(&dest).await {
                    seen.insert(rel.clone(), stamp(&meta));
                }
            }
            match self
                .bucket
                .get_to_file(&key(id, &format!("state.{generation}")), &state)
                .await
            {
                Ok(_) => {}
                // The last turn left no state (its interpreter ended): start afresh.
                Err(crate::bucket::BucketError::NotFound(_)) => {}
                Err(e) => return Err(bucket("fetching the session's state", e)),
            }
        }
        self.keep_copy(
            id,
            Copy {
                generation,
                manifest,
                seen,
                used: Instant::now(),
            },
        );
        Ok(())
    }

    /// Upload what a turn left in session `id` as generation `next`: new file contents, the
    /// state (if the interpreter left one), then the manifest.
    async fn push(&self, sessions: &Sessions, id: &str, next: i64) -> Result<(), SandboxError> {
        let data = sessions.data_dir(id)?;
        let state = sessions.state_path(id)?;
        let previous = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or(Copy {
                generation: next - 1,
                manifest: Manifest::default(),
                seen: HashMap::new(),
                used: Instant::now(),
            });
        let (d, prev) = (data.clone(), previous.clone());
        let (manifest, seen) = tokio::task::spawn_blocking(move || scan(&d, &prev))
            .await
            .map_err(|e| internal("scanning the session's files", e))?
            .map_err(|e| internal("scanning the session's files", e))?;
        let known: std::collections::HashSet<&str> = previous
            .manifest
            .files
            .values()
            .map(|e| e.sha256.as_str())
            .collect();
        let mut sent = std::collections::HashSet::new();
        for (rel, entry) in &manifest.files {
            if known.contains(entry.sha256.as_str()) || !sent.insert(entry.sha256.clone()) {
                continue;
            }
            let path = inside(&data, rel).ok_or_else(|| internal("a session file", rel))?;
            self.bucket
                .put_file(&key(id, &format!("files/{}", entry.sha256)), &path)
                .await
                .map_err(|e| bucket("sharing the session's files", e))?;
        }
        if tokio::fs::try_exists(&state).await.unwrap_or(false) {
            self.bucket
                .put_file(&key(id, &format!("state.{next}")), &state)
                .await
                .map_err(|e| bucket("sharing the session's state", e))?;
        }
        let body = serde_json::to_vec(&manifest).map_err(|e| internal("the manifest", e))?;
        self.bucket
            .put_bytes(&key(id, &format!("manifest.{next}.json")), body)
            .await
            .map_err(|e| bucket("sharing the session's manifest", e))?;
        // Contents no file refers to any more go once the new generation is counted.
        self.keep_copy(
            id,
            Copy {
                generation: previous.generation,
                manifest,
                seen,
                used: Instant::now(),
            },
        );
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), previous.manifest);
        Ok(())
    }

    /// Delete generation `old`'s objects of `id` (and contents the current one no longer
    /// uses), once a newer generation is counted.
    async fn forget_generation(&self, id: &str, old: i64) {
        let previous = self
            .dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let current: std::collections::HashSet<String> = self
            .copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|c| {
                c.manifest
                    .files
                    .values()
                    .map(|e| e.sha256.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut keys = vec![];
        if old > 0 {
            keys.push(key(id, &format!("state.{old}")));
            keys.push(key(id, &format!("manifest.{old}.json")));
        }
        if let Some(prev) = previous {
            for e in prev.files.values() {
                if !current.contains(&e.sha256) {
                    keys.push(key(id, &format!("files/{}", e.sha256)));
                }
            }
        }
        for k in keys {
            if let Err(e) = self.bucket.delete(&k).await {
                tracing::warn!(session = %id, error = %e, "could not delete an old session object");
            }
        }
    }

    /// Delete every shared object and the lease of session `id` (the session was deleted);
    /// whether there were any objects.
    pub async fn remove(&self, id: &str) -> Result<bool, SandboxError> {
        self.copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let listed = self
            .bucket
            .list(&format!("sessions/{id}"))
            .await
            .map_err(|e| bucket("listing the session's objects", e))?;
        let existed = !listed.is_empty();
        for obj in listed {
            let _ = self.bucket.delete(&obj.key).await;
        }
        let sid = id.to_string();
        self.db(move |s| s.drop_lease(&sid)).await?;
        Ok(existed)
    }
}

/// Run `code` in session `id`: through `roaming` on a cluster, straight on `sessions` alone.
pub async fn execute(
    roaming: Option<&Roaming>,
    sessions: &Sessions,
    id: &str,
    image: Option<&str>,
    code: String,
    opts: ExecOptions,
) -> Result<ExecResult, SandboxError> {
    match roaming {
        Some(r) => r.execute(sessions, id, image, code, opts).await,
        None => sessions.execute(id, image, code, opts).await,
    }
}

/// One turn of a session on this node (see [`Roaming::one_turn`]); its lock is forgotten once no
/// one else waits for it.
struct Turn<'a> {
    roaming: &'a Roaming,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut turns = self.roaming.turns.lock().unwrap_or_else(|p| p.into_inner());
        if turns
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            turns.remove(&self.id);
        }
    }
}

/// `rel` under `dir`, if it stays there (no `..`, no absolute path).
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| dir.join(p))
}

fn stamp(meta: &std::fs::Metadata) -> (u64, i128) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (meta.len(), mtime)
}

/// The files of `dir` now, hashing those whose size or time changed since `previous`.
fn scan(dir: &Path, previous: &Copy) -> anyhow::Result<(Manifest, Stamps)> {
    let mut manifest = Manifest::default();
    let mut seen = HashMap::new();
    if !dir.exists() {
        return Ok((manifest, seen));
    }
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(dir)?
            .to_str()
            .context("a file name that is not UTF-8")?
            .to_string();
        let meta = e.metadata()?;
        let now = stamp(&meta);
        let entry = match (previous.seen.get(&rel), previous.manifest.files.get(&rel)) {
            (Some(was), Some(entry)) if *was == now => entry.clone(),
            _ => {
                let mut hasher = sha2::Sha256::new();
                let mut f = std::fs::File::open(e.path())?;
                std::io::copy(&mut f, &mut hasher)?;
                Entry {
                    sha256: hex::encode(hasher.finalize()),
                    size: meta.len(),
                }
            }
        };
        manifest.files.insert(rel.clone(), entry);
        seen.insert(rel, now);
    }
    Ok((manifest, seen))
}
