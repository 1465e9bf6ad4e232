//! [`Supervisor`]: the server's side of process isolation. Sandboxes run in `oasis
//! sandbox-worker` processes ([`super::worker`]), each with its own engine, sessions, warm pool
//! and reaper; a session lives in the worker its id hashes to ([`shard_of`]).
//!
//! The server talks to each worker over its stdin and stdout ([`super::wire`]); calls are
//! multiplexed (each carries a call number), output chunks stream back to the caller's tap, and
//! a set cancel flag becomes a cancel frame. Files stay plain file-system work on the shared
//! sessions root (`<root>/<id>/data`), done here.
//!
//! A worker that dies (crash, `kill -9`, a malformed frame, or silence past
//! [`HANG_LIMIT`]) takes only its own sessions down: their calls in flight end at once as
//! `crashed` with [`ExecResult::worker_lost`] set, and the worker is started again after a
//! backoff ([`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`] while it keeps dying young). Later calls
//! on its sessions resume their last hibernated state if they have one (it is on disk, in the
//! session's folder), or get fresh interpreters, over the same folders.
//!
//! At a graceful shutdown ([`Supervisor::shutdown`]) every worker hibernates its live
//! interpreters before it is stopped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::{mpsc, oneshot, watch};

use super::limits::MAX_CODE_BYTES;
use super::manager::{
    ManagerConfig, SessionInfo, info_on_disk, list_regular_files, read_inside, remove_session_dirs,
    session_data_dir, valid_session_key,
};
use super::result::{ExecResult, Outcome};
use super::session::ExecOptions;
use super::wasi::{OutputTap, StreamKind};
use super::wire::{self, Frame, Head};
use super::{DEFAULT_IMAGE, Image, Sandbox, SandboxError};

mod process;

use process::supervise;

/// First restart delay after a worker died; doubled while it keeps dying young.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A worker that lived this long before dying restarts after [`MIN_BACKOFF`] again.
const STEADY: Duration = Duration::from_secs(30);
/// How often a worker is pinged.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A worker silent this long (no frame at all, pings included) is killed.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);
/// How long a new worker may take to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(60);
/// How long a call waits for a dead worker's replacement before it ends `crashed`.
const RESTART_WAIT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for a worker to hibernate its interpreters beyond the time it
/// may wait for busy sessions, and then for the stopped workers to be reaped.
const HIBERNATE_GRACE: Duration = Duration::from_secs(20);
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Environment variables a worker keeps; everything else (API keys, the upstream's key) stays
/// in the server.
const WORKER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "OASIS_LOG",
    "OASIS_RUNTIME_DIR",
    "OASIS_IMAGES_DIR",
    "OASIS_WARM",
    "RUST_BACKTRACE",
];

/// The worker a session lives in: a stable hash (FNV-1a) of its id, modulo `workers`.
pub fn shard_of(id: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// How to run the workers.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The `oasis` executable, run as `oasis sandbox-worker`.
    pub exe: PathBuf,
    /// The sessions root the workers share with the server.
    pub root: PathBuf,
    /// The runtime and compiled-module cache.
    pub cache_dir: PathBuf,
    /// Number of worker processes.
    pub workers: usize,
    /// Session knobs for the whole server: each worker gets its share of `max_live` and
    /// `warm_pool` (rounded up) and of `max_live_memory`, and the full `max_parallel`,
    /// `idle_ttl`.
    pub sessions: ManagerConfig,
}

/// Runs sandboxes in supervised worker processes. Cheap to clone; the workers stop when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<SupervisorConfig>,
    shards: Vec<Arc<Shard>>,
    /// Loaded once in the server before any worker starts (compiling the image on first use),
    /// then dropped, so workers only ever load the cached module.
    sandbox: Mutex<Option<Arc<Sandbox>>>,
    started: AtomicBool,
    /// Sent to (or dropped with the supervisor): the monitors then stop their workers.
    stop: watch::Sender<()>,
    stop_rx: watch::Receiver<()>,
}

struct Shard {
    index: usize,
    state: watch::Sender<ShardState>,
}

