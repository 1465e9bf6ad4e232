//! `/v1/files`: uploads stream to disk (never whole in memory), are capped in size, and are
//! stored whole in the bucket (the local file system by a rename, or an S3 store in parts)
//! before their record exists. A File may expire (`expires_after`); an expired one is deleted,
//! bytes and record, when it is next read or listed or by the periodic sweep, whichever is
//! first. Should the object store fail, the request answers 503 and no File is recorded.

use std::io::Write;
use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ListBody, ListQuery, deleted};
use super::wire::{Deleted, FileDeleted};
use super::{AppState, Scoped, blocking};
use crate::bucket::BucketError;
use crate::model::FileObject;
use crate::store::{Filter, StoreExt, blobs};

/// The purposes a client may upload a File (or create an Upload) with: the ones Oasis has a use
/// for. `assistants_output` is Oasis's own (files the code interpreter wrote).
pub const PURPOSES: &[&str] = &["assistants", "vision", "user_data"];

/// OpenAI's other purposes, refused: Oasis has no Batch, fine-tuning or Evals API, so a File
/// uploaded for one could never be used, and storing it unchecked would only hide that.
const PURPOSES_WITHOUT_AN_API: &[&str] = &["batch", "fine-tune", "evals"];

/// `expires_after`'s bounds in seconds (an hour to 30 days), as OpenAI's.
pub const EXPIRES_AFTER_MIN_SECS: i64 = 3600;
pub const EXPIRES_AFTER_MAX_SECS: i64 = 2_592_000;

/// The largest `limit` of `GET /v1/files`, and its default (OpenAI's: other lists have 100
/// and 20).
pub const LIST_LIMIT: usize = 10_000;

/// A purpose a File may be created with, as the OpenAPI document shows it.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Purpose {
    Assistants,
    Vision,
    UserData,
}

/// When a File expires: `seconds` after its creation (`anchor` is always `created_at`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpiresAfter {
    #[schemars(with = "ExpiryAnchor")]
    pub anchor: String,
    #[schemars(range(min = 3600, max = 2_592_000))]
    pub seconds: i64,
}

/// `expires_after.anchor`'s one value.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ExpiryAnchor {
    CreatedAt,
}

/// A 400 unless `purpose` is one a File may be created with.
pub fn check_purpose(purpose: &str) -> ApiResult<()> {
    if PURPOSES.contains(&purpose) {
        return Ok(());
    }
    let why = if PURPOSES_WITHOUT_AN_API.contains(&purpose) {
        " Oasis serves the Assistants API: it has no Batch, fine-tuning or Evals API that could \
         use such a file."
    } else {
        ""
    };
    Err(ApiError::invalid(
        "purpose",
        format!(
            "Invalid value: '{purpose}'. Supported values are: 'assistants', 'vision', and \
             'user_data'.{why}"
        ),
    )
    .code("invalid_value"))
}

/// `expires_after`'s seconds, checked (its fields named `expires_after.*` in errors).
pub fn check_expires_after(e: &ExpiresAfter) -> ApiResult<i64> {
    if e.anchor != "created_at" {
        return Err(ApiError::invalid(
            "expires_after.anchor",
            format!(
                "Invalid value: '{}'. Supported values are: 'created_at'.",
                e.anchor
            ),
        )
        .code("invalid_value"));
    }
    let param = "expires_after.seconds";
    if e.seconds < EXPIRES_AFTER_MIN_SECS {
        return Err(ApiError::invalid(
            param,
            format!(
                "Invalid '{param}': integer below minimum value. Expected a value >= \
                 {EXPIRES_AFTER_MIN_SECS}, but got {} instead.",
                e.seconds
            ),
        )
        .code("integer_below_min_value"));
    }
    if e.seconds > EXPIRES_AFTER_MAX_SECS {
        return Err(ApiError::invalid(
            param,
            format!(
                "Invalid '{param}': integer above maximum value. Expected a value <= \
                 {EXPIRES_AFTER_MAX_SECS}, but got {} instead.",
                e.seconds
            ),
        )
        .code("integer_above_max_value"));
    }
    Ok(e.seconds)
}

