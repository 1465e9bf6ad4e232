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
}

impl StepToolCall {
    pub fn id(&self) -> &str {
        match self {
            StepToolCall::CodeInterpreter { id, .. } | StepToolCall::Function { id, .. } => id,
        }
    }
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
