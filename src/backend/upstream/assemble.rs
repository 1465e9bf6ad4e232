//! An answer assembled from streamed chunks (or one non-streamed completion), passed on piece
//! by piece as [`ModelDelta`]s while it arrives.
//!
//! Text goes on as it comes, unless it could still be tool calls written as text (then a
//! [`Gate`] holds it back until it cannot, or until the end). A tool call is started
//! (`CallStarted`) as soon as its name and id are known (or its name and some arguments: then
//! it gets an id of ours), in the order of the server's `index`, and its arguments go on as
//! they arrive. The returned `tool_calls` are in the order the calls were started, so each
//! call's position is the `index` it was started with, and each call's `Arguments` pieces join
//! into its `arguments`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::error::{detail_of, malformed};
use super::text_calls::{Gate, TextCalls, Verdict};
use crate::backend::{
    BackendError, ChatMessage, ChatResponse, DeltaSink, FinishReason, ModelDelta, ToolCall, Usage,
    estimate_tokens,
};

/// The `tool_calls` slot a legacy `function_call` delta is assembled in.
const LEGACY_FUNCTION_CALL_INDEX: u64 = u64::MAX;

// ---- The wire ----------------------------------------------------------------------------

/// A streamed chunk.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// A whole (non-streamed) completion's relevant parts.
#[derive(Debug, Deserialize)]
pub(super) struct Completion {
    #[serde(default)]
    pub(super) choices: Option<Vec<CompletionChoice>>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
    #[serde(default)]
    pub(super) error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CompletionChoice {
    #[serde(default)]
    pub(super) message: Option<Delta>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

/// A streamed delta, or a non-streamed message.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Delta {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
    /// The deprecated single-function form.
    #[serde(default)]
    function_call: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A string (possibly a fragment); some servers send an object.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ModelList {
    pub(super) data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ModelEntry {
    pub(super) id: String,
}

// ---- Assembly ----------------------------------------------------------------------------

#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
    /// Its place in the answer's `tool_calls`, once started.
    position: Option<usize>,
    /// How many bytes of `arguments` were passed on.
    sent: usize,
}

impl PartialCall {
    /// Nothing but an index: dropped from the answer.
    fn is_empty(&self) -> bool {
        self.id.is_none() && self.name.is_empty() && self.arguments.trim().is_empty()
    }

    /// Known well enough to be started: a name, and an id or some arguments.
    fn can_start(&self) -> bool {
        !self.name.is_empty() && (self.id.is_some() || !self.arguments.is_empty())
    }
}

/// Assembles an answer from chunks, passing its pieces on as they become known.
#[derive(Debug, Default)]
pub(super) struct Assembler {
    text: String,
    /// By the server's `index`.
    calls: BTreeMap<u64, PartialCall>,
    /// How many calls were started.
    started: usize,
    /// Holds the text back while it could be calls written as text.
    gate: Option<Gate>,
    pub(super) finish_reason: Option<String>,
    pub(super) usage: Option<WireUsage>,
    /// `[DONE]` was seen (or the whole answer was read).
    pub(super) done: bool,
}

impl Assembler {
    /// `text_calls`: the tools whose calls written as text are recovered, if any.
    pub(super) fn new(text_calls: Option<TextCalls>) -> Assembler {
        Assembler {
            gate: text_calls.map(Gate::new),
            ..Assembler::default()
        }
    }

    /// Applies one event's data.
    pub(super) fn apply_event(
        &mut self,
        data: &str,
        sink: DeltaSink<'_>,
    ) -> Result<(), BackendError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| malformed(format!("an event was not understood ({e})")))?;
        if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
            return Err(BackendError::Server(format!(
                "the upstream model server reported an error mid-answer: {}",
                detail_of(&err)
            )));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) {
            if let Some(delta) = choice.delta {
                self.apply_delta(delta, sink);
            }
            self.set_finish_reason(choice.finish_reason);
        }
        Ok(())
    }

    pub(super) fn apply_delta(&mut self, delta: Delta, sink: DeltaSink<'_>) {
        if let Some(content) = delta.content {
            let text = content_text(&content);
            if !text.is_empty() {
                self.pass_text(&text, sink);
            }
        }
        let mut fragments = false;
        for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
            // A missing index: the call's place in this delta (0 for a lone call).
            let index = call.index.unwrap_or(position as u64);
            self.apply_call_fragment(index, call.id, call.function);
            fragments = true;
        }
        if let Some(function) = delta.function_call {
            self.apply_call_fragment(LEGACY_FUNCTION_CALL_INDEX, None, Some(function));
            fragments = true;
        }
        if fragments {
            if self.calls.values().any(|c| !c.is_empty()) {
                // Real calls: the text is text.
                self.release_text(sink);
            }
            self.pass_calls(sink);
        }
    }

    fn pass_text(&mut self, text: &str, sink: DeltaSink<'_>) {
        self.text.push_str(text);
        match &mut self.gate {
            None => sink(ModelDelta::Text(text)),
            Some(gate) => {
                if gate.feed(text) == Verdict::Release {
                    self.release_text(sink);
                }
            }
        }
    }

    /// Passes on the text held back, and the rest as it comes.
    fn release_text(&mut self, sink: DeltaSink<'_>) {
        if let Some(gate) = self.gate.take() {
            let held = gate.into_held();
            if !held.is_empty() {
                sink(ModelDelta::Text(&held));
            }
        }
    }

    fn apply_call_fragment(&mut self, index: u64, id: Option<String>, f: Option<FunctionDelta>) {
        let call = self.calls.entry(index).or_default();
        if call.id.is_none() {
            call.id = id.filter(|id| !id.is_empty());
        }
        let Some(f) = f else { return };
        if let Some(name) = f.name.filter(|n| !n.is_empty())
            && call.name.is_empty()
        {
            call.name = name;
        }
        match f.arguments {
            Some(Value::String(fragment)) => call.arguments.push_str(&fragment),
            Some(Value::Null) | None => {}
            Some(other) => call.arguments.push_str(&other.to_string()),
        }
    }

    /// Starts, in the server's order, the calls known well enough (stopping at the first one
    /// that is not), and passes on the arguments of started calls.
    fn pass_calls(&mut self, sink: DeltaSink<'_>) {
        for call in self.calls.values_mut() {
            if call.position.is_some() || call.is_empty() {
                continue;
            }
            if !call.can_start() {
                break;
            }
            start(call, &mut self.started, sink);
        }
        for call in self.calls.values_mut() {
            pass_arguments(call, sink);
        }
    }

    pub(super) fn set_finish_reason(&mut self, reason: Option<String>) {
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            self.finish_reason = Some(reason);
        }
    }

    /// The answer, its last pieces passed on; usage the server did not report is estimated.
    pub(super) fn finish(
        self,
        prompt: &[ChatMessage],
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, BackendError> {
        let Assembler {
            mut text,
            calls,
            mut started,
            gate,
            finish_reason,
            usage,
            done: _,
        } = self;
        if calls.values().any(|c| c.name.is_empty() && !c.is_empty()) {
            return Err(BackendError::Server(
                "the upstream model server sent a tool call without a function name".to_string(),
            ));
        }
        // Started calls in their order, then the others in the server's.
        let (mut ordered, rest): (Vec<PartialCall>, Vec<PartialCall>) = calls
            .into_values()
            .filter(|c| !c.is_empty())
            .partition(|c| c.position.is_some());
        ordered.sort_by_key(|c| c.position);
        ordered.extend(rest);
        let mut tool_calls = Vec::with_capacity(ordered.len());
        for mut call in ordered {
            if call.position.is_none() {
                start(&mut call, &mut started, sink);
            }
            debug_assert_eq!(call.position, Some(tool_calls.len()));
            if call.arguments.trim().is_empty() {
                // Nothing was passed on while blank.
                call.arguments = "{}".to_string();
            }
            pass_arguments(&mut call, sink);
            tool_calls.push(ToolCall {
                id: call.id.unwrap_or_default(),
                name: call.name,
                arguments: call.arguments,
            });
        }
        let completion_estimate = estimate_tokens(&text) + estimate_calls(&tool_calls);
        let mut recovered = false;
        if let Some(gate) = gate {
            match gate.recovered().filter(|_| tool_calls.is_empty()) {
                Some(calls) => {
                    for (index, (name, arguments)) in calls.into_iter().enumerate() {
                        let id = crate::model::new_id("call_");
                        sink(ModelDelta::CallStarted {
                            index,
                            id: &id,
                            name: &name,
                        });
                        sink(ModelDelta::Arguments {
                            index,
                            text: &arguments,
                        });
                        tool_calls.push(ToolCall {
                            id,
                            name,
                            arguments,
                        });
                    }
                    text.clear();
                    recovered = true;
                }
                None => {
                    let held = gate.into_held();
                    if !held.is_empty() {
                        sink(ModelDelta::Text(&held));
                    }
                }
            }
        }
        let finish = match finish_reason.as_deref() {
            _ if recovered => FinishReason::ToolCalls,
            Some("length") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            // Whatever the server said (some say `stop`), calls were made.
            _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        let usage = Usage {
            prompt_tokens: usage
                .and_then(|u| u.prompt_tokens)
                .unwrap_or_else(|| estimate_prompt(prompt)),
            completion_tokens: usage
                .and_then(|u| u.completion_tokens)
                .unwrap_or(completion_estimate),
        };
        Ok(ChatResponse {
            text,
            tool_calls,
            finish,
            usage,
        })
    }
}

/// Starts `call` as the answer's next call (with an id of ours if the server gave none).
fn start(call: &mut PartialCall, started: &mut usize, sink: DeltaSink<'_>) {
    let index = *started;
    let id = call.id.get_or_insert_with(|| crate::model::new_id("call_"));
    sink(ModelDelta::CallStarted {
        index,
        id,
        name: &call.name,
    });
    call.position = Some(index);
    *started += 1;
}

/// Passes on a started call's arguments not passed on yet (none while they are all blank: a
/// call with blank arguments has `{}`).
fn pass_arguments(call: &mut PartialCall, sink: DeltaSink<'_>) {
    let Some(index) = call.position else {
        return;
    };
    if call.sent < call.arguments.len() && (call.sent > 0 || !call.arguments.trim().is_empty()) {
        sink(ModelDelta::Arguments {
            index,
            text: &call.arguments[call.sent..],
        });
        call.sent = call.arguments.len();
    }
}

/// A message's text: a string, or the `text` of an array of content parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn estimate_calls(calls: &[ToolCall]) -> u64 {
    calls
        .iter()
        .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
        .sum()
}

