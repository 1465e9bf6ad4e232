//! Points where an audit against OpenAI's spec found Oasis different: response formats, model
//! deletion and timestamps, request ids, enums and bounds, and error texts with full params.

use serde_json::{Value, json};

use crate::helpers::{TestApp, err_parts};
use crate::runs::{assistant, fake_upstream, start_run, thread_with, upstream_at, wait_for};

/// `response_format` is `"auto"` or one of OpenAI's three formats; anything else is a 400 on
/// assistants and runs alike, and what is accepted reads back as given.
#[tokio::test(flavor = "multi_thread")]
async fn response_formats_are_openais_three_or_auto_and_nothing_else() {
    let app = TestApp::spawn().await;
    let schema = json!({
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}
    });
    for good in [
        json!("auto"),
        json!({"type": "text"}),
        json!({"type": "json_object"}),
        schema.clone(),
    ] {
        let (s, a) = app
            .post(
                "/v1/assistants",
                json!({"model": "oasis-local", "response_format": good}),
            )
            .await;
        assert_eq!(s, 200, "{good}: {a}");
        assert_eq!(a["response_format"], good);
    }
    let (_, a) = app
        .post("/v1/assistants", json!({"model": "oasis-local"}))
        .await;
    assert_eq!(a["response_format"], "auto");
    let aid = a["id"].as_str().unwrap();
    let t = thread_with(&app, "hi").await;
    for bad in [
        json!("whatever"),
        json!(5),
        json!(["auto"]),
        json!({"type": "bogus"}),
        json!({"type": "json_schema"}),
        json!({"type": "json_schema", "json_schema": {"schema": {}}}),
        json!({"type": "json_schema", "json_schema": {"name": "has space"}}),
        json!({"type": "json_object", "extra": 1}),
    ] {
        for (path, body) in [
            (
                "/v1/assistants".to_string(),
                json!({"model": "oasis-local", "response_format": bad}),
            ),
            (
                format!("/v1/assistants/{aid}"),
                json!({"response_format": bad}),
            ),
            (
                format!("/v1/threads/{t}/runs"),
                json!({"assistant_id": aid, "response_format": bad}),
            ),
            (
                "/v1/threads/runs".to_string(),
                json!({"assistant_id": aid, "response_format": bad}),
            ),
        ] {
            let (s, e) = app.post(&path, body).await;
            assert_eq!(s, 400, "{path} {bad}: {e}");
            let (message, _, param) = err_parts(&e);
            assert!(
                param
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("response_format"),
                "{path} {bad}: {e}"
            );
            assert!(!message.contains("untagged"), "{message}");
        }
    }
    // Nothing was stored by the refusals.
    let (_, a) = app.get(&format!("/v1/assistants/{aid}")).await;
    assert_eq!(a["response_format"], "auto");
    app.stop().await;
}

/// With an upstream model, a run's `json_object` / `json_schema` format is asked of the model;
/// `auto` and `text` ask for nothing.
#[tokio::test(flavor = "multi_thread")]
async fn json_formats_are_passed_on_to_the_upstream_model() {
    let (port, bodies) = fake_upstream("{\"ok\": true}", false).await;
    let app = TestApp::spawn_with(None, |s| s.upstream = Some(upstream_at(port))).await;
    let a = assistant(&app, json!([])).await;
    let schema = json!({
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}}
    });
    let t = thread_with(&app, "Answer in JSON.").await;
    let run = start_run(
        &app,
        &t,
        json!({"assistant_id": a, "response_format": schema}),
    )
    .await;
    let run = wait_for(&app, &t, run["id"].as_str().unwrap(), &["completed"]).await;
    assert_eq!(run["response_format"], schema);
    let sent: Vec<Value> = bodies.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["response_format"], schema);
    app.stop().await;

    let (port, bodies) = fake_upstream("plain", false).await;
    let app = TestApp::spawn_with(None, |s| s.upstream = Some(upstream_at(port))).await;
    let a = assistant(&app, json!([])).await;
    let t = thread_with(&app, "Hello.").await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    wait_for(&app, &t, run["id"].as_str().unwrap(), &["completed"]).await;
    let sent: Vec<Value> = bodies.lock().unwrap().clone();
    assert!(sent[0].get("response_format").is_none(), "{}", sent[0]);
    app.stop().await;
}

