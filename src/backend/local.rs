//! `oasis-local`: the built-in, deterministic, offline model. It is not a language model: it
//! follows two conventions in the newest user message, so flows can run without any LLM.
//!
//! - Fenced blocks whose info string is `python`, `py` or empty are code cells: each becomes one
//!   call of the code tool, in order. When the results are in, it writes one message showing
//!   each cell's logs and a `[name](sandbox:/mnt/data/name)` link for each file the cells
//!   created or changed.
//! - Fenced blocks whose info string is `call NAME` hold JSON arguments for the function NAME:
//!   all become parallel calls in one turn. When the outputs are in, it replies one line per
//!   call, `NAME returned: OUTPUT`.
//! - Anything else gets [`HELP`]. With `tool_choice: none` it never calls tools.

use futures::future::BoxFuture;

use super::{
    Backend, BackendError, ChatMessage, ChatRequest, ChatResponse, CodeToolResult, DeltaSink,
    FinishReason, ModelDelta, Role, ToolCall, ToolChoice, Usage, estimate_tokens,
};

pub const HELP: &str = "I'm oasis-local, Oasis's built-in offline model, not a language model. \
I follow two conventions in your newest message: put Python in a fenced ```python block and I \
run it with the code_interpreter tool, or put JSON arguments in a fenced ```call NAME block and \
I call the function tool NAME.";

pub const NO_CODE_TOOL: &str = "I can't run code in this run: the code_interpreter tool is not \
enabled for it.";

pub const NO_TOOLS: &str = "I can't use tools in this run (tool_choice is \"none\").";

/// The built-in model.
#[derive(Debug, Default)]
pub struct Local;

/// A fenced block: its info string and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fenced {
    pub info: String,
    pub body: String,
}

/// Every fenced block (```` ``` ```` or longer backtick fences) in `text`.
pub fn fenced_blocks(text: &str) -> Vec<Fenced> {
    let mut out = vec![];
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let ticks = t.chars().take_while(|&c| c == '`').count();
        match &mut open {
            None if ticks >= 3 => {
                open = Some((ticks, t[ticks..].trim().to_string(), vec![]));
            }
            None => {}
            Some((n, info, body)) => {
                if ticks >= *n && t[ticks..].trim().is_empty() {
                    out.push(Fenced {
                        info: std::mem::take(info),
                        body: body.join("\n"),
                    });
                    open = None;
                } else {
                    body.push(line);
                }
            }
        }
    }
    out
}

fn is_code_info(info: &str) -> bool {
    matches!(info.to_ascii_lowercase().as_str(), "" | "python" | "py")
}

fn call_name(info: &str) -> Option<&str> {
    let rest = info.strip_prefix("call")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    Some(rest.trim()).filter(|n| !n.is_empty())
}

fn call_id() -> String {
    crate::model::new_id("call_")
}

/// A fence longer than any run of backticks in `s`.
fn fence_for(s: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

/// Passages quoted from a search's results at most.
const QUOTED: usize = 3;

/// Characters of each quoted passage at most.
const QUOTE_CHARS: usize = 400;

/// The answer to a searched question: the best passages the search gave (lines starting with
/// a `【n:i†name】` marker), quoted, each followed by its marker (a citation).
/// The numbered passages of a search's results (`【n:i†name】 text`, one after another, each
/// starting a paragraph): each marker's inside and the text up to the next marker, blank lines
/// included.
fn passages(results: &str) -> Vec<(&str, &str)> {
    let is_marker = |s: &str| {
        let Some((head, _)) = s.split_once('】') else {
            return false;
        };
        let Some((nums, _name)) = head.split_once('†') else {
            return false;
        };
        let mut parts = nums.split(':');
        let digits = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
    };
    let starts: Vec<usize> = results
        .match_indices('【')
        .map(|(i, _)| i)
        .filter(|&i| {
            (i == 0 || results[..i].ends_with("\n\n")) && is_marker(&results[i + '【'.len_utf8()..])
        })
        .collect();
    let mut out = vec![];
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(results.len());
        if let Some((head, text)) = results[start + '【'.len_utf8()..end].split_once('】') {
            out.push((head, text.trim()));
        }
    }
    out
}

