//! Sessions by id: get-or-create, idle expiry, LRU eviction of interpreters, and a bounded pool
//! of threads that run guest code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

use super::interp::Interpreter;
use super::result::ExecResult;
use super::session::{ExecOptions, Session};
use super::{DEFAULT_IMAGE, Sandbox, SandboxError, SessionDirs};

/// Knobs of the session manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// An interpreter unused this long is dropped (files stay).
    pub idle_ttl: Duration,
    /// Most live interpreters; past it the least recently used idle one is dropped.
    pub max_live: usize,
    /// Most calls running guest code at once; others wait their turn.
    pub max_parallel: usize,
    /// Interpreters of the default image kept started (first turn done) for new sessions;
    /// 0 turns the warm pool off.
    pub warm_pool: usize,
    /// Bytes of linear memory all live interpreters may hold together; past it the least
    /// recently used idle ones are dropped (files kept). Busy ones are never dropped.
    pub max_live_memory: u64,
    /// Bytes of Files (images, changed and linked files) one session may add to the file
    /// store over its life; what is past it stays in `/mnt/data` only.
    pub max_export_bytes: u64,
    /// Interpreters dropped for idleness or room are hibernated first (their state written
    /// to the session's folder and resumed on the next call); off, they are discarded.
    pub hibernate: bool,
    /// Also write each session's state after every call (a crash then loses nothing that
    /// finished), keeping the interpreter live. Only with `hibernate`.
    pub hibernate_every_turn: bool,
    /// A session unused this long is deleted with its files and state.
    pub session_retention: Duration,
}

/// Half the machine's memory: the default budget for live interpreters (over all workers).
pub fn default_live_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(8 << 30, |kib| kib << 10);
    total / 2
}

/// What a new interpreter is counted at before its first call reports its size (the
/// pre-initialized image's memory is about 80 MiB).
const NEW_INTERPRETER_BYTES: u64 = 128 << 20;

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            idle_ttl: Duration::from_secs(60 * 60),
            max_live: 256,
            max_parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            warm_pool: 2,
            max_live_memory: default_live_memory(),
            max_export_bytes: 1 << 30,
            hibernate: true,
            hibernate_every_turn: true,
            session_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

mod lifecycle;

pub use lifecycle::SessionInfo;
pub(super) use lifecycle::info_on_disk;
use lifecycle::mark_used;

type Slot = Arc<tokio::sync::Mutex<Session>>;
/// A session taken (locked) to have its interpreter hibernated or dropped.
type Victim = tokio::sync::OwnedMutexGuard<Session>;

/// Folder under the root that holds the warm pool's folders (not a valid session id).
const WARM_DIR: &str = ".warm";

struct Entry {
    slot: Slot,
    last_used: Instant,
    /// Linear memory of its interpreter after its last call (0: none live).
    memory: u64,
}

/// Sessions keyed by id (a thread id, or one the caller picked), each with its own folder under
/// `<root>/<id>/` (`data/` is `/mnt/data`, `tmp/` is `/tmp`).
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    sandbox: Arc<Sandbox>,
    root: PathBuf,
    /// Under `root` (same file system: warm folders are renamed into place); this manager's own.
    warm_dir: PathBuf,
    config: ManagerConfig,
    sessions: Mutex<HashMap<String, Entry>>,
    pool: Arc<Semaphore>,
    warm: Mutex<Vec<Pooled>>,
    warm_seq: AtomicU64,
    refilling: AtomicBool,
    /// In a sandbox worker: (its index, how many there are). It owns the sessions whose ids
    /// shard to it, and sweeps only those for retention.
    shard: Option<(usize, usize)>,
}

/// A started interpreter waiting for a new session, on its own fresh folders.
struct Pooled {
    dir: PathBuf,
    interp: Interpreter,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("root", &self.inner.root)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Session ids become folder names: keep them boring.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What the sandbox keys a session by (its folder name): a session id, or `owner.id` where
/// `owner` (a project, see `tenancy`) is as boring as an id. Callers turn ids into keys;
/// users only ever name ids, which cannot hold the `.`.
pub fn valid_session_key(key: &str) -> bool {
    match key.split_once('.') {
        Some((owner, id)) => valid_session_id(owner) && valid_session_id(id),
        None => valid_session_id(key),
    }
}

impl SessionManager {
    pub fn new(sandbox: Arc<Sandbox>, root: impl Into<PathBuf>, config: ManagerConfig) -> Self {
        Self::with_warm_dir(sandbox, root, config, WARM_DIR, None)
    }

