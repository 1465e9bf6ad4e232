//! Stream events of runs (`thread.run.*`, `thread.run.step.*`, `thread.message.*`), fanned out
//! to whoever streams a run. Events are not stored: polling reads the stored objects, streaming
//! reads these, and both describe the same changes.
//!
//! [`StreamEvent`] has one variant per event OpenAI's Assistants streams send, named as OpenAI
//! named it, with typed data: the objects themselves, or typed deltas.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::state::RunStatus;
use crate::model::{
    Annotation, CodeOutput, Message, Run, RunStep, StepDetails, StepStatus, Thread,
};

/// One server-sent event of a run stream: its name (`event`) and its data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "data")]
pub enum StreamEvent {
    #[serde(rename = "thread.created")]
    ThreadCreated(Box<Thread>),
    #[serde(rename = "thread.run.created")]
    RunCreated(Box<Run>),
    #[serde(rename = "thread.run.queued")]
    RunQueued(Box<Run>),
    #[serde(rename = "thread.run.in_progress")]
    RunInProgress(Box<Run>),
    #[serde(rename = "thread.run.requires_action")]
    RunRequiresAction(Box<Run>),
    #[serde(rename = "thread.run.completed")]
    RunCompleted(Box<Run>),
    #[serde(rename = "thread.run.incomplete")]
    RunIncomplete(Box<Run>),
    #[serde(rename = "thread.run.failed")]
    RunFailed(Box<Run>),
    #[serde(rename = "thread.run.cancelling")]
    RunCancelling(Box<Run>),
    #[serde(rename = "thread.run.cancelled")]
    RunCancelled(Box<Run>),
    #[serde(rename = "thread.run.expired")]
    RunExpired(Box<Run>),
    #[serde(rename = "thread.run.step.created")]
    StepCreated(Box<RunStep>),
    #[serde(rename = "thread.run.step.in_progress")]
    StepInProgress(Box<RunStep>),
    #[serde(rename = "thread.run.step.delta")]
    StepDelta(StepDelta),
    #[serde(rename = "thread.run.step.completed")]
    StepCompleted(Box<RunStep>),
    #[serde(rename = "thread.run.step.failed")]
    StepFailed(Box<RunStep>),
    #[serde(rename = "thread.run.step.cancelled")]
    StepCancelled(Box<RunStep>),
    #[serde(rename = "thread.run.step.expired")]
    StepExpired(Box<RunStep>),
    #[serde(rename = "thread.message.created")]
    MessageCreated(Box<Message>),
    #[serde(rename = "thread.message.in_progress")]
    MessageInProgress(Box<Message>),
    #[serde(rename = "thread.message.delta")]
    MessageDelta(MessageDelta),
    #[serde(rename = "thread.message.completed")]
    MessageCompleted(Box<Message>),
    #[serde(rename = "thread.message.incomplete")]
    MessageIncomplete(Box<Message>),
    /// The stream cannot go on (e.g. the run's thread was deleted).
    #[serde(rename = "error")]
    Error(ErrorEvent),
}

