//! The upstream backend against a scripted HTTP server ([`super::test_server`]): streaming,
//! live tool-call deltas, calls written as text, the request, retries and errors.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::test_server::*;
use super::*;
use crate::backend::{
    ChatMessage, FinishReason, FunctionSpec, ModelDelta, OwnedDelta, Role, ToolCall, ToolChoice,
    Usage, estimate_tokens,
};

const KEY: &str = "sk-test-secret-key-1234";

// ---- Helpers -------------------------------------------------------------------------------

/// Records what a sink is given.
#[derive(Debug, Default)]
pub(super) struct Recorded(Mutex<Vec<OwnedDelta>>);

impl Recorded {
    pub(super) fn push(&self, d: ModelDelta<'_>) {
        self.0.lock().unwrap().push(OwnedDelta::from(d));
    }

    pub(super) fn sink(&self) -> impl Fn(ModelDelta<'_>) + Send + Sync + '_ {
        move |d| self.push(d)
    }

    pub(super) fn all(&self) -> Vec<OwnedDelta> {
        self.0.lock().unwrap().clone()
    }

    /// The text pieces.
    pub(super) fn texts(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                OwnedDelta::Text(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// What the pieces add up to (checking that each call was started, in order, before its
    /// arguments): the text and the calls.
    pub(super) fn joined(&self) -> (String, Vec<ToolCall>) {
        let mut text = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        for seen in self.all() {
            match seen {
                OwnedDelta::Text(t) => text.push_str(&t),
                OwnedDelta::CallStarted { index, id, name } => {
                    assert_eq!(index, calls.len(), "calls started out of order");
                    calls.push(ToolCall {
                        id,
                        name,
                        arguments: String::new(),
                    });
                }
                OwnedDelta::Arguments { index, text } => {
                    assert!(!text.is_empty(), "an empty Arguments piece");
                    calls
                        .get_mut(index)
                        .expect("arguments before their call was started")
                        .arguments
                        .push_str(&text);
                }
            }
        }
        (text, calls)
    }

    /// The pieces add up to `answer`.
    pub(super) fn assert_adds_up_to(&self, answer: &ChatResponse) {
        let (text, calls) = self.joined();
        assert_eq!(text, answer.text, "the text pieces");
        assert_eq!(calls, answer.tool_calls, "the call pieces");
    }
}

fn simple_stream() -> Reply {
    stream(&sse(&[text_event("ok"), finish_event("stop")]), 64)
}

fn config(server: &Server) -> UpstreamConfig {
    UpstreamConfig {
        api_key: Some(KEY.to_string()),
        initial_backoff: Duration::from_millis(1),
        request_timeout: Duration::from_secs(10),
        ..UpstreamConfig::new(&server.base)
    }
}

fn upstream(server: &Server) -> Upstream {
    Upstream::new(config(server)).unwrap()
}

fn chat(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest::new("test-model", messages)
}

fn hello() -> ChatRequest {
    chat(vec![ChatMessage::new(Role::User, "Hello?")])
}

/// Completes `req`, returning the result and the pieces of text passed on (after checking that
/// all the pieces add up to the answer).
async fn run(up: &Upstream, req: ChatRequest) -> (Result<ChatResponse, BackendError>, Vec<String>) {
    let recorded = Recorded::default();
    let result = up.complete(req, &recorded.sink()).await;
    if let Ok(answer) = &result {
        recorded.assert_adds_up_to(answer);
    }
    (result, recorded.texts())
}

// ---- (1) streamed text -------------------------------------------------------------

#[tokio::test]
async fn streamed_text_arrives_in_order_with_reported_usage() {
    let deltas = ["Hel", "lo, w", "örld! ", "🌍 Ün", "ïcode", "."];
    let event = |v: &Value| format!("data: {v}\r\n\r\n");
    let first = format!(
        ": keep-alive\r\n\r\nevent: message\r\nid: 1\r\nretry: 1000\r\n{}",
        event(&text_event(deltas[0]))
    );
    let mut rest: String = deltas[1..].iter().map(|d| event(&text_event(d))).collect();
    rest.push_str(": ping\r\n\r\n");
    rest.push_str(&event(&finish_event("stop")));
    rest.push_str(&event(&json!({
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    })));
    rest.push_str("data: [DONE]\r\n\r\n");

    // The server sends the rest only once the first text has reached the sink.
    let cue = Cue::new(Duration::from_secs(5));
    let mut script = pieces(first.as_bytes(), 3);
    script.push(Piece::Await(cue.clone()));
    script.extend(pieces(rest.as_bytes(), 3));
    let server = Server::start(vec![Reply::Stream {
        pieces: script,
        abrupt: false,
    }])
    .await;

    let up = upstream(&server);
    let recorded = Recorded::default();
    let sink = |d: ModelDelta<'_>| {
        recorded.push(d);
        cue.go();
    };
    let answer = up.complete(hello(), &sink).await.unwrap();
    let seen = recorded.texts();

    assert!(cue.was_given(), "text was not passed on as it arrived");
    assert_eq!(seen, deltas);
    assert_eq!(answer.text, deltas.concat());
    assert_eq!(answer.text, "Hello, wörld! 🌍 Ünïcode.");
    assert!(answer.tool_calls.is_empty());
    assert_eq!(answer.finish, FinishReason::Stop);
    assert_eq!(
        answer.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 7
        }
    );
    assert_eq!(server.received().len(), 1);
}

// ---- (2) parallel tool calls -------------------------------------------------------

#[tokio::test]
async fn interleaved_parallel_tool_calls_are_assembled() {
    let args_a = r#"{"city": "Paris, France", "unit": "celsius"}"#;
    let args_b = r#"{"timezone": "Europe/Paris", "format": "24h ünïcode \"quoted\""}"#;
    let mut events = vec![
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null,
            "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]},
            "finish_reason": null}]}),
        call_event(json!([{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "get_time", "arguments": ""}}])),
    ];
    let (frags_a, frags_b) = (char_pieces(args_a, 3), char_pieces(args_b, 4));
    for i in 0..frags_a.len().max(frags_b.len()) {
        let a = frags_a.get(i).map(|f| {
            let mut frag = json!({"index": 0, "function": {"arguments": f}});
            if i == 2 {
                frag["id"] = json!("call_a"); // sent again
            }
            frag
        });
        let b = frags_b.get(i).map(|f| {
            let mut frag = json!({"index": 1, "function": {"arguments": f}});
            if i == 3 {
                frag["id"] = json!("call_other"); // a different id: the first one stays
            }
            frag
        });
        match (a, b) {
            // Both calls' fragments in one delta, the second call first.
            (Some(a), Some(b)) if i == 5 => events.push(call_event(json!([b, a]))),
            (a, b) => {
                events.extend(b.map(|b| call_event(json!([b]))));
                events.extend(a.map(|a| call_event(json!([a]))));
            }
        }
    }
    events.push(finish_event("tool_calls"));
    let server = Server::start(vec![stream(&sse(&events), 7)]).await;
    let question = "What's the weather and the time in Paris?";
    let req = chat(vec![ChatMessage::new(Role::User, question)]);

    let (answer, seen) = run(&upstream(&server), req).await;
    let answer = answer.unwrap();

    assert_eq!(
        answer.tool_calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "get_weather".into(),
                arguments: args_a.into()
            },
            ToolCall {
                id: "call_b".into(),
                name: "get_time".into(),
                arguments: args_b.into()
            },
        ]
    );
    assert_eq!(answer.finish, FinishReason::ToolCalls);
    assert_eq!(answer.text, "");
    assert!(seen.is_empty());
    // No usage reported: estimated.
    let completion = estimate_tokens("get_weather")
        + estimate_tokens(args_a)
        + estimate_tokens("get_time")
        + estimate_tokens(args_b);
    assert_eq!(
        answer.usage,
        Usage {
            prompt_tokens: estimate_tokens(question),
            completion_tokens: completion
        }
    );
}

