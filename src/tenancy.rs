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
mod tests {
    use super::*;

    fn project(id: &str) -> Project {
        Project {
            id: Arc::from(id),
            name: id.to_string(),
            limits: Limits::default(),
        }
    }

    fn hash_line(key: &str) -> String {
        format!("\"sha256:{}\"", hex::encode(hash_key(key)))
    }

    /// A keys file in a fresh temporary folder (kept alive by the returned guard).
    fn keys_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn two_projects() -> String {
        format!(
            "[[projects]]\nid = \"team-a\"\nname = \"Team A\"\nkeys = [{}]\nmax_concurrent_runs = 4\n\n\
             [[projects]]\nid = \"team-b\"\nkeys = [{}, {}]\n",
            hash_line("sk-a"),
            hash_line("sk-b1"),
            hash_line("sk-b2")
                .to_uppercase()
                .replace("SHA256:", "sha256:"),
        )
    }

    #[test]
    fn the_default_project_owns_session_keys_without_a_dot_and_others_their_prefix() {
        let default = Project::default_project();
        assert!(default.is_default());
        assert_eq!(default.session_key("thread_abc"), "thread_abc");
        assert!(default.owns_session_key("thread_abc"));
        assert!(!default.owns_session_key("a.thread_abc"));

        let a = project("a");
        assert!(!a.is_default());
        assert_eq!(a.session_key("thread_abc"), "a.thread_abc");
        assert!(a.owns_session_key("a.thread_abc"));
        assert!(!a.owns_session_key("thread_abc"));
        assert!(!a.owns_session_key("a."));
        assert!(!a.owns_session_key("ab.thread_abc"));
        // A session id with a dot cannot pass as another project's key.
        assert!(!a.owns_session_key("a.b.c"));
        assert!(!project("a-b").owns_session_key("a.thread"));
        assert!(!project("a").owns_session_key("a-b.thread"));
        // Keys made for different projects never collide, nor with the default's.
        let made: Vec<String> = ["a", "ab", "a-b", "b"]
            .iter()
            .flat_map(|p| ["x", "b", "a_x"].map(|s| project(p).session_key(s)))
            .chain(["x", "b", "a_x"].map(|s| default.session_key(s)))
            .collect();
        let unique: std::collections::HashSet<_> = made.iter().collect();
        assert_eq!(unique.len(), made.len());
        for key in &made {
            let owners = ["a", "ab", "a-b", "b"]
                .iter()
                .map(|p| project(p))
                .chain([Project::default_project()])
                .filter(|p| p.owns_session_key(key))
                .count();
            assert_eq!(owners, 1, "{key}");
        }
    }

    #[test]
    fn a_project_is_full_when_it_has_its_most_live_sessions_and_the_key_is_not_one() {
        let live: Vec<String> = ["a.1", "a.2", "b.1", "3", "ab.4"]
            .map(String::from)
            .to_vec();
        let mut a = project("a");
        assert_eq!(a.sessions_full(&live, "a.9"), None, "no limit");
        a.limits.max_live_sessions = Some(2);
        assert_eq!(a.sessions_full(&live, "a.9"), Some(2));
        assert_eq!(a.sessions_full(&live, "a.1"), None, "already live");
        a.limits.max_live_sessions = Some(3);
        assert_eq!(a.sessions_full(&live, "a.9"), None);
        let mut d = Project::default_project();
        d.limits.max_live_sessions = Some(1);
        assert_eq!(d.sessions_full(&live, "9"), Some(1));
        d.limits.max_live_sessions = Some(2);
        assert_eq!(d.sessions_full(&live, "9"), None);
        let gone = Project::unlisted("gone");
        assert_eq!((&*gone.id, gone.limits), ("gone", Limits::default()));
    }

    #[test]
    fn project_ids_are_1_to_64_letters_digits_underscores_or_dashes() {
        assert!(valid_project_id("a"));
        assert!(valid_project_id("Team_A-2"));
        assert!(valid_project_id(&"x".repeat(64)));
        assert!(!valid_project_id(""));
        assert!(!valid_project_id(&"x".repeat(65)));
        assert!(!valid_project_id("a.b"));
        assert!(!valid_project_id("a b"));
        assert!(!valid_project_id("a/b"));
        assert!(!valid_project_id("é"));
    }

    #[test]
    fn constant_time_equality_is_one_only_for_equal_hashes() {
        let a = hash_key("x");
        let mut b = a;
        assert_eq!(ct_eq(&a, &b), 1);
        for i in [0, 17, 31] {
            for bit in [1u8, 0x80] {
                b = a;
                b[i] ^= bit;
                assert_eq!(ct_eq(&a, &b), 0);
            }
        }
    }