    /// The manager of sandbox worker `index` of `workers` sharing one root: its warm pool
    /// lives in `root/.warm-<index>`, and it sweeps only the sessions that shard to it.
    pub fn in_worker(
        sandbox: Arc<Sandbox>,
        root: impl Into<PathBuf>,
        config: ManagerConfig,
        index: usize,
        workers: usize,
    ) -> Self {
        let warm = format!("{WARM_DIR}-{index}");
        Self::with_warm_dir(sandbox, root, config, &warm, Some((index, workers.max(1))))
    }

    fn with_warm_dir(
        sandbox: Arc<Sandbox>,
        root: impl Into<PathBuf>,
        config: ManagerConfig,
        warm: &str,
        shard: Option<(usize, usize)>,
    ) -> Self {
        debug_assert!(!valid_session_key(warm));
        let pool = Arc::new(Semaphore::new(config.max_parallel.max(1)));
        let root: PathBuf = root.into();
        let warm_dir = root.join(warm);
        // Folders of a previous process's warm pool are no one's.
        let _ = std::fs::remove_dir_all(&warm_dir);
        SessionManager {
            inner: Arc::new(Inner {
                sandbox,
                root,
                warm_dir,
                config,
                sessions: Mutex::new(HashMap::new()),
                pool,
                warm: Mutex::new(Vec::new()),
                warm_seq: AtomicU64::new(0),
                refilling: AtomicBool::new(false),
                shard,
            }),
        }
    }

    /// The folder holding every session's folders.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.inner.sandbox
    }

    /// Host folder behind a session's `/mnt/data` (it may not exist yet).
    pub fn data_dir(&self, id: &str) -> Result<PathBuf, SandboxError> {
        session_data_dir(&self.inner.root, id)
    }

    /// Run `code` in session `id` (created on first use with `image`, default
    /// [`DEFAULT_IMAGE`]). Calls on one session run one at a time, in arrival order.
    pub async fn execute(
        &self,
        id: &str,
        image: Option<&str>,
        code: String,
        opts: ExecOptions,
    ) -> Result<ExecResult, SandboxError> {
        // Waiting for the session (a call before this one) or for a place in the pool can take
        // as long as the calls ahead; a cancel meanwhile ends this call before it starts.
        let wait = async {
            let slot = self.slot(id, image).await?;
            let session = slot.clone().lock_owned().await;
            if let Some(wanted) = image
                && wanted != session.image_name()
            {
                return Err(SandboxError::ImageMismatch {
                    id: id.to_string(),
                    has: session.image_name().to_string(),
                    wanted: wanted.to_string(),
                });
            }
            let permit = self
                .inner
                .pool
                .clone()
                .acquire_owned()
                .await
                .context("the sandbox pool is closed")?;
            Ok((session, permit))
        };
        let waiting = Instant::now();
        let (mut session, permit) = match opts.cancel.clone() {
            Some(flag) => tokio::select! {
                biased;
                _ = flag.cancelled() => return Ok(ExecResult::cancelled_before_start()),
                r = wait => r?,
            },
            None => wait.await?,
        };
        crate::metrics::sandbox_wait(waiting.elapsed().as_secs_f64());
        self.touch(id, None);
        if !session.is_live() {
            let victims = self.make_room(id, NEW_INTERPRETER_BYTES);
            self.retire(victims).await;
            if !session.is_hibernated() {
                self.adopt_warm(id, &mut session);
            }
        }
        let handle = tokio::runtime::Handle::current();
        // Off, hibernation writes nothing at all (every turn included).
        let every_turn = self.inner.config.hibernate && self.inner.config.hibernate_every_turn;
        let (res, memory) = tokio::task::spawn_blocking(move || {
            let r = handle.block_on(session.exec(&code, &opts));
            if every_turn
                && r.is_ok()
                && let Err(e) = handle.block_on(session.hibernate(true))
            {
                tracing::warn!(session = %session.id, error = %e, "could not hibernate after a call");
            }
            mark_used(&session.state_path());
            let memory = session.memory_bytes();
            drop(session);
            drop(permit);
            (r, memory)
        })
        .await
        .context("the sandbox worker panicked")?;
        self.touch(id, Some(memory));
        // The call may have grown its interpreter: keep the live ones within the budget.
        let victims = self.make_room(id, 0);
        self.retire(victims).await;
        // Top the pool up after the call, so refilling does not compete with it.
        self.refill_warm();
        res
    }

