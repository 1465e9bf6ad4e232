//! `oasis serve`: configuration, state, and the HTTP server's lifecycle.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::api::{self, ApiConfig, AppState, ConnLimits, Mode};
use crate::backend::upstream::{Upstream, UpstreamConfig};
use crate::bucket::{Bucket, StoreOptions};
use crate::orchestrator::{Orchestrator, OrchestratorConfig};
use crate::retrieval::embed::UpstreamEmbeddingsConfig;
use crate::retrieval::extract::{self, ExtractLimits};
use crate::roaming::Roaming;
use crate::sandbox::{
    ManagerConfig, Progress, Sandbox, SessionManager, Sessions, Supervisor, SupervisorConfig,
};
use crate::vectors::{EmbeddingsConfig, Vectors, VectorsConfig};

/// `oasis serve`'s arguments: an optional TOML file, and every knob.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of the knobs below, by their flag's name with `_` for `-` (e.g.
    /// `max_live_sessions = 64`).
    #[arg(long, env = "OASIS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub knobs: Knobs,
}

/// Every knob of `oasis serve`, declared once. Each is a flag (`--max-live-sessions`), an
/// environment variable (`OASIS_MAX_LIVE_SESSIONS`) and a TOML key (`max_live_sessions`);
/// flags win over the environment, which wins over the file, which wins over the defaults.
/// The upstream model server is configured by `OASIS_UPSTREAM_*` (see `UpstreamConfig`).
#[derive(Default, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    /// `all` (default) or `tools` (only /health, the code-interpreter endpoints and /v1/files).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Accepted API keys, comma-separated [default: any key is accepted].
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<Vec<String>>,
    /// A keys file (TOML): projects, the SHA-256 of each of their keys, their limits; re-read
    /// when it changes and on SIGHUP [default: none].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<PathBuf>,
    /// Largest upload, and largest File a run stores, in bytes [default: 512 MiB].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<u64>,
    /// Where the runtime and compiled modules are cached [default: the data dir].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// An interpreter unused this long is dropped, files kept [default: 3600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ttl_secs: Option<u64>,
    /// Hibernate idle or evicted interpreters to disk instead of dropping them, so a session
    /// keeps its variables [default: true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hibernate: Option<bool>,
    /// Also write each session's state after every call, so a crash loses nothing that
    /// finished [default: true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hibernate_every_turn: Option<bool>,
    /// A session unused this many days is deleted with its files [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_retention_days: Option<u64>,
    /// Most live interpreters [default: 256].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_sessions: Option<usize>,
    /// Most calls running code at once [default: the core count].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// Started interpreters kept ready for new sessions [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<usize>,
    /// Linear memory all live interpreters may hold together, in MiB [default: half the
    /// machine's memory].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live_memory_mib: Option<u64>,
    /// What one session may add to the file store over its life, in MiB [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_session_export_mib: Option<u64>,
    /// Serve `GET /v1/threads` (an Oasis extension) [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_list: Option<bool>,
    /// Seconds after creation when a run expires [default: 600].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_expiry_secs: Option<u64>,
    /// Runs driven at once [default: 64].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_workers: Option<usize>,
    /// Where sandboxes run: `process` (default: in supervised worker processes, so a crash
    /// ends only that worker's sessions) or `in-process`.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// Sandbox worker processes with `--isolation process` [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_workers: Option<usize>,
    /// Seconds a client has to send a request head, from the connection's opening or the
    /// head's first byte [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may idle between requests, and the longest wait for
    /// the next bytes of a request body [default: 30].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Open connections at most; lowered to what the descriptor limit leaves room for
    /// [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Where File bytes are stored: `s3://bucket/prefix` for an S3-compatible store that
    /// several nodes share (its client is configured by the usual `AWS_*` variables:
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP` …), or `file:///folder` [default: the data dir, `<data dir>/files`].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_store_url: Option<String>,
    /// `postgres://user:password@host:port/db`: keep records in PostgreSQL, which several
    /// nodes share [default: SQLite, `<data dir>/oasis.sqlite3`, this process alone].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// This node's name among the nodes sharing a database; a node restarted under the same
    /// name takes back its runs at once [default: `<host name>:<port>`].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Seconds a node may go without a heartbeat before the others count it lost (its runs
    /// fail, its queue is taken over) [default: 10].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_lease_secs: Option<u64>,
}