    #[test]
    fn without_keys_or_file_the_server_is_open() {
        let keys = Keys::new(None, None).unwrap();
        assert!(keys.is_open());
        assert_eq!(keys.project_of("anything"), None);
        assert_eq!(keys.project("default"), Some(Project::default_project()));
        // Set but empty keys are not "no keys": nothing is let in unchecked.
        assert!(!Keys::new(Some(vec![" ".into()]), None).unwrap().is_open());
    }

    #[test]
    fn plain_keys_belong_to_the_default_project_and_wrong_keys_to_none() {
        let keys = Keys::new(Some(vec!["sk-1".into(), " sk-2 ".into(), "".into()]), None).unwrap();
        assert!(!keys.is_open());
        assert_eq!(keys.project_of("sk-1"), Some(Project::default_project()));
        assert_eq!(keys.project_of("sk-2"), Some(Project::default_project()));
        for wrong in ["", "sk-3", "sk-1 ", "SK-1", "sk-"] {
            assert_eq!(keys.project_of(wrong), None, "{wrong:?}");
        }
        assert_eq!(keys.project("team-a"), None);
    }

    #[test]
    fn hashed_keys_of_the_file_find_their_project_and_plain_keys_still_work() {
        let (_dir, path) = keys_file(&two_projects());
        let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path)).unwrap();
        assert!(!keys.is_open());
        assert_eq!(keys.generation(), 1);
        let a = keys.project_of("sk-a").unwrap();
        assert_eq!(&*a.id, "team-a");
        assert_eq!(a.name, "Team A");
        assert_eq!(a.limits.max_concurrent_runs, Some(4));
        assert_eq!(a.limits.max_live_sessions, None);
        assert_eq!(&*keys.project_of("sk-b1").unwrap().id, "team-b");
        // Stored in upper case, found all the same.
        assert_eq!(&*keys.project_of("sk-b2").unwrap().id, "team-b");
        assert_eq!(keys.project_of("team-b").map(|p| p.name), None);
        assert_eq!(keys.project("team-b").unwrap().name, "team-b");
        assert_eq!(
            keys.project_of("sk-plain"),
            Some(Project::default_project())
        );
        assert_eq!(keys.project_of("sk-c"), None);
        assert_eq!(keys.project_of(""), None);
        assert_eq!(keys.project("default"), Some(Project::default_project()));
        assert_eq!(keys.project("team-c"), None);
    }

    #[test]
    fn the_file_may_give_the_default_project_keys_and_limits() {
        let (_dir, path) = keys_file(&format!(
            "[[projects]]\nid = \"default\"\nkeys = [{}, {}]\nmax_live_sessions = 2\n",
            hash_line("sk-d"),
            hash_line("sk-plain"),
        ));
        let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path)).unwrap();
        let d = keys.project_of("sk-d").unwrap();
        assert!(d.is_default());
        assert_eq!(d.limits.max_live_sessions, Some(2));
        assert_eq!(keys.project_of("sk-plain"), Some(d.clone()));
        assert_eq!(keys.project("default"), Some(d));
    }

    #[test]
    fn a_plain_key_listed_under_another_project_is_refused() {
        let (_dir, path) = keys_file(&format!(
            "[[projects]]\nid = \"team-a\"\nkeys = [{}]\n",
            hash_line("sk-plain")
        ));
        let e = Keys::new(Some(vec!["sk-plain".into()]), Some(path.clone())).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("team-a") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains("sk-plain") && !msg.contains(&hex::encode(hash_key("sk-plain"))));
    }

    #[test]
    fn an_empty_file_lets_only_the_plain_keys_in() {
        let (_dir, path) = keys_file("# nothing yet\n");
        let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path.clone())).unwrap();
        assert!(keys.project_of("sk-plain").is_some());
        let keys = Keys::new(None, Some(path)).unwrap();
        assert!(!keys.is_open());
        assert_eq!(keys.project_of("sk-plain"), None);
    }

    #[test]
    fn a_missing_or_invalid_file_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = Keys::new(None, Some(missing.clone())).unwrap_err();
        assert!(
            format!("{e:#}").contains(&missing.display().to_string()),
            "{e:#}"
        );
        let (_dir, path) = keys_file("[[projects]]\nid = \"a.b\"\n");
        assert!(Keys::new(None, Some(path)).is_err());
    }

    #[test]
    fn debug_shows_counts_but_no_key_or_hash() {
        let (_dir, path) = keys_file(&two_projects());
        let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path)).unwrap();
        let shown = format!("{keys:?} {keys:#?}");
        assert!(shown.contains("keys: 4"), "{shown}");
        for secret in ["sk-plain", "sk-a", "sk-b1"] {
            assert!(!shown.contains(secret), "{shown}");
            let h = hex::encode(hash_key(secret));
            assert!(!shown.contains(&h) && !shown.contains(&h[..8]), "{shown}");
        }
    }

    #[test]
    fn reload_picks_up_a_changed_file_and_keeps_the_old_table_on_a_broken_one() {
        let (_dir, path) = keys_file(&two_projects());
        let keys = Keys::new(None, Some(path.clone())).unwrap();
        assert!(keys.project_of("sk-a").is_some());
        assert!(keys.project_of("sk-new").is_none());

        std::fs::write(
            &path,
            format!(
                "[[projects]]\nid = \"team-c\"\nkeys = [{}]\n",
                hash_line("sk-new")
            ),
        )
        .unwrap();
        keys.reload().unwrap();
        assert_eq!(keys.generation(), 2);
        assert_eq!(&*keys.project_of("sk-new").unwrap().id, "team-c");
        // Struck out of the file: refused.
        assert_eq!(keys.project_of("sk-a"), None);
        assert_eq!(keys.project("team-a"), None);

        std::fs::write(
            &path,
            "[[projects]]\nid = \"team-c\"\nkeys = [\"sha256:00\"]\n",
        )
        .unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(keys.generation(), 2);
        assert_eq!(&*keys.project_of("sk-new").unwrap().id, "team-c");

        std::fs::remove_file(&path).unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(&*keys.project_of("sk-new").unwrap().id, "team-c");
    }

    #[test]
    fn polling_loads_a_changed_text_but_not_a_touched_one() {
        let (_dir, path) = keys_file(&two_projects());
        let keys = Keys::new(None, Some(path.clone())).unwrap();
        keys.poll();
        assert_eq!(keys.generation(), 1);
        // Same text, new inode: looked at, not loaded again.
        crate::disk::write_atomic(&path, two_projects().as_bytes()).unwrap();
        keys.poll();
        keys.poll();
        assert_eq!(keys.generation(), 1);
        // A new text is read once it looks the same twice in a row (not half written).
        crate::disk::write_atomic(&path, b"").unwrap();
        keys.poll();
        assert_eq!(keys.generation(), 1);
        keys.poll();
        assert_eq!(keys.generation(), 2);
        assert_eq!(keys.project_of("sk-a"), None);
    }

    /// Wait until `keys` were loaded more than `generation` times; false after 10 s.
    async fn reloaded(keys: &Keys, generation: u64) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while keys.generation() <= generation {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    #[tokio::test]
    async fn watch_picks_up_a_rewritten_file() {
        let (_dir, path) = keys_file(&two_projects());
        let keys = Keys::new(None, Some(path.clone())).unwrap();
        let watcher = keys.watch();
        let before = keys.generation();
        let key = add_key(&path, "team-new", None).unwrap();
        assert!(
            reloaded(&keys, before).await,
            "the rewritten file was not loaded"
        );
        assert_eq!(&*keys.project_of(&key).unwrap().id, "team-new");
        assert_eq!(&*keys.project_of("sk-a").unwrap().id, "team-a");
        watcher.abort();
    }

    #[tokio::test]
    async fn watch_reloads_on_sighup() {
        use tokio::signal::unix::{SignalKind, signal};
        let (_dir, path) = keys_file(&two_projects());
        let keys = Keys::new(None, Some(path)).unwrap();
        // Our own listener first: from here on SIGHUP no longer ends the test process.
        let _listening = signal(SignalKind::hangup()).unwrap();
        let watcher = keys.watch();
        let before = keys.generation();
        // The file is unchanged, so only SIGHUP reloads it. The watcher may not be listening
        // yet when the first signal comes, so send one until it answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while keys.generation() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "SIGHUP did not reload the keys"
            );
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watcher.abort();
    }

    #[tokio::test]
    async fn the_watcher_ends_when_the_keys_are_dropped() {
        let (_dir, path) = keys_file("");
        let keys = Keys::new(None, Some(path)).unwrap();
        let watcher = keys.watch();
        drop(keys);
        tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the watcher ended")
            .unwrap();
        let open = Keys::new(None, None).unwrap();
        tokio::time::timeout(Duration::from_secs(10), open.watch())
            .await
            .expect("without a file, the watcher ends at once")
            .unwrap();
    }
}
