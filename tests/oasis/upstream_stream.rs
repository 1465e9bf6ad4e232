//! Runs against a scripted upstream model, watched through the HTTP API's event stream: a
//! code call's input arrives while the model writes it, and a call the model wrote as text is
//! run (and never shown as a message).

use std::time::Duration;

use oasis::backend::upstream::UpstreamConfig;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::upstream_fake::{
    Cue, Piece, Reply, Server, arguments_event, call_start_event, char_pieces, data, finish_event,
    pieces, sse, stream, text_event,
};

const CODE: &str = "print(6*7)";

/// The longest a test waits for its run's events.
const PATIENCE: Duration = Duration::from_secs(120);

/// A run's server-sent events, read as they arrive.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    /// The next event's name and data (JSON, or a string such as `[DONE]`).
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.buf.drain(..end + 2).collect()).unwrap();
                let (mut name, mut payload) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        payload.push_str(v.trim_start());
                    }
                }
                if name.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
                return Some((name, value));
            }
            match self.resp.chunk().await.unwrap() {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }
}

/// An Oasis whose upstream is `server`, an assistant with the code interpreter, and a streamed
/// run of a new thread.
async fn streamed_run(server: &Server) -> (TestApp, String, String, Events) {
    let base = server.base.clone();
    let app = TestApp::spawn_with(None, |s| s.upstream = Some(UpstreamConfig::new(base))).await;
    let (s, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "qwen2.5-coder", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "What is six times seven?"}]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let t = t["id"].as_str().unwrap().to_string();
    let resp = app
        .client
        .post(app.url(&format!("/v1/threads/{t}/runs")))
        .json(&json!({"assistant_id": a["id"], "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = Events {
        resp,
        buf: Vec::new(),
    };
    let (name, run) = events.next().await.expect("the run's first event");
    assert_eq!(name, "thread.run.created");
    let run = run["id"].as_str().unwrap().to_string();
    (app, t, run, events)
}

/// The code-interpreter input a `thread.run.step.delta` carries for call 0, if any.
fn input_delta(name: &str, event: &Value) -> Option<String> {
    if name != "thread.run.step.delta" {
        return None;
    }
    let call = &event["delta"]["step_details"]["tool_calls"][0];
    (call["index"] == 0)
        .then(|| {
            call["code_interpreter"]["input"]
                .as_str()
                .map(str::to_string)
        })
        .flatten()
}

/// The run's one tool call, as stored.
async fn stored_code_call(app: &TestApp, thread: &str, run: &str) -> Value {
    let (s, steps) = app
        .get(&format!("/v1/threads/{thread}/runs/{run}/steps?order=asc"))
        .await;
    assert_eq!(s, 200, "{steps}");
    let calls: Vec<Value> = steps["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "tool_calls")
        .flat_map(|s| s["step_details"]["tool_calls"].as_array().unwrap().clone())
        .collect();
    let [call] = &calls[..] else {
        panic!("expected one tool call: {steps}");
    };
    assert_eq!(call["type"], "code_interpreter", "{call}");
    call.clone()
}

fn answer_reply() -> Reply {
    stream(
        &sse(&[text_event("It printed 42."), finish_event("stop")]),
        64,
    )
}

/// The model writes the call's arguments in pieces and stops half-way until the test has seen,
/// on the run's stream, a delta with part of the code: the user watches the code being typed.
#[tokio::test(flavor = "multi_thread")]
async fn a_code_calls_input_streams_while_the_model_writes_it() {
    let cue = Cue::new(PATIENCE);
    let mut script = pieces(
        [
            data(&call_start_event(0, "call_live", "code_interpreter")),
            data(&arguments_event(0, "{\"code\": ")),
            data(&arguments_event(0, "\"pri")),
        ]
        .concat()
        .as_bytes(),
        64,
    );
    script.push(Piece::Await(cue.clone()));
    script.extend(pieces(
        sse(&[
            arguments_event(0, "nt(6*"),
            arguments_event(0, "7)\"}"),
            finish_event("tool_calls"),
        ])
        .as_bytes(),
        64,
    ));
    let server = Server::start(vec![
        Reply::Stream {
            pieces: script,
            abrupt: false,
        },
        answer_reply(),
    ])
    .await;
    let (app, t, run, mut events) = streamed_run(&server).await;

    let read = async {
        let (mut streamed, mut saw_partial, mut names) = (String::new(), false, vec![]);
        while let Some((name, event)) = events.next().await {
            if let Some(input) = input_delta(&name, &event) {
                streamed.push_str(&input);
                if !streamed.is_empty() && streamed.len() < CODE.len() && !cue.was_given() {
                    // The model is still writing: let it go on.
                    saw_partial = true;
                    cue.go();
                }
            }
            names.push(name);
        }
        (streamed, saw_partial, names)
    };
    let (streamed, saw_partial, names) = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the run's stream ended");

    assert!(
        saw_partial,
        "no part of the code arrived mid-call: {names:?}"
    );
    assert!(cue.was_given());
    assert!(
        names.contains(&"thread.run.completed".to_string()),
        "{names:?}"
    );
    let call = stored_code_call(&app, &t, &run).await;
    assert_eq!(call["code_interpreter"]["input"], CODE);
    assert_eq!(
        streamed, CODE,
        "the input deltas add up to the stored input"
    );
    assert_eq!(
        call["code_interpreter"]["outputs"],
        json!([{"type": "logs", "logs": "42\n"}])
    );
    app.stop().await;
}

/// A model that writes its call as text in `<tool_call>` tags: the code runs, and the JSON
/// never reaches the user as a message.
#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_written_as_text_runs_and_is_not_shown() {
    let written = r#"<tool_call>{"name": "code_interpreter", "arguments": {"code": "print(6*7)"}}</tool_call>"#;
    let mut events: Vec<Value> = char_pieces(written, 5)
        .iter()
        .map(|p| text_event(p))
        .collect();
    events.push(finish_event("stop"));
    let server = Server::start(vec![stream(&sse(&events), 40), answer_reply()]).await;
    let (app, t, run, mut events) = streamed_run(&server).await;

    let read = async {
        let mut all = vec![];
        while let Some(event) = events.next().await {
            all.push(event);
        }
        all
    };
    let all = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the run's stream ended");

    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"thread.run.completed"), "{names:?}");
    let shown: String = all
        .iter()
        .filter(|(n, _)| n == "thread.message.delta")
        .map(|(_, e)| {
            e["delta"]["content"][0]["text"]["value"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(shown, "It printed 42.");
    let call = stored_code_call(&app, &t, &run).await;
    assert_eq!(call["code_interpreter"]["input"], CODE);
    assert_eq!(
        call["code_interpreter"]["outputs"],
        json!([{"type": "logs", "logs": "42\n"}])
    );
    let (_, messages) = app.get(&format!("/v1/threads/{t}/messages")).await;
    assert!(!messages.to_string().contains("tool_call"), "{messages}");
    // The model was told what the code printed.
    let second = server.received()[1].json();
    let said = second["messages"].to_string();
    assert!(said.contains("42"), "{said}");
    app.stop().await;
}
