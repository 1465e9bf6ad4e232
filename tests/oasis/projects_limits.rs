//! Projects' keys and limits, through the HTTP API: the keys file is followed without a
//! restart (a key added works, a key struck out stops, a broken edit changes nothing); a
//! project at its `max_concurrent_runs`, `max_live_sessions` (in-process and in worker
//! processes) or `max_storage_bytes` gets OpenAI's 429 `rate_limit_exceeded` until it makes
//! room, while another project goes on unaffected; `oasis keys add` prints a key once and
//! stores only its hash.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::helpers::{TestApp, oasis_binary};

/// Keys written into the test keys files by hand (only their hashes are written).
const ALPHA: &str = "sk-test-alpha-0f1e2d3c4b5a";
const BETA: &str = "sk-test-beta-99887766554433";

/// How long a change of the keys file may take to show (the server looks each second).
const RELOAD_BOUND: Duration = Duration::from_secs(15);

/// How long a run may take to reach a state (the built-in model answers at once; a first
/// code call may wait for the sandbox).
const RUN_BOUND: Duration = Duration::from_secs(120);

/// A request as the holder of `key`: status and body (a non-JSON body as a string).
async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(key)
        .header("OpenAI-Beta", "assistants=v2");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    call(app, key, Method::GET, path, None).await
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, Value) {
    call(app, key, Method::POST, path, Some(body)).await
}

/// A 200's body.
async fn ok(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let what = format!("{method} {path}");
    let (s, v) = call(app, key, method, path, body).await;
    assert_eq!(s, 200, "{what}: {v}");
    v
}