/// `expires_after` from a form's `expires_after[anchor]` and `expires_after[seconds]` fields.
fn expires_after_from_form(
    anchor: Option<String>,
    seconds: Option<String>,
) -> ApiResult<Option<i64>> {
    let (anchor, seconds) = match (anchor, seconds) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "expires_after.seconds",
                "Missing required parameter: 'expires_after.seconds'.",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "expires_after.anchor",
                "Missing required parameter: 'expires_after.anchor'.",
            ));
        }
        (Some(a), Some(s)) => (a, s),
    };
    let seconds = seconds.trim().parse::<i64>().map_err(|_| {
        ApiError::invalid(
            "expires_after.seconds",
            "Invalid type for 'expires_after.seconds': expected an integer, but got a string \
             instead.",
        )
        .code("invalid_type")
    })?;
    check_expires_after(&ExpiresAfter { anchor, seconds }).map(Some)
}

/// Whether `head` (a file's first bytes) starts a PNG, JPEG, GIF or WebP image: what a vision
/// model is shown.
pub fn is_image(head: &[u8]) -> bool {
    head.starts_with(b"\x89PNG\r\n\x1a\n")
        || head.starts_with(&[0xFF, 0xD8, 0xFF])
        || head.starts_with(b"GIF87a")
        || head.starts_with(b"GIF89a")
        || (head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP")
}

/// A 400 for a `vision` File that is no image.
pub fn not_an_image(param: &str) -> ApiError {
    ApiError::invalid(
        param,
        "Invalid file format for purpose 'vision'. Supported formats are PNG, JPEG, GIF and WebP \
         images.",
    )
    .code("invalid_file_format")
}

/// OpenAI's 404 for a File that does not exist (or expired).
pub fn no_such_file(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("No such File object: {id}")).param("id")
}

/// The File `id`, unless it does not exist or has expired (an expired one is deleted here).
pub async fn find_live(state: &AppState, id: &str) -> ApiResult<Option<FileObject>> {
    let now = state.config.clock.now();
    Ok(blobs::find_live(&state.store, &state.bucket, id, now).await?)
}

/// Delete every expired File; how many there were.
pub async fn sweep_expired(state: &AppState) -> ApiResult<usize> {
    let now = state.config.clock.now();
    Ok(blobs::sweep_expired(&state.store, &state.bucket, now).await?)
}

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

/// A path on this machine where the bytes of File `id` can be read (the object itself, or a
/// cached copy of it); a 404 if they are gone.
pub async fn local_copy(state: &AppState, id: &str) -> ApiResult<PathBuf> {
    match state.bucket.local_path(&blobs::key(id)).await {
        Ok(p) => Ok(p),
        Err(BucketError::NotFound(_)) => Err(no_such_file(id)),
        Err(e) => Err(e.into()),
    }
}

/// Keep only a plain file name: no folders, no `..`, no control characters.
pub fn clean_filename(name: &str) -> Option<String> {
    crate::model::plain_file_name(name)
}

async fn upload(
    Scoped(state): Scoped,
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
    let (mut anchor, mut seconds): (Option<String>, Option<String>) = (None, None);
    let mut staged: Option<(tempfile::NamedTempFile, String, u64, Vec<u8>)> = None;
    let max = state.config.max_upload_bytes;
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error("Invalid multipart body", &e))?
    {
        let name = field.name().map(str::to_string);
        match name.as_deref() {
            Some(n @ ("purpose" | "expires_after[anchor]" | "expires_after[seconds]")) => {
                let value = field
                    .text()
                    .await
                    .map_err(|e| multipart_error(&format!("Invalid '{n}'"), &e).param(n))?;
                match n {
                    "purpose" => purpose = Some(value),
                    "expires_after[anchor]" => anchor = Some(value),
                    _ => seconds = Some(value),
                }
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
                let (tmp, size, head) = stage_field(&state, &mut field, max, "file").await?;
                staged = Some((tmp, filename, size, head));
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
    check_purpose(&purpose)?;
    let expires_after = expires_after_from_form(anchor, seconds)?;
    let (tmp, filename, size, head) =
        staged.ok_or_else(|| ApiError::invalid("file", "Missing required parameter: 'file'."))?;
    if purpose == "vision" && !is_image(&head) {
        return Err(not_an_image("file"));
    }
    state.check_storage(size).await?;
    let obj = new_file(&state, filename, purpose, size, expires_after);
    commit(&state, tmp, obj).await.map(Json)
}

/// How many first bytes of an upload are kept to tell an image.
pub const HEAD_BYTES: usize = 16;

/// A form field's bytes streamed to a temporary file (never whole in memory; in the files
/// folder for the local store): the file, its size and its first [`HEAD_BYTES`] bytes. Past
/// `max` bytes, a 413 about `param`.
pub async fn stage_field(
    state: &AppState,
    field: &mut Field<'_>,
    max: u64,
    param: &str,
) -> ApiResult<(tempfile::NamedTempFile, u64, Vec<u8>)> {
    let mut tmp = state.bucket.temp_file(blobs::FOLDER).await?;
    let mut size: u64 = 0;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| multipart_error("Could not read the upload", &e))?
    {
        size += chunk.len() as u64;
        if size > max {
            return Err(too_large(max, param));
        }
        let room = HEAD_BYTES - head.len();
        head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        tmp = tokio::task::spawn_blocking(move || tmp.write_all(&chunk).map(|_| tmp))
            .await?
            .map_err(ApiError::internal)?;
    }
    Ok((tmp, size, head))
}

/// A new File record made now by the server's clock, expiring `expires_after` seconds later.
pub fn new_file(
    state: &AppState,
    filename: String,
    purpose: String,
    bytes: u64,
    expires_after: Option<i64>,
) -> FileObject {
    let mut obj = FileObject::new(filename, purpose, bytes);
    obj.created_at = state.config.clock.now();
    obj.expires_at = expires_after.map(|s| obj.created_at + s);
    obj
}

/// A 413 for a body past `max` bytes.
pub fn too_large(max: u64, param: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("File is too large: the maximum size is {max} bytes."),
    )
    .param(param)
}