    /// Hand a warm interpreter to a session that has none. The warm interpreter's folders are
    /// renamed into place as the session's (its mounts hold the folders open, so they follow);
    /// files the session already had are moved into the warm `data/` first. `/tmp` starts
    /// empty, as with any new interpreter.
    fn adopt_warm(&self, id: &str, session: &mut Session) {
        if session.image_name() != DEFAULT_IMAGE {
            return;
        }
        let Some(p) = self.inner.warm.lock().expect("warm lock").pop() else {
            return;
        };
        let target = self.inner.root.join(id);
        if target.exists() && !move_entries(&target.join("data"), &p.dir.join("data")) {
            let _ = std::fs::remove_dir_all(&p.dir);
            return;
        }
        let _ = std::fs::remove_dir_all(&target);
        if std::fs::rename(&p.dir, &target).is_ok() {
            session.adopt(
                p.interp,
                SessionDirs {
                    data: target.join("data"),
                    tmp: target.join("tmp"),
                },
            );
        } else {
            let _ = std::fs::remove_dir_all(&p.dir);
        }
    }

    /// Top the warm pool up in the background (one refill task at a time).
    pub fn refill_warm(&self) {
        let want = self.inner.config.warm_pool;
        if want == 0 || self.inner.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            while this.inner.warm.lock().expect("warm lock").len() < want {
                let Ok(permit) = this.inner.pool.clone().acquire_owned().await else {
                    break;
                };
                let m = this.clone();
                let handle = tokio::runtime::Handle::current();
                let made = tokio::task::spawn_blocking(move || {
                    let r = handle.block_on(m.start_warm());
                    drop(permit);
                    r
                })
                .await;
                match made {
                    Ok(Ok(p)) => this.inner.warm.lock().expect("warm lock").push(p),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "could not start a warm interpreter");
                        break;
                    }
                    Err(_) => break,
                }
            }
            this.inner.refilling.store(false, Ordering::Release);
        });
    }

    async fn start_warm(&self) -> anyhow::Result<Pooled> {
        let image = self.inner.sandbox.image(DEFAULT_IMAGE)?;
        let n = self.inner.warm_seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.warm_dir.join(n.to_string());
        let dirs = SessionDirs {
            data: dir.join("data"),
            tmp: dir.join("tmp"),
        };
        let limits = image.image.limits();
        let mut interp = Interpreter::start(&image, &dirs, limits.memory_bytes).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        interp.install(deadline).await.map_err(|(end, err)| {
            anyhow::anyhow!(
                "first turn failed: {end:?}: {}",
                String::from_utf8_lossy(&err)
            )
        })?;
        Ok(Pooled { dir, interp })
    }

    /// Warm interpreters ready right now.
    pub fn warm_count(&self) -> usize {
        self.inner.warm.lock().expect("warm lock").len()
    }

    async fn slot(&self, id: &str, image: Option<&str>) -> Result<Slot, SandboxError> {
        if !valid_session_key(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        if let Some(e) = self.inner.sessions.lock().expect("sessions lock").get(id) {
            return Ok(e.slot.clone());
        }
        let name = image.unwrap_or(DEFAULT_IMAGE).to_string();
        let sandbox = self.inner.sandbox.clone();
        let loaded = tokio::task::spawn_blocking(move || sandbox.image(&name))
            .await
            .context("loading the image panicked")??;
        let dir = self.inner.root.join(id);
        let dirs = SessionDirs {
            data: dir.join("data"),
            tmp: dir.join("tmp"),
        };
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let entry = sessions.entry(id.to_string()).or_insert_with(|| Entry {
            slot: Arc::new(tokio::sync::Mutex::new(Session::new(id, loaded, dirs))),
            last_used: Instant::now(),
            memory: 0,
        });
        Ok(entry.slot.clone())
    }

    /// Mark `id` used now, and record its interpreter's memory if known.
    fn touch(&self, id: &str, memory: Option<u64>) {
        if let Some(e) = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get_mut(id)
        {
            e.last_used = Instant::now();
            if let Some(m) = memory {
                e.memory = m;
            }
        }
    }

    /// Drop least recently used idle interpreters (other than `id`'s) until there is room for
    /// `extra` more bytes within the memory budget, and, if `extra` is a new interpreter, for one
    /// more within `max_live`. Busy sessions are never dropped.
    fn make_room(&self, id: &str, extra: u64) -> Vec<Victim> {
        let mut victims = vec![];
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let (mut count, mut memory) = (usize::from(extra > 0), extra);
        let mut idle: Vec<(Instant, String)> = vec![];
        for (sid, e) in sessions.iter() {
            if sid == id {
                memory += e.memory;
                continue;
            }
            match e.slot.try_lock() {
                Ok(s) if s.is_live() => {
                    idle.push((e.last_used, sid.clone()));
                    count += 1;
                    memory += e.memory;
                }
                Ok(_) => {}
                // Busy sessions are live and cannot be evicted.
                Err(_) => {
                    count += 1;
                    memory += e.memory;
                }
            }
        }
        let max_live = self.inner.config.max_live.max(1);
        let budget = self.inner.config.max_live_memory;
        idle.sort();
        for (_, sid) in idle {
            if count <= max_live && memory <= budget {
                break;
            }
            let Some(e) = sessions.get_mut(&sid) else {
                continue;
            };
            if let Ok(s) = e.slot.clone().try_lock_owned() {
                tracing::debug!(session = %sid, "evicting least recently used interpreter");
                victims.push(s);
                count -= 1;
                memory = memory.saturating_sub(e.memory);
                e.memory = 0;
            }
        }
        victims
    }

    /// Linear memory held by live interpreters, as of their last calls.
    pub fn live_memory(&self) -> u64 {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .map(|e| e.memory)
            .sum()
    }

    /// Number of live interpreters (sessions busy right now count as live).
    pub fn live_count(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|e| e.slot.try_lock().map(|s| s.is_live()).unwrap_or(true))
            .count()
    }

    /// Files in a session's `/mnt/data` (relative path, size), links not followed.
    pub fn list_files(&self, id: &str) -> Result<Vec<(String, u64)>, SandboxError> {
        let dir = self.data_dir(id)?;
        Ok(list_regular_files(&dir))
    }

    /// Read `rel` (a path inside the session's `/mnt/data`), at most `max` bytes. Resolution
    /// stays inside the folder whatever links the guest made, even if it swaps folders for
    /// links while we read (cap-std), and only a regular file is read.
    pub fn read_file(&self, id: &str, rel: &str, max: u64) -> std::io::Result<Vec<u8>> {
        let dir = self.data_dir(id).map_err(std::io::Error::other)?;
        read_inside(&dir, rel, max)
    }

    /// End a session: drop its interpreter and delete its folders. Waits for a running call;
    /// calls that arrive meanwhile queue behind the delete (the session's lock is fair) and then
    /// start over on a new interpreter and empty folders. Calls never overlap, and a session is
    /// either gone or whole.
    pub async fn remove(&self, id: &str) -> Result<bool, SandboxError> {
        self.remove_unless(id, || false).await
    }

    /// [`Self::remove`], unless `keep` (asked once the session is held, so no call runs)
    /// says to keep it; then `Ok(false)`.
    async fn remove_unless(&self, id: &str, keep: impl Fn() -> bool) -> Result<bool, SandboxError> {
        if !valid_session_key(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        let slot = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .map(|e| e.slot.clone());
        let Some(slot) = slot else {
            if keep() {
                return Ok(false);
            }
            return remove_session_dirs(&self.inner.root, id);
        };
        let mut session = slot.lock().await;
        if keep() {
            return Ok(false);
        }
        session.evict();
        let existed = remove_session_dirs(&self.inner.root, id);
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        if let Some(e) = sessions.get_mut(id)
            && Arc::ptr_eq(&e.slot, &slot)
        {
            e.memory = 0;
            // Only the map and this call hold the slot: no call waits for it.
            if Arc::strong_count(&slot) == 2 {
                sessions.remove(id);
            }
        }
        drop(session);
        existed.map(|_| true)
    }
}

