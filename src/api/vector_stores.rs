//! `/v1/vector_stores`: stores and their search. Files and batches are in
//! `vector_store_files.rs`; reading files into chunks and searching are `crate::vectors`.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ListBody, ListQuery};
use super::vector_store_files::{Resolve, add_files};
use super::wire::{Deleted, MetadataParam, VectorStoreDeleted};
use super::{AppState, Scoped, blocking, validate};
use crate::model::{
    ChunkingParam, FileCounts, Kind, Metadata, StaticChunking, StoreExpiry, VectorStore,
    VectorStoreStatus, VectorStoreTag, new_id, now,
};
use crate::retrieval::filter::{Attributes, Filter};
use crate::store::StoreExt;
use crate::vectors::{SearchRequest, Vectors};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/vector_stores", get(list).post(create))
        .route(
            "/v1/vector_stores/{vector_store_id}",
            get(retrieve).post(modify).delete(remove),
        )
        .route("/v1/vector_stores/{vector_store_id}/search", post(search))
        .merge(super::vector_store_files::router())
}

/// The most files a store may be created with.
pub const MAX_CREATE_FILES: usize = 500;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateVectorStoreRequest")]
pub struct CreateVectorStore {
    /// Files (which must exist) to add; at most 500.
    #[schemars(length(max = 500))]
    file_ids: Option<Vec<String>>,
    #[schemars(length(max = 256))]
    name: Option<String>,
    #[schemars(length(max = 512))]
    description: Option<String>,
    expires_after: Option<StoreExpiry>,
    /// How `file_ids` are chunked (`auto` when absent).
    chunking_strategy: Option<ChunkingParam>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpdateVectorStoreRequest")]
pub struct ModifyVectorStore {
    #[schemars(length(max = 256))]
    name: Option<String>,
    /// `null` removes the store's expiry.
    #[serde(default, deserialize_with = "some_or_null")]
    #[schemars(with = "Option<StoreExpiry>")]
    expires_after: Option<Option<StoreExpiry>>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
}

/// A field that may be absent (outer `None`) or `null` (`Some(None)`).
fn some_or_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A search's query: one string or several.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Query {
    One(#[schemars(length(min = 1))] String),
    Many(#[schemars(length(min = 1, max = 10))] Vec<String>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "VectorStoreSearchRequest")]
pub struct SearchBody {
    query: Query,
    filters: Option<Filter>,
    /// 1 to 50; 10 when absent.
    #[schemars(range(min = 1, max = 50))]
    max_num_results: Option<u32>,
    ranking_options: Option<SearchRanking>,
    /// Accepted; Oasis searches with the query as given.
    rewrite_query: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRanking {
    ranker: Option<SearchRanker>,
    #[schemars(range(min = 0, max = 1))]
    score_threshold: Option<f32>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
pub enum SearchRanker {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "default-2024-11-15")]
    Default20241115,
}

/// `vector_store.search_results.page`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchPage {
    #[schemars(schema_with = "search_page_tag")]
    object: &'static str,
    search_query: Vec<String>,
    data: Vec<SearchResult>,
    has_more: bool,
    next_page: Option<String>,
}

fn search_page_tag(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"const": "vector_store.search_results.page"})
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchResult {
    file_id: String,
    filename: String,
    score: f32,
    attributes: Attributes,
    content: Vec<TextContent>,
}

/// `{type: "text", text}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TextContent {
    #[schemars(schema_with = "text_tag")]
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

fn text_tag(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"const": "text"})
}

impl TextContent {
    pub fn new(text: String) -> TextContent {
        TextContent { kind: "text", text }
    }
}

pub fn vectors(state: &AppState) -> ApiResult<&Vectors> {
    state
        .vectors
        .as_ref()
        .ok_or_else(|| ApiError::internal("vector stores are not served in this mode"))
}

/// The store, or its 404 (without counting its files).
pub async fn existing(state: &AppState, id: &str) -> ApiResult<VectorStore> {
    let id = id.to_string();
    blocking(state, move |s| s.fetch::<VectorStore>(&id)).await
}

/// A store as it is now (counts, usage, status).
pub async fn current(state: &AppState, id: &str) -> ApiResult<VectorStore> {
    let v = vectors(state)?.clone();
    let id = id.to_string();
    blocking(state, move |s| v.with_counts(s.fetch::<VectorStore>(&id)?)).await
}

