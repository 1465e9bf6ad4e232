//! `/v1/uploads`: a File sent in Parts (OpenAI's Uploads API, which the SDKs'
//! `uploads.upload_file_chunked` drives).
//!
//! An Upload is created `pending` with the number of bytes its Parts must add up to (at most
//! `max_upload_bytes`). Each Part streams to disk (never whole in memory), at most 64 MiB, and
//! is then stored in the bucket as `files/uploads/<upload id>/<part id>` (with the default local
//! bucket, the file `<data dir>/files/uploads/<upload id>/<part id>`, where Parts always were);
//! all of an Upload's Parts together hold at most its `bytes`. Any node of a cluster can take a
//! Part or complete an Upload: completing joins the Parts in the order given, each streamed
//! from the bucket into a temporary file, checks the size and an optional `md5`, stores the
//! File's bytes, and then records the File and the Upload's new status in one transaction. A
//! pending Upload expires an hour after its creation. Its Parts are deleted when it completes,
//! is cancelled or expires.
//!
//! Changes to one Upload (a Part landing, completing, cancelling, expiring) happen one at a
//! time: each holds the Upload (see [`Hold`]), i.e. its lock on this server and, when the store
//! is shared with other nodes, its lease `upload.<upload id>` in the store.

use std::collections::{BTreeSet, HashMap, HashSet};

use axum::Json;
use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::ApiJson;
use super::files::{
    self, ExpiresAfter, check_expires_after, check_purpose, clean_filename, multipart_error,
};
use super::{AppState, Scoped, blocking, insert_returning};
use crate::model::{
    Kind, StoredUpload, Upload, UploadPart, UploadPartTag, UploadStatus, UploadTag, new_id,
};
use crate::store::{Filter, Record, StoreExt, blobs};

mod holding;
mod joining;

use holding::{Hold, hold, try_hold};
use joining::{JoinError, join};

/// The most one Part may hold (OpenAI's: 64 MB, the SDK's default part size).
pub const MAX_PART_BYTES: u64 = 64 << 20;
/// The most Parts one Upload may have.
pub const MAX_PARTS: usize = 10_000;
/// A pending Upload expires this long after its creation (OpenAI's hour).
pub const UPLOAD_TTL_SECS: i64 = 3600;
/// The longest `filename` and `mime_type` accepted, in characters.
const MAX_FILENAME_CHARS: usize = 1024;
const MAX_MIME_TYPE_CHARS: usize = 255;
/// The folder (key prefix) of the bucket that holds Parts: `<folder>/<upload id>/<part id>`.
/// Under `files/`, so that the local default bucket keeps them where they always were.
const PARTS_FOLDER: &str = "files/uploads";

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
    Scoped(state): Scoped,
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
    state.check_storage(bytes).await?;
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
    Scoped(state): Scoped,
    Path(upload_id): Path<String>,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<UploadPart>> {
    // Refuse a Part for an Upload that cannot take one before reading it (what is left of the
    // body is read away by `drain.rs`). A pending Upload is looked at without holding it: it is
    // looked at again, held, before its Part is stored.
    let id = upload_id.clone();
    let found = blocking(&state, move |s| s.find::<StoredUpload>(&id))
        .await?
        .ok_or_else(|| no_such_upload(&upload_id))?;
    if !is_live(&state, &found) {
        // Say why, held (one whose hour is over is ended as expired there).
        let hold = hold(&state, &upload_id).await?;
        let why = pending(&state, &hold, &upload_id, "add Parts to").await;
        hold.release().await;
        why?;
    }
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
    let hold = hold(&state, &upload_id).await?;
    let out = store_part(&state, &hold, &upload_id, tmp, size).await;
    hold.release().await;
    Ok(Json(out?))
}

/// Store the staged Part `tmp` (`size` bytes) of the Upload `id`, held, if it is still pending
/// and has room for it.
async fn store_part(
    state: &AppState,
    hold: &Hold,
    id: &str,
    tmp: tempfile::NamedTempFile,
    size: u64,
) -> ApiResult<UploadPart> {
    let stored = pending(state, hold, id, "add Parts to").await?;
    let (declared, id) = (stored.upload.bytes, stored.upload.id);
    let parts = state.bucket.list(&parts_folder(&id)).await?;
    if parts.len() >= MAX_PARTS {
        return Err(ApiError::invalid(
            "data",
            format!("Upload {id} already has {MAX_PARTS} Parts, the most one may have."),
        ));
    }
    let held: u64 = parts.iter().map(|p| p.size).sum();
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
    let part_id = new_id("part_");
    state.bucket.put_temp(&part_key(&id, &part_id), tmp).await?;
    Ok(UploadPart {
        id: part_id,
        object: UploadPartTag,
        created_at: state.config.clock.now(),
        upload_id: id,
    })
}

async fn complete(
    Scoped(state): Scoped,
    Path(upload_id): Path<String>,
    ApiJson(req): ApiJson<CompleteUploadRequest>,
) -> ApiResult<Json<Upload>> {
    let hold = hold(&state, &upload_id).await?;
    let out = complete_held(&state, &hold, &upload_id, req).await;
    hold.release().await;
    Ok(Json(out?))
}