/// `POST /v1/files` of `bytes` as the holder of `key`.
async fn upload(app: &TestApp, key: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "assistants")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    let r = app
        .client
        .post(app.url("/v1/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `code` in code-interpreter session `session` as the holder of `key`.
async fn execute(app: &TestApp, key: &str, session: &str, code: &str) -> (u16, Value) {
    post(
        app,
        key,
        "/v1/code_interpreter/execute",
        json!({"session_id": session, "code": code}),
    )
    .await
}

/// Assert OpenAI's 429 body for a project at a limit; its message.
fn assert_over_limit(what: &str, (status, v): (u16, Value)) -> String {
    assert_eq!(status, 429, "{what}: {v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{what}: {v}");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{what}: {v}");
    assert!(v["error"]["param"].is_null(), "{what}: {v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

/// Assert a 401 for an unknown key.
fn assert_refused(what: &str, (status, v): (u16, Value)) {
    assert_eq!(status, 401, "{what}: {v}");
    assert_eq!(v["error"]["code"], "invalid_api_key", "{what}: {v}");
}

/// How the keys file writes a key: `sha256:` and its SHA-256 in lower-case hex.
fn hashed(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A `[[projects]]` table of project `id` with `keys` (hashed here) and `limits` (TOML lines).
fn project(id: &str, keys: &[&str], limits: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{}\"", hashed(k))).collect();
    format!(
        "[[projects]]\nid = \"{id}\"\nkeys = [{}]\n{limits}\n",
        keys.join(", ")
    )
}

/// Replace keys file `file` with `text` at once (a sibling renamed over it, as editors and
/// `oasis keys add` do), so the server never reads it half written.
fn write_keys(file: &Path, text: &str) {
    let tmp = file.with_extension("writing");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Check `done` every 50 ms until it holds; fail naming `what` after `bound`.
async fn until<F: Future<Output = bool>>(what: &str, bound: Duration, mut done: impl FnMut() -> F) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < bound, "{what}: not after {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server whose keys file (in `dir`) holds `text`, after `tweak`; the server's live keys (a
/// clone: they share their table) and the file.
async fn server(
    dir: &Path,
    text: &str,
    tweak: impl FnOnce(&mut oasis::server::Settings),
) -> (TestApp, oasis::tenancy::Keys, PathBuf) {
    let file = dir.join("keys.toml");
    write_keys(&file, text);
    let keys = oasis::tenancy::Keys::new(None, Some(file.clone())).unwrap();
    let k = keys.clone();
    let app = TestApp::spawn_with(None, move |s| {
        s.api.keys = k;
        tweak(s);
    })
    .await;
    (app, keys, file)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_added_to_the_keys_file_works_without_a_restart_and_a_removed_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (app, keys, file) = server(dir.path(), &project("alpha", &[ALPHA], ""), |_| {}).await;
    assert_eq!(get(&app, ALPHA, "/v1/models").await.0, 200);
    assert_refused("beta before", get(&app, BETA, "/v1/models").await);

    // `oasis keys add`'s code appends project beta; the running server takes it up.
    let beta = oasis::tenancy::add_key(&file, "beta", Some("Beta")).unwrap();
    until("beta's new key is accepted", RELOAD_BOUND, || async {
        get(&app, &beta, "/v1/models").await.0 == 200
    })
    .await;
    assert_eq!(get(&app, ALPHA, "/v1/models").await.0, 200);

    // Beta's objects are its own: alpha neither reaches nor lists them.
    let assistant = ok(
        &app,
        &beta,
        Method::POST,
        "/v1/assistants",
        Some(json!({"model": "oasis-local", "name": "beta's own"})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/assistants/{assistant}");
    assert_eq!(get(&app, &beta, &path).await.0, 200);
    let (s, v) = get(&app, ALPHA, &path).await;
    assert_eq!(s, 404, "{v}");
    let listed = ok(&app, ALPHA, Method::GET, "/v1/assistants", None).await;
    assert!(!listed.to_string().contains(&assistant), "{listed}");

    // A broken edit leaves the last good table in force: for several of the watcher's looks,
    // nothing is loaded and both keys keep working; a forced reload reports the error.
    let generation = keys.generation();
    let good = std::fs::read_to_string(&file).unwrap();
    write_keys(&file, &format!("{good}\n[[projects]\nid = \"broken\n"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(keys.generation(), generation, "a broken file was loaded");
        assert_eq!(get(&app, ALPHA, "/v1/models").await.0, 200);
        assert_eq!(get(&app, &beta, "/v1/models").await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = keys.reload().unwrap_err();
    assert!(format!("{e:#}").contains("keys file"), "{e:#}");
    assert_eq!(keys.generation(), generation);
    assert_eq!(get(&app, &beta, "/v1/models").await.0, 200);

    // The file rewritten without beta: the watcher (not stuck on the broken text) loads it,
    // and beta's key stops; alpha's goes on.
    write_keys(&file, &project("alpha", &[ALPHA], ""));
    until("beta's removed key is refused", RELOAD_BOUND, || async {
        get(&app, &beta, "/v1/models").await.0 == 401
    })
    .await;
    assert!(keys.generation() > generation);
    assert_refused("beta after", get(&app, &beta, &path).await);
    assert_eq!(get(&app, ALPHA, "/v1/models").await.0, 200);
    app.stop().await;
}

/// An assistant of `key`'s project with the function the built-in model's ```call``` blocks
/// name.
async fn function_assistant(app: &TestApp, key: &str) -> String {
    ok(
        app,
        key,
        Method::POST,
        "/v1/assistants",
        Some(
            json!({"model": "oasis-local", "tools": [{"type": "function", "function":
            {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]}),
        ),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A new thread whose last message makes a run call `lookup` (and wait for its output).
async fn calling_thread(app: &TestApp, key: &str) -> String {
    ok(
        app,
        key,
        Method::POST,
        "/v1/threads",
        Some(json!({"messages": [{"role": "user", "content": "```call lookup\n{}\n```"}]})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Poll run `run` of `thread` until `done` holds of it.
async fn run_until(
    app: &TestApp,
    key: &str,
    thread: &str,
    run: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/v1/threads/{thread}/runs/{run}");
    let start = Instant::now();
    loop {
        let v = ok(app, key, Method::GET, &path, None).await;
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < RUN_BOUND, "{path} still {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run of `assistant` on `thread` (which must be allowed), once it waits for `lookup`.
async fn waiting_run(app: &TestApp, key: &str, thread: &str, assistant: &str) -> Value {
    let run = ok(
        app,
        key,
        Method::POST,
        &format!("/v1/threads/{thread}/runs"),
        Some(json!({"assistant_id": assistant})),
    )
    .await;
    let id = run["id"].as_str().unwrap();
    run_until(app, key, thread, id, |v| v["status"] == "requires_action").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_at_its_run_limit_gets_429_until_a_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        project("alpha", &[ALPHA], "max_concurrent_runs = 1") + &project("beta", &[BETA], "");
    let (app, _keys, _file) = server(dir.path(), &text, |s| s.api.thread_list = true).await;
    let (a_asst, b_asst) = (
        function_assistant(&app, ALPHA).await,
        function_assistant(&app, BETA).await,
    );

    let t1 = calling_thread(&app, ALPHA).await;
    let r1 = waiting_run(&app, ALPHA, &t1, &a_asst).await;
    // A waiting run is unfinished: a second one of alpha's is refused, on any thread and by
    // either way of creating a run, and leaves nothing behind.
    let t2 = calling_thread(&app, ALPHA).await;
    let runs_of_t2 = format!("/v1/threads/{t2}/runs");
    let msg = assert_over_limit(
        "alpha's second run",
        post(&app, ALPHA, &runs_of_t2, json!({"assistant_id": a_asst})).await,
    );
    assert!(msg.contains("at most 1 runs"), "{msg}");
    // Operators see the refusal, by limit (never by project).
    let metrics = app.text("/metrics").await;
    assert!(
        metrics.contains(r#"oasis_project_limit_refusals_total{limit="runs"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("alpha"), "a metric names a project");
    assert_eq!(
        ok(&app, ALPHA, Method::GET, &runs_of_t2, None).await["data"],
        json!([])
    );
    let threads = ok(&app, ALPHA, Method::GET, "/v1/threads?limit=100", None).await;
    assert_over_limit(
        "alpha's thread-and-run",
        post(
            &app,
            ALPHA,
            "/v1/threads/runs",
            json!({"assistant_id": a_asst, "thread": {"messages": [{"role": "user",
                "content": "```call lookup\n{}\n```"}]}}),
        )
        .await,
    );
    let after = ok(&app, ALPHA, Method::GET, "/v1/threads?limit=100", None).await;
    assert_eq!(
        after["data"], threads["data"],
        "the refused run's thread was kept"
    );

    // Beta has no limit, and alpha's run does not count against it.
    for _ in 0..2 {
        let t = calling_thread(&app, BETA).await;
        waiting_run(&app, BETA, &t, &b_asst).await;
    }

    // Cancelling alpha's run frees its place.
    let r1_id = r1["id"].as_str().unwrap();
    ok(
        &app,
        ALPHA,
        Method::POST,
        &format!("/v1/threads/{t1}/runs/{r1_id}/cancel"),
        Some(json!({})),
    )
    .await;
    run_until(&app, ALPHA, &t1, r1_id, |v| v["status"] == "cancelled").await;
    let r2 = waiting_run(&app, ALPHA, &t2, &a_asst).await;

    // Full again; a run that completes frees its place too.
    let t3 = calling_thread(&app, ALPHA).await;
    let runs_of_t3 = format!("/v1/threads/{t3}/runs");
    assert_over_limit(
        "alpha's third run",
        post(&app, ALPHA, &runs_of_t3, json!({"assistant_id": a_asst})).await,
    );
    let r2_id = r2["id"].as_str().unwrap();
    let call_id = r2["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap();
    ok(
        &app,
        ALPHA,
        Method::POST,
        &format!("/v1/threads/{t2}/runs/{r2_id}/submit_tool_outputs"),
        Some(json!({"tool_outputs": [{"tool_call_id": call_id, "output": "42"}]})),
    )
    .await;
    let done = run_until(&app, ALPHA, &t2, r2_id, |v| {
        !["queued", "in_progress", "requires_action"].contains(&v["status"].as_str().unwrap())
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    waiting_run(&app, ALPHA, &t3, &a_asst).await;
    app.stop().await;
}

/// Two session ids of alpha's whose sandbox keys (`alpha.{id}`) fall in different workers
/// under process isolation, so the count must gather every worker's live sessions.
fn alpha_sessions() -> (String, String) {
    use crate::worker_processes::WORKERS;
    let on = |shard: usize, tag: &str| {
        (0..)
            .map(|i| format!("{tag}-{i}"))
            .find(|id| oasis::sandbox::shard_of(&format!("alpha.{id}"), WORKERS) == shard)
            .unwrap()
    };
    (on(0, "s1"), on(1, "s2"))
}

/// Alpha may have one live session, beta any number: a new session of alpha's past the limit
/// is refused (in the API) or answered with an error output (in a run) until one ends.
async fn live_session_limit(process: bool) {
    let dir = tempfile::tempdir().unwrap();
    let text = project("alpha", &[ALPHA], "max_live_sessions = 1") + &project("beta", &[BETA], "");
    let (app, _keys, _file) = server(dir.path(), &text, |s| {
        if process {
            crate::worker_processes::in_worker_processes(s);
        }
    })
    .await;
    let (s1, s2) = alpha_sessions();

    let (s, v) = execute(&app, ALPHA, &s1, "x = 41").await;
    assert_eq!((s, &v["status"]), (200, &json!("completed")), "{v}");
    let msg = assert_over_limit(
        "alpha's second session",
        execute(&app, ALPHA, &s2, "y = 1").await,
    );
    assert!(msg.contains("at most 1"), "{msg}");
    let (s, v) = get(&app, ALPHA, &format!("/v1/code_interpreter/sessions/{s2}")).await;
    assert_eq!(s, 404, "the refused session was made: {v}");
    // The live session itself goes on.
    let (s, v) = execute(&app, ALPHA, &s1, "print(x + 1)").await;
    assert_eq!((s, v["stdout"].as_str()), (200, Some("42\n")), "{v}");

    // Beta is not limited, and its sessions (of the same names) are its own.
    for id in [&s1, &s2] {
        let (s, v) = execute(&app, BETA, id, "print('x' in globals())").await;
        assert_eq!((s, v["stdout"].as_str()), (200, Some("False\n")), "{v}");
    }

    // In a run, the code call of a new session gets an error output; the run goes on.
    let assistant = ok(
        &app,
        ALPHA,
        Method::POST,
        "/v1/assistants",
        Some(json!({"model": "oasis-local", "tools": [{"type": "code_interpreter"}]})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = ok(
        &app,
        ALPHA,
        Method::POST,
        "/v1/threads/runs",
        Some(
            json!({"assistant_id": assistant, "thread": {"messages": [{"role": "user",
            "content": "```python\nprint('ran')\n```"}]}}),
        ),
    )
    .await;
    let (thread, run) = (
        run["thread_id"].as_str().unwrap(),
        run["id"].as_str().unwrap(),
    );
    let done = run_until(&app, ALPHA, thread, run, |v| {
        !["queued", "in_progress"].contains(&v["status"].as_str().unwrap())
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let steps = ok(
        &app,
        ALPHA,
        Method::GET,
        &format!("/v1/threads/{thread}/runs/{run}/steps"),
        None,
    )
    .await
    .to_string();
    assert!(
        steps.contains("may have at most 1 live code-interpreter sessions"),
        "{steps}"
    );

    // Ending alpha's session makes room for another.
    let (s, v) = call(
        &app,
        ALPHA,
        Method::DELETE,
        &format!("/v1/code_interpreter/sessions/{s1}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = execute(&app, ALPHA, &s2, "y = 2").await;
    assert_eq!((s, &v["status"]), (200, &json!("completed")), "{v}");
    assert_over_limit(
        "alpha's first session again",
        execute(&app, ALPHA, &s1, "x = 1").await,
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_at_its_live_session_limit_gets_429_for_a_new_session() {
    live_session_limit(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_at_its_live_session_limit_gets_429_for_a_new_session_in_worker_processes() {
    live_session_limit(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_at_its_storage_limit_cannot_store_more_files() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        project("alpha", &[ALPHA], "max_storage_bytes = 100") + &project("beta", &[BETA], "");
    let (app, _keys, _file) = server(dir.path(), &text, |_| {}).await;
    let upload_of = |bytes: u64| {
        json!({"filename": "u.txt", "purpose": "assistants", "bytes": bytes,
            "mime_type": "text/plain"})
    };

    let (s, first) = upload(&app, ALPHA, "a.txt", vec![b'a'; 60]).await;
    assert_eq!(s, 200, "{first}");
    let msg = assert_over_limit(
        "60 more bytes",
        upload(&app, ALPHA, "b.txt", vec![b'b'; 60]).await,
    );
    assert!(msg.contains("100 bytes"), "{msg}");
    assert_over_limit(
        "an Upload of 60",
        post(&app, ALPHA, "/v1/uploads", upload_of(60)).await,
    );
    // An Upload that fits when made, and a File that then fills the store to exactly 100.
    let pending = ok(
        &app,
        ALPHA,
        Method::POST,
        "/v1/uploads",
        Some(upload_of(40)),
    )
    .await;
    let up = pending["id"].as_str().unwrap();
    let form = reqwest::multipart::Form::new().part(
        "data",
        reqwest::multipart::Part::bytes(vec![b'u'; 40]).file_name("part"),
    );
    let r = app
        .client
        .post(app.url(&format!("/v1/uploads/{up}/parts")))
        .bearer_auth(ALPHA)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let part = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = upload(&app, ALPHA, "c.txt", vec![b'c'; 40]).await;
    assert_eq!(s, 200, "exactly at the limit: {v}");
    assert_over_limit(
        "one byte more",
        upload(&app, ALPHA, "d.txt", vec![b'd']).await,
    );
    // Completing the Upload is checked again, and refused; the Upload stays pending.
    let complete = format!("/v1/uploads/{up}/complete");
    let parts = json!({"part_ids": [part]});
    assert_over_limit(
        "completing",
        post(&app, ALPHA, &complete, parts.clone()).await,
    );

    // Beta stores what it likes.
    let (s, v) = upload(&app, BETA, "big.txt", vec![b'x'; 500]).await;
    assert_eq!(s, 200, "{v}");

    // Deleting a File makes room: the Upload completes, and a File fits again.
    let a_id = first["id"].as_str().unwrap();
    ok(
        &app,
        ALPHA,
        Method::DELETE,
        &format!("/v1/files/{a_id}"),
        None,
    )
    .await;
    let done = ok(&app, ALPHA, Method::POST, &complete, Some(parts)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (s, v) = upload(&app, ALPHA, "e.txt", vec![b'e'; 20]).await;
    assert_eq!(s, 200, "{v}");

    // Code's outputs past the limit stay in /mnt/data, with a note, and are not Files; one
    // that fits is stored. (40 + 40 + 20 = 100 stored: nothing more fits.)
    let (s, v) = execute(
        &app,
        ALPHA,
        "writer",
        "open('/mnt/data/big.bin', 'wb').write(b'x' * 200)\nprint('wrote')",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["stdout"], "wrote\n", "{v}");
    let note = "[oasis] big.bin (200 bytes) was not stored as a File: the project has reached \
                its storage limit";
    assert!(v["stderr"].as_str().unwrap().contains(note), "{v}");
    assert_eq!(v["files"], json!([]), "{v}");
    let listed = ok(&app, ALPHA, Method::GET, "/v1/files", None).await;
    let total: u64 = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 100, "{listed}");
    let in_session = ok(
        &app,
        ALPHA,
        Method::GET,
        "/v1/code_interpreter/sessions/writer/files",
        None,
    )
    .await;
    assert!(
        in_session.to_string().contains("/mnt/data/big.bin"),
        "{in_session}"
    );
    app.stop().await;
}

/// `oasis keys add` with `args` on keys file `file`: the key it printed.
fn keys_add(file: &Path, args: &[&str]) -> String {
    let out = oasis_binary(&[])
        .args(["keys", "add"])
        .args(args)
        .arg("--file")
        .arg(file)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let key = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(
        key.starts_with("sk-oasis-") && !key.contains('\n') && key.len() > 40,
        "stdout is the key alone: {stdout:?}"
    );
    assert!(!stderr.trim().is_empty(), "a note on stderr");
    assert!(!stderr.contains(key), "the key only on stdout: {stderr}");
    key.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn oasis_keys_add_prints_a_key_once_and_stores_only_its_hash() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    let first = keys_add(&file, &["--project", "gamma", "--name", "Gamma"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&hashed(&first)), "{text}");
    assert!(
        !text.contains(&first["sk-oasis-".len()..]),
        "the key itself is stored"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the keys file is private: {mode:o}");

    let keys = oasis::tenancy::Keys::new(None, Some(file.clone())).unwrap();
    let k = keys.clone();
    let app = TestApp::spawn_with(None, move |s| s.api.keys = k).await;
    let assistant = ok(
        &app,
        &first,
        Method::POST,
        "/v1/assistants",
        Some(json!({"model": "oasis-local"})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_refused(
        "a made-up key",
        get(&app, "sk-oasis-nope", "/v1/models").await,
    );
    assert_eq!(keys.project_of(&first).unwrap().name, "Gamma");

    // A second key of the same project: both work, on the same objects.
    let second = keys_add(&file, &["--project", "gamma"]);
    assert_ne!(first, second);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&hashed(&first)) && text.contains(&hashed(&second)),
        "{text}"
    );
    assert!(!text.contains(&second["sk-oasis-".len()..]));
    until("the second key is accepted", RELOAD_BOUND, || async {
        get(&app, &second, "/v1/models").await.0 == 200
    })
    .await;
    let path = format!("/v1/assistants/{assistant}");
    assert_eq!(
        ok(&app, &second, Method::GET, &path, None).await["id"],
        assistant
    );
    assert_eq!(
        ok(&app, &first, Method::GET, &path, None).await["id"],
        assistant
    );
    assert_eq!(keys.project_of(&second).unwrap().name, "Gamma");
    app.stop().await;
}

/// Requests arriving together cannot pass a limit together: of eight 60-byte uploads at once
/// under `max_storage_bytes = 100`, exactly one is stored (the bytes are counted in the
/// transaction that records the File); of four executes in four new sessions at once under
/// `max_live_sessions = 1`, exactly one runs (a session being started holds its place).
#[tokio::test(flavor = "multi_thread")]
async fn requests_arriving_together_cannot_pass_a_limit_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = project(
        "alpha",
        &[ALPHA],
        "max_storage_bytes = 100\nmax_live_sessions = 1",
    );
    let (app, _keys, _file) = server(dir.path(), &text, |_| {}).await;
    let stored = futures::future::join_all((0..8).map(|i| {
        let app = &app;
        async move { upload(app, ALPHA, &format!("f{i}.txt"), vec![b'x'; 60]).await }
    }))
    .await;
    let statuses: Vec<u16> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{stored:?}"
    );
    for r in stored.into_iter().filter(|(s, _)| *s != 200) {
        assert_over_limit("an upload past the limit", r);
    }
    let (_, files) = get(&app, ALPHA, "/v1/files").await;
    assert_eq!(files["data"].as_array().unwrap().len(), 1, "{files}");

    let ran = futures::future::join_all((0..4).map(|i| {
        let app = &app;
        async move {
            let code = "import time\ntime.sleep(0.5)";
            execute(app, ALPHA, &format!("race{i}"), code).await
        }
    }))
    .await;
    let statuses: Vec<u16> = ran.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{ran:?}");
    for r in ran.into_iter().filter(|(s, _)| *s != 200) {
        assert_over_limit("a session past the limit", r);
    }
}