fn estimate_prompt(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + estimate_calls(&m.tool_calls))
        .sum()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_server::{call_event, finish_event, text_event};
    use super::super::tests::Recorded;
    use super::*;
    use crate::backend::OwnedDelta;

    /// Assembles `events`, checking that the pieces passed on add up to the answer.
    fn assemble_recorded(events: &[Value]) -> (Result<ChatResponse, BackendError>, Recorded) {
        let recorded = Recorded::default();
        let result = {
            let sink = recorded.sink();
            let mut answer = Assembler::new(None);
            events
                .iter()
                .try_for_each(|event| answer.apply_event(&event.to_string(), &sink))
                .and_then(|()| answer.finish(&[], &sink))
        };
        if let Ok(answer) = &result {
            recorded.assert_adds_up_to(answer);
        }
        (result, recorded)
    }

    fn assemble(events: &[Value]) -> Result<ChatResponse, BackendError> {
        assemble_recorded(events).0
    }

    fn call(id: &str, name: &str) -> OwnedDelta {
        call_at(0, id, name)
    }

    fn call_at(index: usize, id: &str, name: &str) -> OwnedDelta {
        OwnedDelta::CallStarted {
            index,
            id: id.into(),
            name: name.into(),
        }
    }

    fn args(index: usize, text: &str) -> OwnedDelta {
        OwnedDelta::Arguments {
            index,
            text: text.into(),
        }
    }

    #[test]
    fn a_call_without_index_or_id_is_assembled_with_a_fresh_id() {
        let answer = assemble(&[
            call_event(json!([{"function": {"name": "f", "arguments": "{\"a\""}}])),
            call_event(json!([{"function": {"arguments": ": 1}"}}])),
        ])
        .unwrap();
        let [call] = &answer.tool_calls[..] else {
            panic!("{answer:?}");
        };
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("f", "{\"a\": 1}")
        );
        let tail = call.id.strip_prefix("call_").unwrap();
        assert_eq!(tail.len(), 24);
        assert!(tail.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(answer.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn whole_calls_in_one_chunk_are_taken_as_they_are() {
        let answer = assemble(&[
            call_event(json!([
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"x": 1}}},
                {"id": "c3", "type": "function", "function": {"name": "h"}},
            ])),
            finish_event("stop"),
        ])
        .unwrap();
        let calls: Vec<_> = answer
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("c1", "f", "{}"),
                ("c2", "g", r#"{"x":1}"#),
                ("c3", "h", "{}")
            ]
        );
        assert_eq!(answer.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn legacy_function_calls_are_tool_calls() {
        let delta = |f: Value| json!({"choices": [{"delta": {"function_call": f}}]});
        let answer = assemble(&[
            delta(json!({"name": "f", "arguments": "{\"a\":"})),
            delta(json!({"arguments": "2}"})),
            finish_event("function_call"),
        ])
        .unwrap();
        assert_eq!(answer.tool_calls.len(), 1);
        assert_eq!(answer.tool_calls[0].arguments, r#"{"a":2}"#);
        assert_eq!(answer.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn a_call_without_a_name_is_an_error() {
        let result = assemble(&[call_event(
            json!([{"index": 0, "function": {"arguments": "{}"}}]),
        )]);
        assert!(matches!(result, Err(BackendError::Server(_))), "{result:?}");
    }

    #[test]
    fn finish_reasons_are_mapped() {
        for (reason, expected) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("content_filter", FinishReason::ContentFilter),
            ("tool_calls", FinishReason::Stop), // but no call came
            ("eos", FinishReason::Stop),
        ] {
            let answer = assemble(&[text_event("x"), finish_event(reason)]).unwrap();
            assert_eq!(answer.finish, expected, "{reason}");
        }
        assert_eq!(
            assemble(&[text_event("x")]).unwrap().finish,
            FinishReason::Stop
        );
    }

    #[test]
    fn partly_reported_usage_is_completed_by_estimates() {
        let answer = assemble(&[
            text_event("abcdefgh"),
            json!({"choices": [], "usage": {"prompt_tokens": 3}}),
        ])
        .unwrap();
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            }
        );
    }

    #[test]
    fn arguments_are_passed_on_as_they_arrive() {
        let recorded = Recorded::default();
        let sink = recorded.sink();
        let mut answer = Assembler::new(None);
        let mut apply = |event: Value| answer.apply_event(&event.to_string(), &sink).unwrap();
        apply(call_event(
            json!([{"index": 0, "id": "c1", "function": {"name": "f"}}]),
        ));
        assert_eq!(recorded.all(), [call("c1", "f")]);
        apply(call_event(
            json!([{"index": 0, "function": {"arguments": "{\"a\": "}}]),
        ));
        assert_eq!(recorded.all(), [call("c1", "f"), args(0, "{\"a\": ")]);
        apply(call_event(
            json!([{"index": 0, "function": {"arguments": "1}"}}]),
        ));
        assert_eq!(
            recorded.all(),
            [call("c1", "f"), args(0, "{\"a\": "), args(0, "1}")]
        );
    }

    #[test]
    fn pieces_add_up_to_the_calls_however_fragments_arrive() {
        let frag = |index: u64, f: Value| call_event(json!([{"index": index, "function": f}]));
        let whole = |index: u64, id: &str, f: Value| {
            call_event(json!([{"index": index, "id": id, "function": f}]))
        };
        // The server's second call arrives first: calls are in the order they were started.
        let (answer, recorded) = assemble_recorded(&[
            whole(1, "b", json!({"name": "g", "arguments": "{\"y\":"})),
            whole(0, "a", json!({"name": "f", "arguments": "{}"})),
            frag(1, json!({"arguments": "2}"})),
        ]);
        let names: Vec<_> = answer
            .unwrap()
            .tool_calls
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["g", "f"]);
        assert_eq!(
            recorded.all(),
            [
                call_at(0, "b", "g"),
                args(0, "{\"y\":"),
                call_at(1, "a", "f"),
                args(1, "{}"),
                args(0, "2}")
            ]
        );

        // Arguments before the name: held until the call is started.
        let (_, recorded) = assemble_recorded(&[
            call_event(json!([{"index": 0, "id": "c1", "function": {"arguments": "{\"a\""}}])),
            frag(0, json!({"name": "f"})),
            frag(0, json!({"arguments": ": 1}"})),
        ]);
        assert_eq!(
            recorded.all(),
            [call("c1", "f"), args(0, "{\"a\""), args(0, ": 1}")]
        );

        // A later call waits for an earlier one that has no name yet.
        let (answer, recorded) = assemble_recorded(&[
            call_event(json!([{"index": 0, "id": "a"}])),
            whole(1, "b", json!({"name": "g", "arguments": "{}"})),
            frag(0, json!({"name": "f", "arguments": "{}"})),
        ]);
        let ids: Vec<_> = answer
            .unwrap()
            .tool_calls
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(recorded.all()[0], call_at(0, "a", "f"));

        // Blank arguments are `{}`; blanks before real arguments are kept.
        let (answer, recorded) = assemble_recorded(&[
            whole(0, "a", json!({"name": "f", "arguments": " "})),
            frag(0, json!({"arguments": "\n"})),
            whole(1, "b", json!({"name": "g", "arguments": " "})),
            frag(1, json!({"arguments": "{}"})),
        ]);
        let answer = answer.unwrap();
        assert_eq!(answer.tool_calls[0].arguments, "{}");
        assert_eq!(answer.tool_calls[1].arguments, " {}");
        assert!(recorded.all().contains(&args(0, "{}")));

        // Text, then calls (also legacy and object arguments); empty fragments are dropped.
        let (answer, _) = assemble_recorded(&[
            text_event("Let me check. "),
            call_event(json!([{"index": 3}])),
            whole(0, "a", json!({"name": "f", "arguments": {"x": [1, 2]}})),
            json!({"choices": [{"delta": {"function_call": {"name": "legacy", "arguments": "{}"}}}]}),
            finish_event("tool_calls"),
        ]);
        let answer = answer.unwrap();
        assert_eq!(answer.text, "Let me check. ");
        assert_eq!(answer.tool_calls.len(), 2);
        assert_eq!(answer.tool_calls[0].arguments, r#"{"x":[1,2]}"#);
    }
}
