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
    pub object: FileTag,
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
    /// OpenAI's helper that creates a vector store from files: read only to be refused
    /// (Oasis has no vector stores), never stored or served.
    #[serde(default, skip_serializing)]
    pub vector_stores: Option<Vec<VectorStoreHelper>>,
}

/// One entry of OpenAI's `vector_stores` helper (its other fields are not read).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct VectorStoreHelper {
    #[serde(default)]
    pub file_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub annotations: Vec<Annotation>,
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
    pub object: MessageTag,
    pub created_at: i64,
    pub thread_id: String,
    pub status: MessageStatus,
    pub incomplete_details: Option<serde_json::Value>,
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

/// A run's status; `orchestrator::state::transition` is the only way it changes.
///
/// `queued → in_progress → (requires_action ⇄ queued) → completed | incomplete | failed |
/// cancelling → cancelled | expired`, as OpenAI's runs behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    InProgress,
    RequiresAction,
    Cancelling,
    Cancelled,
    Failed,
    Completed,
    Incomplete,
    Expired,
}

impl RunStatus {
    /// No further change is possible.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Cancelled
                | RunStatus::Failed
                | RunStatus::Completed
                | RunStatus::Incomplete
                | RunStatus::Expired
        )
    }

    /// The run holds its thread's lock (no messages may be added, no other run started).
    pub fn locks_thread(self) -> bool {
        !self.is_terminal()
    }
}

/// A message's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    InProgress,
    Incomplete,
    Completed,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

/// A run step's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    InProgress,
    Cancelled,
    Failed,
    Completed,
    Expired,
}

/// A run step's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    MessageCreation,
    ToolCalls,
}

/// What a run waits for in `requires_action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequiredAction {
    SubmitToolOutputs {
        submit_tool_outputs: SubmitToolOutputs,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitToolOutputs {
    pub tool_calls: Vec<RequiredToolCall>,
}

/// A function call a run waits for the output of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequiredToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: RequiredFunction,
}

/// The `type` of a function tool call: always `function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionType {
    Function,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequiredFunction {
    pub name: String,
    pub arguments: String,
}

impl RequiredAction {
    /// The calls a run in `requires_action` waits for.
    pub fn tool_calls(&self) -> &[RequiredToolCall] {
        match self {
            RequiredAction::SubmitToolOutputs {
                submit_tool_outputs,
            } => &submit_tool_outputs.tool_calls,
        }
    }
}

/// A text part's annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRef {
    pub file_id: String,
}

/// A run's `tool_choice`: how freely the model may call tools, or the one tool it must call.
/// On the wire: `"none"`, `"auto"`, `"required"`, `{"type": "function", "function": {"name":
/// …}}`, `{"type": "code_interpreter"}` or `{"type": "file_search"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoiceOption {
    None,
    #[default]
    Auto,
    Required,
    Function(String),
    CodeInterpreter,
    FileSearch,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ToolChoiceWire {
    Mode(ToolChoiceMode),
    Named(NamedTool),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum NamedTool {
    Function { function: FunctionName },
    CodeInterpreter,
    FileSearch,
}

#[derive(Serialize, Deserialize)]
struct FunctionName {
    name: String,
}

impl Serialize for ToolChoiceOption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            ToolChoiceOption::None => ToolChoiceWire::Mode(ToolChoiceMode::None),
            ToolChoiceOption::Auto => ToolChoiceWire::Mode(ToolChoiceMode::Auto),
            ToolChoiceOption::Required => ToolChoiceWire::Mode(ToolChoiceMode::Required),
            ToolChoiceOption::Function(name) => ToolChoiceWire::Named(NamedTool::Function {
                function: FunctionName { name: name.clone() },
            }),
            ToolChoiceOption::CodeInterpreter => ToolChoiceWire::Named(NamedTool::CodeInterpreter),
            ToolChoiceOption::FileSearch => ToolChoiceWire::Named(NamedTool::FileSearch),
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolChoiceOption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match ToolChoiceWire::deserialize(d)? {
            ToolChoiceWire::Mode(ToolChoiceMode::None) => ToolChoiceOption::None,
            ToolChoiceWire::Mode(ToolChoiceMode::Auto) => ToolChoiceOption::Auto,
            ToolChoiceWire::Mode(ToolChoiceMode::Required) => ToolChoiceOption::Required,
            ToolChoiceWire::Named(NamedTool::Function { function })
                if !function.name.is_empty() =>
            {
                ToolChoiceOption::Function(function.name)
            }
            ToolChoiceWire::Named(NamedTool::Function { .. }) => {
                return Err(serde::de::Error::custom(
                    "a function tool_choice needs a name",
                ));
            }
            ToolChoiceWire::Named(NamedTool::CodeInterpreter) => ToolChoiceOption::CodeInterpreter,
            ToolChoiceWire::Named(NamedTool::FileSearch) => ToolChoiceOption::FileSearch,
        })
    }
}

