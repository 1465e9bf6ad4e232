//! The Assistants API's objects as Oasis keeps them.
//!
//! These are shaped like OpenAI's objects because that is what the API serves and what the
//! store persists (as JSON); `api` is still the only module that knows HTTP, requests and error
//! bodies, and it validates every request before one of these is built.

use std::collections::BTreeMap;

use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod message;
mod run;
mod step;
mod vector_store;

pub use message::*;
pub use run::*;
pub use step::*;
pub use vector_store::*;

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

/// Characters that change how the text around them is shown rather than being shown: controls,
/// and the bidirectional and invisible formatting marks ("Trojan Source" names such as
/// `invoice\u{202e}fdp.exe`).
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A file name as people are shown it (a File's `filename`, a link's label): each deceptive
/// character written as its escape, e.g. `\u{202e}`, so that it shows instead of acting.
pub fn shown_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if is_deceptive(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Keep only a plain file name: no folders, no `..`, no control, bidirectional or invisible
/// formatting characters.
pub fn plain_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let base: String = base.chars().filter(|c| !is_deceptive(*c)).collect();
    let base = base.trim();
    if base.is_empty() || base == "." || base == ".." || base.len() > 255 {
        return None;
    }
    Some(base.to_string())
}

/// The `object` field of a wire object: always the one string OpenAI gives that kind.
macro_rules! object_tag {
    ($(#[$doc:meta] $name:ident = $s:literal;)*) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($s)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "const": $s})
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = String::deserialize(d)?;
                if v == $s {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "expected object {:?}, got {v:?}",
                        $s
                    )))
                }
            }
        }
    )*};
}

pub(crate) use object_tag;

object_tag! {
    /// `"file"`.
    FileTag = "file";
    /// `"assistant"`.
    AssistantTag = "assistant";
    /// `"thread"`.
    ThreadTag = "thread";
    /// `"thread.message"`.
    MessageTag = "thread.message";
    /// `"thread.run"`.
    RunTag = "thread.run";
    /// `"thread.run.step"`.
    RunStepTag = "thread.run.step";
    /// `"upload"`.
    UploadTag = "upload";
    /// `"upload.part"`.
    UploadPartTag = "upload.part";
}

/// What kind of object a stored record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Assistant,
    Thread,
    Message,
    Run,
    RunStep,
    /// A run's conversation with its model (internal, never served).
    Transcript,
    /// An Upload (`/v1/uploads`); its Parts are bytes on disk, not records.
    Upload,
    VectorStore,
    /// A file in a vector store (keyed by store and file).
    VectorStoreFile,
    FileBatch,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Assistant => "assistant",
            Kind::Thread => "thread",
            Kind::Message => "thread.message",
            Kind::Run => "thread.run",
            Kind::RunStep => "thread.run.step",
            Kind::Transcript => "oasis.transcript",
            Kind::Upload => "upload",
            Kind::VectorStore => "vector_store",
            Kind::VectorStoreFile => "vector_store.file",
            Kind::FileBatch => "vector_store.files_batch",
        }
    }

    /// The noun OpenAI's "No … found with id" messages use.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Assistant => "assistant",
            Kind::Thread => "thread",
            Kind::Message => "message",
            Kind::Run => "run",
            Kind::RunStep => "run step",
            Kind::Transcript => "transcript",
            Kind::Upload => "upload",
            Kind::VectorStore => "vector store",
            Kind::VectorStoreFile => "vector store file",
            Kind::FileBatch => "file batch",
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "File")]
pub struct FileObject {
    pub id: String,
    pub object: FileTag,
    pub bytes: u64,
    pub created_at: i64,
    /// When the File expires (`created_at` + `expires_after.seconds`); null if it never does.
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    pub status: String,
    /// Deprecated by OpenAI and always null here, as OpenAI sends it.
    pub status_details: Option<String>,
}

impl FileObject {
    /// A new, processed file record.
    pub fn new(filename: String, purpose: String, bytes: u64) -> FileObject {
        FileObject {
            id: new_id("file-"),
            object: FileTag,
            bytes,
            created_at: now(),
            expires_at: None,
            filename,
            purpose,
            status: "processed".into(),
            status_details: None,
        }
    }

    /// Whether the File has expired by `now` (then it is as gone as a deleted one).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
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

/// An Upload (`/v1/uploads`): a File sent in Parts, which becomes one File when completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Upload {
    pub id: String,
    pub object: UploadTag,
    /// The number of bytes the Parts must add up to.
    pub bytes: u64,
    pub created_at: i64,
    /// An hour after `created_at`: a pending Upload then expires, and its Parts are deleted.
    pub expires_at: i64,
    pub filename: String,
    pub purpose: String,
    pub status: UploadStatus,
    /// The File made from the Parts, once completed.
    pub file: Option<FileObject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    Pending,
    Completed,
    Cancelled,
    Expired,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Pending => "pending",
            UploadStatus::Completed => "completed",
            UploadStatus::Cancelled => "cancelled",
            UploadStatus::Expired => "expired",
        }
    }
}

