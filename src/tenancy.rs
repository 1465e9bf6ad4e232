//! Projects: who owns what, and which API key speaks for whom.
//!
//! Every object (assistants, threads, files, vector stores, runs, code-interpreter sessions)
//! belongs to one [`Project`], and a request sees only its own project's objects. A request's
//! project is that of the bearer key it presents:
//!
//! - the keys of `OASIS_API_KEYS` belong to the default project ([`DEFAULT_PROJECT`]), which
//!   also owns everything when no key is configured at all (an open server). A single-project
//!   Oasis is thus the default project, and its data keeps working unchanged;
//! - the keys file (`OASIS_KEYS_FILE`, TOML, written by `oasis keys add`; see [`file`]) lists
//!   projects, each with the SHA-256 of its keys and optional [`Limits`]. The file holds no
//!   key, so a copy of it (a backup, a leak) lets no one in.
//!
//! [`Keys`] is the live table every request consults. It follows the file without a restart
//! ([`Keys::watch`]: polled each second, read once it looks the same twice in a row, and on
//! SIGHUP), so a key added or struck out takes effect within about two seconds, and an edit
//! that does not load leaves the last good table in force, with a warning. A presented key is hashed and compared with every stored hash in
//! constant time, so how long a lookup takes tells nothing about which keys exist.
//!
//! The sandbox knows nothing of projects: a code-interpreter session's key there is made by
//! [`Project::session_key`], which keeps the sessions of different projects apart.

pub mod admit;
pub mod file;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sha2::{Digest as _, Sha256};

pub use admit::{Admissions, Admitted};
pub use file::add_key;

/// The project of `OASIS_API_KEYS` keys, and of every request when no key is configured.
pub const DEFAULT_PROJECT: &str = "default";

/// How often [`Keys::watch`] looks at the keys file.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Per-project limits (each optional: `None` = unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_concurrent_runs: Option<u64>,
    pub max_live_sessions: Option<u64>,
    pub max_storage_bytes: Option<u64>,
}

/// A project: who owns objects. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// A [valid](valid_project_id) id, which objects are stored under.
    pub id: Arc<str>,
    /// A name for people (the id when the keys file gives none).
    pub name: String,
    pub limits: Limits,
}

impl Project {
    /// The project of `OASIS_API_KEYS` keys and of every request when no keys are set; no
    /// limits.
    pub fn default_project() -> Project {
        Project {
            id: Arc::from(DEFAULT_PROJECT),
            name: DEFAULT_PROJECT.to_string(),
            limits: Limits::default(),
        }
    }

    /// A project the keys no longer list (a run's, say, whose project was since struck out
    /// of the keys file): its id, no limits.
    pub fn unlisted(id: &str) -> Project {
        Project {
            id: Arc::from(id),
            name: id.to_string(),
            limits: Limits::default(),
        }
    }

    pub fn is_default(&self) -> bool {
        &*self.id == DEFAULT_PROJECT
    }

    /// The sandbox's key for this project's code-interpreter session `id` (a folder name):
    /// `id` itself for the default project (so existing single-project data keeps working),
    /// `"{project}.{id}"` otherwise. Project ids never contain '.', and session ids never do
    /// (they are `[A-Za-z0-9_-]`), so keys of different projects never collide.
    pub fn session_key(&self, id: &str) -> String {
        if self.is_default() {
            id.to_string()
        } else {
            format!("{}.{id}", self.id)
        }
    }

    /// Whether sandbox key `key` belongs to this project: for the default project, keys
    /// without '.'; for another, `"{project}."` and a session id without '.'.
    pub fn owns_session_key(&self, key: &str) -> bool {
        if self.is_default() {
            return !key.contains('.');
        }
        key.strip_prefix(&*self.id)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|id| !id.is_empty() && !id.contains('.'))
    }

    /// Whether `bytes` more stay within the project's storage limit when its Files take `used`
    /// bytes (a refusal is counted in the metrics).
    pub fn storage_fits(&self, used: i64, bytes: u64) -> bool {
        let Some(max) = self.limits.max_storage_bytes else {
            return true;
        };
        let fits = (used.max(0) as u64).saturating_add(bytes) <= max;
        if !fits {
            crate::metrics::limit_refused("storage");
        }
        fits
    }

    /// With the sandbox's `live` session keys (all projects'), whether this project may not
    /// bring session `key` to life: `Some(max_live_sessions)` when `key` is not live already
    /// and the project has that many live sessions; `None` when it may (or has no limit).
    pub fn sessions_full(&self, live: &[String], key: &str) -> Option<u64> {
        let max = self.limits.max_live_sessions?;
        if live.iter().any(|k| k == key) {
            return None;
        }
        let mine = live.iter().filter(|k| self.owns_session_key(k)).count();
        (mine as u64 >= max).then_some(max)
    }
}

/// Valid project id: 1..=64 chars of `[A-Za-z0-9_-]`.
pub fn valid_project_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A key's SHA-256, the only form in which keys are kept.
type KeyHash = [u8; 32];

fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// 1 when `a == b`, 0 otherwise, after looking at every byte of both and without a branch on
/// their contents.
fn ct_eq(a: &KeyHash, b: &KeyHash) -> usize {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // 0 - 1 borrows into the high byte; 1..=255 - 1 does not.
    ((u16::from(std::hint::black_box(diff)).wrapping_sub(1) >> 8) & 1) as usize
}

/// One loaded state of the keys: the projects and the hash of every accepted key.
#[derive(Debug)]
struct Table {
    /// Every project known, the default project first.
    projects: Vec<Project>,
    /// Each accepted key's hash and its project's index in `projects`; no hash twice.
    keys: Vec<(KeyHash, usize)>,
}

impl Table {
    /// The table of `OASIS_API_KEYS`'s hashes (`plain`) and of the keys file's projects;
    /// `file` names the keys file in errors.
    fn build(
        plain: &[KeyHash],
        projects: Vec<file::FileProject>,
        file: &Path,
    ) -> anyhow::Result<Table> {
        let mut table = Table {
            projects: vec![Project::default_project()],
            keys: plain.iter().map(|h| (*h, 0)).collect(),
        };
        for fp in projects {
            let index = if fp.project.is_default() {
                table.projects[0] = fp.project;
                0
            } else {
                table.projects.push(fp.project);
                table.projects.len() - 1
            };
            for hash in fp.hashes {
                // The file itself has no hash in two projects (file::parse checks), so a
                // clash here is with OASIS_API_KEYS.
                match table.keys.iter().find(|(h, _)| *h == hash) {
                    Some((_, 0)) if index == 0 => {}
                    Some(_) => anyhow::bail!(
                        "keys file {}: project `{}` lists a key of OASIS_API_KEYS, which belongs \
                         to the default project (a key belongs to one project)",
                        file.display(),
                        table.projects[index].id
                    ),
                    None => table.keys.push((hash, index)),
                }
            }
        }
        Ok(table)
    }

    /// The project of the key hashed to `hash`: compared with every entry, in constant time.
    fn lookup(&self, hash: &KeyHash) -> Option<&Project> {
        // The matching entry's index + 1, or 0; every entry is compared and folded in the same
        // way whether it matches or not.
        let mut hit = 0usize;
        for (stored, index) in &self.keys {
            let mask = ct_eq(stored, hash).wrapping_neg();
            hit |= mask & (index + 1);
        }
        hit.checked_sub(1).map(|i| &self.projects[i])
    }
}

/// The live key table: which project a bearer key belongs to. Cheap to clone (an `Arc`
/// inside), shared by every request; reloaded from the keys file without a restart.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    /// No key configured at all.
    open: bool,
    /// The hashes of `OASIS_API_KEYS`'s keys (the keys themselves are not kept).
    plain: Vec<KeyHash>,
    file: Option<PathBuf>,
    table: RwLock<Arc<Table>>,
    generation: AtomicU64,
    /// What the file was like when last read. Its lock also makes loads one at a time.
    seen: Mutex<Seen>,
    /// Sessions being brought to life under their project's `max_live_sessions`.
    admissions: Admissions,
}

/// The keys file as last read: its metadata, and the SHA-256 of the text last loaded.
#[derive(Default)]
struct Seen {
    stamp: Option<Stamp>,
    loaded: Option<KeyHash>,
    /// A new look of the file seen once by the watcher, which reads it only if the next look
    /// is the same: a file edited in place (emptied, then written) is not read half written.
    settling: Option<Stamp>,
}

/// What a cheap look at the file (one `stat`) tells: a change of any of these may be a new
/// text. Replacing the file by a rename (as `oasis keys add` and most editors do) changes the
/// inode even within one mtime tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl std::fmt::Debug for Keys {
    /// Counts only: never a key or a hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table();
        f.debug_struct("Keys")
            .field("open", &self.inner.open)
            .field("file", &self.inner.file)
            .field("projects", &table.projects.len())
            .field("keys", &table.keys.len())
            .field("generation", &self.generation())
            .finish()
    }
}

impl Keys {
    /// `api_keys`: plain keys of the default project (`OASIS_API_KEYS`; empty ones are
    /// ignored). `file`: the keys file (`OASIS_KEYS_FILE`). Errors if the file is unreadable
    /// or invalid at start.
    pub fn new(api_keys: Option<Vec<String>>, file: Option<PathBuf>) -> anyhow::Result<Keys> {
        let open = api_keys.is_none() && file.is_none();
        let plain: Vec<KeyHash> = api_keys
            .unwrap_or_default()
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(hash_key)
            .collect();
        let keys = Keys {
            inner: Arc::new(Inner {
                open,
                plain,
                file,
                table: RwLock::new(Arc::new(Table {
                    projects: vec![],
                    keys: vec![],
                })),
                generation: AtomicU64::new(0),
                seen: Mutex::new(Seen::default()),
                admissions: Admissions::default(),
            }),
        };
        let mut seen = keys.inner.seen.lock().expect("keys file state lock");
        match &keys.inner.file {
            None => keys.install(Table::build(&keys.inner.plain, vec![], Path::new(""))?),
            Some(path) => {
                let stamp = Stamp::of(path);
                let text = file::read(path)
                    .context("create it with `oasis keys add`, or unset OASIS_KEYS_FILE")?;
                keys.load(&mut seen, stamp, &text)?;
            }
        }
        drop(seen);
        Ok(keys)
    }

