//! One model turn: ask the backend, stream its text into a message and its tool calls into a
//! tool step, and finish the message (annotating its `sandbox:` links).

use super::tools::export_fits;
use super::worker::{Ctx, Stop};

use super::calls::{self, StreamedCall};
use super::events::{ContentPartDelta, ImageFileDelta, StreamEvent, TextDelta, indexed};
use super::{Orchestrator, Result, annotate};
use crate::backend::{BackendError, ChatResponse, ModelDelta, OwnedDelta};
use crate::model::{
    Annotation, Content, FileRef, ImageFile, Message, MessageCreation, MessageStatus, RunStep,
    RunUsage, StepDetails, StepStatus, Text, now,
};
use crate::store::{StoreExt, blobs};

/// A message being written.
pub(super) struct Writer {
    pub(super) step: RunStep,
    pub(super) message: Message,
    pub(super) text_index: usize,
    pub(super) text: String,
    pub(super) sent_text: bool,
}

/// A turn's tool calls as they streamed, and the step they streamed into.
#[derive(Default)]
pub(super) struct ToolStream {
    pub(super) step: Option<RunStep>,
    pub(super) calls: Vec<StreamedCall>,
}

/// How a model turn ended.
pub(super) enum TurnEnd {
    Answered(Box<Turn>),
    /// The backend could not answer.
    Failed(BackendError),
    /// Cancelled, or the run's time ran out, while the model was answering.
    Stopped,
}

/// What a model turn produced: its answer, the message its text went to, its streamed calls.
pub(super) struct Turn {
    pub(super) resp: ChatResponse,
    pub(super) writer: Option<Writer>,
    pub(super) tools: ToolStream,
}

/// A message delta's text part at `index`.
pub(super) fn text_part(index: usize, text: TextDelta) -> super::events::ContentDelta {
    super::events::Indexed {
        index,
        value: ContentPartDelta::Text { text },
    }
}

impl Orchestrator {
    /// Ask the model, streaming its text into a new message and its tool calls into a tool
    /// step (see [`calls`]). `None` when cancelled or when the run's time ran out first.
    pub(super) async fn model_turn(
        &self,
        ctx: &mut Ctx,
        req: crate::backend::ChatRequest,
        stop: &Stop,
    ) -> Result<TurnEnd> {
        let backend = ctx.backend.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OwnedDelta>();
        let sink = move |d: ModelDelta<'_>| {
            let _ = tx.send(OwnedDelta::from(d));
        };
        let mut writer: Option<Writer> = None;
        let mut tools = ToolStream::default();
        let res = {
            let fut = backend.complete(req, &sink);
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    r = &mut fut => break Some(r),
                    Some(piece) = rx.recv() => {
                        self.take_piece(ctx, &mut writer, &mut tools, piece).await?
                    }
                    _ = stop.token().cancelled() => break None,
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

    pub(super) async fn take_piece(
        &self,
        ctx: &mut Ctx,
        writer: &mut Option<Writer>,
        tools: &mut ToolStream,
        piece: OwnedDelta,
    ) -> Result<()> {
        match piece {
            OwnedDelta::Text(t) => self.write_text(ctx, writer, &t).await,
            OwnedDelta::CallStarted { index, id, name } => {
                let code = Some(&name) == ctx.code_tool.as_ref();
                // Only a turn's first call streams live, and only if no text came first (its
                // message would still be open): the SDKs take a delta for another index as the
                // end of the current call, and a model may still be writing (or, interleaving,
                // add to) a call when the next one starts.
                let search = Some(&name) == ctx.search_tool.as_ref();
                let live = writer.is_none() && tools.calls.is_empty() && !search;
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
            OwnedDelta::Arguments { index, text } => {
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

    pub(super) async fn write_text(
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
    pub(super) async fn open_message(&self, ctx: &mut Ctx) -> Result<Writer> {
        let run = &ctx.run;
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
        let message = Message::of_run(run, content);
        let step = RunStep::start(
            run,
            StepDetails::MessageCreation {
                message_creation: MessageCreation {
                    message_id: message.id.clone(),
                },
            },
        );
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
    pub(super) async fn close_message(
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
            w.message.incomplete_details =
                Some(crate::model::IncompleteDetails::because("max_tokens"));
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
    pub(super) async fn annotations(&self, ctx: &Ctx, text: &str) -> Vec<Annotation> {
        let mut all = self.file_paths(ctx, text).await;
        all.extend(super::search::citations(text, &ctx.searches));
        all.sort_by_key(|a| match a {
            Annotation::FilePath { start_index, .. }
            | Annotation::FileCitation { start_index, .. } => *start_index,
        });
        all
    }

    async fn file_paths(&self, ctx: &Ctx, text: &str) -> Vec<Annotation> {
        let Some(sessions) = self.inner.sessions.clone() else {
            return vec![];
        };
        let links = annotate::links(text);
        if links.is_empty() {
            return vec![];
        }
        let (store, bucket, max) = (
            &self.store,
            &self.inner.bucket,
            self.inner.config.max_file_bytes,
        );
        let key = self.session_of(&ctx.run.thread_id);
        let mut files: Vec<(String, String)> = vec![];
        let mut out = vec![];
        for l in links {
            let id = match files.iter().find(|(rel, _)| *rel == l.relative) {
                Some((_, id)) => id.clone(),
                None => {
                    // The session's file, charged to its export budget (blocking work); then
                    // stored as a File (object-store work, awaited here).
                    // (The project's limit before the budget: a File it refuses costs the
                    // session nothing.)
                    let (s, t, rel) = (sessions.clone(), key.clone(), l.relative.clone());
                    let read = tokio::task::spawn_blocking(move || s.read_file(&t, &rel, max).ok());
                    let Ok(Some(bytes)) = read.await else {
                        continue;
                    };
                    if !self.storage_fits(bytes.len() as u64).await {
                        continue;
                    }
                    let (s, t, n) = (sessions.clone(), key.clone(), bytes.len());
                    let fits = tokio::task::spawn_blocking(move || export_fits(&s, &t, n)).await;
                    if !matches!(fits, Ok(true)) {
                        continue;
                    }
                    let name = l.relative.rsplit('/').next().unwrap_or(&l.relative);
                    let max = self.project.limits.max_storage_bytes;
                    match blobs::create(store, bucket, name, "assistants_output", bytes, max).await
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
    }
}