/// The words of `text` worth matching: lowercase, three letters or more.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .collect()
}

/// At most [`QUOTE_CHARS`] of `passage` (whitespace collapsed): all of it if it fits, else the
/// sentence sharing the most words with `question`, widened by its neighbours while they fit,
/// with `…` where it was cut.
fn quote(passage: &str, question: &str) -> String {
    let text = passage.split_whitespace().collect::<Vec<_>>().join(" ");
    let len = |s: &str| s.chars().count();
    if len(&text) <= QUOTE_CHARS {
        return text;
    }
    let asked: std::collections::HashSet<String> = words(question).into_iter().collect();
    // Sentences, each keeping its end (". ", "! ", "? ").
    let mut sentences: Vec<&str> = vec![];
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?') && text[i + 1..].starts_with(' ') {
            sentences.push(&text[start..=i]);
            start = i + 2;
        }
    }
    if start < text.len() {
        sentences.push(&text[start..]);
    }
    let score = |s: &str| {
        let found: std::collections::HashSet<String> =
            words(s).into_iter().filter(|w| asked.contains(w)).collect();
        found.len()
    };
    let best = (0..sentences.len())
        .max_by_key(|&i| (score(sentences[i]), std::cmp::Reverse(i)))
        .unwrap_or(0);
    let (mut lo, mut hi) = (best, best + 1);
    let width = |lo: usize, hi: usize| len(&sentences[lo..hi].join(" "));
    loop {
        if hi < sentences.len() && width(lo, hi + 1) <= QUOTE_CHARS {
            hi += 1;
        } else if lo > 0 && width(lo - 1, hi) <= QUOTE_CHARS {
            lo -= 1;
        } else {
            break;
        }
    }
    let mut out = sentences[lo..hi].join(" ");
    if len(&out) > QUOTE_CHARS {
        out = out.chars().take(QUOTE_CHARS).collect();
    }
    format!(
        "{}{out}{}",
        if lo > 0 { "… " } else { "" },
        if hi < sentences.len() || len(&out) >= QUOTE_CHARS {
            " …"
        } else {
            ""
        }
    )
}

fn quote_passages(after: &[ChatMessage], question: &str) -> String {
    let results = after
        .iter()
        .rev()
        .find(|m| m.role == Role::Tool)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let mut quotes = vec![];
    for (head, text) in passages(results) {
        let text = quote(text, question);
        quotes.push(format!("> {text} 【{head}】"));
        if quotes.len() == QUOTED {
            break;
        }
    }
    if quotes.is_empty() {
        return "I found nothing about that in your files.".into();
    }
    format!("From your files:\n\n{}", quotes.join("\n\n"))
}

