//! `/v1/uploads`: a File sent in Parts (OpenAI's Uploads API, which the SDKs'
//! `uploads.upload_file_chunked` drives).
//!
//! An Upload is created `pending` with the number of bytes its Parts must add up to (at most
//! `max_upload_bytes`). Each Part streams to disk (never whole in memory) as
//! `files/uploads/<upload id>/<part id>`, at most 64 MiB, and all of an Upload's Parts together
//! at most its `bytes`. Completing it joins the Parts in the order given into a new File,
//! checking the size and an optional `md5`, stores its bytes in the bucket, and then records the
//! File and the Upload's new status in one transaction. Parts stay on the node that received
//! them. A pending Upload expires an hour after its creation. Its Parts are deleted
//! when it completes, is cancelled or expires. Changes to one Upload (a Part landing, completing,
//! cancelling, expiring) happen one at a time, under that Upload's lock.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, LazyLock, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::files::{
    self, ExpiresAfter, check_expires_after, check_purpose, clean_filename, multipart_error,
};
use super::{AppState, blocking, insert_returning};
use crate::model::{
    Kind, StoredUpload, Upload, UploadPart, UploadPartTag, UploadStatus, UploadTag, new_id,
};
use crate::store::{Filter, Record, StoreExt, blobs};

/// The most one Part may hold (OpenAI's: 64 MB, the SDK's default part size).
pub const MAX_PART_BYTES: u64 = 64 << 20;
/// The most Parts one Upload may have.
pub const MAX_PARTS: usize = 10_000;
/// A pending Upload expires this long after its creation (OpenAI's hour).
pub const UPLOAD_TTL_SECS: i64 = 3600;
/// The longest `filename` and `mime_type` accepted, in characters.
const MAX_FILENAME_CHARS: usize = 1024;
const MAX_MIME_TYPE_CHARS: usize = 255;

pub fn router(max_upload: u64) -> Router<AppState> {
    let part_body = usize::try_from(part_cap(max_upload))
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route("/v1/uploads", post(create))
        .route(
            "/v1/uploads/{upload_id}/parts",
            post(add_part).layer(DefaultBodyLimit::max(part_body)),
        )
        .route("/v1/uploads/{upload_id}/complete", post(complete))
        .route("/v1/uploads/{upload_id}/cancel", post(cancel))
}

/// The most one Part may hold on a server that takes Files of at most `max_upload` bytes.
fn part_cap(max_upload: u64) -> u64 {
    MAX_PART_BYTES.min(max_upload)
}

/// `POST /v1/uploads`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUploadRequest {
    /// The name of the File to make (folders and control characters are dropped; 1 to 255
    /// bytes must remain).
    #[schemars(length(min = 1, max = 1024))]
    pub filename: String,
    #[schemars(with = "files::Purpose")]
    pub purpose: String,
    /// The number of bytes the Parts will add up to: at most `max_upload_bytes`.
    #[schemars(range(min = 0))]
    pub bytes: i64,
    /// The file's MIME type (not checked against its bytes).
    #[schemars(length(min = 1, max = 255))]
    pub mime_type: String,
    /// When the File made from this Upload expires.
    #[serde(default)]
    pub expires_after: Option<ExpiresAfter>,
}

/// `POST /v1/uploads/{upload_id}/complete`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUploadRequest {
    /// The Parts, in the order their bytes are to be joined; each at most once.
    #[schemars(length(max = 10000))]
    pub part_ids: Vec<String>,
    /// The MD5 checksum (hex) the joined bytes must have.
    #[serde(default)]
    pub md5: Option<String>,
}

/// The `multipart/form-data` body of `POST /v1/uploads/{upload_id}/parts` (for the OpenAPI
/// document: the handler streams `data` to disk itself).
#[derive(schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AddUploadPartRequest {
    /// The Part's bytes: at most 64 MiB (and `max_upload_bytes`).
    pub data: super::wire::Binary,
}