async fn create(
    Scoped(state): Scoped,
    ApiJson(req): ApiJson<CreateVectorStore>,
) -> ApiResult<Json<VectorStore>> {
    validate::max_len("name", &req.name, 256)?;
    validate::max_len("description", &req.description, 512)?;
    let metadata = validate::metadata(&req.metadata)?;
    check_expiry(&req.expires_after)?;
    let file_ids = req.file_ids.unwrap_or_default();
    if file_ids.len() > MAX_CREATE_FILES {
        return Err(ApiError::invalid(
            "file_ids",
            format!(
                "Invalid 'file_ids': array too long. Expected an array with maximum length \
                 {MAX_CREATE_FILES}, but got an array with length {} instead.",
                file_ids.len()
            ),
        ));
    }
    validate::files_exist(&state, "file_ids", &file_ids).await?;
    let id = make_store_expiring(
        &state,
        req.name,
        file_ids,
        &req.chunking_strategy,
        "chunking_strategy",
        Some(metadata),
        req.expires_after,
    )
    .await?;
    Ok(Json(current(&state, &id).await?))
}

/// Make a store holding `file_ids` (which exist), queued to be read; its id.
pub async fn make_store(
    state: &AppState,
    name: Option<String>,
    file_ids: Vec<String>,
    chunking: &Option<ChunkingParam>,
    chunking_param: &str,
    metadata: Option<Metadata>,
) -> ApiResult<String> {
    let metadata = validate::metadata(&metadata)?;
    make_store_expiring(
        state,
        name,
        file_ids,
        chunking,
        chunking_param,
        Some(metadata),
        None,
    )
    .await
}

async fn make_store_expiring(
    state: &AppState,
    name: Option<String>,
    file_ids: Vec<String>,
    chunking: &Option<ChunkingParam>,
    chunking_param: &str,
    metadata: Option<Metadata>,
    expires_after: Option<StoreExpiry>,
) -> ApiResult<String> {
    let chunking = ChunkingParam::resolve(chunking, chunking_param)?;
    vectors(state)?;
    let t = now();
    let vs = VectorStore {
        id: new_id("vs_"),
        object: VectorStoreTag,
        created_at: t,
        name: name.unwrap_or_default(),
        usage_bytes: 0,
        file_counts: FileCounts::default(),
        status: VectorStoreStatus::Completed,
        expires_at: VectorStore::expiry_time(&expires_after, t),
        expires_after,
        last_active_at: Some(t),
        metadata: metadata.unwrap_or_default(),
    };
    let id = vs.id.clone();
    blocking(state, move |s| s.insert(&vs)).await?;
    let files: Vec<_> = file_ids
        .into_iter()
        .map(|f| (f, chunking, Attributes::new()))
        .collect();
    add_files(state, &id, files, None).await?;
    Ok(id)
}

fn check_expiry(e: &Option<StoreExpiry>) -> ApiResult<()> {
    if let Some(e) = e
        && !(1..=365).contains(&e.days)
    {
        return Err(ApiError::invalid(
            "expires_after.days",
            format!(
                "Invalid 'expires_after.days': integer must be between 1 and 365, got {}.",
                e.days
            ),
        ));
    }
    Ok(())
}

async fn list(Scoped(state): Scoped, q: ListQuery) -> ApiResult<Json<ListBody<VectorStore>>> {
    let page = q.page()?;
    let v = vectors(&state)?.clone();
    let (data, more) = blocking(&state, move |s| {
        let (stores, more) = s.page::<VectorStore>(None, None, &page)?;
        let stores = stores
            .into_iter()
            .map(|vs| v.with_counts(vs))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((stores, more))
    })
    .await?;
    Ok(Json(ListBody::new(data, more)))
}

async fn retrieve(Scoped(state): Scoped, Path(id): Path<String>) -> ApiResult<Json<VectorStore>> {
    Ok(Json(current(&state, &id).await?))
}

async fn modify(
    Scoped(state): Scoped,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ModifyVectorStore>,
) -> ApiResult<Json<VectorStore>> {
    validate::max_len("name", &req.name, 256)?;
    if let Some(e) = &req.expires_after {
        check_expiry(e)?;
    }
    let metadata = req
        .metadata
        .is_some()
        .then(|| validate::metadata(&req.metadata))
        .transpose()?;
    let id2 = id.clone();
    blocking(&state, move |s| {
        let mut vs = s.fetch::<VectorStore>(&id2)?;
        if let Some(n) = req.name {
            vs.name = n;
        }
        if let Some(m) = metadata {
            vs.metadata = m;
        }
        if let Some(e) = req.expires_after {
            vs.expires_after = e;
            let anchor = vs.last_active_at.unwrap_or(vs.created_at);
            vs.expires_at = VectorStore::expiry_time(&vs.expires_after, anchor);
        }
        s.save(&vs)
    })
    .await?;
    Ok(Json(current(&state, &id).await?))
}