/// An Upload as stored: the object served, and how long its File is to live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredUpload {
    #[serde(flatten)]
    pub upload: Upload,
    /// `expires_after.seconds` of the request: the File expires this long after it is made.
    #[serde(default)]
    pub file_expires_after: Option<i64>,
}

impl Object for StoredUpload {
    const KIND: Kind = Kind::Upload;
    fn id(&self) -> &str {
        &self.upload.id
    }
    fn created_at(&self) -> i64 {
        self.upload.created_at
    }
}

/// A Part of an Upload: a chunk of its bytes (kept on disk until the Upload ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UploadPart {
    pub id: String,
    pub object: UploadPartTag,
    pub created_at: i64,
    pub upload_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    CodeInterpreter,
    FileSearch {
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "object_only"
        )]
        file_search: Option<FileSearchOptions>,
    },
    Function {
        function: FunctionDef,
    },
}

/// An optional struct read only from a JSON object (serde would also take an array, filling
/// the fields in order).
fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    let map: Option<serde_json::Map<String, serde_json::Value>> = Option::deserialize(d)?;
    map.map(|m| serde_json::from_value(serde_json::Value::Object(m)).map_err(D::Error::custom))
        .transpose()
}

/// The `file_search` tool's overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSearchOptions {
    /// How many passages a search returns at most: 1 to 50 (20 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub max_num_results: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking_options: Option<RankingOptions>,
}

impl FileSearchOptions {
    /// The passages a search returns at most.
    pub fn max_results(&self) -> usize {
        self.max_num_results.unwrap_or(20).clamp(1, 50) as usize
    }
}

/// How a file search ranks: the ranker and the lowest score kept (0 to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RankingOptions {
    #[serde(default)]
    pub ranker: Ranker,
    #[schemars(range(min = 0, max = 1))]
    pub score_threshold: f32,
}

/// `auto` is Oasis's one ranker, `default_2024_08_21` (hybrid BM25 + vectors, fused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Ranker {
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "default_2024_08_21")]
    Default20240821,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionDef {
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_-]{1,64}$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_interpreter: Option<CodeInterpreterResources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_search: Option<FileSearchResources>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CodeInterpreterResources {
    /// Files (which must exist) copied into /mnt/data.
    #[serde(default)]
    #[schemars(length(max = 20))]
    pub file_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileSearchResources {
    /// The vector store file_search searches (at most one, which must exist).
    #[serde(default)]
    #[schemars(length(max = 1))]
    pub vector_store_ids: Vec<String>,
    /// OpenAI's helper that creates a vector store from files (at most one): read on
    /// create, when the store is made and its id put in `vector_store_ids`; never stored or
    /// served.
    #[serde(default, skip_serializing)]
    #[schemars(length(max = 1))]
    pub vector_stores: Option<Vec<VectorStoreHelper>>,
}

/// One entry of OpenAI's `vector_stores` helper.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorStoreHelper {
    /// Files (which must exist) to add; at most 10,000.
    #[serde(default)]
    #[schemars(length(max = 10000))]
    pub file_ids: Vec<String>,
    #[serde(default)]
    pub chunking_strategy: Option<ChunkingParam>,
    #[serde(default)]
    #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assistant {
    pub id: String,
    pub object: AssistantTag,
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
    pub response_format: ResponseFormatOption,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Thread {
    pub id: String,
    pub object: ThreadTag,
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

/// The link target for a file under `/mnt/data`: `sandbox:/mnt/data/<path>` with the
/// characters that would end or break a markdown link (spaces, brackets, quotes, `%`)
/// percent-encoded, so the run's link scanner finds it and decodes it back to `relative`.
pub fn sandbox_link(relative: &str) -> String {
    const ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'(')
        .add(b')')
        .add(b'[')
        .add(b']')
        .add(b'<')
        .add(b'>')
        .add(b'"')
        .add(b'\'')
        .add(b'`')
        .add(b'%')
        .add(b'#')
        .add(b'?');
    let path: String = relative
        .split('/')
        .map(|c| percent_encoding::utf8_percent_encode(c, ESCAPE).to_string())
        .collect::<Vec<_>>()
        .join("/");
    format!("sandbox:/mnt/data/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_tags_are_their_one_string() {
        assert_eq!(
            serde_json::to_value(RunStepTag).unwrap(),
            json!("thread.run.step")
        );
        assert_eq!(
            serde_json::from_value::<MessageTag>(json!("thread.message")).unwrap(),
            MessageTag
        );
        assert!(serde_json::from_value::<MessageTag>(json!("thread.run")).is_err());
    }
}
