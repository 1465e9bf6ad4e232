//! `/v1/models`: the built-in model and the upstream's models, which runs can use.

use std::sync::LazyLock;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

use super::error::{ApiError, ApiResult};
use super::wire::{ListTag, ModelList, ModelObject, ModelTag};
use super::{AppState, Scoped};
use crate::backend::LOCAL_MODEL;
use crate::model::now;

/// When this server began serving its models: each model's `created`.
static SERVING_SINCE: LazyLock<i64> = LazyLock::new(now);

pub fn router() -> Router<AppState> {
    LazyLock::force(&SERVING_SINCE);
    Router::new()
        .route("/v1/models", get(list))
        // Upstream model ids may contain `/` (`Qwen/Qwen2.5-7B-Instruct`).
        .route("/v1/models/{*model}", get(retrieve).delete(remove))
}

async fn ids(state: &AppState) -> Vec<String> {
    match &state.runs {
        Some(o) => o.models().await,
        None => vec![LOCAL_MODEL.to_string()],
    }
}

fn object(id: &str) -> ModelObject {
    ModelObject {
        id: id.to_string(),
        object: ModelTag,
        created: *SERVING_SINCE,
        owned_by: if id == LOCAL_MODEL {
            "oasis"
        } else {
            "upstream"
        },
    }
}

fn no_such_model(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("The model '{model}' does not exist"),
    )
    .param("model")
    .code("model_not_found")
}

async fn list(Scoped(state): Scoped) -> Json<ModelList> {
    let data = ids(&state).await.iter().map(|m| object(m)).collect();
    Json(ModelList {
        object: ListTag,
        data,
    })
}

async fn retrieve(
    Scoped(state): Scoped,
    Path(model): Path<String>,
) -> ApiResult<Json<ModelObject>> {
    if ids(&state).await.contains(&model) {
        Ok(Json(object(&model)))
    } else {
        Err(no_such_model(&model))
    }
}

/// OpenAI deletes only fine-tuned models their owner made; Oasis has none of those, so a model
/// it serves cannot be deleted (403) and any other does not exist (404).
async fn remove(Scoped(state): Scoped, Path(model): Path<String>) -> ApiError {
    if ids(&state).await.contains(&model) {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "The model '{model}' cannot be deleted: only fine-tuned models can be, and this \
                 server has none."
            ),
        )
        .param("model")
        .code("model_not_deletable")
    } else {
        no_such_model(&model)
    }
}
