//! Oasis's own code-interpreter endpoints: run code in a session without assistants.
//!
//! - `POST /v1/code_interpreter/execute` `{code, session_id?, file_ids?, timeout_ms?, image?, stream?}`
//! - `GET /v1/code_interpreter/sessions/{id}/files`
//! - `DELETE /v1/code_interpreter/sessions/{id}`

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::files::{blob_path, clean_filename, create_from_bytes};
use super::{AppState, blocking};
use crate::model::{FileObject, Thread, new_id};
use crate::sandbox::{ExecOptions, ExecResult, Outcome, OutputTap, Sessions, StreamKind};
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
            delete(end_session),
        )
}

/// Longest deadline a caller may ask for.
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteRequest {
    code: String,
    session_id: Option<String>,
    #[serde(default)]
    file_ids: Vec<String>,
    timeout_ms: Option<u64>,
    image: Option<String>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Serialize)]
pub struct ExecuteResponse {
    pub session_id: String,
    pub status: &'static str,
    pub stdout: String,
    pub stderr: String,
    pub result: Option<String>,
    pub error: Option<crate::sandbox::PythonError>,
    pub outputs: Vec<serde_json::Value>,
    pub files: Vec<serde_json::Value>,
    pub duration_ms: f64,
    pub truncated: bool,
}

fn sessions(state: &AppState) -> ApiResult<&Sessions> {
    state
        .sessions
        .as_ref()
        .ok_or_else(|| ApiError::internal("the code interpreter is not configured"))
}

/// The sandbox outcome as the API names it.
pub fn status_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "completed",
        other => other.as_str(),
    }
}

async fn execute(
    State(state): State<AppState>,
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
    let data_dir = manager.data_dir(&session_id)?;
    copy_inputs(&state, &req.file_ids, &data_dir).await?;
    let mut limits = manager.image_limits(req.image.as_deref())?;
    if let Some(ms) = req.timeout_ms {
        if ms == 0 || ms > MAX_TIMEOUT_MS {
            return Err(ApiError::invalid(
                "timeout_ms",
                format!("Invalid 'timeout_ms': expected 1 to {MAX_TIMEOUT_MS}, got {ms}."),
            ));
        }
        limits.timeout = Duration::from_millis(ms);
    }
    let mut opts = ExecOptions {
        limits: Some(limits),
        ..Default::default()
    };
    if !req.stream {
        let r = manager
            .execute(&session_id, req.image.as_deref(), req.code, opts)
            .await?;
        let body = respond(&state, &manager, &session_id, r).await?;
        return Ok(Json(body).into_response());
    }
    // Streaming: output chunks as the guest writes them, then the result.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let tap_tx = tx.clone();
    let tap: OutputTap = Arc::new(move |kind, bytes: &[u8]| {
        let name = match kind {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        };
        let data = json!({"text": String::from_utf8_lossy(bytes)}).to_string();
        let _ = tap_tx.send(Event::default().event(name).data(data));
    });
    opts.tap = Some(tap);
    let image = req.image.clone();
    tokio::spawn(async move {
        let r = manager
            .execute(&session_id, image.as_deref(), req.code, opts)
            .await;
        let event = match r {
            Ok(r) => match respond(&state, &manager, &session_id, r).await {
                Ok(body) => Event::default()
                    .event("result")
                    .data(serde_json::to_string(&body).unwrap_or_default()),
                Err(e) => Event::default().event("error").data(e.body().to_string()),
            },
            Err(e) => Event::default()
                .event("error")
                .data(ApiError::from(e).body().to_string()),
        };
        let _ = tx.send(event);
        let _ = tx.send(Event::default().event("done").data("[DONE]"));
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Copy Files into the session's `/mnt/data` under their original names.
async fn copy_inputs(
    state: &AppState,
    file_ids: &[String],
    data_dir: &std::path::Path,
) -> ApiResult<()> {
    if file_ids.len() > 20 {
        return Err(ApiError::invalid(
            "file_ids",
            "Invalid 'file_ids': at most 20 files.",
        ));
    }
    for id in file_ids {
        let id2 = id.clone();
        let f = blocking(state, move |s| s.find::<FileObject>(&id2))
            .await?
            .ok_or_else(|| {
                ApiError::invalid("file_ids", format!("No file found with id '{id}'."))
            })?;
        let name = clean_filename(&f.filename).unwrap_or_else(|| f.id.clone());
        let src = blob_path(state, &f.id);
        let dst = data_dir.join(name);
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            // Replace whatever is there (a link the guest left must not be followed).
            let _ = std::fs::remove_file(&dst);
            let tmp = tempfile::NamedTempFile::new_in(&dir)?;
            std::fs::copy(&src, tmp.path())?;
            tmp.persist(&dst).map_err(|e| e.error)?;
            Ok(())
        })
        .await?
        .map_err(|e| ApiError::internal(format!("copying {id} into the session: {e}")))?;
    }
    Ok(())
}

/// Turn a sandbox result into the API body, storing changed files and images as Files.
async fn respond(
    state: &AppState,
    manager: &Sessions,
    session_id: &str,
    r: ExecResult,
) -> ApiResult<ExecuteResponse> {
    let mut outputs = vec![];
    let mut logs = r.stdout.clone();
    if let Some(v) = &r.result {
        logs.push_str(v);
        logs.push('\n');
    }
    if !r.stderr.is_empty() {
        logs.push_str(&r.stderr);
    }
    if !logs.is_empty() {
        outputs.push(json!({"type": "logs", "logs": logs}));
    }
    for (i, png) in r.images.iter().enumerate() {
        let f = create_from_bytes(
            state,
            &format!("image-{}.png", i + 1),
            "assistants_output",
            png.clone(),
        )
        .await?;
        outputs.push(json!({"type": "image", "image": {"file_id": f.id}}));
    }
    let mut files = vec![];
    for change in &r.files {
        let (m, id, rel) = (
            manager.clone(),
            session_id.to_string(),
            change.relative.clone(),
        );
        let max = state.config.max_upload_bytes;
        let bytes = match tokio::task::spawn_blocking(move || m.read_file(&id, &rel, max)).await? {
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
        let f = create_from_bytes(state, name, "assistants_output", bytes).await?;
        files.push(json!({"file_id": f.id, "path": change.path, "bytes": f.bytes}));
    }
    Ok(ExecuteResponse {
        session_id: session_id.to_string(),
        status: status_name(r.outcome),
        truncated: r.truncated(),
        stdout: r.stdout,
        stderr: r.stderr,
        result: r.result,
        error: r.error,
        outputs,
        files,
        duration_ms: r.duration.as_secs_f64() * 1000.0,
    })
}

async fn list_files(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let manager = sessions(&state)?;
    let files = manager.list_files(&id)?;
    let data: Vec<_> = files
        .into_iter()
        .map(|(rel, size)| json!({"path": format!("/mnt/data/{rel}"), "bytes": size}))
        .collect();
    Ok(Json(
        json!({"object": "list", "session_id": id, "data": data}),
    ))
}

async fn end_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let manager = sessions(&state)?;
    if !manager.remove(&id).await? {
        return Err(ApiError::not_found("session", &id));
    }
    Ok(Json(
        json!({"id": id, "object": "code_interpreter.session.deleted", "deleted": true}),
    ))
}
