//! Run orchestration: a durable queue of runs (the store's `queued` runs), a bounded set of
//! workers that drive them through the model backends and the sandbox, the thread lock, cancel
//! and expiry. No axum, no SQL, no wasmtime types here.
//!
//! - [`state`]: the one transition function every run-status change goes through.
//! - [`events`]: the stream events of runs.
//! - `commands`: what callers ask (create, modify, cancel, submit outputs); `queue`: the
//!   workers, restart recovery and the expiry sweep; `finish`: a run's end, in one transaction
//!   with its open steps and messages.
//! - `worker`: a worker's drive of one run; `context`: what a drive knows; `turn`: one model
//!   turn (text into a message, calls into a step); `tools`: the tool step and code cells;
//!   `calls`: tool-call deltas; `prompt`: the conversation a model sees; `annotate`:
//!   `sandbox:/mnt/data/…` links → `file_path` annotations.

mod annotate;
mod calls;
mod commands;
mod context;
pub mod events;
mod finish;
mod prompt;
mod queue;
mod search;
pub mod state;
mod tools;
mod turn;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Serialize};

use events::Hub;
pub use events::{EventStream, StreamEvent};
use state::RunStatus;

use crate::backend::ChatMessage;
use crate::backend::local::Local;
use crate::backend::upstream::Upstream;
use crate::bucket::Bucket;
use crate::model::{Kind, Message, Object, Run, Thread, Tool, Truncation};
use crate::sandbox::Sessions;
use crate::store::{Record, Store, StoreError, StoreExt, TxExt};
use crate::tenancy::Project;

/// Knobs of the orchestrator.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Runs driven at once; others wait in the queue.
    pub workers: usize,
    /// A run expires this long after it was created.
    pub run_expiry: Duration,
    /// How often waiting runs are checked for expiry.
    pub sweep_every: Duration,
    /// Largest output file turned into a File.
    pub max_file_bytes: u64,
    /// This node's name in the store (which runs it drives).
    pub node: String,
    /// Whether this process is the only one on its store (SQLite): at start it takes over
    /// every run left unfinished, whoever drove it.
    pub exclusive: bool,
    /// A node silent this long is lost: the runs it drove fail and others take its queue.
    pub node_lease: Duration,
    /// How often to look for runs other nodes queued (a run this node queues wakes it at
    /// once).
    pub claim_poll: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            workers: 64,
            run_expiry: Duration::from_secs(600),
            sweep_every: Duration::from_secs(1),
            max_file_bytes: 512 * 1024 * 1024,
            node: "local".into(),
            exclusive: true,
            node_lease: Duration::from_secs(10),
            claim_poll: Duration::from_millis(500),
        }
    }
}

/// Why a request about runs was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("No {kind} found with id '{id}'.")]
    NotFound { kind: &'static str, id: String },
    /// A 400 (with the request field it is about, if any).
    #[error("{message}")]
    Invalid {
        param: Option<&'static str>,
        message: String,
    },
    /// The project is at one of its limits (a 429).
    #[error("{0}")]
    OverLimit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl RunError {
    fn invalid(param: Option<&'static str>, message: impl Into<String>) -> RunError {
        RunError::Invalid {
            param,
            message: message.into(),
        }
    }
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;

/// A run to create; the API has validated each field.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub assistant_id: String,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub additional_instructions: Option<String>,
    /// User messages added to the thread before the run (built, not stored).
    pub additional_messages: Vec<Message>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<crate::model::ToolChoiceOption>,
    pub parallel_tool_calls: Option<bool>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub truncation_strategy: Option<Truncation>,
    pub max_prompt_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub response_format: Option<crate::model::ResponseFormatOption>,
    pub metadata: crate::model::Metadata,
}

/// What a run said and did so far, as the model sees it (not served; kept so a run that waited
/// for tool outputs continues the same conversation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Transcript {
    pub id: String,
    pub thread_id: String,
    pub created_at: i64,
    pub messages: Vec<ChatMessage>,
    /// Tokens used so far (the run shows them once it ends).
    #[serde(default)]
    pub usage: crate::model::RunUsage,
    /// The tokens of the turn that made the tool step now waiting for outputs: a step shows
    /// its usage once it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_usage: Option<crate::model::RunUsage>,
}

impl Transcript {
    fn id_for(run_id: &str) -> String {
        format!("{run_id}.transcript")
    }
}

impl Object for Transcript {
    const KIND: Kind = Kind::Transcript;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
    fn scope(&self) -> Option<&str> {
        Some(&self.thread_id)
    }
}

/// The run service. The root handle (from [`Orchestrator::new`]) sees every project: the run
/// queue, the sweeps and node recovery use it. [`Orchestrator::for_project`] gives a
/// project's handle, whose store view, vector stores and session keys are that project's;
/// the API hands out only those, and a worker drives each run through its project's handle.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
    /// The store as this handle's project sees it (the system's view for the root handle).
    store: Arc<dyn Store>,
    project: Project,
}

struct Inner {
    store: Arc<dyn Store>,
    /// Where File bytes live.
    bucket: Bucket,
    sessions: Option<Sessions>,
    /// On a cluster: sessions shared with the other nodes.
    roaming: Option<Arc<crate::roaming::Roaming>>,
    local: Arc<Local>,
    upstream: Option<Arc<Upstream>>,
    /// Vector stores, which file_search searches.
    vectors: Option<crate::vectors::Vectors>,
    /// Projects and their limits, by id (for the runs a worker claims).
    keys: Option<crate::tenancy::Keys>,
    config: OrchestratorConfig,
    hub: Hub,
    /// Cancel flags of the runs workers are driving.
    driving: Mutex<HashMap<String, CancellationToken>>,
    /// Wakes the claimer: a run was queued here or a worker came free.
    wake: tokio::sync::Notify,
    /// Set once [`Orchestrator::start`] ran.
    started: std::sync::atomic::AtomicBool,
    /// Set when the node drains: it claims no more runs.
    draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", &self.inner.config)
            .field("upstream", &self.inner.upstream.is_some())
            .finish_non_exhaustive()
    }
}

