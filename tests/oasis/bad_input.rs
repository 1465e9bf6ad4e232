//! Bad API input: every refusal is OpenAI's error body with the right status, never a 5xx or
//! axum's plain text.

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, err_parts};

/// Send `body` as `content_type` (none if `None`) and read the answer as JSON.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("not JSON ({status}, {ct}): {text:?}"));
    (status, v)
}

/// Assert an OpenAI error with `status`; its message and param.
fn refused(expected: u16, (status, v): (u16, Value)) -> (String, Option<String>) {
    assert_eq!(status, expected, "{v}");
    let (message, kind, param) = err_parts(&v);
    assert!(!message.is_empty() && !kind.is_empty(), "{v}");
    let expected_kind = if expected >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    assert_eq!(kind, expected_kind, "{v}");
    (message, param)
}

async fn post_raw(app: &TestApp, path: &str, body: &str) -> (u16, Value) {
    send(
        app,
        Method::POST,
        path,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

/// A form part: field name, file name (if any), bytes.
type Part<'a> = (&'a str, Option<&'a [u8]>, &'a [u8]);

/// A multipart body with the given (name, filename, bytes) parts, built byte by byte so file
/// names reach the server exactly as written.
fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "oasis-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, filename, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = filename {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(f);
            body.extend_from_slice(b"\"");
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_raw(app: &TestApp, parts: &[Part<'_>]) -> (u16, Value) {
    let (ct, body) = multipart(parts);
    send(app, Method::POST, "/v1/files", Some(&ct), body).await
}

async fn upload_named(app: &TestApp, filename: &[u8]) -> (u16, Value) {
    upload_raw(
        app,
        &[
            ("purpose", None, b"assistants"),
            ("file", Some(filename), b"secret-free bytes"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_wrong_types_and_unknown_fields_are_openai_400s() {
    let app = TestApp::spawn().await;
    let (_, thread) = app.post("/v1/threads", json!({})).await;
    let tid = thread["id"].as_str().unwrap();

    let (m, _) = refused(400, post_raw(&app, "/v1/assistants", "{\"model\": ").await);
    assert!(m.contains("could not parse the JSON body"), "{m}");
    let (m, _) = refused(
        400,
        post_raw(&app, "/v1/assistants", "{'model': 'm'}").await,
    );
    assert!(m.contains("could not parse the JSON body"), "{m}");
    // v1's `retrieval` tool is named and the supported ones listed, as OpenAI words it.
    let (m, _) = refused(
        400,
        app.post(
            "/v1/assistants",
            json!({"model": "m", "tools": [{"type": "retrieval"}]}),
        )
        .await,
    );
    assert!(
        m.starts_with("Invalid value: 'retrieval'. Supported values are: "),
        "{m}"
    );
    for t in ["'code_interpreter'", "'file_search'", "'function'"] {
        assert!(m.contains(t), "{m}");
    }
    assert!(!m.contains('`') && !m.contains("line 1"), "{m}");
    let (m, _) = refused(
        400,
        post_raw(&app, "/v1/assistants", "{\"model\": \"m\"} x").await,
    );
    assert!(m.contains("could not parse the JSON body"), "{m}");

    // Wrong types.
    let (m, param) = refused(400, app.post("/v1/assistants", json!({"model": 5})).await);
    assert_eq!(
        m,
        "Invalid type for 'model': expected a string, but got an integer instead."
    );
    assert_eq!(param.as_deref(), Some("model"));
    refused(
        400,
        app.post(
            "/v1/assistants",
            json!({"model": "m", "temperature": "hot"}),
        )
        .await,
    );
    refused(
        400,
        app.post(
            "/v1/assistants",
            json!({"model": "m", "metadata": {"k": 1}}),
        )
        .await,
    );
    refused(400, app.post("/v1/assistants", json!("model")).await);
    refused(
        400,
        app.post("/v1/code_interpreter/execute", json!({"code": 1}))
            .await,
    );
    refused(
        400,
        app.post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "timeout_ms": -5}),
        )
        .await,
    );
    refused(
        400,
        app.post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": ["asst_x"]}),
        )
        .await,
    );
    // An array where an object belongs is not read as the object's fields in order.
    let (m, param) = refused(
        400,
        app.post(&format!("/v1/threads/{tid}"), json!([null, null]))
            .await,
    );
    assert!(m.contains("expected a JSON object"), "{m}");
    assert_eq!(param, None);
    let (_, param) = refused(
        400,
        app.post("/v1/threads", json!({"tool_resources": [null, null]}))
            .await,
    );
    assert_eq!(param.as_deref(), Some("tool_resources"));
    let (_, param) = refused(
        400,
        app.post(
            "/v1/assistants",
            json!({"model": "m", "tools": [{"type": "function", "function": ["f"]}]}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("tools[0].function"));
    // A number is not a type tag (serde would take it as the variant's index).
    let (m, param) = refused(
        400,
        app.post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": [{"type": 0, "text": "hi"}]}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("content[0].type"), "{m}");
    refused(
        400,
        app.post(
            "/v1/assistants",
            json!({"model": "m", "tools": [{"type": 2, "function": {"name": "f"}}]}),
        )
        .await,
    );
    // file_search's stores must exist, and a helper's files too.
    let (m, param) = refused(
        400,
        app.post(
            "/v1/assistants",
            json!({"model": "m", "tools": [{"type": "file_search"}],
                   "tool_resources": {"file_search": {"vector_store_ids": ["vs_abc"]}}}),
        )
        .await,
    );
    assert_eq!(m, "No vector store found with id 'vs_abc'.");
    assert_eq!(
        param.as_deref(),
        Some("tool_resources.file_search.vector_store_ids")
    );
    let (_, param) = refused(
        400,
        app.post(
            &format!("/v1/threads/{tid}"),
            json!({"tool_resources": {"file_search": {"vector_stores": [{"file_ids": ["file-x"]}]}}}),
        )
        .await,
    );
    assert_eq!(
        param.as_deref(),
        Some("tool_resources.file_search.vector_stores[0].file_ids")
    );
    // An empty helper makes an empty store.
    let (s, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "m", "tool_resources": {"file_search": {"vector_stores": [{"file_ids": []}]}}}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let made = a["tool_resources"]["file_search"]["vector_store_ids"][0]
        .as_str()
        .unwrap();
    assert_eq!(app.get(&format!("/v1/vector_stores/{made}")).await.0, 200);
    app.delete(&format!("/v1/assistants/{}", a["id"].as_str().unwrap()))
        .await;
    // Nothing was stored by any of those.
    let (_, list) = app.get("/v1/assistants").await;
    assert_eq!(list["data"], json!([]));
    let (_, msgs) = app.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(msgs["data"], json!([]));

    // The code interpreter's own fields, refused before any code runs.
    for (body, field) in [
        (json!({"code": "   "}), "code"),
        (json!({"code": "print(1)", "timeout_ms": 0}), "timeout_ms"),
        (
            json!({"code": "print(1)", "timeout_ms": 600_001}),
            "timeout_ms",
        ),
        (json!({"code": "print(1)", "image": "../../etc"}), "image"),
        (
            json!({"code": "print(1)", "file_ids": (0..21).map(|i| format!("file-{i}")).collect::<Vec<_>>()}),
            "file_ids",
        ),
    ] {
        let (m, param) = refused(400, app.post("/v1/code_interpreter/execute", body).await);
        assert_eq!(param.as_deref(), Some(field), "{m}");
    }
    refused(
        400,
        app.post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "stream": "yes"}),
        )
        .await,
    );

    // Unknown fields, at the top and inside.
    let (m, param) = refused(
        400,
        app.post("/v1/assistants", json!({"model": "m", "colour": "red"}))
            .await,
    );
    assert_eq!(m, "Unrecognized request argument supplied: colour");
    assert_eq!(param.as_deref(), Some("colour"));
    let (_, param) = refused(
        400,
        app.post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "hi", "author": "me"}]}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("messages[0].author"));
    let (_, param) = refused(
        400,
        app.post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "language": "python"}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("language"));

    // Missing and empty required fields.
    let (m, param) = refused(400, app.post("/v1/assistants", json!({})).await);
    assert_eq!(
        (m.as_str(), param.as_deref()),
        ("Missing required parameter: 'model'.", Some("model"))
    );
    let (_, a) = app.post("/v1/assistants", json!({"model": "m"})).await;
    let aid = a["id"].as_str().unwrap();
    let (_, param) = refused(
        400,
        app.post(&format!("/v1/assistants/{aid}"), json!({"model": "  "}))
            .await,
    );
    assert_eq!(param.as_deref(), Some("model"));
    let (_, a2) = app.get(&format!("/v1/assistants/{aid}")).await;
    assert_eq!(a2["model"], "m");
    let (_, param) = refused(
        400,
        app.post(
            &format!("/v1/threads/{tid}/runs/run_x/submit_tool_outputs"),
            json!({}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("tool_outputs"));
    // An empty body is `{}`.
    let (s, t) = send(&app, Method::POST, "/v1/threads", None, "").await;
    assert_eq!((s, t["object"].as_str()), (200, Some("thread")));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_beyond_the_limits_are_openai_413s() {
    let app = TestApp::spawn_with(None, |s| s.api.max_upload_bytes = 1000).await;
    let huge = format!(
        "{{\"model\": \"m\", \"instructions\": \"{}\"}}",
        "a".repeat(3 << 20)
    );
    let (m, _) = refused(413, post_raw(&app, "/v1/assistants", &huge).await);
    assert!(m.contains("length limit exceeded"), "{m}");
    let (_, thread) = app.post("/v1/threads", json!({})).await;
    let tid = thread["id"].as_str().unwrap();
    let huge = format!(
        "{{\"role\": \"user\", \"content\": \"{}\"}}",
        "b".repeat(3 << 20)
    );
    refused(
        413,
        post_raw(&app, &format!("/v1/threads/{tid}/messages"), &huge).await,
    );
    let huge = format!("{{\"code\": \"{}\"}}", "1".repeat(3 << 20));
    refused(
        413,
        post_raw(&app, "/v1/code_interpreter/execute", &huge).await,
    );

    // A file past max_upload_bytes, and a form field past the body limit.
    let big = vec![b'x'; 1001];
    let (_, param) = refused(
        413,
        upload_raw(
            &app,
            &[
                ("purpose", None, b"assistants"),
                ("file", Some(b"big.bin"), &big),
            ],
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("file"));
    let long_purpose = vec![b'p'; 2 << 20];
    refused(
        413,
        upload_raw(
            &app,
            &[
                ("purpose", None, &long_purpose),
                ("file", Some(b"a.txt"), b"a"),
            ],
        )
        .await,
    );
    let (_, files) = app.get("/v1/files").await;
    assert_eq!(files["data"], json!([]));
    // Exactly the limit is fine.
    let (s, f) = upload_raw(
        &app,
        &[
            ("purpose", None, b"assistants"),
            ("file", Some(b"max.bin"), &[b'y'; 1000]),
        ],
    )
    .await;
    assert_eq!((s, f["bytes"].as_u64()), (200, Some(1000)), "{f}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_ids_are_404s_for_every_resource() {
    let app = TestApp::spawn().await;
    let (_, thread) = app.post("/v1/threads", json!({})).await;
    let tid = thread["id"].as_str().unwrap().to_string();
    let (_, a) = app.post("/v1/assistants", json!({"model": "m"})).await;
    let aid = a["id"].as_str().unwrap().to_string();
    let r = |p: &str| p.replace("{tid}", &tid);
    let cases: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::GET,
            r("/v1/files/file-nope"),
            None,
            "No such File object: file-nope",
        ),
        (
            Method::DELETE,
            r("/v1/files/file-nope"),
            None,
            "No such File object: file-nope",
        ),
        (
            Method::GET,
            r("/v1/files/file-nope/content"),
            None,
            "No such File object: file-nope",
        ),
        (
            Method::GET,
            r("/v1/assistants/asst_nope"),
            None,
            "No assistant found with id 'asst_nope'.",
        ),
        (
            Method::POST,
            r("/v1/assistants/asst_nope"),
            Some(json!({"name": "x"})),
            "No assistant found with id 'asst_nope'.",
        ),
        (
            Method::DELETE,
            r("/v1/assistants/asst_nope"),
            None,
            "No assistant found with id 'asst_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/thread_nope"),
            None,
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/thread_nope"),
            Some(json!({"metadata": {}})),
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::DELETE,
            r("/v1/threads/thread_nope"),
            None,
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/thread_nope/messages"),
            None,
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/thread_nope/messages"),
            Some(json!({"role": "user", "content": "hi"})),
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/{tid}/messages/msg_nope"),
            None,
            "No message found with id 'msg_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/{tid}/messages/msg_nope"),
            Some(json!({"metadata": {}})),
            "No message found with id 'msg_nope'.",
        ),
        (
            Method::DELETE,
            r("/v1/threads/{tid}/messages/msg_nope"),
            None,
            "No message found with id 'msg_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/thread_nope/runs"),
            None,
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/thread_nope/runs"),
            Some(json!({"assistant_id": aid})),
            "No thread found with id 'thread_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/{tid}/runs"),
            Some(json!({"assistant_id": "asst_nope"})),
            "No assistant found with id 'asst_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/runs"),
            Some(json!({"assistant_id": "asst_nope"})),
            "No assistant found with id 'asst_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/{tid}/runs/run_nope"),
            None,
            "No run found with id 'run_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/{tid}/runs/run_nope"),
            Some(json!({"metadata": {}})),
            "No run found with id 'run_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/{tid}/runs/run_nope/cancel"),
            None,
            "No run found with id 'run_nope'.",
        ),
        (
            Method::POST,
            r("/v1/threads/{tid}/runs/run_nope/submit_tool_outputs"),
            Some(json!({"tool_outputs": []})),
            "No run found with id 'run_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/{tid}/runs/run_nope/steps"),
            None,
            "No run found with id 'run_nope'.",
        ),
        (
            Method::GET,
            r("/v1/threads/{tid}/runs/run_nope/steps/step_nope"),
            None,
            "No run found with id 'run_nope'.",
        ),
        (
            Method::GET,
            r("/v1/models/model-nope"),
            None,
            "The model 'model-nope' does not exist",
        ),
        (
            Method::DELETE,
            r("/v1/code_interpreter/sessions/cisess_nope"),
            None,
            "No session found with id 'cisess_nope'.",
        ),
        (
            Method::GET,
            r("/v1/code_interpreter/sessions/cisess_nope"),
            None,
            "No session found with id 'cisess_nope'.",
        ),
        (
            Method::POST,
            r("/v1/code_interpreter/execute"),
            Some(json!({"code": "print(1)", "session_id": "thread_nope"})),
            "No thread found with id 'thread_nope'.",
        ),
    ];
    for (method, path, body, expected) in cases {
        let what = format!("{method} {path}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (m, _) = refused(
            404,
            send(&app, method, &path, Some("application/json"), body).await,
        );
        assert_eq!(m, expected, "{what}");
    }
    // A file whose bytes went away (deleted while its record was being read) is gone, not a
    // server error.
    let (_, f) = app.upload("gone.txt", b"gone".to_vec(), "assistants").await;
    let fid = f["id"].as_str().unwrap();
    std::fs::remove_file(app.data_dir.join("files").join(fid)).unwrap();
    let (m, _) = refused(404, app.get(&format!("/v1/files/{fid}/content")).await);
    assert_eq!(m, format!("No such File object: {fid}"));
    // A message or run of another thread is not found through this one.
    let (_, other) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "elsewhere"}]}),
        )
        .await;
    let oid = other["id"].as_str().unwrap();
    let (_, msgs) = app.get(&format!("/v1/threads/{oid}/messages")).await;
    let mid = msgs["data"][0]["id"].as_str().unwrap();
    let (m, _) = refused(
        404,
        app.get(&format!("/v1/threads/{tid}/messages/{mid}")).await,
    );
    assert_eq!(m, format!("No message found with id '{mid}'."));
    // Ids the code interpreter refuses outright are 400s.
    let (_, param) = refused(
        400,
        app.delete("/v1/code_interpreter/sessions/not%20a%20session")
            .await,
    );
    assert_eq!(param.as_deref(), Some("session_id"));
    let (_, param) = refused(
        400,
        app.post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "session_id": "../../etc"}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("session_id"));
    let (_, param) = refused(
        400,
        app.post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "file_ids": ["file-nope"]}),
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("file_ids"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pagination_cursors_and_limits_are_400s_on_every_list() {
    let app = TestApp::spawn_with(None, |s| s.api.thread_list = true).await;
    let (_, thread) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let tid = thread["id"].as_str().unwrap();
    let (_, a) = app.post("/v1/assistants", json!({"model": "m"})).await;
    let (s, run) = app
        .post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": a["id"]}),
        )
        .await;
    assert_eq!(s, 200, "{run}");
    let rid = run["id"].as_str().unwrap();
    let lists = [
        "/v1/files".to_string(),
        "/v1/assistants".to_string(),
        "/v1/threads".to_string(),
        format!("/v1/threads/{tid}/messages"),
        format!("/v1/threads/{tid}/runs"),
        format!("/v1/threads/{tid}/runs/{rid}/steps"),
    ];
    for list in &lists {
        // Files take up to 10,000 (OpenAI's bound); every other list up to 100.
        let over = if list == "/v1/files" { "10001" } else { "101" };
        for limit in ["0", over, "-1", "abc", "1.5", "", "99999999999999999999"] {
            let (m, param) = refused(400, app.get(&format!("{list}?limit={limit}")).await);
            assert_eq!(param.as_deref(), Some("limit"), "{list} {limit}: {m}");
        }
        let (_, param) = refused(400, app.get(&format!("{list}?order=sideways")).await);
        assert_eq!(param.as_deref(), Some("order"));
        let (m, param) = refused(400, app.get(&format!("{list}?after=obj_nope")).await);
        assert_eq!(param.as_deref(), Some("after"), "{m}");
        assert!(m.contains("obj_nope"), "{m}");
        let (_, param) = refused(400, app.get(&format!("{list}?before=%FF%FE")).await);
        assert_eq!(param.as_deref(), Some("before"));
        let (m, _) = refused(400, app.get(&format!("{list}?limit=1&limit=2")).await);
        assert!(m.contains("duplicate"), "{m}");
        // Empty cursors and unknown parameters are ignored, as by OpenAI.
        let (s, v) = app
            .get(&format!(
                "{list}?after=&before=&limit=100&order=asc&foo=bar"
            ))
            .await;
        assert_eq!(
            (s, v["object"].as_str()),
            (200, Some("list")),
            "{list}: {v}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_file_names_are_reduced_to_a_plain_name_or_refused() {
    let app = TestApp::spawn().await;
    for (name, kept) in [
        (&b"../../etc/passwd"[..], "passwd"),
        (b"/etc/shadow", "shadow"),
        (b"..\\..\\windows\\win.ini", "win.ini"),
        (b"C:\\Users\\me\\report.csv", "report.csv"),
        (b"folder/./../notes.txt", "notes.txt"),
        (b"tab\tinside.txt", "tabinside.txt"),
        ("caf\u{e9}.csv".as_bytes(), "caf\u{e9}.csv"),
    ] {
        let (s, f) = upload_named(&app, name).await;
        assert_eq!(s, 200, "{}: {f}", String::from_utf8_lossy(name));
        assert_eq!(f["filename"], kept);
        // The bytes come back under the id, named by the plain name only.
        let r = app
            .client
            .get(app.url(&format!("/v1/files/{}/content", f["id"].as_str().unwrap())))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let disposition = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            !disposition.contains('/') && !disposition.contains('\\'),
            "{disposition}"
        );
        if kept.starts_with("caf") {
            assert!(
                disposition.ends_with("filename*=UTF-8''caf%C3%A9.csv"),
                "{disposition}"
            );
        }
        assert_eq!(r.bytes().await.unwrap(), &b"secret-free bytes"[..]);
    }
    // The bytes live under the files' ids only: no name the client gave is a path on disk.
    let mut on_disk: Vec<String> = walkdir::WalkDir::new(&app.data_dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.retain(|n| n.ends_with(".ini") || n.ends_with(".csv") || n.ends_with(".txt"));
    assert_eq!(on_disk, Vec::<String>::new());
    let blobs = std::fs::read_dir(app.data_dir.join("files"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("file-"))
        .count();
    assert_eq!(blobs, 7);
    // Names that leave nothing, or too much, are refused.
    let long = vec![b'n'; 4096];
    for name in [&b".."[..], b".", b"/", b"../..", b"a/", b"   ", &long] {
        let (m, param) = refused(400, upload_named(&app, name).await);
        assert_eq!(param.as_deref(), Some("file"), "{m}");
    }
    // A name that is not UTF-8, and control bytes in the part's headers.
    let (m, param) = refused(400, upload_named(&app, b"caf\xe9\xff.csv").await);
    assert_eq!(param.as_deref(), Some("file"));
    assert!(m.contains("UTF-8"), "{m}");
    for name in [&b"nul\0byte.txt"[..], b"bell\x07.txt", b"del\x7f.txt"] {
        refused(400, upload_named(&app, name).await);
    }
    let (_, files) = app.get("/v1/files?limit=100").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 7);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_multipart_fields_and_wrong_content_types_are_openai_400s() {
    let app = TestApp::spawn().await;
    let (m, param) = refused(
        400,
        upload_raw(&app, &[("file", Some(b"a.txt"), b"a")]).await,
    );
    assert_eq!(
        (m.as_str(), param.as_deref()),
        ("Missing required parameter: 'purpose'.", Some("purpose"))
    );
    let (m, param) = refused(
        400,
        upload_raw(&app, &[("purpose", None, b"assistants")]).await,
    );
    assert_eq!(
        (m.as_str(), param.as_deref()),
        ("Missing required parameter: 'file'.", Some("file"))
    );
    let (_, param) = refused(400, upload_raw(&app, &[]).await);
    assert_eq!(param.as_deref(), Some("purpose"));
    let (_, param) = refused(
        400,
        upload_raw(
            &app,
            &[("purpose", None, b"assistants"), ("file", None, b"no name")],
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("file"));
    let (m, param) = refused(
        400,
        upload_raw(
            &app,
            &[
                ("purpose", None, b"weights"),
                ("file", Some(b"a.txt"), b"a"),
            ],
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("purpose"));
    assert!(m.contains("'assistants'"), "{m}");
    let (_, param) = refused(
        400,
        upload_raw(
            &app,
            &[
                ("purpose", None, b"assistants"),
                ("file", Some(b"a.txt"), b"a"),
                ("expires_after", None, b"1"),
            ],
        )
        .await,
    );
    assert_eq!(param.as_deref(), Some("expires_after"));
    // A multipart body cut short.
    let (ct, mut body) = multipart(&[("purpose", None, b"assistants"), ("file", Some(b"a"), b"a")]);
    body.truncate(body.len() - 10);
    refused(
        400,
        send(&app, Method::POST, "/v1/files", Some(&ct), body).await,
    );

    // The upload is multipart only.
    let (m, _) = refused(
        400,
        send(
            &app,
            Method::POST,
            "/v1/files",
            Some("application/json"),
            r#"{"purpose": "assistants"}"#,
        )
        .await,
    );
    assert!(m.contains("multipart/form-data"), "{m}");
    refused(400, send(&app, Method::POST, "/v1/files", None, "").await);
    refused(
        400,
        send(
            &app,
            Method::POST,
            "/v1/files",
            Some("multipart/form-data"),
            "no boundary",
        )
        .await,
    );
    let (_, files) = app.get("/v1/files").await;
    assert_eq!(files["data"], json!([]));

    // JSON endpoints read the body as JSON whatever it is labelled (`curl -d` sends
    // form-urlencoded); what is not JSON is a parse error.
    let (ct, body) = multipart(&[("model", None, b"m")]);
    let (m, _) = refused(
        400,
        send(&app, Method::POST, "/v1/assistants", Some(&ct), body).await,
    );
    assert!(m.contains("could not parse the JSON body"), "{m}");
    refused(
        400,
        send(
            &app,
            Method::POST,
            "/v1/assistants",
            Some("application/x-www-form-urlencoded"),
            "model=m",
        )
        .await,
    );
    let (s, a) = send(
        &app,
        Method::POST,
        "/v1/assistants",
        Some("application/x-www-form-urlencoded"),
        r#"{"model": "m"}"#,
    )
    .await;
    assert_eq!((s, a["object"].as_str()), (200, Some("assistant")), "{a}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_are_405s_unknown_routes_404s_and_bad_paths_400s() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::PUT, "/v1/assistants"),
        (Method::DELETE, "/v1/assistants"),
        (Method::PATCH, "/v1/assistants/asst_x"),
        (Method::PUT, "/v1/files/file-x"),
        (Method::POST, "/v1/files/file-x/content"),
        (Method::GET, "/v1/threads/runs"),
        (Method::DELETE, "/v1/threads/t/runs/r"),
        (Method::GET, "/v1/threads/t/runs/r/cancel"),
        (Method::POST, "/v1/threads/t/runs/r/steps"),
        (Method::GET, "/v1/code_interpreter/execute"),
        (Method::POST, "/v1/code_interpreter/sessions/s"),
        (Method::POST, "/v1/models"),
        (Method::POST, "/health"),
        (Method::DELETE, "/openapi.json"),
        (Method::OPTIONS, "/v1/assistants"),
    ] {
        let what = format!("{method} {path}");
        let (m, _) = refused(405, send(&app, method, path, None, "").await);
        assert_eq!(m, format!("Invalid method for URL ({what})"));
    }
    for path in [
        "/",
        "/v2/assistants",
        "/v1/assistant",
        "/v1/files/file-x/content/more",
        "/v1/threads/t/runs/r/steps/s/more",
        "/v1/code_interpreter",
        "/V1/assistants",
    ] {
        let (m, _) = refused(404, app.get(path).await);
        assert_eq!(m, format!("Invalid URL (GET {path})"));
    }
    // The thread list is an opt-in extension.
    let (m, _) = refused(404, app.get("/v1/threads").await);
    assert!(m.contains("OASIS_THREAD_LIST"), "{m}");
    // Path segments that are not UTF-8.
    for path in [
        "/v1/threads/%FF",
        "/v1/files/%C3%28/content",
        "/v1/threads/t/messages/%80",
        "/v1/code_interpreter/sessions/%FE/files",
    ] {
        let (m, _) = refused(400, app.get(path).await);
        assert!(m.contains("UTF-8"), "{path}: {m}");
    }
    // Odd but valid ids are just unknown.
    for path in [
        "/v1/threads/%00",
        "/v1/threads/a%2Fb",
        "/v1/assistants/%E2%98%83",
    ] {
        refused(404, app.get(path).await);
    }
    let long = format!("/v1/threads/{}", "t".repeat(4096));
    refused(404, app.get(&long).await);
    // `OpenAI-Beta: assistants=v1` is refused everywhere under /v1.
    let r = app
        .client
        .get(app.url("/v1/files"))
        .header("OpenAI-Beta", "assistants=v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_beta");
    app.stop().await;
}

/// Every route in `/openapi.json` is served with the documented methods (and only those),
/// without a key even when keys are required.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.thread_list = true;
        s.api.keys = oasis::tenancy::Keys::new(Some(vec!["sk-doc-test-key".into()]), None).unwrap();
    })
    .await;
    let (s, doc) = app.get("/openapi.json").await;
    assert_eq!(s, 200, "served without a key: {doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
    assert_eq!(doc["paths"]["/openapi.json"]["get"]["security"], json!([]));
    assert_eq!(doc["paths"]["/ready"]["get"]["security"], json!([]));
    assert_eq!(doc["paths"]["/metrics"]["get"]["security"], json!([]));
    assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
    refused(401, app.get("/v1/models").await);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 23, "{}", paths.len());
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "delete", "put", "patch"] {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .client
                .request(m, app.url(&concrete))
                .bearer_auth("sk-doc-test-key")
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            // Every answer is JSON but `/metrics`'s Prometheus text.
            let text = r.text().await.unwrap();
            let body: Value = match path.as_str() {
                "/metrics" if status == 200 => Value::String(text),
                _ => serde_json::from_str(&text).unwrap(),
            };
            let what = format!("{method} {path}: {status} {body}");
            let op = &item[method];
            if op.is_null() {
                assert_eq!(status, 405, "{what}");
                continue;
            }
            operations += 1;
            assert_ne!(status, 405, "{what}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.starts_with("Invalid URL"), "{what}");
            assert!(
                op["responses"][status.to_string()].is_object(),
                "undocumented status: {what}"
            );
            if status >= 400 {
                err_parts(&body);
            }
        }
    }
    assert_eq!(operations, 60);
    app.stop().await;

    // `--mode tools` lists only what it serves.
    let app = TestApp::spawn_with(None, |s| s.api.mode = oasis::api::Mode::Tools).await;
    let (_, doc) = app.get("/openapi.json").await;
    let mut listed: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "/health",
            "/metrics",
            "/openapi.json",
            "/ready",
            "/v1/code_interpreter/execute",
            "/v1/code_interpreter/sessions/{session_id}",
            "/v1/code_interpreter/sessions/{session_id}/files",
            "/v1/files",
            "/v1/files/{file_id}",
            "/v1/files/{file_id}/content",
            "/v1/uploads",
            "/v1/uploads/{upload_id}/cancel",
            "/v1/uploads/{upload_id}/complete",
            "/v1/uploads/{upload_id}/parts",
        ]
    );
    app.stop().await;
}

