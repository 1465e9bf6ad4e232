//! A turn's tool calls: the `tool_calls` step, code cells run in the thread's session (their
//! outputs, images and files), and the wait for function outputs.

use super::turn::ToolStream;
use super::worker::{Ctx, Stop};

use super::calls::{self, code_of};
use super::events::StreamEvent;
use super::state::{RunEvent, transition};
use super::{Orchestrator, Result, RunError, Transcript};
use crate::backend::{ChatMessage, CodeToolResult, ToolCall};
use crate::model::{
    CodeInterpreterCall, CodeOutput, FileSearchCall, FunctionCall, FunctionType, ImageRef,
    RequiredAction, RequiredFunction, RequiredToolCall, RunStep, RunUsage, StepDetails, StepStatus,
    StepToolCall, SubmitToolOutputs, now,
};
use crate::sandbox::{ExecOptions, InputFile, Outcome, Sessions};
use crate::store::{StoreExt, blobs};

/// Most log text handed back to the model per call (the step keeps all of it).
pub(super) const MAX_LOGS_FOR_MODEL: usize = 16 * 1024;

pub(super) fn status_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "completed",
        other => other.as_str(),
    }
}

/// A code call that did not run: `msg` is its output, and what the model is told.
fn could_not_run(msg: String) -> (Vec<CodeOutput>, CodeToolResult) {
    (
        vec![CodeOutput::Logs { logs: msg.clone() }],
        CodeToolResult {
            status: "error".into(),
            logs: msg,
            ..Default::default()
        },
    )
}

/// Charge `bytes` about to become a File to the thread's session's export budget; whether it
/// fits (a file past it stays in `/mnt/data`, unlinked).
pub(super) fn export_fits(sessions: &Sessions, thread_id: &str, bytes: usize) -> bool {
    match sessions.charge_export(thread_id, bytes as u64) {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(thread = %thread_id, "a session's export budget is used up");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not charge a session's exports");
            false
        }
    }
}

pub(super) fn clip_for_model(logs: &str) -> String {
    if logs.len() <= MAX_LOGS_FOR_MODEL {
        return logs.to_string();
    }
    let half = MAX_LOGS_FOR_MODEL / 2;
    let mut a = half;
    while !logs.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = logs.len() - half;
    while !logs.is_char_boundary(b) {
        b += 1;
    }
    format!("{}\n[… {} bytes cut …]\n{}", &logs[..a], b - a, &logs[b..])
}

impl Orchestrator {
    /// Start a `tool_calls` step (its calls come as deltas).
    pub(super) async fn open_tool_step(&self, ctx: &Ctx) -> Result<RunStep> {
        // Usage shows once the step completes (after its code, or when its outputs arrive).
        let step = RunStep::start(&ctx.run, StepDetails::ToolCalls { tool_calls: vec![] });
        let s2 = step.clone();
        self.db(move |s| s.insert(&s2)).await?;
        for ev in StreamEvent::step_started(&step) {
            self.emit(&ctx.run.id, ev);
        }
        Ok(step)
    }

