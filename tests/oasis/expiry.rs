//! A run's `expires_at`: whatever the run is doing when it passes (running a code cell, waiting
//! for the model, waiting for function outputs) ends there, the run and its open step
//! `expired`; and a run that ended shows `expires_at: null`, as OpenAI's did.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::runs::{
    assistant, fake_upstream, messages, sse_events, start_run, steps, text_of, thread_with,
    upstream_at, wait_for,
};

/// A server whose runs expire `secs` after they are created.
async fn expiring_app(secs: u64) -> TestApp {
    TestApp::spawn_with(None, |s| {
        s.runs.run_expiry = Duration::from_secs(secs);
        s.runs.sweep_every = Duration::from_millis(100);
    })
    .await
}

/// A code cell still running when its run's `expires_at` passes is stopped there, the way a
/// cancel stops it (the interpreter is replaced, `/mnt/data` kept): the run ends `expired`
/// (not after the cell's own 60 s limit), its tool step `expired` with `expired_at`, the
/// stream ends with `thread.run.step.expired` and `thread.run.expired`, and the thread's
/// session, files and all, serves the next run.
#[tokio::test(flavor = "multi_thread")]
async fn a_cell_still_running_at_expires_at_is_stopped_and_its_run_and_step_expire() {
    let app = expiring_app(5).await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let t = thread_with(
        &app,
        "```python\nopen('/mnt/data/looping', 'w').write('was here')\nwhile True:\n    pass\n```",
    )
    .await;
    // Start the thread's interpreter outside any run (so with no expiry), so that the run's
    // cell starts well within the run's 5 s.
    let (s, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "1", "session_id": t}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "completed", "{r}");

    let resp = app
        .client
        .post(app.url(&format!("/v1/threads/{t}/runs")))
        .json(&json!({"assistant_id": a, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = tokio::spawn(sse_events(resp));
    // The cell runs (and loops) …
    crate::workers::wait_file(&crate::workers::data(&app, &t).join("looping")).await;
    // … until the run's time is up; then its stream ends.
    let events = events.await.unwrap();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let at = |name: &str| {
        names
            .iter()
            .position(|e| *e == name)
            .unwrap_or_else(|| panic!("no {name} in {names:?}"))
    };
    assert!(
        at("thread.run.step.expired") < at("thread.run.expired"),
        "{names:?}"
    );
    assert!(!names.contains(&"thread.run.step.completed"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let streamed_step: Value =
        serde_json::from_str(&events[at("thread.run.step.expired")].1).unwrap();
    let streamed_run: Value = serde_json::from_str(&events[at("thread.run.expired")].1).unwrap();
    assert_eq!(streamed_run["status"], "expired");
    assert!(streamed_run["expires_at"].is_null(), "{streamed_run}");
    assert_eq!(streamed_step["status"], "expired");

    // Polling shows the same.
    let rid = streamed_run["id"].as_str().unwrap();
    let (s, run) = app.get(&format!("/v1/threads/{t}/runs/{rid}")).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "expired", "{run}");
    assert!(run["expires_at"].is_null(), "{run}");
    assert!(run["started_at"].is_i64(), "{run}");
    for end in ["completed_at", "cancelled_at", "failed_at"] {
        assert!(run[end].is_null(), "{end}: {run}");
    }
    assert!(run["last_error"].is_null(), "{run}");
    assert!(run["required_action"].is_null(), "{run}");
    let st = steps(&app, &t, rid).await;
    assert_eq!(st.len(), 1, "{st:?}");
    let step = &st[0];
    assert_eq!(step["id"], streamed_step["id"]);
    assert_eq!(step["type"], "tool_calls");
    assert_eq!(step["status"], "expired", "{step}");
    assert!(
        step["expired_at"].as_i64().unwrap() >= step["created_at"].as_i64().unwrap(),
        "{step}"
    );
    assert!(step["completed_at"].is_null(), "{step}");
    // The cell's outputs say why it stopped (not the cell's own time limit).
    let call = &step["step_details"]["tool_calls"][0]["code_interpreter"];
    assert!(call["input"].as_str().unwrap().contains("while True"));
    let logs = call["outputs"][0]["logs"].as_str().unwrap_or_default();
    assert!(logs.contains("the run expired"), "{step}");
    assert!(!logs.contains("time limit"), "{step}");

    // The thread is free, and its session (its files) serves the next run.
    let (s, m) = app
        .post(
            &format!("/v1/threads/{t}/messages"),
            json!({"role": "user", "content": "```python\nprint(open('/mnt/data/looping').read())\n```"}),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    let again = start_run(&app, &t, json!({"assistant_id": a})).await;
    let done = wait_for(
        &app,
        &t,
        again["id"].as_str().unwrap(),
        &["completed", "failed", "expired"],
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let msgs = messages(&app, &t).await;
    let reply = text_of(msgs.last().unwrap());
    assert!(reply.contains("was here"), "{reply}");
    app.stop().await;
}

/// A run whose model is still answering at `expires_at` expires: the message it was writing
/// ends `incomplete` (reason `run_expired`) with the text so far, its step `expired`.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_model_is_still_answering_at_expires_at_expires() {
    let (port, _) = fake_upstream("The answer is forty", true).await;
    let app = TestApp::spawn_with(None, |s| {
        s.upstream = Some(upstream_at(port));
        s.runs.run_expiry = Duration::from_secs(2);
        s.runs.sweep_every = Duration::from_millis(100);
    })
    .await;
    let a = assistant(&app, json!([])).await;
    let t = thread_with(&app, "What is six times seven?").await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap();
    let done = wait_for(&app, &t, rid, &["expired", "completed", "failed"]).await;
    assert_eq!(done["status"], "expired", "{done}");
    assert!(done["expires_at"].is_null(), "{done}");
    let st = steps(&app, &t, rid).await;
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0]["type"], "message_creation");
    assert_eq!(st[0]["status"], "expired");
    assert!(st[0]["expired_at"].is_i64());
    let msgs = messages(&app, &t).await;
    let reply = msgs.last().unwrap();
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["status"], "incomplete", "{reply}");
    assert_eq!(reply["incomplete_details"]["reason"], "run_expired");
    assert_eq!(text_of(reply), "The answer is forty");
    app.stop().await;
}

#[tokio::test]
async fn a_run_waiting_for_outputs_expires() {
    let app = expiring_app(2).await;
    let a = assistant(
        &app,
        json!([{"type": "function", "function": {"name": "f"}}]),
    )
    .await;
    let t = thread_with(&app, "```call f\n{}\n```").await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap().to_string();
    let done = wait_for(&app, &t, &rid, &["expired"]).await;
    assert!(done["required_action"].is_null());
    assert!(done["expires_at"].is_null(), "{done}");
    let st = steps(&app, &t, &rid).await;
    assert_eq!(st[0]["status"], "expired");
    assert!(st[0]["expired_at"].is_i64());
    let path = format!("/v1/threads/{t}/runs/{rid}/submit_tool_outputs");
    let call = st[0]["step_details"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap();
    let (s, _) = app
        .post(
            &path,
            json!({"tool_outputs": [{"tool_call_id": call, "output": "late"}]}),
        )
        .await;
    assert_eq!(s, 400);
    app.stop().await;
}

/// `expires_at` while a run may still expire (queued, in progress, requires_action,
/// cancelling); `null` once it ended (completed, incomplete, cancelled, failed; expired in the
/// tests above), as OpenAI's runs show it.
#[tokio::test(flavor = "multi_thread")]
async fn ended_runs_show_expires_at_null_and_active_ones_keep_it() {
    let app = TestApp::spawn().await;
    let f = assistant(
        &app,
        json!([{"type": "function", "function": {"name": "f"}}]),
    )
    .await;

    // requires_action keeps it; the run completed after its outputs does not.
    let t = thread_with(&app, "```call f\n{}\n```").await;
    let run = start_run(&app, &t, json!({"assistant_id": f})).await;
    let rid = run["id"].as_str().unwrap();
    let expires = run["expires_at"].as_i64().unwrap();
    assert!(expires > run["created_at"].as_i64().unwrap(), "{run}");
    let waiting = wait_for(&app, &t, rid, &["requires_action"]).await;
    assert_eq!(waiting["expires_at"], expires, "{waiting}");
    let call = waiting["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap();
    let (s, r) = app
        .post(
            &format!("/v1/threads/{t}/runs/{rid}/submit_tool_outputs"),
            json!({"tool_outputs": [{"tool_call_id": call, "output": "4"}]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let done = wait_for(&app, &t, rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["completed_at"].is_i64(), "{done}");
    assert!(done["expires_at"].is_null(), "{done}");

    // A cancel answers `cancelling` with it; the cancelled run shows none.
    let t = thread_with(&app, "```call f\n{}\n```").await;
    let run = start_run(&app, &t, json!({"assistant_id": f})).await;
    let rid = run["id"].as_str().unwrap();
    wait_for(&app, &t, rid, &["requires_action"]).await;
    let (s, r) = app
        .post(&format!("/v1/threads/{t}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "cancelling", "{r}");
    assert_eq!(r["expires_at"], run["expires_at"], "{r}");
    let done = wait_for(&app, &t, rid, &["cancelled"]).await;
    assert!(done["expires_at"].is_null(), "{done}");

    // Incomplete (a token limit: the cell's report is far longer than 256 tokens, OpenAI's
    // least limit).
    let code = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let t = thread_with(&app, "```python\nprint('word ' * 800)\n```").await;
    let run = start_run(
        &app,
        &t,
        json!({"assistant_id": code, "max_completion_tokens": 256}),
    )
    .await;
    let done = wait_for(
        &app,
        &t,
        run["id"].as_str().unwrap(),
        &["incomplete", "completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "incomplete", "{done}");
    assert!(done["expires_at"].is_null(), "{done}");
    app.stop().await;

    // Failed (the model server refused the request).
    use crate::upstream_fake::{Server, json_reply};
    let upstream = Server::start(vec![json_reply(
        400,
        json!({"error": {"message": "no", "type": "invalid_request_error", "param": null, "code": null}}),
    )])
    .await;
    let app = TestApp::spawn_with(None, |s| s.upstream = Some(upstream_at(upstream.port()))).await;
    let a = assistant(&app, json!([])).await;
    let t = thread_with(&app, "hello").await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let done = wait_for(
        &app,
        &t,
        run["id"].as_str().unwrap(),
        &["failed", "completed"],
    )
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["failed_at"].is_i64(), "{done}");
    assert!(done["expires_at"].is_null(), "{done}");
    app.stop().await;
}
