//! Wire types of the API's own that are not stored objects: lists, deletion receipts, the error
//! body, models, the health answer, and the schema-only types `/openapi.json` names (a request
//! `metadata` with its limits, a multipart upload, a session id).
//!
//! The stored objects (`File`, `Assistant`, `Run`, …) are in `crate::model`; requests are typed
//! next to their handlers.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::model::object_tag;

object_tag! {
    /// `"list"`.
    ListTag = "list";
    /// `"model"`.
    ModelTag = "model";
    /// A deleted file's `"file"`.
    FileDeleted = "file";
    /// `"assistant.deleted"`.
    AssistantDeleted = "assistant.deleted";
    /// `"thread.deleted"`.
    ThreadDeleted = "thread.deleted";
    /// `"thread.message.deleted"`.
    MessageDeleted = "thread.message.deleted";
    /// `"code_interpreter.session"`.
    SessionTag = "code_interpreter.session";
    /// `"code_interpreter.session.deleted"`.
    SessionDeleted = "code_interpreter.session.deleted";
    /// `"vector_store.deleted"`.
    VectorStoreDeleted = "vector_store.deleted";
    /// `"vector_store.file.deleted"`.
    VectorStoreFileDeleted = "vector_store.file.deleted";
}

/// `{id, object, deleted: true}`: what a delete answers.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}")]
pub struct Deleted<T> {
    pub id: String,
    pub object: T,
    /// Always `true`.
    #[schemars(schema_with = "always_true")]
    pub deleted: bool,
}

impl<T: Default> Deleted<T> {
    pub fn new(id: impl Into<String>) -> Deleted<T> {
        Deleted {
            id: id.into(),
            object: T::default(),
            deleted: true,
        }
    }
}

fn always_true(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": true})
}

/// OpenAI's error body: `{"error": {message, type, param, code}}`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

/// A model runs can use.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Model")]
pub struct ModelObject {
    pub id: String,
    pub object: ModelTag,
    /// When the server started serving it (Unix seconds).
    pub created: i64,
    pub owned_by: &'static str,
}

/// `GET /v1/models`: `{object: "list", data}`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ModelList")]
pub struct ModelList {
    pub object: ListTag,
    pub data: Vec<ModelObject>,
}

/// `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    #[schemars(schema_with = "ok")]
    pub status: &'static str,
}

fn ok(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": "ok"})
}

/// `GET /ready` when this node can serve: the database and the object store answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ready {
    #[schemars(schema_with = "ready")]
    pub status: &'static str,
    #[schemars(schema_with = "ok")]
    pub database: &'static str,
    #[schemars(schema_with = "ok")]
    pub object_store: &'static str,
}

fn ready(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": "ready"})
}

/// A request's `metadata` in a schema: up to 16 string pairs, keys up to 64 characters, values
/// up to 512 (checked by `validate::metadata`).
pub struct MetadataParam;

impl JsonSchema for MetadataParam {
    fn schema_name() -> Cow<'static, str> {
        "Metadata".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "Up to 16 string pairs; keys up to 64 characters, values up to 512.",
            "maxProperties": 16,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512}
        })
    }
}

/// Bytes sent as a multipart file part, in a schema.
pub struct Binary;

impl JsonSchema for Binary {
    fn schema_name() -> Cow<'static, str> {
        "Binary".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "binary"})
    }
}

/// A code-interpreter session id in a schema: `cisess_…`, a `thread_…` id, or any id of 1 to 64
/// letters, digits, `-` and `_`.
pub struct SessionId;

impl JsonSchema for SessionId {
    fn schema_name() -> Cow<'static, str> {
        "SessionId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
    }
}

/// A file in a session's `/mnt/data`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SessionFile {
    pub path: String,
    pub bytes: u64,
}

/// `GET /v1/code_interpreter/sessions/{id}`: a session's interpreter and when it was used.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "CodeInterpreterSession")]
pub struct SessionObject {
    pub id: String,
    pub object: SessionTag,
    pub status: SessionStatus,
    /// Bytes of the session's hibernated interpreter state on disk (0 if none).
    pub state_bytes: u64,
    /// When a call last ended on the session (Unix seconds).
    pub last_used_at: Option<i64>,
}

/// Where a session's interpreter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// In memory (or running a call).
    Live,
    /// Written to disk; the next call resumes it, variables and imports included.
    Hibernated,
    /// Neither: the next call starts a new interpreter (its files in /mnt/data are kept).
    Idle,
}

/// `GET /v1/code_interpreter/sessions/{id}/files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionFileList {
    pub object: ListTag,
    pub session_id: String,
    pub data: Vec<SessionFile>,
}

/// `POST /v1/files`'s multipart form, in a schema (the handler reads the parts as they stream).
pub struct UploadFileForm;

impl JsonSchema for UploadFileForm {
    fn schema_name() -> Cow<'static, str> {
        "UploadFile".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        use super::files::{EXPIRES_AFTER_MAX_SECS, EXPIRES_AFTER_MIN_SECS, PURPOSES};
        let binary = g.subschema_for::<Binary>();
        json_schema!({
            "type": "object",
            "additionalProperties": false,
            "required": ["file", "purpose"],
            "properties": {
                "file": binary,
                "purpose": {"type": "string", "enum": PURPOSES},
                "expires_after[anchor]": {"type": "string", "const": "created_at"},
                "expires_after[seconds]": {
                    "type": "integer",
                    "minimum": EXPIRES_AFTER_MIN_SECS,
                    "maximum": EXPIRES_AFTER_MAX_SECS
                }
            }
        })
    }
}

/// `reasoning_effort`: accepted (one of OpenAI's values) and not used.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

/// The one value a run step's `include[]` takes.
pub const STEP_INCLUDE: &str = "step_details.tool_calls[*].file_search.results[*].content";

/// `?include[]=…` of a run step request: each must be [`STEP_INCLUDE`]; whether it asks for
/// the search results' text.
pub fn check_step_include(query: Option<&str>) -> Result<bool, super::ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
    let mut included = false;
    for (key, value) in pairs {
        if key == "include[]" || key == "include" {
            if value != STEP_INCLUDE {
                return Err(super::ApiError::invalid(
                    "include",
                    format!("Invalid value: '{value}'. Supported values are: '{STEP_INCLUDE}'."),
                )
                .code("invalid_value"));
            }
            included = true;
        }
    }
    Ok(included)
}
