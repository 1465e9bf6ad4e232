//! What callers ask of runs: create (also with a new thread), add messages under the thread
//! lock, modify, cancel, submit tool outputs.

use super::finish::{steps_in, steps_in_tx};
use std::collections::HashMap;
use std::sync::Arc;

use super::events::{EventStream, StreamEvent};
use super::state::{RunEvent, RunStatus, transition};

use crate::backend::{Backend, ChatMessage, LOCAL_MODEL};
use crate::model::{
    Assistant, Kind, Message, Run, RunStep, StepDetails, StepStatus, Thread, ToolChoiceOption,
    Truncation, new_id, now,
};
use crate::store::{Order, Page, Record, Store, StoreError, StoreExt, Tx, TxExt};

use super::{NewRun, Orchestrator, Result, RunError, Transcript, status_str};

/// A `tool_choice` that forces a tool must name one the run has.
pub(super) fn check_tool_choice(run: &Run) -> Result<()> {
    use crate::model::Tool;
    match &run.tool_choice {
        ToolChoiceOption::Function(name)
            if !run
                .tools
                .iter()
                .any(|t| matches!(t, Tool::Function { function } if function.name == *name)) =>
        {
            Err(RunError::invalid(
                Some("tool_choice"),
                format!(
                    "Invalid 'tool_choice': the run has no function named '{name}' among its \
                     tools."
                ),
            ))
        }
        ToolChoiceOption::CodeInterpreter
            if !run.tools.iter().any(|t| matches!(t, Tool::CodeInterpreter)) =>
        {
            Err(RunError::invalid(
                Some("tool_choice"),
                "Invalid 'tool_choice': the run has no code_interpreter tool.",
            ))
        }
        _ => Ok(()),
    }
}

/// Why a run was not created.
enum Refused {
    /// The thread has this active run.
    Busy(String),
    /// The project has this many unfinished runs, its limit.
    Full(u64),
}

impl Orchestrator {
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
    pub(super) fn backend_for(&self, model: &str) -> Arc<dyn Backend> {
        match &self.inner.upstream {
            Some(u) if model != LOCAL_MODEL => u.clone(),
            _ => self.inner.local.clone(),
        }
    }

