//! The HTTP API over real HTTP.

use serde_json::json;

use crate::helpers::{PNG_SIGNATURE, TestApp, err_parts};

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_and_unknown_routes_are_openai_shaped_404s() {
    let app = TestApp::spawn().await;
    let (s, v) = app.get("/health").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = app.get("/v1/nothing-here").await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&v).0, "Invalid URL (GET /v1/nothing-here)");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_required_when_configured() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys = oasis::tenancy::Keys::new(Some(vec!["sk-test-key-123".into()]), None).unwrap();
    })
    .await;
    let (s, v) = app.get("/v1/assistants").await;
    assert_eq!(s, 401);
    assert!(err_parts(&v).0.contains("You didn't provide an API key"));
    let r = app
        .client
        .get(app.url("/v1/assistants"))
        .bearer_auth("sk-wrong-key-999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(
        !v.to_string().contains("sk-wrong-key-999"),
        "the key is echoed: {v}"
    );
    let r = app
        .client
        .get(app.url("/v1/assistants"))
        .bearer_auth("sk-test-key-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Health stays open.
    assert_eq!(app.get("/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_upload_list_download_and_delete() {
    let app = TestApp::spawn_with(None, |s| s.api.max_upload_bytes = 10_000).await;
    let (s, f) = app
        .upload("../../etc/data.csv", b"a,b\n1,2\n".to_vec(), "assistants")
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["object"], "file");
    assert_eq!(f["filename"], "data.csv");
    assert_eq!(f["bytes"], 8);
    assert_eq!(f["purpose"], "assistants");
    let id = f["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("file-"));
    let (_, other) = app
        .upload("v.png", crate::helpers::PNG_SIGNATURE.to_vec(), "vision")
        .await;

    let (_, list) = app.get("/v1/files?purpose=assistants").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let (_, list) = app.get("/v1/files?limit=1&order=asc").await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["has_more"], true);
    let (_, list) = app
        .get(&format!("/v1/files?limit=1&order=asc&after={id}"))
        .await;
    assert_eq!(list["data"][0]["id"], other["id"]);
    assert_eq!(list["has_more"], false);

    let body = app
        .client
        .get(app.url(&format!("/v1/files/{id}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(body.bytes().await.unwrap().as_ref(), b"a,b\n1,2\n");

    // Too large, bad purpose, missing file.
    let (s, v) = app.upload("big.bin", vec![0u8; 20_000], "assistants").await;
    assert_eq!(s, 413, "{v}");
    err_parts(&v);
    let (s, v) = app
        .upload("x.txt", b"x".to_vec(), "assistants_output")
        .await;
    assert_eq!(s, 400);
    assert_eq!(err_parts(&v).2.as_deref(), Some("purpose"));

    let (s, v) = app.delete(&format!("/v1/files/{id}")).await;
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)));
    let (s, v) = app.get(&format!("/v1/files/{id}")).await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&v).0, format!("No such File object: {id}"));
    // No stray partial files remain in the blob folder.
    let names: Vec<String> = std::fs::read_dir(app.data_dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![other["id"].as_str().unwrap().to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn assistants_crud_pagination_and_errors() {
    let app = TestApp::spawn().await;
    let mut ids = vec![];
    for i in 0..3 {
        let (s, a) = app
            .post(
                "/v1/assistants",
                json!({"model": "oasis-local", "name": format!("Math Tutor {i}"),
                       "instructions": "You are a personal math tutor.",
                       "tools": [{"type": "code_interpreter"}], "metadata": {"n": i.to_string()}}),
            )
            .await;
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["object"], "assistant");
        assert_eq!(a["tools"][0]["type"], "code_interpreter");
        ids.push(a["id"].as_str().unwrap().to_string());
    }
    let (_, l) = app.get("/v1/assistants?limit=2").await;
    assert_eq!(l["object"], "list");
    assert_eq!(l["data"][0]["id"], ids[2].as_str());
    assert_eq!(l["first_id"], ids[2].as_str());
    assert_eq!(l["last_id"], ids[1].as_str());
    assert_eq!(l["has_more"], true);
    let (_, l) = app
        .get(&format!("/v1/assistants?limit=2&after={}", ids[1]))
        .await;
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
    assert_eq!(l["has_more"], false);

    let (s, a) = app
        .post(
            &format!("/v1/assistants/{}", ids[0]),
            json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!((s, a["name"].as_str()), (200, Some("Renamed")));
    assert_eq!(a["instructions"], "You are a personal math tutor.");
    let (_, a) = app.get(&format!("/v1/assistants/{}", ids[0])).await;
    assert_eq!(a["name"], "Renamed");

    let (s, v) = app.post("/v1/assistants", json!({"name": "x"})).await;
    assert_eq!(s, 400);
    assert_eq!(err_parts(&v).2.as_deref(), Some("model"));
    let (s, v) = app
        .post("/v1/assistants", json!({"model": "m", "bogus": 1}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err_parts(&v).0,
        "Unrecognized request argument supplied: bogus"
    );
    let (s, v) = app
        .post(
            "/v1/assistants",
            json!({"model": "m", "name": "n".repeat(257)}),
        )
        .await;
    assert_eq!((s, err_parts(&v).2.as_deref()), (400, Some("name")));
    let (s, v) = app
        .post("/v1/assistants", json!({"model": "m", "tools": [{"type": "function", "function": {"name": "bad name!"}}]}))
        .await;
    assert_eq!(s, 400, "{v}");
    let r = app
        .client
        .post(app.url("/v1/assistants"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, v) = app.get("/v1/assistants/asst_nope").await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&v).0, "No assistant found with id 'asst_nope'.");
    let (s, v) = app.get("/v1/assistants?limit=1000").await;
    assert_eq!((s, err_parts(&v).2.as_deref()), (400, Some("limit")));
    let (s, v) = app.get("/v1/assistants?after=asst_unknown").await;
    assert_eq!((s, err_parts(&v).2.as_deref()), (400, Some("after")));
    let r = app
        .client
        .get(app.url("/v1/assistants"))
        .header("OpenAI-Beta", "assistants=v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_beta");

    let (s, v) = app.delete(&format!("/v1/assistants/{}", ids[0])).await;
    assert_eq!((s, v["object"].as_str()), (200, Some("assistant.deleted")));
    assert_eq!(app.get(&format!("/v1/assistants/{}", ids[0])).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_and_messages_with_content_parts_attachments_and_cascading_delete() {
    let app = TestApp::spawn().await;
    let (_, f) = app
        .upload("data.csv", b"x\n1\n".to_vec(), "assistants")
        .await;
    let fid = f["id"].as_str().unwrap();
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [
                {"role": "user", "content": "I need to solve 3x + 11 = 14."},
                {"role": "user", "content": [{"type": "text", "text": "Chart this"}],
                 "attachments": [{"file_id": fid, "tools": [{"type": "code_interpreter"}]}]}
            ], "tool_resources": {"code_interpreter": {"file_ids": [fid]}}, "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    assert!(tid.starts_with("thread_"));
    assert_eq!(t["tool_resources"]["code_interpreter"]["file_ids"][0], fid);

    let (_, l) = app
        .get(&format!("/v1/threads/{tid}/messages?order=asc"))
        .await;
    let msgs = l["data"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[0]["content"][0]["text"]["value"],
        "I need to solve 3x + 11 = 14."
    );
    assert_eq!(msgs[0]["content"][0]["text"]["annotations"], json!([]));
    assert_eq!(msgs[1]["attachments"][0]["file_id"], fid);
    assert_eq!(msgs[0]["thread_id"], tid.as_str());

    let (s, m) = app
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": "More"}),
        )
        .await;
    assert_eq!(s, 200);
    let mid = m["id"].as_str().unwrap().to_string();
    let (_, l) = app.get(&format!("/v1/threads/{tid}/messages")).await;
    assert_eq!(l["data"][0]["id"], mid.as_str(), "desc by default");
    let (s, m) = app
        .post(
            &format!("/v1/threads/{tid}/messages/{mid}"),
            json!({"metadata": {"a": "b"}}),
        )
        .await;
    assert_eq!((s, m["metadata"]["a"].as_str()), (200, Some("b")));

    // Bad input.
    let (s, v) = app
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "system", "content": "x"}),
        )
        .await;
    assert_eq!((s, err_parts(&v).2.as_deref()), (400, Some("role")));
    let (s, v) = app
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": "x", "attachments": [
                {"file_id": "file-nope", "tools": [{"type": "code_interpreter"}]}
            ]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = app
        .post(
            "/v1/threads/thread_nope/messages",
            json!({"role": "user", "content": "x"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&v).0, "No thread found with id 'thread_nope'.");
    let (s, _) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": []}]}),
        )
        .await;
    assert_eq!(s, 400);

    // Thread list is an opt-in Oasis extension.
    assert_eq!(app.get("/v1/threads").await.0, 404);

    let (s, v) = app.delete(&format!("/v1/threads/{tid}")).await;
    assert_eq!((s, v["object"].as_str()), (200, Some("thread.deleted")));
    assert_eq!(app.get(&format!("/v1/threads/{tid}")).await.0, 404);
    assert_eq!(
        app.get(&format!("/v1/threads/{tid}/messages/{mid}"))
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_can_be_listed_when_the_extension_is_on_and_wrong_methods_are_405() {
    let app = TestApp::spawn_with(None, |s| s.api.thread_list = true).await;
    let (_, t1) = app.post("/v1/threads", json!({})).await;
    let (_, t2) = app.post("/v1/threads", json!({})).await;
    let (s, l) = app.get("/v1/threads?order=asc").await;
    assert_eq!(s, 200);
    assert_eq!(l["data"][0]["id"], t1["id"]);
    assert_eq!(l["data"][1]["id"], t2["id"]);
    let r = app.client.put(app.url("/v1/threads")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: serde_json::Value = r.json().await.unwrap();
    err_parts(&v);
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_written_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let (_, a) = app
        .post("/v1/assistants", json!({"model": "m", "name": "Keeper"}))
        .await;
    let (_, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    let (_, f) = app
        .upload("k.txt", b"kept bytes".to_vec(), "assistants")
        .await;
    app.stop().await;

    let app = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let (s, a2) = app
        .get(&format!("/v1/assistants/{}", a["id"].as_str().unwrap()))
        .await;
    assert_eq!((s, a2), (200, a));
    let (_, l) = app
        .get(&format!(
            "/v1/threads/{}/messages",
            t["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(l["data"][0]["content"][0]["text"]["value"], "hello");
    let fid = f["id"].as_str().unwrap();
    let body = app
        .client
        .get(app.url(&format!("/v1/files/{fid}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(body.bytes().await.unwrap().as_ref(), b"kept bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_runs_fibonacci_and_keeps_the_session() {
    let app = TestApp::spawn().await;
    let (s, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\nprint([fib(i) for i in range(20)])"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "completed");
    assert_eq!(
        r["stdout"],
        "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]\n"
    );
    assert_eq!(r["outputs"][0]["type"], "logs");
    let sid = r["session_id"].as_str().unwrap().to_string();
    let (_, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "fib(30)", "session_id": sid}),
        )
        .await;
    assert_eq!(r["result"], "832040");
    let (_, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "1/0", "session_id": sid}),
        )
        .await;
    assert_eq!(r["status"], "error");
    assert_eq!(r["error"]["name"], "ZeroDivisionError");
    let (_, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "while True: pass", "session_id": sid, "timeout_ms": 500}),
        )
        .await;
    assert_eq!(r["status"], "timeout");
    let (s, v) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "1", "session_id": "../x"}),
        )
        .await;
    assert_eq!((s, err_parts(&v).2.as_deref()), (400, Some("session_id")));
    let (s, _) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "1", "session_id": "thread_missing"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "1", "image": "nope"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v) = app
        .delete(&format!("/v1/code_interpreter/sessions/{sid}"))
        .await;
    assert_eq!((s, v["deleted"].as_bool()), (200, Some(true)));
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_charts_an_uploaded_csv_into_downloadable_files() {
    let app = TestApp::spawn().await;
    let (_, f) = app
        .upload(
            "sales.csv",
            oasis::bench::sales_csv().into_bytes(),
            "assistants",
        )
        .await;
    let code = format!(
        "{}\nplt.figure()\nplt.plot([1, 2, 3])",
        oasis::bench::CHART_CODE
    );
    let (s, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": code, "file_ids": [f["id"]]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    let chart = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/mnt/data/chart.png")
        .expect("chart.png is reported");
    let fid = chart["file_id"].as_str().unwrap();
    let png = app
        .client
        .get(app.url(&format!("/v1/files/{fid}/content")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(png.starts_with(PNG_SIGNATURE));
    assert_eq!(chart["bytes"].as_u64(), Some(png.len() as u64));
    let (_, meta) = app.get(&format!("/v1/files/{fid}")).await;
    assert_eq!(meta["purpose"], "assistants_output");
    assert_eq!(meta["filename"], "chart.png");
    // The figure left open came back as an image output.
    let image = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "image")
        .expect("an image output");
    let iid = image["image"]["file_id"].as_str().unwrap();
    let img = app
        .client
        .get(app.url(&format!("/v1/files/{iid}/content")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(img.starts_with(PNG_SIGNATURE));
    // The session's files are listed.
    let sid = r["session_id"].as_str().unwrap();
    let (_, l) = app
        .get(&format!("/v1/code_interpreter/sessions/{sid}/files"))
        .await;
    let paths: Vec<&str> = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, vec!["/mnt/data/chart.png", "/mnt/data/sales.csv"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_threads_session_is_its_own_and_goes_with_the_thread() {
    let app = TestApp::spawn().await;
    let (_, t) = app.post("/v1/threads", json!({})).await;
    let tid = t["id"].as_str().unwrap();
    let (s, r) = app
        .post("/v1/code_interpreter/execute", json!({"code": "open('/mnt/data/t.txt','w').write('x')\nsecret = 42", "session_id": tid}))
        .await;
    assert_eq!((s, r["session_id"].as_str()), (200, Some(tid)));
    let (_, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "secret", "session_id": tid}),
        )
        .await;
    assert_eq!(r["result"], "42");
    assert!(app.data_dir.join("sessions").join(tid).exists());
    app.delete(&format!("/v1/threads/{tid}")).await;
    assert!(!app.data_dir.join("sessions").join(tid).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_streams_output_then_the_result() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .post(app.url("/v1/code_interpreter/execute"))
        .json(&json!({"code": "print('first')\nimport sys\nprint('oops', file=sys.stderr)\n6*7", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    let first = text.find("event: stdout").expect(&text);
    let result = text.find("event: result").expect(&text);
    let done = text.find("data: [DONE]").expect(&text);
    assert!(first < result && result < done, "{text}");
    assert!(text.contains("event: stderr"), "{text}");
    assert!(text.contains("first"), "{text}");
    let line = text
        .lines()
        .skip_while(|l| *l != "event: result")
        .nth(1)
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(body["result"], "42");
    assert_eq!(body["status"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_mode_serves_only_the_code_interpreter_and_files() {
    let app = TestApp::spawn_with(None, |s| s.api.mode = oasis::api::Mode::Tools).await;
    assert_eq!(app.get("/v1/assistants").await.0, 404);
    assert_eq!(app.get("/v1/files").await.0, 200);
    let (s, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(2+2)"}),
        )
        .await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("4\n")));
}

/// The Python suite in `tests/python` (the official `openai` SDK), against two live servers:
/// one serving runs with the built-in model, one whose upstream is the suite's own scripted
/// Chat Completions server (run by pytest, in its process, so that the tests can script it, on
/// a socket bound here and handed down). It installs its pinned requirements into
/// `target/py-venv` on first run.
#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_sdk_suite_passes() {
    let (app, upstream_app, upstream_socket) = crate::helpers::sdk_servers().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = tokio::task::spawn_blocking(crate::helpers::python_venv)
        .await
        .unwrap();
    let mut pytest = tokio::process::Command::new(&python);
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/python"))
        .env("OASIS_BASE_URL", &app.base)
        .env("OASIS_UPSTREAM_OASIS_URL", &upstream_app.base)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("SCRIPTED_UPSTREAM_PORT");
    crate::helpers::hand_down_upstream_socket(&mut pytest, &upstream_socket);
    let out = pytest.output().await.unwrap();
    drop(upstream_socket);
    let text = crate::helpers::printed(&out);
    println!("{text}");
    assert!(out.status.success(), "the Python SDK suite failed:\n{text}");
}

/// Paging back with `before` gives the page just before the cursor (what a "previous" button
/// needs), and a cursor from another thread is refused.
#[tokio::test(flavor = "multi_thread")]
async fn messages_page_forward_with_after_and_back_with_before() {
    let app = TestApp::spawn().await;
    let messages: Vec<_> = (0..5)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let (_, t) = app.post("/v1/threads", json!({"messages": messages})).await;
    let tid = t["id"].as_str().unwrap();
    let texts = |l: &serde_json::Value| -> Vec<String> {
        l["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["content"][0]["text"]["value"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let list = format!("/v1/threads/{tid}/messages");
    let (_, p1) = app.get(&format!("{list}?limit=2")).await;
    assert_eq!(texts(&p1), ["m4", "m3"]);
    assert_eq!(p1["has_more"], true);
    let last = p1["last_id"].as_str().unwrap();
    let (_, p2) = app.get(&format!("{list}?limit=2&after={last}")).await;
    assert_eq!(texts(&p2), ["m2", "m1"]);
    let first = p2["first_id"].as_str().unwrap();
    let (_, back) = app.get(&format!("{list}?limit=2&before={first}")).await;
    assert_eq!(texts(&back), ["m4", "m3"]);
    assert_eq!(back["has_more"], false);
    let (_, back1) = app.get(&format!("{list}?limit=1&before={first}")).await;
    assert_eq!(texts(&back1), ["m3"]);
    assert_eq!(back1["has_more"], true);
    let (_, asc) = app
        .get(&format!("{list}?limit=2&order=asc&before={last}"))
        .await;
    assert_eq!(texts(&asc), ["m1", "m2"]);

    let (_, other) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let (_, ol) = app
        .get(&format!(
            "/v1/threads/{}/messages",
            other["id"].as_str().unwrap()
        ))
        .await;
    let foreign = ol["data"][0]["id"].as_str().unwrap();
    let (s, e) = app.get(&format!("{list}?after={foreign}")).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(err_parts(&e).2.as_deref(), Some("after"));
    app.stop().await;
}