impl Local {
    /// The whole answer (deterministic).
    pub fn answer(&self, req: &ChatRequest) -> (String, Vec<ToolCall>) {
        let Some(last_user) = req.messages.iter().rposition(|m| m.role == Role::User) else {
            return (HELP.to_string(), vec![]);
        };
        let after = &req.messages[last_user + 1..];
        let blocks = fenced_blocks(&req.messages[last_user].content);
        // file_search: a question with no blocks is searched, then answered from what was
        // found.
        if let Some(search) = &req.search_tool
            && blocks.is_empty()
            && req.tool_choice != ToolChoice::None
        {
            let searched = after
                .iter()
                .flat_map(|m| &m.tool_calls)
                .any(|c| c.name == *search);
            if searched {
                return (
                    quote_passages(after, &req.messages[last_user].content),
                    vec![],
                );
            }
            let question = req.messages[last_user].content.trim();
            if !question.is_empty() {
                return (
                    String::new(),
                    vec![ToolCall {
                        id: call_id(),
                        name: search.clone(),
                        arguments: serde_json::json!({ "queries": [question] }).to_string(),
                    }],
                );
            }
        }
        if after.iter().any(|m| !m.tool_calls.is_empty()) {
            return (self.report(req, after), vec![]);
        }
        let cells: Vec<&Fenced> = blocks.iter().filter(|b| is_code_info(&b.info)).collect();
        let calls: Vec<(&str, &Fenced)> = blocks
            .iter()
            .filter_map(|b| call_name(&b.info).map(|n| (n, b)))
            .collect();
        if cells.is_empty() && calls.is_empty() {
            return (HELP.to_string(), vec![]);
        }
        if req.tool_choice == ToolChoice::None {
            return (NO_TOOLS.to_string(), vec![]);
        }
        let mut notes = vec![];
        let mut tool_calls = vec![];
        if !cells.is_empty() {
            match &req.code_tool {
                Some(name) => {
                    for c in &cells {
                        tool_calls.push(ToolCall {
                            id: call_id(),
                            name: name.clone(),
                            arguments: serde_json::json!({ "code": c.body }).to_string(),
                        });
                    }
                }
                None => notes.push(NO_CODE_TOOL.to_string()),
            }
        }
        for (name, block) in calls {
            let known = req
                .tools
                .iter()
                .any(|t| t.name == name && Some(name) != req.code_tool.as_deref());
            if !known {
                notes.push(format!(
                    "There is no function tool named {name} in this run."
                ));
                continue;
            }
            let arguments = match serde_json::from_str::<serde_json::Value>(&block.body) {
                Ok(v) => v.to_string(),
                Err(e) => {
                    notes.push(format!("The arguments for {name} are not valid JSON: {e}."));
                    continue;
                }
            };
            tool_calls.push(ToolCall {
                id: call_id(),
                name: name.to_string(),
                arguments,
            });
        }
        if !req.parallel_tool_calls && tool_calls.len() > 1 {
            tool_calls.truncate(1);
        }
        if tool_calls.is_empty() {
            return (notes.join("\n\n"), vec![]);
        }
        (String::new(), tool_calls)
    }

    /// The message written once the calls made after the newest user message have results.
    fn report(&self, req: &ChatRequest, after: &[ChatMessage]) -> String {
        let mut parts = vec![];
        let mut returned = vec![];
        let mut files: Vec<String> = vec![];
        let mut cell = 0;
        for m in after {
            for call in &m.tool_calls {
                let output = after
                    .iter()
                    .find(|r| r.role == Role::Tool && r.tool_call_id.as_deref() == Some(&call.id))
                    .map(|r| r.content.as_str())
                    .unwrap_or("");
                if Some(&call.name) == req.code_tool.as_ref() {
                    cell += 1;
                    let r: CodeToolResult = serde_json::from_str(output).unwrap_or_default();
                    let logs = r.logs.trim_end_matches('\n');
                    let mut p = if logs.is_empty() {
                        format!("Cell {cell} produced no output.")
                    } else {
                        let fence = fence_for(logs);
                        format!("Output of cell {cell}:\n{fence}\n{logs}\n{fence}")
                    };
                    if r.status != "completed" && !r.status.is_empty() {
                        p.push_str(&format!("\n(The cell ended with status {}.)", r.status));
                    }
                    parts.push(p);
                    for f in r.files {
                        if !files.contains(&f) {
                            files.push(f);
                        }
                    }
                } else {
                    returned.push(format!("{} returned: {output}", call.name));
                }
            }
        }
        if !files.is_empty() {
            let links: Vec<String> = files
                .iter()
                .map(|p| {
                    let rel = p.strip_prefix("/mnt/data/").unwrap_or(p);
                    let name = rel.rsplit('/').next().unwrap_or(rel);
                    let label = crate::model::shown_file_name(name)
                        .replace('[', "\\[")
                        .replace(']', "\\]");
                    format!("[{label}]({})", crate::model::sandbox_link(rel))
                })
                .collect();
            parts.push(links.join("\n"));
        }
        if !returned.is_empty() {
            parts.push(returned.join("\n"));
        }
        parts.join("\n\n")
    }
}

