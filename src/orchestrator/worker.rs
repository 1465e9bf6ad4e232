//! What a worker does with a queued run: ask the model, run its code_interpreter calls in the
//! thread's session, pause for function outputs, write the answer, until the run ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::calls::{self, StreamedCall, code_of};
use super::events::{ContentPartDelta, ImageFileDelta, StreamEvent, TextDelta, indexed};
use super::prompt::{self, PromptLimit};
use super::state::{RunEvent, RunStatus, transition};
use super::{Orchestrator, Result, RunError, Transcript, annotate};
use crate::backend::{
    Backend, BackendError, ChatMessage, ChatResponse, CodeToolResult, FinishReason, ModelDelta,
    ToolCall,
};
use crate::model::{
    Annotation, Assistant, CodeInterpreterCall, CodeOutput, Content, FileObject, FileRef,
    FunctionCall, FunctionType, ImageFile, ImageRef, Message, MessageCreation, MessageRole,
    MessageStatus, RequiredAction, RequiredFunction, RequiredToolCall, Run, RunStep, RunUsage,
    StepDetails, StepStatus, StepToolCall, StepType, SubmitToolOutputs, Text, Thread, new_id, now,
};
use crate::sandbox::{ExecOptions, InputFile, Outcome, Sessions};
use crate::store::{Order, Page, StoreExt, blobs};

/// Most log text handed back to the model per call (the step keeps all of it).
const MAX_LOGS_FOR_MODEL: usize = 16 * 1024;

/// What a drive knows about its run.
struct Ctx {
    run: Run,
    backend: Arc<dyn Backend>,
    code_tool: Option<String>,
    /// Files in `/mnt/data` for this run: (name there, File id).
    files: Vec<(String, String)>,
    /// Those files, still to be copied there: with the run's next code call, under the
    /// session's lock and charged to its storage quota.
    inputs: Vec<InputFile>,
    /// The thread's messages that are not this run's.
    history: Vec<Message>,
    /// Image Files of this run's code calls not yet shown in one of its messages.
    pending_images: Vec<String>,
    /// The images users' messages show (`image_file` parts), as `data:` URLs by File id.
    images: std::collections::HashMap<String, String>,
}

/// A message being written.
struct Writer {
    step: RunStep,
    message: Message,
    text_index: usize,
    text: String,
    sent_text: bool,
}

/// The media type of an image a vision model takes, from its first bytes.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Wait until `flag` is set.
async fn flagged(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A piece of a model turn, as the backend handed it over (see [`ModelDelta`]).
enum Streamed {
    Text(String),
    Call {
        index: usize,
        id: String,
        name: String,
    },
    Args {
        index: usize,
        text: String,
    },
}

impl From<ModelDelta<'_>> for Streamed {
    fn from(d: ModelDelta<'_>) -> Streamed {
        match d {
            ModelDelta::Text(t) => Streamed::Text(t.to_string()),
            ModelDelta::CallStarted { index, id, name } => Streamed::Call {
                index,
                id: id.to_string(),
                name: name.to_string(),
            },
            ModelDelta::Arguments { index, text } => Streamed::Args {
                index,
                text: text.to_string(),
            },
        }
    }
}

/// A turn's tool calls as they streamed, and the step they streamed into.
#[derive(Default)]
struct ToolStream {
    step: Option<RunStep>,
    calls: Vec<StreamedCall>,
}

/// How a model turn ended.
enum TurnEnd {
    Answered(Box<Turn>),
    /// The backend could not answer.
    Failed(BackendError),
    /// Cancelled, or the run's time ran out, while the model was answering.
    Stopped,
}

/// What a model turn produced: its answer, the message its text went to, its streamed calls.
struct Turn {
    resp: ChatResponse,
    writer: Option<Writer>,
    tools: ToolStream,
}

/// A message delta's text part at `index`.
fn text_part(index: usize, text: TextDelta) -> super::events::ContentDelta {
    super::events::Indexed {
        index,
        value: ContentPartDelta::Text { text },
    }
}