/// Files the code interpreter wrote may have any name but `/`; they still download, under their
/// name as shown (control characters escaped).
#[tokio::test(flavor = "multi_thread")]
async fn output_files_with_odd_names_download_with_a_valid_header() {
    let app = TestApp::spawn().await;
    let code = r#"
for name in ["bell\x07.txt", 'say "hi"\\now.txt', "caf\u00e9.txt", "cr\r\nX-Injected: 1.txt"]:
    with open("/mnt/data/" + name, "w") as f:
        f.write(name)
"#;
    let (s, r) = app
        .post("/v1/code_interpreter/execute", json!({"code": code}))
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("completed")), "{r}");
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 4, "{r}");
    for f in files {
        let id = f["file_id"].as_str().unwrap();
        let resp = app
            .client
            .get(app.url(&format!("/v1/files/{id}/content")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{f}");
        assert!(resp.headers().get("x-injected").is_none());
        let disposition = resp.headers()["content-disposition"]
            .to_str()
            .expect("an ASCII header")
            .to_string();
        assert!(
            disposition.starts_with("attachment; filename=\""),
            "{disposition}"
        );
        let name = f["path"]
            .as_str()
            .unwrap()
            .strip_prefix("/mnt/data/")
            .unwrap();
        let body = resp.bytes().await.unwrap();
        assert_eq!(body, name.as_bytes());
        // The exact name, percent-encoded.
        let encoded = disposition.split("filename*=UTF-8''").nth(1).unwrap();
        let mut decoded = Vec::new();
        let mut bytes = encoded.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()]
                    .iter()
                    .map(|&c| c as char)
                    .collect();
                decoded.push(u8::from_str_radix(&hex, 16).unwrap());
            } else {
                decoded.push(b);
            }
        }
        // The name, with control characters shown as escapes rather than obeyed.
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            oasis::model::shown_file_name(name),
            "{disposition}"
        );
    }
    app.stop().await;
}