    pub(super) fn check_model(&self, model: &str) -> Result<()> {
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
    pub(super) fn active_run(s: &dyn Store, thread_id: &str) -> crate::store::Result<Option<Run>> {
        let page = Page {
            limit: 1,
            order: Order::Desc,
            after: None,
            before: None,
        };
        let (runs, _) = s.page::<Run>(Some(thread_id), None, &page)?;
        Ok(runs.into_iter().next().filter(|r| r.status.locks_thread()))
    }

    /// [`Self::active_run`] in a transaction (after the thread was locked).
    pub(super) fn active_run_tx(
        tx: &mut dyn Tx,
        thread_id: &str,
    ) -> crate::store::Result<Option<Run>> {
        let page = Page {
            limit: 1,
            order: Order::Desc,
            after: None,
            before: None,
        };
        let (runs, _) = tx.page::<Run>(Some(thread_id), None, &page)?;
        Ok(runs.into_iter().next().filter(|r| r.status.locks_thread()))
    }

    /// Add messages to a thread, unless a run holds its lock: the thread is locked, the check
    /// made and the messages written in one transaction, so no run starts in between on any
    /// node.
    pub async fn add_messages(&self, thread_id: &str, msgs: Vec<Message>) -> Result<()> {
        let records = msgs
            .iter()
            .map(Record::of)
            .collect::<crate::store::Result<Vec<_>>>()?;
        let tid = thread_id.to_string();
        let locked = self
            .db(move |s| {
                s.within(|tx| {
                    tx.fetch::<Thread>(&tid)?;
                    let active = Self::active_run_tx(tx, &tid)?;
                    if active.is_none() {
                        for r in &records {
                            tx.insert(r)?;
                        }
                    }
                    Ok(active)
                })
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
        Ok(())
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
            object: crate::model::RunTag,
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
            tool_choice: req.tool_choice.clone().unwrap_or_default(),
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
        // The thread is locked, checked for an active run and the run written in one
        // transaction. A streamed run is reserved for this node, which holds its stream.
        let tid = thread_id.to_string();
        let (rid, owner) = (
            run.id.clone(),
            stream.then(|| self.inner.config.node.clone()),
        );
        // The project's unfinished runs are counted in the same transaction (which waits for
        // any other counting them), so no two creations both take the last place.
        let max_runs = self.project.limits.max_concurrent_runs;
        let refused = self
            .db(move |s| {
                s.within(|tx| {
                    tx.fetch::<Thread>(&tid)?;
                    if let Some(a) = Self::active_run_tx(tx, &tid)? {
                        return Ok(Some(Refused::Busy(a.id)));
                    }
                    if let Some(max) = max_runs
                        && tx.active_runs()? >= max as i64
                    {
                        return Ok(Some(Refused::Full(max)));
                    }
                    for r in &records {
                        tx.insert(r)?;
                    }
                    tx.set_run_owner(&rid, owner.as_deref(), false)?;
                    Ok(None)
                })
            })
            .await
            .inspect_err(|_| self.inner.hub.forget(&run.id))?;
        match refused {
            None => {}
            Some(Refused::Busy(active)) => {
                self.inner.hub.forget(&run.id);
                return Err(RunError::invalid(
                    None,
                    format!("Thread {thread_id} already has an active run {active}."),
                ));
            }
            Some(Refused::Full(max)) => {
                self.inner.hub.forget(&run.id);
                crate::metrics::limit_refused("runs");
                return Err(RunError::OverLimit(format!(
                    "Rate limit reached for project {}: at most {max} runs may be unfinished at \
                     once. Wait for one to end (or cancel one) and try again.",
                    self.project.id
                )));
            }
        }
        if let Some(t) = new_thread {
            self.emit(&run.id, StreamEvent::ThreadCreated(Box::new(t.clone())));
        }
        self.emit(&run.id, StreamEvent::RunCreated(Box::new(run.clone())));
        self.emit(&run.id, StreamEvent::run(&run));
        self.inner.wake.notify_one();
        Ok((run, rx))
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
            r.metadata = metadata.clone();
            Ok(())
        })
        .await
    }

    /// Ask a run to stop. A run a worker is driving becomes `cancelling` (its running code cell
    /// is interrupted) and then `cancelled`; a waiting one is cancelled at once.
    pub async fn cancel(&self, thread_id: &str, run_id: &str) -> Result<Run> {
        self.get_run(thread_id, run_id).await?;
        let rid = run_id.to_string();
        let (run, holder) = self
            .db(move |s| {
                s.within(|tx| {
                    let mut r = tx.fetch::<Run>(&rid)?;
                    let from = r.status;
                    let Ok(to) = transition(from, RunEvent::Cancel) else {
                        return Ok(Err(RunError::invalid(
                            None,
                            format!("Cannot cancel run with status '{}'.", status_str(from)),
                        )));
                    };
                    r.status = to;
                    if !tx.update_if(&Record::of(&r)?, status_str(from))? {
                        return Err(StoreError::Other(anyhow::anyhow!("run {rid} changed")));
                    }
                    Ok(Ok((r, tx.run_holder(&rid)?)))
                })
            })
            .await??;
        self.emit(run_id, StreamEvent::run(&run));
        let flag = self
            .inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned();
        match (flag, holder) {
            (Some(f), _) => f.cancel(),
            // A worker (of this node, about to start, or of another, which notices within a
            // second) holds it and ends it.
            (None, Some(_)) => {}
            // No worker holds it: nothing to interrupt.
            (None, None) => {
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
        // OpenAI's words when the outputs are not one for each call the run waits for.
        let mismatch = |given: &[String]| {
            let list = |ids: &[String]| {
                let quoted: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
                format!("[{}]", quoted.join(", "))
            };
            RunError::invalid(
                Some("tool_outputs"),
                format!(
                    "Expected tool outputs for call_ids {}, got {}",
                    list(&pending),
                    list(given)
                ),
            )
        };
        let given: Vec<String> = outputs.iter().map(|(id, _)| id.clone()).collect();
        let mut by_id: HashMap<String, String> = HashMap::new();
        for (id, out) in outputs {
            if !pending.contains(&id) {
                return Err(mismatch(&given));
            }
            if by_id.insert(id.clone(), out).is_some() {
                return Err(RunError::invalid(
                    Some("tool_outputs"),
                    format!("Tool output for tool call '{id}' was submitted twice."),
                ));
            }
        }
        if pending.iter().any(|id| !by_id.contains_key(id)) {
            return Err(mismatch(&given));
        }
        let rx = stream.then(|| self.inner.hub.subscribe(run_id));
        // One transaction moves the run back to the queue (so a second submit is refused),
        // puts the outputs into its waiting step and its transcript, and says who drives it
        // next: a streamed submit is driven by this node, which holds the stream; any node
        // may take the others.
        let owner = stream.then(|| self.inner.config.node.clone());
        let rid = run_id.to_string();
        let submitted = self
            .db(move |s| {
                s.within(|tx| {
                    let mut run = tx.fetch::<Run>(&rid)?;
                    let Ok(to) = transition(run.status, RunEvent::ToolOutputsSubmitted) else {
                        return Ok(Err(RunError::invalid(
                            None,
                            "This run no longer accepts tool outputs.",
                        )));
                    };
                    let from = run.status;
                    run.status = to;
                    run.required_action = None;
                    if !tx.update_if(&Record::of(&run)?, status_str(from))? {
                        return Err(StoreError::Other(anyhow::anyhow!("run {rid} changed")));
                    }
                    let step = Self::record_outputs(tx, &run, &by_id)?;
                    tx.set_run_owner(&rid, owner.as_deref(), false)?;
                    Ok(Ok((run, step)))
                })
            })
            .await
            .and_then(|r| r)
            .inspect_err(|_| self.inner.hub.forget(run_id))?;
        let (run, step) = submitted;
        if let Some(step) = step {
            self.emit(run_id, StreamEvent::StepCompleted(Box::new(step)));
        }
        self.emit(run_id, StreamEvent::run(&run));
        self.inner.wake.notify_one();
        Ok((run, rx))
    }

    /// Put submitted outputs into the waiting step (returned) and the transcript.
    fn record_outputs(
        tx: &mut dyn Tx,
        run: &Run,
        outputs: &HashMap<String, String>,
    ) -> crate::store::Result<Option<RunStep>> {
        let step = steps_in_tx(tx, &run.thread_id, &run.id)?
            .into_iter()
            .rev()
            .find(|s| s.status == StepStatus::InProgress);
        let mut t = tx.fetch::<Transcript>(&Transcript::id_for(&run.id))?;
        let step = step.map(|mut step| {
            step.usage = t.step_usage.or(step.usage);
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
            step
        });
        if let Some(step) = &step {
            tx.save(step)?;
        }
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
            if let Some(o) = outputs.get(&id) {
                t.messages.push(ChatMessage::tool_result(&id, o.clone()));
            }
        }
        tx.save(&t)?;
        Ok(step)
    }

    pub(super) async fn steps_of(&self, run: &Run) -> Result<Vec<RunStep>> {
        let (tid, rid) = (run.thread_id.clone(), run.id.clone());
        self.db(move |s| steps_in(s, &tid, &rid)).await
    }
}
