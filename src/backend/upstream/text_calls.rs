//! Tool calls a model wrote as text. Small local models (Qwen, Hermes and Llama templates
//! behind llama.cpp or Ollama) often answer with the call as the message itself:
//!
//! ~~~text
//! {"name": "code_interpreter", "arguments": {"code": "print(6*7)"}}
//!
//! ```json
//! {"name": "get_weather", "parameters": {"city": "Paris"}}
//! ```
//!
//! <tool_call>{"name": "f", "arguments": {}}</tool_call>
//! ~~~
//!
//! An answer without `tool_calls` whose whole text (trimmed) is such a call — bare, in one
//! ```` ```json ```` fence, or in `<tool_call>` tags (one or more) — or a JSON list of them,
//! each naming a tool offered to this request with object arguments (or a JSON string holding
//! an object), is taken as those calls. Anything else stays text.
//!
//! While the answer streams, its text is held back by a [`Gate`] for as long as it could still
//! turn out to be such a call, and passed on the moment it cannot.

use serde_json::{Map, Value};

use crate::backend::{ChatRequest, ToolChoice};

/// Keys a call object may have. `function` names the tool (`"function": "f"`) or holds the
/// call as OpenAI's own tool calls do (`"function": {"name": "f", "arguments": …}`).
const CALL_KEYS: [&str; 5] = ["name", "arguments", "parameters", "type", "function"];
/// Longest fence info string considered (`json` and blanks).
const MAX_INFO_CHARS: usize = 16;

/// The tools a request offers, to recognize calls to them written as text.
#[derive(Debug, Clone)]
pub(super) struct TextCalls {
    offered: Vec<String>,
    /// The code tool's name: its arguments may also be the code itself, as a string.
    code_tool: Option<String>,
}

impl TextCalls {
    /// `None` when nothing could be recovered: recovery is off, no tools are offered, or
    /// `tool_choice` is `none`.
    pub(super) fn for_request(req: &ChatRequest, enabled: bool) -> Option<TextCalls> {
        let offered: Vec<String> = match &req.tool_choice {
            ToolChoice::None => return None,
            ToolChoice::Function(name) => vec![name.clone()],
            ToolChoice::Auto | ToolChoice::Required => {
                req.tools.iter().map(|t| t.name.clone()).collect()
            }
        };
        (enabled && !offered.is_empty() && !req.tools.is_empty()).then(|| TextCalls {
            offered,
            code_tool: req.code_tool.clone(),
        })
    }

    fn offers(&self, name: &str) -> bool {
        self.offered.iter().any(|o| o == name)
    }

    /// The calls `text` holds, as (name, arguments as JSON text); `None` if it is not wholly
    /// calls to offered tools.
    pub(super) fn parse(&self, text: &str) -> Option<Vec<(String, String)>> {
        let mut calls = Vec::new();
        for body in unwrap(text)? {
            match serde_json::from_str::<Value>(body.trim()).ok()? {
                Value::Object(call) => calls.push(self.call(call)?),
                Value::Array(items) => {
                    for item in items {
                        let Value::Object(call) = item else {
                            return None;
                        };
                        calls.push(self.call(call)?);
                    }
                }
                _ => return None,
            }
        }
        (!calls.is_empty()).then_some(calls)
    }

    fn call(&self, mut call: Map<String, Value>) -> Option<(String, String)> {
        if call.keys().any(|k| !CALL_KEYS.contains(&k.as_str())) {
            return None;
        }
        if let Some(kind) = call.remove("type")
            && kind != "function"
        {
            return None;
        }
        match call.remove("function") {
            None => {}
            // `"function": "f"`: the name under another key.
            Some(Value::String(name)) if !call.contains_key("name") => {
                call.insert("name".into(), Value::String(name));
            }
            // OpenAI's shape: the name and arguments inside.
            Some(Value::Object(inner))
                if !call.contains_key("name")
                    && !call.contains_key("arguments")
                    && !call.contains_key("parameters") =>
            {
                return self.call(inner);
            }
            Some(_) => return None,
        }
        let Some(Value::String(name)) = call.remove("name") else {
            return None;
        };
        if !self.offers(&name) {
            return None;
        }
        let arguments = match (call.remove("arguments"), call.remove("parameters")) {
            (Some(args), None) | (None, Some(args)) => args,
            _ => return None,
        };
        let arguments = match arguments {
            Value::Object(_) => arguments.to_string(),
            Value::String(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(_)) => text,
                // The code itself, for the code tool.
                _ if Some(&name) == self.code_tool.as_ref() => {
                    serde_json::json!({ "code": text }).to_string()
                }
                _ => return None,
            },
            _ => return None,
        };
        Some((name, arguments))
    }
}

