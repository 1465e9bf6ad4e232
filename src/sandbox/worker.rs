//! `oasis sandbox-worker`: one sandbox worker process, started and supervised by the server
//! ([`super::Supervisor`]). It hardens itself, opens its own [`Sandbox`] (loading the module the
//! server compiled), runs a [`SessionManager`] (warm pool, LRU, reaper, bounded pool) over the
//! shared sessions root, and serves the server's frames ([`super::wire`]) from stdin, answering
//! on stdout, several calls at a time.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manager::{ManagerConfig, SessionManager};
use super::session::ExecOptions;
use super::sessions::Sessions;
use super::wasi::{OutputTap, StreamKind};
use super::wire::{self, Frame, Head, WireError};
use super::{Progress, Sandbox, SandboxError};

/// Host descriptors one live interpreter may hold: the files and folders its guest has open
/// (capped per interpreter at 256 handles in `wasi.rs`) plus its own (mounts, runtime files),
/// with room to spare. The worker's descriptor limit is this times its sessions plus a base,
/// at most the inherited hard limit.
const FDS_PER_SESSION: u64 = 256 + 32;
const FDS_BASE: u64 = 256;

/// Flags of `oasis sandbox-worker` (set by the server; not meant to be run by hand).
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The sessions root shared with the server (`<root>/<id>/data` …).
    #[arg(long)]
    pub root: PathBuf,
    /// The runtime and compiled-module cache.
    #[arg(long)]
    pub cache_dir: PathBuf,
    /// This worker's number; its warm pool lives in `<root>/.warm-<index>`.
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// How many workers share the root (sessions are sharded over them; each sweeps only
    /// its own for retention).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// The server's pid: the worker exits if that is not its parent any more.
    #[arg(long)]
    pub parent: Option<i32>,
    /// Most live interpreters in this worker.
    #[arg(long, default_value_t = 128)]
    pub max_live: usize,
    /// Most calls running guest code at once in this worker [default: the CPU count].
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Started interpreters kept ready for new sessions.
    #[arg(long, default_value_t = 1)]
    pub warm_pool: usize,
    /// An interpreter unused this long (milliseconds) is dropped.
    #[arg(long, default_value_t = 3_600_000)]
    pub idle_ttl_ms: u64,
    /// Bytes of linear memory this worker's live interpreters may hold together
    /// [default: half the machine's memory].
    #[arg(long)]
    pub max_live_memory: Option<u64>,
    /// Hibernate interpreters instead of dropping them (`true` or `false`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub hibernate: bool,
    /// Also write each session's state after every call.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub hibernate_every_turn: bool,
    /// A session unused this long (seconds) is deleted with its files.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    pub session_retention_secs: u64,
}

/// Run the worker until the server closes its stdin (or dies).
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    close_inherited();
    harden(&args).context("hardening the sandbox worker")?;
    // The channel is stdin plus a private copy of stdout; fd 1 then points at stderr and fd 0
    // at /dev/null, so nothing printed by accident can corrupt the frames.
    let input = std::io::stdin().as_fd().try_clone_to_owned()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned()?;
    nix::unistd::dup2_stdout(std::io::stderr()).context("pointing stdout at stderr")?;
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("pointing stdin at /dev/null")?;
    drop(null);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("oasis-worker")
        .build()?;
    let ended = rt.block_on(serve(args, input, output));
    if let Err(e) = &ended {
        tracing::error!(error = %format!("{e:#}"), "sandbox worker stopping");
    }
    // Do not wait for guest code still running: the server is gone or gave up on us.
    std::process::exit(if ended.is_ok() { 0 } else { 1 });
}

/// Close descriptors the server let us inherit by accident (anything past stdin, stdout and
/// stderr): a worker holds none of the server's files or sockets.
fn close_inherited() {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    // The listing's own descriptor is closed by now (closing it again fails harmlessly).
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

/// Resource limits and process flags, set before anything else runs.
fn harden(args: &WorkerArgs) -> anyhow::Result<()> {
    use nix::sys::prctl;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Die with the server (the kernel sends SIGKILL when the thread that forked us ends).
    prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    // The server may have died before that took effect: then we were re-parented already.
    if let Some(parent) = args.parent {
        let now = nix::unistd::getppid().as_raw();
        if now != parent {
            bail!("the server (pid {parent}) is gone; the parent is now pid {now}");
        }
    }
    // No core dumps: a worker's memory holds other sessions' data.
    setrlimit(Resource::RLIMIT_CORE, 0, 0).context("RLIMIT_CORE")?;
    prctl::set_dumpable(false).context("PR_SET_DUMPABLE")?;
    // A descriptor budget sized for this worker's sessions. Address space stays unlimited:
    // wasmtime reserves large virtual ranges for linear memories.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("RLIMIT_NOFILE")?;
    let sessions = (args.max_live + args.warm_pool) as u64;
    let want = (FDS_BASE + FDS_PER_SESSION * sessions).max(1024).min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, want, want).context("RLIMIT_NOFILE")?;
    // No gaining privileges through exec (setuid binaries, file capabilities).
    prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    Ok(())
}