impl StreamEvent {
    /// The event's name, as OpenAI's streams name it.
    pub fn name(&self) -> &'static str {
        use StreamEvent::*;
        match self {
            ThreadCreated(_) => "thread.created",
            RunCreated(_) => "thread.run.created",
            RunQueued(_) => "thread.run.queued",
            RunInProgress(_) => "thread.run.in_progress",
            RunRequiresAction(_) => "thread.run.requires_action",
            RunCompleted(_) => "thread.run.completed",
            RunIncomplete(_) => "thread.run.incomplete",
            RunFailed(_) => "thread.run.failed",
            RunCancelling(_) => "thread.run.cancelling",
            RunCancelled(_) => "thread.run.cancelled",
            RunExpired(_) => "thread.run.expired",
            StepCreated(_) => "thread.run.step.created",
            StepInProgress(_) => "thread.run.step.in_progress",
            StepDelta(_) => "thread.run.step.delta",
            StepCompleted(_) => "thread.run.step.completed",
            StepFailed(_) => "thread.run.step.failed",
            StepCancelled(_) => "thread.run.step.cancelled",
            StepExpired(_) => "thread.run.step.expired",
            MessageCreated(_) => "thread.message.created",
            MessageInProgress(_) => "thread.message.in_progress",
            MessageDelta(_) => "thread.message.delta",
            MessageCompleted(_) => "thread.message.completed",
            MessageIncomplete(_) => "thread.message.incomplete",
            Error(_) => "error",
        }
    }

    /// The event's data as JSON.
    pub fn data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut o)) => o.remove("data").unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    /// The event without its search results' text, which is shown only to a request that
    /// includes `step_details.tool_calls[*].file_search.results[*].content`.
    pub fn without_result_content(self) -> StreamEvent {
        use StreamEvent::*;
        let strip = |s: Box<RunStep>| Box::new(s.without_result_content());
        match self {
            StepCompleted(s) => StepCompleted(strip(s)),
            StepFailed(s) => StepFailed(strip(s)),
            StepCancelled(s) => StepCancelled(strip(s)),
            StepExpired(s) => StepExpired(strip(s)),
            StepCreated(s) => StepCreated(strip(s)),
            StepInProgress(s) => StepInProgress(strip(s)),
            other => other,
        }
    }

    /// A stream ends after the run's terminal event or `requires_action`.
    pub fn ends_stream(&self) -> bool {
        use StreamEvent::*;
        matches!(
            self,
            RunCompleted(_)
                | RunIncomplete(_)
                | RunFailed(_)
                | RunCancelled(_)
                | RunExpired(_)
                | RunRequiresAction(_)
                | Error(_)
        )
    }

    /// The event that says a run is now in `run.status`.
    pub fn run(run: &Run) -> StreamEvent {
        let r = Box::new(run.clone());
        match run.status {
            RunStatus::Queued => StreamEvent::RunQueued(r),
            RunStatus::InProgress => StreamEvent::RunInProgress(r),
            RunStatus::RequiresAction => StreamEvent::RunRequiresAction(r),
            RunStatus::Cancelling => StreamEvent::RunCancelling(r),
            RunStatus::Cancelled => StreamEvent::RunCancelled(r),
            RunStatus::Failed => StreamEvent::RunFailed(r),
            RunStatus::Completed => StreamEvent::RunCompleted(r),
            RunStatus::Incomplete => StreamEvent::RunIncomplete(r),
            RunStatus::Expired => StreamEvent::RunExpired(r),
        }
    }

    /// A step's `created` and `in_progress` events: its tool calls come as deltas, which
    /// carry every entry's `index`, so these show none.
    pub fn step_started(step: &RunStep) -> [StreamEvent; 2] {
        let mut s = step.clone();
        if let StepDetails::ToolCalls { tool_calls } = &mut s.step_details {
            tool_calls.clear();
        }
        [
            StreamEvent::StepCreated(Box::new(s.clone())),
            StreamEvent::StepInProgress(Box::new(s)),
        ]
    }

    /// The event that says a step ended in `step.status` (`None` while it is in progress).
    pub fn step_ended(step: &RunStep) -> Option<StreamEvent> {
        let s = Box::new(step.clone());
        Some(match step.status {
            StepStatus::Completed => StreamEvent::StepCompleted(s),
            StepStatus::Failed => StreamEvent::StepFailed(s),
            StepStatus::Cancelled => StreamEvent::StepCancelled(s),
            StepStatus::Expired => StreamEvent::StepExpired(s),
            StepStatus::InProgress => return None,
        })
    }

    /// A message's `created` and `in_progress` events: its content comes as deltas.
    pub fn message_started(message: &Message) -> [StreamEvent; 2] {
        let mut m = message.clone();
        m.content.clear();
        [
            StreamEvent::MessageCreated(Box::new(m.clone())),
            StreamEvent::MessageInProgress(Box::new(m)),
        ]
    }

    /// A `thread.run.step.delta` of step `step_id` with one tool call's delta.
    pub fn tool_call(step_id: &str, call: ToolCallDelta) -> StreamEvent {
        StreamEvent::StepDelta(StepDelta {
            id: step_id.to_string(),
            object: "thread.run.step.delta",
            delta: StepDeltaBody {
                step_details: StepDetailsDelta::ToolCalls {
                    tool_calls: vec![call],
                },
            },
        })
    }

    /// A `thread.message.delta` of message `message_id`.
    pub fn content(message_id: &str, content: Vec<ContentDelta>) -> StreamEvent {
        StreamEvent::MessageDelta(MessageDelta {
            id: message_id.to_string(),
            object: "thread.message.delta",
            delta: MessageDeltaBody { content },
        })
    }

    /// An `error` event with OpenAI's error body (a `server_error`).
    pub fn error(message: &str) -> StreamEvent {
        StreamEvent::Error(ErrorEvent {
            error: ErrorBody {
                message: message.to_string(),
                kind: "server_error",
                param: None,
                code: None,
            },
        })
    }
}

