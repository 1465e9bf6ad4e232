//! `/v1/assistants`.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{ApiJson, ListBody, ListQuery, deleted};
use super::wire::{AssistantDeleted, Deleted, MetadataParam, ReasoningEffort};
use super::{AppState, Scoped, blocking, insert_returning, save_returning, validate};
use crate::model::{
    Assistant, Kind, Metadata, ResponseFormatOption, Tool, ToolResources, new_id, now,
};
use crate::store::StoreExt;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/assistants", get(list).post(create))
        .route(
            "/v1/assistants/{assistant_id}",
            get(retrieve).post(modify).delete(remove),
        )
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateAssistantRequest")]
pub struct CreateAssistant {
    #[schemars(regex(pattern = r"\S"))]
    model: String,
    #[schemars(length(max = 256))]
    name: Option<String>,
    #[schemars(length(max = 512))]
    description: Option<String>,
    #[schemars(length(max = 256_000))]
    instructions: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 128))]
    tools: Vec<Tool>,
    tool_resources: Option<ToolResources>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
    #[schemars(range(min = 0, max = 2))]
    temperature: Option<f64>,
    #[schemars(range(min = 0, max = 1))]
    top_p: Option<f64>,
    response_format: Option<ResponseFormatOption>,
    /// Accepted and ignored.
    reasoning_effort: Option<ReasoningEffort>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModifyAssistantRequest")]
pub struct ModifyAssistant {
    #[schemars(regex(pattern = r"\S"))]
    model: Option<String>,
    #[schemars(length(max = 256))]
    name: Option<String>,
    #[schemars(length(max = 512))]
    description: Option<String>,
    #[schemars(length(max = 256_000))]
    instructions: Option<String>,
    #[schemars(length(max = 128))]
    tools: Option<Vec<Tool>>,
    tool_resources: Option<ToolResources>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
    #[schemars(range(min = 0, max = 2))]
    temperature: Option<f64>,
    #[schemars(range(min = 0, max = 1))]
    top_p: Option<f64>,
    response_format: Option<ResponseFormatOption>,
    /// Accepted and ignored.
    reasoning_effort: Option<ReasoningEffort>,
}

fn check_text(
    name: &Option<String>,
    desc: &Option<String>,
    instr: &Option<String>,
) -> ApiResult<()> {
    validate::max_len("name", name, 256)?;
    validate::max_len("description", desc, 512)?;
    validate::max_len("instructions", instr, 256_000)
}

async fn create(
    Scoped(state): Scoped,
    ApiJson(req): ApiJson<CreateAssistant>,
) -> ApiResult<Json<Assistant>> {
    if req.model.trim().is_empty() {
        return Err(super::error::ApiError::invalid(
            "model",
            "Missing required parameter: 'model'.",
        ));
    }
    check_text(&req.name, &req.description, &req.instructions)?;
    validate::tools(&req.tools)?;
    validate::sampling(req.temperature, req.top_p)?;
    validate::response_format(&req.response_format)?;
    let metadata = validate::metadata(&req.metadata)?;
    let tool_resources = validate::tool_resources(&state, &req.tool_resources).await?;
    let _ = req.reasoning_effort;
    let a = Assistant {
        id: new_id("asst_"),
        object: crate::model::AssistantTag,
        created_at: now(),
        name: req.name,
        description: req.description,
        model: req.model,
        instructions: req.instructions,
        tools: req.tools,
        tool_resources,
        metadata,
        temperature: Some(req.temperature.unwrap_or(1.0)),
        top_p: Some(req.top_p.unwrap_or(1.0)),
        response_format: req.response_format.unwrap_or_default(),
    };
    Ok(Json(insert_returning(&state, a).await?))
}

async fn retrieve(Scoped(state): Scoped, Path(id): Path<String>) -> ApiResult<Json<Assistant>> {
    Ok(Json(
        blocking(&state, move |s| s.fetch::<Assistant>(&id)).await?,
    ))
}

async fn modify(
    Scoped(state): Scoped,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ModifyAssistant>,
) -> ApiResult<Json<Assistant>> {
    let id2 = id.clone();
    let mut a = blocking(&state, move |s| s.fetch::<Assistant>(&id2)).await?;
    if req.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
        return Err(super::error::ApiError::invalid(
            "model",
            "Invalid 'model': expected a model name, got an empty string.",
        ));
    }
    check_text(&req.name, &req.description, &req.instructions)?;
    if let Some(t) = &req.tools {
        validate::tools(t)?;
    }
    validate::sampling(req.temperature, req.top_p)?;
    validate::response_format(&req.response_format)?;
    if let Some(m) = req.model {
        a.model = m;
    }
    if req.name.is_some() {
        a.name = req.name;
    }
    if req.description.is_some() {
        a.description = req.description;
    }
    if req.instructions.is_some() {
        a.instructions = req.instructions;
    }
    if let Some(t) = req.tools {
        a.tools = t;
    }
    if req.tool_resources.is_some() {
        a.tool_resources = validate::tool_resources(&state, &req.tool_resources).await?;
    }
    if req.metadata.is_some() {
        a.metadata = validate::metadata(&req.metadata)?;
    }
    if req.temperature.is_some() {
        a.temperature = req.temperature;
    }
    if req.top_p.is_some() {
        a.top_p = req.top_p;
    }
    if let Some(r) = req.response_format {
        a.response_format = r;
    }
    let _ = req.reasoning_effort;
    Ok(Json(save_returning(&state, a).await?))
}

async fn remove(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted<AssistantDeleted>>> {
    let id2 = id.clone();
    let existed = blocking(&state, move |s| s.delete(Kind::Assistant, &id2)).await?;
    if !existed {
        return Err(super::error::ApiError::not_found("assistant", &id));
    }
    Ok(deleted::<AssistantDeleted>(&id))
}

async fn list(Scoped(state): Scoped, q: ListQuery) -> ApiResult<Json<ListBody<Assistant>>> {
    let page = q.page()?;
    let (data, more) = blocking(&state, move |s| s.page::<Assistant>(None, None, &page)).await?;
    Ok(Json(ListBody::new(data, more)))
}