// ---- (3) the request ---------------------------------------------------------------

#[tokio::test]
async fn the_request_has_openais_shape() {
    let server = Server::start(vec![simple_stream()]).await;
    let cfg = UpstreamConfig {
        base_url: format!("{}/", server.base), // a trailing slash
        ..config(&server)
    };
    let up = Upstream::new(cfg).unwrap();
    let code_args = r#"{"code":"1+1"}"#;
    let params = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    let req = ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: vec![
            ChatMessage::new(Role::System, "You are helpful."),
            ChatMessage::new(Role::User, "What is 1+1?"),
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "python".into(),
                    arguments: code_args.into(),
                }],
                tool_call_id: None,
                images: vec![],
            },
            ChatMessage::tool_result("call_1", r#"{"status":"completed","logs":"2"}"#),
            ChatMessage::new(Role::Assistant, "It is 2."),
            ChatMessage {
                images: vec![
                    crate::backend::ImagePart {
                        url: "https://example.test/sky.png".into(),
                        detail: Some(crate::model::ImageDetail::Low),
                    },
                    crate::backend::ImagePart {
                        url: "data:image/png;base64,iVBORw0KGgo=".into(),
                        detail: None,
                    },
                ],
                ..ChatMessage::new(Role::User, "And the weather?")
            },
        ],
        tools: vec![
            FunctionSpec {
                name: "python".into(),
                description: Some("Runs Python.".into()),
                parameters: json!({"type": "object"}),
                strict: None,
            },
            FunctionSpec {
                name: "get_weather".into(),
                description: None,
                parameters: params.clone(),
                strict: Some(true),
            },
        ],
        code_tool: Some("python".into()),
        search_tool: None,
        tool_choice: ToolChoice::Function("get_weather".into()),
        parallel_tool_calls: false,
        temperature: Some(0.5),
        top_p: Some(0.25),
        max_tokens: Some(256),
        response_format: Some(crate::model::ResponseFormat::JsonObject {}),
    };

    let (answer, _) = run(&up, req).await;
    assert_eq!(answer.unwrap().text, "ok");

    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let expected = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is 1+1?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "python", "arguments": code_args}}]},
            {"role": "tool", "tool_call_id": "call_1",
             "content": r#"{"status":"completed","logs":"2"}"#},
            {"role": "assistant", "content": "It is 2."},
            {"role": "user", "content": [
                {"type": "text", "text": "And the weather?"},
                {"type": "image_url", "image_url": {"url": "https://example.test/sky.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]},
        ],
        "tools": [
            {"type": "function", "function": {"name": "python",
                "description": "Runs Python.", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "get_weather",
                "parameters": params, "strict": true}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "temperature": 0.5,
        "top_p": 0.25,
        "max_tokens": 256,
        "response_format": {"type": "json_object"},
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    assert_eq!(request.json(), expected);
}

#[tokio::test]
async fn a_plain_request_has_no_tool_fields_and_no_key() {
    let server = Server::start(vec![simple_stream()]).await;
    let up = Upstream::new(UpstreamConfig::new(&server.base)).unwrap();
    let mut req = hello();
    req.tool_choice = ToolChoice::Required; // no tools: not sent

    run(&up, req).await.0.unwrap();

    let request = &server.received()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(
        request.json(),
        json!({
            "model": "test-model",
            "messages": [{"role": "user", "content": "Hello?"}],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

// ---- (4) retries and errors --------------------------------------------------------

fn openai_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error",
                     "param": null, "code": null}})
}

#[tokio::test]
async fn rate_limits_are_retried_until_success() {
    let limited = json_reply(429, openai_error("Rate limit reached"));
    let server = Server::start(vec![limited.clone(), limited, simple_stream()]).await;

    let (answer, seen) = run(&upstream(&server), hello()).await;

    assert_eq!(answer.unwrap().text, "ok");
    assert_eq!(seen, ["ok"]);
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn endless_rate_limits_give_rate_limited() {
    let server = Server::start(vec![json_reply(429, openai_error("Rate limit reached"))]).await;
    let cfg = UpstreamConfig {
        max_retries: 2,
        ..config(&server)
    };

    let (answer, _) = run(&Upstream::new(cfg).unwrap(), hello()).await;

    match answer {
        Err(BackendError::RateLimited(msg)) => {
            assert!(msg.contains("Rate limit reached"), "{msg}");
            assert!(msg.contains("3 attempts"), "{msg}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn endless_server_errors_give_server_error() {
    let server = Server::start(vec![Reply::Whole {
        status: 500,
        content_type: "text/plain",
        headers: vec![],
        body: "Internal   Server\nError".into(),
    }])
    .await;

    let (answer, _) = run(&upstream(&server), hello()).await;

    match answer {
        Err(BackendError::Server(msg)) => {
            assert!(msg.contains("500"), "{msg}");
            assert!(msg.contains("Internal Server Error"), "{msg}");
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert_eq!(server.received().len(), 4); // 1 + max_retries
}

#[tokio::test]
async fn bad_requests_are_invalid_prompts_and_not_retried() {
    let upstream_msg = "This model's maximum context length is 4096 tokens.";
    let server = Server::start(vec![json_reply(400, openai_error(upstream_msg))]).await;

    let (answer, seen) = run(&upstream(&server), hello()).await;

    match answer {
        Err(BackendError::InvalidPrompt(msg)) => assert!(msg.contains(upstream_msg), "{msg}"),
        other => panic!("expected InvalidPrompt, got {other:?}"),
    }
    assert!(seen.is_empty());
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn vllm_style_errors_are_quoted_and_truncated() {
    let long = "x".repeat(2000);
    let server = Server::start(vec![
        json_reply(
            404,
            json!({"object": "error", "message": "The model `nope` does not exist.",
                   "type": "NotFoundError", "code": 404}),
        ),
        json_reply(422, openai_error(&long)),
    ])
    .await;
    let up = upstream(&server);

    let (first, _) = run(&up, hello()).await;
    let (second, _) = run(&up, hello()).await;

    assert_eq!(
        first,
        Err(BackendError::InvalidPrompt(
            "the upstream model server refused the request (HTTP 404 Not Found): \
             The model `nope` does not exist."
                .into()
        ))
    );
    let Err(BackendError::InvalidPrompt(msg)) = second else {
        panic!("expected InvalidPrompt, got {second:?}");
    };
    assert!(msg.contains(&"x".repeat(500)), "{msg}");
    assert!(!msg.contains(&"x".repeat(501)), "{msg}");
    assert!(msg.ends_with('…'), "{msg}");
}

#[tokio::test]
async fn rejected_credentials_are_a_server_error_without_the_key() {
    let echo = format!("Incorrect API key provided: {KEY}.");
    let server = Server::start(vec![json_reply(401, openai_error(&echo))]).await;

    let (answer, _) = run(&upstream(&server), hello()).await;

    let Err(BackendError::Server(msg)) = answer else {
        panic!("expected Server, got {answer:?}");
    };
    assert!(msg.contains("credentials"), "{msg}");
    assert!(msg.contains("Incorrect API key provided"), "{msg}");
    assert!(!msg.contains(KEY), "the key leaked: {msg}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = Server::start(vec![
        Reply::Whole {
            status: 503,
            content_type: "application/json",
            headers: vec![("Retry-After", "0")],
            body: openai_error("overloaded").to_string(),
        },
        simple_stream(),
    ])
    .await;
    // Without Retry-After the first retry would wait a minute.
    let cfg = UpstreamConfig {
        initial_backoff: Duration::from_secs(60),
        ..config(&server)
    };

    let up = Upstream::new(cfg).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), run(&up, hello()))
        .await
        .expect("Retry-After: 0 was not honoured");

    assert_eq!(answer.0.unwrap().text, "ok");
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn timeouts_are_retried_then_a_server_error() {
    let server = Server::start(vec![Reply::Silent]).await;
    let cfg = UpstreamConfig {
        max_retries: 1,
        request_timeout: Duration::from_millis(150),
        ..config(&server)
    };

    let (answer, _) = run(&Upstream::new(cfg).unwrap(), hello()).await;

    let Err(BackendError::Server(msg)) = answer else {
        panic!("expected Server, got {answer:?}");
    };
    assert!(msg.contains("did not answer within"), "{msg}");
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn an_unreachable_server_is_a_server_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = UpstreamConfig {
        max_retries: 1,
        initial_backoff: Duration::from_millis(1),
        ..UpstreamConfig::new(format!("http://{addr}/v1"))
    };

    let (answer, _) = run(&Upstream::new(cfg).unwrap(), hello()).await;

    let Err(BackendError::Server(msg)) = answer else {
        panic!("expected Server, got {answer:?}");
    };
    assert!(msg.contains("could not connect"), "{msg}");
    assert!(msg.contains("2 attempts"), "{msg}");
}

// ---- (5) broken streams ------------------------------------------------------------

#[tokio::test]
async fn a_stream_ending_before_done_is_a_server_error_and_not_retried() {
    let body: String = ["data: ", &text_event("Partial ").to_string(), "\n\n"].concat();
    let server = Server::start(vec![stream(&body, 5), simple_stream()]).await;

    let (answer, seen) = run(&upstream(&server), hello()).await;

    let Err(BackendError::Server(msg)) = answer else {
        panic!("expected Server, got {answer:?}");
    };
    assert!(msg.contains("ended before"), "{msg}");
    assert_eq!(seen, ["Partial "]);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_connection_cut_mid_stream_is_a_server_error() {
    let body: String = ["data: ", &text_event("Partial ").to_string(), "\n\n"].concat();
    let server = Server::start(vec![
        Reply::Stream {
            pieces: pieces(body.as_bytes(), 5),
            abrupt: true,
        },
        simple_stream(),
    ])
    .await;

    let (answer, seen) = run(&upstream(&server), hello()).await;

    let Err(BackendError::Server(msg)) = answer else {
        panic!("expected Server, got {answer:?}");
    };
    assert!(msg.contains("broke off"), "{msg}");
    assert_eq!(seen, ["Partial "]);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn reading_stops_at_done_even_if_the_connection_stays_open() {
    let mut script = pieces(sse(&[text_event("Hi"), finish_event("stop")]).as_bytes(), 9);
    script.push(Piece::Bytes(b"data: {not json\n\n".to_vec()));
    script.push(Piece::Hold);
    let server = Server::start(vec![Reply::Stream {
        pieces: script,
        abrupt: false,
    }])
    .await;

    let up = upstream(&server);
    let (answer, _) = tokio::time::timeout(Duration::from_secs(5), run(&up, hello()))
        .await
        .expect("the client waited past [DONE]");

    assert_eq!(answer.unwrap().text, "Hi");
}

#[tokio::test]
async fn a_cut_after_the_finish_reason_still_counts() {
    let body: String = [text_event("Done."), finish_event("stop")]
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    let server = Server::start(vec![Reply::Stream {
        pieces: pieces(body.as_bytes(), 16),
        abrupt: true,
    }])
    .await;

    let answer = run(&upstream(&server), hello()).await.0.unwrap();

    assert_eq!(answer.text, "Done.");
    assert_eq!(answer.finish, FinishReason::Stop);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_finish_reason_without_done_is_enough() {
    let body: String = [text_event("Done."), finish_event("length")]
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    let server = Server::start(vec![stream(&body, 16)]).await;

    let answer = run(&upstream(&server), hello()).await.0.unwrap();

    assert_eq!(answer.text, "Done.");
    assert_eq!(answer.finish, FinishReason::Length);
}

#[tokio::test]
async fn errors_and_garbage_in_the_stream_are_server_errors() {
    let server = Server::start(vec![
        stream(
            &sse(&[
                text_event("A"),
                json!({"error": {"message": "GPU fell over"}}),
            ]),
            64,
        ),
        stream("data: {\"choices\": [\n\n", 64),
    ])
    .await;
    let up = upstream(&server);

    let (first, _) = run(&up, hello()).await;
    let (second, _) = run(&up, hello()).await;

    let Err(BackendError::Server(msg)) = first else {
        panic!("expected Server, got {first:?}");
    };
    assert!(msg.contains("GPU fell over"), "{msg}");
    let Err(BackendError::Server(msg)) = second else {
        panic!("expected Server, got {second:?}");
    };
    assert!(msg.contains("malformed"), "{msg}");
}

// ---- (6) non-streamed answers ------------------------------------------------------

#[tokio::test]
async fn a_non_streamed_answer_is_understood() {
    let server = Server::start(vec![
        json_reply(
            200,
            json!({
                "id": "chatcmpl-9", "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "Let me look.",
                    "tool_calls": [{"id": "call_x", "type": "function",
                        "function": {"name": "lookup", "arguments": "{\"q\":\"rust\"}"}}]}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
            }),
        ),
        json_reply(
            200,
            json!({"choices": [{"message": {"role": "assistant", "content": "Hi there."},
                                "finish_reason": "stop"}]}),
        ),
    ])
    .await;
    let up = upstream(&server);

    let (first, seen) = run(&up, hello()).await;
    let first = first.unwrap();
    assert_eq!(seen, ["Let me look."]);
    assert_eq!(first.text, "Let me look.");
    assert_eq!(
        first.tool_calls,
        vec![ToolCall {
            id: "call_x".into(),
            name: "lookup".into(),
            arguments: r#"{"q":"rust"}"#.into()
        }]
    );
    assert_eq!(first.finish, FinishReason::ToolCalls);
    assert_eq!(
        first.usage,
        Usage {
            prompt_tokens: 20,
            completion_tokens: 5
        }
    );

    let (second, seen) = run(&up, hello()).await;
    let second = second.unwrap();
    assert_eq!(seen, ["Hi there."]);
    assert_eq!(second.finish, FinishReason::Stop);
    assert_eq!(
        second.usage,
        Usage {
            prompt_tokens: estimate_tokens("Hello?"),
            completion_tokens: estimate_tokens("Hi there.")
        }
    );
}

// ---- (7) models --------------------------------------------------------------------

#[tokio::test]
async fn models_come_from_the_allow_list_or_the_server() {
    let server = Server::start(vec![json_reply(
        200,
        json!({"object": "list", "data": [
            {"id": "gpt-4o", "object": "model", "owned_by": "openai"},
            {"id": "llama3.1:8b", "object": "model"}]}),
    )])
    .await;
    let listed = UpstreamConfig {
        models: Some(vec!["a".into(), "b".into()]),
        ..config(&server)
    };

    let up = Upstream::new(listed).unwrap();
    assert_eq!(up.models().await.unwrap(), ["a", "b"]);
    assert!(server.received().is_empty());

    let up = upstream(&server);
    assert_eq!(up.models().await.unwrap(), ["gpt-4o", "llama3.1:8b"]);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "GET");
    assert_eq!(received[0].path, "/v1/models");
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn model_list_errors_are_mapped() {
    let server = Server::start(vec![
        json_reply(503, openai_error("warming up")),
        json_reply(200, json!({"unexpected": true})),
    ])
    .await;
    let up = upstream(&server);

    let first = up.models().await;
    let second = up.models().await;

    assert!(
        matches!(&first, Err(BackendError::Server(m)) if m.contains("warming up")),
        "{first:?}"
    );
    assert!(
        matches!(&second, Err(BackendError::Server(m)) if m.contains("not understood")),
        "{second:?}"
    );
}

// ---- Units ---------------------------------------------------------------------------------

#[test]
fn debug_output_redacts_the_key() {
    let cfg = UpstreamConfig {
        api_key: Some(KEY.into()),
        ..UpstreamConfig::new("http://h/v1")
    };
    let up = Upstream::new(cfg.clone()).unwrap();
    for shown in [format!("{cfg:?}"), format!("{up:?}")] {
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}

#[test]
fn serves_follows_the_allow_list() {
    let open = Upstream::new(UpstreamConfig::new("http://h/v1")).unwrap();
    assert!(open.serves("anything"));
    let listed = Upstream::new(UpstreamConfig {
        models: Some(vec!["llama".into()]),
        ..UpstreamConfig::new("http://h/v1")
    })
    .unwrap();
    assert!(listed.serves("llama"));
    assert!(!listed.serves("gpt-4o"));
}

#[test]
fn bad_base_urls_are_refused() {
    assert!(Upstream::new(UpstreamConfig::new("not a url")).is_err());
    assert!(Upstream::new(UpstreamConfig::new("ftp://h/v1")).is_err());
}

// ---- Live tool-call deltas -------------------------------------------------------------------

fn tool(name: &str) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: None,
    }
}

/// A question offering the code tool and `get_weather`.
fn with_tools() -> ChatRequest {
    ChatRequest {
        tools: vec![tool("code_interpreter"), tool("get_weather")],
        code_tool: Some("code_interpreter".into()),
        search_tool: None,
        ..hello()
    }
}

#[tokio::test]
async fn call_arguments_are_passed_on_before_the_stream_ends() {
    let head = [
        data(&call_start_event(0, "call_1", "code_interpreter")),
        data(&arguments_event(0, "{\"code\": \"pri")),
    ]
    .concat();
    let tail = sse(&[
        arguments_event(0, "nt(6*7)"),
        arguments_event(0, "\"}"),
        finish_event("tool_calls"),
    ]);
    // The server sends the rest only once the first piece of arguments reached the sink.
    let cue = Cue::new(Duration::from_secs(5));
    let mut script = pieces(head.as_bytes(), 11);
    script.push(Piece::Await(cue.clone()));
    script.extend(pieces(tail.as_bytes(), 11));
    let server = Server::start(vec![Reply::Stream {
        pieces: script,
        abrupt: false,
    }])
    .await;

    let recorded = Recorded::default();
    let sink = |d: ModelDelta<'_>| {
        let arguments = matches!(d, ModelDelta::Arguments { .. });
        recorded.push(d);
        if arguments {
            cue.go();
        }
    };
    let answer = upstream(&server)
        .complete(with_tools(), &sink)
        .await
        .unwrap();

    assert!(cue.was_given(), "no arguments were passed on mid-stream");
    let seen = recorded.all();
    assert_eq!(
        seen[..2],
        [
            OwnedDelta::CallStarted {
                index: 0,
                id: "call_1".into(),
                name: "code_interpreter".into()
            },
            OwnedDelta::Arguments {
                index: 0,
                text: "{\"code\": \"pri".into()
            }
        ]
    );
    assert!(seen.len() > 3, "the rest came in pieces too: {seen:?}");
    recorded.assert_adds_up_to(&answer);
    assert_eq!(answer.tool_calls[0].arguments, r#"{"code": "print(6*7)"}"#);
    assert_eq!(answer.finish, FinishReason::ToolCalls);
}

#[tokio::test]
async fn interleaved_parallel_calls_are_passed_on_live_and_add_up() {
    let args_a = r#"{"city": "Paris, France", "unit": "celsius"}"#;
    let args_b = r#"{"code": "import math\nprint(math.pi)"}"#;
    let mut events = vec![
        call_start_event(0, "call_a", "get_weather"),
        call_start_event(1, "call_b", "code_interpreter"),
    ];
    let (frags_a, frags_b) = (char_pieces(args_a, 5), char_pieces(args_b, 3));
    for i in 0..frags_a.len().max(frags_b.len()) {
        events.extend(frags_a.get(i).map(|f| arguments_event(0, f)));
        events.extend(frags_b.get(i).map(|f| arguments_event(1, f)));
    }
    events.push(finish_event("tool_calls"));
    let server = Server::start(vec![stream(&sse(&events), 13)]).await;

    let recorded = Recorded::default();
    let answer = upstream(&server)
        .complete(with_tools(), &recorded.sink())
        .await
        .unwrap();

    recorded.assert_adds_up_to(&answer);
    let ids: Vec<_> = answer.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_a", "call_b"]);
    assert_eq!(answer.tool_calls[0].arguments, args_a);
    assert_eq!(answer.tool_calls[1].arguments, args_b);
    // As they arrived: both started first, then the pieces alternate.
    let indices: Vec<usize> = recorded
        .all()
        .iter()
        .filter_map(|s| match s {
            OwnedDelta::Arguments { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(indices.len(), frags_a.len() + frags_b.len());
    assert_eq!(indices[..4], [0, 1, 0, 1]);
}

// ---- Tool calls written as text --------------------------------------------------------------

const WRITTEN_CALL: &str = r#"{"name": "code_interpreter", "arguments": {"code": "print(6*7)"}}"#;

/// Streams `content` in pieces of 4 characters, then `stop`.
fn text_stream(content: &str) -> Reply {
    let mut events: Vec<Value> = char_pieces(content, 4)
        .iter()
        .map(|p| text_event(p))
        .collect();
    events.push(finish_event("stop"));
    stream(&sse(&events), 32)
}

#[tokio::test]
async fn tool_calls_written_as_text_are_calls_and_no_text_is_passed_on() {
    let weather = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
    let forms = [
        (WRITTEN_CALL.to_string(), 1),
        (format!("\n```json\n{WRITTEN_CALL}\n```\n"), 1),
        (format!("<tool_call>\n{WRITTEN_CALL}\n</tool_call>"), 1),
        (format!("[{WRITTEN_CALL}, {weather}]"), 2),
        (
            r#"{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}"#.to_string(),
            1,
        ),
    ];
    let server = Server::start(forms.iter().map(|(f, _)| text_stream(f)).collect()).await;
    let up = upstream(&server);
    for (form, calls) in &forms {
        let recorded = Recorded::default();
        let answer = up.complete(with_tools(), &recorded.sink()).await.unwrap();

        assert!(recorded.texts().is_empty(), "{form}: {:?}", recorded.all());
        recorded.assert_adds_up_to(&answer);
        assert_eq!(answer.text, "", "{form}");
        assert_eq!(answer.finish, FinishReason::ToolCalls, "{form}");
        assert_eq!(answer.tool_calls.len(), *calls, "{form}");
        let first = &answer.tool_calls[0];
        assert!(first.id.starts_with("call_"), "{form}");
        let arguments: Value = serde_json::from_str(&first.arguments).unwrap();
        if first.name == "code_interpreter" {
            assert_eq!(arguments, json!({"code": "print(6*7)"}), "{form}");
        } else {
            assert_eq!(arguments, json!({"city": "Paris"}), "{form}");
        }
    }
}

#[tokio::test]
async fn text_that_is_not_a_call_stays_text() {
    let forms = [
        // Prose that contains JSON.
        format!("Run this: {WRITTEN_CALL}"),
        // A name not offered.
        r#"{"name": "rm_rf", "arguments": {"path": "/"}}"#.to_string(),
        // Broken JSON.
        r#"{"name": "code_interpreter", "arguments": {"code": "print(1)"}"#.to_string(),
        // A JSON object that is just an answer.
        r#"{"answer": 42, "explanation": "six times seven"}"#.to_string(),
        // A call, then more.
        format!("{WRITTEN_CALL}\nThat prints 42."),
    ];
    let server = Server::start(forms.iter().map(|f| text_stream(f)).collect()).await;
    let up = upstream(&server);
    for form in &forms {
        let recorded = Recorded::default();
        let answer = up.complete(with_tools(), &recorded.sink()).await.unwrap();

        recorded.assert_adds_up_to(&answer);
        assert_eq!(&answer.text, form);
        assert!(answer.tool_calls.is_empty(), "{form}");
        assert_eq!(answer.finish, FinishReason::Stop, "{form}");
    }
}

#[tokio::test]
async fn held_text_is_passed_on_once_it_cannot_be_a_call() {
    // `{"an` cannot be a call (no key of one starts so): it goes on before the stream does.
    let cue = Cue::new(Duration::from_secs(5));
    let mut script = pieces(
        [data(&text_event("{\"ans")), data(&text_event("wer\": 4"))]
            .concat()
            .as_bytes(),
        64,
    );
    script.push(Piece::Await(cue.clone()));
    script.extend(pieces(
        sse(&[text_event("2}"), finish_event("stop")]).as_bytes(),
        64,
    ));
    let server = Server::start(vec![Reply::Stream {
        pieces: script,
        abrupt: false,
    }])
    .await;

    let recorded = Recorded::default();
    let sink = |d: ModelDelta<'_>| {
        recorded.push(d);
        cue.go();
    };
    let answer = upstream(&server)
        .complete(with_tools(), &sink)
        .await
        .unwrap();

    assert!(cue.was_given(), "the text was held to the end");
    assert_eq!(recorded.texts(), ["{\"ans", "wer\": 4", "2}"]);
    assert_eq!(answer.text, "{\"answer\": 42}");
}

#[tokio::test]
async fn text_tool_calls_can_be_turned_off() {
    let server = Server::start(vec![text_stream(WRITTEN_CALL)]).await;
    let up = Upstream::new(UpstreamConfig {
        text_tool_calls: false,
        ..config(&server)
    })
    .unwrap();

    let (answer, seen) = run(&up, with_tools()).await;

    let answer = answer.unwrap();
    assert_eq!(answer.text, WRITTEN_CALL);
    assert_eq!(seen.concat(), WRITTEN_CALL);
    assert!(seen.len() > 1, "passed on as it came");
    assert!(answer.tool_calls.is_empty());
}
