//! What a drive knows about its run: the assistant, thread and history, the images users
//! showed, the files for `/mnt/data`.

use super::worker::Ctx;

use super::prompt::{self};
use super::{Orchestrator, Result};
use crate::model::{
    Assistant, CodeOutput, Content, Message, MessageRole, Run, StepDetails, StepToolCall, Thread,
};
use crate::sandbox::InputFile;
use crate::store::{Order, Page, StoreExt, blobs};

/// The media type of an image a vision model takes, from its first bytes.
pub(super) fn image_type(bytes: &[u8]) -> Option<&'static str> {
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

impl Orchestrator {
    /// Load what a drive needs and put the run's files into the session.
    pub(super) async fn context(&self, run: Run) -> Result<Ctx> {
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
            search_tool: None,
            vector_stores: vec![],
            thread_store: None,
            searches: vec![],
        };
        // file_search: the assistant's store and the thread's.
        for r in assistant
            .as_ref()
            .map(|a| &a.tool_resources)
            .into_iter()
            .chain(std::iter::once(&thread.tool_resources))
        {
            if let Some(fs) = &r.file_search {
                for id in &fs.vector_store_ids {
                    if !ctx.vector_stores.contains(id) {
                        ctx.vector_stores.push(id.clone());
                    }
                }
            }
        }
        if !ctx.vector_stores.is_empty() {
            ctx.search_tool = super::search::search_tool_name(&ctx.run.tools);
        }
        ctx.thread_store = thread
            .tool_resources
            .file_search
            .as_ref()
            .and_then(|fs| fs.vector_store_ids.first().cloned());
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
                    // Earlier searches of this run (before a pause): what citations point at.
                    if let StepToolCall::FileSearch { file_search, .. } = c {
                        ctx.searches.push(
                            file_search
                                .results
                                .iter()
                                .map(|r| r.file_id.clone())
                                .collect(),
                        );
                    }
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
    pub(super) async fn image_urls(
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
        use base64::Engine as _;
        let (store, bucket) = (&self.store, &self.inner.bucket);
        let mut out = std::collections::HashMap::new();
        for id in ids {
            let now = crate::model::now();
            if out.contains_key(&id) {
                continue;
            }
            let Ok(Some(f)) = blobs::find_live(store, bucket, &id, now).await else {
                continue;
            };
            if f.bytes > MAX_IMAGE_BYTES {
                continue;
            }
            let bytes = match bucket.get_bytes(&blobs::key(&id)).await {
                Ok(b) if b.len() as u64 <= MAX_IMAGE_BYTES => b,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(file = %id, error = %e, "reading an image file");
                    continue;
                }
            };
            let Some(mime) = image_type(&bytes) else {
                continue;
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            out.insert(id, format!("data:{mime};base64,{b64}"));
        }
        Ok(out)
    }

    /// The run's input files and their names in `/mnt/data` (the mapping), and the copies to
    /// make there. A file already there is kept (the code may have changed it), unless the
    /// newest user message attached it again.
    pub(super) async fn stage_files(
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
        let (store, bucket) = (&self.store, &self.inner.bucket);
        let mut out: Vec<(String, String)> = vec![];
        let mut inputs = vec![];
        for id in unique {
            let f = match blobs::find_live(store, bucket, &id, crate::model::now()).await {
                Ok(Some(f)) => f,
                _ => continue,
            };
            // The object itself, or a copy of it on this node.
            let src = match bucket.local_path(&blobs::key(&id)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(file = %id, error = %e, "fetching a file for /mnt/data");
                    continue;
                }
            };
            let base = crate::model::plain_file_name(&f.filename).unwrap_or_else(|| id.clone());
            let name = if out.iter().any(|(n, _)| *n == base) {
                format!("{id}-{base}")
            } else {
                base
            };
            inputs.push(InputFile {
                name: name.clone(),
                src,
                replace: fresh.contains(&id),
            });
            out.push((name, id));
        }
        Ok((out, inputs))
    }
}
