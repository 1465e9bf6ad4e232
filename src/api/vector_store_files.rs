//! `/v1/vector_stores/{id}/files` and `/file_batches`: files joining a store (read into chunks
//! off the request path by `crate::vectors`), their attributes, content and removal.

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ListBody};
use super::vector_stores::{TextContent, existing, vectors};
use super::wire::{Deleted, VectorStoreFileDeleted};
use super::{AppState, Scoped, blocking, validate};
use crate::model::{
    ChunkingParam, ChunkingShown, FileBatch, FileBatchStatus, FileBatchTag, FileCounts, Kind,
    StaticChunking, StoredVectorStoreFile, VectorStoreFile, VectorStoreFileStatus,
    VectorStoreFileTag, new_id, now,
};
use crate::retrieval::filter::{Attributes, check_attributes};
use crate::store::{Filter, Page, StoreExt};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/vector_stores/{vector_store_id}/files",
            get(list_files).post(create_file),
        )
        .route(
            "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            get(retrieve_file).post(update_file).delete(remove_file),
        )
        .route(
            "/v1/vector_stores/{vector_store_id}/files/{file_id}/content",
            get(file_content),
        )
        .route(
            "/v1/vector_stores/{vector_store_id}/file_batches",
            post(create_batch),
        )
        .route(
            "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}",
            get(retrieve_batch),
        )
        .route(
            "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel",
            post(cancel_batch),
        )
        .route(
            "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files",
            get(list_batch_files),
        )
}

/// `ChunkingParam` checked against OpenAI's bounds.
pub trait Resolve {
    fn resolve(p: &Option<ChunkingParam>, param: &str) -> ApiResult<StaticChunking>;
}

impl Resolve for ChunkingParam {
    /// The sizes asked for, checked against OpenAI's bounds.
    fn resolve(p: &Option<ChunkingParam>, param: &str) -> ApiResult<StaticChunking> {
        match p {
            None | Some(ChunkingParam::Auto {}) => Ok(StaticChunking::AUTO),
            Some(ChunkingParam::Static { r#static: s }) => {
                if !(100..=4096).contains(&s.max_chunk_size_tokens) {
                    let p = format!("{param}.static.max_chunk_size_tokens");
                    return Err(ApiError::invalid(
                        &p,
                        format!(
                            "Invalid '{p}': integer must be between 100 and 4096, got {}.",
                            s.max_chunk_size_tokens
                        ),
                    ));
                }
                if s.chunk_overlap_tokens > s.max_chunk_size_tokens / 2 {
                    let p = format!("{param}.static.chunk_overlap_tokens");
                    return Err(ApiError::invalid(
                        &p,
                        format!(
                            "Invalid '{p}': chunk_overlap_tokens must not exceed half of \
                             max_chunk_size_tokens ({}).",
                            s.max_chunk_size_tokens / 2
                        ),
                    ));
                }
                Ok(*s)
            }
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateVectorStoreFileRequest")]
pub struct CreateFile {
    file_id: String,
    attributes: Option<Attributes>,
    chunking_strategy: Option<ChunkingParam>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpdateVectorStoreFileAttributesRequest")]
pub struct UpdateFile {
    attributes: Attributes,
}

/// One file of a batch, with its own attributes and chunking.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    file_id: String,
    attributes: Option<Attributes>,
    chunking_strategy: Option<ChunkingParam>,
}

/// The most files one batch may add.
pub const MAX_BATCH_FILES: usize = 2000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateVectorStoreFileBatchRequest")]
pub struct CreateBatch {
    /// Files to add (or `files`, not both); 1 to 2000.
    #[schemars(length(min = 1, max = 2000))]
    file_ids: Option<Vec<String>>,
    /// Files to add with their own attributes and chunking (or `file_ids`); 1 to 2000.
    #[schemars(length(min = 1, max = 2000))]
    files: Option<Vec<BatchFile>>,
    attributes: Option<Attributes>,
    chunking_strategy: Option<ChunkingParam>,
}

/// `?filter=` of file lists (a status), with the list's `limit`, `order`, `after`, `before`.
#[derive(Debug, Deserialize)]
pub struct FileListQuery {
    filter: Option<String>,
    #[serde(flatten)]
    page: super::extract::ListQuery,
}

impl FileListQuery {
    fn parse(raw: Option<String>) -> ApiResult<FileListQuery> {
        serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("Invalid query parameters: {e}")))
    }
}

/// `vector_store.file_content.page`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContentPage {
    #[schemars(schema_with = "content_page_tag")]
    object: &'static str,
    data: Vec<TextContent>,
    has_more: bool,
    next_page: Option<String>,
}

fn content_page_tag(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"const": "vector_store.file_content.page"})
}

