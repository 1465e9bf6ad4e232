//! `GET /openapi.json`: an OpenAPI 3.1 description of exactly the routes Oasis serves.
//!
//! Request schemas say what the handlers accept (types, enums, limits, required fields, and
//! `additionalProperties: false` where unknown fields are refused), so a fuzzer can aim at the
//! edges; every non-2xx answer is OpenAI's error body. Like `/health`, the document is served
//! without an API key. In `tools` mode only the routes that mode serves are listed.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::{AppState, Mode};

/// The largest value a `u64` field takes.
const U64_MAX: u64 = u64::MAX;

static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

pub async fn serve(State(state): State<AppState>) -> Json<Value> {
    let mut doc = DOCUMENT.clone();
    if state.config.mode == Mode::Tools
        && let Some(paths) = doc["paths"].as_object_mut()
    {
        paths.retain(|p, _| served_in_tools_mode(p));
    }
    Json(doc)
}

/// The routes `--mode tools` serves.
fn served_in_tools_mode(path: &str) -> bool {
    path == "/health"
        || path == "/openapi.json"
        || path.starts_with("/v1/files")
        || path.starts_with("/v1/code_interpreter/")
}

/// The whole document (the `all` mode's routes).
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Oasis",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A self-hosted, OpenAI-compatible Assistants API (v2) with a sandboxed \
                Python code interpreter. Every `/v1` route takes `Authorization: Bearer KEY` when \
                the server has API keys (`OASIS_API_KEYS`; without them any key, or none, is \
                accepted); `/health` and `/openapi.json` never need one. `OpenAI-Beta: \
                assistants=v2` is optional; `assistants=v1` is refused with a 400 on any `/v1` \
                route. JSON request bodies may be at most 2 MiB; a body that is empty or only \
                whitespace counts as `{}`. Errors are OpenAI's `{\"error\": {\"message\", \
                \"type\", \"param\", \"code\"}}`. `GET /v1/threads` is an Oasis extension, served \
                only when enabled (`OASIS_THREAD_LIST=true`). With `--mode tools` only \
                `/health`, `/openapi.json`, `/v1/files` and `/v1/code_interpreter/*` are served \
                (and listed here)."
        },
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "Meta"}, {"name": "Files"}, {"name": "Assistants"}, {"name": "Threads"},
            {"name": "Messages"}, {"name": "Runs"}, {"name": "Models"},
            {"name": "Code interpreter"}
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of `OASIS_API_KEYS`; not checked when none are set."
                }
            },
            "responses": error_responses(),
            "schemas": schemas(),
        }
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true, "description": description,
        "schema": {"type": "string"}
    })
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "schema": schema})
}

/// `limit`, `order`, `after`, `before`.
fn list_params() -> Vec<Value> {
    vec![
        query_param(
            "limit",
            "How many objects to return.",
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
        ),
        query_param(
            "order",
            "By `created_at`.",
            json!({"type": "string", "enum": ["asc", "desc"], "default": "desc"}),
        ),
        query_param(
            "after",
            "Objects after this id (the id must be in the list; empty means none).",
            json!({"type": "string"}),
        ),
        query_param(
            "before",
            "Objects before this id (the id must be in the list; empty means none).",
            json!({"type": "string"}),
        ),
    ]
}

/// What a successful JSON answer is.
fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A run: JSON with `openai-poll-after-ms`, or with `stream: true` server-sent events.
fn ok_run(streams: bool) -> Value {
    let mut content = json!({"application/json": {"schema": schema_ref("Run")}});
    if streams {
        content["text/event-stream"] = json!({
            "schema": {
                "type": "string",
                "description": "With `stream: true`: `event: <name>` / `data: <json>` pairs \
                    (`thread.run.created`, `thread.run.step.delta`, `thread.message.delta`, …) \
                    ending with `event: done` / `data: [DONE]`."
            }
        });
    }
    json!({
        "description": "The run.",
        "headers": {
            "openai-poll-after-ms": {
                "description": "How long a poller should wait before asking again (JSON answers).",
                "schema": {"type": "integer", "minimum": 0}
            }
        },
        "content": content
    })
}

fn json_body(schema: Value, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": schema}}})
}

/// One operation. `errors` are the non-2xx statuses it answers with (each OpenAI's body).
fn operation(
    id: &str,
    tag: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<Value>,
    ok: Value,
    errors: &[u16],
) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(id));
    op.insert("tags".into(), json!([tag]));
    op.insert("summary".into(), json!(summary));
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(b) = body {
        op.insert("requestBody".into(), b);
    }
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    for code in errors {
        let name = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            404 => "NotFound",
            413 => "PayloadTooLarge",
            500 => "ServerError",
            other => unreachable!("no shared response for {other}"),
        };
        responses.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The statuses of a `/v1` call with neither a body nor an id in its path.
const PLAIN: &[u16] = &[400, 401, 500];
/// … with an id in its path.
const BY_ID: &[u16] = &[400, 401, 404, 500];
/// … with a JSON body.
const WITH_BODY: &[u16] = &[400, 401, 413, 500];
/// … with both.
const BY_ID_WITH_BODY: &[u16] = &[400, 401, 404, 413, 500];

