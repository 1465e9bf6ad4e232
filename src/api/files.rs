//! `/v1/files`: uploads stream to disk (never whole in memory), land by an atomic rename, and
//! are capped in size.

use std::io::Write;
use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{MultipartError, MultipartRejection};
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

async fn upload(
    State(state): State<AppState>,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<FileObject>> {
    let mut mp = mp.map_err(|e| {
        ApiError::new(
            e.status(),
            format!(
                "Invalid request: expected a multipart/form-data body with 'file' and 'purpose' \
                 fields ({}).",
                e.body_text()
            ),
        )
    })?;
    let mut purpose: Option<String> = None;
    let mut staged: Option<(tempfile::NamedTempFile, String, u64)> = None;
    let max = state.config.max_upload_bytes;
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error("Invalid multipart body", &e))?
    {
        match field.name() {
            Some("purpose") => {
                purpose = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| multipart_error("Invalid 'purpose'", &e).param("purpose"))?,
                );
            }
            Some("file") => {
                let filename = match field.file_name() {
                    Some(name) => clean_filename(name).ok_or_else(|| {
                        ApiError::invalid(
                            "file",
                            "Invalid file name: once folders and control characters are \
                             dropped, it must leave a name of 1 to 255 bytes other than '.' and \
                             '..'.",
                        )
                    })?,
                    None => {
                        return Err(ApiError::invalid(
                            "file",
                            "The uploaded file must have a file name (in UTF-8).",
                        ));
                    }
                };
                let dir = state.files_dir.clone();
                let mut tmp =
                    tokio::task::spawn_blocking(move || tempfile::NamedTempFile::new_in(dir))
                        .await?
                        .map_err(ApiError::internal)?;
                let mut size: u64 = 0;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| multipart_error("Could not read the upload", &e))?
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

/// A multipart body that could not be read: 413 past the size limit, otherwise a 400 (axum
/// calls a body that breaks off midway a 500, but it is the client's body).
fn multipart_error(what: &str, e: &MultipartError) -> ApiError {
    let status = match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("{what}: {}", e.body_text()))
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
        .map_err(|e| match e.kind() {
            // Deleted since its record was read.
            std::io::ErrorKind::NotFound => ApiError::not_found("file", &id),
            _ => ApiError::internal(format!("blob of {id}: {e}")),
        })?;
    let stream = tokio_util::io::ReaderStream::new(file);
    let disposition = content_disposition(&f.filename);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, f.bytes)
        .header(header::CONTENT_DISPOSITION, disposition)
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

/// `attachment` under `name`: printable ASCII in `filename` (anything else, and quotes and
/// backslashes, become `_`), the exact name percent-encoded in `filename*` (RFC 6266). Names
/// the code interpreter gave its files may hold any character but `/`, and a header may not.
fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
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