async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateUploadRequest>,
) -> ApiResult<Json<Upload>> {
    let chars = req.filename.chars().count();
    if chars > MAX_FILENAME_CHARS {
        return Err(ApiError::invalid(
            "filename",
            format!(
                "Invalid 'filename': string too long. Expected a string with maximum length \
                 {MAX_FILENAME_CHARS}, but got a string with length {chars} instead."
            ),
        )
        .code("string_above_max_length"));
    }
    let filename = clean_filename(&req.filename).ok_or_else(|| {
        ApiError::invalid(
            "filename",
            "Invalid 'filename': once folders and control characters are dropped, it must leave \
             a name of 1 to 255 bytes other than '.' and '..'.",
        )
    })?;
    check_purpose(&req.purpose)?;
    let max = state.config.max_upload_bytes;
    let bytes = u64::try_from(req.bytes).map_err(|_| {
        ApiError::invalid(
            "bytes",
            format!(
                "Invalid 'bytes': integer below minimum value. Expected a value >= 0, but got {} \
                 instead.",
                req.bytes
            ),
        )
        .code("integer_below_min_value")
    })?;
    if bytes > max {
        return Err(ApiError::invalid(
            "bytes",
            format!(
                "Invalid 'bytes': integer above maximum value. Expected a value <= {max} (the \
                 largest File this server takes), but got {bytes} instead."
            ),
        )
        .code("integer_above_max_value"));
    }
    let mime = req.mime_type.chars().count();
    if mime == 0 {
        return Err(ApiError::invalid(
            "mime_type",
            "Invalid 'mime_type': string too short. Expected a string with minimum length 1, but \
             got an empty string instead.",
        )
        .code("string_below_min_length"));
    }
    if mime > MAX_MIME_TYPE_CHARS {
        return Err(ApiError::invalid(
            "mime_type",
            format!(
                "Invalid 'mime_type': string too long. Expected a string with maximum length \
                 {MAX_MIME_TYPE_CHARS}, but got a string with length {mime} instead."
            ),
        )
        .code("string_above_max_length"));
    }
    let file_expires_after = req
        .expires_after
        .as_ref()
        .map(check_expires_after)
        .transpose()?;
    let now = state.config.clock.now();
    let upload = Upload {
        id: new_id("upload_"),
        object: UploadTag,
        bytes,
        created_at: now,
        expires_at: now + UPLOAD_TTL_SECS,
        filename,
        purpose: req.purpose,
        status: UploadStatus::Pending,
        file: None,
    };
    let stored = StoredUpload {
        upload,
        file_expires_after,
    };
    Ok(Json(insert_returning(&state, stored).await?.upload))
}