    /// No key configured at all (no `OASIS_API_KEYS` and no keys file): every request is the
    /// default project, unchecked.
    pub fn is_open(&self) -> bool {
        self.inner.open
    }

    /// The project a presented key belongs to, if any. The key's SHA-256 is compared with
    /// every stored hash (`OASIS_API_KEYS`'s too) in constant time: no early exit on a match,
    /// no map keyed by the secret.
    pub fn project_of(&self, key: &str) -> Option<Project> {
        if key.is_empty() {
            return None;
        }
        self.table().lookup(&hash_key(key)).cloned()
    }

    /// A project by id (for the run workers, which know only a run's project id): the keys
    /// file's, or the default project; `None` if unknown (say, a project since removed from
    /// the file).
    pub fn project(&self, id: &str) -> Option<Project> {
        self.table().projects.iter().find(|p| &*p.id == id).cloned()
    }

    /// Re-read the keys file now (a no-op without one). On error the old table stays, a
    /// warning is logged and the error returned.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(path) = &self.inner.file else {
            return Ok(());
        };
        let mut seen = self.inner.seen.lock().expect("keys file state lock");
        let stamp = Stamp::of(path);
        // Whatever comes of it, this state of the file has been seen: the watcher does not
        // retry (and warn about) a broken file every second, only once it changes again.
        seen.stamp = stamp;
        let result = file::read(path).and_then(|text| self.load(&mut seen, stamp, &text));
        if let Err(e) = &result {
            warn_not_loaded(path, e);
        }
        result
    }

    /// Spawn a task that re-reads the keys file when it changes (a `stat` each second, then
    /// the text's SHA-256 when the metadata moved) and on SIGHUP. A no-op task without a
    /// file. The task ends once every clone of these keys is dropped. Call it inside a tokio
    /// runtime.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let has_file = self.inner.file.is_some();
        tokio::spawn(async move {
            if has_file {
                watch_file(weak).await;
            }
        })
    }

    /// Where this process admits sessions under their project's `max_live_sessions` (shared
    /// by the API and the run workers).
    pub fn admissions(&self) -> &Admissions {
        &self.inner.admissions
    }

    /// How many times the table was (re)loaded successfully.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    fn table(&self) -> Arc<Table> {
        self.inner.table.read().expect("keys table lock").clone()
    }

    /// Parse `text` (the file's, `stamp` before it was read) and put it in force.
    fn load(&self, seen: &mut Seen, stamp: Option<Stamp>, text: &str) -> anyhow::Result<()> {
        let path = self.inner.file.as_deref().expect("a keys file");
        let table = Table::build(&self.inner.plain, file::parse(path, text)?, path)?;
        tracing::info!(
            file = %path.display(),
            projects = table.projects.len(),
            keys = table.keys.len(),
            "keys file loaded"
        );
        self.install(table);
        *seen = Seen {
            stamp,
            loaded: Some(hash_key(text)),
            settling: None,
        };
        Ok(())
    }

    fn install(&self, table: Table) {
        *self.inner.table.write().expect("keys table lock") = Arc::new(table);
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The watcher's look at the file: load it if it changed since last read.
    fn poll(&self) {
        let Some(path) = &self.inner.file else {
            return;
        };
        let mut seen = self.inner.seen.lock().expect("keys file state lock");
        let stamp = Stamp::of(path);
        if stamp == seen.stamp {
            return;
        }
        if seen.settling != stamp || stamp.is_none() {
            seen.settling = stamp;
            return;
        }
        seen.stamp = stamp;
        let result = file::read(path).and_then(|text| {
            // A touch, or a rewrite with the same text: nothing to do.
            if seen.loaded == Some(hash_key(&text)) {
                return Ok(());
            }
            self.load(&mut seen, stamp, &text)
        });
        if let Err(e) = &result {
            warn_not_loaded(path, e);
        }
    }
}

fn warn_not_loaded(path: &Path, e: &anyhow::Error) {
    tracing::warn!(
        file = %path.display(),
        "keys file not loaded, the previous keys stay in force: {e:#}"
    );
}

/// [`Keys::watch`]'s loop: a look each [`POLL_INTERVAL`], a forced reload on SIGHUP, until
/// the keys are dropped.
async fn watch_file(weak: Weak<Inner>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP; the keys file is still polled: {e}");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let keys = Keys { inner };
        // File reads and hashing are blocking work, off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            if forced {
                tracing::info!("SIGHUP: reloading the keys file");
                let _ = keys.reload();
            } else {
                keys.poll();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
