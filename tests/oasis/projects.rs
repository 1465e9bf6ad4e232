//! Projects: two projects on one Oasis never see or touch each other's objects, through any
//! route. [`every_route_keeps_projects_apart`] walks every operation of `/openapi.json`: a route
//! added without an entry here fails it, so no route can forget the scope.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, err_parts};
use crate::services::Postgres;

/// What project A's objects hold, so a leak shows in any answer.
const SECRET: &str = "alpha-secret-7f3a";

/// A caller with one key.
#[derive(Clone)]
struct Caller<'a> {
    app: &'a TestApp,
    key: String,
}

impl Caller<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .app
            .client
            .request(method, self.app.url(path))
            .bearer_auth(&self.key)
            .header("OpenAI-Beta", "assistants=v2");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// A 2xx answer's body.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        let (s, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{what}: {s} {v}");
        v
    }

    /// `POST path` with `body`, which must answer 2xx: the new object's id.
    async fn create(&self, path: &str, body: Value) -> String {
        let v = self.ok(Method::POST, path, Some(body)).await;
        v["id"].as_str().unwrap().to_string()
    }

    async fn multipart(&self, path: &str, form: reqwest::multipart::Form) -> (u16, Value) {
        let r = self
            .app
            .client
            .post(self.app.url(path))
            .bearer_auth(&self.key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, name: &str, text: &str) -> String {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "assistants")
            .part(
                "file",
                reqwest::multipart::Part::bytes(text.as_bytes().to_vec())
                    .file_name(name.to_string()),
            );
        let (s, v) = self.multipart("/v1/files", form).await;
        assert_eq!(s, 200, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Poll `path` until `done` holds of its answer (every 50 ms, at most `bound`).
    async fn until(&self, path: &str, bound: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (s, v) = self.get(path).await;
            assert_eq!(s, 200, "{path}: {v}");
            if done(&v) {
                return v;
            }
            assert!(start.elapsed() < bound, "{path} still {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A keys file with projects `alpha` and `beta` (one key each, written by `oasis keys add`'s
/// code), and the two keys.
fn two_projects(dir: &Path) -> (std::path::PathBuf, String, String) {
    let file = dir.join("keys.toml");
    let a = oasis::tenancy::add_key(&file, "alpha", Some("Alpha")).unwrap();
    let b = oasis::tenancy::add_key(&file, "beta", Some("Beta")).unwrap();
    (file, a, b)
}

/// Project A's objects, one of each kind, by the name of the path parameter that takes it.
struct Objects {
    ids: Vec<(&'static str, String)>,
    /// The thread whose run waits for a function's output (cancel and submit aim here).
    waiting_thread: String,
    waiting_run: String,
    /// A Part of the pending Upload.
    part: String,
}

impl Objects {
    fn id(&self, param: &str) -> &str {
        &self
            .ids
            .iter()
            .find(|(p, _)| *p == param)
            .unwrap_or_else(|| panic!("no object for {{{param}}}"))
            .1
    }

    /// Every id of A's, and its secret: none may show in B's answers.
    fn marks(&self) -> Vec<String> {
        let mut m: Vec<String> = self.ids.iter().map(|(_, id)| id.clone()).collect();
        m.extend([
            self.waiting_thread.clone(),
            self.waiting_run.clone(),
            self.part.clone(),
            SECRET.to_string(),
        ]);
        m.retain(|id| id != "oasis-local" && id != "shared-name");
        m
    }
}

/// Make one of everything in project A.
async fn make_objects(a: &Caller<'_>) -> Objects {
    let file = a
        .upload("alpha.txt", &format!("{SECRET} lives in the alpha file.\n"))
        .await;
    let file2 = a
        .upload("alpha2.txt", &format!("{SECRET} again, batched.\n"))
        .await;
    let vs = a
        .create(
            "/v1/vector_stores",
            json!({"name": "alpha", "file_ids": [file]}),
        )
        .await;
    a.until(
        &format!("/v1/vector_stores/{vs}/files/{file}"),
        Duration::from_secs(120),
        |v| v["status"] == "completed",
    )
    .await;
    let batch = a
        .create(
            &format!("/v1/vector_stores/{vs}/file_batches"),
            json!({"file_ids": [file2]}),
        )
        .await;
    let assistant = a
        .create(
            "/v1/assistants",
            json!({
                "model": "oasis-local",
                "name": SECRET,
                "tools": [
                    {"type": "code_interpreter"},
                    {"type": "file_search"},
                    {"type": "function", "function": {"name": "lookup",
                        "parameters": {"type": "object", "properties": {}}}}
                ],
                "tool_resources": {
                    "code_interpreter": {"file_ids": [file]},
                    "file_search": {"vector_store_ids": [vs]}
                }
            }),
        )
        .await;
    let code = format!(
        "```python\nopen('/mnt/data/out.txt', 'w').write('{SECRET}')\nprint('{SECRET}')\n```"
    );
    let thread = a
        .create(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": code}]}),
        )
        .await;
    let message = a
        .ok(Method::GET, &format!("/v1/threads/{thread}/messages"), None)
        .await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = a
        .create(
            &format!("/v1/threads/{thread}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await;
    let done = a
        .until(
            &format!("/v1/threads/{thread}/runs/{run}"),
            Duration::from_secs(300),
            |v| v["status"] != "queued" && v["status"] != "in_progress",
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let step = a
        .ok(
            Method::GET,
            &format!("/v1/threads/{thread}/runs/{run}/steps"),
            None,
        )
        .await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A run waiting for a function's output.
    let waiting = a
        .ok(
            Method::POST,
            "/v1/threads/runs",
            Some(json!({
                "assistant_id": assistant,
                "thread": {"messages": [{"role": "user", "content": "```call lookup\n{}\n```"}]}
            })),
        )
        .await;
    let (waiting_thread, waiting_run) = (
        waiting["thread_id"].as_str().unwrap().to_string(),
        waiting["id"].as_str().unwrap().to_string(),
    );
    a.until(
        &format!("/v1/threads/{waiting_thread}/runs/{waiting_run}"),
        Duration::from_secs(120),
        |v| v["status"] == "requires_action",
    )
    .await;
    // A pending Upload with one Part.
    let upload = a
        .create(
            "/v1/uploads",
            json!({"filename": "u.txt", "purpose": "assistants", "bytes": SECRET.len(),
                "mime_type": "text/plain"}),
        )
        .await;
    let form = reqwest::multipart::Form::new().part(
        "data",
        reqwest::multipart::Part::bytes(SECRET.as_bytes().to_vec()).file_name("part"),
    );
    let (s, part) = a
        .multipart(&format!("/v1/uploads/{upload}/parts"), form)
        .await;
    assert_eq!(s, 200, "{part}");
    // A code-interpreter session of A's own naming.
    let ran = a
        .ok(
            Method::POST,
            "/v1/code_interpreter/execute",
            Some(json!({"session_id": "shared-name",
                "code": format!("x = '{SECRET}'\nopen('/mnt/data/s.txt', 'w').write(x)")})),
        )
        .await;
    assert_eq!(ran["status"], "completed", "{ran}");
    Objects {
        ids: vec![
            ("file_id", file),
            ("vector_store_id", vs),
            ("batch_id", batch),
            ("assistant_id", assistant),
            ("thread_id", thread),
            ("message_id", message),
            ("run_id", run),
            ("step_id", step),
            ("upload_id", upload),
            ("session_id", "shared-name".into()),
            ("model", "oasis-local".into()),
        ],
        waiting_thread,
        waiting_run,
        part: part["id"].as_str().unwrap().to_string(),
    }
}

/// How B tries an operation, and what must come of it.
enum Try {
    /// The path names A's objects: a 404 exactly like the one for an id that never existed.
    Hidden(Option<Value>),
    /// A list: answered, with nothing of A's.
    Lists,
    /// A creation naming A's objects in its body: refused with "No … found", like a made-up id.
    Names(Value),
    /// A creation naming nothing of A's (B makes its own); A must not see the result.
    Own,
    /// Not a project's object (models): B gets what A gets.
    Shared,
}

/// What B does with each operation of the document.
fn attempt(method: &str, path: &str, o: &Objects, b_assistant: &str) -> Try {
    use Try::*;
    let meta = || Some(json!({"metadata": {"k": "v"}}));
    match (method, path) {
        ("get", "/v1/files" | "/v1/assistants" | "/v1/threads" | "/v1/vector_stores") => Lists,
        ("get" | "delete", "/v1/models/{model}") | ("get", "/v1/models") => Shared,
        ("post", "/v1/files" | "/v1/uploads") => Own,
        ("post", "/v1/assistants") => Names(json!({"model": "oasis-local",
            "tool_resources": {"code_interpreter": {"file_ids": [o.id("file_id")]}}})),
        ("post", "/v1/threads") => Names(json!({
            "tool_resources": {"file_search": {"vector_store_ids": [o.id("vector_store_id")]}}})),
        ("post", "/v1/threads/runs") => Names(json!({"assistant_id": o.id("assistant_id")})),
        ("post", "/v1/vector_stores") => Names(json!({"file_ids": [o.id("file_id")]})),
        ("post", "/v1/code_interpreter/execute") => Names(json!({
            "code": "print(1)", "session_id": o.id("thread_id")})),
        ("get" | "delete", "/v1/code_interpreter/sessions/{session_id}") => Hidden(None),
        ("get", "/v1/code_interpreter/sessions/{session_id}/files") => Hidden(None),
        ("post", "/v1/assistants/{assistant_id}")
        | ("post", "/v1/threads/{thread_id}")
        | ("post", "/v1/vector_stores/{vector_store_id}")
        | ("post", "/v1/threads/{thread_id}/messages/{message_id}")
        | ("post", "/v1/threads/{thread_id}/runs/{run_id}") => Hidden(meta()),
        ("post", "/v1/threads/{thread_id}/messages") => {
            Hidden(Some(json!({"role": "user", "content": "hi"})))
        }
        ("post", "/v1/threads/{thread_id}/runs") => Hidden(Some(json!({
            "assistant_id": b_assistant, "stream": true}))),
        ("post", "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs") => Hidden(Some(
            json!({"tool_outputs": [{"tool_call_id": "call_x", "output": "1"}],
                "stream": true}),
        )),
        ("post", "/v1/vector_stores/{vector_store_id}/search") => {
            Hidden(Some(json!({"query": SECRET})))
        }
        ("post", "/v1/vector_stores/{vector_store_id}/files") => {
            Hidden(Some(json!({"file_id": o.id("file_id")})))
        }
        ("post", "/v1/vector_stores/{vector_store_id}/files/{file_id}") => {
            Hidden(Some(json!({"attributes": {"k": "v"}})))
        }
        ("post", "/v1/vector_stores/{vector_store_id}/file_batches") => {
            Hidden(Some(json!({"file_ids": [o.id("file_id")]})))
        }
        ("post", "/v1/uploads/{upload_id}/complete") => {
            Hidden(Some(json!({"part_ids": [o.part.clone()]})))
        }
        ("get" | "post" | "delete", p) if p.contains('{') => Hidden(Some(json!({}))),
        _ => panic!(
            "{method} {path}: no entry in `attempt` — say how another project's caller tries \
             this route and what it must get"
        ),
    }
}

/// `path` with A's ids in place of its parameters (the waiting run for cancel and submit).
fn fill(path: &str, o: &Objects, nonexistent: bool) -> String {
    let waiting = path.ends_with("/cancel") && path.contains("/runs/")
        || path.ends_with("/submit_tool_outputs");
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => {
                    let id = match param {
                        "thread_id" if waiting => o.waiting_thread.as_str(),
                        "run_id" if waiting => o.waiting_run.as_str(),
                        p => o.id(p),
                    };
                    if nonexistent && param != "model" {
                        // Same shape, never made.
                        format!("{id}9")
                    } else {
                        id.to_string()
                    }
                }
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

fn assert_nothing_of_a(what: &str, body: &Value, o: &Objects) {
    let text = body.to_string();
    for mark in o.marks() {
        assert!(!text.contains(&mark), "{what} shows A's {mark}: {text}");
    }
}

/// An error's type and message with the ids of `asked` (a filled path) written as `<id>`, to
/// compare a real id's answer with a made-up one's.
fn shape(v: &Value, asked: &str) -> String {
    let (mut message, kind, _) = err_parts(v);
    let mut ids: Vec<&str> = asked.split('/').filter(|s| s.len() > 3).collect();
    ids.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for id in ids {
        message = message.replace(id, "<id>");
    }
    format!("{kind}: {message}")
}

/// Project A makes one of everything; project B then tries every operation of the API on it
/// and gets what it would for objects that never existed; A's objects are then as they were.
async fn walk(app: &TestApp, key_a: &str, key_b: &str) {
    let a = Caller {
        app,
        key: key_a.into(),
    };
    let b = Caller {
        app,
        key: key_b.into(),
    };
    let o = make_objects(&a).await;
    let b_assistant = b
        .create("/v1/assistants", json!({"model": "oasis-local"}))
        .await;
    // B's own session of the same name is a new one: nothing of A's in it.
    let (s, v) = b.get("/v1/code_interpreter/sessions/shared-name").await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = b
        .get("/v1/code_interpreter/sessions/shared-name/files")
        .await;
    assert!(s == 404 || v["data"] == json!([]), "{s} {v}");

    let (_, doc) = b.get("/openapi.json").await;
    let mut tried = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in ["get", "post", "delete"] {
            if item[method].is_null() {
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let what = format!("B {method} {path}");
            tried.insert(format!("{method} {path}"));
            match attempt(method, path, &o, &b_assistant) {
                Try::Hidden(body) => {
                    let body = if method == "post" {
                        body.or(Some(json!({})))
                    } else {
                        None
                    };
                    let (s, v) = if path == "/v1/uploads/{upload_id}/parts" {
                        let form = reqwest::multipart::Form::new().part(
                            "data",
                            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("p"),
                        );
                        b.multipart(&fill(path, &o, false), form).await
                    } else {
                        b.call(m.clone(), &fill(path, &o, false), body.clone())
                            .await
                    };
                    assert_eq!(s, 404, "{what}: {v}");
                    // (It names the id asked for, as any 404 does; nothing else of A's.)
                    assert!(!v.to_string().contains(SECRET), "{what}: {v}");
                    // Exactly what an id that never existed gets: nothing confirms A's.
                    let (s2, v2) = if path == "/v1/uploads/{upload_id}/parts" {
                        let form = reqwest::multipart::Form::new().part(
                            "data",
                            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("p"),
                        );
                        b.multipart(&fill(path, &o, true), form).await
                    } else {
                        b.call(m, &fill(path, &o, true), body).await
                    };
                    let (real, made_up) = (fill(path, &o, false), fill(path, &o, true));
                    assert_eq!(
                        (s2, shape(&v2, &made_up)),
                        (s, shape(&v, &real)),
                        "{what}: {v} vs {v2}"
                    );
                }
                Try::Lists => {
                    let (s, v) = b.call(m, path, None).await;
                    assert_eq!(s, 200, "{what}: {v}");
                    assert!(v["data"].is_array(), "{what}: {v}");
                    assert_nothing_of_a(&what, &v, &o);
                }
                Try::Names(body) => {
                    let (s, v) = b.call(m, path, Some(body)).await;
                    assert!(s == 400 || s == 404, "{what}: {s} {v}");
                    let (message, _, _) = err_parts(&v);
                    assert!(
                        message.starts_with("No ") && message.contains(" found with id "),
                        "{what}: {v}"
                    );
                }
                Try::Own => {
                    // A does not see what B made.
                    let (s, v) = if path == "/v1/files" {
                        let id = b.upload("beta.txt", "beta's own").await;
                        a.get(&format!("/v1/files/{id}")).await
                    } else {
                        let v = b
                            .ok(
                                m,
                                path,
                                Some(json!({"filename": "b.txt", "purpose":
                                "assistants", "bytes": 1, "mime_type": "text/plain"})),
                            )
                            .await;
                        let id = v["id"].as_str().unwrap();
                        a.post(&format!("/v1/uploads/{id}/cancel"), json!({})).await
                    };
                    assert_eq!(s, 404, "{what}: A reaches what B made: {v}");
                }
                Try::Shared => {
                    let p = fill(path, &o, false);
                    let (sa, va) = a.call(m.clone(), &p, None).await;
                    let (sb, vb) = b.call(m, &p, None).await;
                    assert_eq!((sa, va), (sb, vb), "{what}");
                }
            }
        }
    }
    assert!(tried.len() >= 55, "{tried:?}");

    // Runs of B's reach only B's files, even named in messages and additional messages.
    let (s, v) = b
        .post("/v1/threads", json!({"messages": [{"role": "user", "content": "hi",
            "attachments": [{"file_id": o.id("file_id"), "tools": [{"type": "code_interpreter"}]}]}]}))
        .await;
    assert_eq!(s, 400, "{v}");
    let b_thread = b.create("/v1/threads", json!({})).await;
    let (s, v) = b
        .post(
            &format!("/v1/threads/{b_thread}/runs"),
            json!({"assistant_id": b_assistant, "additional_messages": [{"role": "user",
                "content": "hi", "attachments": [{"file_id": o.id("file_id"),
                "tools": [{"type": "file_search"}]}]}]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = b
        .post(
            &format!("/v1/threads/{b_thread}/messages"),
            json!({"role": "user", "content": [{"type": "image_file",
                "image_file": {"file_id": o.id("file_id")}}]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // B's session of A's session's name is B's own: no variable, no file of A's.
    let ran = b
        .ok(
            Method::POST,
            "/v1/code_interpreter/execute",
            Some(json!({"session_id": "shared-name", "code":
                "import os\nprint(sorted(os.listdir('/mnt/data')), 'x' in globals())"})),
        )
        .await;
    assert_eq!(ran["stdout"], "[] False\n", "{ran}");

    // A's objects are all still there, unchanged.
    for (param, id) in &o.ids {
        let path = match *param {
            "file_id" => format!("/v1/files/{id}/content"),
            "vector_store_id" => format!("/v1/vector_stores/{id}"),
            "batch_id" => format!(
                "/v1/vector_stores/{}/file_batches/{id}",
                o.id("vector_store_id")
            ),
            "assistant_id" => format!("/v1/assistants/{id}"),
            "thread_id" => format!("/v1/threads/{id}"),
            "message_id" => format!("/v1/threads/{}/messages/{id}", o.id("thread_id")),
            "run_id" => format!("/v1/threads/{}/runs/{id}", o.id("thread_id")),
            "step_id" => format!(
                "/v1/threads/{}/runs/{}/steps/{id}",
                o.id("thread_id"),
                o.id("run_id")
            ),
            "session_id" => format!("/v1/code_interpreter/sessions/{id}"),
            _ => continue,
        };
        let (s, v) = a.get(&path).await;
        assert_eq!(s, 200, "A's {path}: {v}");
        assert!(
            v.get("metadata").is_none_or(|m| m.get("k").is_none()),
            "{path} changed: {v}"
        );
    }
    let (_, content) = a
        .get(&format!("/v1/files/{}/content", o.id("file_id")))
        .await;
    assert!(
        content.as_str().unwrap_or_default().contains(SECRET),
        "{content}"
    );
    let waiting = a
        .get(&format!(
            "/v1/threads/{}/runs/{}",
            o.waiting_thread, o.waiting_run
        ))
        .await
        .1;
    assert_eq!(waiting["status"], "requires_action", "{waiting}");
    let still = a
        .ok(
            Method::POST,
            "/v1/code_interpreter/execute",
            Some(json!({"session_id": "shared-name", "code": "print(x, open('/mnt/data/s.txt').read())"})),
        )
        .await;
    assert_eq!(still["stdout"], format!("{SECRET} {SECRET}\n"), "{still}");
    // The Upload still takes A's completion.
    let done = a
        .ok(
            Method::POST,
            &format!("/v1/uploads/{}/complete", o.id("upload_id")),
            Some(json!({"part_ids": [o.part.clone()]})),
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    // And A's listings hold only A's.
    let files = a.ok(Method::GET, "/v1/files", None).await;
    assert!(!files.to_string().contains("beta.txt"), "{files}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_keeps_projects_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (file, key_a, key_b) = two_projects(dir.path());
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys = oasis::tenancy::Keys::new(None, Some(file)).unwrap();
        s.api.thread_list = true;
    })
    .await;
    walk(&app, &key_a, &key_b).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_keeps_projects_apart_on_postgres() {
    let pg = Postgres::start();
    let url = pg.fresh_database("projects_walk");
    let dir = tempfile::tempdir().unwrap();
    let (file, key_a, key_b) = two_projects(dir.path());
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys = oasis::tenancy::Keys::new(None, Some(file)).unwrap();
        s.api.thread_list = true;
        s.database_url = Some(url);
        s.runs.exclusive = false;
        s.runs.node = "projects-walk".into();
        s.sessions.hibernate = true;
        s.sessions.hibernate_every_turn = true;
    })
    .await;
    walk(&app, &key_a, &key_b).await;
    app.stop().await;
}

/// A server whose keys file has projects `alpha`, `beta` and `gamma` (at most one unfinished
/// run), and the SDK suites' environment: the server and a key of each (`OASIS_KEY_A`,
/// `OASIS_KEY_B`, `OASIS_KEY_LIMITED`).
async fn sdk_projects(dir: &Path) -> (TestApp, Vec<(&'static str, String)>) {
    let (file, key_a, key_b) = two_projects(dir);
    let key_limited = oasis::tenancy::add_key(&file, "gamma", None).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    // Gamma may have one unfinished run (a limit is a line of its table).
    let text = text.replacen(
        "id = \"gamma\"",
        "id = \"gamma\"\nmax_concurrent_runs = 1",
        1,
    );
    std::fs::write(&file, text).unwrap();
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys = oasis::tenancy::Keys::new(None, Some(file)).unwrap();
    })
    .await;
    let env = vec![
        ("OASIS_BASE_URL", app.base.clone()),
        ("OASIS_KEY_A", key_a),
        ("OASIS_KEY_B", key_b),
        ("OASIS_KEY_LIMITED", key_limited),
    ];
    (app, env)
}

/// The official Python SDK, as an app would use it with two projects' keys: another project's
/// objects raise `NotFoundError` (streams included), and a project at its run limit gets
/// `RateLimitError` (`tests/python/sdk_projects.py`).
#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_sees_only_its_projects_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (app, env) = sdk_projects(dir.path()).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = tokio::task::spawn_blocking(crate::helpers::python_venv)
        .await
        .unwrap();
    let out = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/python/sdk_projects.py"))
        .envs(env)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    let text = crate::helpers::printed(&out);
    println!("{text}");
    assert!(
        out.status.success(),
        "the SDK projects suite failed:\n{text}"
    );
    assert!(text.contains("2 passed"), "{text}");
    app.stop().await;
}

/// The same with the official Node SDK (`tests/node/projects.mjs`, run by itself, not by the
/// main Node suite).
#[tokio::test(flavor = "multi_thread")]
async fn the_node_sdk_sees_only_its_projects_objects() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    crate::node_sdk::require_node();
    crate::node_sdk::npm_ci_once(&suite);
    let dir = tempfile::tempdir().unwrap();
    let (app, env) = sdk_projects(dir.path()).await;
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "projects.mjs"])
        .current_dir(&suite)
        .envs(env)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = crate::helpers::printed(&out);
    println!("{text}");
    assert!(
        out.status.success(),
        "the Node SDK projects suite failed:\n{text}"
    );
    assert!(text.contains("pass 2") && text.contains("fail 0"), "{text}");
    app.stop().await;
}
