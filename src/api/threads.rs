//! `/v1/threads` and `/v1/threads/{id}/messages`.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ListBody, ListQuery, deleted};
use super::vector_stores::attach_for_search;
use super::wire::{Deleted, MessageDeleted, MetadataParam, ThreadDeleted};
use super::{AppState, Scoped, blocking, insert_returning, save_returning, validate};
use crate::model::{
    Attachment, Kind, Message, MessageRole, MessageStatus, Metadata, Thread, ToolResources, new_id,
    now,
};
use crate::store::{Filter, Record, StoreExt};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads", get(list_threads).post(create_thread))
        .route(
            "/v1/threads/{thread_id}",
            get(retrieve_thread)
                .post(modify_thread)
                .delete(delete_thread),
        )
        .route(
            "/v1/threads/{thread_id}/messages",
            get(list_messages).post(create_message),
        )
        .route(
            "/v1/threads/{thread_id}/messages/{message_id}",
            get(retrieve_message)
                .post(modify_message)
                .delete(delete_message),
        )
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateMessageRequest")]
pub struct CreateMessage {
    #[schemars(with = "MessageRole")]
    pub role: String,
    pub content: validate::ContentInput,
    pub attachments: Option<Vec<Attachment>>,
    #[schemars(with = "Option<MetadataParam>")]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CreateThreadRequest")]
pub struct CreateThread {
    pub messages: Option<Vec<CreateMessage>>,
    pub tool_resources: Option<ToolResources>,
    #[schemars(with = "Option<MetadataParam>")]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModifyThreadRequest")]
pub struct ModifyThread {
    tool_resources: Option<ToolResources>,
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ModifyMessageRequest")]
pub struct ModifyMessage {
    #[schemars(with = "Option<MetadataParam>")]
    metadata: Option<Metadata>,
}

/// Files attached to `messages` for file_search go into the stored thread's store (made when
/// it has none).
pub async fn attach_to_thread(
    state: &AppState,
    thread_id: &str,
    messages: &[Message],
) -> ApiResult<()> {
    let tid = thread_id.to_string();
    let mut thread = blocking(state, move |s| s.fetch::<Thread>(&tid)).await?;
    if attach_for_search(state, &mut thread.tool_resources, messages).await? {
        blocking(state, move |s| s.save(&thread)).await?;
    }
    Ok(())
}

/// Validate a message request and build the message (not stored).
pub async fn build_message(
    state: &AppState,
    thread_id: &str,
    req: CreateMessage,
) -> ApiResult<Message> {
    let role = validate::role(&req.role)?;
    let content = validate::content(state, req.content).await?;
    let attachments = validate::attachments(state, &req.attachments).await?;
    let metadata = validate::metadata(&req.metadata)?;
    Ok(Message {
        attachments,
        metadata,
        ..Message::new(thread_id, role, MessageStatus::Completed, content)
    })
}

async fn create_thread(
    Scoped(state): Scoped,
    ApiJson(req): ApiJson<CreateThread>,
) -> ApiResult<Json<Thread>> {
    let thread = Thread {
        id: new_id("thread_"),
        object: crate::model::ThreadTag,
        created_at: now(),
        tool_resources: validate::tool_resources(&state, &req.tool_resources).await?,
        metadata: validate::metadata(&req.metadata)?,
    };
    let mut thread = thread;
    let mut msgs = vec![];
    for (i, m) in req.messages.unwrap_or_default().into_iter().enumerate() {
        let msg = build_message(&state, &thread.id, m)
            .await
            .map_err(|mut e| {
                e.param = Some(format!("messages[{i}].{}", e.param.unwrap_or_default()));
                e
            })?;
        msgs.push(msg);
    }
    attach_for_search(&state, &mut thread.tool_resources, &msgs).await?;
    let mut records = vec![Record::of(&thread)?];
    for m in &msgs {
        records.push(Record::of(m)?);
    }
    blocking(&state, move |s| s.insert_all(&records)).await?;
    Ok(Json(thread))
}

async fn retrieve_thread(Scoped(state): Scoped, Path(id): Path<String>) -> ApiResult<Json<Thread>> {
    Ok(Json(
        blocking(&state, move |s| s.fetch::<Thread>(&id)).await?,
    ))
}

async fn modify_thread(
    Scoped(state): Scoped,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ModifyThread>,
) -> ApiResult<Json<Thread>> {
    let id2 = id.clone();
    let mut t = blocking(&state, move |s| s.fetch::<Thread>(&id2)).await?;
    if req.tool_resources.is_some() {
        t.tool_resources = validate::tool_resources(&state, &req.tool_resources).await?;
    }
    if req.metadata.is_some() {
        t.metadata = validate::metadata(&req.metadata)?;
    }
    Ok(Json(save_returning(&state, t).await?))
}

/// Deleting a thread cancels its active run, deletes its messages, runs and steps (one
/// transaction) and its sandbox session.
async fn delete_thread(
    Scoped(state): Scoped,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted<ThreadDeleted>>> {
    if let Some(runs) = &state.runs {
        runs.stop_thread(&id).await?;
    }
    let id2 = id.clone();
    let existed = blocking(&state, move |s| s.delete(Kind::Thread, &id2)).await?;
    if !existed {
        return Err(ApiError::not_found("thread", &id));
    }
    let key = state.project.session_key(&id);
    if let Some(sessions) = &state.sessions {
        sessions.remove(&key).await?;
    }
    // On a cluster, also its shared state, files and lease (other nodes' copies are dropped
    // by their retention sweep).
    if let Some(r) = &state.roaming {
        r.remove(&key).await?;
    }
    Ok(deleted::<ThreadDeleted>(&id))
}

/// Oasis extension (OpenAI has no thread list), served when `thread_list` is on.
async fn list_threads(Scoped(state): Scoped, q: ListQuery) -> ApiResult<Json<ListBody<Thread>>> {
    if !state.config.thread_list {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "Invalid URL (GET /v1/threads): listing threads is an Oasis extension; enable it \
             with OASIS_THREAD_LIST=true or `thread_list = true`.",
        ));
    }
    let page = q.page()?;
    let (data, more) = blocking(&state, move |s| s.page::<Thread>(None, None, &page)).await?;
    Ok(Json(ListBody::new(data, more)))
}

async fn create_message(
    Scoped(state): Scoped,
    Path(thread_id): Path<String>,
    ApiJson(req): ApiJson<CreateMessage>,
) -> ApiResult<Json<Message>> {
    let tid = thread_id.clone();
    blocking(&state, move |s| s.fetch::<Thread>(&tid)).await?;
    let msg = build_message(&state, &thread_id, req).await?;
    let msg = match &state.runs {
        // The thread is locked while a run is active.
        Some(runs) => {
            runs.add_messages(&thread_id, vec![msg.clone()]).await?;
            msg
        }
        None => insert_returning(&state, msg).await?,
    };
    // Once the message is in (a refused one leaves no store behind).
    attach_to_thread(&state, &thread_id, std::slice::from_ref(&msg)).await?;
    Ok(Json(msg))
}

async fn fetch_message(
    state: &AppState,
    thread_id: String,
    message_id: String,
) -> ApiResult<Message> {
    let tid = thread_id.clone();
    blocking(state, move |s| s.fetch::<Thread>(&tid)).await?;
    let mid = message_id.clone();
    let m = blocking(state, move |s| s.find::<Message>(&mid)).await?;
    match m {
        Some(m) if m.thread_id == thread_id => Ok(m),
        _ => Err(ApiError::not_found("message", &message_id)),
    }
}

async fn retrieve_message(
    Scoped(state): Scoped,
    Path((thread_id, message_id)): Path<(String, String)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(fetch_message(&state, thread_id, message_id).await?))
}

async fn modify_message(
    Scoped(state): Scoped,
    Path((thread_id, message_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<ModifyMessage>,
) -> ApiResult<Json<Message>> {
    let mut m = fetch_message(&state, thread_id, message_id).await?;
    if req.metadata.is_some() {
        m.metadata = validate::metadata(&req.metadata)?;
    }
    Ok(Json(save_returning(&state, m).await?))
}

async fn delete_message(
    Scoped(state): Scoped,
    Path((thread_id, message_id)): Path<(String, String)>,
) -> ApiResult<Json<Deleted<MessageDeleted>>> {
    let m = fetch_message(&state, thread_id, message_id).await?;
    let id = m.id.clone();
    blocking(&state, move |s| s.delete(Kind::Message, &id)).await?;
    Ok(deleted::<MessageDeleted>(&m.id))
}

async fn list_messages(
    Scoped(state): Scoped,
    Path(thread_id): Path<String>,
    q: ListQuery,
) -> ApiResult<Json<ListBody<Message>>> {
    let page = q.page()?;
    let filter = q.run_id.clone().map(|v| Filter {
        field: "run_id",
        value: v,
    });
    let (data, more) = blocking(&state, move |s| {
        s.fetch::<Thread>(&thread_id)?;
        s.page::<Message>(Some(&thread_id), filter.as_ref(), &page)
    })
    .await?;
    Ok(Json(ListBody::new(data, more)))
}
