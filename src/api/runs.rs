//! Runs, run steps and create-thread-and-run, polled or streamed (SSE).

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ListBody, ListQuery};
use super::threads::{CreateMessage, CreateThread, build_message};
use super::wire::{MetadataParam, ReasoningEffort, check_step_include};
use super::{AppState, Scoped, blocking, validate};
use crate::model::{
    Metadata, ResponseFormatOption, Run, RunStep, Thread, Tool, ToolChoiceOption, ToolResources,
    Truncation, new_id, now,
};
use crate::orchestrator::state::RunStatus;
use crate::orchestrator::{EventStream, NewRun, Orchestrator, RunError};
use crate::store::{Filter, StoreExt};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads/runs", post(create_thread_and_run))
        .route(
            "/v1/threads/{thread_id}/runs",
            get(list_runs).post(create_run),
        )
        .route(
            "/v1/threads/{thread_id}/runs/{run_id}",
            get(retrieve_run).post(modify_run),
        )
        .route(
            "/v1/threads/{thread_id}/runs/{run_id}/cancel",
            post(cancel_run),
        )
        .route(
            "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
            post(submit_tool_outputs),
        )
        .route(
            "/v1/threads/{thread_id}/runs/{run_id}/steps",
            get(list_steps),
        )
        .route(
            "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
            get(retrieve_step),
        )
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match e {
            RunError::NotFound { kind, id } => ApiError::not_found(kind, &id),
            RunError::Invalid { param, message } => {
                let e = ApiError::bad_request(message);
                match param {
                    Some(p) => e.param(p),
                    None => e,
                }
            }
            RunError::OverLimit(message) => super::scope::over_limit(message),
            RunError::Store(e) => e.into(),
            RunError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

fn orchestrator(state: &AppState) -> ApiResult<&Orchestrator> {
    state
        .runs
        .as_ref()
        .ok_or_else(|| ApiError::internal("runs are not configured on this server"))
}

/// `POST /v1/threads/{thread_id}/runs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateRunRequest")]
pub struct CreateRun {
    /// The assistant to run.
    assistant_id: String,
    model: Option<String>,
    #[schemars(length(max = 256_000))]
    instructions: Option<String>,
    #[schemars(length(max = 256_000))]
    additional_instructions: Option<String>,
    additional_messages: Option<Vec<CreateMessage>>,
    #[schemars(length(max = 20))]
    tools: Option<Vec<Tool>>,
    #[schemars(with = "Option<ToolChoiceOption>")]
    tool_choice: Option<serde_json::Value>,
    parallel_tool_calls: Option<bool>,
    #[schemars(range(min = 0, max = 2))]
    temperature: Option<f64>,
    #[schemars(range(min = 0, max = 1))]
    top_p: Option<f64>,
    truncation_strategy: Option<Truncation>,
    #[schemars(range(min = 256))]
    max_prompt_tokens: Option<u64>,
    #[schemars(range(min = 256))]
    max_completion_tokens: Option<u64>,
    response_format: Option<ResponseFormatOption>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
    #[serde(default)]
    /// Answer with server-sent events.
    stream: Option<bool>,
    /// Accepted and ignored.
    #[allow(dead_code)]
    reasoning_effort: Option<ReasoningEffort>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateThreadAndRunRequest")]
pub struct CreateThreadAndRun {
    /// The assistant to run.
    assistant_id: String,
    thread: Option<CreateThread>,
    model: Option<String>,
    #[schemars(length(max = 256_000))]
    instructions: Option<String>,
    #[schemars(length(max = 20))]
    tools: Option<Vec<Tool>>,
    tool_resources: Option<ToolResources>,
    #[schemars(with = "Option<ToolChoiceOption>")]
    tool_choice: Option<serde_json::Value>,
    parallel_tool_calls: Option<bool>,
    #[schemars(range(min = 0, max = 2))]
    temperature: Option<f64>,
    #[schemars(range(min = 0, max = 1))]
    top_p: Option<f64>,
    truncation_strategy: Option<Truncation>,
    #[schemars(range(min = 256))]
    max_prompt_tokens: Option<u64>,
    #[schemars(range(min = 256))]
    max_completion_tokens: Option<u64>,
    response_format: Option<ResponseFormatOption>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
    #[serde(default)]
    /// Answer with server-sent events.
    stream: Option<bool>,
    /// Accepted and ignored.
    #[allow(dead_code)]
    reasoning_effort: Option<ReasoningEffort>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModifyRunRequest")]
pub struct ModifyRun {
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ToolOutput")]
pub struct ToolOutput {
    tool_call_id: String,
    output: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SubmitToolOutputsRequest")]
pub struct SubmitToolOutputs {
    tool_outputs: Vec<ToolOutput>,
    #[serde(default)]
    /// Answer with server-sent events.
    stream: Option<bool>,
}

/// The request's `tool_choice`, read once into its type.
fn tool_choice(v: &Option<serde_json::Value>) -> ApiResult<Option<ToolChoiceOption>> {
    let Some(v) = v else { return Ok(None) };
    serde_json::from_value(v.clone()).map(Some).map_err(|_| {
        ApiError::invalid(
            "tool_choice",
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or \
             {\"type\": \"function\", \"function\": {\"name\": …}}.",
        )
    })
}

fn check_truncation(t: &Option<Truncation>) -> ApiResult<()> {
    let Some(t) = t else { return Ok(()) };
    match (t.kind.as_str(), t.last_messages) {
        ("auto", _) => Ok(()),
        ("last_messages", Some(n)) if n >= 1 => Ok(()),
        ("last_messages", _) => Err(ApiError::invalid(
            "truncation_strategy.last_messages",
            "Invalid 'truncation_strategy.last_messages': expected an integer of at least 1.",
        )),
        (other, _) => Err(ApiError::invalid(
            "truncation_strategy.type",
            format!(
                "Invalid 'truncation_strategy.type': expected 'auto' or 'last_messages', got '{other}'."
            ),
        )),
    }
}

/// OpenAI's least token limit for a run.
const MIN_TOKEN_LIMIT: u64 = 256;

fn check_tokens(param: &str, v: Option<u64>) -> ApiResult<()> {
    match v {
        Some(n) if n < MIN_TOKEN_LIMIT => Err(ApiError::invalid(
            param,
            format!(
                "Invalid '{param}': integer below minimum value. Expected a value >= \
                 {MIN_TOKEN_LIMIT}, but got {n} instead."
            ),
        )
        .code("integer_below_min_value")),
        _ => Ok(()),
    }
}

/// A run may be given at most 20 tools (an assistant 128).
const MAX_RUN_TOOLS: usize = 20;

#[allow(clippy::too_many_arguments)]
fn check_run_fields(
    instructions: &Option<String>,
    tools: &Option<Vec<Tool>>,
    choice: &Option<serde_json::Value>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    truncation: &Option<Truncation>,
    max_prompt: Option<u64>,
    max_completion: Option<u64>,
) -> ApiResult<Option<ToolChoiceOption>> {
    validate::max_len("instructions", instructions, 256_000)?;
    if let Some(t) = tools {
        validate::tools(t)?;
        if t.len() > MAX_RUN_TOOLS {
            return Err(ApiError::invalid(
                "tools",
                format!(
                    "Invalid 'tools': array too long. Expected an array with maximum length \
                     {MAX_RUN_TOOLS}, but got an array with length {} instead.",
                    t.len()
                ),
            )
            .code("array_above_max_length"));
        }
    }
    let choice = self::tool_choice(choice)?;
    validate::sampling(temperature, top_p)?;
    check_truncation(truncation)?;
    check_tokens("max_prompt_tokens", max_prompt)?;
    check_tokens("max_completion_tokens", max_completion)?;
    Ok(choice)
}

/// How soon a poller should ask again: soon for a run that just started, less often later.
fn poll_after_ms(run: &Run) -> u64 {
    if run.status.is_terminal() {
        return 1000;
    }
    if run.status == RunStatus::RequiresAction {
        return 1000;
    }
    let age = now() - run.created_at;
    match age {
        a if a < 2 => 10,
        a if a < 30 => 200,
        _ => 1000,
    }
}

/// A run as a polled response, with `openai-poll-after-ms`.
fn run_response(run: Run) -> Response {
    let ms = poll_after_ms(&run);
    let mut r = Json(run).into_response();
    r.headers_mut()
        .insert("openai-poll-after-ms", HeaderValue::from(ms));
    r
}

/// Stream a run's events as SSE until its end (or `requires_action`), then `done`; search
/// results' text only if the request `include`d it.
fn sse(rx: EventStream, include: bool) -> Response {
    let stream = futures::stream::unfold((rx, false), move |(mut rx, over)| async move {
        if over {
            return None;
        }
        match rx.recv().await {
            Some(ev) => {
                let ev = if include {
                    ev
                } else {
                    ev.without_result_content()
                };
                let ends = ev.ends_stream();
                let event = Event::default()
                    .event(ev.name())
                    .data(ev.data().to_string());
                Some((Ok::<_, Infallible>(vec![event]), (rx, ends)))
            }
            None => None,
        }
    });
    use futures::StreamExt;
    let stream = stream
        .chain(futures::stream::once(async {
            Ok(vec![Event::default().event("done").data("[DONE]")])
        }))
        .flat_map(|r: Result<Vec<Event>, Infallible>| {
            futures::stream::iter(r.unwrap_or_default().into_iter().map(Ok::<_, Infallible>))
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn build_messages(
    state: &AppState,
    thread_id: &str,
    msgs: Option<Vec<CreateMessage>>,
    param: &str,
) -> ApiResult<Vec<crate::model::Message>> {
    let mut out = vec![];
    for (i, m) in msgs.unwrap_or_default().into_iter().enumerate() {
        let msg = build_message(state, thread_id, m).await.map_err(|mut e| {
            e.param = Some(format!("{param}[{i}].{}", e.param.unwrap_or_default()));
            e
        })?;
        out.push(msg);
    }
    Ok(out)
}

async fn create_run(
    Scoped(state): Scoped,
    Path(thread_id): Path<String>,
    RawQuery(query): RawQuery,
    ApiJson(req): ApiJson<CreateRun>,
) -> ApiResult<Response> {
    let include = check_step_include(query.as_deref())?;
    let orch = orchestrator(&state)?.clone();
    let tool_choice = check_run_fields(
        &req.instructions,
        &req.tools,
        &req.tool_choice,
        req.temperature,
        req.top_p,
        &req.truncation_strategy,
        req.max_prompt_tokens,
        req.max_completion_tokens,
    )?;
    validate::response_format(&req.response_format)?;
    validate::max_len(
        "additional_instructions",
        &req.additional_instructions,
        256_000,
    )?;
    let tid = thread_id.clone();
    blocking(&state, move |s| s.fetch::<Thread>(&tid)).await?;
    let additional = build_messages(
        &state,
        &thread_id,
        req.additional_messages,
        "additional_messages",
    )
    .await?;
    super::threads::attach_to_thread(&state, &thread_id, &additional).await?;
    let new = NewRun {
        assistant_id: req.assistant_id,
        model: req.model,
        instructions: req.instructions,
        additional_instructions: req.additional_instructions,
        additional_messages: additional,
        tools: req.tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        temperature: req.temperature,
        top_p: req.top_p,
        truncation_strategy: req.truncation_strategy,
        max_prompt_tokens: req.max_prompt_tokens,
        max_completion_tokens: req.max_completion_tokens,
        response_format: req.response_format,
        metadata: validate::metadata(&req.metadata)?,
    };
    let stream = req.stream.unwrap_or(false);
    let (run, rx) = orch.create_run(&thread_id, new, stream, None).await?;
    Ok(match rx {
        Some(rx) => sse(rx, include),
        None => run_response(run),
    })
}

async fn create_thread_and_run(
    Scoped(state): Scoped,
    ApiJson(req): ApiJson<CreateThreadAndRun>,
) -> ApiResult<Response> {
    let orch = orchestrator(&state)?.clone();
    let tool_choice = check_run_fields(
        &req.instructions,
        &req.tools,
        &req.tool_choice,
        req.temperature,
        req.top_p,
        &req.truncation_strategy,
        req.max_prompt_tokens,
        req.max_completion_tokens,
    )?;
    validate::response_format(&req.response_format)?;
    let params = req.thread.unwrap_or_default();
    // The thread's own resources, plus the run's (top-level) ones: Oasis has no per-run
    // resources, so the run's files join the new thread's and are in /mnt/data for the run.
    let mut resources = validate::tool_resources(&state, &params.tool_resources).await?;
    let for_run = validate::tool_resources(&state, &req.tool_resources).await?;
    if let Some(ci) = for_run.code_interpreter {
        let ids = &mut resources
            .code_interpreter
            .get_or_insert_with(Default::default)
            .file_ids;
        for id in ci.file_ids {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let thread = Thread {
        id: new_id("thread_"),
        object: crate::model::ThreadTag,
        created_at: now(),
        tool_resources: resources,
        metadata: validate::metadata(&params.metadata)?,
    };
    let msgs = build_messages(&state, &thread.id, params.messages, "thread.messages").await?;
    let mut thread = thread;
    super::vector_stores::attach_for_search(&state, &mut thread.tool_resources, &msgs).await?;
    let new = NewRun {
        assistant_id: req.assistant_id,
        model: req.model,
        instructions: req.instructions,
        tools: req.tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        temperature: req.temperature,
        top_p: req.top_p,
        truncation_strategy: req.truncation_strategy,
        max_prompt_tokens: req.max_prompt_tokens,
        max_completion_tokens: req.max_completion_tokens,
        response_format: req.response_format,
        metadata: validate::metadata(&req.metadata)?,
        ..Default::default()
    };
    let stream = req.stream.unwrap_or(false);
    let (run, rx) = orch
        .create_thread_and_run(thread, msgs, new, stream)
        .await?;
    Ok(match rx {
        Some(rx) => sse(rx, false),
        None => run_response(run),
    })
}

async fn list_runs(
    Scoped(state): Scoped,
    Path(thread_id): Path<String>,
    q: ListQuery,
) -> ApiResult<Json<ListBody<Run>>> {
    let page = q.page()?;
    let (data, more) = blocking(&state, move |s| {
        s.fetch::<Thread>(&thread_id)?;
        s.page::<Run>(Some(&thread_id), None, &page)
    })
    .await?;
    Ok(Json(ListBody::new(data, more)))
}

async fn retrieve_run(
    Scoped(state): Scoped,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let run = orchestrator(&state)?.get_run(&thread_id, &run_id).await?;
    Ok(run_response(run))
}

async fn modify_run(
    Scoped(state): Scoped,
    Path((thread_id, run_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<ModifyRun>,
) -> ApiResult<Response> {
    let orch = orchestrator(&state)?;
    let run = match req.metadata {
        Some(_) => {
            let m = validate::metadata(&req.metadata)?;
            orch.modify_run(&thread_id, &run_id, m).await?
        }
        None => orch.get_run(&thread_id, &run_id).await?,
    };
    Ok(run_response(run))
}

async fn cancel_run(
    Scoped(state): Scoped,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let run = orchestrator(&state)?.cancel(&thread_id, &run_id).await?;
    Ok(run_response(run))
}

async fn submit_tool_outputs(
    Scoped(state): Scoped,
    Path((thread_id, run_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<SubmitToolOutputs>,
) -> ApiResult<Response> {
    let outputs = req
        .tool_outputs
        .into_iter()
        .map(|o| (o.tool_call_id, o.output))
        .collect();
    let (run, rx) = orchestrator(&state)?
        .submit_tool_outputs(&thread_id, &run_id, outputs, req.stream.unwrap_or(false))
        .await?;
    Ok(match rx {
        Some(rx) => sse(rx, false),
        None => run_response(run),
    })
}

async fn list_steps(
    Scoped(state): Scoped,
    Path((thread_id, run_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    q: ListQuery,
) -> ApiResult<Json<ListBody<RunStep>>> {
    let content = check_step_include(query.as_deref())?;
    orchestrator(&state)?.get_run(&thread_id, &run_id).await?;
    let page = q.page()?;
    let filter = Filter {
        field: "run_id",
        value: run_id,
    };
    let (data, more) = blocking(&state, move |s| {
        s.page::<RunStep>(Some(&thread_id), Some(&filter), &page)
    })
    .await?;
    let data = data.into_iter().map(|s| shown(s, content)).collect();
    Ok(Json(ListBody::new(data, more)))
}

/// A step as a request sees it: search results' text only when it was included.
fn shown(step: RunStep, content: bool) -> RunStep {
    if content {
        step
    } else {
        step.without_result_content()
    }
}

async fn retrieve_step(
    Scoped(state): Scoped,
    Path((thread_id, run_id, step_id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<RunStep>> {
    let content = check_step_include(query.as_deref())?;
    orchestrator(&state)?.get_run(&thread_id, &run_id).await?;
    let sid = step_id.clone();
    let step = blocking(&state, move |s| s.find::<RunStep>(&sid)).await?;
    match step {
        Some(s) if s.run_id == run_id && s.thread_id == thread_id => Ok(Json(shown(s, content))),
        _ => Err(ApiError::not_found("run step", &step_id)),
    }
}
