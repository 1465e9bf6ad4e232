//! Tool calls as they stream, in the step deltas OpenAI sent for them: a call's creation delta
//! (`input`/`arguments` empty), then its input or arguments in pieces as the model writes them,
//! then (for code) its outputs.
//!
//! The SDKs' handlers take the first delta of a new `index` as the call's creation and a delta
//! for another index as the end of the current call. So only a turn's first call streams live
//! (a model may still add to it after starting the next, and a code call's outputs come after
//! the whole turn); each later call is sent whole (creation, then input or arguments) in turn,
//! after the previous call's outputs.

use super::events::{CallDelta, CodeDelta, FunctionDelta, ToolCallDelta, indexed};
use crate::model::CodeOutput;

/// A call's first delta: its id and type, its input or arguments still empty.
pub fn created(index: usize, id: &str, name: &str, code: bool) -> ToolCallDelta {
    let call = if code {
        CallDelta::CodeInterpreter {
            code_interpreter: CodeDelta {
                input: Some(String::new()),
                outputs: Some(vec![]),
            },
        }
    } else {
        CallDelta::Function {
            function: FunctionDelta {
                name: Some(name.to_string()),
                arguments: Some(String::new()),
                output: Some(None),
            },
        }
    };
    ToolCallDelta {
        index,
        id: Some(id.to_string()),
        call,
    }
}

/// A file_search call's one delta, as OpenAI sent it: its id, type and an empty
/// `file_search`.
pub fn search_created(index: usize, id: &str) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: Some(id.to_string()),
        call: CallDelta::FileSearch {
            file_search: serde_json::Map::new(),
        },
    }
}

/// More of a call's input (code) or arguments (function).
pub fn piece(index: usize, code: bool, text: &str) -> ToolCallDelta {
    let call = if code {
        CallDelta::CodeInterpreter {
            code_interpreter: CodeDelta {
                input: Some(text.to_string()),
                outputs: None,
            },
        }
    } else {
        CallDelta::Function {
            function: FunctionDelta {
                arguments: Some(text.to_string()),
                ..FunctionDelta::default()
            },
        }
    };
    ToolCallDelta {
        index,
        id: None,
        call,
    }
}

/// A code call's outputs.
pub fn outputs(index: usize, outputs: &[CodeOutput]) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        call: CallDelta::CodeInterpreter {
            code_interpreter: CodeDelta {
                input: None,
                outputs: Some(indexed(outputs.iter().cloned())),
            },
        },
    }
}

/// The code of a code-tool call: `{"code": …}`, or (from lenient models) a bare string.
pub fn code_of(arguments: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(serde_json::Value::Object(o)) => o
            .get("code")
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .unwrap_or_default(),
        Ok(serde_json::Value::String(s)) => s,
        _ => arguments.to_string(),
    }
}

/// One call of a model turn, as streamed so far.
#[derive(Debug)]
pub struct StreamedCall {
    pub id: String,
    pub code: bool,
    /// Its deltas went out as the model wrote it.
    pub live: bool,
    /// The arguments so far.
    pub arguments: String,
    /// What its deltas carried so far: the input (code) or the arguments.
    pub sent: String,
}

impl StreamedCall {
    pub fn new(id: &str, code: bool, live: bool) -> StreamedCall {
        StreamedCall {
            id: id.to_string(),
            code,
            live,
            arguments: String::new(),
            sent: String::new(),
        }
    }

    /// Take more arguments; returns what may be sent now (the input decoded so far beyond
    /// what was sent, for code; the piece itself, for a function).
    pub fn push(&mut self, text: &str) -> String {
        self.arguments.push_str(text);
        let now = if self.code {
            decoded_code(&self.arguments).unwrap_or_default()
        } else {
            self.arguments.clone()
        };
        match now.strip_prefix(self.sent.as_str()) {
            Some(more) if !more.is_empty() => {
                let more = more.to_string();
                self.sent.push_str(&more);
                more
            }
            _ => String::new(),
        }
    }