/// The JSON texts inside `text`'s wrapping: the whole (trimmed) text, the inside of one
/// ```` ```json ```` (or bare ```` ``` ````) fence, or the insides of `<tool_call>` tags. A
/// closing fence or tag missing at the very end is forgiven.
fn unwrap(text: &str) -> Option<Vec<&str>> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("```") {
        let (info, body) = rest.split_once('\n')?;
        if !fence_info_is_json(info) {
            return None;
        }
        let body = body.trim_end();
        return Some(vec![body.strip_suffix("```").unwrap_or(body)]);
    }
    if text.starts_with("<tool_call>") {
        let mut bodies = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            rest = rest.strip_prefix("<tool_call>")?;
            match rest.split_once("</tool_call>") {
                Some((body, after)) => {
                    bodies.push(body);
                    rest = after.trim_start();
                }
                None => {
                    bodies.push(rest);
                    rest = "";
                }
            }
        }
        return Some(bodies);
    }
    Some(vec![text])
}

fn fence_info_is_json(info: &str) -> bool {
    let info = info.trim();
    info.is_empty() || info.eq_ignore_ascii_case("json")
}

/// Holds an answer's text back while it could still be calls written as text.
#[derive(Debug)]
pub(super) struct Gate {
    calls: TextCalls,
    /// The text held back so far.
    held: String,
    scan: Scan,
}

/// Whether held text must stay held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It could still be a call: keep holding.
    Hold,
    /// It cannot be one any more: pass it on.
    Release,
}

impl Gate {
    pub(super) fn new(calls: TextCalls) -> Gate {
        Gate {
            calls,
            held: String::new(),
            scan: Scan::Start,
        }
    }

    /// Takes more of the answer's text (it is held).
    pub(super) fn feed(&mut self, text: &str) -> Verdict {
        self.held.push_str(text);
        for c in text.chars() {
            if !self.scan.step(c, &self.calls) {
                return Verdict::Release;
            }
        }
        Verdict::Hold
    }

    /// The text held back.
    pub(super) fn into_held(self) -> String {
        self.held
    }

    /// Once the answer is whole: the calls it holds, if it is wholly calls.
    pub(super) fn recovered(&self) -> Option<Vec<(String, String)>> {
        self.calls.parse(&self.held)
    }
}

/// Where a [`Gate`] is in the text: a conservative, incremental check of the forms
/// [`TextCalls::parse`] accepts. It only ever rules text out (a `false` step) when no
/// continuation could make it calls; the final word is [`TextCalls::parse`]'s.
#[derive(Debug)]
enum Scan {
    /// Blanks before anything.
    Start,
    /// Matching the ASCII `literal`; `at` bytes of it matched, then `then`.
    Literal {
        literal: &'static str,
        at: usize,
        then: Next,
    },
    /// After an opening fence, up to the end of its line.
    FenceInfo(String),
    /// Blanks before a JSON value.
    BeforeJson(Wrap),
    Json(Wrap, Json),
    /// After a JSON value, before its wrapping's closer.
    AfterJson(Wrap),
    /// After the closer: blanks only (between tags, another `<tool_call>`).
    End(Wrap),
}

#[derive(Debug, Clone, Copy)]
enum Wrap {
    Bare,
    Fence,
    Tag,
}

#[derive(Debug, Clone, Copy)]
enum Next {
    FenceInfo,
    BeforeJson(Wrap),
    End(Wrap),
}