impl std::fmt::Debug for Knobs {
    /// The knobs that are set, API keys redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(keys) = v.get_mut("api_keys") {
            *keys = serde_json::json!("[redacted]");
        }
        if let Some(url) = v.get_mut("database_url") {
            *url = serde_json::json!("[redacted]");
        }
        write!(f, "Knobs {v}")
    }
}

impl Knobs {
    /// Defaults ← `config` (TOML) ← `OASIS_*` ← `flags`.
    fn layered(config: Option<&Path>, flags: &Knobs) -> anyhow::Result<Knobs> {
        use figment::Figment;
        use figment::providers::{Env, Format, Toml};
        let names: Vec<String> = serde_json::to_value(Knobs::every())?
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let mut fig = Figment::new();
        if let Some(p) = config {
            anyhow::ensure!(p.is_file(), "reading {}: no such file", p.display());
            fig = fig.merge(Toml::file(p));
        }
        // A list in the environment is comma-separated: OASIS_API_KEYS is read below.
        let env = Env::prefixed("OASIS_")
            .filter(move |k| k != "api_keys" && names.iter().any(|n| k == n.as_str()));
        let mut knobs: Knobs = fig
            .merge(env)
            .extract()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Ok(v) = std::env::var("OASIS_API_KEYS") {
            knobs.api_keys = Some(v.split(',').map(|k| k.trim().to_string()).collect());
        }
        Ok(knobs.or(flags))
    }