fn paths() -> Value {
    let thread_id = || path_param("thread_id", "A thread's id (`thread_…`).");
    let run_id = || path_param("run_id", "A run's id (`run_…`).");
    let session_id = || {
        json!({
            "name": "session_id", "in": "path", "required": true,
            "description": "A code-interpreter session id (`cisess_…`, a `thread_…` id, or \
                any id of 1 to 64 letters, digits, `-` and `_`).",
            "schema": schema_ref("SessionId")
        })
    };
    let list = |name: &str| {
        json!({
            "type": "object",
            "required": ["object", "data", "first_id", "last_id", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": schema_ref(name)},
                "first_id": {"type": ["string", "null"]},
                "last_id": {"type": ["string", "null"]},
                "has_more": {"type": "boolean"}
            }
        })
    };
    let deleted = |object: &str| {
        json!({
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": object},
                "deleted": {"const": true}
            }
        })
    };
    let with = |mut params: Vec<Value>, more: Vec<Value>| {
        params.extend(more);
        params
    };
    let mut p = Map::new();
    p.insert(
        "/health".into(),
        json!({"get": public(operation(
            "health", "Meta", "Liveness: answers while the server runs.", vec![], None,
            ok_json("Up.", json!({
                "type": "object", "required": ["status"],
                "properties": {"status": {"const": "ok"}}
            })),
            &[],
        ))}),
    );
    p.insert(
        "/openapi.json".into(),
        json!({"get": public(operation(
            "openapi", "Meta", "This document.", vec![], None,
            ok_json("An OpenAPI 3.1 document.", json!({
                "type": "object", "required": ["openapi", "info", "paths"]
            })),
            &[],
        ))}),
    );
    p.insert(
        "/v1/files".into(),
        json!({
            "get": operation(
                "listFiles", "Files", "List files.",
                with(list_params(), vec![query_param(
                    "purpose", "Only files with this purpose.", json!({"type": "string"}),
                )]),
                None, ok_json("A page of files.", list("File")), PLAIN,
            ),
            "post": operation(
                "uploadFile", "Files",
                "Upload a file (multipart; streamed to disk; at most `max_upload_bytes`, 512 MB \
                 by default).",
                vec![],
                Some(json!({
                    "required": true,
                    "content": {"multipart/form-data": {
                        "schema": schema_ref("UploadFile"),
                        "encoding": {"file": {"contentType": "application/octet-stream"}}
                    }}
                })),
                ok_json("The new file.", schema_ref("File")), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/files/{file_id}".into(),
        json!({
            "parameters": [path_param("file_id", "A file's id (`file-…`).")],
            "get": operation(
                "retrieveFile", "Files", "A file's record.", vec![], None,
                ok_json("The file.", schema_ref("File")), BY_ID,
            ),
            "delete": operation(
                "deleteFile", "Files", "Delete a file and its bytes.", vec![], None,
                ok_json("Deleted.", deleted("file")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/files/{file_id}/content".into(),
        json!({
            "parameters": [path_param("file_id", "A file's id (`file-…`).")],
            "get": operation(
                "downloadFile", "Files", "A file's bytes.", vec![], None,
                json!({
                    "description": "The bytes, as an attachment under the file's name.",
                    "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                    "content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    }}
                }),
                BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/assistants".into(),
        json!({
            "get": operation(
                "listAssistants", "Assistants", "List assistants.", list_params(), None,
                ok_json("A page of assistants.", list("Assistant")), PLAIN,
            ),
            "post": operation(
                "createAssistant", "Assistants", "Create an assistant.", vec![],
                Some(json_body(schema_ref("CreateAssistantRequest"), true)),
                ok_json("The new assistant.", schema_ref("Assistant")), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/assistants/{assistant_id}".into(),
        json!({
            "parameters": [path_param("assistant_id", "An assistant's id (`asst_…`).")],
            "get": operation(
                "retrieveAssistant", "Assistants", "An assistant.", vec![], None,
                ok_json("The assistant.", schema_ref("Assistant")), BY_ID,
            ),
            "post": operation(
                "modifyAssistant", "Assistants", "Change an assistant (fields given and not \
                 null replace the stored ones).", vec![],
                Some(json_body(schema_ref("ModifyAssistantRequest"), false)),
                ok_json("The assistant.", schema_ref("Assistant")), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteAssistant", "Assistants", "Delete an assistant.", vec![], None,
                ok_json("Deleted.", deleted("assistant.deleted")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads".into(),
        json!({
            "get": operation(
                "listThreads", "Threads",
                "List threads (an Oasis extension: 404 unless enabled with \
                 `OASIS_THREAD_LIST=true` or `thread_list = true`).",
                list_params(), None, ok_json("A page of threads.", list("Thread")), BY_ID,
            ),
            "post": operation(
                "createThread", "Threads", "Create a thread, optionally with messages.", vec![],
                Some(json_body(schema_ref("CreateThreadRequest"), false)),
                ok_json("The new thread.", schema_ref("Thread")), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}".into(),
        json!({
            "parameters": [thread_id()],
            "get": operation(
                "retrieveThread", "Threads", "A thread.", vec![], None,
                ok_json("The thread.", schema_ref("Thread")), BY_ID,
            ),
            "post": operation(
                "modifyThread", "Threads", "Change a thread's tool resources or metadata.", vec![],
                Some(json_body(schema_ref("ModifyThreadRequest"), false)),
                ok_json("The thread.", schema_ref("Thread")), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteThread", "Threads",
                "Delete a thread with its messages, runs, steps and sandbox session (an active \
                 run is cancelled first).",
                vec![], None, ok_json("Deleted.", deleted("thread.deleted")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/messages".into(),
        json!({
            "parameters": [thread_id()],
            "get": operation(
                "listMessages", "Messages", "List a thread's messages.",
                with(list_params(), vec![query_param(
                    "run_id", "Only messages this run created.", json!({"type": "string"}),
                )]),
                None, ok_json("A page of messages.", list("Message")), BY_ID,
            ),
            "post": operation(
                "createMessage", "Messages",
                "Add a message (refused with a 400 while a run is active on the thread).",
                vec![], Some(json_body(schema_ref("CreateMessageRequest"), true)),
                ok_json("The new message.", schema_ref("Message")), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/messages/{message_id}".into(),
        json!({
            "parameters": [thread_id(), path_param("message_id", "A message's id (`msg_…`).")],
            "get": operation(
                "retrieveMessage", "Messages", "A message.", vec![], None,
                ok_json("The message.", schema_ref("Message")), BY_ID,
            ),
            "post": operation(
                "modifyMessage", "Messages", "Change a message's metadata.", vec![],
                Some(json_body(schema_ref("ModifyMessageRequest"), false)),
                ok_json("The message.", schema_ref("Message")), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteMessage", "Messages", "Delete a message.", vec![], None,
                ok_json("Deleted.", deleted("thread.message.deleted")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads/runs".into(),
        json!({
            "post": operation(
                "createThreadAndRun", "Runs", "Create a thread and start a run on it.", vec![],
                Some(json_body(schema_ref("CreateThreadAndRunRequest"), true)),
                ok_run(true), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs".into(),
        json!({
            "parameters": [thread_id()],
            "get": operation(
                "listRuns", "Runs", "List a thread's runs.", list_params(), None,
                ok_json("A page of runs.", list("Run")), BY_ID,
            ),
            "post": operation(
                "createRun", "Runs",
                "Start a run (refused with a 400 while another run is active on the thread).",
                vec![], Some(json_body(schema_ref("CreateRunRequest"), true)),
                ok_run(true), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}".into(),
        json!({
            "parameters": [thread_id(), run_id()],
            "get": operation(
                "retrieveRun", "Runs", "A run (poll this).", vec![], None, ok_run(false), BY_ID,
            ),
            "post": operation(
                "modifyRun", "Runs", "Change a run's metadata.", vec![],
                Some(json_body(schema_ref("ModifyRunRequest"), false)),
                ok_run(false), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}/cancel".into(),
        json!({
            "parameters": [thread_id(), run_id()],
            "post": operation(
                "cancelRun", "Runs",
                "Cancel a run (400 if it has already ended). The body, if any, is ignored.",
                vec![], None, ok_run(false), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs".into(),
        json!({
            "parameters": [thread_id(), run_id()],
            "post": operation(
                "submitToolOutputs", "Runs",
                "Give the outputs of the function calls a `requires_action` run waits for (one \
                 per call).",
                vec![], Some(json_body(schema_ref("SubmitToolOutputsRequest"), true)),
                ok_run(true), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}/steps".into(),
        json!({
            "parameters": [thread_id(), run_id()],
            "get": operation(
                "listRunSteps", "Runs", "List a run's steps.", list_params(), None,
                ok_json("A page of run steps.", list("RunStep")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}".into(),
        json!({
            "parameters": [thread_id(), run_id(), path_param("step_id", "A step's id (`step_…`).")],
            "get": operation(
                "retrieveRunStep", "Runs", "A run step.", vec![], None,
                ok_json("The step.", schema_ref("RunStep")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/models".into(),
        json!({
            "get": operation(
                "listModels", "Models",
                "The models runs can use: `oasis-local` and the upstream's models.", vec![], None,
                ok_json("The models.", json!({
                    "type": "object", "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": schema_ref("Model")}
                    }
                })),
                PLAIN,
            ),
        }),
    );
    p.insert(
        "/v1/models/{model}".into(),
        json!({
            "parameters": [path_param("model", "A model id.")],
            "get": operation(
                "retrieveModel", "Models", "A model.", vec![], None,
                ok_json("The model.", schema_ref("Model")), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/code_interpreter/execute".into(),
        json!({
            "post": operation(
                "executeCode", "Code interpreter",
                "Run Python in a session (an Oasis endpoint): variables and `/mnt/data` persist \
                 per session; files the code writes become Files.",
                vec![], Some(json_body(schema_ref("ExecuteRequest"), true)),
                json!({
                    "description": "The result, or with `stream: true` server-sent events: \
                        `stdout`/`stderr` (`{\"text\": …}`) as the code writes, then `result` \
                        (this body) or `error` (an error body), then `done` (`[DONE]`).",
                    "content": {
                        "application/json": {"schema": schema_ref("ExecuteResponse")},
                        "text/event-stream": {"schema": {"type": "string"}}
                    }
                }),
                BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/code_interpreter/sessions/{session_id}/files".into(),
        json!({
            "parameters": [session_id()],
            "get": operation(
                "listSessionFiles", "Code interpreter",
                "The files in a session's `/mnt/data` (empty for a session that does not \
                 exist).",
                vec![], None,
                ok_json("The files.", json!({
                    "type": "object", "required": ["object", "session_id", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "session_id": {"type": "string"},
                        "data": {"type": "array", "items": {
                            "type": "object", "required": ["path", "bytes"],
                            "properties": {
                                "path": {"type": "string"},
                                "bytes": {"type": "integer", "minimum": 0}
                            }
                        }}
                    }
                })),
                PLAIN,
            ),
        }),
    );
    p.insert(
        "/v1/code_interpreter/sessions/{session_id}".into(),
        json!({
            "parameters": [session_id()],
            "delete": operation(
                "deleteSession", "Code interpreter",
                "End a session and delete its files.", vec![], None,
                ok_json("Deleted.", deleted("code_interpreter.session.deleted")), BY_ID,
            ),
        }),
    );
    Value::Object(p)
}

/// An operation that needs no API key.
fn public(mut op: Value) -> Value {
    op["security"] = json!([]);
    op
}

fn error_responses() -> Value {
    let r = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": schema_ref("Error")}}
        })
    };
    json!({
        "BadRequest": r("The request is malformed or invalid (bad JSON, a wrong type, an \
            unknown field, a value out of range, an unknown referenced id, a locked thread, \
            `OpenAI-Beta: assistants=v1`); `param` names the field when there is one."),
        "Unauthorized": r("No API key, or a wrong one (only when the server has keys)."),
        "NotFound": r("No such object (`No thread found with id '…'.`)."),
        "PayloadTooLarge": r("The body is larger than the server accepts."),
        "ServerError": r("Something failed inside Oasis (details are logged, never returned)."),
    })
}

fn schemas() -> Value {
    let string = || json!({"type": "string"});
    let opt_string = |max: Option<usize>| match max {
        Some(m) => json!({"type": ["string", "null"], "maxLength": m}),
        None => json!({"type": ["string", "null"]}),
    };
    let opt_int = || json!({"type": ["integer", "null"]});
    let timestamp = || json!({"type": "integer"});
    let tokens = || json!({"type": ["integer", "null"], "minimum": 1, "maximum": U64_MAX});
    let temperature = || json!({"type": ["number", "null"], "minimum": 0, "maximum": 2});
    let top_p = || json!({"type": ["number", "null"], "minimum": 0, "maximum": 1});
    let any = || json!({"description": "Any JSON value; stored and passed on as given."});
    let run_fields = || {
        json!({
            "assistant_id": {"type": "string", "description": "The assistant to run."},
            "model": opt_string(None),
            "instructions": opt_string(Some(256_000)),
            "tools": {"type": ["array", "null"], "maxItems": 128, "items": schema_ref("Tool")},
            "tool_choice": schema_ref("ToolChoice"),
            "parallel_tool_calls": {"type": ["boolean", "null"]},
            "temperature": temperature(),
            "top_p": top_p(),
            "truncation_strategy": nullable(schema_ref("TruncationStrategy")),
            "max_prompt_tokens": tokens(),
            "max_completion_tokens": tokens(),
            "response_format": any(),
            "metadata": nullable(schema_ref("Metadata")),
            "stream": {"type": ["boolean", "null"],
                       "description": "Answer with server-sent events."},
            "reasoning_effort": {"type": ["string", "null"],
                                 "description": "Accepted and ignored."}
        })
    };
    let assistant_fields = |create: bool| {
        json!({
            "model": if create {
                json!({"type": "string", "pattern": "\\S"})
            } else {
                json!({"type": ["string", "null"], "pattern": "\\S"})
            },
            "name": opt_string(Some(256)),
            "description": opt_string(Some(512)),
            "instructions": opt_string(Some(256_000)),
            "tools": if create {
                json!({"type": "array", "maxItems": 128, "items": schema_ref("Tool")})
            } else {
                json!({"type": ["array", "null"], "maxItems": 128, "items": schema_ref("Tool")})
            },
            "tool_resources": nullable(schema_ref("ToolResources")),
            "metadata": nullable(schema_ref("Metadata")),
            "temperature": temperature(),
            "top_p": top_p(),
            "response_format": any(),
            "reasoning_effort": {"type": ["string", "null"], "description": "Accepted and ignored."}
        })
    };
    let mut create_run_fields = run_fields();
    create_run_fields["additional_instructions"] = opt_string(Some(256_000));
    create_run_fields["additional_messages"] =
        json!({"type": ["array", "null"], "items": schema_ref("CreateMessageRequest")});
    let mut thread_and_run_fields = run_fields();
    thread_and_run_fields["thread"] = nullable(json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "messages": {"type": ["array", "null"], "items": schema_ref("CreateMessageRequest")},
            "tool_resources": nullable(schema_ref("ToolResources")),
            "metadata": nullable(schema_ref("Metadata"))
        }
    }));
    thread_and_run_fields["tool_resources"] = nullable(schema_ref("ToolResources"));
    let tool_resources_out = json!({
        "type": "object",
        "properties": {
            "code_interpreter": {
                "type": "object", "required": ["file_ids"],
                "properties": {"file_ids": {"type": "array", "items": string()}}
            },
            "file_search": {
                "type": "object", "required": ["vector_store_ids"],
                "properties": {"vector_store_ids": {"type": "array", "items": string()}}
            }
        }
    });
    let last_error = nullable(json!({
        "type": "object", "required": ["code", "message"],
        "properties": {"code": string(), "message": string()}
    }));
    let usage = nullable(json!({
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0}
        }
    }));
    let file_ref =
        || json!({"type": "object", "required": ["file_id"], "properties": {"file_id": string()}});
    let mut s = Map::new();
    s.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": string(),
                    "type": string(),
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]}
                }
            }}
        }),
    );
    s.insert(
        "Metadata".into(),
        json!({
            "type": "object",
            "description": "Up to 16 string pairs; keys up to 64 characters, values up to 512.",
            "maxProperties": 16,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512}
        }),
    );
    s.insert(
        "SessionId".into(),
        json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}),
    );
    s.insert(
        "Tool".into(),
        json!({
            "oneOf": [
                {
                    "type": "object", "required": ["type"],
                    "properties": {"type": {"const": "code_interpreter"}}
                },
                {
                    "type": "object", "required": ["type"],
                    "properties": {"type": {"const": "file_search"}, "file_search": any()}
                },
                {
                    "type": "object", "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": schema_ref("FunctionDefinition")
                    }
                }
            ]
        }),
    );
    s.insert(
        "FunctionDefinition".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "description": {"type": ["string", "null"]},
                "parameters": {"type": ["object", "null"], "description": "A JSON Schema."},
                "strict": {"type": ["boolean", "null"]}
            }
        }),
    );
    s.insert(
        "ToolResources".into(),
        json!({
            "type": "object",
            "properties": {
                "code_interpreter": nullable(json!({
                    "type": "object",
                    "properties": {"file_ids": {
                        "type": "array", "maxItems": 20, "items": string(),
                        "description": "Files (which must exist) copied into /mnt/data."
                    }}
                })),
                "file_search": nullable(json!({
                    "type": "object",
                    "description": "Oasis has no vector stores (file_search is not supported): \
                                    vector store ids, or files for the vector_stores helper, \
                                    are refused.",
                    "properties": {
                        "vector_store_ids": {
                            "type": "array", "maxItems": 0, "items": string()
                        },
                        "vector_stores": nullable(json!({
                            "type": "array",
                            "items": {"type": "object", "properties": {
                                "file_ids": {"type": "array", "maxItems": 0, "items": string()}
                            }}
                        }))
                    }
                }))
            }
        }),
    );
    s.insert(
        "ToolChoice".into(),
        json!({
            "anyOf": [
                {"type": "null"},
                {"type": "string", "enum": ["none", "auto", "required"]},
                {
                    "type": "object", "required": ["type"],
                    "properties": {"type": {"enum": ["code_interpreter", "file_search"]}}
                },
                {
                    "type": "object", "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {
                            "type": "object", "required": ["name"],
                            "properties": {"name": {"type": "string", "minLength": 1}}
                        }
                    }
                }
            ]
        }),
    );
    s.insert(
        "TruncationStrategy".into(),
        json!({
            "oneOf": [
                {
                    "type": "object", "required": ["type"],
                    "properties": {
                        "type": {"const": "auto"},
                        "last_messages": {"type": ["integer", "null"], "minimum": 0,
                                          "maximum": U64_MAX}
                    }
                },
                {
                    "type": "object", "required": ["type", "last_messages"],
                    "properties": {
                        "type": {"const": "last_messages"},
                        "last_messages": {"type": "integer", "minimum": 1, "maximum": U64_MAX}
                    }
                }
            ]
        }),
    );
    s.insert(
        "Attachment".into(),
        json!({
            "type": "object",
            "required": ["file_id"],
            "properties": {
                "file_id": {"type": "string", "description": "A file that exists."},
                "tools": {"type": "array", "items": {
                    "type": "object", "required": ["type"],
                    "properties": {"type": {"enum": ["code_interpreter", "file_search"]}}
                }}
            }
        }),
    );
    s.insert(
        "ContentPartInput".into(),
        json!({
            "oneOf": [
                {
                    "type": "object", "additionalProperties": false, "required": ["type", "text"],
                    "properties": {"type": {"const": "text"}, "text": string()}
                },
                {
                    "type": "object", "additionalProperties": false,
                    "required": ["type", "image_file"],
                    "properties": {
                        "type": {"const": "image_file"},
                        "image_file": {
                            "type": "object", "required": ["file_id"],
                            "properties": {
                                "file_id": {"type": "string", "description": "A file that exists."},
                                "detail": {"type": ["string", "null"]}
                            }
                        }
                    }
                },
                {
                    "type": "object", "additionalProperties": false,
                    "required": ["type", "image_url"],
                    "properties": {
                        "type": {"const": "image_url"},
                        "image_url": {
                            "type": "object", "required": ["url"],
                            "properties": {
                                "url": string(),
                                "detail": {"type": ["string", "null"]}
                            }
                        }
                    }
                }
            ]
        }),
    );
    s.insert(
        "CreateMessageRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": ["user", "assistant"]},
                "content": {"anyOf": [
                    string(),
                    {"type": "array", "minItems": 1, "items": schema_ref("ContentPartInput")}
                ]},
                "attachments": {"type": ["array", "null"], "items": schema_ref("Attachment")},
                "metadata": nullable(schema_ref("Metadata"))
            }
        }),
    );
    s.insert(
        "CreateAssistantRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["model"],
            "properties": assistant_fields(true)
        }),
    );
    s.insert(
        "ModifyAssistantRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": assistant_fields(false)
        }),
    );
    s.insert("CreateThreadRequest".into(), json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "messages": {"type": ["array", "null"], "items": schema_ref("CreateMessageRequest")},
            "tool_resources": nullable(schema_ref("ToolResources")),
            "metadata": nullable(schema_ref("Metadata"))
        }
    }));
    s.insert(
        "ModifyThreadRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "tool_resources": nullable(schema_ref("ToolResources")),
                "metadata": nullable(schema_ref("Metadata"))
            }
        }),
    );
    s.insert(
        "ModifyMessageRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"metadata": nullable(schema_ref("Metadata"))}
        }),
    );
    s.insert(
        "CreateRunRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["assistant_id"],
            "properties": create_run_fields
        }),
    );
    s.insert(
        "CreateThreadAndRunRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["assistant_id"],
            "properties": thread_and_run_fields
        }),
    );
    s.insert(
        "ModifyRunRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"metadata": nullable(schema_ref("Metadata"))}
        }),
    );
    s.insert(
        "SubmitToolOutputsRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["tool_outputs"],
            "properties": {
                "tool_outputs": {"type": "array", "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["tool_call_id", "output"],
                    "properties": {"tool_call_id": string(), "output": string()}
                }},
                "stream": {"type": ["boolean", "null"]}
            }
        }),
    );
    s.insert(
        "ExecuteRequest".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["code"],
            "properties": {
                "code": {"type": "string", "pattern": "\\S", "description": "Python source."},
                "session_id": {
                    "anyOf": [schema_ref("SessionId"), {"type": "null"}],
                    "description": "Reuse this session (a `thread_…` id must name a thread); \
                        absent or null: a new session."
                },
                "file_ids": {"type": "array", "maxItems": 20, "items": string(),
                             "description": "Files (which must exist) copied into /mnt/data."},
                "timeout_ms": {"type": ["integer", "null"], "minimum": 1, "maximum": 600_000},
                "image": {"type": ["string", "null"],
                          "description": "A sandbox image (`scientific` by default)."},
                "stream": {"type": "boolean", "default": false}
            }
        }),
    );
    s.insert(
        "UploadFile".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["file", "purpose"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "The bytes; the part must carry a file name."},
                "purpose": {"type": "string", "enum": [
                    "assistants", "vision", "batch", "fine-tune", "user_data", "evals"
                ]}
            }
        }),
    );
    s.insert(
        "File".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "bytes", "created_at", "expires_at", "filename",
                         "purpose", "status", "status_details"],
            "properties": {
                "id": string(),
                "object": {"const": "file"},
                "bytes": {"type": "integer", "minimum": 0},
                "created_at": timestamp(),
                "expires_at": opt_int(),
                "filename": string(),
                "purpose": string(),
                "status": string(),
                "status_details": {"type": ["string", "null"]}
            }
        }),
    );
    s.insert(
        "ToolOut".into(),
        json!({
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["code_interpreter", "file_search", "function"]},
                "function": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": string()}
                }
            }
        }),
    );
    s.insert(
        "Assistant".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "name", "description", "model",
                         "instructions", "tools", "tool_resources", "metadata", "temperature",
                         "top_p", "response_format"],
            "properties": {
                "id": string(),
                "object": {"const": "assistant"},
                "created_at": timestamp(),
                "name": {"type": ["string", "null"]},
                "description": {"type": ["string", "null"]},
                "model": string(),
                "instructions": {"type": ["string", "null"]},
                "tools": {"type": "array", "items": schema_ref("ToolOut")},
                "tool_resources": tool_resources_out.clone(),
                "metadata": schema_ref("Metadata"),
                "temperature": {"type": ["number", "null"]},
                "top_p": {"type": ["number", "null"]},
                "response_format": {}
            }
        }),
    );
    s.insert(
        "Thread".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "tool_resources", "metadata"],
            "properties": {
                "id": string(),
                "object": {"const": "thread"},
                "created_at": timestamp(),
                "tool_resources": tool_resources_out,
                "metadata": schema_ref("Metadata")
            }
        }),
    );
    s.insert(
        "MessageContent".into(),
        json!({
            "oneOf": [
                {
                    "type": "object", "required": ["type", "text"],
                    "properties": {
                        "type": {"const": "text"},
                        "text": {
                            "type": "object", "required": ["value", "annotations"],
                            "properties": {
                                "value": string(),
                                "annotations": {"type": "array", "items": {"type": "object"}}
                            }
                        }
                    }
                },
                {
                    "type": "object", "required": ["type", "image_file"],
                    "properties": {"type": {"const": "image_file"}, "image_file": file_ref()}
                },
                {
                    "type": "object", "required": ["type", "image_url"],
                    "properties": {
                        "type": {"const": "image_url"},
                        "image_url": {"type": "object", "required": ["url"],
                                      "properties": {"url": string()}}
                    }
                },
                {
                    "type": "object", "required": ["type", "refusal"],
                    "properties": {"type": {"const": "refusal"}, "refusal": string()}
                }
            ]
        }),
    );
    s.insert(
        "Message".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "thread_id", "status",
                         "incomplete_details", "completed_at", "incomplete_at", "role", "content",
                         "assistant_id", "run_id", "attachments", "metadata"],
            "properties": {
                "id": string(),
                "object": {"const": "thread.message"},
                "created_at": timestamp(),
                "thread_id": string(),
                "status": {"enum": ["in_progress", "incomplete", "completed"]},
                "incomplete_details": {"type": ["object", "null"]},
                "completed_at": opt_int(),
                "incomplete_at": opt_int(),
                "role": {"enum": ["user", "assistant"]},
                "content": {"type": "array", "items": schema_ref("MessageContent")},
                "assistant_id": {"type": ["string", "null"]},
                "run_id": {"type": ["string", "null"]},
                "attachments": {"type": "array", "items": schema_ref("Attachment")},
                "metadata": schema_ref("Metadata")
            }
        }),
    );
    s.insert(
        "Run".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "thread_id", "assistant_id", "status",
                         "required_action", "last_error", "expires_at", "started_at",
                         "cancelled_at", "failed_at", "completed_at", "incomplete_details",
                         "model", "instructions", "tools", "metadata", "usage", "temperature",
                         "top_p", "max_prompt_tokens", "max_completion_tokens",
                         "truncation_strategy", "tool_choice", "parallel_tool_calls",
                         "response_format"],
            "properties": {
                "id": string(),
                "object": {"const": "thread.run"},
                "created_at": timestamp(),
                "thread_id": string(),
                "assistant_id": string(),
                "status": {"enum": ["queued", "in_progress", "requires_action", "cancelling",
                                    "cancelled", "failed", "completed", "incomplete",
                                    "expired"]},
                "required_action": nullable(json!({
                    "type": "object", "required": ["type", "submit_tool_outputs"],
                    "properties": {
                        "type": {"const": "submit_tool_outputs"},
                        "submit_tool_outputs": {
                            "type": "object", "required": ["tool_calls"],
                            "properties": {"tool_calls": {"type": "array", "items": {
                                "type": "object", "required": ["id", "type", "function"],
                                "properties": {
                                    "id": string(),
                                    "type": {"const": "function"},
                                    "function": {
                                        "type": "object", "required": ["name", "arguments"],
                                        "properties": {"name": string(), "arguments": string()}
                                    }
                                }
                            }}}
                        }
                    }
                })),
                "last_error": last_error.clone(),
                "expires_at": opt_int(),
                "started_at": opt_int(),
                "cancelled_at": opt_int(),
                "failed_at": opt_int(),
                "completed_at": opt_int(),
                "incomplete_details": {"type": ["object", "null"]},
                "model": string(),
                "instructions": string(),
                "tools": {"type": "array", "items": schema_ref("ToolOut")},
                "metadata": schema_ref("Metadata"),
                "usage": usage.clone(),
                "temperature": {"type": ["number", "null"]},
                "top_p": {"type": ["number", "null"]},
                "max_prompt_tokens": opt_int(),
                "max_completion_tokens": opt_int(),
                "truncation_strategy": {
                    "type": "object", "required": ["type"],
                    "properties": {
                        "type": string(),
                        "last_messages": opt_int()
                    }
                },
                "tool_choice": {},
                "parallel_tool_calls": {"type": "boolean"},
                "response_format": {}
            }
        }),
    );
    s.insert(
        "RunStep".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "assistant_id", "thread_id", "run_id",
                         "type", "status", "step_details", "last_error", "expired_at",
                         "cancelled_at", "failed_at", "completed_at", "metadata", "usage"],
            "properties": {
                "id": string(),
                "object": {"const": "thread.run.step"},
                "created_at": timestamp(),
                "assistant_id": string(),
                "thread_id": string(),
                "run_id": string(),
                "type": {"enum": ["message_creation", "tool_calls"]},
                "status": {"enum": ["in_progress", "cancelled", "failed", "completed",
                                    "expired"]},
                "step_details": {
                    "type": "object", "required": ["type"],
                    "properties": {"type": {"enum": ["message_creation", "tool_calls"]}}
                },
                "last_error": last_error,
                "expired_at": opt_int(),
                "cancelled_at": opt_int(),
                "failed_at": opt_int(),
                "completed_at": opt_int(),
                "metadata": schema_ref("Metadata"),
                "usage": usage
            }
        }),
    );
    s.insert(
        "Model".into(),
        json!({
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": string(),
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": string()
            }
        }),
    );
    s.insert(
        "ExecuteResponse".into(),
        json!({
            "type": "object",
            "required": ["session_id", "status", "stdout", "stderr", "result", "error",
                         "outputs", "files", "duration_ms", "truncated"],
            "properties": {
                "session_id": string(),
                "status": {"enum": ["completed", "error", "timeout", "memory_limit",
                                    "output_limit", "crashed", "cancelled"]},
                "stdout": string(),
                "stderr": string(),
                "result": {"type": ["string", "null"],
                           "description": "The repr of a final expression."},
                "error": nullable(json!({
                    "type": "object", "required": ["name", "message", "traceback"],
                    "properties": {"name": string(), "message": string(), "traceback": string()}
                })),
                "outputs": {"type": "array", "items": {"oneOf": [
                    {
                        "type": "object", "required": ["type", "logs"],
                        "properties": {"type": {"const": "logs"}, "logs": string()}
                    },
                    {
                        "type": "object", "required": ["type", "image"],
                        "properties": {"type": {"const": "image"}, "image": file_ref()}
                    }
                ]}},
                "files": {"type": "array", "items": {
                    "type": "object", "required": ["file_id", "path", "bytes"],
                    "properties": {
                        "file_id": string(),
                        "path": string(),
                        "bytes": {"type": "integer", "minimum": 0}
                    }
                }},
                "duration_ms": {"type": "number", "minimum": 0},
                "truncated": {"type": "boolean"}
            }
        }),
    );
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` points at something the document defines.
    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, doc: &Value, refs: &mut usize) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let pointer = r.strip_prefix('#').expect("a local reference");
                        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                        *refs += 1;
                    }
                    m.values().for_each(|x| walk(x, doc, refs));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, refs)),
                _ => {}
            }
        }
        let doc = document();
        let mut refs = 0;
        walk(&doc, &doc, &mut refs);
        assert!(refs > 50, "only {refs} references");
    }

    /// The fields `ApiJson` refuses arrays for are exactly the object fields of the JSON
    /// bodies documented here.
    #[test]
    fn object_fields_match_the_request_schemas() {
        use std::collections::{BTreeSet, HashSet};
        fn resolve<'a>(p: &'a Value, doc: &'a Value) -> &'a Value {
            match p["$ref"].as_str() {
                Some(r) => doc.pointer(&r[1..]).unwrap(),
                None => p,
            }
        }
        fn is_object(p: &Value, doc: &Value) -> bool {
            let p = resolve(p, doc);
            let alts = p["anyOf"].as_array().or(p["oneOf"].as_array());
            match (&p["type"], alts) {
                (Value::String(t), _) => t == "object",
                (Value::Array(ts), _) => ts.iter().any(|t| t == "object"),
                (_, Some(alts)) => alts.iter().any(|a| is_object(a, doc)),
                _ => false,
            }
        }
        fn walk(v: &Value, doc: &Value, seen: &mut HashSet<String>, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        if seen.insert(r.clone()) {
                            walk(doc.pointer(&r[1..]).unwrap(), doc, seen, out);
                        }
                        return;
                    }
                    if let Some(Value::Object(props)) = m.get("properties") {
                        out.extend(
                            props
                                .iter()
                                .filter(|(_, p)| is_object(p, doc))
                                .map(|(k, _)| k.clone()),
                        );
                    }
                    m.values().for_each(|x| walk(x, doc, seen, out));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc, seen, out)),
                _ => {}
            }
        }
        let doc = document();
        let (mut seen, mut out) = (HashSet::new(), BTreeSet::new());
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                walk(schema, &doc, &mut seen, &mut out);
            }
        }
        let expected: BTreeSet<String> = super::super::extract::OBJECT_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(out, expected);
    }

    /// Every operation has a unique id and answers errors with the error body.
    #[test]
    fn operations_have_unique_ids_and_error_bodies() {
        let doc = document();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_string()), "{id} twice");
                for (status, r) in op["responses"].as_object().unwrap() {
                    if !status.starts_with('2') {
                        let name = r["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                        assert_eq!(
                            doc["components"]["responses"][name]["content"]["application/json"]["schema"]
                                ["$ref"],
                            "#/components/schemas/Error",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }
}
