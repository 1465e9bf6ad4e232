//! The Assistants API's objects as Oasis keeps them.
//!
//! These are shaped like OpenAI's objects because that is what the API serves and what the
//! store persists (as JSON); `api` is still the only module that knows HTTP, requests and error
//! bodies, and it validates every request before one of these is built.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub type Metadata = BTreeMap<String, String>;

/// A new OpenAI-style id: `prefix` + 24 random alphanumerics (e.g. `asst_…`, `file-…`).
pub fn new_id(prefix: &str) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..24)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What kind of object a stored record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Assistant,
    Thread,
    Message,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Assistant => "assistant",
            Kind::Thread => "thread",
            Kind::Message => "thread.message",
        }
    }

    /// The noun OpenAI's "No … found with id" messages use.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Assistant => "assistant",
            Kind::Thread => "thread",
            Kind::Message => "message",
        }
    }
}

/// An object the store can keep.
pub trait Object: Serialize + for<'de> Deserialize<'de> + Send + 'static {
    const KIND: Kind;
    fn id(&self) -> &str;
    fn created_at(&self) -> i64;
    /// The thread a thread-scoped object belongs to.
    fn scope(&self) -> Option<&str> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: u64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    pub status: String,
    pub status_details: Option<String>,
}

impl FileObject {
    /// A new, processed file record.
    pub fn new(filename: String, purpose: String, bytes: u64) -> FileObject {
        FileObject {
            id: new_id("file-"),
            object: "file".into(),
            bytes,
            created_at: now(),
            expires_at: None,
            filename,
            purpose,
            status: "processed".into(),
            status_details: None,
        }
    }
}

impl Object for FileObject {
    const KIND: Kind = Kind::File;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    CodeInterpreter,
    FileSearch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_search: Option<serde_json::Value>,
    },
    Function {
        function: FunctionDef,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_interpreter: Option<CodeInterpreterResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_search: Option<FileSearchResources>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeInterpreterResources {
    #[serde(default)]
    pub file_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSearchResources {
    #[serde(default)]
    pub vector_store_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub model: String,
    pub instructions: Option<String>,
    pub tools: Vec<Tool>,
    pub tool_resources: ToolResources,
    pub metadata: Metadata,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub response_format: serde_json::Value,
}

impl Object for Assistant {
    const KIND: Kind = Kind::Assistant;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub tool_resources: ToolResources,
    pub metadata: Metadata,
}

impl Object for Thread {
    const KIND: Kind = Kind::Thread;
    fn id(&self) -> &str {
        &self.id
    }
    fn created_at(&self) -> i64 {
        self.created_at
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub file_id: String,
    #[serde(default)]
    pub tools: Vec<AttachmentTool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttachmentTool {
    CodeInterpreter,
    FileSearch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text { text: Text },
    ImageFile { image_file: ImageFile },
    ImageUrl { image_url: ImageUrl },
    Refusal { refusal: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text {
    pub value: String,
    pub annotations: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFile {
    pub file_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub thread_id: String,
    pub status: String,
    pub incomplete_details: Option<serde_json::Value>,
    pub completed_at: Option<i64>,
    pub incomplete_at: Option<i64>,
    pub role: String,
    pub content: Vec<Content>,
    pub assistant_id: Option<String>,
    pub run_id: Option<String>,
    pub attachments: Vec<Attachment>,
    pub metadata: Metadata,
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
