//! The routes of `/openapi.json`, each operation with the types it reads and answers.

use serde_json::{Map, Value, json};

use super::{
    BY_ID, BY_ID_WITH_BODY, Gen, PLAIN, WITH_BODY, json_body, list_params, list_params_up_to,
    never_ok, ok_json, ok_run, operation, path_param, public, query_param,
};
use crate::api::assistants::{CreateAssistant, ModifyAssistant};
use crate::api::code_interpreter::{ExecuteRequest, ExecuteResponse};
use crate::api::extract::ListBody;
use crate::api::files::LIST_LIMIT;
use crate::api::runs::{CreateRun, CreateThreadAndRun, ModifyRun, SubmitToolOutputs};
use crate::api::threads::{CreateMessage, CreateThread, ModifyMessage, ModifyThread};
use crate::api::uploads::{AddUploadPartRequest, CompleteUploadRequest, CreateUploadRequest};
use crate::api::vector_store_files::{CreateBatch, CreateFile, FileContentPage, UpdateFile};
use crate::api::vector_stores::{CreateVectorStore, ModifyVectorStore, SearchBody, SearchPage};
use crate::api::wire::{
    AssistantDeleted, Deleted, FileDeleted, Health, MessageDeleted, ModelList, ModelObject, Ready,
    STEP_INCLUDE, SessionDeleted, SessionFileList, SessionId, SessionObject, ThreadDeleted,
    UploadFileForm,
};
use crate::api::wire::{VectorStoreDeleted, VectorStoreFileDeleted};
use crate::model::{
    Assistant, FileBatch, FileObject, Message, Run, RunStep, Thread, Upload, UploadPart,
    VectorStore, VectorStoreFile,
};