#[derive(Clone)]
enum ShardState {
    /// Not started yet: the server is still preparing the image.
    Preparing,
    Up(Arc<Conn>),
    /// Dead, or failed to start; a restart is scheduled.
    Down(String),
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor; nothing runs until [`Supervisor::start`]. `sandbox` (if given) is the
    /// server's, used to prepare the default image before the workers start.
    pub fn new(config: SupervisorConfig, sandbox: Option<Arc<Sandbox>>) -> Supervisor {
        let workers = config.workers.max(1);
        let shards = (0..workers)
            .map(|index| {
                Arc::new(Shard {
                    index,
                    state: watch::Sender::new(ShardState::Preparing),
                })
            })
            .collect();
        let (stop, stop_rx) = watch::channel(());
        Supervisor {
            inner: Arc::new(Inner {
                config: Arc::new(SupervisorConfig { workers, ..config }),
                shards,
                sandbox: Mutex::new(sandbox),
                started: AtomicBool::new(false),
                stop,
                stop_rx,
            }),
        }
    }

    /// Prepare the default image in this process (compiling it on first use), then start the
    /// workers and keep them running. Idempotent; needs a tokio runtime.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let sandbox = self.inner.sandbox.lock().expect("sandbox lock").take();
        let config = self.inner.config.clone();
        let shards = self.inner.shards.clone();
        let stop = self.inner.stop_rx.clone();
        tokio::spawn(async move {
            if let Some(sb) = sandbox {
                let loaded =
                    tokio::task::spawn_blocking(move || sb.image(DEFAULT_IMAGE).map(drop)).await;
                match loaded {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "could not load the default image"),
                    Err(e) => tracing::error!(error = %e, "loading the default image panicked"),
                }
            }
            // Warm folders of earlier workers (maybe more of them than now) are no one's.
            if let Ok(rd) = std::fs::read_dir(&config.root) {
                for e in rd.flatten() {
                    if e.file_name().to_string_lossy().starts_with(".warm") {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            for shard in shards {
                tokio::spawn(supervise(config.clone(), shard, stop.clone()));
            }
        });
    }

    /// Run `code` in session `id`, in the worker that owns it (see [`super::SessionManager::execute`]).
    /// If the worker dies meanwhile, the result is `crashed` with `worker_lost` set.
    pub async fn execute(
        &self,
        id: &str,
        image: Option<&str>,
        code: String,
        opts: ExecOptions,
    ) -> Result<ExecResult, SandboxError> {
        let started = Instant::now();
        if !valid_session_key(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        if code.len() > MAX_CODE_BYTES {
            return Err(SandboxError::InvalidInput(format!(
                "code is {} bytes; the limit is {MAX_CODE_BYTES}",
                code.len()
            )));
        }
        let conn = match self.conn(self.shard(id)).await {
            Ok(c) => c,
            Err(why) => return Ok(lost(&why, started)),
        };
        // A worker streams and reports at most the call's output caps; past that its chunks are
        // dropped here and its result cut (the server does not take a worker's word for its
        // limits).
        let limits = match &opts.limits {
            Some(l) => Some(l.clone()),
            None => Image::load(image.unwrap_or(DEFAULT_IMAGE))
                .ok()
                .map(|i| i.limits()),
        };
        let tap = opts.tap.clone().map(|tap| {
            let budget = limits
                .as_ref()
                .map_or(0, |l| l.stdout_bytes.saturating_add(l.stderr_bytes));
            (tap, budget)
        });
        let (call, mut rx) = match conn.register(tap) {
            Ok(r) => r,
            Err(why) => return Ok(lost(&why, started)),
        };
        let _forget = Forget { conn: &conn, call };
        let request = Frame::with(
            Head::Exec {
                call,
                session: id.to_string(),
                image: image.map(str::to_string),
                limits: opts.limits.clone(),
                tap: opts.tap.is_some(),
                inputs: opts.inputs.clone(),
            },
            vec![code.into_bytes()],
        );
        // If the worker is gone the send fails quietly; `Conn::lose` answers the call.
        let _ = conn.out.send(request.encode()?);
        let mut cancel = opts.cancel.clone();
        let reply = loop {
            let watched = cancel.clone();
            let cancelled = async move {
                match watched {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut rx => break r.unwrap_or_else(|_| Reply::Lost("the sandbox supervisor stopped".into())),
                _ = cancelled => {
                    conn.send(Frame::new(Head::Cancel { call }));
                    cancel = None;
                }
            }
        };
        match reply {
            Reply::Done(mut r) => {
                // The worker's own recorder is not this process's: its waits are counted here,
                // as the call's time in the worker beyond its code's (which also holds the
                // worker's resume and hibernate).
                let waited = started.elapsed().saturating_sub(r.duration);
                crate::metrics::sandbox_wait(waited.as_secs_f64());
                if let Some(l) = &limits {
                    r.enforce_caps(l);
                } else {
                    r.images.clear();
                }
                Ok(*r)
            }
            Reply::Failed(e) => Err(e),
            Reply::Lost(why) => Ok(lost(&why, started)),
            Reply::Removed(_)
            | Reply::Status(_)
            | Reply::HibernatedAll(_)
            | Reply::Counted(..)
            | Reply::LiveKeys(_) => Err(SandboxError::Internal(anyhow::anyhow!(
                "the sandbox worker answered a call with something else"
            ))),
        }
    }

    /// The live connection of worker `shard`, if it is up now (no waiting).
    fn up(&self, shard: usize) -> Option<Arc<Conn>> {
        match &*self.inner.shards[shard].state.borrow() {
            ShardState::Up(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// What is known of session `id` (see [`super::SessionManager::info`]): whether it is
    /// live comes from the worker that owns it (not live if that worker is down), the rest
    /// from the session's folder. `None` if it has no folder.
    pub async fn info(&self, id: &str) -> Result<Option<SessionInfo>, SandboxError> {
        if !valid_session_key(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        let mut live = false;
        if let Some(conn) = self.up(self.shard(id))
            && let Ok((call, rx)) = conn.register(None)
        {
            let _forget = Forget { conn: &conn, call };
            conn.send(Frame::new(Head::Info {
                call,
                session: id.to_string(),
            }));
            match rx.await {
                Ok(Reply::Status(l)) => live = l,
                Ok(Reply::Failed(e)) => return Err(e),
                // The worker died: nothing of the session is live.
                _ => {}
            }
        }
        Ok(info_on_disk(&self.inner.config.root, id, live))
    }

    /// Ask every running worker the question `head` makes for a call; the answers of those
    /// that answer (within 5 s).
    async fn ask_all(&self, head: fn(u64) -> Head) -> Vec<Reply> {
        let asks = (0..self.inner.shards.len()).map(|shard| async move {
            let conn = self.up(shard)?;
            let (call, rx) = conn.register(None).ok()?;
            let _forget = Forget { conn: &conn, call };
            conn.send(Frame::new(head(call)));
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .ok()?
                .ok()
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// How many sessions are live and how many hibernated, over the workers that answer.
    pub async fn counts(&self) -> (usize, usize) {
        let mut total = (0, 0);
        for reply in self.ask_all(|call| Head::Counts { call }).await {
            if let Reply::Counted(live, hibernated) = reply {
                total = (total.0 + live as usize, total.1 + hibernated as usize);
            }
        }
        total
    }

    /// The keys of the sessions live in the workers that answer.
    pub async fn live_keys(&self) -> Vec<String> {
        let mut keys = vec![];
        for reply in self.ask_all(|call| Head::Live { call }).await {
            if let Reply::LiveKeys(k) = reply {
                keys.extend(k);
            }
        }
        keys
    }

    /// A graceful shutdown: every running worker hibernates its live interpreters (waiting at
    /// most `busy_wait` for sessions busy with a call, and at most [`HIBERNATE_GRACE`] more
    /// for the writing), then the workers are stopped. Returns how many interpreters were
    /// hibernated. Calls made afterwards end `crashed`.
    pub async fn shutdown(&self, busy_wait: Duration) -> u64 {
        let asks = (0..self.inner.shards.len()).map(|shard| async move {
            let conn = self.up(shard)?;
            let (call, rx) = conn.register(None).ok()?;
            let _forget = Forget { conn: &conn, call };
            conn.send(Frame::new(Head::HibernateAll {
                call,
                busy_wait_ms: u64::try_from(busy_wait.as_millis()).unwrap_or(u64::MAX),
            }));
            match tokio::time::timeout(busy_wait + HIBERNATE_GRACE, rx).await {
                Ok(Ok(Reply::HibernatedAll(n))) => Some(n),
                Ok(Ok(Reply::Failed(e))) => {
                    tracing::warn!(worker = shard, error = %e, "a sandbox worker could not hibernate");
                    None
                }
                Ok(_) => None,
                Err(_) => {
                    tracing::warn!(
                        worker = shard,
                        "a sandbox worker did not finish hibernating in time; stopping it"
                    );
                    None
                }
            }
        });
        let hibernated: u64 = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .sum();
        self.inner.stop.send_replace(());
        for shard in &self.inner.shards {
            let mut rx = shard.state.subscribe();
            let down = rx.wait_for(|s| !matches!(s, ShardState::Up(_)));
            let _ = tokio::time::timeout(STOP_WAIT, down).await;
        }
        hibernated
    }

    /// End a session: its interpreter (in its worker) and its folders.
    pub async fn remove(&self, id: &str) -> Result<bool, SandboxError> {
        if !valid_session_key(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        if let Some(conn) = self.up(self.shard(id))
            && let Ok((call, rx)) = conn.register(None)
        {
            let _forget = Forget { conn: &conn, call };
            conn.send(Frame::new(Head::Remove {
                call,
                session: id.to_string(),
            }));
            match rx.await {
                Ok(Reply::Removed(existed)) => return Ok(existed),
                Ok(Reply::Failed(e)) => return Err(e),
                // The worker died: nothing of the session is left there.
                _ => {}
            }
        }
        // No worker holds the session: its folders are all there is.
        remove_session_dirs(&self.inner.config.root, id)
    }

    /// The folder holding every session's folders.
    pub fn root(&self) -> &std::path::Path {
        &self.inner.config.root
    }

    /// The session knobs for the whole server.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config.sessions
    }

    /// Host folder behind a session's `/mnt/data`.
    pub fn data_dir(&self, id: &str) -> Result<PathBuf, SandboxError> {
        session_data_dir(&self.inner.config.root, id)
    }

    /// Files in a session's `/mnt/data` (relative path, size), links not followed.
    pub fn list_files(&self, id: &str) -> Result<Vec<(String, u64)>, SandboxError> {
        Ok(list_regular_files(&self.data_dir(id)?))
    }

    /// Read a file of a session's `/mnt/data` without leaving it.
    pub fn read_file(&self, id: &str, rel: &str, max: u64) -> std::io::Result<Vec<u8>> {
        let dir = self.data_dir(id).map_err(std::io::Error::other)?;
        read_inside(&dir, rel, max)
    }

    fn shard(&self, id: &str) -> usize {
        shard_of(id, self.inner.shards.len())
    }

    /// The live connection of worker `shard`, waiting while it is prepared or restarted (at
    /// most [`RESTART_WAIT`] once it has died). `Err` says why there is none.
    async fn conn(&self, shard: usize) -> Result<Arc<Conn>, String> {
        let mut rx = self.inner.shards[shard].state.subscribe();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                ShardState::Up(c) if !c.is_lost() => return Ok(c),
                ShardState::Preparing => {
                    if rx.changed().await.is_err() {
                        return Err("the sandbox supervisor stopped".into());
                    }
                    continue;
                }
                ShardState::Up(_) | ShardState::Down(_) => {}
            }
            let why = match rx.borrow().clone() {
                ShardState::Down(why) => why,
                _ => "it is being restarted".to_string(),
            };
            let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + RESTART_WAIT);
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    return Err("the sandbox supervisor stopped".into());
                },
                _ = tokio::time::sleep_until(at) => {
                    return Err(format!("{why}, and no replacement was running within {} s", RESTART_WAIT.as_secs()));
                }
            }
        }
    }
}

/// The result of a call whose worker died (or could not be reached).
fn lost(why: &str, started: Instant) -> ExecResult {
    ExecResult {
        outcome: Outcome::Crashed,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        report_truncated: false,
        result: None,
        error: None,
        detail: Some(format!(
            "the sandbox worker process died ({why}); {LOST_TURN}"
        )),
        files: vec![],
        images: vec![],
        duration: started.elapsed(),
        interpreter_reset: true,
        worker_lost: true,
        notice: Some(format!(
            "The sandbox worker running this session died: {LOST_TURN}."
        )),
    }
}

/// What a worker's death means for a session whose call was in flight.
const LOST_TURN: &str = "the turn in flight is lost (its output and what it set are gone); \
    the session resumes from its last hibernated state if it has one (variables set after it \
    was saved are gone), or starts a new interpreter; files in /mnt/data are kept";

// ---------------------------------------------------------------------------------------------
// One worker's channel

enum Reply {
    Done(Box<ExecResult>),
    Failed(SandboxError),
    Removed(bool),
    /// Whether a session is live.
    Status(bool),
    /// How many interpreters a worker hibernated.
    HibernatedAll(u64),
    /// How many of a worker's sessions are live and hibernated.
    Counted(u64, u64),
    /// The keys of a worker's live sessions.
    LiveKeys(Vec<String>),
    /// The worker died before answering.
    Lost(String),
}

struct Pending {
    /// The caller's tap and how many more bytes it may be given.
    tap: Option<(OutputTap, usize)>,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Calls {
    /// Set once the worker is gone; no call registers after that.
    lost: Option<String>,
    pending: HashMap<u64, Pending>,
}

/// A live worker's channel: frames out, calls waiting for their replies.
struct Conn {
    out: mpsc::UnboundedSender<Vec<u8>>,
    calls: Mutex<Calls>,
    next_call: AtomicU64,
    /// When the worker last sent anything.
    heard: Mutex<Instant>,
}

/// Drops a call's entry when its caller stops waiting (a late reply is then ignored).
struct Forget<'a> {
    conn: &'a Conn,
    call: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.conn.calls().pending.remove(&self.call);
    }
}

impl Conn {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_lost(&self) -> bool {
        self.calls().lost.is_some()
    }

    fn register(
        &self,
        tap: Option<(OutputTap, usize)>,
    ) -> Result<(u64, oneshot::Receiver<Reply>), String> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut calls = self.calls();
        if let Some(why) = &calls.lost {
            return Err(why.clone());
        }
        calls.pending.insert(call, Pending { tap, reply: tx });
        Ok((call, rx))
    }

    /// Queue a frame for the worker. A frame that cannot be sent is dropped: the worker is
    /// then gone, and its calls end through [`Conn::lose`].
    fn send(&self, frame: Frame) {
        match frame.encode() {
            Ok(bytes) => {
                let _ = self.out.send(bytes);
            }
            Err(e) => tracing::error!(error = %e, "could not encode a frame for a sandbox worker"),
        }
    }

    /// The worker is gone: every call waiting on it ends now.
    fn lose(&self, why: &str) {
        let pending = {
            let mut calls = self.calls();
            calls.lost.get_or_insert_with(|| why.to_string());
            std::mem::take(&mut calls.pending)
        };
        for (_, p) in pending {
            let _ = p.reply.send(Reply::Lost(why.to_string()));
        }
    }

    fn answer(&self, call: u64, reply: Reply) {
        if let Some(p) = self.calls().pending.remove(&call) {
            let _ = p.reply.send(reply);
        }
    }

    /// Act on a frame from the worker.
    fn dispatch(&self, frame: Frame) -> anyhow::Result<()> {
        match frame.head {
            Head::Output { call, stderr } => {
                let chunk = frame.blobs.first().map(Vec::as_slice).unwrap_or_default();
                let tap = self
                    .calls()
                    .pending
                    .get_mut(&call)
                    .and_then(|p| p.tap.as_mut())
                    .and_then(|(tap, left)| {
                        let n = chunk.len().min(*left);
                        *left -= n;
                        (n > 0).then(|| (tap.clone(), n))
                    });
                if let Some((tap, n)) = tap {
                    let kind = if stderr {
                        StreamKind::Stderr
                    } else {
                        StreamKind::Stdout
                    };
                    tap(kind, &chunk[..n]);
                }
            }
            Head::Done { call, result } => {
                let r = wire::result_of(*result, frame.blobs)?;
                self.answer(call, Reply::Done(Box::new(r)));
            }
            Head::Failed { call, error } => self.answer(call, Reply::Failed(error.into())),
            Head::Removed { call, existed } => self.answer(call, Reply::Removed(existed)),
            Head::Status { call, live } => self.answer(call, Reply::Status(live)),
            Head::HibernatedAll { call, sessions } => {
                self.answer(call, Reply::HibernatedAll(sessions))
            }
            Head::Counted {
                call,
                live,
                hibernated,
            } => self.answer(call, Reply::Counted(live, hibernated)),
            Head::LiveKeys { call, keys } => self.answer(call, Reply::LiveKeys(keys)),
            Head::Pong { .. } => {}
            other => bail!("unexpected frame from a worker: {other:?}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // FNV-1a 64, independent of the process and the build (tests pick ids per worker).
        assert_eq!(shard_of("", 4), (0xcbf2_9ce4_8422_2325u64 % 4) as usize);
        assert_eq!(
            shard_of("thread_abc", 7),
            (1248270686146409374u64 % 7) as usize
        );
        assert_eq!(
            shard_of("cisess_1", 7),
            (6559832061553696219u64 % 7) as usize
        );
        assert_eq!(shard_of("a", 7), (12638187200555641996u64 % 7) as usize);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("cisess_{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of("x", 0), 0);
    }

    fn conn() -> (Conn, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (out, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            out,
            calls: Mutex::new(Calls::default()),
            next_call: AtomicU64::new(1),
            heard: Mutex::new(Instant::now()),
        };
        (conn, rx)
    }

    #[tokio::test]
    async fn a_lost_worker_ends_every_waiting_call_and_takes_no_more() {
        let (c, _rx) = conn();
        let (_, a) = c.register(None).unwrap();
        let (_, b) = c.register(None).unwrap();
        c.lose("pid 1 was killed by SIGKILL");
        for rx in [a, b] {
            assert!(matches!(rx.await, Ok(Reply::Lost(why)) if why.contains("SIGKILL")));
        }
        assert!(c.register(None).is_err());
        assert!(c.is_lost());
    }

    #[tokio::test]
    async fn info_and_hibernate_all_answers_reach_their_calls() {
        let (c, _rx) = conn();
        let (info, info_rx) = c.register(None).unwrap();
        let (all, all_rx) = c.register(None).unwrap();
        let frame = |head: Head| Frame::decode(&Frame::new(head).encode().unwrap()[4..]).unwrap();
        c.dispatch(frame(Head::HibernatedAll {
            call: all,
            sessions: 3,
        }))
        .unwrap();
        c.dispatch(frame(Head::Status {
            call: info,
            live: true,
        }))
        .unwrap();
        assert!(matches!(info_rx.await, Ok(Reply::Status(true))));
        assert!(matches!(all_rx.await, Ok(Reply::HibernatedAll(3))));
        // Requests are the server's to send, never a worker's.
        let ask = Head::HibernateAll {
            call: 9,
            busy_wait_ms: 1,
        };
        assert!(c.dispatch(frame(ask)).is_err());
    }

    #[test]
    fn output_past_the_calls_caps_is_not_passed_on() {
        let (c, _rx) = conn();
        let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
        let s2 = seen.clone();
        let tap: OutputTap = Arc::new(move |_, b: &[u8]| s2.lock().unwrap().extend_from_slice(b));
        let (call, _reply) = c.register(Some((tap, 5))).unwrap();
        for chunk in [b"abc".to_vec(), b"defg".to_vec(), b"h".to_vec()] {
            let f = Frame::with(
                Head::Output {
                    call,
                    stderr: false,
                },
                vec![chunk],
            );
            c.dispatch(f).unwrap();
        }
        assert_eq!(&*seen.lock().unwrap(), b"abcde");
        // A frame a worker must never send ends its channel.
        assert!(c.dispatch(Frame::new(Head::Ping { seq: 1 })).is_err());
    }
}