    /// Each knob of `flags` that is set replaces this one.
    fn or(self, flags: &Knobs) -> Knobs {
        let f = serde_json::to_value(flags).unwrap_or_default();
        let mut merged = serde_json::to_value(&self).unwrap_or_default();
        if let (Some(m), Some(f)) = (merged.as_object_mut(), f.as_object()) {
            for (k, v) in f {
                m.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(merged).unwrap_or(self)
    }

    /// Every knob set (to its type's default), to list their names.
    fn every() -> Knobs {
        Knobs {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            mode: Some(Mode::All),
            api_keys: Some(vec![]),
            keys_file: Some(PathBuf::new()),
            max_upload_bytes: Some(0),
            cache_dir: Some(PathBuf::new()),
            idle_ttl_secs: Some(0),
            hibernate: Some(true),
            hibernate_every_turn: Some(false),
            session_retention_days: Some(0),
            max_live_sessions: Some(0),
            max_parallel: Some(0),
            warm_pool: Some(0),
            max_live_memory_mib: Some(0),
            max_session_export_mib: Some(0),
            thread_list: Some(false),
            run_expiry_secs: Some(0),
            run_workers: Some(0),
            isolation: Some(Isolation::Process),
            sandbox_workers: Some(0),
            header_timeout_secs: Some(0),
            idle_timeout_secs: Some(0),
            max_connections: Some(0),
            object_store_url: Some(String::new()),
            database_url: Some(String::new()),
            node_id: Some(String::new()),
            node_lease_secs: Some(0),
        }
    }
}

/// Where sandbox interpreters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In `oasis sandbox-worker` processes supervised by the server; sessions are sharded over
    /// them, and a worker that dies is restarted.
    Process,
    /// In the server process.
    InProcess,
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
    /// How file_search embeds (`OASIS_EMBEDDINGS_BASE_URL` …; the built-in model by default).
    pub embeddings: EmbeddingsConfig,
    /// The executable run as `oasis extract-worker` to read documents (default: this one).
    pub extract_exe: Option<PathBuf>,
    /// The PostgreSQL database records are kept in; `None`: SQLite in the data dir.
    pub database_url: Option<String>,
    /// Where File bytes are stored (`s3://bucket/prefix`, `file:///folder`); `None`: the data
    /// dir.
    pub object_store_url: Option<String>,
    /// The S3 client's options by `AWS_*` name (default: this process's `AWS_*` variables).
    pub object_store_options: StoreOptions,
}

impl Settings {
    pub fn resolve(data_dir: &Path, args: &ServeArgs) -> anyhow::Result<Settings> {
        let k = Knobs::layered(args.config.as_deref(), &args.knobs)?;
        let keys = k
            .api_keys
            .clone()
            .map(|ks| {
                ks.into_iter()
                    .map(|key| key.trim().to_string())
                    .filter(|key| !key.is_empty())
                    .collect::<Vec<_>>()
            })
            .filter(|ks| !ks.is_empty());
        let defaults = ManagerConfig::default();
        let sandbox_workers = k.sandbox_workers.unwrap_or(2);
        anyhow::ensure!(
            (1..=64).contains(&sandbox_workers),
            "sandbox_workers must be 1 to 64, not {sandbox_workers}"
        );
        let connections = {
            let d = ConnLimits::default();
            let secs = |name: &str, v: Option<u64>, default: Duration| match v {
                None => Ok(default),
                Some(s @ 1..=86_400) => Ok(Duration::from_secs(s)),
                Some(s) => Err(anyhow::anyhow!("{name} must be 1 to 86400, not {s}")),
            };
            let max_connections = k.max_connections.unwrap_or(d.max_connections);
            anyhow::ensure!(
                (1..=MAX_CONNECTIONS).contains(&max_connections),
                "max_connections must be 1 to {MAX_CONNECTIONS}, not {max_connections}"
            );
            ConnLimits {
                header_timeout: secs(
                    "header_timeout_secs",
                    k.header_timeout_secs,
                    d.header_timeout,
                )?,
                idle_timeout: secs("idle_timeout_secs", k.idle_timeout_secs, d.idle_timeout)?,
                max_connections,
            }
        };
        let addr = k
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let database_url = k.database_url.clone().filter(|u| !u.trim().is_empty());
        // Nodes share a session through the state each turn leaves.
        if database_url.is_some()
            && (k.hibernate == Some(false) || k.hibernate_every_turn == Some(false))
        {
            anyhow::bail!(
                "with database_url (a cluster), hibernate and hibernate_every_turn must stay on: \
                 nodes share a session through the state each turn leaves"
            );
        }
        Ok(Settings {
            addr,
            data_dir: data_dir.to_path_buf(),
            cache_dir: k
                .cache_dir
                .clone()
                .unwrap_or_else(|| data_dir.to_path_buf()),
            api: ApiConfig {
                keys: crate::tenancy::Keys::new(keys, k.keys_file.clone())?,
                max_upload_bytes: k.max_upload_bytes.unwrap_or(512 * 1024 * 1024),
                mode: k.mode.unwrap_or(Mode::All),
                thread_list: k.thread_list.unwrap_or(false),
                connections,
                clock: api::Clock::default(),
            },
            sessions: ManagerConfig {
                idle_ttl: k
                    .idle_ttl_secs
                    .map(Duration::from_secs)
                    .unwrap_or(defaults.idle_ttl),
                max_live: k.max_live_sessions.unwrap_or(defaults.max_live),
                max_parallel: k.max_parallel.unwrap_or(defaults.max_parallel),
                warm_pool: k.warm_pool.unwrap_or(defaults.warm_pool),
                max_live_memory: k
                    .max_live_memory_mib
                    .map_or(defaults.max_live_memory, |m| m.saturating_mul(1 << 20)),
                max_export_bytes: k
                    .max_session_export_mib
                    .map_or(defaults.max_export_bytes, |m| m.saturating_mul(1 << 20)),
                hibernate: k.hibernate.unwrap_or(defaults.hibernate),
                hibernate_every_turn: k
                    .hibernate_every_turn
                    .unwrap_or(defaults.hibernate_every_turn),
                session_retention: match k.session_retention_days {
                    None => defaults.session_retention,
                    Some(d @ 1..=36_500) => Duration::from_secs(d * 24 * 3600),
                    Some(d) => {
                        anyhow::bail!("session_retention_days must be 1 to 36500, not {d}")
                    }
                },
            },
            isolation: k.isolation.unwrap_or(Isolation::Process),
            sandbox_workers,
            worker_exe: None,
            runs: {
                let d = OrchestratorConfig::default();
                OrchestratorConfig {
                    workers: k.run_workers.unwrap_or(d.workers),
                    run_expiry: k
                        .run_expiry_secs
                        .map(Duration::from_secs)
                        .unwrap_or(d.run_expiry),
                    max_file_bytes: k.max_upload_bytes.unwrap_or(d.max_file_bytes),
                    node: match &k.node_id {
                        Some(n) if !n.trim().is_empty() => n.trim().to_string(),
                        _ => default_node_id(addr.port()),
                    },
                    exclusive: database_url.is_none(),
                    node_lease: match k.node_lease_secs {
                        None => d.node_lease,
                        Some(s @ 1..=3600) => Duration::from_secs(s),
                        Some(s) => anyhow::bail!("node_lease_secs must be 1 to 3600, not {s}"),
                    },
                    ..d
                }
            },
            upstream: UpstreamConfig::from_env(),
            embeddings: embeddings_from_env(),
            extract_exe: None,
            object_store_url: k.object_store_url.clone().filter(|u| !u.trim().is_empty()),
            database_url,
            object_store_options: StoreOptions::from_env(),
        })
    }
}

/// `<host name>:<port>`: stable across restarts, distinct for nodes sharing a machine.
fn default_node_id(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "oasis".into()
    } else {
        host
    };
    format!("{host}:{port}")
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
    // File bytes: `<data dir>/files/<file id>` by default (where they always were).
    let bucket = Bucket::open(
        settings.object_store_url.as_deref(),
        &settings.object_store_options,
        &settings.data_dir,
    )
    .context("opening the object store (object_store_url)")?;
    let store = crate::store::open(
        settings.database_url.as_deref(),
        &settings.data_dir.join("oasis.sqlite3"),
    )
    .context("opening the database")?;
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
    let vectors = match settings.api.mode {
        Mode::All => {
            // Documents are read in a bounded child process, never in this one.
            let exe = match &settings.extract_exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().context("finding the oasis executable")?,
            };
            Some(Vectors::new(
                store.clone(),
                VectorsConfig {
                    data_dir: settings.cache_dir.clone(),
                    bucket: bucket.clone(),
                    embeddings: settings.embeddings.clone(),
                    limits: ExtractLimits::default(),
                    node: settings
                        .database_url
                        .as_ref()
                        .map(|_| settings.runs.node.clone()),
                    extract: extract::Isolation::Process(exe),
                },
            ))
        }
        Mode::Tools => None,
    };
    // On a shared database, sessions are shared with the other nodes.
    let roaming = settings.database_url.as_ref().map(|_| {
        Arc::new(Roaming::new(
            store.clone(),
            bucket.clone(),
            settings.runs.node.clone(),
            settings.runs.node_lease,
        ))
    });
    let runs = match settings.api.mode {
        Mode::All => {
            let upstream = match &settings.upstream {
                Some(cfg) => Some(Arc::new(Upstream::new(cfg.clone())?)),
                None => None,
            };
            let runs = Orchestrator::new(
                store.clone(),
                bucket.clone(),
                Some(sessions.clone()),
                upstream,
                vectors.clone(),
                settings.runs.clone(),
            );
            let runs = runs.with_keys(settings.api.keys.clone());
            Some(match &roaming {
                Some(r) => runs.with_roaming(r.clone()),
                None => runs,
            })
        }
        Mode::Tools => None,
    };
    Ok(AppState {
        store,
        bucket,
        uploads_dir: files_dir.join("uploads"),
        sessions: Some(sessions),
        roaming,
        runs,
        vectors,
        config: settings.api.clone(),
        project: crate::tenancy::Project::default_project(),
    })
}