impl Backend for Local {
    fn complete<'a>(
        &'a self,
        req: ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            let (text, tool_calls) = self.answer(&req);
            let prompt: u64 = req
                .messages
                .iter()
                .map(|m| {
                    estimate_tokens(&m.content)
                        + m.tool_calls
                            .iter()
                            .map(|c| estimate_tokens(&c.arguments))
                            .sum::<u64>()
                })
                .sum::<u64>()
                .max(1);
            let mut completion = estimate_tokens(&text)
                + tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.arguments))
                    .sum::<u64>();
            completion = completion.max(1);
            let mut finish = if tool_calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            };
            // Honour max_tokens as a language model would: cut the text short.
            let mut text = text;
            if let Some(max) = req.max_tokens
                && completion > max
            {
                let keep = (max as usize * 4).min(text.len());
                let mut cut = keep;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                completion = max;
                finish = FinishReason::Length;
                return finish_with(on_delta, text, vec![], finish, prompt, completion);
            }
            finish_with(on_delta, text, tool_calls, finish, prompt, completion)
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async { Ok(vec![super::LOCAL_MODEL.to_string()]) })
    }
}

fn finish_with(
    on_delta: DeltaSink<'_>,
    text: String,
    tool_calls: Vec<ToolCall>,
    finish: FinishReason,
    prompt: u64,
    completion: u64,
) -> Result<ChatResponse, BackendError> {
    // Stream the text line by line, and each call's arguments in a few pieces, as a model
    // would produce them.
    for piece in text.split_inclusive('\n') {
        on_delta(ModelDelta::Text(piece));
    }
    for (index, call) in tool_calls.iter().enumerate() {
        on_delta(ModelDelta::CallStarted {
            index,
            id: &call.id,
            name: &call.name,
        });
        for text in pieces_of(&call.arguments) {
            on_delta(ModelDelta::Arguments { index, text });
        }
    }
    Ok(ChatResponse {
        text,
        tool_calls,
        finish,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        },
    })
}