/// Complete the Upload `upload_id`, held.
async fn complete_held(
    state: &AppState,
    hold: &Hold,
    upload_id: &str,
    req: CompleteUploadRequest,
) -> ApiResult<Upload> {
    let mut stored = pending(state, hold, upload_id, "complete").await?;
    // Checked again: other Files may have been stored since the Upload was created.
    state.check_storage(stored.upload.bytes).await?;
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
    let sizes: HashMap<String, u64> = state
        .bucket
        .list(&parts_folder(&id))
        .await?
        .into_iter()
        .map(|p| (p.key, p.size))
        .collect();
    let mut seen = HashSet::new();
    let mut keys = Vec::with_capacity(req.part_ids.len());
    let mut given = 0u64;
    for (i, part) in req.part_ids.iter().enumerate() {
        // Only ids Oasis could have made name an object: nothing else reaches the bucket.
        let key = is_part_id(part).then(|| part_key(&id, part));
        let Some(size) = key.as_ref().and_then(|k| sizes.get(k)) else {
            return Err(no_part(&id, i, part));
        };
        if !seen.insert(part.as_str()) {
            let param = format!("part_ids[{i}]");
            return Err(ApiError::invalid(
                &param,
                format!("Invalid '{param}': Part '{part}' is given more than once."),
            ));
        }
        given += size;
        keys.extend(key);
    }
    let declared = stored.upload.bytes;
    let wrong_size = |size: u64| {
        ApiError::invalid(
            "part_ids",
            format!(
                "The Parts given hold {size} bytes, but Upload {id} was created for {declared} \
                 bytes: they must match."
            ),
        )
    };
    // Known from the listing: no need to join them to say so.
    if given != declared {
        return Err(wrong_size(given));
    }
    let out = state.bucket.temp_file(blobs::FOLDER).await?;
    let (tmp, size, md5, head) = join(&state.bucket, out, &keys).await.map_err(|e| match e {
        JoinError::Missing(i) => no_part(&id, i, &req.part_ids[i]),
        JoinError::Bucket(e) => e.into(),
        JoinError::Write(e) => ApiError::internal(e),
    })?;
    if size != declared {
        return Err(wrong_size(size));
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
        state,
        stored.upload.filename.clone(),
        stored.upload.purpose.clone(),
        size,
        stored.file_expires_after,
    );
    stored.upload.status = UploadStatus::Completed;
    stored.upload.file = Some(file.clone());
    let record = Record::of(&stored)?;
    let max = state.project.limits.max_storage_bytes;
    blobs::commit(&state.store, &state.bucket, tmp, &file, vec![record], max).await?;
    hold.ended();
    remove_parts(state, &id).await;
    Ok(stored.upload)
}

async fn cancel(Scoped(state): Scoped, Path(upload_id): Path<String>) -> ApiResult<Json<Upload>> {
    let hold = hold(&state, &upload_id).await?;
    let out = async {
        let stored = pending(&state, &hold, &upload_id, "cancel").await?;
        end(&state, &hold, stored, UploadStatus::Cancelled).await
    }
    .await;
    hold.release().await;
    Ok(Json(out?))
}

/// End every pending Upload whose hour is over (its Parts deleted), and delete Parts left by
/// an Upload that is no longer pending (a crash between its end and their deletion), in the
/// bucket and in `uploads_dir` (where a node kept Parts before they were in the bucket). An
/// Upload another request holds is left to a later sweep (requests end an expired Upload they
/// come across themselves).
pub async fn sweep_expired(state: &AppState) -> ApiResult<usize> {
    let mut n = 0;
    let mut busy = HashSet::new();
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
        let batch: Vec<Record> = batch
            .into_iter()
            .filter(|r| !busy.contains(&r.id))
            .collect();
        if batch.is_empty() {
            break;
        }
        for r in batch {
            let Some(hold) = try_hold(state, &r.id).await? else {
                busy.insert(r.id);
                continue;
            };
            let ended = async {
                let id = r.id.clone();
                let Some(stored) = blocking(state, move |s| s.find::<StoredUpload>(&id)).await?
                else {
                    return Ok(false);
                };
                // It may have ended meanwhile.
                if stored.upload.status != UploadStatus::Pending {
                    hold.ended();
                    return Ok(false);
                }
                if stored.upload.expires_at > now {
                    return Ok(false);
                }
                end(state, &hold, stored, UploadStatus::Expired).await?;
                Ok::<_, ApiError>(true)
            }
            .await;
            hold.release().await;
            n += usize::from(ended?);
        }
    }
    // Whose Parts are kept: in the bucket, and in the folder of Parts kept on this node before.
    let mut ids = BTreeSet::new();
    for p in state.bucket.list(PARTS_FOLDER).await? {
        if let Some(id) = p.key[PARTS_FOLDER.len()..].split('/').nth(1) {
            ids.insert(id.to_string());
        }
    }
    match tokio::fs::read_dir(&state.uploads_dir).await {
        Ok(mut dirs) => {
            while let Some(entry) = dirs.next_entry().await.map_err(ApiError::internal)? {
                ids.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::internal(e)),
    }
    for id in ids.into_iter().filter(|id| is_upload_id(id)) {
        let id2 = id.clone();
        let stored = blocking(state, move |s| s.find::<StoredUpload>(&id2)).await?;
        // An Upload that is not pending never is again, and takes no more Parts: no need to
        // hold it.
        if stored.is_none_or(|u| u.upload.status != UploadStatus::Pending) {
            remove_parts(state, &id).await;
        }
    }
    Ok(n)
}