/// Charge `bytes` about to become Files to session `id`'s export ledger under `root` (kept
/// beside the session folders, removed with them); `false` if that would pass `limit`.
/// Callers in one process are serialized; only the server process exports.
pub(super) fn charge_export(
    root: &Path,
    id: &str,
    bytes: u64,
    limit: u64,
) -> std::io::Result<bool> {
    static LEDGER: Mutex<()> = Mutex::new(());
    if !valid_session_key(id) {
        return Err(std::io::Error::other(format!("invalid session id {id:?}")));
    }
    let _held = LEDGER.lock().expect("ledger lock");
    let dir = root.join(EXPORT_DIR);
    let path = dir.join(id);
    let used: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let Some(total) = used.checked_add(bytes).filter(|t| *t <= limit) else {
        return Ok(false);
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = tempfile::NamedTempFile::new_in(&dir)?;
    std::fs::write(tmp.path(), total.to_string())?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(true)
}

/// Folder under the root with each session's export ledger (not a valid session id).
const EXPORT_DIR: &str = ".exported";

/// Host folder behind session `id`'s `/mnt/data` under `root` (it may not exist yet).
pub(super) fn session_data_dir(root: &Path, id: &str) -> Result<PathBuf, SandboxError> {
    if !valid_session_key(id) {
        return Err(SandboxError::InvalidSessionId(id.to_string()));
    }
    Ok(root.join(id).join("data"))
}

/// Delete session `id`'s folders under `root`; whether there were any.
pub(super) fn remove_session_dirs(root: &Path, id: &str) -> Result<bool, SandboxError> {
    if !valid_session_key(id) {
        return Err(SandboxError::InvalidSessionId(id.to_string()));
    }
    let dir = root.join(id);
    let existed = dir.exists();
    if existed {
        std::fs::remove_dir_all(&dir).with_context(|| format!("deleting {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(root.join(EXPORT_DIR).join(id));
    Ok(existed)
}

/// Put a copy of `src` into the folder `dir` as `name` (a plain file name). An existing entry
/// is kept unless `replace`; a link the guest left there is replaced, never followed. Returns
/// whether the file was copied.
pub(super) fn put_file_into(
    dir: &Path,
    name: &str,
    src: &Path,
    replace: bool,
) -> std::io::Result<bool> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(std::io::Error::other(format!(
            "not a plain file name: {name:?}"
        )));
    }
    std::fs::create_dir_all(dir)?;
    let dst = dir.join(name);
    if !replace && std::fs::symlink_metadata(&dst).is_ok() {
        return Ok(false);
    }
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::copy(src, tmp.path())?;
    // `persist` renames over whatever is there (a link is replaced, not followed).
    tmp.persist(&dst).map_err(|e| e.error)?;
    Ok(true)
}

pub(super) fn list_regular_files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = vec![];
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        if !entry.file_type().is_file() {
            continue;
        }
        if let (Ok(rel), Ok(md)) = (entry.path().strip_prefix(dir), entry.metadata()) {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, md.len()));
        }
    }
    out
}

