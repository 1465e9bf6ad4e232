//! `/v1/files`: uploads stream to disk (never whole in memory), land by an atomic rename, and
//! are capped in size.

use std::io::Write;
use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;

use super::error::{ApiError, ApiResult};
use super::extract::{ListBody, ListQuery, deleted};
use super::{AppState, blocking};
use crate::model::{FileObject, Kind};
use crate::store::{Filter, StoreExt, blobs};

/// Purposes a client may upload with.
const UPLOAD_PURPOSES: &[&str] = &[
    "assistants",
    "vision",
    "batch",
    "fine-tune",
    "user_data",
    "evals",
];

pub fn router(max_upload: u64) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/files",
            get(list).post(upload).layer(DefaultBodyLimit::max(
                usize::try_from(max_upload)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1 << 20),
            )),
        )
        .route("/v1/files/{file_id}", get(retrieve).delete(remove))
        .route("/v1/files/{file_id}/content", get(content))
}

/// Where a file's bytes live.
pub fn blob_path(state: &AppState, id: &str) -> PathBuf {
    blobs::blob_path(&state.files_dir, id)
}

/// Keep only a plain file name: no folders, no `..`, no control characters.
pub fn clean_filename(name: &str) -> Option<String> {
    crate::model::plain_file_name(name)
}

async fn upload(State(state): State<AppState>, mut mp: Multipart) -> ApiResult<Json<FileObject>> {
    let mut purpose: Option<String> = None;
    let mut staged: Option<(tempfile::NamedTempFile, String, u64)> = None;
    let max = state.config.max_upload_bytes;
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {e}")))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(field.text().await.map_err(|e| {
                    ApiError::invalid("purpose", format!("Invalid 'purpose': {e}"))
                })?);
            }
            Some("file") => {
                let filename = field.file_name().and_then(clean_filename).ok_or_else(|| {
                    ApiError::invalid("file", "The uploaded file must have a file name.")
                })?;
                let dir = state.files_dir.clone();
                let mut tmp =
                    tokio::task::spawn_blocking(move || tempfile::NamedTempFile::new_in(dir))
                        .await?
                        .map_err(ApiError::internal)?;
                let mut size: u64 = 0;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("Could not read the upload: {e}")))?
                {
                    size += chunk.len() as u64;
                    if size > max {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("File is too large: the maximum size is {max} bytes."),
                        )
                        .param("file"));
                    }
                    tmp = tokio::task::spawn_blocking(move || tmp.write_all(&chunk).map(|_| tmp))
                        .await?
                        .map_err(ApiError::internal)?;
                }
                staged = Some((tmp, filename, size));
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    other,
                    format!("Unrecognized request argument supplied: {other}"),
                ));
            }
            None => {}
        }
    }
    let purpose = purpose
        .ok_or_else(|| ApiError::invalid("purpose", "Missing required parameter: 'purpose'."))?;
    if !UPLOAD_PURPOSES.contains(&purpose.as_str()) {
        return Err(ApiError::invalid(
            "purpose",
            format!(
                "Invalid value for purpose: '{purpose}'. Supported values are: {}.",
                UPLOAD_PURPOSES
                    .iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let (tmp, filename, size) =
        staged.ok_or_else(|| ApiError::invalid("file", "Missing required parameter: 'file'."))?;
    let obj = FileObject::new(filename, purpose, size);
    commit(&state, tmp, obj).await.map(Json)
}

/// Move a staged blob into place and record it; either both happen or neither.
pub async fn commit(
    state: &AppState,
    tmp: tempfile::NamedTempFile,
    obj: FileObject,
) -> ApiResult<FileObject> {
    let dir = state.files_dir.clone();
    let out = obj.clone();
    blocking(state, move |s| blobs::commit(s, &dir, tmp, &obj)).await?;
    Ok(out)
}

/// Store `bytes` as a new File (e.g. a code-interpreter output).
pub async fn create_from_bytes(
    state: &AppState,
    filename: &str,
    purpose: &str,
    bytes: Vec<u8>,
) -> ApiResult<FileObject> {
    let dir = state.files_dir.clone();
    let (name, purpose) = (filename.to_string(), purpose.to_string());
    blocking(state, move |s| {
        blobs::create(s, &dir, &name, &purpose, &bytes)
    })
    .await
}

async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<FileObject>> {
    Ok(Json(
        blocking(&state, move |s| s.fetch::<FileObject>(&id)).await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id2 = id.clone();
    let existed = blocking(&state, move |s| s.delete(Kind::File, &id2)).await?;
    if !existed {
        return Err(ApiError::not_found("file", &id));
    }
    let _ = tokio::fs::remove_file(blob_path(&state, &id)).await;
    Ok(deleted(&id, "file"))
}

async fn content(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id2 = id.clone();
    let f = blocking(&state, move |s| s.fetch::<FileObject>(&id2)).await?;
    let file = tokio::fs::File::open(blob_path(&state, &id))
        .await
        .map_err(|e| ApiError::internal(format!("blob of {id}: {e}")))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    let disposition = format!(
        "attachment; filename=\"{}\"",
        f.filename.replace(['"', '\\'], "_")
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, f.bytes)
        .header(header::CONTENT_DISPOSITION, disposition)
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

async fn list(
    State(state): State<AppState>,
    q: ListQuery,
) -> ApiResult<Json<ListBody<FileObject>>> {
    let page = q.page()?;
    let filter = q.purpose.clone().map(|v| Filter {
        field: "purpose",
        value: v,
    });
    let (data, more) = blocking(&state, move |s| {
        s.page::<FileObject>(None, filter.as_ref(), &page)
    })
    .await?;
    Ok(Json(ListBody::new(data, more)))
}