/// `OASIS_EMBEDDINGS_BASE_URL` (an OpenAI-compatible server's `/v1`), `OASIS_EMBEDDINGS_MODEL`
/// and `OASIS_EMBEDDINGS_API_KEY`; without a base URL, the built-in model.
fn embeddings_from_env() -> EmbeddingsConfig {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    match var("OASIS_EMBEDDINGS_BASE_URL") {
        Some(base_url) => EmbeddingsConfig::Upstream(UpstreamEmbeddingsConfig {
            base_url: base_url.trim().trim_end_matches('/').to_string(),
            model: var("OASIS_EMBEDDINGS_MODEL").unwrap_or_else(|| "text-embedding-3-small".into()),
            api_key: var("OASIS_EMBEDDINGS_API_KEY"),
        }),
        None => EmbeddingsConfig::BuiltIn,
    }
}

/// Serve `state` on `listener` until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Before anything records (the run workers start below).
    crate::metrics::install();
    if let Some(sessions) = &state.sessions {
        sessions.start_background();
    }
    if let Some(runs) = &state.runs {
        runs.start().await.context("starting the run workers")?;
    }
    let mut limits = state.config.connections;
    let descriptors = raise_descriptor_limit();
    limits.max_connections = connection_cap(limits.max_connections, descriptors);
    if limits.max_connections < state.config.connections.max_connections {
        tracing::warn!(
            ?descriptors,
            max_connections = limits.max_connections,
            "the descriptor limit (RLIMIT_NOFILE) leaves room for fewer connections than \
             max_connections; raise it (e.g. LimitNOFILE= or ulimit -n) to serve more"
        );
    }
    // A store that does not answer is not fatal (requests that need it answer 503 until it
    // does), but worth saying at once.
    let bucket = state.bucket.clone();
    tokio::spawn(async move {
        match bucket.ping().await {
            Ok(()) => tracing::info!(?bucket, "object store reachable"),
            Err(e) => tracing::warn!(?bucket, error = %e, "the object store does not answer"),
        }
    });
    let sweeper = tokio::spawn(api::sweep_expired_forever(state.clone()));
    // A changed keys file (or SIGHUP) takes effect without a restart.
    let keys_watch = state.config.keys.watch();
    let ingester = state
        .vectors
        .clone()
        .map(|v| tokio::spawn(v.ingest_forever()));
    let sessions = state.sessions.clone();
    let runs = state.runs.clone();
    let app = api::router(state);
    let served = api::serve_http(listener, app, limits, shutdown)
        .await
        .context("serving HTTP");
    sweeper.abort();
    keys_watch.abort();
    if let Some(i) = ingester {
        i.abort();
    }
    // A node of a cluster drains: it claims no more runs, lets the ones it drives finish for a
    // while, and hands the rest back (queued ones to other nodes; unfinished ones fail).
    if let Some(runs) = runs {
        runs.leave(DRAIN_WAIT).await;
    }
    // Requests in flight are answered: put the live interpreters to sleep, so their sessions
    // resume after a restart, then stop the sandbox workers.
    if let Some(sessions) = sessions {
        let n = sessions.shutdown(Sessions::SHUTDOWN_BUSY_WAIT).await;
        tracing::info!(hibernated = n, "sandbox sessions hibernated");
    }
    served
}