fn status_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "completed",
        other => other.as_str(),
    }
}

/// Charge `bytes` about to become a File to the thread's session's export budget; whether it
/// fits (a file past it stays in `/mnt/data`, unlinked).
fn export_fits(sessions: &Sessions, thread_id: &str, bytes: usize) -> bool {
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

fn clip_for_model(logs: &str) -> String {
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
    /// Drive one run until it ends or waits for tool outputs.
    pub(super) async fn drive(&self, run_id: &str) {
        let flag = Arc::new(AtomicBool::new(false));
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string(), flag.clone());
        let res = self.drive_inner(run_id, &flag).await;
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        if let Err(e) = &res {
            tracing::error!(run = run_id, error = %e, "run failed");
        }
        // Settle whatever the drive left: a cancel that raced its end, or an error.
        let rid = run_id.to_string();
        let status = self
            .db(move |s| s.find::<Run>(&rid))
            .await
            .ok()
            .flatten()
            .map(|r| r.status);
        match status {
            Some(RunStatus::Cancelling) => {
                let _ = self.finish(run_id, RunEvent::Stopped, None).await;
            }
            Some(RunStatus::InProgress) => {
                let msg = match &res {
                    Err(RunError::NotFound { kind, .. }) => {
                        format!("The run's {kind} was deleted while it ran.")
                    }
                    _ => "Oasis had an internal error while running this run.".to_string(),
                };
                let _ = self
                    .finish(run_id, RunEvent::Fail, Some(("server_error", &msg)))
                    .await;
            }
            // The run is gone (its thread was deleted): tell its streams.
            None => {
                let ev = Orchestrator::error_event(&format!("Run {run_id} no longer exists."));
                self.emit(run_id, ev);
            }
            _ => {}
        }
    }

    async fn drive_inner(&self, run_id: &str, flag: &Arc<AtomicBool>) -> Result<()> {
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
        loop {
            if flag.load(Ordering::SeqCst) {
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
                Ok(r) => r,
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
            } = match self.model_turn(&mut ctx, req, flag).await? {
                TurnEnd::Answered(turn) => *turn,
                TurnEnd::Failed(e) => {
                    self.finish(run_id, RunEvent::Fail, Some((e.code(), &e.to_string())))
                        .await?;
                    return Ok(());
                }
                TurnEnd::Stopped => {
                    // Cancelled, or out of time, while the model was answering.
                    if !flag.load(Ordering::SeqCst) {
                        self.finish(run_id, RunEvent::Expire, None).await?;
                    }
                    return Ok(());
                }
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
                .tool_step(&mut ctx, &resp.tool_calls, tools, turn_usage, flag)
                .await?;
            if flag.load(Ordering::SeqCst) || waiting {
                return Ok(());
            }
        }
    }

    async fn end_incomplete(&self, run_id: &str, reason: &str, usage: RunUsage) -> Result<()> {
        let reason = reason.to_string();
        self.finish_with(run_id, RunEvent::HitTokenLimit, None, move |r| {
            r.usage = Some(usage);
            r.incomplete_details = Some(json!({ "reason": reason }));
        })
        .await?;
        Ok(())
    }

    /// Load what a drive needs and put the run's files into the session.
    async fn context(&self, run: Run) -> Result<Ctx> {
        let (tid, aid, rid) = (
            run.thread_id.clone(),
            run.assistant_id.clone(),
            run.id.clone(),
        );
        let (thread, assistant, history, own_messages) = self
            .db(move |s| {
                let thread = s.fetch::<Thread>(&tid)?;
                let assistant = s.find::<Assistant>(&aid)?;
                let mut all = vec![];
                let mut page = Page {
                    limit: 100,
                    order: Order::Asc,
                    after: None,
                    before: None,
                };
                loop {
                    let (items, more) = s.page::<Message>(Some(&tid), None, &page)?;
                    page.after = items.last().map(|m| m.id.clone());
                    all.extend(items);
                    if !more {
                        break;
                    }
                }
                let (own, history): (Vec<Message>, Vec<Message>) = all
                    .into_iter()
                    .partition(|m| m.run_id.as_deref() == Some(rid.as_str()));
                Ok((thread, assistant, history, own))
            })
            .await?;
        let code_tool = prompt::code_tool_name(&run.tools);
        let backend = self.backend_for(&run.model);
        let images = self.image_urls(&history).await?;
        let mut ctx = Ctx {
            run,
            backend,
            code_tool,
            files: vec![],
            inputs: vec![],
            history,
            pending_images: vec![],
            images,
        };
        // Images this run made that none of its messages shows yet (after a pause).
        let shown: Vec<String> = own_messages
            .iter()
            .flat_map(|m| m.content.iter())
            .filter_map(|c| match c {
                Content::ImageFile { image_file } => Some(image_file.file_id.clone()),
                _ => None,
            })
            .collect();
        for step in self.steps_of(&ctx.run).await? {
            if let StepDetails::ToolCalls { tool_calls } = &step.step_details {
                for c in tool_calls {
                    if let StepToolCall::CodeInterpreter {
                        code_interpreter, ..
                    } = c
                    {
                        for o in &code_interpreter.outputs {
                            if let CodeOutput::Image { image } = o
                                && !shown.contains(&image.file_id)
                            {
                                ctx.pending_images.push(image.file_id.clone());
                            }
                        }
                    }
                }
            }
        }
        if ctx.code_tool.is_some() {
            (ctx.files, ctx.inputs) = self.stage_files(&ctx, &thread, assistant.as_ref()).await?;
        }
        Ok(ctx)
    }

    /// `data:` URLs for the image Files users' messages show, by File id. A File that is gone,
    /// too big (over 20 MiB, OpenAI's limit) or not a PNG, JPEG, GIF or WebP image is left
    /// out (the model is then told its id in text).
    async fn image_urls(
        &self,
        history: &[Message],
    ) -> Result<std::collections::HashMap<String, String>> {
        const MAX_IMAGE_BYTES: u64 = 20 << 20;
        let ids: Vec<String> = history
            .iter()
            .filter(|m| m.role == MessageRole::User)
            .flat_map(|m| m.content.iter())
            .filter_map(|c| match c {
                Content::ImageFile { image_file } => Some(image_file.file_id.clone()),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let (store, dir) = (self.inner.store.clone(), self.inner.files_dir.clone());
        let urls = tokio::task::spawn_blocking(move || {
            use base64::Engine as _;
            let mut out = std::collections::HashMap::new();
            for id in ids {
                if out.contains_key(&id) || !matches!(store.find::<FileObject>(&id), Ok(Some(_))) {
                    continue;
                }
                let path = blobs::blob_path(&dir, &id);
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if meta.len() > MAX_IMAGE_BYTES {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let Some(mime) = image_type(&bytes) else {
                    continue;
                };
                let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                out.insert(id, format!("data:{mime};base64,{b64}"));
            }
            out
        })
        .await
        .map_err(|e| RunError::Internal(anyhow::anyhow!("reading images: {e}")))?;
        Ok(urls)
    }

    /// The run's input files and their names in `/mnt/data` (the mapping), and the copies to
    /// make there. A file already there is kept (the code may have changed it), unless the
    /// newest user message attached it again.
    async fn stage_files(
        &self,
        ctx: &Ctx,
        thread: &Thread,
        assistant: Option<&Assistant>,
    ) -> Result<(Vec<(String, String)>, Vec<InputFile>)> {
        let mut ids: Vec<String> = vec![];
        let from_resources = |r: &crate::model::ToolResources| {
            r.code_interpreter
                .as_ref()
                .map(|c| c.file_ids.clone())
                .unwrap_or_default()
        };
        if let Some(a) = assistant {
            ids.extend(from_resources(&a.tool_resources));
        }
        ids.extend(from_resources(&thread.tool_resources));
        let newest_user = ctx
            .history
            .iter()
            .rev()
            .find(|m| m.role == MessageRole::User);
        let fresh: Vec<String> = newest_user
            .map(|m| {
                m.attachments
                    .iter()
                    .filter(|a| prompt::uses_code(a))
                    .map(|a| a.file_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for m in &ctx.history {
            for a in &m.attachments {
                if prompt::uses_code(a) {
                    ids.push(a.file_id.clone());
                }
            }
        }
        let mut unique = vec![];
        for id in ids {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        if self.inner.sessions.is_none() {
            return Ok((vec![], vec![]));
        }
        let (store, dir) = (self.inner.store.clone(), self.inner.files_dir.clone());
        let staged = tokio::task::spawn_blocking(move || {
            let mut out: Vec<(String, String)> = vec![];
            let mut inputs = vec![];
            for id in unique {
                let f = match store.find::<FileObject>(&id) {
                    Ok(Some(f)) => f,
                    _ => continue,
                };
                let base = crate::model::plain_file_name(&f.filename).unwrap_or_else(|| id.clone());
                let name = if out.iter().any(|(n, _)| *n == base) {
                    format!("{id}-{base}")
                } else {
                    base
                };
                inputs.push(InputFile {
                    name: name.clone(),
                    src: blobs::blob_path(&dir, &id),
                    replace: fresh.contains(&id),
                });
                out.push((name, id));
            }
            (out, inputs)
        })
        .await
        .map_err(|e| RunError::Internal(anyhow::anyhow!("staging files: {e}")))?;
        Ok(staged)
    }

    /// Ask the model, streaming its text into a new message and its tool calls into a tool
    /// step (see [`calls`]). `None` when cancelled or when the run's time ran out first.
    async fn model_turn(
        &self,
        ctx: &mut Ctx,
        req: crate::backend::ChatRequest,
        flag: &AtomicBool,
    ) -> Result<TurnEnd> {
        let backend = ctx.backend.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Streamed>();
        let sink = move |d: ModelDelta<'_>| {
            let _ = tx.send(Streamed::from(d));
        };
        let mut writer: Option<Writer> = None;
        let mut tools = ToolStream::default();
        let left = ctx
            .run
            .expires_at
            .map(|e| Duration::from_secs((e - now()).max(0) as u64))
            .unwrap_or(Duration::MAX);
        let expiry = tokio::time::sleep(left.min(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(expiry);
        let res = {
            let fut = backend.complete(req, &sink);
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => break Some(r),
                    Some(piece) = rx.recv() => {
                        self.take_piece(ctx, &mut writer, &mut tools, piece).await?
                    }
                    _ = flagged(flag) => break None,
                    _ = &mut expiry => break None,
                }
            }
        };
        while let Ok(piece) = rx.try_recv() {
            self.take_piece(ctx, &mut writer, &mut tools, piece).await?;
        }
        // Stopped part-way (cancelled, out of time, the model failed): keep the text streamed
        // so far, so the message the run's end marks `incomplete` holds what clients saw.
        if !matches!(res, Some(Ok(_)))
            && let Some(w) = writer.as_mut()
            && let Some(Content::Text { text }) = w.message.content.get_mut(w.text_index)
        {
            text.value = w.text.clone();
            let m = w.message.clone();
            self.db(move |s| s.save(&m)).await?;
        }
        Ok(match res {
            Some(Ok(resp)) => TurnEnd::Answered(Box::new(Turn {
                resp,
                writer,
                tools,
            })),
            Some(Err(e)) => TurnEnd::Failed(e),
            None => TurnEnd::Stopped,
        })
    }

    async fn take_piece(
        &self,
        ctx: &mut Ctx,
        writer: &mut Option<Writer>,
        tools: &mut ToolStream,
        piece: Streamed,
    ) -> Result<()> {
        match piece {
            Streamed::Text(t) => self.write_text(ctx, writer, &t).await,
            Streamed::Call { index, id, name } => {
                let code = Some(&name) == ctx.code_tool.as_ref();
                // Only a turn's first call streams live, and only if no text came first (its
                // message would still be open): the SDKs take a delta for another index as the
                // end of the current call, and a model may still be writing (or, interleaving,
                // add to) a call when the next one starts.
                let live = writer.is_none() && tools.calls.is_empty();
                if live && tools.step.is_none() {
                    tools.step = Some(self.open_tool_step(ctx).await?);
                }
                if index != tools.calls.len() {
                    tracing::warn!(index, "a backend started tool calls out of order");
                }
                if live && let Some(step) = &tools.step {
                    let delta = calls::created(index, &id, &name, code);
                    self.emit(&ctx.run.id, StreamEvent::tool_call(&step.id, delta));
                }
                tools.calls.push(StreamedCall::new(&id, code, live));
                Ok(())
            }
            Streamed::Args { index, text } => {
                let Some(call) = tools.calls.get_mut(index) else {
                    return Ok(());
                };
                let more = call.push(&text);
                if call.live
                    && !more.is_empty()
                    && let Some(step) = &tools.step
                {
                    let delta = calls::piece(index, call.code, &more);
                    self.emit(&ctx.run.id, StreamEvent::tool_call(&step.id, delta));
                }
                Ok(())
            }
        }
    }

    async fn write_text(
        &self,
        ctx: &mut Ctx,
        writer: &mut Option<Writer>,
        chunk: &str,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if writer.is_none() {
            *writer = Some(self.open_message(ctx).await?);
        }
        let Some(w) = writer.as_mut() else {
            return Ok(());
        };
        w.text.push_str(chunk);
        w.sent_text = true;
        let text = TextDelta {
            value: Some(chunk.to_string()),
            annotations: None,
        };
        self.emit(
            &ctx.run.id,
            StreamEvent::content(&w.message.id, vec![text_part(w.text_index, text)]),
        );
        Ok(())
    }

    /// Start the run's next assistant message (and its message_creation step), showing the
    /// run's images not shown yet.
    async fn open_message(&self, ctx: &mut Ctx) -> Result<Writer> {
        let run = &ctx.run;
        let t = now();
        let images: Vec<String> = std::mem::take(&mut ctx.pending_images);
        let mut content: Vec<Content> = images
            .iter()
            .map(|id| Content::ImageFile {
                image_file: ImageFile {
                    file_id: id.clone(),
                    detail: None,
                },
            })
            .collect();
        content.push(Content::Text {
            text: Text {
                value: String::new(),
                annotations: vec![],
            },
        });
        let message = Message {
            id: new_id("msg_"),
            object: "thread.message".into(),
            created_at: t,
            thread_id: run.thread_id.clone(),
            status: MessageStatus::InProgress,
            incomplete_details: None,
            completed_at: None,
            incomplete_at: None,
            role: MessageRole::Assistant,
            content,
            assistant_id: Some(run.assistant_id.clone()),
            run_id: Some(run.id.clone()),
            attachments: vec![],
            metadata: Default::default(),
        };
        let step = RunStep {
            id: new_id("step_"),
            object: "thread.run.step".into(),
            created_at: t,
            assistant_id: run.assistant_id.clone(),
            thread_id: run.thread_id.clone(),
            run_id: run.id.clone(),
            kind: StepType::MessageCreation,
            status: StepStatus::InProgress,
            step_details: StepDetails::MessageCreation {
                message_creation: MessageCreation {
                    message_id: message.id.clone(),
                },
            },
            last_error: None,
            expired_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: None,
            metadata: Default::default(),
            usage: None,
        };
        let records = vec![
            crate::store::Record::of(&step)?,
            crate::store::Record::of(&message)?,
        ];
        self.db(move |s| s.insert_all(&records)).await?;
        let rid = run.id.clone();
        for ev in StreamEvent::step_started(&step) {
            self.emit(&rid, ev);
        }
        for ev in StreamEvent::message_started(&message) {
            self.emit(&rid, ev);
        }
        if !images.is_empty() {
            let parts = indexed(images.iter().map(|id| ContentPartDelta::ImageFile {
                image_file: ImageFileDelta {
                    file_id: id.clone(),
                },
            }));
            self.emit(&rid, StreamEvent::content(&message.id, parts));
        }
        Ok(Writer {
            step,
            text_index: images.len(),
            message,
            text: String::new(),
            sent_text: false,
        })
    }

    /// Finish a message: annotate its links, store it, complete its step.
    async fn close_message(
        &self,
        ctx: &Ctx,
        mut w: Writer,
        incomplete: bool,
        usage: RunUsage,
    ) -> Result<()> {
        let rid = ctx.run.id.clone();
        let annotations = self.annotations(ctx, &w.text).await;
        if !w.sent_text || !annotations.is_empty() {
            let text = TextDelta {
                value: (!w.sent_text).then(String::new),
                annotations: Some(indexed(annotations.iter().cloned())),
            };
            self.emit(
                &rid,
                StreamEvent::content(&w.message.id, vec![text_part(w.text_index, text)]),
            );
        }
        if let Some(Content::Text { text }) = w.message.content.get_mut(w.text_index) {
            text.value = std::mem::take(&mut w.text);
            text.annotations = annotations;
        }
        let t = now();
        if incomplete {
            w.message.status = MessageStatus::Incomplete;
            w.message.incomplete_at = Some(t);
            w.message.incomplete_details = Some(json!({"reason": "max_tokens"}));
        } else {
            w.message.status = MessageStatus::Completed;
            w.message.completed_at = Some(t);
        }
        w.step.status = StepStatus::Completed;
        w.step.completed_at = Some(t);
        w.step.usage = Some(usage);
        let (m, s2) = (w.message.clone(), w.step.clone());
        self.db(move |s| {
            s.save(&m)?;
            s.save(&s2)
        })
        .await?;
        let message = Box::new(w.message.clone());
        self.emit(
            &rid,
            if incomplete {
                StreamEvent::MessageIncomplete(message)
            } else {
                StreamEvent::MessageCompleted(message)
            },
        );
        self.emit(&rid, StreamEvent::StepCompleted(Box::new(w.step.clone())));
        Ok(())
    }

    /// `file_path` annotations for the text's `sandbox:/mnt/data/…` links to existing files;
    /// each linked file becomes a File (purpose `assistants_output`).
    async fn annotations(&self, ctx: &Ctx, text: &str) -> Vec<Annotation> {
        let Some(sessions) = self.inner.sessions.clone() else {
            return vec![];
        };
        let links = annotate::links(text);
        if links.is_empty() {
            return vec![];
        }
        let (store, dir, tid, max) = (
            self.inner.store.clone(),
            self.inner.files_dir.clone(),
            ctx.run.thread_id.clone(),
            self.inner.config.max_file_bytes,
        );
        let made = tokio::task::spawn_blocking(move || {
            let mut files: Vec<(String, String)> = vec![];
            let mut out = vec![];
            for l in links {
                let id = match files.iter().find(|(rel, _)| *rel == l.relative) {
                    Some((_, id)) => id.clone(),
                    None => {
                        let Ok(bytes) = sessions.read_file(&tid, &l.relative, max) else {
                            continue;
                        };
                        if !export_fits(&sessions, &tid, bytes.len()) {
                            continue;
                        }
                        let name = l.relative.rsplit('/').next().unwrap_or(&l.relative);
                        match blobs::create(store.as_ref(), &dir, name, "assistants_output", &bytes)
                        {
                            Ok(f) => {
                                files.push((l.relative.clone(), f.id.clone()));
                                f.id
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not store a linked file");
                                continue;
                            }
                        }
                    }
                };
                out.push(Annotation::FilePath {
                    text: l.text,
                    start_index: l.start,
                    end_index: l.end,
                    file_path: FileRef { file_id: id },
                });
            }
            out
        })
        .await;
        made.unwrap_or_default()
    }

    /// Start a `tool_calls` step (its calls come as deltas).
    async fn open_tool_step(&self, ctx: &Ctx) -> Result<RunStep> {
        let step = RunStep {
            id: new_id("step_"),
            object: "thread.run.step".into(),
            created_at: now(),
            assistant_id: ctx.run.assistant_id.clone(),
            thread_id: ctx.run.thread_id.clone(),
            run_id: ctx.run.id.clone(),
            kind: StepType::ToolCalls,
            status: StepStatus::InProgress,
            step_details: StepDetails::ToolCalls { tool_calls: vec![] },
            last_error: None,
            expired_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: None,
            metadata: Default::default(),
            // Shown once the step completes (after its code, or when its outputs arrive).
            usage: None,
        };
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
    async fn tool_step(
        &self,
        ctx: &mut Ctx,
        calls: &[ToolCall],
        streamed: ToolStream,
        usage: RunUsage,
        flag: &Arc<AtomicBool>,
    ) -> Result<bool> {
        let rid = ctx.run.id.clone();
        let is_code = |c: &ToolCall| Some(&c.name) == ctx.code_tool.as_ref();
        let mut tool_calls: Vec<StepToolCall> = calls
            .iter()
            .map(|c| {
                if is_code(c) {
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
            if flag.load(Ordering::SeqCst) {
                return Ok(false);
            }
            // The run's input files go in with its first cell.
            let inputs = std::mem::take(&mut ctx.inputs);
            let (outputs, result) = match self
                .run_code(ctx, id, code_interpreter.input.clone(), inputs, flag)
                .await
            {
                Ok(done) => done,
                // Not the code's failure but the server's: the run cannot go on.
                Err(lost) => {
                    if !flag.load(Ordering::SeqCst) {
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
            if flag.load(Ordering::SeqCst) {
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
                            tool_calls: functions,
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
    async fn run_code(
        &self,
        ctx: &Ctx,
        call_id: &str,
        code: String,
        inputs: Vec<InputFile>,
        flag: &Arc<AtomicBool>,
    ) -> std::result::Result<(Vec<CodeOutput>, CodeToolResult), String> {
        let Some(sessions) = self.inner.sessions.clone() else {
            let msg = "The code interpreter is not available on this server.";
            return Ok((
                vec![CodeOutput::Logs { logs: msg.into() }],
                CodeToolResult {
                    status: "error".into(),
                    logs: msg.into(),
                    ..Default::default()
                },
            ));
        };
        let opts = ExecOptions {
            cancel: Some(flag.clone()),
            inputs,
            ..Default::default()
        };
        let r = match sessions.execute(&ctx.run.thread_id, None, code, opts).await {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("The code could not run: {e}");
                return Ok((
                    vec![CodeOutput::Logs { logs: msg.clone() }],
                    CodeToolResult {
                        status: "error".into(),
                        logs: msg,
                        ..Default::default()
                    },
                ));
            }
        };
        if r.worker_lost {
            return Err(format!(
                "The sandbox worker crashed while running this run's code: {}.",
                r.detail.as_deref().unwrap_or("the worker process died")
            ));
        }
        let mut logs = r.stdout.clone();
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
        let (store, dir) = (self.inner.store.clone(), self.inner.files_dir.clone());
        let images = r.images.clone();
        let prefix = call_id.to_string();
        let tid = ctx.run.thread_id.clone();
        let stored = tokio::task::spawn_blocking(move || {
            images
                .iter()
                .enumerate()
                .filter_map(|(i, png)| {
                    if !export_fits(&sessions, &tid, png.len()) {
                        return None;
                    }
                    let name = format!("{prefix}-image-{}.png", i + 1);
                    blobs::create(store.as_ref(), &dir, &name, "assistants_output", png)
                        .map_err(|e| tracing::warn!(error = %e, "could not store an image"))
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
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
