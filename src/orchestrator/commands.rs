//! What callers ask of runs: create (also with a new thread), add messages under the thread
//! lock, modify, cancel, submit tool outputs.

use super::finish::steps_in;
use std::collections::HashMap;
use std::sync::Arc;

use super::events::{EventStream, StreamEvent};
use super::state::{RunEvent, RunStatus, transition};

use crate::backend::{Backend, ChatMessage, LOCAL_MODEL};
use crate::model::{
    Assistant, Kind, Message, Run, RunStep, StepDetails, StepStatus, Thread, ToolChoiceOption,
    Truncation, new_id, now,
};
use crate::store::{Order, Page, Record, Store, StoreExt};

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
            Some(f) => f.cancel(),
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
    pub(super) async fn record_outputs(
        &self,
        run: &Run,
        outputs: &HashMap<String, String>,
    ) -> Result<()> {
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
    pub(super) async fn pending_step(&self, run: &Run) -> Result<Option<RunStep>> {
        let steps = self.steps_of(run).await?;
        Ok(steps
            .into_iter()
            .rev()
            .find(|s| s.status == StepStatus::InProgress))
    }

    pub(super) async fn steps_of(&self, run: &Run) -> Result<Vec<RunStep>> {
        let (tid, rid) = (run.thread_id.clone(), run.id.clone());
        self.db(move |s| steps_in(s, &tid, &rid)).await
    }
}