/// A multipart body that could not be read: 413 past the size limit, otherwise a 400 (axum
/// calls a body that breaks off midway a 500, but it is the client's body).
pub fn multipart_error(what: &str, e: &MultipartError) -> ApiError {
    let status = match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("{what}: {}", e.body_text()))
}

/// Store staged bytes and then record their File; either both happen or neither.
pub async fn commit(
    state: &AppState,
    tmp: tempfile::NamedTempFile,
    obj: FileObject,
) -> ApiResult<FileObject> {
    let max = state.project.limits.max_storage_bytes;
    blobs::commit(&state.store, &state.bucket, tmp, &obj, vec![], max).await?;
    Ok(obj)
}

/// Store `bytes` as a new File (e.g. a code-interpreter output).
pub async fn create_from_bytes(
    state: &AppState,
    filename: &str,
    purpose: &str,
    bytes: Vec<u8>,
) -> ApiResult<FileObject> {
    let max = state.project.limits.max_storage_bytes;
    Ok(blobs::create(&state.store, &state.bucket, filename, purpose, bytes, max).await?)
}

async fn retrieve(Scoped(state): Scoped, Path(id): Path<String>) -> ApiResult<Json<FileObject>> {
    find_live(&state, &id)
        .await?
        .map(Json)
        .ok_or_else(|| no_such_file(&id))
}

async fn remove(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted<FileDeleted>>> {
    if find_live(&state, &id).await?.is_none() {
        return Err(no_such_file(&id));
    }
    // Bytes first, then the record (see `store/blobs.rs`).
    if !blobs::remove(&state.store, &state.bucket, &id).await? {
        return Err(no_such_file(&id));
    }
    // A deleted File leaves every vector store it was in.
    if let Some(v) = state.vectors.clone() {
        let id2 = id.clone();
        blocking(&state, move |_| v.remove_file_everywhere(&id2)).await?;
    }
    Ok(deleted::<FileDeleted>(&id))
}

async fn content(Scoped(state): Scoped, Path(id): Path<String>) -> ApiResult<Response> {
    let f = find_live(&state, &id)
        .await?
        .ok_or_else(|| no_such_file(&id))?;
    let (_, stream) = match state.bucket.get_stream(&blobs::key(&id)).await {
        Ok(got) => got,
        // Deleted since its record was read.
        Err(BucketError::NotFound(_)) => return Err(no_such_file(&id)),
        Err(e) => return Err(e.into()),
    };
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

async fn list(Scoped(state): Scoped, q: ListQuery) -> ApiResult<Json<ListBody<FileObject>>> {
    let page = q.page_up_to(LIST_LIMIT, LIST_LIMIT)?;
    // Expired Files go before the page is read; should that fail (their bytes could not be
    // deleted), they are still left out of it.
    if let Err(e) = sweep_expired(&state).await {
        tracing::warn!(error = %e.message, "sweeping expired files");
    }
    let now = state.config.clock.now();
    let filter = q.purpose.clone().map(|v| Filter {
        field: "purpose",
        value: v,
    });
    let (mut data, more) = blocking(&state, move |s| {
        s.page::<FileObject>(None, filter.as_ref(), &page)
    })
    .await?;
    data.retain(|f| !f.expired(now));
    Ok(Json(ListBody::new(data, more)))
}