/// Whether `stored` is pending and its hour is not over.
fn is_live(state: &AppState, stored: &StoredUpload) -> bool {
    stored.upload.status == UploadStatus::Pending
        && stored.upload.expires_at > state.config.clock.now()
}

/// The Upload `id` if it is pending (call with it held). One whose hour is over is ended as
/// expired here; then, as for one completed or cancelled, a 400 saying it cannot be `verb`.
async fn pending(state: &AppState, hold: &Hold, id: &str, verb: &str) -> ApiResult<StoredUpload> {
    let id2 = id.to_string();
    let Some(stored) = blocking(state, move |s| s.find::<StoredUpload>(&id2)).await? else {
        // Nor will it ever be: no lease is kept for it.
        hold.ended();
        return Err(no_such_upload(id));
    };
    if is_live(state, &stored) {
        return Ok(stored);
    }
    let u = &stored.upload;
    let status = match u.status {
        UploadStatus::Pending => {
            end(state, hold, stored.clone(), UploadStatus::Expired)
                .await?
                .status
        }
        s => s,
    };
    hold.ended();
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

/// Give a pending Upload (held) its final `status` and delete its Parts.
async fn end(
    state: &AppState,
    hold: &Hold,
    mut stored: StoredUpload,
    status: UploadStatus,
) -> ApiResult<Upload> {
    stored.upload.status = status;
    let id = stored.upload.id.clone();
    let out = super::save_returning(state, stored).await?;
    hold.ended();
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

/// The 400 for `part_ids[i]`, `part`, which is no Part of the Upload `id`.
fn no_part(id: &str, i: usize, part: &str) -> ApiError {
    let param = format!("part_ids[{i}]");
    ApiError::invalid(
        &param,
        format!("Invalid '{param}': Upload {id} has no Part '{part}'."),
    )
}

/// The folder of the bucket that holds the Parts of Upload `upload_id`.
fn parts_folder(upload_id: &str) -> String {
    format!("{PARTS_FOLDER}/{upload_id}")
}

/// The key of a Part.
fn part_key(upload_id: &str, part_id: &str) -> String {
    format!("{PARTS_FOLDER}/{upload_id}/{part_id}")
}

/// Delete the Parts of Upload `upload_id` (failures are logged: the sweep tries again).
async fn remove_parts(state: &AppState, upload_id: &str) {
    let folder = parts_folder(upload_id);
    if let Err(e) = state.bucket.delete_folder(&folder).await {
        tracing::warn!(error = %e, folder = %folder, "deleting an Upload's Parts");
    }
    // Where this node kept them before they were in the bucket (with the default bucket, the
    // folder just deleted).
    let dir = state.uploads_dir.join(upload_id);
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

/// Whether `id` is shaped like the Upload ids Oasis makes (`upload_` and letters and digits).
fn is_upload_id(id: &str) -> bool {
    id.strip_prefix("upload_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::Bucket;
    use md5::{Digest, Md5};

    #[test]
    fn only_part_ids_oasis_makes_reach_the_bucket() {
        assert!(is_part_id("part_abcXYZ012"));
        assert!(is_upload_id("upload_abcXYZ012"));
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
        for bad in ["upload_", "upload_a/b", ".tmpX", "part_a"] {
            assert!(!is_upload_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn parts_join_in_the_order_given_with_their_md5() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path()).unwrap();
        let (a, b) = (
            part_key("upload_x", "part_a"),
            part_key("upload_x", "part_b"),
        );
        bucket.put_bytes(&a, b"hello ".to_vec()).await.unwrap();
        // More than one chunk of the stream and of the writer's buffer.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        bucket.put_bytes(&b, big.clone()).await.unwrap();
        let out = bucket.temp_file(blobs::FOLDER).await.unwrap();
        let (tmp, size, md5, head) = join(&bucket, out, &[b.clone(), a.clone()]).await.unwrap();
        let mut want = big.clone();
        want.extend_from_slice(b"hello ");
        assert_eq!(std::fs::read(tmp.path()).unwrap(), want);
        assert_eq!(size, want.len() as u64);
        assert_eq!(head, want[..files::HEAD_BYTES]);
        assert_eq!(md5, hex::encode(Md5::digest(&want)));
        // Parts are where they always were with the local bucket.
        assert!(dir.path().join("files/uploads/upload_x/part_a").is_file());
        let out = bucket.temp_file(blobs::FOLDER).await.unwrap();
        let missing = part_key("upload_x", "part_c");
        assert!(matches!(
            join(&bucket, out, &[a, missing]).await,
            Err(JoinError::Missing(1))
        ));
    }
}
