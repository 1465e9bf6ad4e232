//! What a worker does with a queued run: ask the model, run its code_interpreter calls in the
//! thread's session, pause for function outputs, write the answer, until the run ends.

use super::turn::{Turn, TurnEnd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::events::StreamEvent;
use super::prompt::{self, PromptLimit};
use super::state::{RunEvent, RunStatus, transition};
use super::{Orchestrator, Result, RunError, Transcript};
use crate::backend::{Backend, ChatMessage, FinishReason};
use crate::model::{Message, Run, RunUsage, now};
use crate::sandbox::InputFile;
use crate::store::{StoreError, StoreExt};

/// How often, and how far apart, a drive's end tries to settle its run while the database
/// does not answer (about 10 minutes: past that, a restart of this node settles it).
const SETTLE_TRIES: usize = 600;
const SETTLE_WAIT: Duration = Duration::from_secs(1);

/// What a drive knows about its run.
pub(super) struct Ctx {
    pub(super) run: Run,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) code_tool: Option<String>,
    /// Files in `/mnt/data` for this run: (name there, File id).
    pub(super) files: Vec<(String, String)>,
    /// Those files, still to be copied there: with the run's next code call, under the
    /// session's lock and charged to its storage quota.
    pub(super) inputs: Vec<InputFile>,
    /// The thread's messages that are not this run's.
    pub(super) history: Vec<Message>,
    /// Image Files of this run's code calls not yet shown in one of its messages.
    pub(super) pending_images: Vec<String>,
    /// The images users' messages show (`image_file` parts), as `data:` URLs by File id.
    pub(super) images: std::collections::HashMap<String, String>,
    /// The name file_search is offered under, when the run has it and a store to search.
    pub(super) search_tool: Option<String>,
    /// The vector stores it searches (the assistant's and the thread's).
    pub(super) vector_stores: Vec<String>,
    /// The thread's own store, whose files a run waits for (up to a minute) before it starts.
    pub(super) thread_store: Option<String>,
    /// The File ids of each of this run's searches' results, in order: what citation markers
    /// `【search:result†…】` point at.
    pub(super) searches: Vec<Vec<String>>,
}

/// What ends a drive early: the client cancelling the run, or the run's `expires_at` passing.
/// Either interrupts what the drive waits on (the model's answer, a running code cell, which
/// the sandbox stops as it stops a cancelled call: the interpreter is replaced, `/mnt/data`
/// kept); the drive then returns and [`Orchestrator::drive`] ends the run `cancelled` or
/// `expired`, closing its open step the same way.
pub(super) struct Stop {
    /// Fires on either; what the drive's waits watch.
    any: CancellationToken,
    /// Fires (before `any`) when the run's time ran out.
    expired: CancellationToken,
}

impl Stop {
    /// A stop that the run's cancel flag `cancel` also fires.
    pub(super) fn new(cancel: &CancellationToken) -> Stop {
        Stop {
            any: cancel.child_token(),
            expired: CancellationToken::new(),
        }
    }

    /// The token the drive's waits watch (handed to the sandbox as the call's cancel).
    pub(super) fn token(&self) -> &CancellationToken {
        &self.any
    }

    /// The drive should stop: cancelled or out of time.
    pub(super) fn is_stopped(&self) -> bool {
        self.any.is_cancelled()
    }

    /// The run's time ran out.
    pub(super) fn expired(&self) -> bool {
        self.expired.is_cancelled()
    }

    /// Fire when `at` (Unix seconds) passes, until the returned guard is dropped.
    pub(super) fn expire_at(&self, at: Option<i64>) -> Option<DropGuard> {
        let at = at?;
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(at.max(0) as u64).saturating_sub(since_epoch);
        let done = CancellationToken::new();
        let (any, expired, ended) = (self.any.clone(), self.expired.clone(), done.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = ended.cancelled() => {}
                _ = tokio::time::sleep(left) => {
                    expired.cancel();
                    any.cancel();
                }
            }
        });
        Some(done.drop_guard())
    }
}

