//! Starting and watching sandbox worker processes: [`supervise`] keeps one worker running
//! (restarting it with backoff after it dies) until the supervisor stops; [`Worker`] is one
//! running process and its channel.

use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    Calls, Conn, HANG_LIMIT, HELLO_WAIT, MAX_BACKOFF, MIN_BACKOFF, PING_EVERY, STEADY, Shard,
    ShardState, SupervisorConfig, WORKER_ENV,
};
use crate::sandbox::wire::{self, Frame, Head};
/// Keep worker `shard` running until the supervisor is dropped.
pub(super) async fn supervise(
    config: Arc<SupervisorConfig>,
    shard: Arc<Shard>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        // Stopped (a shutdown) before this worker ever started: start none.
        if stop.has_changed().unwrap_or(true) {
            shard
                .state
                .send_replace(ShardState::Down("the server is shutting down".into()));
            return;
        }
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
            .arg("--workers")
            .arg(n.to_string())
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
