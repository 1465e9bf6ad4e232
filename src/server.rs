//! `oasis serve`: configuration, state, and the HTTP server's lifecycle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::api::{self, ApiConfig, AppState, Mode};
use crate::backend::upstream::{Upstream, UpstreamConfig};
use crate::orchestrator::{Orchestrator, OrchestratorConfig};
use crate::sandbox::{
    ManagerConfig, Progress, Sandbox, SessionManager, Sessions, Supervisor, SupervisorConfig,
};
use crate::store::SqliteStore;

/// Flags of `oasis serve` (each also from the environment); unset ones come from the TOML file
/// given with `--config`, then from the defaults.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "OASIS_ADDR")]
    pub addr: Option<SocketAddr>,
    /// TOML file with any of: addr, mode, api_keys, max_upload_bytes, cache_dir,
    /// idle_ttl_secs, max_live_sessions, max_parallel, warm_pool, thread_list, run_expiry_secs,
    /// run_workers, isolation, sandbox_workers. The upstream model server comes from `OASIS_UPSTREAM_BASE_URL`,
    /// `OASIS_UPSTREAM_API_KEY` and `OASIS_UPSTREAM_MODELS`.
    #[arg(long, env = "OASIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// `all` (default) or `tools` (only /health, the code-interpreter endpoints and /v1/files).
    #[arg(long, env = "OASIS_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// Where the runtime and compiled modules are cached [default: the data dir].
    #[arg(long, env = "OASIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Serve `GET /v1/threads` (an Oasis extension, off by default).
    #[arg(long, env = "OASIS_THREAD_LIST")]
    pub thread_list: Option<bool>,
    /// Seconds after creation when a run expires [default: 600].
    #[arg(long, env = "OASIS_RUN_EXPIRY_SECS")]
    pub run_expiry_secs: Option<u64>,
    /// Where sandboxes run: `process` (default: in supervised worker processes, so a crash
    /// ends only that worker's sessions) or `in-process`.
    #[arg(long, env = "OASIS_ISOLATION", value_enum)]
    pub isolation: Option<Isolation>,
    /// Number of sandbox worker processes with `--isolation process` [default: 2].
    #[arg(long, env = "OASIS_SANDBOX_WORKERS")]
    pub sandbox_workers: Option<usize>,
}

/// Where sandbox interpreters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In `oasis sandbox-worker` processes supervised by the server; sessions are sharded over
    /// them, and a worker that dies is restarted.
    Process,
    /// In the server process.
    InProcess,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    mode: Option<Mode>,
    api_keys: Option<Vec<String>>,
    max_upload_bytes: Option<u64>,
    cache_dir: Option<PathBuf>,
    idle_ttl_secs: Option<u64>,
    max_live_sessions: Option<usize>,
    max_parallel: Option<usize>,
    warm_pool: Option<usize>,
    thread_list: Option<bool>,
    run_expiry_secs: Option<u64>,
    run_workers: Option<usize>,
    isolation: Option<Isolation>,
    sandbox_workers: Option<usize>,
}

/// Everything a server needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub api: ApiConfig,
    pub sessions: ManagerConfig,
    /// Sandboxes in worker processes (the default) or in this one.
    pub isolation: Isolation,
    /// Worker processes with [`Isolation::Process`].
    pub sandbox_workers: usize,
    /// The executable run as `oasis sandbox-worker` (default: this one).
    pub worker_exe: Option<PathBuf>,
    pub runs: OrchestratorConfig,
    /// The upstream model server (`OASIS_UPSTREAM_BASE_URL` …), if any.
    pub upstream: Option<UpstreamConfig>,
}