async fn remove(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted<VectorStoreDeleted>>> {
    let id2 = id.clone();
    let existed = blocking(&state, move |s| s.delete(Kind::VectorStore, &id2)).await?;
    if !existed {
        return Err(ApiError::not_found("vector store", &id));
    }
    vectors(&state)?.changed(&id);
    Ok(Json(Deleted::new(id)))
}

async fn search(
    Scoped(state): Scoped,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SearchBody>,
) -> ApiResult<Json<SearchPage>> {
    let queries = match req.query {
        Query::One(q) => vec![q],
        Query::Many(qs) => qs,
    };
    if queries.is_empty() || queries.iter().all(|q| q.trim().is_empty()) {
        return Err(ApiError::invalid(
            "query",
            "Invalid 'query': expected a non-empty string or array of strings.",
        ));
    }
    let max = req.max_num_results.unwrap_or(10);
    if !(1..=50).contains(&max) {
        return Err(ApiError::invalid(
            "max_num_results",
            format!("Invalid 'max_num_results': integer must be between 1 and 50, got {max}."),
        ));
    }
    let threshold = req
        .ranking_options
        .as_ref()
        .and_then(|r| r.score_threshold)
        .unwrap_or(0.0);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(ApiError::invalid(
            "ranking_options.score_threshold",
            "Invalid 'ranking_options.score_threshold': expected a number between 0 and 1.",
        ));
    }
    if let Some(f) = &req.filters {
        f.check().map_err(|e| {
            let param = format!("filters.{}", e.path);
            ApiError::invalid(&param, format!("Invalid '{param}': {}.", e.message))
        })?;
    }
    let _ = (
        req.rewrite_query,
        req.ranking_options.and_then(|r| r.ranker),
    );
    let v = vectors(&state)?;
    let hits = v
        .search(
            std::slice::from_ref(&id),
            &SearchRequest {
                queries: queries.clone(),
                max_results: max as usize,
                score_threshold: threshold,
                filter: req.filters,
            },
        )
        .await
        .map_err(search_error)?;
    Ok(Json(SearchPage {
        object: "vector_store.search_results.page",
        search_query: queries,
        data: hits
            .into_iter()
            .map(|h| SearchResult {
                file_id: h.file_id,
                filename: h.file_name,
                score: h.score,
                attributes: h.attributes,
                content: vec![TextContent::new(h.text)],
            })
            .collect(),
        has_more: false,
        next_page: None,
    }))
}

/// A search failure as OpenAI's error.
pub fn search_error(e: crate::vectors::SearchError) -> ApiError {
    use crate::vectors::SearchError;
    match e {
        SearchError::Expired(id) => ApiError::invalid(
            "vector_store_id",
            format!("Vector store {id} has expired and can no longer be searched."),
        ),
        SearchError::Store(e) => e.into(),
        SearchError::Internal(e) => ApiError::internal(format!("{e:#}")),
    }
}

/// Files attached to `messages` for file_search go into the thread's store, made (and put in
/// `resources`) when the thread has none, as OpenAI did. Whether `resources` changed.
pub async fn attach_for_search(
    state: &AppState,
    resources: &mut crate::model::ToolResources,
    messages: &[crate::model::Message],
) -> ApiResult<bool> {
    let files: Vec<String> = messages
        .iter()
        .flat_map(|m| &m.attachments)
        .filter(|a| {
            a.tools
                .iter()
                .any(|t| matches!(t, crate::model::AttachmentTool::FileSearch))
        })
        .map(|a| a.file_id.clone())
        .collect();
    if files.is_empty() || state.vectors.is_none() {
        return Ok(false);
    }
    let existing = resources
        .file_search
        .as_ref()
        .and_then(|f| f.vector_store_ids.first().cloned());
    match existing {
        Some(id) => {
            let files = files
                .into_iter()
                .map(|f| (f, StaticChunking::AUTO, Attributes::new()))
                .collect();
            add_files(state, &id, files, None).await?;
            Ok(false)
        }
        None => {
            let id = make_store(
                state,
                Some("Thread store".into()),
                files,
                &None,
                "attachments",
                None,
            )
            .await?;
            resources
                .file_search
                .get_or_insert_with(Default::default)
                .vector_store_ids = vec![id];
            Ok(true)
        }
    }
}