/// A refused body is read away, so the 413 arrives whole and the client's pooled connection
/// keeps working (before, a quarter of such refusals broke the connection under the client).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_leaves_the_connection_usable() {
    let app = TestApp::spawn_with(None, |s| s.api.max_upload_bytes = 1000).await;
    // One pooled connection: every request below reuses the one the refusal went over.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let huge = format!(
        "{{\"model\": \"m\", \"name\": \"{}\"}}",
        "n".repeat(3 << 20)
    );
    let big_file = multipart(&[
        ("purpose", None, b"assistants"),
        ("file", Some(b"big.bin"), &vec![b'x'; 4 << 20]),
    ]);
    for round in 0..8 {
        let r = client
            .post(app.url("/v1/assistants"))
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the 413 was lost: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "round {round}");
        assert!(r.headers().get("connection").is_none(), "round {round}");
        let v: Value = r.json().await.unwrap();
        assert!(err_parts(&v).0.contains("length limit exceeded"), "{v}");
        let r = client
            .post(app.url("/v1/files"))
            .header("content-type", big_file.0.clone())
            .body(big_file.1.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the upload's 413 was lost: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "round {round}");
        let r = client
            .get(app.url("/v1/files"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request failed: {e:?}"));
        assert_eq!(r.status().as_u16(), 200, "round {round}");
    }
    app.stop().await;
}

/// A refused body that never ends is not waited for forever: the answer comes after the
/// drain time with `Connection: close`, so no client reuses the connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_that_never_ends_gets_its_answer_and_a_closed_connection() {
    let app = TestApp::spawn().await;
    let first = format!("{{\"model\": \"m\", \"name\": \"{}", "n".repeat(3 << 20));
    let chunks = futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures::stream::pending());
    let started = std::time::Instant::now();
    let r = app
        .client
        .post(app.url("/v1/assistants"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let (s, _) = app.get("/v1/files").await;
    assert_eq!(s, 200);
    app.stop().await;
}

/// Without a valid key the server reads away less: a JSON request still gets its 401 on a
/// connection that stays usable, but an endless body is cut off after a second, not five.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_without_a_key_gets_its_401_but_the_server_reads_less_for_it() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys =
            oasis::tenancy::Keys::new(Some(vec!["sk-drain-test-key".into()]), None).unwrap();
    })
    .await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let body = format!(
        "{{\"model\": \"m\", \"name\": \"{}\"}}",
        "n".repeat(300 << 10)
    );
    for round in 0..6 {
        let r = client
            .post(app.url("/v1/assistants"))
            .header("authorization", "Bearer sk-wrong")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the 401 was lost: {e:?}"));
        assert_eq!(r.status().as_u16(), 401, "round {round}");
        let r = client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request failed: {e:?}"));
        assert_eq!(r.status().as_u16(), 200, "round {round}");
    }
    let first = "x".repeat(64 << 10);
    let chunks = futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
        .chain(futures::stream::pending());
    let started = std::time::Instant::now();
    let r = app
        .client
        .post(app.url("/v1/files"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );
    // The unauthenticated bound is one second; the authenticated one is five.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}
