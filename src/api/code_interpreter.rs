//! Oasis's own code-interpreter endpoints: run code in a session without assistants.
//!
//! - `POST /v1/code_interpreter/execute` `{code, session_id?, file_ids?, timeout_ms?, image?, stream?}`
//! - `GET /v1/code_interpreter/sessions/{id}` (live, hibernated or idle; state bytes; last used)
//! - `GET /v1/code_interpreter/sessions/{id}/files`
//! - `DELETE /v1/code_interpreter/sessions/{id}`

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::files::{clean_filename, create_from_bytes, local_copy};
use super::wire::{
    Deleted, ListTag, SessionDeleted, SessionFile, SessionFileList, SessionId, SessionObject,
    SessionStatus, SessionTag,
};
use super::{AppState, Scoped, blocking};
use crate::model::{FileObject, FileRef, Thread, new_id};
use crate::sandbox::{
    ExecOptions, ExecResult, InputFile, Outcome, OutputTap, Sessions, StreamKind,
};
use crate::store::StoreExt;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/code_interpreter/execute", post(execute))
        .route(
            "/v1/code_interpreter/sessions/{session_id}/files",
            get(list_files),
        )
        .route(
            "/v1/code_interpreter/sessions/{session_id}",
            get(get_session).delete(end_session),
        )
}

/// Longest deadline a caller may ask for.
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Python source.
    #[schemars(regex(pattern = r"\S"))]
    code: String,
    /// Reuse this session (a `thread_…` id must name a thread); absent or null: a new session.
    #[schemars(with = "Option<SessionId>")]
    session_id: Option<String>,
    /// Files (which must exist) copied into /mnt/data.
    #[serde(default)]
    #[schemars(length(max = 20))]
    file_ids: Vec<String>,
    #[schemars(range(min = 1, max = MAX_TIMEOUT_MS))]
    timeout_ms: Option<u64>,
    /// A sandbox image (`scientific` by default).
    image: Option<String>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecuteResponse {
    pub session_id: String,
    pub status: ExecStatus,
    pub stdout: String,
    pub stderr: String,
    /// The repr of a final expression.
    pub result: Option<String>,
    pub error: Option<PythonErrorBody>,
    pub outputs: Vec<ExecOutput>,
    pub files: Vec<ExecFile>,
    #[schemars(range(min = 0))]
    pub duration_ms: f64,
    pub truncated: bool,
    /// What to know about the session's state, when there is something: its saved
    /// interpreter could not be restored (a new one started), or the sandbox worker running
    /// the call died.
    pub notice: Option<String>,
}

/// How an execute call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Completed,
    Error,
    Timeout,
    MemoryLimit,
    OutputLimit,
    Crashed,
    Cancelled,
}

impl From<Outcome> for ExecStatus {
    fn from(o: Outcome) -> ExecStatus {
        match o {
            Outcome::Ok => ExecStatus::Completed,
            Outcome::Error => ExecStatus::Error,
            Outcome::Timeout => ExecStatus::Timeout,
            Outcome::MemoryLimit => ExecStatus::MemoryLimit,
            Outcome::OutputLimit => ExecStatus::OutputLimit,
            Outcome::Crashed => ExecStatus::Crashed,
            Outcome::Cancelled => ExecStatus::Cancelled,
        }
    }
}

/// The Python exception that ended the call.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "PythonError")]
pub struct PythonErrorBody {
    pub name: String,
    pub message: String,
    pub traceback: String,
}

/// What the code showed: its logs, or an image it drew (stored as a File).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecOutput {
    Logs { logs: String },
    Image { image: FileRef },
}

/// A file the code wrote under /mnt/data, stored as a File.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecFile {
    pub file_id: String,
    pub path: String,
    pub bytes: u64,
}

fn sessions(state: &AppState) -> ApiResult<&Sessions> {
    state
        .sessions
        .as_ref()
        .ok_or_else(|| ApiError::internal("the code interpreter is not configured"))
}

