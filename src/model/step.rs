//! Run steps: message creation and tool calls.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Kind, LastError, Metadata, Object, Run, RunStepTag, RunUsage, new_id, now};

/// A run step's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    InProgress,
    Cancelled,
    Failed,
    Completed,
    Expired,
}

/// A run step's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    MessageCreation,
    ToolCalls,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepDetails {
    MessageCreation { message_creation: MessageCreation },
    ToolCalls { tool_calls: Vec<StepToolCall> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageCreation {
    pub message_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    FileSearch {
        id: String,
        file_search: FileSearchCall,
    },
}

impl StepToolCall {
    pub fn id(&self) -> &str {
        match self {
            StepToolCall::CodeInterpreter { id, .. }
            | StepToolCall::Function { id, .. }
            | StepToolCall::FileSearch { id, .. } => id,
        }
    }

    /// The step without its search results' text (shown only when a request includes
    /// `step_details.tool_calls[*].file_search.results[*].content`).
    pub fn without_result_content(mut self) -> StepToolCall {
        if let StepToolCall::FileSearch { file_search, .. } = &mut self {
            for r in &mut file_search.results {
                r.content = None;
            }
        }
        self
    }
}

/// A `file_search` call: how it ranked and what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileSearchCall {
    pub ranking_options: FileSearchRanking,
    pub results: Vec<FileSearchResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileSearchRanking {
    pub ranker: crate::model::Ranker,
    pub score_threshold: f32,
}

/// One passage a search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FileSearchResult {
    pub file_id: String,
    pub file_name: String,
    pub score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<SearchText>>,
}

/// `{type: "text", text}` of a search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SearchText {
    Text { text: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CodeInterpreterCall {
    pub input: String,
    pub outputs: Vec<CodeOutput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CodeOutput {
    Logs { logs: String },
    Image { image: ImageRef },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRef {
    pub file_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    /// The step without its search results' text (see [`StepToolCall::without_result_content`]).
    pub fn without_result_content(mut self) -> RunStep {
        if let StepDetails::ToolCalls { tool_calls } = &mut self.step_details {
            *tool_calls = std::mem::take(tool_calls)
                .into_iter()
                .map(StepToolCall::without_result_content)
                .collect();
        }
        self
    }

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