impl Scan {
    /// Takes one character; `false` if the text can no longer be calls.
    fn step(&mut self, c: char, calls: &TextCalls) -> bool {
        let blank = c.is_whitespace();
        match self {
            Scan::Start if blank => true,
            Scan::Start => match c {
                '{' | '[' => {
                    *self = Scan::Json(Wrap::Bare, Json::new());
                    self.step(c, calls)
                }
                '`' => self.expect("```", Next::FenceInfo),
                '<' => self.expect("<tool_call>", Next::BeforeJson(Wrap::Tag)),
                _ => false,
            },
            Scan::Literal { literal, at, then } => {
                if !c.is_ascii() || literal.as_bytes().get(*at) != Some(&(c as u8)) {
                    return false;
                }
                *at += 1;
                let then = *then;
                if *at == literal.len() {
                    *self = match then {
                        Next::FenceInfo => Scan::FenceInfo(String::new()),
                        Next::BeforeJson(wrap) => Scan::BeforeJson(wrap),
                        Next::End(wrap) => Scan::End(wrap),
                    };
                }
                true
            }
            Scan::FenceInfo(info) => {
                if c == '\n' {
                    if !fence_info_is_json(info) {
                        return false;
                    }
                    *self = Scan::BeforeJson(Wrap::Fence);
                    return true;
                }
                info.push(c);
                let word = info.trim();
                let blank_after_word = info.trim_start().len() > word.len();
                info.len() <= MAX_INFO_CHARS
                    && if blank_after_word {
                        fence_info_is_json(word)
                    } else {
                        "json".starts_with(&word.to_ascii_lowercase())
                    }
            }
            Scan::BeforeJson(_) if blank => true,
            Scan::BeforeJson(wrap) => match c {
                '{' | '[' => {
                    *self = Scan::Json(*wrap, Json::new());
                    self.step(c, calls)
                }
                _ => false,
            },
            Scan::Json(wrap, json) => match json.step(c, calls) {
                Step::More => true,
                Step::Fail => false,
                Step::Done => {
                    *self = Scan::AfterJson(*wrap);
                    true
                }
            },
            Scan::AfterJson(_) | Scan::End(_) if blank => true,
            Scan::AfterJson(Wrap::Fence) if c == '`' => self.expect("```", Next::End(Wrap::Fence)),
            Scan::AfterJson(Wrap::Tag) if c == '<' => {
                self.expect("</tool_call>", Next::End(Wrap::Tag))
            }
            Scan::End(Wrap::Tag) if c == '<' => {
                self.expect("<tool_call>", Next::BeforeJson(Wrap::Tag))
            }
            Scan::AfterJson(_) | Scan::End(_) => false,
        }
    }

    /// Starts matching `literal`, whose first character was just seen.
    fn expect(&mut self, literal: &'static str, then: Next) -> bool {
        *self = Scan::Literal {
            literal,
            at: 1,
            then,
        };
        true
    }
}

/// One JSON value that should be a call object or a list of them.
#[derive(Debug)]
struct Json {
    /// Open containers, outermost first: `{` or `[`.
    stack: Vec<char>,
    /// How deep the call objects are: 1 (a lone call) or 2 (calls in a list); 0 before the
    /// first character.
    call_depth: usize,
    /// Inside a string; `escaped` after its backslash.
    in_string: bool,
    escaped: bool,
    /// What comes next at the call level or the list level.
    slot: Slot,
    /// The call level's current key.
    key: String,
    /// The string being read at the call level (a key, or a name), when it is checked.
    capture: Option<String>,
    /// The captured string held an escape (then it is not checked).
    capture_escaped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// In a call object: a key (or the end of the object).
    Key,
    Colon,
    /// The current key's value.
    Value,
    /// A bare value (number, `true` …) of an unchecked key.
    Bare,
    /// After a value: `,` or the end of the container.
    Comma,
    /// In the list: a call object (or the end of the list).
    Element,
}

enum Step {
    More,
    Fail,
    /// The value is closed.
    Done,
}

impl Json {
    fn new() -> Json {
        Json {
            stack: Vec::new(),
            call_depth: 0,
            in_string: false,
            escaped: false,
            slot: Slot::Value,
            key: String::new(),
            capture: None,
            capture_escaped: false,
        }
    }