fn not_found(kind: &'static str, id: &str) -> RunError {
    RunError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// A status as OpenAI spells it.
pub fn status_str(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "queued",
        RunStatus::InProgress => "in_progress",
        RunStatus::RequiresAction => "requires_action",
        RunStatus::Cancelling => "cancelling",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Failed => "failed",
        RunStatus::Completed => "completed",
        RunStatus::Incomplete => "incomplete",
        RunStatus::Expired => "expired",
    }
}

impl Orchestrator {
    pub fn new(
        store: Arc<dyn Store>,
        bucket: Bucket,
        sessions: Option<Sessions>,
        upstream: Option<Arc<Upstream>>,
        vectors: Option<crate::vectors::Vectors>,
        config: OrchestratorConfig,
    ) -> Orchestrator {
        Orchestrator {
            store: store.clone(),
            project: Project::default_project(),
            inner: Arc::new(Inner {
                store,
                bucket,
                sessions,
                roaming: None,
                local: Arc::new(Local),
                upstream,
                vectors,
                keys: None,
                config,
                hub: Hub::default(),
                driving: Mutex::new(HashMap::new()),
                wake: tokio::sync::Notify::new(),
                started: Default::default(),
                draining: Default::default(),
            }),
        }
    }

    /// Share code-interpreter sessions with the other nodes of a cluster through `roaming`
    /// (call right after [`Self::new`]).
    pub fn with_roaming(mut self, roaming: Arc<crate::roaming::Roaming>) -> Orchestrator {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.roaming = Some(roaming);
        }
        self
    }

    /// Know projects' limits from `keys` (call right after [`Self::new`]).
    pub fn with_keys(mut self, keys: crate::tenancy::Keys) -> Orchestrator {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.keys = Some(keys);
        }
        self
    }

    /// This service as `project` sees it.
    pub fn for_project(&self, project: Project) -> Orchestrator {
        Orchestrator {
            inner: self.inner.clone(),
            store: self.inner.store.for_project(&project.id),
            project,
        }
    }

    /// The handle of the project with id `id` (a claimed run's), with its current limits.
    pub(super) fn for_project_id(&self, id: &str) -> Orchestrator {
        let project = self
            .inner
            .keys
            .as_ref()
            .and_then(|k| k.project(id))
            .unwrap_or_else(|| Project::unlisted(id));
        self.for_project(project)
    }

    /// The sandbox's key for the session of this project's thread `thread_id`.
    pub(super) fn session_of(&self, thread_id: &str) -> String {
        self.project.session_key(thread_id)
    }

    /// Whether `bytes` more stay within the project's storage limit (a File that would not is
    /// not stored; it stays in `/mnt/data`, unlinked, as one past the export budget does).
    pub(super) async fn storage_fits(&self, bytes: u64) -> bool {
        if self.project.limits.max_storage_bytes.is_none() {
            return true;
        }
        match self.db(|s| s.stored_bytes()).await {
            Ok(used) => self.project.storage_fits(used, bytes),
            Err(e) => {
                tracing::warn!(error = %e, "could not sum a project's stored bytes");
                false
            }
        }
    }

    /// Vector stores as this handle's project sees them.
    pub(super) fn vectors(&self) -> Option<crate::vectors::Vectors> {
        let v = self.inner.vectors.as_ref()?;
        Some(match self.store.project() {
            Some(p) => v.for_project(p),
            None => v.clone(),
        })
    }

    /// Run blocking store work off the async threads.
    pub(super) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| RunError::Internal(anyhow::anyhow!("store task: {e}")))??)
    }

    pub(super) fn emit(&self, run_id: &str, event: StreamEvent) {
        self.inner.hub.emit(run_id, event);
    }

    /// Fetch a run of a thread.
    pub async fn get_run(&self, thread_id: &str, run_id: &str) -> Result<Run> {
        let (tid, rid) = (thread_id.to_string(), run_id.to_string());
        let run = self
            .db(move |s| {
                s.fetch::<Thread>(&tid)?;
                s.find::<Run>(&rid)
            })
            .await?;
        match run {
            Some(r) if r.thread_id == thread_id => Ok(r),
            _ => Err(not_found("run", run_id)),
        }
    }

    /// Read, change and save a run in one transaction that holds it locked, so no other
    /// change (on any node) comes between; the save is a compare-and-set on the status read.
    /// `f` may run again if the database retries the transaction.
    pub(super) async fn update_run(
        &self,
        run_id: &str,
        mut f: impl FnMut(&mut Run) -> Result<()> + Send + 'static,
    ) -> Result<Run> {
        let rid = run_id.to_string();
        let node = self.inner.config.node.clone();
        self.db(move |s| {
            s.within(|tx| {
                let mut run = tx.fetch::<Run>(&rid)?;
                let from = run.status;
                if let Err(e) = f(&mut run) {
                    return Ok(Err(e));
                }
                if !tx.update_if(&Record::of(&run)?, status_str(from))? {
                    return Err(StoreError::Other(anyhow::anyhow!(
                        "run {rid} changed under its lock"
                    )));
                }
                // A run waiting for tool outputs is no longer held by a worker.
                if run.status == RunStatus::RequiresAction && from != run.status {
                    tx.set_run_owner(&rid, Some(&node), false)?;
                }
                Ok(Ok(run))
            })
        })
        .await?
    }
}
