//! Runs: status, required action, tool choice, truncation, usage.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{IncompleteDetails, Kind, Metadata, Object, RunTag, Tool};

/// A run's status; `orchestrator::state::transition` is the only way it changes.
///
/// `queued → in_progress → (requires_action ⇄ queued) → completed | incomplete | failed |
/// cancelling → cancelled | expired`, as OpenAI's runs behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
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

/// What a run waits for in `requires_action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequiredAction {
    SubmitToolOutputs {
        submit_tool_outputs: SubmitToolOutputs,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubmitToolOutputs {
    pub tool_calls: Vec<RequiredToolCall>,
}

/// A function call a run waits for the output of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RequiredToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: RequiredFunction,
}

/// The `type` of a function tool call: always `function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FunctionType {
    Function,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// In a schema: what the wire form reads.
impl JsonSchema for ToolChoiceOption {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ToolChoice".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ToolChoiceWire::json_schema(g)
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum ToolChoiceWire {
    Mode(ToolChoiceMode),
    Named(NamedTool),
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
enum NamedTool {
    Function { function: FunctionName },
    CodeInterpreter,
    FileSearch,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct FunctionName {
    #[schemars(length(min = 1))]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LastError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// `{"type": "auto"}` (an optional `last_messages` is ignored) or `{"type": "last_messages",
/// "last_messages": n}` with n ≥ 1: what `api` accepts and what a run shows.
impl JsonSchema for Truncation {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TruncationStrategy".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {
                    "type": "object", "required": ["type"],
                    "properties": {
                        "type": {"const": "auto"},
                        "last_messages": {"type": ["integer", "null"], "minimum": 0,
                                          "maximum": u64::MAX}
                    }
                },
                {
                    "type": "object", "required": ["type", "last_messages"],
                    "properties": {
                        "type": {"const": "last_messages"},
                        "last_messages": {"type": "integer", "minimum": 1, "maximum": u64::MAX}
                    }
                }
            ]
        })
    }
}

/// A run's or assistant's `response_format`: `"auto"`, or the format the model must answer in
/// (OpenAI's `AssistantsApiResponseFormatOption`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormatOption {
    #[default]
    Auto,
    Format(ResponseFormat),
}

impl Serialize for ResponseFormatOption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResponseFormatOption::Auto => s.serialize_str("auto"),
            ResponseFormatOption::Format(f) => f.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ResponseFormatOption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) if s == "auto" => Ok(ResponseFormatOption::Auto),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(ResponseFormatOption::Format)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected 'auto' or an object whose 'type' is 'text', 'json_object' or \
                 'json_schema'",
            )),
        }
    }
}

impl JsonSchema for ResponseFormatOption {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResponseFormatOption".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let format = g.subschema_for::<ResponseFormat>();
        schemars::json_schema!({"anyOf": [{"type": "string", "const": "auto"}, format]})
    }
}

/// The three formats OpenAI's `response_format` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    /// Plain text.
    Text {},
    /// Any JSON object.
    JsonObject {},
    /// JSON that follows a schema.
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// a-z, A-Z, 0-9, `_` and `-`; at most 64.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_-]{1,64}$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ResponseFormatOption {
    /// The format to ask an upstream model for, if any (`auto` and `text` ask for none).
    pub fn upstream(&self) -> Option<&ResponseFormat> {
        match self {
            ResponseFormatOption::Format(
                f @ (ResponseFormat::JsonObject {} | ResponseFormat::JsonSchema { .. }),
            ) => Some(f),
            _ => None,
        }
    }

    /// Whether a JSON-schema format's name is one OpenAI allows.
    pub fn name_is_valid(&self) -> bool {
        match self {
            ResponseFormatOption::Format(ResponseFormat::JsonSchema { json_schema }) => {
                let n = &json_schema.name;
                !n.is_empty()
                    && n.len() <= 64
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }
            _ => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    pub incomplete_details: Option<IncompleteDetails>,
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
    pub response_format: ResponseFormatOption,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
