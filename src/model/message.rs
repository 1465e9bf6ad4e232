//! Messages: their content, attachments and annotations.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Kind, MessageTag, Metadata, Object, Run, new_id, now};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attachment {
    pub file_id: String,
    pub tools: Vec<AttachmentTool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttachmentTool {
    CodeInterpreter,
    FileSearch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text { text: Text },
    ImageFile { image_file: ImageFile },
    ImageUrl { image_url: ImageUrl },
    Refusal { refusal: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Text {
    pub value: String,
    pub annotations: Vec<Annotation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageFile {
    pub file_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

/// Why a message or run ended `incomplete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IncompleteDetails {
    /// A run: `max_prompt_tokens` or `max_completion_tokens`; a message: `max_tokens`,
    /// `run_cancelled`, `run_expired`, `run_failed` or `content_filter`.
    pub reason: String,
}

impl IncompleteDetails {
    pub fn because(reason: impl Into<String>) -> IncompleteDetails {
        IncompleteDetails {
            reason: reason.into(),
        }
    }
}

/// How closely a vision model looks at an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    Auto,
    Low,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Message {
    pub id: String,
    pub object: MessageTag,
    pub created_at: i64,
    pub thread_id: String,
    pub status: MessageStatus,
    pub incomplete_details: Option<IncompleteDetails>,
    pub completed_at: Option<i64>,
    pub incomplete_at: Option<i64>,
    pub role: MessageRole,
    pub content: Vec<Content>,
    pub assistant_id: Option<String>,
    pub run_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub metadata: Metadata,
}

impl Message {
    /// A new message of `thread_id` by `role`, with `status`.
    pub fn new(
        thread_id: &str,
        role: MessageRole,
        status: MessageStatus,
        content: Vec<Content>,
    ) -> Message {
        let t = now();
        Message {
            id: new_id("msg_"),
            object: MessageTag,
            created_at: t,
            thread_id: thread_id.to_string(),
            status,
            incomplete_details: None,
            completed_at: (status == MessageStatus::Completed).then_some(t),
            incomplete_at: None,
            role,
            content,
            assistant_id: None,
            run_id: None,
            attachments: vec![],
            metadata: Default::default(),
        }
    }

    /// A new in-progress assistant message of `run`.
    pub fn of_run(run: &Run, content: Vec<Content>) -> Message {
        Message {
            assistant_id: Some(run.assistant_id.clone()),
            run_id: Some(run.id.clone()),
            ..Message::new(
                &run.thread_id,
                MessageRole::Assistant,
                MessageStatus::InProgress,
                content,
            )
        }
    }
}

impl Object for Message {
    const KIND: Kind = Kind::Message;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
    fn scope(&self) -> Option<&str> {
        Some(&self.thread_id)
    }
}

/// A message's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    InProgress,
    Incomplete,
    Completed,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

/// A text part's annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Annotation {
    /// A link to a file the code interpreter wrote.
    FilePath {
        text: String,
        start_index: usize,
        end_index: usize,
        file_path: FileRef,
    },
    /// A quote from a file `file_search` found.
    FileCitation {
        text: String,
        start_index: usize,
        end_index: usize,
        file_citation: FileRef,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileRef {
    pub file_id: String,
}