async fn add_part(
    State(state): State<AppState>,
    Path(upload_id): Path<String>,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<UploadPart>> {
    // Refuse a Part for an Upload that cannot take one before reading it (what is left of the
    // body is read away by `drain.rs`).
    let stored = {
        let _held = lock(&upload_id).await;
        pending(&state, &upload_id, "add Parts to").await?
    };
    let mut mp = mp.map_err(|e| {
        ApiError::new(
            e.status(),
            format!(
                "Invalid request: expected a multipart/form-data body with a 'data' field ({}).",
                e.body_text()
            ),
        )
    })?;
    let cap = part_cap(state.config.max_upload_bytes);
    let mut staged = None;
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error("Invalid multipart body", &e))?
    {
        match field.name() {
            Some("data") if staged.is_some() => {
                return Err(ApiError::invalid(
                    "data",
                    "Invalid 'data': expected one Part's bytes, but got more than one 'data' \
                     field.",
                ));
            }
            Some("data") => {
                staged = Some(files::stage_field(&state, &mut field, cap, "data").await?);
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
    let (tmp, size, _) =
        staged.ok_or_else(|| ApiError::invalid("data", "Missing required parameter: 'data'."))?;
    let _held = lock(&upload_id).await;
    let stored = pending(&state, &stored.upload.id, "add Parts to").await?;
    let dir = parts_dir(&state, &stored.upload.id);
    let part_id = new_id("part_");
    let (declared, id) = (stored.upload.bytes, stored.upload.id.clone());
    let path = dir.join(&part_id);
    tokio::task::spawn_blocking(move || -> ApiResult<()> {
        let (held, count) = parts_on_disk(&dir).map_err(ApiError::internal)?;
        if count >= MAX_PARTS {
            return Err(ApiError::invalid(
                "data",
                format!("Upload {id} already has {MAX_PARTS} Parts, the most one may have."),
            ));
        }
        if held + size > declared {
            return Err(ApiError::invalid(
                "data",
                format!(
                    "Upload {id} was created for {declared} bytes; its Parts would hold {} with \
                     this one.",
                    held + size
                ),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
        tmp.as_file().sync_all().map_err(ApiError::internal)?;
        tmp.persist(&path)
            .map_err(|e| ApiError::internal(e.error))?;
        Ok(())
    })
    .await??;
    Ok(Json(UploadPart {
        id: part_id,
        object: UploadPartTag,
        created_at: state.config.clock.now(),
        upload_id: stored.upload.id,
    }))
}

async fn complete(
    State(state): State<AppState>,
    Path(upload_id): Path<String>,
    ApiJson(req): ApiJson<CompleteUploadRequest>,
) -> ApiResult<Json<Upload>> {
    let _held = lock(&upload_id).await;
    let mut stored = pending(&state, &upload_id, "complete").await?;
    if req.part_ids.len() > MAX_PARTS {
        return Err(ApiError::invalid(
            "part_ids",
            format!(
                "Invalid 'part_ids': array too long. Expected an array with maximum length \
                 {MAX_PARTS}, but got an array with length {} instead.",
                req.part_ids.len()
            ),
        )
        .code("array_above_max_length"));
    }
    let id = stored.upload.id.clone();
    let dir = parts_dir(&state, &id);
    let mut seen = std::collections::HashSet::new();
    let mut paths = Vec::with_capacity(req.part_ids.len());
    for (i, part) in req.part_ids.iter().enumerate() {
        let param = format!("part_ids[{i}]");
        // Only ids Oasis could have made name a file: nothing else reaches the file system.
        let path = dir.join(part);
        if !is_part_id(part) || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(ApiError::invalid(
                &param,
                format!("Invalid '{param}': Upload {id} has no Part '{part}'."),
            ));
        }
        if !seen.insert(part.as_str()) {
            return Err(ApiError::invalid(
                &param,
                format!("Invalid '{param}': Part '{part}' is given more than once."),
            ));
        }
        paths.push(path);
    }
    let out = state.bucket.temp_file(blobs::FOLDER).await?;
    let (tmp, size, md5, head) = tokio::task::spawn_blocking(move || join(out, &paths))
        .await?
        .map_err(ApiError::internal)?;
    let declared = stored.upload.bytes;
    if size != declared {
        return Err(ApiError::invalid(
            "part_ids",
            format!(
                "The Parts given hold {size} bytes, but Upload {id} was created for {declared} \
                 bytes: they must match."
            ),
        ));
    }
    if let Some(expected) = &req.md5
        && !expected.trim().eq_ignore_ascii_case(&md5)
    {
        return Err(ApiError::invalid(
            "md5",
            format!("The md5 checksum of the uploaded bytes is {md5}, not the one given."),
        ));
    }
    if stored.upload.purpose == "vision" && !files::is_image(&head) {
        return Err(files::not_an_image("part_ids"));
    }
    let file = files::new_file(
        &state,
        stored.upload.filename.clone(),
        stored.upload.purpose.clone(),
        size,
        stored.file_expires_after,
    );
    stored.upload.status = UploadStatus::Completed;
    stored.upload.file = Some(file.clone());
    let record = Record::of(&stored)?;
    blobs::commit(&state.store, &state.bucket, tmp, &file, vec![record]).await?;
    remove_parts(&state, &id).await;
    Ok(Json(stored.upload))
}

async fn cancel(
    State(state): State<AppState>,
    Path(upload_id): Path<String>,
) -> ApiResult<Json<Upload>> {
    let _held = lock(&upload_id).await;
    let stored = pending(&state, &upload_id, "cancel").await?;
    Ok(Json(end(&state, stored, UploadStatus::Cancelled).await?))
}

/// End every pending Upload whose hour is over (its Parts deleted), and delete Parts left on
/// disk by an Upload that is no longer pending (a crash between its end and their deletion).
pub async fn sweep_expired(state: &AppState) -> ApiResult<usize> {
    let mut n = 0;
    loop {
        let now = state.config.clock.now();
        let batch = blocking(state, move |s| {
            let pending = Filter {
                field: "status",
                value: UploadStatus::Pending.as_str().into(),
            };
            s.expired(Kind::Upload, Some(&pending), now, 256)
        })
        .await?;
        if batch.is_empty() {
            break;
        }
        for r in batch {
            let _held = lock(&r.id).await;
            let id = r.id.clone();
            let Some(stored) = blocking(state, move |s| s.find::<StoredUpload>(&id)).await? else {
                continue;
            };
            // It may have ended meanwhile.
            if stored.upload.status == UploadStatus::Pending && stored.upload.expires_at <= now {
                end(state, stored, UploadStatus::Expired).await?;
                n += 1;
            }
        }
    }
    let root = state.uploads_dir.clone();
    let mut dirs = match tokio::fs::read_dir(&root).await {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(n),
        Err(e) => return Err(ApiError::internal(e)),
    };
    while let Some(entry) = dirs.next_entry().await.map_err(ApiError::internal)? {
        let id = entry.file_name().to_string_lossy().into_owned();
        let _held = lock(&id).await;
        let id2 = id.clone();
        let stored = blocking(state, move |s| s.find::<StoredUpload>(&id2)).await?;
        if stored.is_none_or(|u| u.upload.status != UploadStatus::Pending) {
            remove_parts(state, &id).await;
        }
    }
    Ok(n)
}

/// The Upload `id` if it is pending (call with its lock held). One whose hour is over is ended
/// as expired here; then, as for one completed or cancelled, a 400 saying it cannot be `verb`.
async fn pending(state: &AppState, id: &str, verb: &str) -> ApiResult<StoredUpload> {
    let id2 = id.to_string();
    let stored = blocking(state, move |s| s.find::<StoredUpload>(&id2))
        .await?
        .ok_or_else(|| no_such_upload(id))?;
    let u = &stored.upload;
    let status = match u.status {
        UploadStatus::Pending if u.expires_at > state.config.clock.now() => return Ok(stored),
        UploadStatus::Pending => {
            end(state, stored.clone(), UploadStatus::Expired)
                .await?
                .status
        }
        s => s,
    };
    let why = match status {
        UploadStatus::Completed => "it is already completed".to_string(),
        UploadStatus::Cancelled => "it was cancelled".to_string(),
        _ => format!(
            "it expired at {} (an Upload expires an hour after it is created)",
            u.expires_at
        ),
    };
    Err(ApiError::bad_request(format!(
        "Cannot {verb} Upload {}: {why}.",
        u.id
    )))
}

/// Give a pending Upload its final `status` and delete its Parts.
async fn end(
    state: &AppState,
    mut stored: StoredUpload,
    status: UploadStatus,
) -> ApiResult<Upload> {
    stored.upload.status = status;
    let id = stored.upload.id.clone();
    let out = super::save_returning(state, stored).await?;
    remove_parts(state, &id).await;
    Ok(out.upload)
}

/// OpenAI's 404 for an Upload that does not exist.
fn no_such_upload(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("No such Upload object: {id}"),
    )
    .param("id")
}

/// Where an Upload's Parts are kept.
fn parts_dir(state: &AppState, upload_id: &str) -> PathBuf {
    state.uploads_dir.join(upload_id)
}

async fn remove_parts(state: &AppState, upload_id: &str) {
    let dir = parts_dir(state, upload_id);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "deleting an Upload's Parts");
    }
}

/// Whether `id` is shaped like the Part ids Oasis makes (`part_` and letters and digits).
fn is_part_id(id: &str) -> bool {
    id.strip_prefix("part_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The bytes and the number of the Parts in `dir` (none if it does not exist).
fn parts_on_disk(dir: &FsPath) -> std::io::Result<(u64, usize)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let (mut bytes, mut count) = (0, 0);
    for entry in entries {
        bytes += entry?.metadata()?.len();
        count += 1;
    }
    Ok((bytes, count))
}

/// The Parts at `paths` joined in that order into the temporary file `out`: the file, its
/// size, its MD5 (hex) and its first bytes.
fn join(
    mut out: tempfile::NamedTempFile,
    paths: &[PathBuf],
) -> std::io::Result<(tempfile::NamedTempFile, u64, String, Vec<u8>)> {
    let mut md5 = Md5::new();
    let mut head = Vec::with_capacity(files::HEAD_BYTES);
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    for path in paths {
        let mut part = std::fs::File::open(path)?;
        loop {
            let n = part.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            md5.update(chunk);
            let room = files::HEAD_BYTES - head.len();
            head.extend_from_slice(&chunk[..room.min(n)]);
            out.write_all(chunk)?;
            size += n as u64;
        }
    }
    Ok((out, size, hex::encode(md5.finalize()), head))
}

/// Changes to one Upload happen one at a time: each holds its lock (see [`lock`]).
type Locks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
static LOCKS: LazyLock<Locks> = LazyLock::new(Locks::default);

/// The lock of one Upload, held until dropped (then forgotten if no one else wants it).
struct Held {
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        if locks
            .get(&self.id)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

async fn lock(id: &str) -> Held {
    let m = LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(id.to_string())
        .or_default()
        .clone();
    Held {
        id: id.to_string(),
        guard: Some(m.lock_owned().await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_part_ids_oasis_makes_reach_the_file_system() {
        assert!(is_part_id("part_abcXYZ012"));
        for bad in [
            "part_",
            "part_../x",
            "part_a/b",
            "../part_a",
            "part_a.b",
            "upload_a",
            "",
        ] {
            assert!(!is_part_id(bad), "{bad}");
        }
    }

    #[test]
    fn parts_join_in_the_order_given_with_their_md5() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"hello ").unwrap();
        std::fs::write(&b, b"world").unwrap();
        let out = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
        let (tmp, size, md5, head) = join(out, &[b.clone(), a.clone()]).unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), b"worldhello ");
        assert_eq!(size, 11);
        assert_eq!(head, b"worldhello ");
        // md5("worldhello ")
        assert_eq!(md5, hex::encode(Md5::digest(b"worldhello ")));
        assert_eq!(parts_on_disk(dir.path()).unwrap().1, 3);
    }
}