pub(super) fn paths(g: &mut Gen) -> Value {
    let thread_id = || path_param("thread_id", "A thread's id (`thread_…`).");
    let run_id = || path_param("run_id", "A run's id (`run_…`).");
    let session_schema = g.input::<SessionId>();
    let session_id = || {
        json!({
            "name": "session_id", "in": "path", "required": true,
            "description": "A code-interpreter session id (`cisess_…`, a `thread_…` id, or \
                any id of 1 to 64 letters, digits, `-` and `_`).",
            "schema": session_schema.clone()
        })
    };
    let include = || {
        json!({
            "name": "include[]", "in": "query", "required": false,
            "description": "Extra step fields to show. OpenAI's one value is accepted; Oasis \
                has no file search results, so it adds nothing.",
            "schema": {"type": "array", "items": {"type": "string", "enum": [STEP_INCLUDE]}},
            "style": "form", "explode": true
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
            ok_json("Up.", g.output::<Health>()),
            &[],
        ))}),
    );
    p.insert(
        "/ready".into(),
        json!({"get": public(operation(
            "ready", "Meta",
            "Readiness: the database and the object store answer (503 names the one that \
                does not).",
            vec![], None,
            ok_json("Ready to serve.", g.output::<Ready>()),
            &[503],
        ))}),
    );
    p.insert(
        "/metrics".into(),
        json!({"get": public(operation(
            "metrics", "Meta",
            "Prometheus metrics (text format 0.0.4): HTTP requests by route template, runs, the \
                run queue, sandbox sessions and waits, upstream model calls, store errors.",
            vec![], None,
            json!({"description": "Metrics.", "content": {
                "text/plain; version=0.0.4": {"schema": {"type": "string"}}
            }}),
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
                with(list_params_up_to(LIST_LIMIT, LIST_LIMIT), vec![query_param(
                    "purpose", "Only files with this purpose.", json!({"type": "string"}),
                )]),
                None, ok_json("A page of files.", g.output::<ListBody<FileObject>>()), PLAIN,
            ),
            "post": operation(
                "uploadFile", "Files",
                "Upload a file (multipart; streamed to disk; at most `max_upload_bytes`, 512 MB \
                 by default).",
                vec![],
                Some(json!({
                    "required": true,
                    "content": {"multipart/form-data": {
                        "schema": g.input::<UploadFileForm>(),
                        "encoding": {"file": {"contentType": "application/octet-stream"}}
                    }}
                })),
                ok_json("The new file.", g.output::<FileObject>()), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/files/{file_id}".into(),
        json!({
            "parameters": [path_param("file_id", "A file's id (`file-…`).")],
            "get": operation(
                "retrieveFile", "Files", "A file's record.", vec![], None,
                ok_json("The file.", g.output::<FileObject>()), BY_ID,
            ),
            "delete": operation(
                "deleteFile", "Files", "Delete a file and its bytes.", vec![], None,
                ok_json("Deleted.", g.output::<Deleted<FileDeleted>>()), BY_ID,
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
    uploads(g, &mut p);
    vector_stores(g, &mut p);
    p.insert(
        "/v1/assistants".into(),
        json!({
            "get": operation(
                "listAssistants", "Assistants", "List assistants.", list_params(), None,
                ok_json("A page of assistants.", g.output::<ListBody<Assistant>>()), PLAIN,
            ),
            "post": operation(
                "createAssistant", "Assistants", "Create an assistant.", vec![],
                Some(json_body(g.input::<CreateAssistant>(), true)),
                ok_json("The new assistant.", g.output::<Assistant>()), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/assistants/{assistant_id}".into(),
        json!({
            "parameters": [path_param("assistant_id", "An assistant's id (`asst_…`).")],
            "get": operation(
                "retrieveAssistant", "Assistants", "An assistant.", vec![], None,
                ok_json("The assistant.", g.output::<Assistant>()), BY_ID,
            ),
            "post": operation(
                "modifyAssistant", "Assistants", "Change an assistant (fields given and not \
                 null replace the stored ones).", vec![],
                Some(json_body(g.input::<ModifyAssistant>(), false)),
                ok_json("The assistant.", g.output::<Assistant>()), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteAssistant", "Assistants", "Delete an assistant.", vec![], None,
                ok_json("Deleted.", g.output::<Deleted<AssistantDeleted>>()), BY_ID,
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
                list_params(), None, ok_json("A page of threads.", g.output::<ListBody<Thread>>()), BY_ID,
            ),
            "post": operation(
                "createThread", "Threads", "Create a thread, optionally with messages.", vec![],
                Some(json_body(g.input::<CreateThread>(), false)),
                ok_json("The new thread.", g.output::<Thread>()), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}".into(),
        json!({
            "parameters": [thread_id()],
            "get": operation(
                "retrieveThread", "Threads", "A thread.", vec![], None,
                ok_json("The thread.", g.output::<Thread>()), BY_ID,
            ),
            "post": operation(
                "modifyThread", "Threads", "Change a thread's tool resources or metadata.", vec![],
                Some(json_body(g.input::<ModifyThread>(), false)),
                ok_json("The thread.", g.output::<Thread>()), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteThread", "Threads",
                "Delete a thread with its messages, runs, steps and sandbox session (an active \
                 run is cancelled first).",
                vec![], None, ok_json("Deleted.", g.output::<Deleted<ThreadDeleted>>()), BY_ID,
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
                None, ok_json("A page of messages.", g.output::<ListBody<Message>>()), BY_ID,
            ),
            "post": operation(
                "createMessage", "Messages",
                "Add a message (refused with a 400 while a run is active on the thread).",
                vec![], Some(json_body(g.input::<CreateMessage>(), true)),
                ok_json("The new message.", g.output::<Message>()), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/messages/{message_id}".into(),
        json!({
            "parameters": [thread_id(), path_param("message_id", "A message's id (`msg_…`).")],
            "get": operation(
                "retrieveMessage", "Messages", "A message.", vec![], None,
                ok_json("The message.", g.output::<Message>()), BY_ID,
            ),
            "post": operation(
                "modifyMessage", "Messages", "Change a message's metadata.", vec![],
                Some(json_body(g.input::<ModifyMessage>(), false)),
                ok_json("The message.", g.output::<Message>()), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteMessage", "Messages", "Delete a message.", vec![], None,
                ok_json("Deleted.", g.output::<Deleted<MessageDeleted>>()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads/runs".into(),
        json!({
            "post": operation(
                "createThreadAndRun", "Runs", "Create a thread and start a run on it.", vec![],
                Some(json_body(g.input::<CreateThreadAndRun>(), true)),
                ok_run(g, true), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs".into(),
        json!({
            "parameters": [thread_id()],
            "get": operation(
                "listRuns", "Runs", "List a thread's runs.", list_params(), None,
                ok_json("A page of runs.", g.output::<ListBody<Run>>()), BY_ID,
            ),
            "post": operation(
                "createRun", "Runs",
                "Start a run (refused with a 400 while another run is active on the thread).",
                vec![include()], Some(json_body(g.input::<CreateRun>(), true)),
                ok_run(g, true), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}".into(),
        json!({
            "parameters": [thread_id(), run_id()],
            "get": operation(
                "retrieveRun", "Runs", "A run (poll this).", vec![], None, ok_run(g, false), BY_ID,
            ),
            "post": operation(
                "modifyRun", "Runs", "Change a run's metadata.", vec![],
                Some(json_body(g.input::<ModifyRun>(), false)),
                ok_run(g, false), BY_ID_WITH_BODY,
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
                vec![], None, ok_run(g, false), BY_ID,
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
                vec![], Some(json_body(g.input::<SubmitToolOutputs>(), true)),
                ok_run(g, true), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}/steps".into(),
        json!({
            "parameters": [thread_id(), run_id()],
            "get": operation(
                "listRunSteps", "Runs", "List a run's steps.",
                with(list_params(), vec![include()]), None,
                ok_json("A page of run steps.", g.output::<ListBody<RunStep>>()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}".into(),
        json!({
            "parameters": [thread_id(), run_id(), path_param("step_id", "A step's id (`step_…`).")],
            "get": operation(
                "retrieveRunStep", "Runs", "A run step.", vec![include()], None,
                ok_json("The step.", g.output::<RunStep>()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/models".into(),
        json!({
            "get": operation(
                "listModels", "Models",
                "The models runs can use: `oasis-local` and the upstream's models.", vec![], None,
                ok_json("The models.", g.output::<ModelList>()),
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
                ok_json("The model.", g.output::<ModelObject>()), BY_ID,
            ),
            "delete": never_ok(operation(
                "deleteModel", "Models",
                "Delete a fine-tuned model. Oasis has none: a model it serves answers 403, any \
                 other 404.",
                vec![], None, json!({}), &[400, 401, 403, 404, 500],
            )),
        }),
    );
    p.insert(
        "/v1/code_interpreter/execute".into(),
        json!({
            "post": operation(
                "executeCode", "Code interpreter",
                "Run Python in a session (an Oasis endpoint): variables and `/mnt/data` persist \
                 per session; files the code writes become Files.",
                vec![], Some(json_body(g.input::<ExecuteRequest>(), true)),
                json!({
                    "description": "The result, or with `stream: true` server-sent events: \
                        `stdout`/`stderr` (`{\"text\": …}`) as the code writes, then `result` \
                        (this body) or `error` (an error body), then `done` (`[DONE]`).",
                    "content": {
                        "application/json": {"schema": g.output::<ExecuteResponse>()},
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
                "The files in a session's `/mnt/data` (404 for a session that does not exist).",
                vec![], None,
                ok_json("The files.", g.output::<SessionFileList>()),
                BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/code_interpreter/sessions/{session_id}".into(),
        json!({
            "parameters": [session_id()],
            "get": operation(
                "retrieveSession", "Code interpreter",
                "A session: whether its interpreter is live, hibernated (saved to disk, resumed \
                 by the next call) or idle (the next call starts a new one), the bytes its \
                 saved state takes, and when it was last used.",
                vec![], None,
                ok_json("The session.", g.output::<SessionObject>()), BY_ID,
            ),
            "delete": operation(
                "deleteSession", "Code interpreter",
                "End a session and delete its files.", vec![], None,
                ok_json("Deleted.", g.output::<Deleted<SessionDeleted>>()), BY_ID,
            ),
        }),
    );
    Value::Object(p)
}

/// `/v1/uploads`: a large File sent in Parts.
fn uploads(g: &mut Gen, p: &mut Map<String, Value>) {
    let upload_id = || path_param("upload_id", "An Upload's id (`upload_…`).");
    let upload = g.output::<Upload>();
    let ok = |what: &str| ok_json(what, upload.clone());
    p.insert(
        "/v1/uploads".into(),
        json!({
            "post": operation(
                "createUpload", "Uploads",
                "Start an Upload: a File of `bytes` bytes sent in Parts (an Upload expires after \
                 an hour).",
                vec![], Some(json_body(g.input::<CreateUploadRequest>(), true)),
                ok("The pending Upload."), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/uploads/{upload_id}/parts".into(),
        json!({
            "parameters": [upload_id()],
            "post": operation(
                "addUploadPart", "Uploads",
                "Add a Part (multipart `data`, streamed to disk; at most 64 MiB).", vec![],
                Some(json!({
                    "required": true,
                    "content": {"multipart/form-data": {
                        "schema": g.input::<AddUploadPartRequest>(),
                        "encoding": {"data": {"contentType": "application/octet-stream"}}
                    }}
                })),
                ok_json("The Part.", g.output::<UploadPart>()), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/uploads/{upload_id}/complete".into(),
        json!({
            "parameters": [upload_id()],
            "post": operation(
                "completeUpload", "Uploads",
                "Join the Parts in the order given into a File (checked against `md5` if given).",
                vec![], Some(json_body(g.input::<CompleteUploadRequest>(), true)),
                ok("The completed Upload, with its File."), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/uploads/{upload_id}/cancel".into(),
        json!({
            "parameters": [upload_id()],
            "post": operation(
                "cancelUpload", "Uploads",
                "Cancel a pending Upload; its Parts are deleted. The body, if any, is ignored.",
                vec![], None, ok("The cancelled Upload."), BY_ID,
            ),
        }),
    );
}

/// `/v1/vector_stores`: stores, their files and batches, and search.
fn vector_stores(g: &mut Gen, p: &mut Map<String, Value>) {
    let vs_id = || path_param("vector_store_id", "A vector store's id (`vs_…`).");
    let file_id = || path_param("file_id", "A File's id (`file-…`).");
    let batch_id = || path_param("batch_id", "A file batch's id (`vsfb_…`).");
    let status_filter = || {
        query_param(
            "filter",
            "Only files in this state.",
            json!({"type": "string", "enum": ["in_progress", "completed", "failed", "cancelled"]}),
        )
    };
    let with = |mut params: Vec<Value>, more: Vec<Value>| {
        params.extend(more);
        params
    };
    let store = g.output::<VectorStore>();
    let file = g.output::<VectorStoreFile>();
    let batch = g.output::<FileBatch>();
    let files_page = g.output::<ListBody<VectorStoreFile>>();
    p.insert(
        "/v1/vector_stores".into(),
        json!({
            "get": operation(
                "listVectorStores", "Vector stores", "List vector stores.", list_params(), None,
                ok_json("A page of vector stores.", g.output::<ListBody<VectorStore>>()), PLAIN,
            ),
            "post": operation(
                "createVectorStore", "Vector stores",
                "Create a vector store, optionally with files (read into chunks in the \
                 background).",
                vec![], Some(json_body(g.input::<CreateVectorStore>(), false)),
                ok_json("The new store.", store.clone()), WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}".into(),
        json!({
            "parameters": [vs_id()],
            "get": operation(
                "getVectorStore", "Vector stores", "A vector store.", vec![], None,
                ok_json("The store.", store.clone()), BY_ID,
            ),
            "post": operation(
                "modifyVectorStore", "Vector stores",
                "Change a store's name, expiry or metadata.", vec![],
                Some(json_body(g.input::<ModifyVectorStore>(), false)),
                ok_json("The store.", store.clone()), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteVectorStore", "Vector stores",
                "Delete a store and its chunks (its Files stay).", vec![], None,
                ok_json("Deleted.", g.output::<Deleted<VectorStoreDeleted>>()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/search".into(),
        json!({
            "parameters": [vs_id()],
            "post": operation(
                "searchVectorStore", "Vector stores",
                "The passages that best match a query (BM25 and embeddings, fused).", vec![],
                Some(json_body(g.input::<SearchBody>(), true)),
                ok_json("The results.", g.output::<SearchPage>()), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/files".into(),
        json!({
            "parameters": [vs_id()],
            "get": operation(
                "listVectorStoreFiles", "Vector stores", "List a store's files.",
                with(list_params(), vec![status_filter()]), None,
                ok_json("A page of files.", files_page.clone()), BY_ID,
            ),
            "post": operation(
                "createVectorStoreFile", "Vector stores",
                "Add a File to a store (read into chunks in the background).", vec![],
                Some(json_body(g.input::<CreateFile>(), true)),
                ok_json("The store's file.", file.clone()), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/files/{file_id}".into(),
        json!({
            "parameters": [vs_id(), file_id()],
            "get": operation(
                "getVectorStoreFile", "Vector stores", "A store's file.", vec![], None,
                ok_json("The store's file.", file.clone()), BY_ID,
            ),
            "post": operation(
                "updateVectorStoreFileAttributes", "Vector stores",
                "Replace a store's file's attributes.", vec![],
                Some(json_body(g.input::<UpdateFile>(), true)),
                ok_json("The store's file.", file.clone()), BY_ID_WITH_BODY,
            ),
            "delete": operation(
                "deleteVectorStoreFile", "Vector stores",
                "Remove a File from a store (the File stays).", vec![], None,
                ok_json("Deleted.", g.output::<Deleted<VectorStoreFileDeleted>>()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/files/{file_id}/content".into(),
        json!({
            "parameters": [vs_id(), file_id()],
            "get": operation(
                "retrieveVectorStoreFileContent", "Vector stores",
                "A store's file's text, as its chunks.", vec![], None,
                ok_json("The text.", g.output::<FileContentPage>()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/file_batches".into(),
        json!({
            "parameters": [vs_id()],
            "post": operation(
                "createVectorStoreFileBatch", "Vector stores",
                "Add up to 2000 Files at once.", vec![],
                Some(json_body(g.input::<CreateBatch>(), true)),
                ok_json("The batch.", batch.clone()), BY_ID_WITH_BODY,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}".into(),
        json!({
            "parameters": [vs_id(), batch_id()],
            "get": operation(
                "getVectorStoreFileBatch", "Vector stores", "A file batch.", vec![], None,
                ok_json("The batch.", batch.clone()), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel".into(),
        json!({
            "parameters": [vs_id(), batch_id()],
            "post": operation(
                "cancelVectorStoreFileBatch", "Vector stores",
                "Cancel the files of a batch not yet read (400 once it has ended). The body, if \
                 any, is ignored.",
                vec![], None, ok_json("The batch.", batch), BY_ID,
            ),
        }),
    );
    p.insert(
        "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files".into(),
        json!({
            "parameters": [vs_id(), batch_id()],
            "get": operation(
                "listFilesInVectorStoreBatch", "Vector stores", "List a batch's files.",
                with(list_params(), vec![status_filter()]), None,
                ok_json("A page of files.", files_page), BY_ID,
            ),
        }),
    );
}