    /// Once the call is whole: what is left to send for it to add up to `full` (its input or
    /// arguments), or `None` if what was sent is not a beginning of it (nothing can mend that).
    pub fn rest(&self, full: &str) -> Option<String> {
        full.strip_prefix(self.sent.as_str()).map(str::to_string)
    }
}

/// The part of a code call's input that `arguments` (still arriving) already fix: the decoded
/// `code` string of `{"code": "…`, the decoded string of `"…`, or the text itself when it is
/// not JSON at all (as [`code_of`] takes it). `None` while that is not yet clear.
pub fn decoded_code(arguments: &str) -> Option<String> {
    let s = arguments.trim_start();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('{') {
        let rest = rest.trim_start().strip_prefix("\"code\"")?;
        let rest = rest.trim_start().strip_prefix(':')?;
        let rest = rest.trim_start().strip_prefix('"')?;
        return Some(decode_prefix(rest));
    }
    if let Some(rest) = s.strip_prefix('"') {
        return Some(decode_prefix(rest));
    }
    // Bare code: taken as written (leading blanks included), unless it turns out to be JSON.
    if s.starts_with(|c: char| c == '[' || c.is_ascii_digit() || c == '-') {
        return None;
    }
    Some(arguments.to_string())
}

/// Decode the JSON string body `s` (after its opening quote) up to its closing quote or, if it
/// is not closed yet, up to the last complete character.
fn decode_prefix(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let Some(c) = unicode_escape(&s[at..]) else {
                            break;
                        };
                        out.push(c);
                        let skip = if c as u32 > 0xFFFF { 10 } else { 4 };
                        for _ in 0..skip {
                            chars.next();
                        }
                    }
                    _ => break,
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The character of the `\uXXXX` escape (or surrogate pair) at the start of `s`, if whole.
fn unicode_escape(s: &str) -> Option<char> {
    let hex = |from: usize| -> Option<u32> {
        let h = s.get(from..from + 4)?;
        u32::from_str_radix(h, 16).ok()
    };
    let first = hex(2)?;
    if (0xD800..0xDC00).contains(&first) {
        if s.get(6..8)? != "\\u" {
            return None;
        }
        let second = hex(8)?;
        let c = 0x10000 + ((first - 0xD800) << 10) + (second.checked_sub(0xDC00)?);
        return char::from_u32(c);
    }
    char::from_u32(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feed `args` in pieces of `n` bytes; the pieces sent must add up to the stored input.
    fn stream(args: &str, n: usize) -> String {
        let mut call = StreamedCall::new("call_1", true, true);
        let mut sent = String::new();
        let mut rest = args;
        while !rest.is_empty() {
            let mut cut = n.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            sent.push_str(&call.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        let tail = call.rest(&code_of(args)).expect("a beginning of the input");
        sent + &tail
    }

    #[test]
    fn streamed_input_adds_up_to_the_stored_input() {
        let code = "import math\nprint(\"π ≈\", math.pi)\t# \\ done 🎉\n";
        let forms = [
            json!({"code": code}).to_string(),
            format!("{{ \"code\" : {} }}", serde_json::to_string(code).unwrap()),
            serde_json::to_string(code).unwrap(),
            // Escaped non-ASCII, as some servers write it.
            "{\"code\": \"print(\\\"\\u03c0 \\ud83c\\udf89\\\")\"}".to_string(),
            // Another key first: held back until whole.
            json!({"language": "python", "code": code}).to_string(),
            // Bare code.
            "print(1)\nprint(2)".to_string(),
        ];
        for args in &forms {
            for n in [1, 2, 3, 7, 1000] {
                assert_eq!(stream(args, n), code_of(args), "{args} in pieces of {n}");
            }
        }
    }

    #[test]
    fn a_functions_arguments_stream_as_they_are() {
        let mut call = StreamedCall::new("call_1", false, true);
        let args = r#"{"city": "Paris", "days": 3}"#;
        let sent: String = args
            .as_bytes()
            .chunks(5)
            .map(|c| call.push(std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(sent, args);
        assert_eq!(call.rest(args).as_deref(), Some(""));
    }
}