/// How long a draining node of a cluster lets its runs finish.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// The most `max_connections` may be set to.
const MAX_CONNECTIONS: usize = 1 << 20;

/// Descriptors kept for everything but client connections (SQLite and its WAL, File blobs being
/// written or read, sandbox worker pipes, upstream connections, the runtime): a quarter of the
/// limit, and at least this many.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raise this process's soft descriptor limit to its hard limit when possible; the soft limit
/// in force afterwards (`None` where unknown).
fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if soft >= hard {
            return Some(soft);
        }
        // An unlimited hard limit is no valid soft one: the kernel caps descriptors anyway.
        let target = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => Some(target),
            Err(_) => Some(soft),
        }
    }
    #[cfg(not(unix))]
    None
}

/// `configured`, lowered so that the connections and [`RESERVED_DESCRIPTORS`] fit in a
/// descriptor limit of `descriptors` (never below 16).
fn connection_cap(configured: usize, descriptors: Option<u64>) -> usize {
    let Some(limit) = descriptors else {
        return configured;
    };
    let room = limit.saturating_sub((limit / 4).max(RESERVED_DESCRIPTORS));
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(16);
    configured.min(room)
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
    if settings.api.keys.is_open() && !settings.addr.ip().is_loopback() {
        tracing::warn!(
            addr = %settings.addr,
            "!!! Neither OASIS_API_KEYS nor OASIS_KEYS_FILE is set and Oasis listens on a \
             non-loopback address: anyone who can reach it can run code in its sandboxes and \
             read every file. Set OASIS_API_KEYS or OASIS_KEYS_FILE. !!!"
        );
    }
    tracing::info!(?settings, "starting");
    let state = build_state(&settings, None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.addr)
            .await
            .with_context(|| format!("binding {}", settings.addr))?;
        // One line on stderr, `oasis: listening on http://ADDR`, once the socket is bound:
        // with `--addr 127.0.0.1:0` it names the port the kernel chose, whatever `OASIS_LOG`
        // filters (scripts and tests read the address from it). Connections made from now on
        // wait in the backlog until `serve` accepts them.
        eprintln!("oasis: listening on http://{}", listener.local_addr()?);
        serve(listener, state, shutdown_signal()).await
    });
    // Guest code still running on a blocking thread (a run's cell at shutdown) is not waited
    // for beyond this: its session keeps its last hibernated state.
    rt.shutdown_timeout(Duration::from_secs(5));
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_other_descriptors() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1 << 20)), 1024);
        // The 300-descriptor probe: a quarter or 128 kept for the rest.
        assert_eq!(connection_cap(1024, Some(300)), 172);
        assert_eq!(connection_cap(1024, Some(1024)), 768);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(1024, Some(64)), 16);
    }

    #[test]
    fn hibernation_knobs_reach_the_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServeArgs::default();
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert!(s.sessions.hibernate && s.sessions.hibernate_every_turn);
        assert_eq!(
            s.sessions.session_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        args.knobs.hibernate = Some(false);
        args.knobs.hibernate_every_turn = Some(false);
        args.knobs.session_retention_days = Some(2);
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert!(!s.sessions.hibernate && !s.sessions.hibernate_every_turn);
        assert_eq!(
            s.sessions.session_retention,
            Duration::from_secs(2 * 24 * 3600)
        );
        // 0 days would delete every session at once.
        args.knobs.session_retention_days = Some(0);
        assert!(Settings::resolve(dir.path(), &args).is_err());
    }

    #[test]
    fn the_object_store_url_comes_from_flags_then_toml() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("oasis.toml");
        std::fs::write(&config, "object_store_url = \"s3://bkt/a/b\"\n").unwrap();
        let mut args = ServeArgs::default();
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert_eq!(s.object_store_url, None);
        args.config = Some(config);
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert_eq!(s.object_store_url.as_deref(), Some("s3://bkt/a/b"));
        args.knobs.object_store_url = Some("file:///srv/oasis".into());
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert_eq!(s.object_store_url.as_deref(), Some("file:///srv/oasis"));
    }

    #[test]
    fn connection_limits_come_from_flags_then_toml_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("oasis.toml");
        std::fs::write(
            &config,
            "header_timeout_secs = 3\nidle_timeout_secs = 4\nmax_connections = 5\n",
        )
        .unwrap();
        let mut args = ServeArgs::default();
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert_eq!(s.api.connections, ConnLimits::default());
        args.config = Some(config.clone());
        let s = Settings::resolve(dir.path(), &args).unwrap();
        let c = s.api.connections;
        assert_eq!(c.header_timeout, Duration::from_secs(3));
        assert_eq!(c.idle_timeout, Duration::from_secs(4));
        assert_eq!(c.max_connections, 5);
        args.knobs.idle_timeout_secs = Some(7);
        let s = Settings::resolve(dir.path(), &args).unwrap();
        assert_eq!(s.api.connections.idle_timeout, Duration::from_secs(7));
        args.knobs.max_connections = Some(0);
        assert!(Settings::resolve(dir.path(), &args).is_err());
        args.knobs.max_connections = None;
        args.knobs.header_timeout_secs = Some(0);
        assert!(Settings::resolve(dir.path(), &args).is_err());
    }
}