impl Settings {
    pub fn resolve(data_dir: &Path, args: &ServeArgs) -> anyhow::Result<Settings> {
        let file: FileConfig = match &args.config {
            Some(p) => toml::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("parsing {}", p.display()))?,
            None => FileConfig::default(),
        };
        let keys = match std::env::var("OASIS_API_KEYS") {
            Ok(v) => Some(
                v.split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect::<Vec<_>>(),
            ),
            Err(_) => file.api_keys,
        }
        .filter(|k| !k.is_empty());
        let defaults = ManagerConfig::default();
        let sandbox_workers = args.sandbox_workers.or(file.sandbox_workers).unwrap_or(2);
        anyhow::ensure!(
            (1..=64).contains(&sandbox_workers),
            "sandbox_workers must be 1 to 64, not {sandbox_workers}"
        );
        Ok(Settings {
            addr: args
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: data_dir.to_path_buf(),
            cache_dir: args
                .cache_dir
                .clone()
                .or(file.cache_dir)
                .unwrap_or_else(|| data_dir.to_path_buf()),
            api: ApiConfig {
                api_keys: keys.map(Arc::new),
                max_upload_bytes: file.max_upload_bytes.unwrap_or(512 * 1024 * 1024),
                mode: args.mode.or(file.mode).unwrap_or(Mode::All),
                thread_list: args.thread_list.or(file.thread_list).unwrap_or(false),
            },
            sessions: ManagerConfig {
                idle_ttl: file
                    .idle_ttl_secs
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.idle_ttl),
                max_live: file.max_live_sessions.unwrap_or(defaults.max_live),
                max_parallel: file.max_parallel.unwrap_or(defaults.max_parallel),
                warm_pool: file.warm_pool.unwrap_or(defaults.warm_pool),
            },
            isolation: args
                .isolation
                .or(file.isolation)
                .unwrap_or(Isolation::Process),
            sandbox_workers,
            worker_exe: None,
            runs: {
                let d = OrchestratorConfig::default();
                OrchestratorConfig {
                    workers: file.run_workers.unwrap_or(d.workers),
                    run_expiry: args
                        .run_expiry_secs
                        .or(file.run_expiry_secs)
                        .map(Duration::from_secs)
                        .unwrap_or(d.run_expiry),
                    max_file_bytes: file.max_upload_bytes.unwrap_or(d.max_file_bytes),
                    ..d
                }
            },
            upstream: UpstreamConfig::from_env(),
        })
    }
}

/// Open the store and the sandbox (blocking: may provision the runtime).
pub fn build_state(settings: &Settings, sandbox: Option<Arc<Sandbox>>) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let files_dir = settings.data_dir.join("files");
    std::fs::create_dir_all(&files_dir)?;
    // Leftover partial uploads from a crash are no one's.
    for e in std::fs::read_dir(&files_dir)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let store = SqliteStore::open(&settings.data_dir.join("oasis.sqlite3"))?;
    let sandbox = match sandbox {
        Some(s) => s,
        None => Arc::new(Sandbox::open(&settings.cache_dir, Progress::stderr())?),
    };
    let root = settings.data_dir.join("sessions");
    let sessions = match settings.isolation {
        Isolation::InProcess => Sessions::InProcess(SessionManager::new(
            sandbox,
            root,
            settings.sessions.clone(),
        )),
        Isolation::Process => {
            let exe = match &settings.worker_exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().context("finding the oasis executable")?,
            };
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
            // Workers start elsewhere (cwd `/`): give them absolute paths.
            let config = SupervisorConfig {
                exe,
                root: std::path::absolute(&root)?,
                cache_dir: std::path::absolute(&settings.cache_dir)?,
                workers: settings.sandbox_workers,
                sessions: settings.sessions.clone(),
            };
            // The workers start with the server (`serve`), after this process has prepared
            // the image, so they only load the cached module.
            Sessions::Workers(Supervisor::new(config, Some(sandbox)))
        }
    };
    let store: Arc<dyn crate::store::Store> = Arc::new(store);
    let runs = match settings.api.mode {
        Mode::All => {
            let upstream = match &settings.upstream {
                Some(cfg) => Some(Arc::new(Upstream::new(cfg.clone())?)),
                None => None,
            };
            Some(Orchestrator::new(
                store.clone(),
                files_dir.clone(),
                Some(sessions.clone()),
                upstream,
                settings.runs.clone(),
            ))
        }
        Mode::Tools => None,
    };
    Ok(AppState {
        store,
        files_dir,
        sessions: Some(sessions),
        runs,
        config: settings.api.clone(),
    })
}

/// Serve `state` on `listener` until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(sessions) = &state.sessions {
        sessions.start_background();
    }
    if let Some(runs) = &state.runs {
        runs.start().await.context("starting the run workers")?;
    }
    let app = api::router(state).layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// `oasis serve`.
pub fn run(data_dir: &Path, args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(data_dir, &args)?;
    if settings.api.api_keys.is_none() && !settings.addr.ip().is_loopback() {
        tracing::warn!(
            addr = %settings.addr,
            "!!! OASIS_API_KEYS is not set and Oasis listens on a non-loopback address: anyone \
             who can reach it can run code in its sandboxes and read every file. Set \
             OASIS_API_KEYS. !!!"
        );
    }
    tracing::info!(?settings, "starting");
    let state = build_state(&settings, None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding {}", settings.addr))?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        eprintln!("oasis: listening on http://{}", listener.local_addr()?);
        serve(listener, state, shutdown_signal()).await
    })
}
