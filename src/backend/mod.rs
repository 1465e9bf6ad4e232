//! Model backends: what a run asks "what next?". One trait, Chat-Completions shaped, so any
//! OpenAI-compatible server fits ([`upstream`]), and so does Oasis's deterministic built-in
//! model ([`local`]). Knows no axum, no SQL and no wasmtime.
//!
//! The orchestrator offers `code_interpreter` to a model as one more function tool, named by
//! [`ChatRequest::code_tool`]; its results come back as `Role::Tool` messages whose content is
//! a JSON object (see [`CodeToolResult`]).

pub mod local;
pub mod upstream;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// The name of the built-in model.
pub const LOCAL_MODEL: &str = "oasis-local";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of the conversation a model sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    /// Text (for user messages: the text parts joined; image parts are described in text).
    pub content: String,
    /// Calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: which call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Images a user message shows the model (after its text), for vision models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImagePart>,
}

/// An image for the model: an `http(s)` URL or a `data:` URL holding the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePart {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<crate::model::ImageDetail>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: None,
            images: vec![],
        }
    }

    pub fn tool_result(call_id: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::Tool,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: Some(call_id.to_string()),
            images: vec![],
        }
    }
}

/// A function call a model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    /// Must call this function (may be the code tool's name).
    Function(String),
}

/// One "what next?" question.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Every function offered, the code tool included.
    pub tools: Vec<FunctionSpec>,
    /// The name under which `code_interpreter` is offered, if it is enabled for the run.
    pub code_tool: Option<String>,
    /// The name under which file_search is offered (a search of the run's vector stores), if
    /// it is.
    pub search_tool: Option<String>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Most tokens the answer may have.
    pub max_tokens: Option<u64>,
    /// The format the answer must take (`json_object` or `json_schema`); none for `auto`/`text`.
    pub response_format: Option<crate::model::ResponseFormat>,
}

impl ChatRequest {
    /// A request for `model` with `messages`, no tools, and every option at its default.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            messages,
            tools: vec![],
            code_tool: None,
            search_tool: None,
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            temperature: None,
            top_p: None,
            max_tokens: None,
            response_format: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    ToolCalls,
    /// `max_tokens` cut the answer short.
    Length,
    ContentFilter,
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: FinishReason,
    pub usage: Usage,
}

/// Why a backend could not answer; each maps to a run's `last_error.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// `rate_limit_exceeded`: the upstream kept answering 429.
    #[error("{0}")]
    RateLimited(String),
    /// `server_error`: the upstream failed, timed out or could not be reached.
    #[error("{0}")]
    Server(String),
    /// `invalid_prompt`: the upstream refused the request (4xx).
    #[error("{0}")]
    InvalidPrompt(String),
}

impl BackendError {
    /// The run's `last_error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            BackendError::RateLimited(_) => "rate_limit_exceeded",
            BackendError::Server(_) => "server_error",
            BackendError::InvalidPrompt(_) => "invalid_prompt",
        }
    }
}

/// A piece of a model's answer, as it streams. Joined, the pieces give the [`ChatResponse`]:
/// the `Text` pieces its `text`; for the call at position `index` of its `tool_calls`, one
/// `CallStarted` (before any of that call's `Arguments`) and `Arguments` pieces that join into
/// its `arguments`. A backend sends a call's pieces as the model writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelDelta<'a> {
    Text(&'a str),
    CallStarted {
        index: usize,
        id: &'a str,
        name: &'a str,
    },
    Arguments {
        index: usize,
        text: &'a str,
    },
}

/// A [`ModelDelta`] that owns its text, to send across a channel or keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedDelta {
    Text(String),
    CallStarted {
        index: usize,
        id: String,
        name: String,
    },
    Arguments {
        index: usize,
        text: String,
    },
}

impl From<ModelDelta<'_>> for OwnedDelta {
    fn from(d: ModelDelta<'_>) -> OwnedDelta {
        match d {
            ModelDelta::Text(t) => OwnedDelta::Text(t.to_string()),
            ModelDelta::CallStarted { index, id, name } => OwnedDelta::CallStarted {
                index,
                id: id.to_string(),
                name: name.to_string(),
            },
            ModelDelta::Arguments { index, text } => OwnedDelta::Arguments {
                index,
                text: text.to_string(),
            },
        }
    }
}

/// Receives the answer's pieces as they are produced.
pub type DeltaSink<'a> = &'a (dyn Fn(ModelDelta<'_>) + Send + Sync);

pub trait Backend: Send + Sync + 'static {
    /// Answer `req`, calling `on_delta` with each piece of the answer as it arrives (see
    /// [`ModelDelta`] for how the pieces add up to the returned answer).
    fn complete<'a>(
        &'a self,
        req: ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>>;

    /// The model ids this backend serves.
    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;
}

/// What the code tool's result message holds (its JSON content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeToolResult {
    /// `completed`, `error`, `timeout`, `memory_limit`, `output_limit`, `crashed`, `cancelled`.
    pub status: String,
    /// stdout, the last expression's value and stderr, as the run step's `logs` show them.
    pub logs: String,
    /// `/mnt/data/…` paths the call created or changed.
    #[serde(default)]
    pub files: Vec<String>,
    /// How many images (figures) the call produced; they are shown to the user.
    #[serde(default)]
    pub images: usize,
}

/// Rough token count for text whose backend does not report usage: one token per 4 bytes.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}