/// Models carry the time the server began serving them, and deleting one answers OpenAI's error
/// body: 403 for a model Oasis serves (it has no fine-tuned models), 404 for any other.
#[tokio::test(flavor = "multi_thread")]
async fn models_have_a_real_created_time_and_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let (s, list) = app.get("/v1/models").await;
    assert_eq!(s, 200);
    let created = list["data"][0]["created"].as_i64().unwrap();
    // A real timestamp: not 0, and not later than now.
    assert!(created > 1_700_000_000, "{list}");
    assert!(created <= oasis::model::now(), "{list}");
    let (s, e) = app.delete("/v1/models/oasis-local").await;
    assert_eq!(s, 403, "{e}");
    let (message, kind, param) = err_parts(&e);
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("oasis-local"), "{message}");
    assert_eq!(param.as_deref(), Some("model"));
    let (s, e) = app.delete("/v1/models/no-such-model").await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(e["error"]["code"], "model_not_found");
    // Still there.
    assert_eq!(app.get("/v1/models/oasis-local").await.0, 200);
    app.stop().await;
}

/// Every answer, success or error, carries its own `x-request-id`.
#[tokio::test(flavor = "multi_thread")]
async fn every_answer_has_its_own_request_id() {
    let app = TestApp::spawn().await;
    let mut seen = std::collections::HashSet::new();
    for path in [
        "/v1/models",
        "/v1/models",
        "/v1/assistants/asst_nope",
        "/health",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        let id = r
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{path}: no x-request-id"))
            .to_str()
            .unwrap()
            .to_string();
        assert!(id.starts_with("req_") && id.len() > 12, "{id}");
        assert!(seen.insert(id.clone()), "{id} twice");
    }
    app.stop().await;
}

/// OpenAI's enums and bounds: image `detail`, `reasoning_effort`, a step's `include[]`, token
/// limits of at least 256, at most 20 tools on a run, and `tools` on every attachment.
#[tokio::test(flavor = "multi_thread")]
async fn enums_and_bounds_are_openais() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([])).await;
    let t = thread_with(&app, "hi").await;
    let (s, f) = app
        .upload("notes.txt", b"an attachment".to_vec(), "assistants")
        .await;
    assert_eq!(s, 200, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    let refused = |(s, e): (u16, Value), param: &str| {
        assert_eq!(s, 400, "{param}: {e}");
        let (message, _, p) = err_parts(&e);
        assert_eq!(p.as_deref(), Some(param), "{e}");
        message
    };
    let messages = format!("/v1/threads/{t}/messages");
    for detail in ["auto", "low", "high"] {
        let (s, m) = app
            .post(
                &messages,
                json!({"role": "user", "content": [
                    {"type": "image_file", "image_file": {"file_id": fid, "detail": detail}},
                    {"type": "image_url", "image_url": {"url": "https://example.test/a.png", "detail": detail}}
                ]}),
            )
            .await;
        assert_eq!(s, 200, "{m}");
        assert_eq!(m["content"][0]["image_file"]["detail"], detail);
    }
    let m = refused(
        app.post(
            &messages,
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.test/a.png", "detail": "ultra"}}
            ]}),
        )
        .await,
        "content[0].image_url.detail",
    );
    assert_eq!(
        m,
        "Invalid value: 'ultra'. Supported values are: 'auto', 'low', and 'high'."
    );
    refused(
        app.post(
            "/v1/assistants",
            json!({"model": "m", "reasoning_effort": "extreme"}),
        )
        .await,
        "reasoning_effort",
    );
    let (s, _) = app
        .post(
            "/v1/assistants",
            json!({"model": "m", "reasoning_effort": "low"}),
        )
        .await;
    assert_eq!(s, 200);
    let runs = format!("/v1/threads/{t}/runs");
    for (field, n) in [("max_prompt_tokens", 255), ("max_completion_tokens", 1)] {
        let m = refused(
            app.post(&runs, json!({"assistant_id": a, field: n})).await,
            field,
        );
        assert!(m.contains(">= 256"), "{m}");
    }
    let tool = |i: usize| json!({"type": "function", "function": {"name": format!("f{i}")}});
    let tools: Vec<Value> = (0..21).map(tool).collect();
    refused(
        app.post(&runs, json!({"assistant_id": a, "tools": tools}))
            .await,
        "tools",
    );
    let m = refused(
        app.post(
            &messages,
            json!({"role": "user", "content": "x", "attachments": [{"file_id": fid}]}),
        )
        .await,
        "attachments[0].tools",
    );
    assert_eq!(m, "Missing required parameter: 'attachments[0].tools'.");
    // A run that takes 20 tools and limits of 256 runs.
    let tools: Vec<Value> = (0..20).map(tool).collect();
    let run = start_run(
        &app,
        &t,
        json!({"assistant_id": a, "tools": tools, "max_prompt_tokens": 256,
               "max_completion_tokens": 256}),
    )
    .await;
    wait_for(
        &app,
        &t,
        run["id"].as_str().unwrap(),
        &["completed", "incomplete"],
    )
    .await;
    let t = thread_with(&app, "hello").await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap();
    wait_for(&app, &t, rid, &["completed"]).await;
    let steps = format!("/v1/threads/{t}/runs/{rid}/steps");
    let include = "step_details.tool_calls[*].file_search.results[*].content";
    let (s, list) = app.get(&format!("{steps}?include[]={include}")).await;
    assert_eq!(s, 200, "{list}");
    let sid = list["data"][0]["id"].as_str().unwrap();
    let (s, _) = app.get(&format!("{steps}/{sid}?include[]={include}")).await;
    assert_eq!(s, 200);
    for path in [steps.clone(), format!("{steps}/{sid}")] {
        refused(
            app.get(&format!("{path}?include[]=step_details.everything"))
                .await,
            "include",
        );
    }
    app.stop().await;
}

