//! The Chat Completions request, as OpenAI's wire format has it.

use serde::Serialize;

use crate::backend::{ChatMessage, ChatRequest, FunctionSpec, Role, ToolChoice};

/// The JSON body of a streamed Chat Completions request.
#[derive(Debug, Serialize)]
pub(super) struct RequestBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    /// Sent only with tools, and only when not `auto` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<WireToolChoice<'a>>,
    /// Sent only with tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    /// Passed through as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a crate::model::ResponseFormat>,
    stream: bool,
    stream_options: StreamOptions,
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// One message; `role` tells the variants apart.
#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: UserContent<'a>,
    },
    Assistant {
        /// `null` when a message that makes calls says nothing.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

/// A user's text, or (with images, for vision models) content parts: the text, then images.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum UserContent<'a> {
    Text(&'a str),
    Parts(Vec<ContentPart<'a>>),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Debug, Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<crate::model::ImageDetail>,
}

#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: FunctionType,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: FunctionType,
    function: &'a FunctionSpec,
}

/// The only tool type Chat Completions has: `"function"`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum FunctionType {
    Function,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum WireToolChoice<'a> {
    /// `"none"` or `"required"`.
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: FunctionType,
        function: FunctionName<'a>,
    },
}

#[derive(Debug, Serialize)]
struct FunctionName<'a> {
    name: &'a str,
}

impl<'a> RequestBody<'a> {
    pub(super) fn new(req: &'a ChatRequest) -> RequestBody<'a> {
        let has_tools = !req.tools.is_empty();
        let tool_choice = match &req.tool_choice {
            _ if !has_tools => None,
            ToolChoice::Auto => None,
            ToolChoice::None => Some(WireToolChoice::Mode("none")),
            ToolChoice::Required => Some(WireToolChoice::Mode("required")),
            ToolChoice::Function(name) => Some(WireToolChoice::Function {
                kind: FunctionType::Function,
                function: FunctionName { name },
            }),
        };
        RequestBody {
            model: &req.model,
            messages: req.messages.iter().map(WireMessage::of).collect(),
            tools: req
                .tools
                .iter()
                .map(|function| WireTool {
                    kind: FunctionType::Function,
                    function,
                })
                .collect(),
            tool_choice,
            parallel_tool_calls: has_tools.then_some(req.parallel_tool_calls),
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens: req.max_tokens,
            response_format: req.response_format.as_ref(),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
        }
    }
}

impl<'a> WireMessage<'a> {
    fn of(m: &'a ChatMessage) -> WireMessage<'a> {
        match m.role {
            Role::System => WireMessage::System {
                content: &m.content,
            },
            Role::User if m.images.is_empty() => WireMessage::User {
                content: UserContent::Text(&m.content),
            },
            Role::User => {
                let text =
                    (!m.content.is_empty()).then_some(ContentPart::Text { text: &m.content });
                let images = m.images.iter().map(|image| ContentPart::ImageUrl {
                    image_url: ImageUrl {
                        url: &image.url,
                        detail: image.detail,
                    },
                });
                WireMessage::User {
                    content: UserContent::Parts(text.into_iter().chain(images).collect()),
                }
            }
            Role::Assistant => WireMessage::Assistant {
                content: (m.tool_calls.is_empty() || !m.content.is_empty())
                    .then_some(m.content.as_str()),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| WireToolCall {
                        id: &c.id,
                        kind: FunctionType::Function,
                        function: WireFunctionCall {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
            },
            Role::Tool => WireMessage::Tool {
                tool_call_id: m.tool_call_id.as_deref().unwrap_or_default(),
                content: &m.content,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn request_body(req: &ChatRequest) -> Value {
        serde_json::to_value(RequestBody::new(req)).unwrap()
    }

    #[test]
    fn tool_choice_is_sent_only_when_not_auto() {
        let mut req = ChatRequest::new("test-model", vec![ChatMessage::new(Role::User, "Hello?")]);
        req.tools = vec![FunctionSpec {
            name: "f".into(),
            description: None,
            parameters: json!({}),
            strict: None,
        }];
        let body = request_body(&req);
        assert_eq!(body.get("tool_choice"), None);
        assert_eq!(body["parallel_tool_calls"], json!(true));
        req.tool_choice = ToolChoice::None;
        assert_eq!(request_body(&req)["tool_choice"], json!("none"));
        req.tool_choice = ToolChoice::Required;
        assert_eq!(request_body(&req)["tool_choice"], json!("required"));
    }
}