impl Orchestrator {
    /// Drive one run until it ends or waits for tool outputs.
    pub(super) async fn drive(&self, run_id: &str) {
        let cancel = CancellationToken::new();
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string(), cancel.clone());
        let stop = Stop::new(&cancel);
        let res = self.drive_inner(run_id, &stop).await;
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        if let Err(e) = &res {
            tracing::error!(run = run_id, error = %e, "run failed");
        }
        // Settle whatever the drive left: a cancel that raced its end, the run's time running
        // out (the drive stops where it was; its open step ends `expired`), or an error. A
        // database that does not answer (the likely cause of the error) is waited for: the
        // run must not stay `in_progress` with no worker.
        let unavailable = |e: &RunError| matches!(e, RunError::Store(StoreError::Unavailable(_)));
        for _ in 0..SETTLE_TRIES {
            let rid = run_id.to_string();
            let status = match self.db(move |s| s.find::<Run>(&rid)).await {
                Ok(run) => run.map(|r| r.status),
                Err(e) if unavailable(&e) => {
                    tokio::time::sleep(SETTLE_WAIT).await;
                    continue;
                }
                Err(_) => return,
            };
            let settled = match status {
                Some(RunStatus::Cancelling) => self.finish(run_id, RunEvent::Stopped, None).await,
                Some(RunStatus::InProgress) if stop.expired() => {
                    self.finish(run_id, RunEvent::Expire, None).await
                }
                Some(RunStatus::InProgress) => {
                    let msg = match &res {
                        Err(RunError::NotFound { kind, .. }) => {
                            format!("The run's {kind} was deleted while it ran.")
                        }
                        Err(e) if unavailable(e) => {
                            "The database did not answer while this run was in progress."
                                .to_string()
                        }
                        _ => "Oasis had an internal error while running this run.".to_string(),
                    };
                    self.finish(run_id, RunEvent::Fail, Some(("server_error", &msg)))
                        .await
                }
                // The run is gone (its thread was deleted): tell its streams.
                None => {
                    let ev = Orchestrator::error_event(&format!("Run {run_id} no longer exists."));
                    self.emit(run_id, ev);
                    return;
                }
                _ => return,
            };
            match settled {
                Err(e) if unavailable(&e) => tokio::time::sleep(SETTLE_WAIT).await,
                _ => return,
            }
        }
        tracing::error!(
            run = run_id,
            "could not settle a run: the database did not answer"
        );
    }

    pub(super) async fn drive_inner(&self, run_id: &str, stop: &Stop) -> Result<()> {
        let started = self
            .update_run(run_id, |r| {
                if r.status != RunStatus::Queued {
                    return Err(RunError::invalid(None, "not queued"));
                }
                r.status = transition(r.status, RunEvent::Start)
                    .map_err(|e| RunError::Internal(e.into()))?;
                r.started_at.get_or_insert(now());
                Ok(())
            })
            .await;
        let run = match started {
            Ok(r) => r,
            // Cancelled or expired while it waited: nothing to do.
            Err(RunError::Invalid { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        // From here on, the run's time running out stops whatever the drive waits on.
        let _timer = stop.expire_at(run.expires_at);
        self.emit(run_id, StreamEvent::run(&run));
        // A run queued by an older version (or by hand) may have no transcript yet.
        let (tid, thread_id) = (Transcript::id_for(run_id), run.thread_id.clone());
        self.db(move |s| {
            if s.find::<Transcript>(&tid)?.is_none() {
                s.insert(&Transcript {
                    id: tid,
                    thread_id,
                    created_at: now(),
                    messages: vec![],
                    usage: RunUsage::default(),
                    step_usage: None,
                })?;
            }
            Ok(())
        })
        .await?;
        let mut ctx = self.context(run).await?;
        self.wait_for_thread_files(&ctx, stop).await;
        loop {
            if stop.is_stopped() {
                return Ok(());
            }
            if ctx.run.expires_at.is_some_and(|e| e <= now()) {
                self.finish(run_id, RunEvent::Expire, None).await?;
                return Ok(());
            }
            let tid = super::Transcript::id_for(run_id);
            let transcript = self.db(move |s| s.fetch::<Transcript>(&tid)).await?;
            let req = match prompt::build(
                &ctx.run,
                ctx.code_tool.as_deref(),
                &ctx.files,
                &ctx.history,
                &transcript.messages,
                transcript.usage.completion_tokens,
                &ctx.images,
            ) {
                Ok(mut r) => {
                    if let Some(name) = &ctx.search_tool {
                        super::search::offer(&mut r, name);
                    }
                    r
                }
                Err(limit) => {
                    let reason = match limit {
                        PromptLimit::MaxPromptTokens => "max_prompt_tokens",
                        PromptLimit::MaxCompletionTokens => "max_completion_tokens",
                    };
                    self.end_incomplete(run_id, reason, transcript.usage)
                        .await?;
                    return Ok(());
                }
            };
            let Turn {
                resp,
                writer,
                tools,
            } = match self.model_turn(&mut ctx, req, stop).await? {
                TurnEnd::Answered(turn) => *turn,
                TurnEnd::Failed(e) => {
                    self.finish(run_id, RunEvent::Fail, Some((e.code(), &e.to_string())))
                        .await?;
                    return Ok(());
                }
                // Cancelled, or out of time, while the model was answering: `drive` settles it.
                TurnEnd::Stopped => return Ok(()),
            };
            let mut usage = transcript.usage;
            usage.add(resp.usage.prompt_tokens, resp.usage.completion_tokens);
            let turn_usage = {
                let mut u = RunUsage::default();
                u.add(resp.usage.prompt_tokens, resp.usage.completion_tokens);
                u
            };
            let over_completion = ctx
                .run
                .max_completion_tokens
                .is_some_and(|m| usage.completion_tokens > m);
            let over_prompt = ctx
                .run
                .max_prompt_tokens
                .is_some_and(|m| resp.usage.prompt_tokens > m);
            let cut = resp.finish == FinishReason::Length || over_completion || over_prompt;
            // Record the turn.
            let tid = super::Transcript::id_for(run_id);
            let mut said = ChatMessage::new(crate::backend::Role::Assistant, resp.text.clone());
            said.tool_calls = resp.tool_calls.clone();
            self.db(move |s| {
                let mut t = s.fetch::<Transcript>(&tid)?;
                t.messages.push(said);
                t.usage = usage;
                s.save(&t)
            })
            .await?;
            let writer = match writer {
                Some(w) => Some(w),
                // A turn without text or calls still answers, with an empty message.
                None if resp.tool_calls.is_empty() || !ctx.pending_images.is_empty() => {
                    Some(self.open_message(&mut ctx).await?)
                }
                None => None,
            };
            if let Some(w) = writer {
                self.close_message(&ctx, w, cut, turn_usage).await?;
            }
            if cut {
                let reason = if over_prompt {
                    "max_prompt_tokens"
                } else {
                    "max_completion_tokens"
                };
                self.end_incomplete(run_id, reason, usage).await?;
                return Ok(());
            }
            if resp.tool_calls.is_empty() {
                self.finish_with(run_id, RunEvent::Finish, None, move |r| {
                    r.usage = Some(usage)
                })
                .await?;
                return Ok(());
            }
            let waiting = self
                .tool_step(&mut ctx, &resp.tool_calls, tools, turn_usage, stop)
                .await?;
            if stop.is_stopped() || waiting {
                return Ok(());
            }
        }
    }

    pub(super) async fn end_incomplete(
        &self,
        run_id: &str,
        reason: &str,
        usage: RunUsage,
    ) -> Result<()> {
        let reason = reason.to_string();
        self.finish_with(run_id, RunEvent::HitTokenLimit, None, move |r| {
            r.usage = Some(usage);
            r.incomplete_details = Some(crate::model::IncompleteDetails::because(reason.clone()));
        })
        .await?;
        Ok(())
    }
}
