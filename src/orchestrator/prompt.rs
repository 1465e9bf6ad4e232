//! The conversation a model sees for a run: the instructions (and, with code_interpreter, the
//! files in `/mnt/data`) as the system message, the thread's messages (truncated as the run
//! asks) and what the run itself said and did so far.

use std::collections::HashMap;

use crate::backend::{
    ChatMessage, ChatRequest, FunctionSpec, ImagePart, Role, ToolChoice, estimate_tokens,
};
use crate::model::{
    Attachment, AttachmentTool, Content, Message, MessageRole, Run, Tool, ToolChoiceOption,
};

/// The name `code_interpreter` is offered under: its own name unless a function of the run
/// already has it.
pub fn code_tool_name(tools: &[Tool]) -> Option<String> {
    if !tools.iter().any(|t| matches!(t, Tool::CodeInterpreter)) {
        return None;
    }
    let taken = |n: &str| {
        tools
            .iter()
            .any(|t| matches!(t, Tool::Function { function } if function.name == n))
    };
    let mut name = "code_interpreter".to_string();
    let mut i = 1;
    while taken(&name) {
        i += 1;
        name = format!("code_interpreter_{i}");
    }
    Some(name)
}

/// The functions offered to the model, the code tool included.
pub fn functions(tools: &[Tool], code_tool: Option<&str>) -> Vec<FunctionSpec> {
    let mut out: Vec<FunctionSpec> = tools
        .iter()
        .filter_map(|t| match t {
            Tool::Function { function } => Some(FunctionSpec {
                name: function.name.clone(),
                description: function.description.clone(),
                parameters: function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                strict: function.strict,
            }),
            _ => None,
        })
        .collect();
    if let Some(name) = code_tool {
        out.push(FunctionSpec {
            name: name.to_string(),
            description: Some(
                "Run Python code in a stateful sandbox (variables, imports and files persist \
                 between calls of this thread). numpy, pandas, matplotlib, scipy and \
                 scikit-learn are available; there is no network. Files live in /mnt/data. \
                 Returns JSON with the status, the logs (stdout, the value of the last \
                 expression, stderr), the files created or changed and how many images \
                 (figures) were shown to the user."
                    .into(),
            ),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                "required": ["code"],
            }),
            strict: None,
        });
    }
    out
}

/// The run's `tool_choice` for the backend (`code_interpreter` is the code tool's function).
pub fn tool_choice(choice: &ToolChoiceOption, code_tool: Option<&str>) -> ToolChoice {
    match choice {
        ToolChoiceOption::None => ToolChoice::None,
        ToolChoiceOption::Required => ToolChoice::Required,
        ToolChoiceOption::Function(name) => ToolChoice::Function(name.clone()),
        ToolChoiceOption::CodeInterpreter => code_tool
            .map(|n| ToolChoice::Function(n.to_string()))
            .unwrap_or(ToolChoice::Auto),
        ToolChoiceOption::Auto | ToolChoiceOption::FileSearch => ToolChoice::Auto,
    }
}

/// The system message.
pub fn system_message(run: &Run, code_tool: Option<&str>, files: &[(String, String)]) -> String {
    let mut s = run.instructions.clone();
    if let Some(name) = code_tool {
        if !s.is_empty() {
            s.push_str("\n\n");
        }
        s.push_str(&format!(
            "You can run Python with the `{name}` tool. To give the user a file, save it under \
             /mnt/data and link it in your answer as [name](sandbox:/mnt/data/name)."
        ));
        if files.is_empty() {
            s.push_str("\nThere are no files in /mnt/data yet.");
        } else {
            s.push_str("\nFiles in /mnt/data:");
            for (name, id) in files {
                s.push_str(&format!("\n- /mnt/data/{name} ({id})"));
            }
        }
    }
    s
}

/// A stored message as the model sees it. A user message's images go to the model as images
/// (`image_url` as given; `image_file` as the `data:` URL found in `images`, by File id);
/// anything else shown is described in text.
pub fn chat_message(
    m: &Message,
    files: &[(String, String)],
    images: &HashMap<String, String>,
) -> ChatMessage {
    let role = if m.role == MessageRole::Assistant {
        Role::Assistant
    } else {
        Role::User
    };
    let mut parts = vec![];
    let mut shown = vec![];
    for c in &m.content {
        match c {
            Content::Text { text } => parts.push(text.value.clone()),
            Content::ImageFile { image_file } => match images.get(&image_file.file_id) {
                Some(url) if role == Role::User => shown.push(ImagePart {
                    url: url.clone(),
                    detail: image_file.detail,
                }),
                _ => parts.push(format!("[image file {}]", image_file.file_id)),
            },
            Content::ImageUrl { image_url } if role == Role::User => shown.push(ImagePart {
                url: image_url.url.clone(),
                detail: image_url.detail,
            }),
            Content::ImageUrl { image_url } => parts.push(format!("[image {}]", image_url.url)),
            Content::Refusal { refusal } => parts.push(refusal.clone()),
        }
    }
    let attached: Vec<String> = m
        .attachments
        .iter()
        .filter(|a| uses_code(a))
        .filter_map(|a| files.iter().find(|(_, id)| *id == a.file_id))
        .map(|(name, _)| format!("/mnt/data/{name}"))
        .collect();
    if !attached.is_empty() {
        parts.push(format!("(Attached: {})", attached.join(", ")));
    }
    ChatMessage {
        images: shown,
        ..ChatMessage::new(role, parts.join("\n"))
    }
}