async fn execute(
    Scoped(state): Scoped,
    ApiJson(req): ApiJson<ExecuteRequest>,
) -> ApiResult<Response> {
    let manager = sessions(&state)?.clone();
    if req.code.trim().is_empty() {
        return Err(ApiError::invalid(
            "code",
            "Missing required parameter: 'code'.",
        ));
    }
    let session_id = match req.session_id.clone() {
        Some(id) => {
            if id.starts_with("thread_") {
                let tid = id.clone();
                blocking(&state, move |s| s.fetch::<Thread>(&tid)).await?;
            }
            id
        }
        None => new_id("cisess_"),
    };
    let mut limits = manager.image_limits(req.image.as_deref())?;
    if let Some(ms) = req.timeout_ms {
        if ms == 0 || ms > MAX_TIMEOUT_MS {
            return Err(ApiError::invalid(
                "timeout_ms",
                format!("Invalid 'timeout_ms': expected 1 to {MAX_TIMEOUT_MS}, got {ms}."),
            ));
        }
        // A caller may lower the image's deadline, never raise it.
        limits.timeout = limits.timeout.min(Duration::from_millis(ms));
    }
    let mut opts = ExecOptions {
        limits: Some(limits),
        inputs: inputs(&state, &req.file_ids).await?,
        ..Default::default()
    };
    let key = state.session_key(&session_id)?;
    let admitted = state.admit_session(&manager, &key).await?;
    let call = Call {
        _admitted: admitted,
        state,
        manager,
        session_id,
        key,
    };
    if !req.stream {
        let r = call.execute(req.image.as_deref(), req.code, opts).await?;
        return Ok(Json(call.respond(r).await?).into_response());
    }
    // Streaming: output as the guest writes it, batched (a slow reader holds at most the
    // call's output caps here, whatever the guest writes), then the result.
    let out = Arc::new(Batches::default());
    let tap_out = out.clone();
    let tap: OutputTap = Arc::new(move |kind, bytes: &[u8]| tap_out.push(kind, bytes));
    opts.tap = Some(tap);
    let image = req.image.clone();
    let end = out.clone();
    tokio::spawn(async move {
        let r = call.execute(image.as_deref(), req.code, opts).await;
        let event = match r {
            Ok(r) => match call.respond(r).await {
                Ok(body) => Event::default()
                    .event("result")
                    .data(serde_json::to_string(&body).unwrap_or_default()),
                Err(e) => Event::default().event("error").data(e.body().to_string()),
            },
            Err(e) => Event::default()
                .event("error")
                .data(ApiError::from(e).body().to_string()),
        };
        end.finish(vec![event, Event::default().event("done").data("[DONE]")]);
    });
    let stream = futures::stream::unfold(out, |out| async move {
        let events = out.next().await?;
        Some((
            futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>)),
            out,
        ))
    })
    .flatten();
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Output chunks of a streamed call waiting for its reader: consecutive chunks of one stream
/// are merged into one event, so a guest writing a byte at a time costs a byte, not an event.
#[derive(Default)]
struct Batches {
    state: std::sync::Mutex<BatchState>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct BatchState {
    chunks: std::collections::VecDeque<(StreamKind, Vec<u8>)>,
    /// The last events (result, done), once the call is over.
    end: Option<Vec<Event>>,
    over: bool,
}

impl Batches {
    fn push(&self, kind: StreamKind, bytes: &[u8]) {
        let mut st = self.state.lock().expect("batches lock");
        match st.chunks.back_mut() {
            Some((k, buf)) if *k == kind => buf.extend_from_slice(bytes),
            _ => st.chunks.push_back((kind, bytes.to_vec())),
        }
        drop(st);
        self.ready.notify_one();
    }

    fn finish(&self, events: Vec<Event>) {
        self.state.lock().expect("batches lock").end = Some(events);
        self.ready.notify_one();
    }