    /// Make a `tool_calls` step for the model's calls and run its code_interpreter calls.
    /// Returns whether the drive stops here: the run now waits for function outputs, or it
    /// failed because the sandbox worker running its code died.
    pub(super) async fn tool_step(
        &self,
        ctx: &mut Ctx,
        calls: &[ToolCall],
        streamed: ToolStream,
        usage: RunUsage,
        stop: &Stop,
    ) -> Result<bool> {
        let rid = ctx.run.id.clone();
        let is_code = |c: &ToolCall| Some(&c.name) == ctx.code_tool.as_ref();
        let is_search = |c: &ToolCall| Some(&c.name) == ctx.search_tool.as_ref();
        let mut tool_calls: Vec<StepToolCall> = calls
            .iter()
            .map(|c| {
                if is_search(c) {
                    StepToolCall::FileSearch {
                        id: c.id.clone(),
                        file_search: FileSearchCall {
                            ranking_options: super::search::ranking(&ctx.run.tools),
                            results: vec![],
                        },
                    }
                } else if is_code(c) {
                    StepToolCall::CodeInterpreter {
                        id: c.id.clone(),
                        code_interpreter: CodeInterpreterCall {
                            input: code_of(&c.arguments),
                            outputs: vec![],
                        },
                    }
                } else {
                    StepToolCall::Function {
                        id: c.id.clone(),
                        function: FunctionCall {
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                            output: None,
                        },
                    }
                }
            })
            .collect();
        // The step the calls streamed into, or a new one.
        let mut step = match streamed.step {
            Some(step) => step,
            None => self.open_tool_step(ctx).await?,
        };
        step.step_details = StepDetails::ToolCalls {
            tool_calls: tool_calls.clone(),
        };
        let s2 = step.clone();
        self.db(move |s| s.save(&s2)).await?;
        // Call by call, as OpenAI streamed them: a call's creation and input (unless they
        // streamed live while the model wrote them), then (for code) its outputs, then the next
        // call. The SDK's handlers take a delta for a new index as the end of the previous
        // call, so a call's outputs must come before the next call's input.
        let mut results = vec![];
        for i in 0..tool_calls.len() {
            if let StepToolCall::FileSearch { id, .. } = &tool_calls[i] {
                let call_id = id.clone();
                self.emit(
                    &rid,
                    StreamEvent::tool_call(&step.id, calls::search_created(i, &call_id)),
                );
                let (found, for_model) = self.run_search(ctx, &calls[i].arguments).await?;
                if let StepToolCall::FileSearch { file_search, .. } = &mut tool_calls[i] {
                    *file_search = found;
                }
                step.step_details = StepDetails::ToolCalls {
                    tool_calls: tool_calls.clone(),
                };
                let s2 = step.clone();
                self.db(move |s| s.save(&s2)).await?;
                results.push(ChatMessage::tool_result(&call_id, for_model));
                if stop.is_stopped() {
                    return Ok(false);
                }
                continue;
            }
            let (id, name, code, full) = match &tool_calls[i] {
                StepToolCall::CodeInterpreter {
                    id,
                    code_interpreter,
                } => (id, "", true, code_interpreter.input.as_str()),
                StepToolCall::Function { id, function } => (
                    id,
                    function.name.as_str(),
                    false,
                    function.arguments.as_str(),
                ),
                StepToolCall::FileSearch { .. } => continue,
            };
            let live = streamed
                .calls
                .get(i)
                .filter(|c| c.live && c.id == *id && c.code == code);
            let rest = match live {
                Some(c) => c.rest(full).unwrap_or_else(|| {
                    tracing::warn!(call = %id, "a streamed tool call does not add up to the stored one");
                    String::new()
                }),
                None => {
                    let created = calls::created(i, id, name, code);
                    self.emit(&rid, StreamEvent::tool_call(&step.id, created));
                    full.to_string()
                }
            };
            if !rest.is_empty() {
                let piece = calls::piece(i, code, &rest);
                self.emit(&rid, StreamEvent::tool_call(&step.id, piece));
            }
            let StepToolCall::CodeInterpreter {
                id,
                code_interpreter,
            } = &tool_calls[i]
            else {
                continue;
            };
            if stop.is_stopped() {
                return Ok(false);
            }
            // The run's input files go in with its first cell.
            let inputs = std::mem::take(&mut ctx.inputs);
            let (outputs, result) = match self
                .run_code(ctx, id, code_interpreter.input.clone(), inputs, stop)
                .await
            {
                Ok(done) => done,
                // Not the code's failure but the server's: the run cannot go on.
                Err(lost) => {
                    if !stop.is_stopped() {
                        self.finish(&rid, RunEvent::Fail, Some(("server_error", &lost)))
                            .await?;
                    }
                    return Ok(true);
                }
            };
            let call_id = id.clone();
            if !outputs.is_empty() {
                let delta = calls::outputs(i, &outputs);
                self.emit(&rid, StreamEvent::tool_call(&step.id, delta));
            }
            for o in &outputs {
                if let CodeOutput::Image { image } = o {
                    ctx.pending_images.push(image.file_id.clone());
                }
            }
            if let StepToolCall::CodeInterpreter {
                code_interpreter, ..
            } = &mut tool_calls[i]
            {
                code_interpreter.outputs = outputs;
            }
            step.step_details = StepDetails::ToolCalls {
                tool_calls: tool_calls.clone(),
            };
            let s2 = step.clone();
            self.db(move |s| s.save(&s2)).await?;
            results.push(ChatMessage::tool_result(
                &call_id,
                serde_json::to_string(&result).unwrap_or_default(),
            ));
            // Interrupted (cancelled, or out of time): the step keeps the cell's outputs so
            // far and stays open; the run's end closes it.
            if stop.is_stopped() {
                return Ok(false);
            }
        }
        let tid = super::Transcript::id_for(&rid);
        self.db(move |s| {
            let mut t = s.fetch::<Transcript>(&tid)?;
            t.messages.extend(results);
            t.step_usage = Some(usage);
            s.save(&t)
        })
        .await?;
        let functions: Vec<RequiredToolCall> = tool_calls
            .iter()
            .filter_map(|c| match c {
                StepToolCall::Function { id, function } => Some(RequiredToolCall {
                    id: id.clone(),
                    kind: FunctionType::Function,
                    function: RequiredFunction {
                        name: function.name.clone(),
                        arguments: function.arguments.clone(),
                    },
                }),
                _ => None,
            })
            .collect();
        if !functions.is_empty() {
            let run = self
                .update_run(&rid, move |r| {
                    r.status = transition(r.status, RunEvent::NeedToolOutputs)
                        .map_err(|e| RunError::Internal(e.into()))?;
                    r.required_action = Some(RequiredAction::SubmitToolOutputs {
                        submit_tool_outputs: SubmitToolOutputs {
                            tool_calls: functions.clone(),
                        },
                    });
                    Ok(())
                })
                .await?;
            self.emit(&rid, StreamEvent::run(&run));
            return Ok(true);
        }
        step.status = StepStatus::Completed;
        step.completed_at = Some(now());
        step.usage = Some(usage);
        let s2 = step.clone();
        self.db(move |s| s.save(&s2)).await?;
        self.emit(&rid, StreamEvent::StepCompleted(Box::new(step.clone())));
        Ok(false)
    }