/// Refusals name the field at fault by its whole path and say what was wrong in JSON's terms,
/// never serde's.
#[tokio::test(flavor = "multi_thread")]
async fn error_texts_name_the_whole_path_in_json_terms() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([])).await;
    let cases = [
        (
            json!({"assistant_id": a, "thread": {"bogus": 1}}),
            "thread.bogus",
            "Unrecognized request argument supplied: thread.bogus",
        ),
        (
            json!({"assistant_id": a, "thread": {"messages": [{"role": "user"}]}}),
            "thread.messages[0].content",
            "Missing required parameter: 'thread.messages[0].content'.",
        ),
        (
            json!({"assistant_id": a, "thread": {"messages": [{"role": "user", "content": 5}]}}),
            "thread.messages[0].content",
            "Invalid type for 'thread.messages[0].content': expected a string or an array of \
             content parts, but got an integer instead.",
        ),
        (
            json!({"assistant_id": a, "thread": 7}),
            "thread",
            "Invalid type for 'thread': expected an object, but got an integer instead.",
        ),
        (
            json!({"assistant_id": a, "temperature": "hot"}),
            "temperature",
            "Invalid type for 'temperature': expected a number, but got a string instead.",
        ),
    ];
    for (body, param, message) in cases {
        let (s, e) = app.post("/v1/threads/runs", body.clone()).await;
        assert_eq!(s, 400, "{body}: {e}");
        let (m, _, p) = err_parts(&e);
        assert_eq!((m.as_str(), p.as_deref()), (message, Some(param)), "{body}");
    }
    // An unknown tool type names the field.
    let (s, e) = app
        .post(
            "/v1/assistants",
            json!({"model": "m", "tools": [{"type": "code_interpreter"}, {"type": "retrieval"}]}),
        )
        .await;
    assert_eq!(s, 400);
    let (m, _, p) = err_parts(&e);
    assert_eq!(p.as_deref(), Some("tools[1].type"), "{e}");
    assert!(m.starts_with("Invalid value: 'retrieval'."), "{m}");
    app.stop().await;
}
