//! `GET /openapi.json`: an OpenAPI 3.1 description of exactly the routes Oasis serves.
//!
//! Request schemas say what the handlers accept (types, enums, limits, required fields, and
//! `additionalProperties: false` where unknown fields are refused), so a fuzzer can aim at the
//! edges; every non-2xx answer is OpenAI's error body. Like `/health`, the document is served
//! without an API key. In `tools` mode only the routes that mode serves are listed.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use super::extract::{DEFAULT_LIMIT, MAX_LIMIT};
use super::wire::ErrorBody;
use super::{AppState, Mode};
use crate::model::Run;

mod paths;

use paths::paths;

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
        || path == "/metrics"
        || path == "/ready"
        || path == "/openapi.json"
        || path.starts_with("/v1/files")
        || path.starts_with("/v1/uploads")
        || path.starts_with("/v1/code_interpreter/")
}

/// The whole document (the `all` mode's routes).
pub fn document() -> Value {
    let mut g = Gen::new();
    let mut paths = paths(&mut g);
    limited(&mut paths);
    let responses = error_responses(&mut g);
    let (paths, schemas) = g.finish(paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Oasis",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A self-hosted, OpenAI-compatible Assistants API (v2) with a sandboxed \
                Python code interpreter. Every `/v1` route takes `Authorization: Bearer KEY` when \
                the server has API keys (`OASIS_API_KEYS`, or a keys file, `OASIS_KEYS_FILE`; \
                without them any key, or none, is accepted); a key belongs to a project, and \
                sees only that project's objects (another project's id answers as one that \
                never existed). `/health`, `/ready`, `/metrics` and `/openapi.json` never need one. \
                `OpenAI-Beta: assistants=v2` is optional; `assistants=v1` is refused with a 400 \
                on any `/v1` route. JSON request bodies may be at most 2 MiB; a body that is \
                empty or only whitespace counts as `{}`. Errors are OpenAI's `{\"error\": {\"message\", \
                \"type\", \"param\", \"code\"}}`. `GET /v1/threads` is an Oasis extension, served \
                only when enabled (`OASIS_THREAD_LIST=true`). With `--mode tools` only \
                `/health`, `/ready`, `/metrics`, `/openapi.json`, `/v1/files`, `/v1/uploads` \
                and `/v1/code_interpreter/*` are served (and listed here)."
        },
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "Meta"}, {"name": "Files"}, {"name": "Assistants"}, {"name": "Threads"},
            {"name": "Messages"}, {"name": "Runs"}, {"name": "Models"}, {"name": "Uploads"},
            {"name": "Vector stores"},
            {"name": "Code interpreter"}
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of `OASIS_API_KEYS` (the default project) or of \
                        the keys file's projects; not checked when none are set."
                }
            },
            "responses": responses,
            "schemas": schemas,
        }
    })
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
    list_params_up_to(DEFAULT_LIMIT, MAX_LIMIT)
}