/// Move every entry of `from` into the empty folder `to` (same file system: renames only). On
/// failure, what was moved goes back and `false` is returned.
fn move_entries(from: &Path, to: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(from) else {
        return !from.exists();
    };
    let mut moved = vec![];
    for entry in rd {
        let ok = entry.ok().and_then(|e| {
            let dst = to.join(e.file_name());
            std::fs::rename(e.path(), &dst)
                .ok()
                .map(|_| (e.path(), dst))
        });
        match ok {
            Some(pair) => moved.push(pair),
            None => {
                for (src, dst) in moved {
                    let _ = std::fs::rename(dst, src);
                }
                return false;
            }
        }
    }
    true
}

/// Read `rel` inside `dir` without ever leaving it (see [`SessionManager::read_file`]).
pub fn read_inside(dir: &Path, rel: &str, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let dir = cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority())?;
    let f = dir.open(rel)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = vec![];
    f.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_session_file_never_leaves_the_session_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("p")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", dir.path().join("rel")).unwrap();
        assert_eq!(read_inside(dir.path(), "ok.txt", 100).unwrap(), b"fine");
        for rel in ["d/passwd", "p", "rel", "../x", "/etc/passwd"] {
            assert!(
                read_inside(dir.path(), rel, 1 << 20).is_err(),
                "{rel} was read"
            );
        }
    }
}