/// `thread.run.step.delta` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDelta {
    pub id: String,
    pub object: &'static str,
    pub delta: StepDeltaBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDeltaBody {
    pub step_details: StepDetailsDelta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepDetailsDelta {
    ToolCalls { tool_calls: Vec<ToolCallDelta> },
}

/// One entry of a step delta's `tool_calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallDelta {
    pub index: usize,
    /// Sent with a call's first delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub call: CallDelta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallDelta {
    CodeInterpreter {
        code_interpreter: CodeDelta,
    },
    Function {
        function: FunctionDelta,
    },
    /// A search's creation: `{}` (its results show on the step once it completes).
    FileSearch {
        file_search: serde_json::Map<String, serde_json::Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CodeDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<Indexed<CodeOutput>>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// `Some(None)` sends `null` (a call's first delta: no output yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Option<String>>,
}

/// An array entry of a delta, with the `index` every entry carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Indexed<T> {
    pub index: usize,
    #[serde(flatten)]
    pub value: T,
}

/// Number each entry by its place.
pub fn indexed<T>(items: impl IntoIterator<Item = T>) -> Vec<Indexed<T>> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, value)| Indexed { index, value })
        .collect()
}

/// `thread.message.delta` data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDelta {
    pub id: String,
    pub object: &'static str,
    pub delta: MessageDeltaBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDeltaBody {
    pub content: Vec<ContentDelta>,
}

