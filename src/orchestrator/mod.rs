//! Run orchestration: a durable queue of runs (the store's `queued` runs), a bounded set of
//! workers that drive them through the model backends and the sandbox, the thread lock, cancel
//! and expiry. No axum, no SQL, no wasmtime types here.
//!
//! - [`state`]: the one transition function every run-status change goes through.
//! - [`events`]: the stream events of runs.
//! - `worker`: what a worker does with a run; `prompt`: the conversation a model sees;
//!   `annotate`: `sandbox:/mnt/data/…` links → `file_path` annotations.

mod annotate;
mod calls;
pub mod events;
mod prompt;
pub mod state;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use events::Hub;
pub use events::{EventStream, StreamEvent};
use state::{RunEvent, RunStatus, transition};

use crate::backend::local::Local;
use crate::backend::upstream::Upstream;
use crate::backend::{Backend, ChatMessage, LOCAL_MODEL};
use crate::model::{
    Assistant, Kind, LastError, Message, MessageStatus, Object, Run, RunStep, StepDetails,
    StepStatus, Thread, Tool, Truncation, new_id, now,
};
use crate::sandbox::Sessions;
use crate::store::{Filter, Order, Page, Record, Store, StoreError, StoreExt};

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
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            workers: 64,
            run_expiry: Duration::from_secs(600),
            sweep_every: Duration::from_secs(1),
            max_file_bytes: 512 * 1024 * 1024,
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
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub truncation_strategy: Option<Truncation>,
    pub max_prompt_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub response_format: Option<serde_json::Value>,
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

#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    files_dir: PathBuf,
    sessions: Option<Sessions>,
    local: Arc<Local>,
    upstream: Option<Arc<Upstream>>,
    config: OrchestratorConfig,
    hub: Hub,
    /// Serializes thread-lock checks with the writes they guard.
    gate: tokio::sync::Mutex<()>,
    /// Serializes read-modify-write of runs.
    runs_lock: tokio::sync::Mutex<()>,
    /// Cancel flags of the runs workers are driving.
    driving: Mutex<HashMap<String, Arc<AtomicBool>>>,
    queue_tx: tokio::sync::mpsc::UnboundedSender<String>,
    queue_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
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

impl Orchestrator {
    pub fn new(
        store: Arc<dyn Store>,
        files_dir: PathBuf,
        sessions: Option<Sessions>,
        upstream: Option<Arc<Upstream>>,
        config: OrchestratorConfig,
    ) -> Orchestrator {
        let (queue_tx, queue_rx) = tokio::sync::mpsc::unbounded_channel();
        Orchestrator {
            inner: Arc::new(Inner {
                store,
                files_dir,
                sessions,
                local: Arc::new(Local),
                upstream,
                config,
                hub: Hub::default(),
                gate: tokio::sync::Mutex::new(()),
                runs_lock: tokio::sync::Mutex::new(()),
                driving: Mutex::new(HashMap::new()),
                queue_tx,
                queue_rx: Mutex::new(Some(queue_rx)),
            }),
        }
    }