    /// The next events to send: the output so far, or the last events; `None` after those.
    async fn next(&self) -> Option<Vec<Event>> {
        loop {
            {
                let mut st = self.state.lock().expect("batches lock");
                if st.over {
                    return None;
                }
                let mut events = vec![];
                while let Some((kind, bytes)) = st.chunks.pop_front() {
                    // A character split between writes is kept whole: hold its first bytes back
                    // for the next batch (the call's end flushes whatever is left).
                    let cut = match std::str::from_utf8(&bytes) {
                        Err(e) if e.error_len().is_none() && st.end.is_none() => e.valid_up_to(),
                        _ => bytes.len(),
                    };
                    if cut < bytes.len() {
                        let rest = bytes[cut..].to_vec();
                        if cut > 0 {
                            events.push(output_event(kind, &bytes[..cut]));
                        }
                        st.chunks.push_front((kind, rest));
                        break;
                    }
                    events.push(output_event(kind, &bytes));
                }
                if events.is_empty()
                    && let Some(end) = st.end.take()
                {
                    st.over = true;
                    return Some(end);
                }
                if !events.is_empty() {
                    return Some(events);
                }
            }
            self.ready.notified().await;
        }
    }
}

fn output_event(kind: StreamKind, bytes: &[u8]) -> Event {
    let name = match kind {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
    };
    let data = json!({"text": String::from_utf8_lossy(bytes)}).to_string();
    Event::default().event(name).data(data)
}

/// Files to copy into the session's `/mnt/data` under their original names (done by the
/// sandbox under the session's lock, charged to its storage quota).
async fn inputs(state: &AppState, file_ids: &[String]) -> ApiResult<Vec<InputFile>> {
    if file_ids.len() > 20 {
        return Err(ApiError::invalid(
            "file_ids",
            "Invalid 'file_ids': at most 20 files.",
        ));
    }
    let mut out = vec![];
    for id in file_ids {
        let f = super::files::find_live(state, id).await?.ok_or_else(|| {
            ApiError::invalid("file_ids", format!("No file found with id '{id}'."))
        })?;
        out.push(InputFile {
            name: clean_filename(&f.filename).unwrap_or_else(|| f.id.clone()),
            src: local_copy(state, &f.id).await?,
            // Replace whatever is there (a link the guest left is replaced, not followed).
            replace: true,
        });
    }
    Ok(out)
}

/// Most changed files one call turns into Files.
const MAX_FILES_PER_CALL: usize = 64;

/// One call of the endpoint, for turning its result into the answer.
struct Call {
    state: AppState,
    manager: Sessions,
    session_id: String,
    /// The sandbox's key for the session (see `AppState::session_key`).
    key: String,
    /// The session's place under the project's live-session limit, held until the call ends.
    _admitted: crate::tenancy::Admitted,
}

impl Call {
    /// Run the call (through the cluster's shared sessions, if any).
    async fn execute(
        &self,
        image: Option<&str>,
        code: String,
        opts: ExecOptions,
    ) -> Result<crate::sandbox::ExecResult, crate::sandbox::SandboxError> {
        let roaming = self.state.roaming.as_deref();
        crate::roaming::execute(roaming, &self.manager, &self.key, image, code, opts).await
    }

    /// Store `bytes` as a File if the session's export budget allows; otherwise a note.
    async fn export(&self, name: &str, bytes: Vec<u8>) -> ApiResult<Result<FileObject, String>> {
        let n = bytes.len() as u64;
        let full = format!(
            "[oasis] {name} ({n} bytes) was not stored as a File: the project has reached its \
             storage limit\n"
        );
        // The project's limit first: a File it refuses costs the session nothing.
        if !self.state.storage_fits(n).await? {
            return Ok(Err(full));
        }
        let (m, id) = (self.manager.clone(), self.key.clone());
        let fits = tokio::task::spawn_blocking(move || m.charge_export(&id, n))
            .await?
            .map_err(|e| ApiError::internal(format!("charging the session's exports: {e}")))?;
        if !fits {
            return Ok(Err(format!(
                "[oasis] {name} ({n} bytes) was not stored as a File: this session has used up \
                 what it may add to the file store\n"
            )));
        }
        // Checked again as the File is recorded (another request may have stored one since).
        match create_from_bytes(&self.state, name, "assistants_output", bytes).await {
            Ok(f) => Ok(Ok(f)),
            Err(e) if e.status == axum::http::StatusCode::TOO_MANY_REQUESTS => Ok(Err(full)),
            Err(e) => Err(e),
        }
    }