    fn step(&mut self, c: char, calls: &TextCalls) -> Step {
        if self.in_string {
            return self.string_step(c, calls);
        }
        let depth = self.stack.len();
        if depth == 0 {
            // The first character: `{` or `[` (checked by the caller).
            self.stack.push(c);
            self.call_depth = if c == '{' { 1 } else { 2 };
            self.slot = if c == '{' { Slot::Key } else { Slot::Element };
            return Step::More;
        }
        if depth > self.call_depth {
            // Inside a call's value: only nesting and strings matter.
            return match c {
                '"' => {
                    self.in_string = true;
                    Step::More
                }
                '{' | '[' => {
                    self.stack.push(c);
                    Step::More
                }
                '}' | ']' => self.close(c),
                _ => Step::More,
            };
        }
        let json_blank = matches!(c, ' ' | '\t' | '\n' | '\r');
        if depth < self.call_depth {
            // The list's level.
            return match (self.slot, c) {
                (_, _) if json_blank => Step::More,
                (Slot::Element, '{') => {
                    self.stack.push(c);
                    self.slot = Slot::Key;
                    Step::More
                }
                (Slot::Comma, ',') => {
                    self.slot = Slot::Element;
                    Step::More
                }
                (Slot::Comma, ']') => self.close(c),
                _ => Step::Fail,
            };
        }
        // The call object's level.
        match (self.slot, c) {
            (Slot::Bare, ',') => {
                self.slot = Slot::Key;
                Step::More
            }
            (Slot::Bare, '}') => self.close(c),
            (Slot::Bare, _) if json_blank => {
                self.slot = Slot::Comma;
                Step::More
            }
            (Slot::Bare, _) => {
                if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') {
                    Step::More
                } else {
                    Step::Fail
                }
            }
            (_, _) if json_blank => Step::More,
            (Slot::Key, '"') => {
                self.begin_string(true);
                Step::More
            }
            (Slot::Colon, ':') => {
                self.slot = Slot::Value;
                Step::More
            }
            (Slot::Value, _) => match (self.key.as_str(), c) {
                ("name" | "function", '"') => {
                    self.begin_string(true);
                    Step::More
                }
                ("name", _) => Step::Fail,
                // OpenAI's shape, `"function": {"name": …, "arguments": …}`: checked whole at
                // the end.
                ("function", '{') => {
                    self.stack.push(c);
                    Step::More
                }
                ("function", _) => Step::Fail,
                ("arguments" | "parameters", '"') => {
                    self.begin_string(false);
                    Step::More
                }
                ("arguments" | "parameters", '{') => {
                    self.stack.push(c);
                    Step::More
                }
                ("arguments" | "parameters", _) => Step::Fail,
                (_, '"') => {
                    self.begin_string(false);
                    Step::More
                }
                (_, '{' | '[') => {
                    self.stack.push(c);
                    Step::More
                }
                (_, _) if c.is_ascii_alphanumeric() || c == '-' => {
                    self.slot = Slot::Bare;
                    Step::More
                }
                _ => Step::Fail,
            },
            (Slot::Comma, ',') => {
                self.slot = Slot::Key;
                Step::More
            }
            (Slot::Comma, '}') => self.close(c),
            _ => Step::Fail,
        }
    }

    fn begin_string(&mut self, capture: bool) {
        self.in_string = true;
        self.capture = capture.then(String::new);
        self.capture_escaped = false;
    }

    fn string_step(&mut self, c: char, calls: &TextCalls) -> Step {
        if self.escaped {
            self.escaped = false;
            return Step::More;
        }
        match c {
            '\\' => {
                self.escaped = true;
                self.capture_escaped = true;
                Step::More
            }
            '"' => {
                self.in_string = false;
                if self.stack.len() == self.call_depth {
                    self.string_ended(calls)
                } else {
                    Step::More
                }
            }
            c => {
                if let Some(text) = &mut self.capture {
                    text.push(c);
                    if !self.capture_escaped && !self.may_still_match(calls) {
                        return Step::Fail;
                    }
                }
                Step::More
            }
        }
    }

    /// Whether the string being captured can still become an accepted key or offered name.
    fn may_still_match(&self, calls: &TextCalls) -> bool {
        let Some(text) = &self.capture else {
            return true;
        };
        if self.slot == Slot::Key {
            CALL_KEYS.iter().any(|k| k.starts_with(text.as_str()))
        } else {
            calls.offered.iter().any(|n| n.starts_with(text.as_str()))
        }
    }

    /// A string at the call level ended: a key, or a value.
    fn string_ended(&mut self, calls: &TextCalls) -> Step {
        let captured = self.capture.take();
        let checked = !self.capture_escaped;
        if self.slot == Slot::Key {
            let key = captured.unwrap_or_default();
            if checked && !CALL_KEYS.contains(&key.as_str()) {
                return Step::Fail;
            }
            self.key = key;
            self.slot = Slot::Colon;
            return Step::More;
        }
        if matches!(self.key.as_str(), "name" | "function")
            && checked
            && let Some(name) = captured
            && !calls.offers(&name)
        {
            return Step::Fail;
        }
        self.slot = Slot::Comma;
        Step::More
    }

    /// Closes the innermost container with `c`.
    fn close(&mut self, c: char) -> Step {
        let open = if c == '}' { '{' } else { '[' };
        if self.stack.pop() != Some(open) {
            return Step::Fail;
        }
        let depth = self.stack.len();
        if depth == 0 {
            return Step::Done;
        }
        if depth <= self.call_depth {
            // A call's value, or a call in the list, is closed.
            self.slot = Slot::Comma;
        }
        Step::More
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::backend::{ChatMessage, FunctionSpec, Role};

    fn offered() -> TextCalls {
        let tool = |name: &str| FunctionSpec {
            name: name.into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: None,
        };
        let req = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::new(Role::User, "hi")],
            tools: vec![tool("code_interpreter"), tool("get_weather")],
            code_tool: Some("code_interpreter".into()),
            search_tool: None,
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            temperature: None,
            top_p: None,
            max_tokens: None,
            response_format: None,
        };
        TextCalls::for_request(&req, true).unwrap()
    }

    /// Feeds `text` in pieces of `n` characters: where the gate first released, if it did.
    fn gate_releases(text: &str, n: usize) -> Option<usize> {
        let mut gate = Gate::new(offered());
        let chars: Vec<char> = text.chars().collect();
        for (i, piece) in chars.chunks(n).enumerate() {
            let piece: String = piece.iter().collect();
            if gate.feed(&piece) == Verdict::Release {
                return Some(i * n);
            }
        }
        None
    }

    const CODE_CALL: &str = r#"{"name": "code_interpreter", "arguments": {"code": "print(6*7)"}}"#;

    #[test]
    fn the_written_forms_are_calls() {
        let code_args = r#"{"code":"print(6*7)"}"#;
        let weather = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
        let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
            (CODE_CALL.into(), vec![("code_interpreter", code_args)]),
            (
                format!("  \n{CODE_CALL}\n "),
                vec![("code_interpreter", code_args)],
            ),
            (
                format!("```json\n{CODE_CALL}\n```"),
                vec![("code_interpreter", code_args)],
            ),
            (
                format!("```\n{weather}\n```\n"),
                vec![("get_weather", r#"{"city":"Paris"}"#)],
            ),
            (
                format!("<tool_call>\n{CODE_CALL}\n</tool_call>"),
                vec![("code_interpreter", code_args)],
            ),
            (
                format!("<tool_call>{CODE_CALL}</tool_call>\n<tool_call>\n{weather}\n</tool_call>"),
                vec![
                    ("code_interpreter", code_args),
                    ("get_weather", r#"{"city":"Paris"}"#),
                ],
            ),
            // Unclosed at the very end.
            (
                format!("<tool_call>\n{weather}"),
                vec![("get_weather", r#"{"city":"Paris"}"#)],
            ),
            (
                format!("[{CODE_CALL}, {weather}]"),
                vec![
                    ("code_interpreter", code_args),
                    ("get_weather", r#"{"city":"Paris"}"#),
                ],
            ),
            // Arguments as a JSON string, kept as written.
            (
                r#"{"type": "function", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}"#
                    .into(),
                vec![("get_weather", r#"{"city": "Oslo"}"#)],
            ),
            // The code tool's code as a plain string.
            (
                r#"{"name": "code_interpreter", "arguments": "print(1)"}"#.into(),
                vec![("code_interpreter", r#"{"code":"print(1)"}"#)],
            ),
            // The name under `function` (as Qwen2.5-Coder-1.5B wrote it).
            (
                format!(
                    "```json\n{}\n```",
                    r#"{"function": "code_interpreter", "arguments": {"code": "print(6*7)"}}"#
                ),
                vec![("code_interpreter", code_args)],
            ),
            // OpenAI's own tool-call shape.
            (
                r#"{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}"#
                    .into(),
                vec![("get_weather", r#"{"city": "Oslo"}"#)],
            ),
        ];
        for (text, want) in cases {
            let got = offered().parse(&text);
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect();
            assert_eq!(got, Some(want), "{text}");
            for n in [1, 2, 5, 1000] {
                assert_eq!(gate_releases(&text, n), None, "{text} in pieces of {n}");
            }
        }
    }

    #[test]
    fn anything_else_stays_text() {
        let cases = [
            // Prose that contains JSON.
            format!("Here is the call: {CODE_CALL}"),
            format!("{CODE_CALL}\nThat runs the code."),
            // A name not offered.
            r#"{"name": "delete_everything", "arguments": {}}"#.to_string(),
            // Broken JSON.
            r#"{"name": "code_interpreter", "arguments": {"code": "print(1)"}"#.to_string(),
            // A JSON object that is just an answer.
            r#"{"answer": 42, "unit": "none"}"#.to_string(),
            r#"{"name": "get_weather", "city": "Paris"}"#.to_string(),
            r#"{"name": "get_weather"}"#.to_string(),
            r#"{"name": "get_weather", "arguments": [1, 2]}"#.to_string(),
            r#"{"name": "get_weather", "arguments": "Paris"}"#.to_string(),
            r#"{"type": "other", "name": "get_weather", "arguments": {}}"#.to_string(),
            // `function` naming a tool not offered, or with a name beside it, or a tool's
            // definition echoed back.
            r#"{"function": "delete_everything", "arguments": {}}"#.to_string(),
            r#"{"name": "get_weather", "function": "get_weather", "arguments": {}}"#.to_string(),
            r#"{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}"#.to_string(),
            "[]".to_string(),
            "[1, 2, 3]".to_string(),
            format!("```python\n{CODE_CALL}\n```"),
            format!("```json\n{CODE_CALL}\n```\nDone."),
            format!("<tool_call>{CODE_CALL}</tool_call> and more"),
            "`x` is a variable".to_string(),
            "<b>bold</b>".to_string(),
        ];
        for text in &cases {
            assert_eq!(offered().parse(text), None, "{text}");
        }
    }

    #[test]
    fn the_gate_releases_as_soon_as_text_cannot_be_a_call() {
        // (text, the character at which it can no longer be a call)
        let cases = [
            ("Hello there", 0),
            ("  \n Sure: {\"a\": 1}", 4),
            ("{\"answer\": 42}", 3),
            ("{\"name\": \"delete_everything\"}", 10),
            ("{\"name\": 7}", 9),
            ("{\"name\": \"get_weather\", \"arguments\": [1]}", 37),
            ("[1]", 1),
            ("```python\nprint(1)\n```", 3),
            ("```json\n{\"a\": 1}\n```", 11),
            ("<b>bold</b>", 1),
            ("<tool_call>\n{\"x\": 1}", 14),
        ];
        for (text, at) in cases {
            assert_eq!(gate_releases(text, 1), Some(at), "{text}");
        }
        // After a whole call: more text.
        let more = format!("{CODE_CALL} and so on");
        assert_eq!(gate_releases(&more, 1), Some(CODE_CALL.len() + 1));
        // A JSON string holding braces and quotes does not confuse it.
        let tricky = r#"{"name": "code_interpreter", "arguments": {"code": "print(\"}{]\")"}}"#;
        assert_eq!(gate_releases(tricky, 1), None);
        assert!(offered().parse(tricky).is_some());
    }

    #[test]
    fn nothing_is_recovered_when_off_without_tools_or_with_tool_choice_none() {
        let mut req = ChatRequest::new("m", vec![]);
        req.tools = vec![FunctionSpec {
            name: "f".into(),
            description: None,
            parameters: json!({}),
            strict: None,
        }];
        assert!(TextCalls::for_request(&req, true).is_some());
        assert!(TextCalls::for_request(&req, false).is_none());
        req.tool_choice = ToolChoice::None;
        assert!(TextCalls::for_request(&req, true).is_none());
        req.tool_choice = ToolChoice::Auto;
        req.tools.clear();
        assert!(TextCalls::for_request(&req, true).is_none());
    }
}