    /// Start the workers and the expiry sweeper, and take over the runs a previous process
    /// left: in-flight ones fail (their worker died with it), queued ones run. Call once,
    /// inside a Tokio runtime.
    pub async fn start(&self) -> Result<()> {
        let Some(rx) = self
            .inner
            .queue_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        self.recover().await?;
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..self.inner.config.workers.max(1) {
            let rx = rx.clone();
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(run_id) = next else { break };
                    me.drive(&run_id).await;
                }
            });
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.inner.config.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep().await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
            }
        });
        Ok(())
    }

    /// Run blocking store work off the async threads.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.inner.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| RunError::Internal(anyhow::anyhow!("store task: {e}")))??)
    }

    /// Every run of `status`, oldest first.
    async fn runs_with_status(&self, status: RunStatus) -> Result<Vec<Run>> {
        let value = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.db(move |s| {
            let filter = Filter {
                field: "status",
                value,
            };
            let mut out = vec![];
            let mut after = None;
            loop {
                let page = Page {
                    limit: 100,
                    order: Order::Asc,
                    after: after.clone(),
                    before: None,
                };
                let (items, more) = s.page::<Run>(None, Some(&filter), &page)?;
                after = items.last().map(|r| r.id.clone());
                out.extend(items);
                if !more {
                    return Ok(out);
                }
            }
        })
        .await
    }

    async fn recover(&self) -> Result<()> {
        for run in self.runs_with_status(RunStatus::InProgress).await? {
            let msg = "Oasis restarted while this run was in progress.";
            let _ = self
                .finish(&run.id, RunEvent::Fail, Some(("server_error", msg)))
                .await;
        }
        for run in self.runs_with_status(RunStatus::Cancelling).await? {
            let _ = self.finish(&run.id, RunEvent::Stopped, None).await;
        }
        for run in self.runs_with_status(RunStatus::Queued).await? {
            let _ = self.inner.queue_tx.send(run.id);
        }
        Ok(())
    }

    /// Expire the waiting runs whose time is up (running ones are checked by their worker).
    async fn sweep(&self) -> Result<()> {
        let t = now();
        for status in [RunStatus::RequiresAction, RunStatus::Queued] {
            for run in self.runs_with_status(status).await? {
                if run.expires_at.is_some_and(|e| e <= t) && !self.is_driving(&run.id) {
                    let _ = self.finish(&run.id, RunEvent::Expire, None).await;
                }
            }
        }
        Ok(())
    }

    fn is_driving(&self, run_id: &str) -> bool {
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(run_id)
    }

    /// The models served: the built-in one and the upstream's.
    pub async fn models(&self) -> Vec<String> {
        let mut out = vec![LOCAL_MODEL.to_string()];
        if let Some(u) = &self.inner.upstream {
            match u.models().await {
                Ok(m) => out.extend(m.into_iter().filter(|m| m != LOCAL_MODEL)),
                Err(e) => tracing::warn!(error = %e, "could not list the upstream's models"),
            }
        }
        out
    }

    /// The backend serving `model`.
    fn backend_for(&self, model: &str) -> Arc<dyn Backend> {
        match &self.inner.upstream {
            Some(u) if model != LOCAL_MODEL => u.clone(),
            _ => self.inner.local.clone(),
        }
    }

    fn check_model(&self, model: &str) -> Result<()> {
        if let Some(u) = &self.inner.upstream
            && model != LOCAL_MODEL
            && !u.serves(model)
        {
            return Err(RunError::invalid(
                Some("model"),
                format!("The model '{model}' does not exist or you do not have access to it."),
            ));
        }
        Ok(())
    }

    /// The newest run of a thread, if it still holds the thread's lock.
    fn active_run(s: &dyn Store, thread_id: &str) -> crate::store::Result<Option<Run>> {
        let page = Page {
            limit: 1,
            order: Order::Desc,
            after: None,
            before: None,
        };
        let (runs, _) = s.page::<Run>(Some(thread_id), None, &page)?;
        Ok(runs.into_iter().next().filter(|r| r.status.locks_thread()))
    }

    /// Add messages to a thread, unless a run holds its lock.
    pub async fn add_messages(&self, thread_id: &str, msgs: Vec<Message>) -> Result<()> {
        let _gate = self.inner.gate.lock().await;
        let tid = thread_id.to_string();
        let locked = self
            .db(move |s| {
                s.fetch::<Thread>(&tid)?;
                Self::active_run(s, &tid)
            })
            .await?;
        if let Some(run) = locked {
            return Err(RunError::invalid(
                None,
                format!(
                    "Can't add messages to {thread_id} while a run {} is active.",
                    run.id
                ),
            ));
        }
        let records = msgs
            .iter()
            .map(Record::of)
            .collect::<crate::store::Result<Vec<_>>>()?;
        self.db(move |s| s.insert_all(&records)).await
    }

    /// Create a thread (with its messages) and a run on it.
    pub async fn create_thread_and_run(
        &self,
        thread: Thread,
        msgs: Vec<Message>,
        req: NewRun,
        stream: bool,
    ) -> Result<(Run, Option<EventStream>)> {
        let mut records = vec![Record::of(&thread)?];
        for m in &msgs {
            records.push(Record::of(m)?);
        }
        let aid = req.assistant_id.clone();
        self.db(move |s| {
            s.fetch::<Assistant>(&aid)?;
            s.insert_all(&records)
        })
        .await?;
        let created = self
            .create_run(&thread.id, req, stream, Some(&thread))
            .await;
        if created.is_err() {
            let tid = thread.id.clone();
            let _ = self.db(move |s| s.delete(Kind::Thread, &tid)).await;
        }
        created
    }

    /// Create a run on a thread and queue it. With `stream`, the returned stream starts with
    /// `thread.created` (when `new_thread` is given), `thread.run.created` and `thread.run.queued`.
    pub async fn create_run(
        &self,
        thread_id: &str,
        req: NewRun,
        stream: bool,
        new_thread: Option<&Thread>,
    ) -> Result<(Run, Option<EventStream>)> {
        let (tid, aid) = (thread_id.to_string(), req.assistant_id.clone());
        let (_thread, assistant) = self
            .db(move |s| Ok((s.fetch::<Thread>(&tid)?, s.fetch::<Assistant>(&aid)?)))
            .await?;
        let model = req.model.clone().unwrap_or_else(|| assistant.model.clone());
        self.check_model(&model)?;
        let mut instructions = req
            .instructions
            .clone()
            .or_else(|| assistant.instructions.clone())
            .unwrap_or_default();
        if let Some(extra) = &req.additional_instructions {
            if !instructions.is_empty() {
                instructions.push_str("\n\n");
            }
            instructions.push_str(extra);
        }
        let created_at = now();
        let run = Run {
            id: new_id("run_"),
            object: "thread.run".into(),
            created_at,
            thread_id: thread_id.to_string(),
            assistant_id: assistant.id.clone(),
            status: RunStatus::Queued,
            required_action: None,
            last_error: None,
            expires_at: Some(created_at + self.inner.config.run_expiry.as_secs() as i64),
            started_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: None,
            incomplete_details: None,
            model,
            instructions,
            tools: req.tools.clone().unwrap_or_else(|| assistant.tools.clone()),
            metadata: req.metadata.clone(),
            usage: None,
            temperature: req.temperature.or(assistant.temperature),
            top_p: req.top_p.or(assistant.top_p),
            max_prompt_tokens: req.max_prompt_tokens,
            max_completion_tokens: req.max_completion_tokens,
            truncation_strategy: req.truncation_strategy.clone().unwrap_or(Truncation {
                kind: "auto".into(),
                last_messages: None,
            }),
            tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            response_format: req
                .response_format
                .clone()
                .unwrap_or_else(|| assistant.response_format.clone()),
        };
        check_tool_choice(&run)?;
        let transcript = Transcript {
            id: Transcript::id_for(&run.id),
            thread_id: thread_id.to_string(),
            created_at,
            messages: vec![],
            usage: Default::default(),
            step_usage: None,
        };
        let mut records = vec![];
        for m in &req.additional_messages {
            records.push(Record::of(m)?);
        }
        records.push(Record::of(&run)?);
        records.push(Record::of(&transcript)?);
        let rx = stream.then(|| self.inner.hub.subscribe(&run.id));
        {
            let _gate = self.inner.gate.lock().await;
            let tid = thread_id.to_string();
            let active = self
                .db(move |s| {
                    let active = Self::active_run(s, &tid)?;
                    if active.is_none() {
                        s.insert_all(&records)?;
                    }
                    Ok(active)
                })
                .await
                .inspect_err(|_| self.inner.hub.forget(&run.id))?;
            if let Some(a) = active {
                self.inner.hub.forget(&run.id);
                return Err(RunError::invalid(
                    None,
                    format!("Thread {thread_id} already has an active run {}.", a.id),
                ));
            }
        }
        if let Some(t) = new_thread {
            self.emit(&run.id, StreamEvent::ThreadCreated(Box::new(t.clone())));
        }
        self.emit(&run.id, StreamEvent::RunCreated(Box::new(run.clone())));
        self.emit(&run.id, StreamEvent::run(&run));
        let _ = self.inner.queue_tx.send(run.id.clone());
        Ok((run, rx))
    }

    fn emit(&self, run_id: &str, event: StreamEvent) {
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

    /// Read, change and save a run, serialized with every other run change.
    async fn update_run(
        &self,
        run_id: &str,
        f: impl FnOnce(&mut Run) -> Result<()> + Send + 'static,
    ) -> Result<Run> {
        let _lock = self.inner.runs_lock.lock().await;
        let rid = run_id.to_string();
        self.db(move |s| {
            let mut run = s.fetch::<Run>(&rid)?;
            match f(&mut run) {
                Ok(()) => {
                    s.save(&run)?;
                    Ok(Ok(run))
                }
                Err(e) => Ok(Err(e)),
            }
        })
        .await?
    }

    /// Change metadata.
    pub async fn modify_run(
        &self,
        thread_id: &str,
        run_id: &str,
        metadata: crate::model::Metadata,
    ) -> Result<Run> {
        self.get_run(thread_id, run_id).await?;
        self.update_run(run_id, move |r| {
            r.metadata = metadata;
            Ok(())
        })
        .await
    }

    /// Ask a run to stop. A run a worker is driving becomes `cancelling` (its running code cell
    /// is interrupted) and then `cancelled`; a waiting one is cancelled at once.
    pub async fn cancel(&self, thread_id: &str, run_id: &str) -> Result<Run> {
        self.get_run(thread_id, run_id).await?;
        let run = self
            .update_run(run_id, |r| {
                let to = transition(r.status, RunEvent::Cancel).map_err(|_| {
                    RunError::invalid(
                        None,
                        format!("Cannot cancel run with status '{}'.", status_str(r.status)),
                    )
                })?;
                r.status = to;
                Ok(())
            })
            .await?;
        self.emit(run_id, StreamEvent::run(&run));
        let flag = self
            .inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned();
        match flag {
            Some(f) => f.store(true, std::sync::atomic::Ordering::SeqCst),
            // No worker holds it: nothing to interrupt.
            None => {
                self.finish(run_id, RunEvent::Stopped, None).await?;
            }
        }
        Ok(run)
    }

    /// Cancel the thread's active run, if any (before the thread is deleted, so a running cell
    /// is interrupted instead of being waited for).
    pub async fn stop_thread(&self, thread_id: &str) -> Result<()> {
        let tid = thread_id.to_string();
        let active = self.db(move |s| Self::active_run(s, &tid)).await?;
        if let Some(run) = active
            && run.status != RunStatus::Cancelling
        {
            let _ = self.cancel(thread_id, &run.id).await;
        }
        Ok(())
    }

    /// Submit function outputs to a run that `requires_action`; it is queued again.
    pub async fn submit_tool_outputs(
        &self,
        thread_id: &str,
        run_id: &str,
        outputs: Vec<(String, String)>,
        stream: bool,
    ) -> Result<(Run, Option<EventStream>)> {
        let run = self.get_run(thread_id, run_id).await?;
        if run.status != RunStatus::RequiresAction {
            return Err(RunError::invalid(
                None,
                format!(
                    "Runs in status \"{}\" do not accept tool outputs.",
                    status_str(run.status)
                ),
            ));
        }
        let pending: Vec<String> = run
            .required_action
            .as_ref()
            .map(|a| a.tool_calls().iter().map(|c| c.id.clone()).collect())
            .unwrap_or_default();
        let mut by_id: HashMap<String, String> = HashMap::new();
        for (id, out) in outputs {
            if !pending.contains(&id) {
                return Err(RunError::invalid(
                    Some("tool_outputs"),
                    format!("No tool call found with id '{id}' for run {run_id}."),
                ));
            }
            if by_id.insert(id.clone(), out).is_some() {
                return Err(RunError::invalid(
                    Some("tool_outputs"),
                    format!("Tool output for tool call '{id}' was submitted twice."),
                ));
            }
        }
        if let Some(missing) = pending.iter().find(|id| !by_id.contains_key(*id)) {
            return Err(RunError::invalid(
                Some("tool_outputs"),
                format!(
                    "Expected tool outputs for call_ids {pending:?}, got none for '{missing}'."
                ),
            ));
        }
        let rx = stream.then(|| self.inner.hub.subscribe(run_id));
        // Move the run on first (so a second submit is refused), then record the outputs.
        let run = self
            .update_run(run_id, |r| {
                r.status = transition(r.status, RunEvent::ToolOutputsSubmitted).map_err(|_| {
                    RunError::invalid(None, "This run no longer accepts tool outputs.")
                })?;
                r.required_action = None;
                Ok(())
            })
            .await
            .inspect_err(|_| self.inner.hub.forget(run_id))?;
        self.record_outputs(&run, &by_id).await?;
        self.emit(run_id, StreamEvent::run(&run));
        let _ = self.inner.queue_tx.send(run_id.to_string());
        Ok((run, rx))
    }

    /// Put submitted outputs into the waiting step and the transcript.
    async fn record_outputs(&self, run: &Run, outputs: &HashMap<String, String>) -> Result<()> {
        let step = self.pending_step(run).await?;
        let tid = Transcript::id_for(&run.id);
        let step_usage = self
            .db(move |s| Ok(s.find::<Transcript>(&tid)?.and_then(|t| t.step_usage)))
            .await?;
        if let Some(mut step) = step {
            step.usage = step_usage.or(step.usage);
            if let StepDetails::ToolCalls { tool_calls } = &mut step.step_details {
                for c in tool_calls.iter_mut() {
                    if let crate::model::StepToolCall::Function { id, function } = c
                        && let Some(o) = outputs.get(id.as_str())
                    {
                        function.output = Some(o.clone());
                    }
                }
            }
            step.status = StepStatus::Completed;
            step.completed_at = Some(now());
            let s2 = step.clone();
            self.db(move |s| s.save(&s2)).await?;
            self.emit(&run.id, StreamEvent::StepCompleted(Box::new(step.clone())));
        }
        let tid = Transcript::id_for(&run.id);
        let outs = outputs.clone();
        self.db(move |s| {
            let mut t = s.fetch::<Transcript>(&tid)?;
            t.step_usage = None;
            // Answer in the order the calls were made.
            let order: Vec<String> = t
                .messages
                .iter()
                .rev()
                .find(|m| !m.tool_calls.is_empty())
                .map(|m| m.tool_calls.iter().map(|c| c.id.clone()).collect())
                .unwrap_or_default();
            for id in order {
                if let Some(o) = outs.get(&id) {
                    t.messages.push(ChatMessage::tool_result(&id, o.clone()));
                }
            }
            s.save(&t)
        })
        .await
    }

    /// The run's step still in progress, if any.
    async fn pending_step(&self, run: &Run) -> Result<Option<RunStep>> {
        let steps = self.steps_of(run).await?;
        Ok(steps
            .into_iter()
            .rev()
            .find(|s| s.status == StepStatus::InProgress))
    }

    async fn steps_of(&self, run: &Run) -> Result<Vec<RunStep>> {
        let (tid, rid) = (run.thread_id.clone(), run.id.clone());
        self.db(move |s| steps_in(s, &tid, &rid)).await
    }

    /// End a run with `event` (a terminal transition), closing its open step and message in
    /// the same transaction, so no reader sees a finished run with a step still open.
    async fn finish(
        &self,
        run_id: &str,
        event: RunEvent,
        error: Option<(&str, &str)>,
    ) -> Result<Run> {
        self.finish_with(run_id, event, error, |_| {}).await
    }

    /// [`Self::finish`], also setting what only a finished run shows (its `usage`, its
    /// `incomplete_details`) in the same write, so no poller sees them on a running run.
    async fn finish_with(
        &self,
        run_id: &str,
        event: RunEvent,
        error: Option<(&str, &str)>,
        at_end: impl FnOnce(&mut Run) + Send + 'static,
    ) -> Result<Run> {
        let err = error.map(|(c, m)| LastError {
            code: c.to_string(),
            message: m.to_string(),
        });
        let _lock = self.inner.runs_lock.lock().await;
        let rid = run_id.to_string();
        let (run, closed, cut_short) = self
            .db(move |s| {
                let mut r = s.fetch::<Run>(&rid)?;
                let to = match transition(r.status, event) {
                    Ok(to) => to,
                    Err(e) => return Ok(Err(RunError::Internal(e.into()))),
                };
                r.status = to;
                let t = now();
                r.required_action = None;
                at_end(&mut r);
                match to {
                    RunStatus::Failed => {
                        r.failed_at = Some(t);
                        r.last_error = err.clone();
                    }
                    RunStatus::Cancelled => r.cancelled_at = Some(t),
                    RunStatus::Completed | RunStatus::Incomplete => r.completed_at = Some(t),
                    _ => {}
                }
                if to.is_terminal() && r.usage.is_none() {
                    let used = s
                        .find::<Transcript>(&Transcript::id_for(&r.id))?
                        .map(|t| t.usage)
                        .unwrap_or_default();
                    r.usage = Some(used);
                }
                // Close what the run left open.
                let (step_status, msg_reason) = match to {
                    RunStatus::Cancelled => (StepStatus::Cancelled, Some("run_cancelled")),
                    RunStatus::Expired => (StepStatus::Expired, Some("run_expired")),
                    RunStatus::Failed => (StepStatus::Failed, Some("run_failed")),
                    _ => (StepStatus::Completed, None),
                };
                let mut records = vec![Record::of(&r)?];
                let mut closed = vec![];
                let mut cut_short = vec![];
                for mut step in steps_in(s, &r.thread_id, &r.id)? {
                    if step.status != StepStatus::InProgress {
                        continue;
                    }
                    step.status = step_status;
                    match step_status {
                        StepStatus::Cancelled => step.cancelled_at = Some(t),
                        StepStatus::Expired => step.expired_at = Some(t),
                        StepStatus::Failed => {
                            step.failed_at = Some(t);
                            step.last_error = err.clone();
                        }
                        _ => step.completed_at = Some(t),
                    }
                    if let (Some(reason), StepDetails::MessageCreation { message_creation }) =
                        (msg_reason, &step.step_details)
                        && let Some(mut m) = s.find::<Message>(&message_creation.message_id)?
                        && m.status == MessageStatus::InProgress
                    {
                        m.status = MessageStatus::Incomplete;
                        m.incomplete_at = Some(t);
                        m.incomplete_details = Some(json!({ "reason": reason }));
                        records.push(Record::of(&m)?);
                        cut_short.push(m);
                    }
                    records.push(Record::of(&step)?);
                    closed.push(step);
                }
                s.save_all(&records)?;
                Ok(Ok((r, closed, cut_short)))
            })
            .await??;
        for m in &cut_short {
            self.emit(run_id, StreamEvent::MessageIncomplete(Box::new(m.clone())));
        }
        for step in &closed {
            if let Some(ev) = StreamEvent::step_ended(step) {
                self.emit(run_id, ev);
            }
        }
        self.emit(run_id, StreamEvent::run(&run));
        Ok(run)
    }

    /// Streaming ends with an `error` event when a run's events stop making sense (e.g. its
    /// thread was deleted); this builds one.
    pub fn error_event(message: &str) -> StreamEvent {
        StreamEvent::error(message)
    }
}