    /// Turn a sandbox result into the API body, storing changed files and images as Files
    /// within the session's export budget.
    async fn respond(&self, r: ExecResult) -> ApiResult<ExecuteResponse> {
        let mut outputs = vec![];
        let mut notes = String::new();
        let mut logs = r.stdout.clone();
        if let Some(v) = &r.result {
            logs.push_str(v);
            logs.push('\n');
        }
        if !r.stderr.is_empty() {
            logs.push_str(&r.stderr);
        }
        if !logs.is_empty() {
            outputs.push(ExecOutput::Logs { logs });
        }
        for (i, png) in r.images.iter().enumerate() {
            match self
                .export(&format!("image-{}.png", i + 1), png.clone())
                .await?
            {
                Ok(f) => outputs.push(ExecOutput::Image {
                    image: FileRef { file_id: f.id },
                }),
                Err(note) => notes.push_str(&note),
            }
        }
        let mut files = vec![];
        for (i, change) in r.files.iter().enumerate() {
            if i >= MAX_FILES_PER_CALL {
                notes.push_str(&format!(
                    "[oasis] {} more changed files were not stored as Files (at most \
                     {MAX_FILES_PER_CALL} a call)\n",
                    r.files.len() - i
                ));
                break;
            }
            let (m, id, rel) = (
                self.manager.clone(),
                self.key.clone(),
                change.relative.clone(),
            );
            // At most what the scan saw: the file may have grown since.
            let max = change.size.min(self.state.config.max_upload_bytes);
            let bytes =
                match tokio::task::spawn_blocking(move || m.read_file(&id, &rel, max)).await? {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(path = %change.path, error = %e, "skipping an output file");
                        continue;
                    }
                };
            let name = change
                .relative
                .rsplit('/')
                .next()
                .unwrap_or(&change.relative);
            match self.export(name, bytes).await? {
                Ok(f) => files.push(ExecFile {
                    file_id: f.id,
                    path: change.path.clone(),
                    bytes: f.bytes,
                }),
                Err(note) => notes.push_str(&note),
            }
        }
        Ok(ExecuteResponse {
            session_id: self.session_id.clone(),
            status: r.outcome.into(),
            truncated: r.truncated(),
            stdout: r.stdout,
            stderr: r.stderr + &notes,
            result: r.result,
            error: r.error.map(|e| PythonErrorBody {
                name: e.name,
                message: e.message,
                traceback: e.traceback,
            }),
            outputs,
            files,
            duration_ms: r.duration.as_secs_f64() * 1000.0,
            notice: r.notice,
        })
    }
}

async fn list_files(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionFileList>> {
    let manager = sessions(&state)?;
    let key = state.session_key(&id)?;
    if let Some(r) = &state.roaming {
        r.refresh(manager, &key).await?;
    }
    if manager.info(&key).await?.is_none() {
        return Err(ApiError::not_found("session", &id));
    }
    let files = manager.list_files(&key)?;
    let data = files
        .into_iter()
        .map(|(rel, size)| SessionFile {
            path: format!("/mnt/data/{rel}"),
            bytes: size,
        })
        .collect();
    Ok(Json(SessionFileList {
        object: ListTag,
        session_id: id,
        data,
    }))
}

async fn get_session(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionObject>> {
    let manager = sessions(&state)?;
    let key = state.session_key(&id)?;
    if let Some(r) = &state.roaming {
        r.refresh(manager, &key).await?;
    }
    let Some(info) = manager.info(&key).await? else {
        return Err(ApiError::not_found("session", &id));
    };
    let status = if info.live {
        SessionStatus::Live
    } else if info.hibernated {
        SessionStatus::Hibernated
    } else {
        SessionStatus::Idle
    };
    let last_used_at = info
        .last_used
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    Ok(Json(SessionObject {
        id,
        object: SessionTag,
        status,
        state_bytes: info.state_bytes,
        last_used_at,
    }))
}

async fn end_session(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted<SessionDeleted>>> {
    let manager = sessions(&state)?;
    let key = state.session_key(&id)?;
    let here = manager.remove(&key).await?;
    let shared = match &state.roaming {
        Some(r) => r.remove(&key).await?,
        None => false,
    };
    if !here && !shared {
        return Err(ApiError::not_found("session", &id));
    }
    Ok(Json(Deleted::new(id)))
}
