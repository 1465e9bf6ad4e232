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
//! on its sessions get fresh interpreters over the same folders.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::{mpsc, oneshot, watch};

use super::limits::MAX_CODE_BYTES;
use super::manager::{
    ManagerConfig, list_regular_files, read_inside, remove_session_dirs, session_data_dir,
    valid_session_id,
};
use super::result::{ExecResult, Outcome};
use super::session::ExecOptions;
use super::wasi::{OutputTap, StreamKind};
use super::wire::{self, Frame, Head};
use super::{DEFAULT_IMAGE, Image, Sandbox, SandboxError};

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
    /// Dropped with the supervisor: the monitors then stop their workers.
    _stop: watch::Sender<()>,
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
                _stop: stop,
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
        if !valid_session_id(id) {
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
                if let Some(l) = &limits {
                    r.enforce_caps(l);
                } else {
                    r.images.clear();
                }
                Ok(*r)
            }
            Reply::Failed(e) => Err(e),
            Reply::Lost(why) => Ok(lost(&why, started)),
            Reply::Removed(_) => Err(SandboxError::Internal(anyhow::anyhow!(
                "the sandbox worker answered a call with a remove"
            ))),
        }
    }

    /// End a session: its interpreter (in its worker) and its folders.
    pub async fn remove(&self, id: &str) -> Result<bool, SandboxError> {
        if !valid_session_id(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        let shard = &self.inner.shards[self.shard(id)];
        let up = match &*shard.state.borrow() {
            ShardState::Up(c) => Some(c.clone()),
            _ => None,
        };
        if let Some(conn) = up
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
            "the sandbox worker process died ({why}); the session's interpreter is gone \
             (its files in /mnt/data are kept) and a new one starts on the next call"
        )),
        files: vec![],
        images: vec![],
        duration: started.elapsed(),
        interpreter_reset: true,
        worker_lost: true,
        notice: None,
    }
}

// ---------------------------------------------------------------------------------------------
// One worker's channel