async fn serve(args: WorkerArgs, input: OwnedFd, output: OwnedFd) -> anyhow::Result<()> {
    let mut frames = BufReader::new(
        pipe::Receiver::from_owned_fd(input)
            .context("stdin must be a pipe (the worker is started by `oasis serve`)")?,
    );
    let mut sink = pipe::Sender::from_owned_fd(output)
        .context("stdout must be a pipe (the worker is started by `oasis serve`)")?;
    let (tx, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(buf) = queue.recv().await {
            if sink.write_all(&buf).await.is_err() {
                // The server is gone.
                std::process::exit(0);
            }
        }
    });
    let out = Out(tx);

    let cache = args.cache_dir.clone();
    let sandbox = tokio::task::spawn_blocking(move || Sandbox::open(&cache, Progress::hidden()))
        .await
        .context("opening the sandbox panicked")??;
    let defaults = ManagerConfig::default();
    let config = ManagerConfig {
        idle_ttl: Duration::from_millis(args.idle_ttl_ms),
        max_live: args.max_live.max(1),
        max_parallel: args.max_parallel.unwrap_or(defaults.max_parallel).max(1),
        warm_pool: args.warm_pool,
        max_live_memory: args.max_live_memory.unwrap_or(defaults.max_live_memory),
        // Workers export nothing: the server charges and stores Files.
        max_export_bytes: 0,
        hibernate: args.hibernate,
        hibernate_every_turn: args.hibernate_every_turn,
        session_retention: Duration::from_secs(args.session_retention_secs),
    };
    let manager = SessionManager::in_worker(
        Arc::new(sandbox),
        &args.root,
        config,
        args.index,
        args.workers,
    );
    out.send(Frame::new(Head::Hello {
        version: wire::VERSION,
        pid: std::process::id(),
    }));
    Sessions::InProcess(manager.clone()).start_background();

    let running: Arc<Mutex<HashMap<u64, CancellationToken>>> = Arc::default();
    loop {
        let Some(buf) = wire::read_frame(&mut frames).await? else {
            return Ok(());
        };
        let frame = Frame::decode(&buf)?;
        match frame.head {
            Head::Exec {
                call,
                session,
                image,
                limits,
                tap,
                inputs,
            } => {
                let code = frame.blobs.into_iter().next().unwrap_or_default();
                let flag = CancellationToken::new();
                running
                    .lock()
                    .expect("calls lock")
                    .insert(call, flag.clone());
                let (manager, out, running) = (manager.clone(), out.clone(), running.clone());
                tokio::spawn(async move {
                    let tap = tap.then(|| out.tap(call));
                    let r = match String::from_utf8(code) {
                        Ok(code) => {
                            let opts = ExecOptions {
                                limits,
                                tap,
                                cancel: Some(flag),
                                inputs,
                            };
                            manager
                                .execute(&session, image.as_deref(), code, opts)
                                .await
                        }
                        Err(_) => Err(SandboxError::InvalidInput("code is not valid UTF-8".into())),
                    };
                    running.lock().expect("calls lock").remove(&call);
                    match r {
                        Ok(r) => out.send_or_fail(call, wire::done(call, r)),
                        Err(e) => out.failed(call, &e),
                    }
                });
            }
            Head::Cancel { call } => {
                if let Some(flag) = running.lock().expect("calls lock").get(&call) {
                    flag.cancel();
                }
            }
            Head::Remove { call, session } => {
                let (manager, out) = (manager.clone(), out.clone());
                tokio::spawn(async move {
                    match manager.remove(&session).await {
                        Ok(existed) => out.send(Frame::new(Head::Removed { call, existed })),
                        Err(e) => out.failed(call, &e),
                    }
                });
            }
            Head::Info { call, session } => {
                let live = manager.is_live(&session);
                out.send(Frame::new(Head::Status { call, live }));
            }
            Head::HibernateAll { call, busy_wait_ms } => {
                let (manager, out) = (manager.clone(), out.clone());
                tokio::spawn(async move {
                    let n = manager
                        .hibernate_all(Duration::from_millis(busy_wait_ms))
                        .await;
                    out.send(Frame::new(Head::HibernatedAll {
                        call,
                        sessions: n as u64,
                    }));
                });
            }
            Head::Counts { call } => {
                let (manager, out) = (manager.clone(), out.clone());
                tokio::spawn(async move {
                    let counted = tokio::task::spawn_blocking(move || manager.counts()).await;
                    let (live, hibernated) = counted.unwrap_or_default();
                    out.send(Frame::new(Head::Counted {
                        call,
                        live: live as u64,
                        hibernated: hibernated as u64,
                    }));
                });
            }
            Head::Live { call } => out.send(Frame::new(Head::LiveKeys {
                call,
                keys: manager.live_keys(),
            })),
            Head::Ping { seq } => out.send(Frame::new(Head::Pong { seq })),
            other => bail!("unexpected frame from the server: {other:?}"),
        }
    }
}

/// Frames to the server, written in order by one task.
#[derive(Clone)]
struct Out(mpsc::UnboundedSender<Vec<u8>>);

impl Out {
    fn send(&self, frame: Frame) {
        match frame.encode() {
            Ok(bytes) => {
                let _ = self.0.send(bytes);
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "could not encode a frame"),
        }
    }

    /// Send a reply frame; one too large to send becomes an error for its call.
    fn send_or_fail(&self, call: u64, frame: Frame) {
        match frame.encode() {
            Ok(bytes) => {
                let _ = self.0.send(bytes);
            }
            Err(e) => self.failed(
                call,
                &SandboxError::Internal(e.context("the call's result cannot be handed back")),
            ),
        }
    }

    fn failed(&self, call: u64, e: &SandboxError) {
        self.send(Frame::new(Head::Failed {
            call,
            error: WireError::from(e),
        }));
    }

    /// A tap that streams a call's output chunks to the server.
    fn tap(&self, call: u64) -> OutputTap {
        let out = self.clone();
        Arc::new(move |kind, bytes: &[u8]| {
            out.send(Frame::with(
                Head::Output {
                    call,
                    stderr: kind == StreamKind::Stderr,
                },
                vec![bytes.to_vec()],
            ));
        })
    }
}