/// `s` in pieces of about 16 bytes (at character boundaries), as a model writes tokens.
fn pieces_of(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(16);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FunctionSpec;

    #[test]
    fn a_long_passage_is_quoted_where_it_answers_the_question() {
        let mut passage = String::new();
        for i in 0..40 {
            passage.push_str(&format!("Crate {i} sits on shelf {i}. "));
        }
        passage.push_str("The keeper's cat is called Marmalade. ");
        for i in 40..60 {
            passage.push_str(&format!("Crate {i} sits on shelf {i}. "));
        }
        let q = quote(&passage, "What is the keeper's cat called?");
        assert!(q.contains("The keeper's cat is called Marmalade."), "{q}");
        assert!(q.starts_with("… ") && q.ends_with(" …"), "{q}");
        assert!(q.chars().count() <= QUOTE_CHARS + 4, "{q}");
        assert_eq!(quote("Short and whole.", "anything"), "Short and whole.");
    }

    #[test]
    fn passages_keep_their_paragraphs_and_split_only_at_markers() {
        let results = "【0:0†manual.md】 # Manual\n\n## Cleaning\nRinse the impeller.\n\n\
                       【0:1†notes.txt】 See 【the box】 and 【1:x†not a marker】.";
        assert_eq!(
            passages(results),
            vec![
                (
                    "0:0†manual.md",
                    "# Manual\n\n## Cleaning\nRinse the impeller."
                ),
                ("0:1†notes.txt", "See 【the box】 and 【1:x†not a marker】."),
            ]
        );
    }

    fn req(messages: Vec<ChatMessage>, code: bool, functions: &[&str]) -> ChatRequest {
        let mut tools: Vec<FunctionSpec> = functions
            .iter()
            .map(|n| FunctionSpec {
                name: n.to_string(),
                description: None,
                parameters: serde_json::json!({"type": "object"}),
                strict: None,
            })
            .collect();
        if code {
            tools.push(FunctionSpec {
                name: "code_interpreter".into(),
                description: None,
                parameters: serde_json::json!({"type": "object"}),
                strict: None,
            });
        }
        ChatRequest {
            tools,
            code_tool: code.then(|| "code_interpreter".to_string()),
            search_tool: None,
            ..ChatRequest::new("oasis-local", messages)
        }
    }

    #[test]
    fn fenced_blocks_are_found_with_their_info_strings() {
        let text = "hi\n```python\nx = 1\nprint(x)\n```\ntext\n```\n1+1\n```\n````call f\n{\"a\": \"```\"}\n````\n```js\nno\n```";
        let b = fenced_blocks(text);
        assert_eq!(b.len(), 4);
        assert_eq!(
            (b[0].info.as_str(), b[0].body.as_str()),
            ("python", "x = 1\nprint(x)")
        );
        assert_eq!((b[1].info.as_str(), b[1].body.as_str()), ("", "1+1"));
        assert_eq!(call_name(&b[2].info), Some("f"));
        assert_eq!(b[2].body, "{\"a\": \"```\"}");
        assert!(!is_code_info(&b[3].info));
    }

    #[test]
    fn cells_become_code_calls_then_a_report_with_logs_and_links() {
        let l = Local;
        let user = ChatMessage::new(Role::User, "run\n```py\nprint(1)\n```\n```python\n2\n```");
        let (text, calls) = l.answer(&req(vec![user.clone()], true, &[]));
        assert!(text.is_empty());
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "code_interpreter");
        assert_eq!(calls[0].arguments, r#"{"code":"print(1)"}"#);
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls = calls.clone();
        let r1 = CodeToolResult {
            status: "completed".into(),
            logs: "1\n".into(),
            files: vec!["/mnt/data/a.csv".into()],
            images: 0,
        };
        let r2 = CodeToolResult {
            status: "completed".into(),
            ..Default::default()
        };
        let msgs = vec![
            user,
            assistant,
            ChatMessage::tool_result(&calls[0].id, serde_json::to_string(&r1).unwrap()),
            ChatMessage::tool_result(&calls[1].id, serde_json::to_string(&r2).unwrap()),
        ];
        let (text, calls) = l.answer(&req(msgs, true, &[]));
        assert!(calls.is_empty());
        assert_eq!(
            text,
            "Output of cell 1:\n```\n1\n```\n\nCell 2 produced no output.\n\n[a.csv](sandbox:/mnt/data/a.csv)"
        );
    }

    #[test]
    fn call_blocks_become_parallel_function_calls_and_outputs_are_reported() {
        let l = Local;
        let user = ChatMessage::new(
            Role::User,
            "```call quiz\n{\"n\": 1}\n```\n```call quiz\n{}\n```",
        );
        let (_, calls) = l.answer(&req(vec![user.clone()], false, &["quiz"]));
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("quiz", r#"{"n":1}"#)
        );
        let mut assistant = ChatMessage::new(Role::Assistant, "");
        assistant.tool_calls = calls.clone();
        let msgs = vec![
            user,
            assistant,
            ChatMessage::tool_result(&calls[0].id, "A"),
            ChatMessage::tool_result(&calls[1].id, "B"),
        ];
        let (text, _) = l.answer(&req(msgs, false, &["quiz"]));
        assert_eq!(text, "quiz returned: A\nquiz returned: B");
    }

    #[test]
    fn without_the_tool_or_with_tool_choice_none_it_explains() {
        let l = Local;
        let user = ChatMessage::new(Role::User, "```python\n1\n```");
        let (text, calls) = l.answer(&req(vec![user.clone()], false, &[]));
        assert!(calls.is_empty());
        assert_eq!(text, NO_CODE_TOOL);
        let mut r = req(vec![user], true, &[]);
        r.tool_choice = ToolChoice::None;
        assert_eq!(l.answer(&r), (NO_TOOLS.to_string(), vec![]));
        let hello = ChatMessage::new(Role::User, "Solve 3x + 11 = 14");
        assert_eq!(l.answer(&req(vec![hello], true, &[])).0, HELP);
    }
}