enum Reply {
    Done(Box<ExecResult>),
    Failed(SandboxError),
    Removed(bool),
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
            Head::Pong { .. } => {}
            other => bail!("unexpected frame from a worker: {other:?}"),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Starting and watching workers

/// Keep worker `shard` running until the supervisor is dropped.
async fn supervise(
    config: Arc<SupervisorConfig>,
    shard: Arc<Shard>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let born = Instant::now();
        let why = match Worker::start(&config, shard.index).await {
            Ok(mut w) => {
                tracing::info!(worker = shard.index, pid = w.pid, "sandbox worker started");
                shard.state.send_replace(ShardState::Up(w.conn.clone()));
                tokio::select! {
                    why = w.watch() => why,
                    _ = stop.changed() => {
                        w.end("the server is shutting down").await;
                        shard.state.send_replace(ShardState::Down("the server is shutting down".into()));
                        return;
                    }
                }
            }
            Err(e) => format!("could not be started: {e:#}"),
        };
        shard.state.send_replace(ShardState::Down(why.clone()));
        if born.elapsed() >= STEADY {
            backoff = MIN_BACKOFF;
        }
        tracing::error!(
            worker = shard.index,
            "sandbox worker {why}; restarting it in {} ms",
            backoff.as_millis()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A running worker process and its channel.
struct Worker {
    pid: u32,
    child: Child,
    conn: Arc<Conn>,
    reader: tokio::task::JoinHandle<String>,
}

impl Worker {
    async fn start(config: &SupervisorConfig, index: usize) -> anyhow::Result<Worker> {
        let n = config.workers.max(1);
        let share = |total: usize| total.div_ceil(n);
        let s = &config.sessions;
        let mut cmd = tokio::process::Command::new(&config.exe);
        cmd.arg("sandbox-worker")
            .arg("--root")
            .arg(&config.root)
            .arg("--cache-dir")
            .arg(&config.cache_dir)
            .arg("--index")
            .arg(index.to_string())
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--max-live")
            .arg(share(s.max_live.max(1)).to_string())
            .arg("--max-parallel")
            .arg(s.max_parallel.max(1).to_string())
            .arg("--warm-pool")
            .arg(share(s.warm_pool).to_string())
            .arg("--idle-ttl-ms")
            .arg(s.idle_ttl.as_millis().to_string())
            .arg("--max-live-memory")
            .arg((s.max_live_memory / n as u64).to_string())
            .arg("--hibernate")
            .arg(s.hibernate.to_string())
            .arg("--hibernate-every-turn")
            .arg(s.hibernate_every_turn.to_string())
            .arg("--session-retention-secs")
            .arg(s.session_retention.as_secs().to_string())
            .env_clear()
            .envs(
                WORKER_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
            )
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = spawn(cmd)
            .await
            .with_context(|| format!("running {}", config.exe.display()))?;
        let pid = child.id().context("the worker exited at once")?;
        let mut stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut frames = BufReader::new(stdout);
        let hello = tokio::time::timeout(HELLO_WAIT, wire::read_frame(&mut frames)).await;
        let hello = match hello {
            Ok(Ok(Some(buf))) => Frame::decode(&buf)?.head,
            Ok(Ok(None)) => {
                let status = child.wait().await?;
                bail!("pid {pid} {} before saying hello", describe(status));
            }
            Ok(Err(e)) => bail!("pid {pid} broke its channel: {e}"),
            Err(_) => bail!(
                "pid {pid} did not say hello within {} s",
                HELLO_WAIT.as_secs()
            ),
        };
        match hello {
            Head::Hello { version, .. } if version == wire::VERSION => {}
            Head::Hello { version, .. } => bail!(
                "{} speaks protocol {version}, this server {}: is it the same build?",
                config.exe.display(),
                wire::VERSION
            ),
            other => bail!("pid {pid} began with {other:?} instead of hello"),
        }
        let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(buf) = queue.recv().await {
                if stdin.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        let conn = Arc::new(Conn {
            out,
            calls: Mutex::new(Calls::default()),
            next_call: AtomicU64::new(1),
            heard: Mutex::new(Instant::now()),
        });
        let reader = tokio::spawn(read_loop(frames, conn.clone()));
        Ok(Worker {
            pid,
            child,
            conn,
            reader,
        })
    }

    /// Wait until the worker dies, stops answering or breaks the protocol; then make sure it
    /// is dead and reaped, end its calls, and say why.
    async fn watch(&mut self) -> String {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        let why = loop {
            tokio::select! {
                r = &mut self.reader => break r.unwrap_or_else(|_| "its channel reader panicked".into()),
                _ = ping.tick() => {
                    let silent = self.conn.heard.lock().map(|t| t.elapsed()).unwrap_or_default();
                    if silent > HANG_LIMIT {
                        break format!("stopped answering for {} s", silent.as_secs());
                    }
                    seq += 1;
                    self.conn.send(Frame::new(Head::Ping { seq }));
                }
            }
        };
        self.end(&why).await
    }

    /// Kill (if needed) and reap the process, then end its calls with the reason.
    async fn end(&mut self, why: &str) -> String {
        let _ = self.child.start_kill();
        let status = match self.child.wait().await {
            Ok(s) => describe(s),
            Err(e) => format!("could not be reaped ({e})"),
        };
        self.reader.abort();
        let why = format!("pid {} {status}; {why}", self.pid);
        self.conn.lose(&why);
        why
    }
}

async fn read_loop(mut frames: BufReader<ChildStdout>, conn: Arc<Conn>) -> String {
    loop {
        let buf = match wire::read_frame(&mut frames).await {
            Ok(Some(buf)) => buf,
            Ok(None) => return "its channel closed".into(),
            Err(e) => return format!("its channel broke: {e}"),
        };
        if let Ok(mut t) = conn.heard.lock() {
            *t = Instant::now();
        }
        let frame = match Frame::decode(&buf) {
            Ok(f) => f,
            Err(e) => return format!("it sent a malformed frame: {e:#}"),
        };
        if let Err(e) = conn.dispatch(frame) {
            return format!("it broke the protocol: {e:#}");
        }
    }
}

/// How a process ended, in words.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        format!("was killed by {name}")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

type SpawnJob = (
    tokio::runtime::Handle,
    tokio::process::Command,
    oneshot::Sender<std::io::Result<Child>>,
);

/// Start a process from one thread that lives as long as this process. A worker asks the
/// kernel to kill it when its parent goes (`PR_SET_PDEATHSIG`), and "parent" there means the
/// thread that forked it: forking from a tokio thread, which may end while the server runs,
/// would take the worker down with it.
async fn spawn(cmd: tokio::process::Command) -> anyhow::Result<Child> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("oasis-spawner".into())
            .spawn(move || {
                for (handle, mut cmd, reply) in rx {
                    let _rt = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the process-spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = oneshot::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((tokio::runtime::Handle::current(), cmd, tx))
        .map_err(|_| anyhow::anyhow!("the process-spawner thread is gone"))?;
    Ok(rx.await.context("the process-spawner thread is gone")??)
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