/// A `tool_choice` that forces a tool must name one the run has.
fn check_tool_choice(run: &Run) -> Result<()> {
    let choice = &run.tool_choice;
    match choice.get("type").and_then(|t| t.as_str()) {
        Some("function") => {
            let name = choice
                .pointer("/function/name")
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            let known = run.tools.iter().any(
                |t| matches!(t, crate::model::Tool::Function { function } if function.name == name),
            );
            if !known {
                return Err(RunError::invalid(
                    Some("tool_choice"),
                    format!(
                        "Invalid 'tool_choice': the run has no function named '{name}' among its \
                         tools."
                    ),
                ));
            }
        }
        Some("code_interpreter")
            if !run
                .tools
                .iter()
                .any(|t| matches!(t, crate::model::Tool::CodeInterpreter)) =>
        {
            return Err(RunError::invalid(
                Some("tool_choice"),
                "Invalid 'tool_choice': the run has no code_interpreter tool.",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Every step of a run, oldest first.
fn steps_in(s: &dyn Store, thread_id: &str, run_id: &str) -> crate::store::Result<Vec<RunStep>> {
    let filter = Filter {
        field: "run_id",
        value: run_id.to_string(),
    };
    let mut page = Page {
        limit: 100,
        order: Order::Asc,
        after: None,
        before: None,
    };
    let mut out = vec![];
    loop {
        let (items, more) = s.page::<RunStep>(Some(thread_id), Some(&filter), &page)?;
        page.after = items.last().map(|r| r.id.clone());
        out.extend(items);
        if !more {
            return Ok(out);
        }
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