/// One entry of a message delta's `content`.
pub type ContentDelta = Indexed<ContentPartDelta>;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPartDelta {
    Text { text: TextDelta },
    ImageFile { image_file: ImageFileDelta },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TextDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Indexed<Annotation>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageFileDelta {
    pub file_id: String,
}

/// `error` data: OpenAI's error body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEvent {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// A run's events as they happen.
pub type EventStream = UnboundedReceiver<StreamEvent>;

#[derive(Default)]
pub struct Hub {
    subs: Mutex<HashMap<String, Vec<UnboundedSender<StreamEvent>>>>,
}

impl Hub {
    /// Receive every later event of `run_id`.
    pub fn subscribe(&self, run_id: &str) -> EventStream {
        let (tx, rx) = unbounded_channel();
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    /// Drop the subscriptions of a run that will send nothing (its creation failed).
    pub fn forget(&self, run_id: &str) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }

    pub fn emit(&self, run_id: &str, ev: StreamEvent) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = subs.get_mut(run_id) else {
            return;
        };
        let ends = ev.ends_stream();
        list.retain(|tx| tx.send(ev.clone()).is_ok());
        // A stream is over at its end event; the next stream subscribes anew.
        if list.is_empty() || ends {
            subs.remove(run_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenAI's `AssistantStreamEvent` names (openai-openapi, `openapi.yaml`), with `done`
    /// (sent by the API layer after the end).
    const OPENAI_EVENTS: &[&str] = &[
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.requires_action",
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelling",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.step.completed",
        "thread.run.step.failed",
        "thread.run.step.cancelled",
        "thread.run.step.expired",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.completed",
        "thread.message.incomplete",
        "error",
        "done",
    ];

    /// OpenAI's streams end at these (the SDKs stop reading a run's stream there).
    const OPENAI_ENDS: &[&str] = &[
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.requires_action",
        "error",
    ];

    fn one_of_each() -> Vec<StreamEvent> {
        let run: Run = serde_json::from_value(serde_json::json!({
            "id": "run_1", "object": "thread.run", "created_at": 1, "thread_id": "thread_1",
            "assistant_id": "asst_1", "status": "queued", "required_action": null,
            "last_error": null, "expires_at": null, "started_at": null, "cancelled_at": null,
            "failed_at": null, "completed_at": null, "incomplete_details": null, "model": "m",
            "instructions": "", "tools": [], "metadata": {}, "usage": null, "temperature": null,
            "top_p": null, "max_prompt_tokens": null, "max_completion_tokens": null,
            "truncation_strategy": {"type": "auto", "last_messages": null},
            "tool_choice": "auto", "parallel_tool_calls": true, "response_format": "auto"
        }))
        .unwrap();
        let mut out = vec![];
        for status in [
            RunStatus::Queued,
            RunStatus::InProgress,
            RunStatus::RequiresAction,
            RunStatus::Cancelling,
            RunStatus::Cancelled,
            RunStatus::Failed,
            RunStatus::Completed,
            RunStatus::Incomplete,
            RunStatus::Expired,
        ] {
            let mut r = run.clone();
            r.status = status;
            out.push(StreamEvent::run(&r));
        }
        out.push(StreamEvent::RunCreated(Box::new(run)));
        let step: RunStep = serde_json::from_value(serde_json::json!({
            "id": "step_1", "object": "thread.run.step", "created_at": 1,
            "assistant_id": "asst_1", "thread_id": "thread_1", "run_id": "run_1",
            "type": "tool_calls", "status": "in_progress",
            "step_details": {"type": "tool_calls", "tool_calls": []}, "last_error": null,
            "expired_at": null, "cancelled_at": null, "failed_at": null, "completed_at": null,
            "metadata": {}, "usage": null
        }))
        .unwrap();
        out.extend(StreamEvent::step_started(&step));
        for status in [
            StepStatus::Completed,
            StepStatus::Failed,
            StepStatus::Cancelled,
            StepStatus::Expired,
        ] {
            let mut s = step.clone();
            s.status = status;
            out.extend(StreamEvent::step_ended(&s));
        }
        out.push(StreamEvent::tool_call(
            "step_1",
            ToolCallDelta {
                index: 0,
                id: None,
                call: CallDelta::Function {
                    function: FunctionDelta::default(),
                },
            },
        ));
        let message: Message = serde_json::from_value(serde_json::json!({
            "id": "msg_1", "object": "thread.message", "created_at": 1, "thread_id": "thread_1",
            "status": "in_progress", "incomplete_details": null, "completed_at": null,
            "incomplete_at": null, "role": "assistant", "content": [], "assistant_id": null,
            "run_id": null, "attachments": [], "metadata": {}
        }))
        .unwrap();
        out.extend(StreamEvent::message_started(&message));
        out.push(StreamEvent::content("msg_1", vec![]));
        out.push(StreamEvent::MessageCompleted(Box::new(message.clone())));
        out.push(StreamEvent::MessageIncomplete(Box::new(message)));
        let thread: Thread = serde_json::from_value(serde_json::json!({
            "id": "thread_1", "object": "thread", "created_at": 1,
            "tool_resources": {}, "metadata": {}
        }))
        .unwrap();
        out.push(StreamEvent::ThreadCreated(Box::new(thread)));
        out.push(StreamEvent::error("gone"));
        out
    }

    #[test]
    fn every_event_is_one_of_openais_and_ends_the_stream_where_openais_do() {
        let events = one_of_each();
        let mut names: Vec<&str> = events.iter().map(StreamEvent::name).collect();
        names.sort();
        names.dedup();
        // Every OpenAI event (but `done`, the API layer's) has a variant, and no other.
        let mut openai: Vec<&str> = OPENAI_EVENTS
            .iter()
            .copied()
            .filter(|e| *e != "done")
            .collect();
        openai.sort();
        assert_eq!(names, openai);
        for e in &events {
            // The serialized tag is the name.
            let v = serde_json::to_value(e).unwrap();
            assert_eq!(v["event"], e.name());
            assert_eq!(
                e.ends_stream(),
                OPENAI_ENDS.contains(&e.name()),
                "{}",
                e.name()
            );
        }
    }

    #[test]
    fn deltas_serialize_as_openai_sends_them() {
        let created = StreamEvent::tool_call(
            "step_1",
            ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                call: CallDelta::Function {
                    function: FunctionDelta {
                        name: Some("f".into()),
                        arguments: Some(String::new()),
                        output: Some(None),
                    },
                },
            },
        );
        assert_eq!(
            created.data(),
            serde_json::json!({"id": "step_1", "object": "thread.run.step.delta", "delta": {
                "step_details": {"type": "tool_calls", "tool_calls": [{"index": 0, "id": "call_1",
                    "type": "function", "function": {"name": "f", "arguments": "", "output": null}}]}}})
        );
        let text = StreamEvent::content(
            "msg_1",
            vec![Indexed {
                index: 1,
                value: ContentPartDelta::Text {
                    text: TextDelta {
                        value: Some("hi".into()),
                        annotations: None,
                    },
                },
            }],
        );
        assert_eq!(
            text.data(),
            serde_json::json!({"id": "msg_1", "object": "thread.message.delta", "delta": {
                "content": [{"index": 1, "type": "text", "text": {"value": "hi"}}]}})
        );
    }
}