/// The same, with `limit` up to `max` and `default` when not given.
fn list_params_up_to(default: usize, max: usize) -> Vec<Value> {
    vec![
        query_param(
            "limit",
            "How many objects to return.",
            json!({"type": "integer", "minimum": 1, "maximum": max, "default": default}),
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
fn ok_run(g: &mut Gen, streams: bool) -> Value {
    let mut content = json!({"application/json": {"schema": g.output::<Run>()}});
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
            403 => "Forbidden",
            404 => "NotFound",
            413 => "PayloadTooLarge",
            500 => "ServerError",
            503 => "ServiceUnavailable",
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

/// The operations a project's limits may refuse (429): what creates a run, stores a File or
/// brings a session to life.
const LIMITED: &[&str] = &[
    "uploadFile",
    "createThreadAndRun",
    "createRun",
    "executeCode",
    "createUpload",
    "completeUpload",
];

/// Document the 429 of the [`LIMITED`] operations.
fn limited(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
    {
        let id = op.get("operationId").and_then(Value::as_str).unwrap_or("");
        if LIMITED.contains(&id)
            && let Some(r) = op.get_mut("responses").and_then(Value::as_object_mut)
        {
            r.insert(
                "429".into(),
                json!({"$ref": "#/components/responses/RateLimited"}),
            );
        }
    }
}

/// The statuses of a `/v1` call with neither a body nor an id in its path.
const PLAIN: &[u16] = &[400, 401, 500];
/// … with an id in its path.
const BY_ID: &[u16] = &[400, 401, 404, 500];
/// … with a JSON body.
const WITH_BODY: &[u16] = &[400, 401, 413, 500];
/// … with both.
const BY_ID_WITH_BODY: &[u16] = &[400, 401, 404, 413, 500];

/// An operation that never succeeds (OpenAI's, kept so that clients get its error bodies).
fn never_ok(mut op: Value) -> Value {
    if let Some(r) = op["responses"].as_object_mut() {
        r.remove("200");
    }
    op
}

/// An operation that needs no API key.
fn public(mut op: Value) -> Value {
    op["security"] = json!([]);
    op
}

fn error_responses(g: &mut Gen) -> Value {
    let error = g.output::<ErrorBody>();
    let r = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": error.clone()}}
        })
    };
    json!({
        "BadRequest": r("The request is malformed or invalid (bad JSON, a wrong type, an \
            unknown field, a value out of range, an unknown referenced id, a locked thread, \
            `OpenAI-Beta: assistants=v1`); `param` names the field when there is one."),
        "Unauthorized": r("No API key, or a wrong one (only when the server has keys)."),
        "Forbidden": r("The operation is not allowed on this object."),
        "NotFound": r("No such object (`No thread found with id '…'.`)."),
        "PayloadTooLarge": r("The body is larger than the server accepts."),
        "RateLimited": r("The caller's project is at one of its limits (`rate_limit_exceeded`): \
            unfinished runs, live code-interpreter sessions or stored bytes (see the keys \
            file)."),
        "ServerError": r("Something failed inside Oasis (details are logged, never returned)."),
        "ServiceUnavailable": r("A service Oasis depends on (the database, the object store) \
            does not answer; the message names which."),
    })
}

/// Schemas from the types: requests as serde reads them, answers as serde writes them.
///
/// Both land under `#/components/schemas`; where a type reads differently than it writes (a
/// field with a default is optional on the way in, always present on the way out), the
/// request's schema is named `<Name>Input`.
struct Gen {
    input: SchemaGenerator,
    output: SchemaGenerator,
}

impl Gen {
    fn new() -> Gen {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Gen {
            input: settings.clone().for_deserialize().into_generator(),
            output: settings.for_serialize().into_generator(),
        }
    }

    /// The schema (usually a `$ref`) of a request body or parameter of type `T`.
    fn input<T: JsonSchema>(&mut self) -> Value {
        self.input.subschema_for::<T>().to_value()
    }

    /// The schema (usually a `$ref`) of an answer of type `T`.
    fn output<T: JsonSchema>(&mut self) -> Value {
        self.output.subschema_for::<T>().to_value()
    }

    /// The paths with request references renamed where needed, and every schema.
    fn finish(mut self, mut paths: Value) -> (Value, Value) {
        let mut schemas = self.output.take_definitions(true);
        let inputs = self.input.take_definitions(true);
        // A request schema is renamed if it differs from the answer's of the same name, as is,
        // or once the schemas it refers to are renamed: repeat until nothing more changes.
        let mut renamed = BTreeMap::new();
        loop {
            let more: Vec<String> = inputs
                .iter()
                .filter(|(name, _)| !renamed.contains_key(*name))
                .filter(|(name, schema)| {
                    let mut schema = (*schema).clone();
                    rename_refs(&mut schema, &renamed);
                    schemas.get(*name).is_some_and(|o| *o != schema)
                })
                .map(|(name, _)| name.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            renamed.extend(more.into_iter().map(|n| (n.clone(), format!("{n}Input"))));
        }
        for (name, mut schema) in inputs {
            rename_refs(&mut schema, &renamed);
            let name = renamed.get(&name).cloned().unwrap_or(name);
            schemas.entry(name).or_insert(schema);
        }
        for item in paths
            .as_object_mut()
            .into_iter()
            .flat_map(|p| p.values_mut())
        {
            for (key, op) in item.as_object_mut().into_iter().flatten() {
                if key == "parameters" {
                    rename_refs(op, &renamed);
                } else if let Some(op) = op.as_object_mut() {
                    for part in ["parameters", "requestBody"] {
                        if let Some(v) = op.get_mut(part) {
                            rename_refs(v, &renamed);
                        }
                    }
                }
            }
        }
        (paths, Value::Object(schemas))
    }
}

/// Point each `$ref` to a renamed schema at its new name.
fn rename_refs(v: &mut Value, renamed: &BTreeMap<String, String>) {
    const PREFIX: &str = "#/components/schemas/";
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(new) = r.strip_prefix(PREFIX).and_then(|n| renamed.get(n))
            {
                *r = format!("{PREFIX}{new}");
            }
            m.values_mut().for_each(|x| rename_refs(x, renamed));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rename_refs(x, renamed)),
        _ => {}
    }
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

    /// What a project's limits may refuse (and only that) documents its 429.
    #[test]
    fn the_operations_a_projects_limits_refuse_document_their_429() {
        let doc = document();
        let limited: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter(|op| op["responses"]["429"].is_object())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let mut expected = LIMITED.to_vec();
        expected.sort();
        let mut got = limited.clone();
        got.sort();
        assert_eq!(got, expected);
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