/// `{code, message}` of a failed run or step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl RunUsage {
    pub fn add(&mut self, prompt: u64, completion: u64) {
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truncation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub last_messages: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub object: RunTag,
    pub created_at: i64,
    pub thread_id: String,
    pub assistant_id: String,
    pub status: RunStatus,
    pub required_action: Option<RequiredAction>,
    pub last_error: Option<LastError>,
    pub expires_at: Option<i64>,
    pub started_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub incomplete_details: Option<serde_json::Value>,
    pub model: String,
    pub instructions: String,
    pub tools: Vec<Tool>,
    pub metadata: Metadata,
    pub usage: Option<RunUsage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_prompt_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub truncation_strategy: Truncation,
    pub tool_choice: ToolChoiceOption,
    pub parallel_tool_calls: bool,
    pub response_format: serde_json::Value,
}

impl Object for Run {
    const KIND: Kind = Kind::Run;
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepDetails {
    MessageCreation { message_creation: MessageCreation },
    ToolCalls { tool_calls: Vec<StepToolCall> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageCreation {
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepToolCall {
    CodeInterpreter {
        id: String,
        code_interpreter: CodeInterpreterCall,
    },
    Function {
        id: String,
        function: FunctionCall,
    },
}

impl StepToolCall {
    pub fn id(&self) -> &str {
        match self {
            StepToolCall::CodeInterpreter { id, .. } | StepToolCall::Function { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeInterpreterCall {
    pub input: String,
    pub outputs: Vec<CodeOutput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CodeOutput {
    Logs { logs: String },
    Image { image: ImageRef },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRef {
    pub file_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    pub id: String,
    pub object: RunStepTag,
    pub created_at: i64,
    pub assistant_id: String,
    pub thread_id: String,
    pub run_id: String,
    #[serde(rename = "type")]
    pub kind: StepType,
    pub status: StepStatus,
    pub step_details: StepDetails,
    pub last_error: Option<LastError>,
    pub expired_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub metadata: Metadata,
    pub usage: Option<RunUsage>,
}

impl RunStep {
    /// A new, in-progress step of `run` (usage shows once it ends).
    pub fn start(run: &Run, step_details: StepDetails) -> RunStep {
        let kind = match step_details {
            StepDetails::MessageCreation { .. } => StepType::MessageCreation,
            StepDetails::ToolCalls { .. } => StepType::ToolCalls,
        };
        RunStep {
            id: new_id("step_"),
            object: RunStepTag,
            created_at: now(),
            assistant_id: run.assistant_id.clone(),
            thread_id: run.thread_id.clone(),
            run_id: run.id.clone(),
            kind,
            status: StepStatus::InProgress,
            step_details,
            last_error: None,
            expired_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: None,
            metadata: Default::default(),
            usage: None,
        }
    }
}

impl Object for RunStep {
    const KIND: Kind = Kind::RunStep;
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

    #[test]
    fn tool_choice_reads_and_writes_openais_forms_and_nothing_else() {
        for (wire, typed) in [
            (json!("none"), ToolChoiceOption::None),
            (json!("auto"), ToolChoiceOption::Auto),
            (json!("required"), ToolChoiceOption::Required),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                ToolChoiceOption::Function("f".into()),
            ),
            (
                json!({"type": "code_interpreter"}),
                ToolChoiceOption::CodeInterpreter,
            ),
            (json!({"type": "file_search"}), ToolChoiceOption::FileSearch),
        ] {
            let read: ToolChoiceOption = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(read, typed);
            assert_eq!(serde_json::to_value(&typed).unwrap(), wire);
        }
        for bad in [
            json!("sometimes"),
            json!(5),
            json!({"type": "function"}),
            json!({"type": "function", "function": {"name": ""}}),
            json!({"type": "retrieval"}),
        ] {
            assert!(
                serde_json::from_value::<ToolChoiceOption>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
