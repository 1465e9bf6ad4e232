//! Runs through the HTTP API with the built-in model: code_interpreter, function calls, the
//! thread lock, cancel and the SSE event stream (expiry: `expiry.rs`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, err_parts};

pub(crate) async fn assistant(app: &TestApp, tools: Value) -> String {
    let (s, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "gpt-4o", "instructions": "Be brief.", "tools": tools}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    a["id"].as_str().unwrap().to_string()
}

pub(crate) async fn thread_with(app: &TestApp, text: &str) -> String {
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    t["id"].as_str().unwrap().to_string()
}

pub(crate) async fn start_run(app: &TestApp, thread: &str, body: Value) -> Value {
    let (s, r) = app.post(&format!("/v1/threads/{thread}/runs"), body).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "queued");
    r
}

/// Poll a run until its status is one of `want` (or fail after 60 s).
pub(crate) async fn wait_for(app: &TestApp, thread: &str, run: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, r) = app.get(&format!("/v1/threads/{thread}/runs/{run}")).await;
        assert_eq!(s, 200, "{r}");
        if want.contains(&r["status"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "run stuck in {} waiting for {want:?}: {r}",
            r["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn messages(app: &TestApp, thread: &str) -> Vec<Value> {
    let (s, l) = app
        .get(&format!("/v1/threads/{thread}/messages?order=asc"))
        .await;
    assert_eq!(s, 200, "{l}");
    l["data"].as_array().unwrap().clone()
}

pub(crate) async fn steps(app: &TestApp, thread: &str, run: &str) -> Vec<Value> {
    let (s, l) = app
        .get(&format!("/v1/threads/{thread}/runs/{run}/steps?order=asc"))
        .await;
    assert_eq!(s, 200, "{l}");
    l["data"].as_array().unwrap().clone()
}

pub(crate) fn text_of(m: &Value) -> String {
    m["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "text")
        .map(|c| c["text"]["value"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_code_run_executes_each_cell_in_the_threads_session_and_reports_logs_and_files() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let t = thread_with(
        &app,
        "Please run:\n```python\ndef fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\nprint(fib(10))\n```\nand\n```py\nopen('/mnt/data/fib.txt', 'w').write(str(fib(12)))\nfib(11)\n```",
    )
    .await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap();
    assert!(run["expires_at"].as_i64().unwrap() >= run["created_at"].as_i64().unwrap() + 590);
    let done = wait_for(&app, &t, rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let usage = &done["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let st = steps(&app, &t, rid).await;
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!(st[0]["type"], "tool_calls");
    let calls = st[0]["step_details"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "code_interpreter");
    assert!(
        calls[0]["code_interpreter"]["input"]
            .as_str()
            .unwrap()
            .contains("def fib")
    );
    assert_eq!(calls[0]["code_interpreter"]["outputs"][0]["logs"], "55\n");
    assert_eq!(calls[1]["code_interpreter"]["outputs"][0]["logs"], "89\n");
    assert_eq!(st[1]["type"], "message_creation");
    assert_eq!(st[0]["status"], "completed");
    let msgs = messages(&app, &t).await;
    assert_eq!(msgs.len(), 2);
    let reply = &msgs[1];
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["run_id"], rid);
    assert_eq!(reply["assistant_id"], a.as_str());
    assert_eq!(
        st[1]["step_details"]["message_creation"]["message_id"],
        reply["id"]
    );
    let text = text_of(reply);
    assert!(text.contains("Output of cell 1:\n```\n55\n```"), "{text}");
    assert!(
        text.contains("[fib.txt](sandbox:/mnt/data/fib.txt)"),
        "{text}"
    );
    // The link is annotated with a downloadable File holding what the code wrote.
    let ann = &reply["content"][0]["text"]["annotations"][0];
    assert_eq!(ann["type"], "file_path");
    assert_eq!(ann["text"], "sandbox:/mnt/data/fib.txt");
    let chars: Vec<char> = text.chars().collect();
    let (s0, e0) = (
        ann["start_index"].as_u64().unwrap() as usize,
        ann["end_index"].as_u64().unwrap() as usize,
    );
    assert_eq!(
        chars[s0..e0].iter().collect::<String>(),
        "sandbox:/mnt/data/fib.txt"
    );
    let fid = ann["file_path"]["file_id"].as_str().unwrap();
    let (_, f) = app.get(&format!("/v1/files/{fid}")).await;
    assert_eq!(f["purpose"], "assistants_output");
    let body = app
        .client
        .get(app.url(&format!("/v1/files/{fid}/content")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "144");

    // The session lives on: a second run sees `fib`.
    let (s, _) = app
        .post(
            &format!("/v1/threads/{t}/messages"),
            json!({"role": "user", "content": "```python\nprint(fib(7))\n```"}),
        )
        .await;
    assert_eq!(s, 200);
    let run2 = start_run(&app, &t, json!({"assistant_id": a})).await;
    let done = wait_for(
        &app,
        &t,
        run2["id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed");
    let msgs = messages(&app, &t).await;
    assert!(text_of(&msgs[3]).contains("13"), "{}", text_of(&msgs[3]));
    app.stop().await;
}

#[tokio::test]
async fn function_calls_wait_for_outputs_and_the_thread_is_locked_meanwhile() {
    let app = TestApp::spawn().await;
    let a = assistant(
        &app,
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]),
    )
    .await;
    let t = thread_with(
        &app,
        "```call get_weather\n{\"city\": \"Oslo\"}\n```\n```call get_weather\n{\"city\": \"Rome\"}\n```",
    )
    .await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap().to_string();
    let r = wait_for(&app, &t, &rid, &["requires_action", "failed", "completed"]).await;
    assert_eq!(r["status"], "requires_action", "{r}");
    let calls = r["required_action"]["submit_tool_outputs"]["tool_calls"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Rome\"}");
    // Usage shows on finished things only: not on the waiting run or its open step.
    assert!(r["usage"].is_null(), "{r}");
    let st = steps(&app, &t, &rid).await;
    assert_eq!(st[0]["status"], "in_progress");
    assert!(st[0]["usage"].is_null(), "{}", st[0]);
    // Locked: no messages, no second run, with OpenAI's words.
    let (s, e) = app
        .post(
            &format!("/v1/threads/{t}/messages"),
            json!({"role": "user", "content": "hi"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err_parts(&e).0,
        format!("Can't add messages to {t} while a run {rid} is active.")
    );
    let (s, e) = app
        .post(&format!("/v1/threads/{t}/runs"), json!({"assistant_id": a}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err_parts(&e).0,
        format!("Thread {t} already has an active run {rid}.")
    );
    // Outputs must answer every call, once.
    let id0 = calls[0]["id"].as_str().unwrap();
    let id1 = calls[1]["id"].as_str().unwrap();
    let path = format!("/v1/threads/{t}/runs/{rid}/submit_tool_outputs");
    let (s, e) = app
        .post(
            &path,
            json!({"tool_outputs": [{"tool_call_id": id0, "output": "sunny"}]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    // OpenAI's words for outputs that are not one per call.
    assert_eq!(
        e["error"]["message"],
        format!("Expected tool outputs for call_ids ['{id0}', '{id1}'], got ['{id0}']")
    );
    let (s, e) = app
        .post(
            &path,
            json!({"tool_outputs": [{"tool_call_id": "call_nope", "output": "x"}]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        e["error"]["message"],
        format!("Expected tool outputs for call_ids ['{id0}', '{id1}'], got ['call_nope']")
    );
    let (s, r) = app
        .post(
            &path,
            json!({"tool_outputs": [
                {"tool_call_id": id0, "output": "sunny"},
                {"tool_call_id": id1, "output": "rain"}]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "queued");
    let done = wait_for(&app, &t, &rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let msgs = messages(&app, &t).await;
    assert_eq!(
        text_of(msgs.last().unwrap()),
        "get_weather returned: sunny\nget_weather returned: rain"
    );
    let st = steps(&app, &t, &rid).await;
    assert_eq!(st[0]["status"], "completed");
    assert_eq!(
        st[0]["step_details"]["tool_calls"][1]["function"]["output"],
        "rain"
    );
    // Once completed, the calls' step shows the tokens of the turn that made them.
    assert!(
        st[0]["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{}",
        st[0]
    );
    assert!(
        st[0]["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{}",
        st[0]
    );
    assert!(
        done["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    // A finished run takes no outputs.
    let (s, _) = app
        .post(
            &path,
            json!({"tool_outputs": [{"tool_call_id": id0, "output": "x"}]}),
        )
        .await;
    assert_eq!(s, 400);
    app.stop().await;
}

#[tokio::test]
async fn cancel_interrupts_a_running_cell_and_frees_the_thread() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let t = thread_with(
        &app,
        "```python\nopen('/mnt/data/kept.txt','w').write('k')\nimport time\ntime.sleep(60)\n```",
    )
    .await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap().to_string();
    wait_for(&app, &t, &rid, &["in_progress"]).await;
    // Wait until the cell runs: it has written kept.txt.
    crate::workers::wait_file(&crate::workers::data(&app, &t).join("kept.txt")).await;
    let started = Instant::now();
    let (s, r) = app
        .post(&format!("/v1/threads/{t}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(["cancelling", "cancelled"].contains(&r["status"].as_str().unwrap()));
    let done = wait_for(&app, &t, &rid, &["cancelled"]).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(done["cancelled_at"].is_i64());
    let st = steps(&app, &t, &rid).await;
    assert_eq!(st[0]["status"], "cancelled");
    // Cancelling again is refused.
    let (s, _) = app
        .post(&format!("/v1/threads/{t}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_eq!(s, 400);
    // The thread takes messages again; the files survived the interpreter's reset.
    let (s, _) = app
        .post(
            &format!("/v1/threads/{t}/messages"),
            json!({"role": "user", "content": "```python\nprint(open('/mnt/data/kept.txt').read())\n```"}),
        )
        .await;
    assert_eq!(s, 200);
    let run2 = start_run(&app, &t, json!({"assistant_id": a})).await;
    let done = wait_for(
        &app,
        &t,
        run2["id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed");
    let msgs = messages(&app, &t).await;
    assert!(text_of(msgs.last().unwrap()).contains("```\nk\n```"));
    app.stop().await;
}

/// Files whose names hold spaces, brackets or non-ASCII letters are linked (percent-encoded)
/// and annotated, and the annotation's File is named and filled like the file.
#[tokio::test(flavor = "multi_thread")]
async fn files_with_spaces_and_brackets_in_their_names_are_linked_and_annotated() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let t = thread_with(
        &app,
        "```python\nimport os\nos.makedirs('/mnt/data/out dir', exist_ok=True)\nfor n in ['my chart (1).txt', 'résumé [v2].txt', 'out dir/100% done.txt']:\n    open('/mnt/data/' + n, 'w').write('content of ' + n)\n```",
    )
    .await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap();
    let done = wait_for(&app, &t, rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let msgs = messages(&app, &t).await;
    let reply = &msgs[1];
    let text = text_of(reply);
    assert!(
        text.contains("[my chart (1).txt](sandbox:/mnt/data/my%20chart%20%281%29.txt)"),
        "{text}"
    );
    let anns = reply["content"][0]["text"]["annotations"]
        .as_array()
        .unwrap();
    assert_eq!(anns.len(), 3, "{text} {anns:?}");
    let chars: Vec<char> = text.chars().collect();
    let mut seen = vec![];
    for ann in anns {
        assert_eq!(ann["type"], "file_path");
        let (s0, e0) = (
            ann["start_index"].as_u64().unwrap() as usize,
            ann["end_index"].as_u64().unwrap() as usize,
        );
        assert_eq!(chars[s0..e0].iter().collect::<String>(), ann["text"]);
        let fid = ann["file_path"]["file_id"].as_str().unwrap();
        let (_, f) = app.get(&format!("/v1/files/{fid}")).await;
        let name = f["filename"].as_str().unwrap().to_string();
        let body = app
            .client
            .get(app.url(&format!("/v1/files/{fid}/content")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.starts_with("content of ") && body.ends_with(&name),
            "{body} {name}"
        );
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["100% done.txt", "my chart (1).txt", "résumé [v2].txt"]
    );
    app.stop().await;
}

/// Read an SSE response into (event, data) pairs.
pub(crate) async fn sse_events(resp: reqwest::Response) -> Vec<(String, String)> {
    let text = resp.text().await.unwrap();
    let mut out = vec![];
    for block in text.split("\n\n") {
        let mut ev = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                ev = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !ev.is_empty() {
            out.push((ev, data));
        }
    }
    out
}

/// Every element of every array in a delta carries `index`.
fn every_array_entry_indexed(v: &Value, path: &str) {
    match v {
        Value::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                assert!(
                    it.get("index").is_some_and(Value::is_u64),
                    "{path}[{i}] has no index: {it}"
                );
                every_array_entry_indexed(it, &format!("{path}[{i}]"));
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                every_array_entry_indexed(x, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn streaming_a_code_run_sends_openais_events_in_order() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let resp = app
        .client
        .post(app.url("/v1/threads/runs"))
        .json(&json!({"assistant_id": a, "stream": true, "thread": {"messages": [
            {"role": "user", "content": "```python\nimport matplotlib.pyplot as plt\nplt.plot([1,2,3])\nopen('/mnt/data/x.txt','w').write('x')\nprint('hi')\n```"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(resp).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let expected = [
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
    ];
    assert_eq!(&names[..expected.len()], &expected, "{names:?}");
    // Then the tool call as OpenAI streamed it: its creation (input empty), its input in
    // pieces, its outputs; then the message.
    let deltas = names[expected.len()..]
        .iter()
        .take_while(|n| **n == "thread.run.step.delta")
        .count();
    assert!(deltas >= 3, "{names:?}");
    let after = [
        "thread.run.step.completed",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
    ];
    let at = expected.len() + deltas;
    assert_eq!(&names[at..at + after.len()], &after, "{names:?}");
    let calls: Vec<Value> = events[expected.len()..at]
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["delta"]["step_details"]["tool_calls"][0]
                .clone()
        })
        .collect();
    assert_eq!(
        calls[0]["code_interpreter"],
        json!({"input": "", "outputs": []}),
        "{calls:?}"
    );
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    let streamed_input: String = calls[1..deltas - 1]
        .iter()
        .map(|c| c["code_interpreter"]["input"].as_str().unwrap())
        .collect();
    assert!(
        calls[deltas - 1]["code_interpreter"]["outputs"].is_array(),
        "{calls:?}"
    );
    let tail = &names[names.len() - 5..];
    assert_eq!(
        tail,
        [
            "thread.message.delta",
            "thread.message.completed",
            "thread.run.step.completed",
            "thread.run.completed",
            "done",
        ],
        "{names:?}"
    );
    assert_eq!(events.last().unwrap().1, "[DONE]");
    // Deltas index every array entry, and rebuild what polling returns.
    let mut text = String::new();
    let mut images = vec![];
    let mut annotations = vec![];
    for (e, d) in &events {
        if !e.ends_with(".delta") {
            continue;
        }
        let v: Value = serde_json::from_str(d).unwrap();
        every_array_entry_indexed(&v["delta"], "delta");
        if e == "thread.message.delta" {
            for part in v["delta"]["content"].as_array().unwrap() {
                if part["type"] == "text" {
                    text.push_str(part["text"]["value"].as_str().unwrap_or(""));
                    if let Some(a) = part["text"]["annotations"].as_array() {
                        annotations.extend(a.iter().cloned());
                    }
                } else if part["type"] == "image_file" {
                    images.push(part["image_file"]["file_id"].clone());
                }
            }
        }
    }
    let run: Value = serde_json::from_str(
        &events
            .iter()
            .find(|(e, _)| e == "thread.run.completed")
            .unwrap()
            .1,
    )
    .unwrap();
    let t = run["thread_id"].as_str().unwrap();
    let (_, steps) = app
        .get(&format!(
            "/v1/threads/{t}/runs/{}/steps?order=asc",
            run["id"].as_str().unwrap()
        ))
        .await;
    let stored = &steps["data"][0]["step_details"]["tool_calls"][0];
    assert_eq!(stored["id"], calls[0]["id"]);
    assert_eq!(stored["code_interpreter"]["input"], streamed_input.as_str());
    let msgs = messages(&app, t).await;
    let reply = msgs.last().unwrap();
    assert_eq!(text, text_of(reply));
    assert_eq!(images.len(), 1);
    assert_eq!(reply["content"][0]["type"], "image_file");
    assert_eq!(reply["content"][0]["image_file"]["file_id"], images[0]);
    assert_eq!(annotations.len(), 1);
    let polled = &reply["content"][1]["text"]["annotations"][0];
    assert_eq!(annotations[0]["start_index"], polled["start_index"]);
    assert_eq!(annotations[0]["file_path"], polled["file_path"]);
    app.stop().await;
}

#[tokio::test]
async fn run_requests_are_checked_and_models_are_listed() {
    let app = TestApp::spawn().await;
    let (s, e) = app
        .post(
            "/v1/threads/thread_nope/runs",
            json!({"assistant_id": "asst_x"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&e).0, "No thread found with id 'thread_nope'.");
    let t = thread_with(&app, "hello").await;
    let (s, e) = app
        .post(
            &format!("/v1/threads/{t}/runs"),
            json!({"assistant_id": "asst_nope"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&e).0, "No assistant found with id 'asst_nope'.");
    let a = assistant(&app, json!([])).await;
    for (body, param) in [
        (
            json!({"assistant_id": a, "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"assistant_id": a, "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (
            json!({"assistant_id": a, "tool_choice": {"type": "code_interpreter"}}),
            "tool_choice",
        ),
        (json!({"assistant_id": a, "temperature": 3}), "temperature"),
        (
            json!({"assistant_id": a, "truncation_strategy": {"type": "last_messages"}}),
            "truncation_strategy.last_messages",
        ),
        (json!({"assistant_id": a, "bogus": 1}), "bogus"),
    ] {
        let (s, e) = app.post(&format!("/v1/threads/{t}/runs"), body).await;
        assert_eq!(s, 400, "{e}");
        assert_eq!(err_parts(&e).2.as_deref(), Some(param), "{e}");
    }
    let (s, e) = app.get(&format!("/v1/threads/{t}/runs/run_nope")).await;
    assert_eq!(s, 404);
    assert_eq!(err_parts(&e).0, "No run found with id 'run_nope'.");
    // A plain message gets the built-in model's help, and polling is throttled by a header.
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap();
    let done = wait_for(&app, &t, rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
    let msgs = messages(&app, &t).await;
    assert!(text_of(&msgs[1]).contains("oasis-local"));
    let r = app
        .client
        .get(app.url(&format!("/v1/threads/{t}/runs/{rid}")))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["openai-poll-after-ms"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let (s, l) = app.get(&format!("/v1/threads/{t}/runs")).await;
    assert_eq!(s, 200);
    assert_eq!(l["data"][0]["id"], rid);
    let (s, m) = app.get("/v1/models").await;
    assert_eq!(s, 200);
    assert!(
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "oasis-local")
    );
    let (s, m) = app.get("/v1/models/oasis-local").await;
    assert_eq!((s, m["id"].as_str()), (200, Some("oasis-local")));
    let (s, e) = app.get("/v1/models/Qwen/Qwen2.5-7B-Instruct").await;
    assert_eq!(s, 404);
    assert_eq!(
        err_parts(&e).0,
        "The model 'Qwen/Qwen2.5-7B-Instruct' does not exist"
    );
    // Deleting the thread takes its runs and steps along.
    let (s, _) = app.delete(&format!("/v1/threads/{t}")).await;
    assert_eq!(s, 200);
    let (s, _) = app.get(&format!("/v1/threads/{t}/runs/{rid}")).await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn token_limits_end_a_run_incomplete() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    // The report of this cell (its logs) is far longer than OpenAI's least limit, 256 tokens.
    let t = thread_with(&app, "```python\nprint('word ' * 800)\n```").await;
    let run = start_run(
        &app,
        &t,
        json!({"assistant_id": a, "max_completion_tokens": 256}),
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
    assert_eq!(
        done["incomplete_details"]["reason"],
        "max_completion_tokens"
    );
    assert_eq!(done["usage"]["completion_tokens"], 256);
    let msgs = messages(&app, &t).await;
    assert_eq!(msgs[1]["status"], "incomplete");
    assert_eq!(msgs[1]["incomplete_details"]["reason"], "max_tokens");
    app.stop().await;
}

#[tokio::test]
async fn after_a_restart_queued_runs_run_and_interrupted_ones_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let a = assistant(&first, json!([{"type": "code_interpreter"}])).await;
    let t1 = thread_with(&first, "```python\nimport time\ntime.sleep(30)\n```").await;
    let r1 = start_run(&first, &t1, json!({"assistant_id": a})).await;
    let r1_id = r1["id"].as_str().unwrap().to_string();
    wait_for(&first, &t1, &r1_id, &["in_progress"]).await;
    let t2 = thread_with(&first, "```python\nprint(6 * 7)\n```").await;
    first.stop().await;
    // A run the crashed server had queued but never started.
    let mut queued: oasis::model::Run = serde_json::from_value(r1.clone()).unwrap();
    queued.id = "run_queuedbeforethecrash00".into();
    queued.thread_id = t2.clone();
    queued.created_at = oasis::model::now();
    queued.expires_at = Some(queued.created_at + 600);
    let store = oasis::store::SqliteStore::open(&dir.path().join("oasis.sqlite3")).unwrap();
    // Written as the API writes: in the default project's view.
    let store = oasis::store::Store::for_project(&store, oasis::tenancy::DEFAULT_PROJECT);
    oasis::store::StoreExt::insert(store.as_ref(), &queued).unwrap();
    drop(store);

    // The first server's workers are still busy; a new server takes the data over.
    let second = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let failed = wait_for(&second, &t1, &r1_id, &["failed"]).await;
    assert_eq!(failed["last_error"]["code"], "server_error");
    assert!(
        failed["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{failed}"
    );
    let done = wait_for(&second, &t2, &queued.id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let msgs = messages(&second, &t2).await;
    assert!(text_of(msgs.last().unwrap()).contains("42"));
    second.stop().await;
}

#[tokio::test]
async fn deleting_a_thread_with_a_running_cell_stops_the_run_at_once() {
    let app = TestApp::spawn().await;
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let t = thread_with(
        &app,
        "```python\nopen('/mnt/data/started', 'w').write('1')\nimport time\ntime.sleep(60)\n```",
    )
    .await;
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let rid = run["id"].as_str().unwrap().to_string();
    // Wait until the cell runs: it has written `started`.
    crate::workers::wait_file(&crate::workers::data(&app, &t).join("started")).await;
    let started = Instant::now();
    let (s, d) = app.delete(&format!("/v1/threads/{t}")).await;
    assert_eq!(s, 200, "{d}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let (s, _) = app.get(&format!("/v1/threads/{t}/runs/{rid}")).await;
    assert_eq!(s, 404);
    app.stop().await;
}

/// A model server (the upstream backend's scripted one, `crate::upstream_fake`) that streams
/// `text` as one piece, then either ends the answer or (with `stall`) holds the stream open
/// until the client hangs up. It keeps each request's JSON body.
pub(crate) async fn fake_upstream(
    text: &'static str,
    stall: bool,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use crate::upstream_fake::{Piece, Reply, Server, data, finish_event, pieces, sse, text_event};
    let mut script = vec![Piece::Bytes(data(&text_event(text)).into_bytes())];
    if stall {
        script.push(Piece::Hold);
    } else {
        script.extend(pieces(sse(&[finish_event("stop")]).as_bytes(), 1024));
    }
    let server = Server::start(vec![Reply::Stream {
        pieces: script,
        abrupt: false,
    }])
    .await;
    (server.port(), server.bodies())
}

pub(crate) fn upstream_at(port: u16) -> oasis::backend::upstream::UpstreamConfig {
    oasis::backend::upstream::UpstreamConfig::new(format!("http://127.0.0.1:{port}/v1"))
}

/// Cancelling a run while the model is still writing keeps the text written so far: the
/// message ends `incomplete` (reason `run_cancelled`) holding it, and the stream says so with
/// `thread.message.incomplete` before the step and the run end.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_cancelled_mid_answer_keeps_the_partial_text_as_an_incomplete_message() {
    let (port, _) = fake_upstream("The answer is forty", true).await;
    let app = TestApp::spawn_with(None, |s| s.upstream = Some(upstream_at(port))).await;
    let a = assistant(&app, json!([])).await;
    let t = thread_with(&app, "What is six times seven?").await;
    let resp = app
        .client
        .post(app.url(&format!("/v1/threads/{t}/runs")))
        .json(&json!({"assistant_id": a, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = tokio::spawn(sse_events(resp));
    // The message exists once the first text arrived.
    let (_, runs) = app.get(&format!("/v1/threads/{t}/runs")).await;
    let rid = runs["data"][0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while steps(&app, &t, &rid).await.is_empty() {
        assert!(Instant::now() < deadline, "no message was started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, r) = app
        .post(&format!("/v1/threads/{t}/runs/{rid}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    let done = wait_for(&app, &t, &rid, &["cancelled"]).await;
    assert!(done["cancelled_at"].is_i64());
    let msgs = messages(&app, &t).await;
    let reply = msgs.last().unwrap();
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["status"], "incomplete", "{reply}");
    assert_eq!(reply["incomplete_details"]["reason"], "run_cancelled");
    assert_eq!(text_of(reply), "The answer is forty");

    let events = tokio::time::timeout(Duration::from_secs(30), events)
        .await
        .expect("the stream ended")
        .unwrap();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} in {names:?}"))
    };
    assert!(at("thread.message.delta") < at("thread.message.incomplete"));
    assert!(at("thread.message.incomplete") < at("thread.run.step.cancelled"));
    assert!(at("thread.run.step.cancelled") < at("thread.run.cancelled"));
    let m: Value = serde_json::from_str(&events[at("thread.message.incomplete")].1).unwrap();
    assert_eq!(m["id"], reply["id"]);
    assert_eq!(text_of(&m), "The answer is forty");
    app.stop().await;
}

/// Images in a user's message reach a vision model: an uploaded image File as a `data:` URL
/// with its bytes, an `image_url` as given, both after the text.
#[tokio::test(flavor = "multi_thread")]
async fn a_users_images_reach_the_upstream_model_as_image_parts() {
    use base64::Engine as _;
    let (port, seen) = fake_upstream("A red square.", false).await;
    let app = TestApp::spawn_with(None, |s| s.upstream = Some(upstream_at(port))).await;
    let mut png = crate::helpers::PNG_SIGNATURE.to_vec();
    png.extend_from_slice(b"\0\0\0\rIHDR not really a whole image");
    let form = reqwest::multipart::Form::new()
        .text("purpose", "vision")
        .part(
            "file",
            reqwest::multipart::Part::bytes(png.clone()).file_name("square.png"),
        );
    let f: Value = app
        .client
        .post(app.url("/v1/files"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fid = f["id"].as_str().unwrap();
    let a = assistant(&app, json!([])).await;
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "What do these show?"},
                {"type": "image_file", "image_file": {"file_id": fid, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.test/b.jpg"}},
            ]}]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let t = t["id"].as_str().unwrap().to_string();
    let run = start_run(&app, &t, json!({"assistant_id": a})).await;
    let done = wait_for(
        &app,
        &t,
        run["id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        text_of(messages(&app, &t).await.last().unwrap()),
        "A red square."
    );
    let bodies = seen.lock().unwrap().clone();
    let user = bodies[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|m| m["role"] == "user")
        .unwrap()
        .clone();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    assert_eq!(
        user["content"],
        json!([
            {"type": "text", "text": "What do these show?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}"), "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.test/b.jpg"}},
        ])
    );
    app.stop().await;
}

/// Create-thread-and-run with files in both the thread's and the run's `tool_resources`:
/// the run's code sees both in /mnt/data (before, the run's were dropped).
#[tokio::test(flavor = "multi_thread")]
async fn thread_and_run_files_from_both_tool_resources_are_in_mnt_data() {
    let app = TestApp::spawn().await;
    let mut ids = vec![];
    for (name, body) in [("for_thread.txt", "T"), ("for_run.txt", "R")] {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "assistants")
            .part(
                "file",
                reqwest::multipart::Part::bytes(body.as_bytes().to_vec()).file_name(name),
            );
        let f: Value = app
            .client
            .post(app.url("/v1/files"))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(f["id"].as_str().unwrap().to_string());
    }
    let a = assistant(&app, json!([{"type": "code_interpreter"}])).await;
    let code = "```python\nimport os\nprint(sorted(os.listdir('/mnt/data')))\n```";
    let (s, run) = app
        .post(
            "/v1/threads/runs",
            json!({
                "assistant_id": a,
                "thread": {
                    "messages": [{"role": "user", "content": code}],
                    "tool_resources": {"code_interpreter": {"file_ids": [ids[0]]}},
                },
                "tool_resources": {"code_interpreter": {"file_ids": [ids[1]]}},
            }),
        )
        .await;
    assert_eq!(s, 200, "{run}");
    let t = run["thread_id"].as_str().unwrap().to_string();
    let done = wait_for(
        &app,
        &t,
        run["id"].as_str().unwrap(),
        &["completed", "failed"],
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let said = text_of(messages(&app, &t).await.last().unwrap());
    assert!(said.contains("['for_run.txt', 'for_thread.txt']"), "{said}");
    app.stop().await;
}