    /// Run one code cell in the thread's session. `Err` (the message for the run's
    /// `last_error`) when the sandbox worker process running it died.
    pub(super) async fn run_code(
        &self,
        ctx: &Ctx,
        call_id: &str,
        code: String,
        inputs: Vec<InputFile>,
        stop: &Stop,
    ) -> std::result::Result<(Vec<CodeOutput>, CodeToolResult), String> {
        let Some(sessions) = self.inner.sessions.clone() else {
            return Ok(could_not_run(
                "The code interpreter is not available on this server.".into(),
            ));
        };
        let opts = ExecOptions {
            cancel: Some(stop.token().clone()),
            inputs,
            ..Default::default()
        };
        let roaming = self.inner.roaming.as_deref();
        let key = self.session_of(&ctx.run.thread_id);
        // The session's place under the project's live-session limit, held for the call.
        let admitted = match &self.inner.keys {
            Some(keys) => Some(
                keys.admissions()
                    .admit_with(&self.project, &key, || sessions.live_keys())
                    .await,
            ),
            None => None,
        };
        let _admitted = match admitted.transpose() {
            Ok(admitted) => admitted,
            Err(max) => {
                return Ok(could_not_run(format!(
                    "The code could not run: this project may have at most {max} live \
                     code-interpreter sessions, and has that many."
                )));
            }
        };
        let shared = crate::roaming::execute(roaming, &sessions, &key, None, code, opts);
        let mut r = match shared.await {
            Ok(r) => r,
            Err(e) => return Ok(could_not_run(format!("The code could not run: {e}"))),
        };
        if r.worker_lost {
            return Err(format!(
                "The sandbox worker crashed while running this run's code: {}.",
                r.detail.as_deref().unwrap_or("the worker process died")
            ));
        }
        if r.outcome == Outcome::Cancelled && stop.expired() {
            r.detail = Some("execution was stopped: the run expired".into());
        }
        // What the session's state went through (a saved interpreter that could not be
        // restored) comes first, so the step's logs and the model both see it.
        let mut logs = match &r.notice {
            Some(n) => format!("[{n}]\n"),
            None => String::new(),
        };
        logs.push_str(&r.stdout);
        if let Some(v) = &r.result {
            logs.push_str(v);
            logs.push('\n');
        }
        logs.push_str(&r.stderr);
        if let Some(d) = &r.detail
            && r.outcome != Outcome::Ok
            && r.outcome != Outcome::Error
        {
            if !logs.is_empty() && !logs.ends_with('\n') {
                logs.push('\n');
            }
            logs.push_str(&format!("[{d}]\n"));
        }
        let mut outputs = vec![];
        if !logs.is_empty() {
            outputs.push(CodeOutput::Logs { logs: logs.clone() });
        }
        let mut stored = vec![];
        for (i, png) in r.images.iter().enumerate() {
            // Charged to the session's export budget (blocking work), then stored as a File.
            let (s, key, n) = (
                sessions.clone(),
                self.session_of(&ctx.run.thread_id),
                png.len(),
            );
            // The project's limit first: a File it refuses costs the session nothing.
            if !self.storage_fits(n as u64).await {
                continue;
            }
            let fits = tokio::task::spawn_blocking(move || export_fits(&s, &key, n)).await;
            if !matches!(fits, Ok(true)) {
                continue;
            }
            let name = format!("{call_id}-image-{}.png", i + 1);
            let (store, bucket) = (&self.store, &self.inner.bucket);
            let max = self.project.limits.max_storage_bytes;
            match blobs::create(store, bucket, &name, "assistants_output", png.clone(), max).await {
                Ok(f) => stored.push(f),
                Err(e) => tracing::warn!(error = %e, "could not store an image"),
            }
        }
        for f in &stored {
            outputs.push(CodeOutput::Image {
                image: ImageRef {
                    file_id: f.id.clone(),
                },
            });
        }
        let result = CodeToolResult {
            status: status_name(r.outcome).into(),
            logs: clip_for_model(&logs),
            files: r.files.iter().map(|f| f.path.clone()).collect(),
            images: stored.len(),
        };
        Ok((outputs, result))
    }
}