fn attributes(a: Option<Attributes>, param: &str) -> ApiResult<Attributes> {
    let a = a.unwrap_or_default();
    check_attributes(&a).map_err(|m| ApiError::invalid(param, m))?;
    Ok(a)
}

/// Add files to a store (each must exist; one already there is left as it is), queued to be
/// read. Returns their records.
pub async fn add_files(
    state: &AppState,
    vector_store_id: &str,
    files: Vec<(String, StaticChunking, Attributes)>,
    batch_id: Option<String>,
) -> ApiResult<Vec<VectorStoreFile>> {
    let vs = vector_store_id.to_string();
    let out = blocking(state, move |s| {
        let mut out = vec![];
        let mut inserts = vec![];
        for (file_id, chunking, attributes) in files {
            let key = StoredVectorStoreFile::key_of(&vs, &file_id);
            if let Some(existing) = s.find::<StoredVectorStoreFile>(&key)? {
                out.push(existing.file);
                continue;
            }
            let f = StoredVectorStoreFile {
                key,
                file: VectorStoreFile {
                    id: file_id,
                    object: VectorStoreFileTag,
                    created_at: now(),
                    usage_bytes: 0,
                    vector_store_id: vs.clone(),
                    status: VectorStoreFileStatus::InProgress,
                    last_error: None,
                    chunking_strategy: ChunkingShown::Static { r#static: chunking },
                    attributes,
                },
                batch_id: batch_id.clone(),
                chunking,
            };
            out.push(f.file.clone());
            inserts.push(crate::store::Record::of(&f)?);
        }
        s.insert_all(&inserts)?;
        Ok(out)
    })
    .await?;
    vectors(state)?.changed(vector_store_id);
    Ok(out)
}

async fn stored_file(
    state: &AppState,
    vs: &str,
    file_id: &str,
) -> ApiResult<StoredVectorStoreFile> {
    let key = StoredVectorStoreFile::key_of(vs, file_id);
    blocking(state, move |s| s.find::<StoredVectorStoreFile>(&key))
        .await?
        .ok_or_else(|| ApiError::not_found("vector store file", file_id))
}

async fn create_file(
    Scoped(state): Scoped,
    Path(vs): Path<String>,
    ApiJson(req): ApiJson<CreateFile>,
) -> ApiResult<Json<VectorStoreFile>> {
    existing(&state, &vs).await?;
    let attrs = attributes(req.attributes, "attributes")?;
    let chunking = ChunkingParam::resolve(&req.chunking_strategy, "chunking_strategy")?;
    validate::files_exist(&state, "file_id", std::slice::from_ref(&req.file_id)).await?;
    let mut added = add_files(&state, &vs, vec![(req.file_id, chunking, attrs)], None).await?;
    Ok(Json(added.remove(0)))
}

/// A page of a store's files (optionally only those of a batch, or in one status).
async fn page_files(
    state: &AppState,
    vs: &str,
    q: FileListQuery,
    batch: Option<String>,
) -> ApiResult<ListBody<VectorStoreFile>> {
    let mut page = q.page.page()?;
    // Cursors are File ids; records are keyed by store and file.
    page.after = page.after.map(|id| StoredVectorStoreFile::key_of(vs, &id));
    page.before = page.before.map(|id| StoredVectorStoreFile::key_of(vs, &id));
    let status = match q.filter.as_deref() {
        None => None,
        Some(s @ ("in_progress" | "completed" | "failed" | "cancelled")) => Some(s.to_string()),
        Some(other) => {
            return Err(ApiError::invalid(
                "filter",
                format!(
                    "Invalid value: '{other}'. Supported values are: 'in_progress', \
                     'completed', 'failed', and 'cancelled'."
                ),
            )
            .code("invalid_value"));
        }
    };
    let (vs2, limit) = (vs.to_string(), page.limit);
    let (files, more) = blocking(state, move |s| {
        // Filter by status in the store and by batch here: at most one JSON filter per list.
        let filter = status.map(|v| Filter {
            field: "file.status",
            value: v,
        });
        if batch.is_none() {
            return s.page::<StoredVectorStoreFile>(Some(&vs2), filter.as_ref(), &page);
        }
        let all = Page {
            limit: 10_000,
            order: page.order,
            after: page.after.clone(),
            before: page.before.clone(),
        };
        let (files, _) = s.page::<StoredVectorStoreFile>(Some(&vs2), filter.as_ref(), &all)?;
        let mut of_batch: Vec<_> = files.into_iter().filter(|f| f.batch_id == batch).collect();
        let more = of_batch.len() > limit;
        of_batch.truncate(limit);
        Ok((of_batch, more))
    })
    .await?;
    let data: Vec<VectorStoreFile> = files.into_iter().map(|f| f.file).collect();
    Ok(ListBody {
        object: super::wire::ListTag,
        first_id: data.first().map(|f| f.id.clone()),
        last_id: data.last().map(|f| f.id.clone()),
        data,
        has_more: more,
    })
}

async fn list_files(
    Scoped(state): Scoped,
    Path(vs): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<ListBody<VectorStoreFile>>> {
    let q = FileListQuery::parse(q)?;
    existing(&state, &vs).await?;
    Ok(Json(page_files(&state, &vs, q, None).await?))
}

/// An answer the SDKs' `poll` helpers read: `openai-poll-after-ms` says when to ask again
/// (soon while the files are being read).
fn polled(body: impl Serialize, in_progress: bool) -> Response {
    let ms: u32 = if in_progress { 250 } else { 1000 };
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert("openai-poll-after-ms", HeaderValue::from(ms));
    r
}

async fn retrieve_file(
    Scoped(state): Scoped,
    Path((vs, file_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    existing(&state, &vs).await?;
    let f = stored_file(&state, &vs, &file_id).await?.file;
    let busy = f.status == VectorStoreFileStatus::InProgress;
    Ok(polled(f, busy))
}

async fn update_file(
    Scoped(state): Scoped,
    Path((vs, file_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateFile>,
) -> ApiResult<Json<VectorStoreFile>> {
    existing(&state, &vs).await?;
    let attrs = attributes(Some(req.attributes), "attributes")?;
    let mut f = stored_file(&state, &vs, &file_id).await?;
    f.file.attributes = attrs;
    let f2 = f.clone();
    blocking(&state, move |s| s.save(&f2)).await?;
    vectors(&state)?.changed(&vs);
    Ok(Json(f.file))
}

async fn remove_file(
    Scoped(state): Scoped,
    Path((vs, file_id)): Path<(String, String)>,
) -> ApiResult<Json<Deleted<VectorStoreFileDeleted>>> {
    existing(&state, &vs).await?;
    let v = vectors(&state)?.clone();
    let (vs2, f2) = (vs.clone(), file_id.clone());
    let existed = blocking(&state, move |_| v.remove_file(&vs2, &f2)).await?;
    if !existed {
        return Err(ApiError::not_found("vector store file", &file_id));
    }
    Ok(Json(Deleted::new(file_id)))
}

async fn file_content(
    Scoped(state): Scoped,
    Path((vs, file_id)): Path<(String, String)>,
) -> ApiResult<Json<FileContentPage>> {
    existing(&state, &vs).await?;
    stored_file(&state, &vs, &file_id).await?;
    let vs2 = vs.clone();
    let chunks = blocking(&state, move |s| s.chunks(&vs2)).await?;
    let data = chunks
        .into_iter()
        .filter(|c| c.file_id == file_id)
        .map(|c| TextContent::new(c.text))
        .collect();
    Ok(Json(FileContentPage {
        object: "vector_store.file_content.page",
        data,
        has_more: false,
        next_page: None,
    }))
}

async fn create_batch(
    Scoped(state): Scoped,
    Path(vs): Path<String>,
    ApiJson(req): ApiJson<CreateBatch>,
) -> ApiResult<Json<FileBatch>> {
    existing(&state, &vs).await?;
    let common_attrs = attributes(req.attributes, "attributes")?;
    let common = ChunkingParam::resolve(&req.chunking_strategy, "chunking_strategy")?;
    let files: Vec<(String, StaticChunking, Attributes)> = match (req.file_ids, req.files) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "files",
                "Give either 'file_ids' or 'files', not both.",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "file_ids",
                "Missing required parameter: 'file_ids' (or 'files').",
            ));
        }
        (Some(ids), None) => ids
            .into_iter()
            .map(|id| (id, common, common_attrs.clone()))
            .collect(),
        (None, Some(files)) => {
            let mut out = vec![];
            for (i, f) in files.into_iter().enumerate() {
                let c = match &f.chunking_strategy {
                    None => common,
                    some => ChunkingParam::resolve(some, &format!("files[{i}].chunking_strategy"))?,
                };
                let a = match f.attributes {
                    None => common_attrs.clone(),
                    some => attributes(some, &format!("files[{i}].attributes"))?,
                };
                out.push((f.file_id, c, a));
            }
            out
        }
    };
    if files.is_empty() || files.len() > MAX_BATCH_FILES {
        return Err(ApiError::invalid(
            "file_ids",
            format!(
                "Invalid 'file_ids': expected 1 to {MAX_BATCH_FILES} files, got {}.",
                files.len()
            ),
        ));
    }
    let ids: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    validate::files_exist(&state, "file_ids", &ids).await?;
    let batch = FileBatch {
        id: new_id("vsfb_"),
        object: FileBatchTag,
        created_at: now(),
        vector_store_id: vs.clone(),
        status: FileBatchStatus::InProgress,
        file_counts: FileCounts::default(),
    };
    let b2 = batch.clone();
    blocking(&state, move |s| s.insert(&b2)).await?;
    add_files(&state, &vs, files, Some(batch.id.clone())).await?;
    Ok(Json(batch_now(&state, &vs, &batch.id).await?))
}

/// A batch with its counts as they are now; `completed` once none of its files is waiting.
async fn batch_now(state: &AppState, vs: &str, batch_id: &str) -> ApiResult<FileBatch> {
    let v = vectors(state)?.clone();
    let (vs2, id) = (vs.to_string(), batch_id.to_string());
    blocking(state, move |s| {
        let mut b = s.fetch::<FileBatch>(&id)?;
        if b.vector_store_id != vs2 {
            return Err(crate::store::StoreError::NotFound {
                kind: Kind::FileBatch.noun(),
                id,
            });
        }
        let mut counts = FileCounts::default();
        for f in v.files_of(&vs2)? {
            if f.batch_id.as_deref() == Some(b.id.as_str()) {
                counts.add(f.file.status);
            }
        }
        b.file_counts = counts;
        if b.status == FileBatchStatus::InProgress && counts.in_progress == 0 {
            b.status = FileBatchStatus::Completed;
        }
        Ok(b)
    })
    .await
}

async fn retrieve_batch(
    Scoped(state): Scoped,
    Path((vs, batch_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    existing(&state, &vs).await?;
    let b = batch_now(&state, &vs, &batch_id).await?;
    let busy = b.status == FileBatchStatus::InProgress;
    Ok(polled(b, busy))
}

async fn cancel_batch(
    Scoped(state): Scoped,
    Path((vs, batch_id)): Path<(String, String)>,
) -> ApiResult<Json<FileBatch>> {
    existing(&state, &vs).await?;
    let b = batch_now(&state, &vs, &batch_id).await?;
    if b.status != FileBatchStatus::InProgress {
        return Err(ApiError::bad_request(format!(
            "Cannot cancel batch {batch_id}: it is already {}.",
            serde_json::to_value(b.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )));
    }
    let v = vectors(&state)?.clone();
    let (vs2, id) = (vs.clone(), batch_id.clone());
    blocking(&state, move |s| {
        let mut records = vec![];
        for mut f in v.files_of(&vs2)? {
            if f.batch_id.as_deref() == Some(id.as_str())
                && f.file.status == VectorStoreFileStatus::InProgress
            {
                f.file.status = VectorStoreFileStatus::Cancelled;
                records.push(crate::store::Record::of(&f)?);
            }
        }
        let mut b = s.fetch::<FileBatch>(&id)?;
        b.status = FileBatchStatus::Cancelled;
        records.push(crate::store::Record::of(&b)?);
        s.update_all(&records)
    })
    .await?;
    vectors(&state)?.changed(&vs);
    Ok(Json(batch_now(&state, &vs, &batch_id).await?))
}

async fn list_batch_files(
    Scoped(state): Scoped,
    Path((vs, batch_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<ListBody<VectorStoreFile>>> {
    let q = FileListQuery::parse(q)?;
    existing(&state, &vs).await?;
    batch_now(&state, &vs, &batch_id).await?;
    Ok(Json(page_files(&state, &vs, q, Some(batch_id)).await?))
}