pub fn uses_code(a: &Attachment) -> bool {
    a.tools
        .iter()
        .any(|t| matches!(t, AttachmentTool::CodeInterpreter))
}

/// Why a prompt cannot be built within the run's limits.
#[derive(Debug, PartialEq, Eq)]
pub enum PromptLimit {
    MaxPromptTokens,
    MaxCompletionTokens,
}

/// Everything a backend needs for the run's next turn.
#[allow(clippy::too_many_arguments)]
pub fn build(
    run: &Run,
    code_tool: Option<&str>,
    files: &[(String, String)],
    history: &[Message],
    transcript: &[ChatMessage],
    completion_used: u64,
    images: &HashMap<String, String>,
) -> Result<ChatRequest, PromptLimit> {
    let system = ChatMessage::new(Role::System, system_message(run, code_tool, files));
    let mut thread: Vec<ChatMessage> = history
        .iter()
        .map(|m| chat_message(m, files, images))
        .collect();
    if run.truncation_strategy.kind == "last_messages"
        && let Some(n) = run.truncation_strategy.last_messages
    {
        let n = n as usize;
        if thread.len() > n {
            thread.drain(..thread.len() - n);
        }
    }
    // An image counts as a 1024x1024 one at high detail does with OpenAI (765 tokens).
    let size = |m: &ChatMessage| {
        estimate_tokens(&m.content)
            + 765 * m.images.len() as u64
            + m.tool_calls
                .iter()
                .map(|c| estimate_tokens(&c.arguments))
                .sum::<u64>()
    };
    if let Some(max) = run.max_prompt_tokens {
        let fixed: u64 = size(&system) + transcript.iter().map(size).sum::<u64>();
        let mut total = fixed + thread.iter().map(size).sum::<u64>();
        // Drop the oldest messages first, keeping at least the newest one.
        while total > max && thread.len() > 1 {
            total -= size(&thread.remove(0));
        }
        if total > max {
            return Err(PromptLimit::MaxPromptTokens);
        }
    }
    let max_tokens = match run.max_completion_tokens {
        Some(max) if completion_used >= max => return Err(PromptLimit::MaxCompletionTokens),
        Some(max) => Some(max - completion_used),
        None => None,
    };
    let mut messages = vec![system];
    messages.extend(thread);
    messages.extend(transcript.iter().cloned());
    let tools = functions(&run.tools, code_tool);
    Ok(ChatRequest {
        model: run.model.clone(),
        messages,
        tool_choice: tool_choice(&run.tool_choice, code_tool),
        tools,
        code_tool: code_tool.map(str::to_string),
        search_tool: None,
        parallel_tool_calls: run.parallel_tool_calls,
        temperature: run.temperature,
        top_p: run.top_p,
        max_tokens,
        response_format: run.response_format.upstream().cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FunctionDef, Text, Truncation};

    fn run(truncation: Truncation, max_prompt: Option<u64>, max_completion: Option<u64>) -> Run {
        serde_json::from_value(serde_json::json!({
            "id": "run_1", "object": "thread.run", "created_at": 0, "thread_id": "thread_1",
            "assistant_id": "asst_1", "status": "queued", "required_action": null,
            "last_error": null, "expires_at": null, "started_at": null, "cancelled_at": null,
            "failed_at": null, "completed_at": null, "incomplete_details": null,
            "model": "m", "instructions": "Be kind.", "tools": [], "metadata": {},
            "usage": null, "temperature": null, "top_p": null,
            "max_prompt_tokens": max_prompt, "max_completion_tokens": max_completion,
            "truncation_strategy": truncation, "tool_choice": "auto",
            "parallel_tool_calls": true, "response_format": "auto"
        }))
        .unwrap()
    }

    fn msg(i: usize) -> Message {
        Message {
            id: format!("msg_{i}"),
            object: crate::model::MessageTag,
            created_at: 0,
            thread_id: "thread_1".into(),
            status: crate::model::MessageStatus::Completed,
            incomplete_details: None,
            completed_at: None,
            incomplete_at: None,
            role: MessageRole::User,
            content: vec![Content::Text {
                text: Text {
                    value: format!("message number {i} with some words in it"),
                    annotations: vec![],
                },
            }],
            assistant_id: None,
            run_id: None,
            attachments: vec![],
            metadata: Default::default(),
        }
    }

    #[test]
    fn a_users_images_go_to_the_model_as_images_and_others_as_text() {
        use crate::model::{ImageFile, ImageUrl};
        let mut m = msg(1);
        m.content.push(Content::ImageUrl {
            image_url: ImageUrl {
                url: "https://example.test/a.png".into(),
                detail: Some(crate::model::ImageDetail::High),
            },
        });
        m.content.push(Content::ImageFile {
            image_file: ImageFile {
                file_id: "file-png".into(),
                detail: None,
            },
        });
        m.content.push(Content::ImageFile {
            image_file: ImageFile {
                file_id: "file-gone".into(),
                detail: None,
            },
        });
        let images = HashMap::from([("file-png".to_string(), "data:image/png;base64,AA==".into())]);
        let c = chat_message(&m, &[], &images);
        assert_eq!(
            c.images,
            [
                ImagePart {
                    url: "https://example.test/a.png".into(),
                    detail: Some(crate::model::ImageDetail::High)
                },
                ImagePart {
                    url: "data:image/png;base64,AA==".into(),
                    detail: None
                },
            ]
        );
        assert_eq!(
            c.content,
            "message number 1 with some words in it\n[image file file-gone]"
        );
        // An assistant's images stay text: Chat Completions takes images from users only.
        m.role = MessageRole::Assistant;
        let c = chat_message(&m, &[], &images);
        assert!(c.images.is_empty());
        assert!(c.content.contains("[image https://example.test/a.png]"));
        assert!(c.content.contains("[image file file-png]"));
    }

    #[test]
    fn truncation_keeps_the_newest_messages_and_limits_end_runs() {
        let history: Vec<Message> = (0..10).map(msg).collect();
        let texts = |r: &ChatRequest| {
            r.messages[1..]
                .iter()
                .map(|m| m.content.clone())
                .collect::<Vec<_>>()
        };
        let auto = Truncation {
            kind: "auto".into(),
            last_messages: None,
        };
        let r = build(
            &run(auto.clone(), None, None),
            None,
            &[],
            &history,
            &[],
            0,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(r.messages.len(), 11);
        assert_eq!(r.messages[0].content, "Be kind.");
        let last3 = Truncation {
            kind: "last_messages".into(),
            last_messages: Some(3),
        };
        let r = build(
            &run(last3, None, None),
            None,
            &[],
            &history,
            &[],
            0,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(texts(&r).len(), 3);
        assert!(texts(&r)[0].contains("number 7"));
        // Each message is ~10 tokens: a 35-token budget keeps the newest few.
        let r = build(
            &run(auto.clone(), Some(35), None),
            None,
            &[],
            &history,
            &[],
            0,
            &HashMap::new(),
        )
        .unwrap();
        let kept = texts(&r);
        assert!(!kept.is_empty() && kept.len() < 4, "{kept:?}");
        assert!(kept.last().unwrap().contains("number 9"));
        assert_eq!(
            build(
                &run(auto.clone(), Some(3), None),
                None,
                &[],
                &history,
                &[],
                0,
                &HashMap::new()
            )
            .unwrap_err(),
            PromptLimit::MaxPromptTokens
        );
        let r = build(
            &run(auto.clone(), None, Some(100)),
            None,
            &[],
            &history,
            &[],
            40,
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(r.max_tokens, Some(60));
        assert_eq!(
            build(
                &run(auto, None, Some(100)),
                None,
                &[],
                &history,
                &[],
                100,
                &HashMap::new()
            )
            .unwrap_err(),
            PromptLimit::MaxCompletionTokens
        );
    }

    #[test]
    fn the_code_tool_never_takes_a_user_functions_name() {
        let f = |n: &str| Tool::Function {
            function: FunctionDef {
                name: n.into(),
                description: None,
                parameters: None,
                strict: None,
            },
        };
        assert_eq!(code_tool_name(&[f("x")]), None);
        assert_eq!(
            code_tool_name(&[Tool::CodeInterpreter, f("x")]).as_deref(),
            Some("code_interpreter")
        );
        assert_eq!(
            code_tool_name(&[Tool::CodeInterpreter, f("code_interpreter")]).as_deref(),
            Some("code_interpreter_2")
        );
        let fs = functions(
            &[Tool::CodeInterpreter, f("code_interpreter")],
            Some("code_interpreter_2"),
        );
        let names: Vec<_> = fs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["code_interpreter", "code_interpreter_2"]);
    }
}
