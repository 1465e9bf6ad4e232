//! Sandboxes in supervised worker processes (`isolation = process`): a real server whose
//! sessions run in `oasis sandbox-worker` children of this test process, found through /proc.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PNG_SIGNATURE, TestApp};
use crate::worker_processes::{
    WORKERS, answer_within, id_on, in_worker_processes, kill9, spawn_exec, stat, wait_workers,
    worker_pids,
};

async fn process_app() -> TestApp {
    TestApp::spawn_with(None, in_worker_processes).await
}

pub async fn exec(app: &TestApp, session: &str, code: &str) -> Value {
    let (s, v) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": code, "session_id": session}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Host folder behind a session's /mnt/data.
pub fn data(app: &TestApp, session: &str) -> PathBuf {
    app.data_dir.join("sessions").join(session).join("data")
}

/// Wait until the guest has written `path` (it exists and is not empty: a file appears at
/// `open`, before its bytes are flushed).
pub async fn wait_file(path: &Path) {
    wait_file_within(path, Duration::from_secs(60)).await
}

/// [`wait_file`] with a deadline of `within`.
pub async fn wait_file_within(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_in_workers_keep_state_stream_output_and_return_images() {
    let app = process_app().await;
    let (a, b) = (id_on(0, "state-a"), id_on(1, "state-b"));
    let r = exec(&app, &a, "x = 41\nopen('/mnt/data/a.txt', 'w').write('hi')").await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["files"][0]["path"], "/mnt/data/a.txt", "{r}");
    let r = exec(&app, &a, "x + 1").await;
    assert_eq!(r["result"], "42", "{r}");
    // Both workers serve; a figure comes back as a PNG File (raw bytes through the pipe).
    let r = exec(
        &app,
        &b,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nprint('plotted')",
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["stdout"], "plotted\n");
    let image = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"] == "image")
        .unwrap_or_else(|| panic!("no image in {r}"));
    let id = image["image"]["file_id"].as_str().unwrap();
    let png = app
        .client
        .get(app.url(&format!("/v1/files/{id}/content")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(png.starts_with(PNG_SIGNATURE), "not a PNG");
    let pids = wait_workers(&app).await;
    assert_eq!(pids.len(), WORKERS);

    // Streaming: the code waits until the client has seen its first chunk.
    let go = data(&app, &a).join("go");
    let code = "import os, sys, time\nprint('first', flush=True)\nprint('warn', file=sys.stderr, flush=True)\n\
                t = time.time()\nwhile not os.path.exists('/mnt/data/go') and time.time() - t < 30:\n    time.sleep(0.02)\n\
                print('saw go' if os.path.exists('/mnt/data/go') else 'no go')\nx";
    let mut resp = app
        .client
        .post(app.url("/v1/code_interpreter/execute"))
        .json(&json!({"code": code, "session_id": a, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if !go.exists() && text.contains("first") {
            std::fs::write(&go, "").unwrap();
        }
    }
    let events: Vec<(String, String)> = text
        .split("\n\n")
        .filter_map(|block| {
            let mut ev = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    ev = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            ev.map(|e| (e, data))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.first(), Some(&"stdout"), "{text}");
    assert!(names.contains(&"stderr"), "{text}");
    assert_eq!(&names[names.len() - 2..], ["result", "done"], "{text}");
    let body: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(body["status"], "completed", "{body}");
    assert_eq!(body["stdout"], "first\nsaw go\n", "{body}");
    assert_eq!(body["result"], "41", "{body}");

    // Ending a session ends its interpreter (in the worker) and its folders.
    let (s, _) = app
        .delete(&format!("/v1/code_interpreter/sessions/{a}"))
        .await;
    assert_eq!(s, 200);
    assert!(!data(&app, &a).exists());
    let r = exec(&app, &a, "'x' in globals()").await;
    assert_eq!(r["result"], "False", "{r}");
    // Nothing above restarted a worker.
    assert_eq!(worker_pids(&app), pids);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_60_killing_a_worker_mid_run_restarts_it_and_only_its_calls_fail() {
    let app = process_app().await;
    let (a, b) = (id_on(0, "kill-a"), id_on(1, "kill-b"));
    let r = exec(
        &app,
        &a,
        "x = 1\nopen('/mnt/data/keep.txt', 'w').write('kept')",
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    let r = exec(&app, &b, "y = 1").await;
    assert_eq!(r["status"], "completed", "{r}");
    let pids = wait_workers(&app).await;

    // A sleeps in worker 0; B runs in worker 1 until told to go on.
    let long_a = spawn_exec(
        &app,
        &a,
        "open('/mnt/data/started', 'w').write('1')\nimport time\ntime.sleep(30)",
    );
    let long_b = spawn_exec(
        &app,
        &b,
        "import os, time\nopen('/mnt/data/started', 'w').write('1')\nt = time.time()\n\
         while not os.path.exists('/mnt/data/go') and time.time() - t < 30:\n    time.sleep(0.02)\n\
         y += 1\nprint(y, os.path.exists('/mnt/data/go'))",
    );
    wait_file(&data(&app, &a).join("started")).await;
    wait_file(&data(&app, &b).join("started")).await;

    let killed = pids[&0];
    kill9(killed);
    let r = answer_within(
        long_a,
        Duration::from_secs(15),
        "the call on the killed worker hung",
    )
    .await;
    assert_eq!(r["status"], "crashed", "{r}");

    // The sibling session, in the other worker, never noticed.
    std::fs::write(data(&app, &b).join("go"), "").unwrap();
    let r = answer_within(long_b, Duration::from_secs(30), "the sibling call hung").await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["stdout"], "2 True\n", "{r}");

    // Worker 0 is back under a new pid; the dead one was reaped (no zombie); worker 1 is the
    // same process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let now = loop {
        let now = worker_pids(&app);
        if now.len() == WORKERS && now[&0] != killed {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "worker 0 was not restarted: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(now[&1], pids[&1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some((ppid, state)) = stat(killed)
        && ppid == std::process::id() as i32
    {
        assert!(
            Instant::now() < deadline,
            "the killed worker was never reaped (state {state})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A's next call resumes its state saved after its last finished call (hibernation every
    // turn is the default), over the same files: only the call in flight was lost.
    let r = exec(
        &app,
        &a,
        "print(open('/mnt/data/keep.txt').read())\n'x' in globals()",
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["stdout"], "kept\n", "{r}");
    assert_eq!(r["result"], "True", "{r}");
    let r = exec(&app, &a, "x = 5\nx * 2").await;
    assert_eq!(r["result"], "10", "{r}");
    let r = exec(&app, &b, "y").await;
    assert_eq!(r["result"], "2", "{r}");
    let (s, _) = app.get("/health").await;
    assert_eq!(s, 200);
    app.stop().await;
}

pub async fn assistant(app: &TestApp) -> String {
    let (s, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "gpt-4o", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    a["id"].as_str().unwrap().to_string()
}

/// A thread holding one user message with a Python cell; (thread, run) of a run started on it.
pub async fn run_cell(
    app: &TestApp,
    assistant: &str,
    thread: Option<&str>,
    code: &str,
) -> (String, String) {
    let content = format!("```python\n{code}\n```");
    let thread = match thread {
        Some(t) => {
            let (s, m) = app
                .post(
                    &format!("/v1/threads/{t}/messages"),
                    json!({"role": "user", "content": content}),
                )
                .await;
            assert_eq!(s, 200, "{m}");
            t.to_string()
        }
        None => {
            let (s, t) = app
                .post(
                    "/v1/threads",
                    json!({"messages": [{"role": "user", "content": content}]}),
                )
                .await;
            assert_eq!(s, 200, "{t}");
            t["id"].as_str().unwrap().to_string()
        }
    };
    let (s, r) = app
        .post(
            &format!("/v1/threads/{thread}/runs"),
            json!({"assistant_id": assistant}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    (thread, r["id"].as_str().unwrap().to_string())
}

/// The run's `tool_calls` step.
pub async fn tool_step(app: &TestApp, thread: &str, run: &str) -> Value {
    let (s, steps) = app
        .get(&format!("/v1/threads/{thread}/runs/{run}/steps"))
        .await;
    assert_eq!(s, 200, "{steps}");
    steps["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "tool_calls")
        .unwrap_or_else(|| panic!("no tool step: {steps}"))
        .clone()
}

pub async fn wait_run(app: &TestApp, thread: &str, run: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (s, r) = app.get(&format!("/v1/threads/{thread}/runs/{run}")).await;
        assert_eq!(s, 200, "{r}");
        let st = r["status"].as_str().unwrap_or_default();
        if ["completed", "failed", "cancelled", "expired", "incomplete"].contains(&st) {
            return r;
        }
        assert!(Instant::now() < deadline, "run stuck in {st}: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The text of the thread's assistant messages.
pub async fn assistant_text(app: &TestApp, thread: &str) -> String {
    let (s, l) = app
        .get(&format!("/v1/threads/{thread}/messages?limit=100"))
        .await;
    assert_eq!(s, 200, "{l}");
    l["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_cell_was_on_a_killed_worker_fails_with_a_clear_error() {
    let app = process_app().await;
    let asst = assistant(&app).await;
    let (t, run) = run_cell(
        &app,
        &asst,
        None,
        "open('/mnt/data/started', 'w').write('yes')\nimport time\ntime.sleep(30)",
    )
    .await;
    wait_file(&data(&app, &t).join("started")).await;
    let pids = wait_workers(&app).await;
    kill9(pids[&oasis::sandbox::shard_of(&t, WORKERS)]);
    let r = wait_run(&app, &t, &run, Duration::from_secs(15)).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["last_error"]["code"], "server_error", "{r}");
    let msg = r["last_error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("sandbox worker crashed") && msg.contains("SIGKILL"),
        "{msg}"
    );
    let code_step = tool_step(&app, &t, &run).await;
    assert_eq!(code_step["status"], "failed", "{code_step}");
    assert_eq!(code_step["last_error"]["code"], "server_error");

    // The thread is free again; the next run gets a new interpreter with the files kept.
    let (_, run2) = run_cell(
        &app,
        &asst,
        Some(&t),
        "print(open('/mnt/data/started').read())",
    )
    .await;
    let r = wait_run(&app, &t, &run2, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "completed", "{r}");
    let said = assistant_text(&app, &t).await;
    assert!(said.contains("yes"), "{said}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_cancels_its_cell_inside_the_worker() {
    let app = process_app().await;
    let asst = assistant(&app).await;
    let (t, run) = run_cell(
        &app,
        &asst,
        None,
        "open('/mnt/data/kept.txt', 'w').write('k')\nimport time\ntime.sleep(60)",
    )
    .await;
    wait_file(&data(&app, &t).join("kept.txt")).await;
    let pids = wait_workers(&app).await;
    let (s, r) = app
        .post(&format!("/v1/threads/{t}/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    // Well before the 60 s sleep would have ended.
    let r = wait_run(&app, &t, &run, Duration::from_secs(20)).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    // The cancel went through the channel: no worker was killed for it.
    assert_eq!(worker_pids(&app), pids);
    let (_, run2) = run_cell(
        &app,
        &asst,
        Some(&t),
        "print(open('/mnt/data/kept.txt').read())",
    )
    .await;
    let r = wait_run(&app, &t, &run2, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "completed", "{r}");
    let said = assistant_text(&app, &t).await;
    assert!(said.contains("```\\nk\\n```"), "{said}");
    app.stop().await;
}

/// A cell waiting for a place in the sandbox pool (one worker, one call at a time, taken by a
/// long cell of another thread) is cancelled where it waits: its run ends `cancelled` at once,
/// its code never runs, and the long cell is not disturbed.
#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_run_whose_cell_waits_for_the_pool_ends_it_without_waiting() {
    let app = TestApp::spawn_with(None, |s| {
        in_worker_processes(s);
        s.sandbox_workers = 1;
        s.sessions.max_parallel = 1;
    })
    .await;
    let asst = assistant(&app).await;
    let (ta, run_a) = run_cell(
        &app,
        &asst,
        None,
        "open('/mnt/data/a.txt', 'w').write('a')\nimport time\ntime.sleep(60)",
    )
    .await;
    wait_file(&data(&app, &ta).join("a.txt")).await;
    let (tb, run_b) = run_cell(
        &app,
        &asst,
        None,
        "open('/mnt/data/b.txt', 'w').write('ran')",
    )
    .await;
    // B's cell has its step: its call is on its way to the pool or waits there. (No marker can
    // say more: B's code must never run.) Wherever the call is by now, the cancel meets it in
    // the same place: the worker reads the call's frame before the cancel's, and one
    // cancellable wait covers the session, its lock and the place in the pool
    // (`SessionManager::execute`).
    let steps = format!("/v1/threads/{tb}/runs/{run_b}/steps");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, l) = app.get(&steps).await;
        if l["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "B never got to its cell: {l}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, r) = app
        .post(&format!("/v1/threads/{tb}/runs/{run_b}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    // Long before A's 60 s sleep frees the pool.
    let r = wait_run(&app, &tb, &run_b, Duration::from_secs(20)).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    let (_, l) = app.get(&steps).await;
    assert_eq!(l["data"][0]["status"], "cancelled", "{l}");
    assert!(!data(&app, &tb).join("b.txt").exists());
    let (_, a) = app.get(&format!("/v1/threads/{ta}/runs/{run_a}")).await;
    assert_eq!(a["status"], "in_progress", "{a}");
    let (s, _) = app
        .post(&format!("/v1/threads/{ta}/runs/{run_a}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200);
    let r = wait_run(&app, &ta, &run_a, Duration::from_secs(20)).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    // B's thread works on.
    let (_, run_b2) = run_cell(&app, &asst, Some(&tb), "print('after')").await;
    let r = wait_run(&app, &tb, &run_b2, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "completed", "{r}");
    assert!(assistant_text(&app, &tb).await.contains("after"));
    app.stop().await;
}

/// Environment variables a worker may have (the supervisor passes only these).
const WORKER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "OASIS_LOG",
    "OASIS_RUNTIME_DIR",
    "OASIS_IMAGES_DIR",
    "OASIS_WARM",
    "RUST_BACKTRACE",
];

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_workers_are_hardened() {
    let app = process_app().await;
    // A call in each worker, so each holds a live interpreter.
    for shard in 0..WORKERS {
        let r = exec(&app, &id_on(shard, "hard"), "print(1)").await;
        assert_eq!(r["status"], "completed", "{r}");
    }
    let pids = wait_workers(&app).await;
    for (index, pid) in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
            "worker {index}: {status}"
        );
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let limit = |name: &str| -> (String, String) {
            let line = limits
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {limits}"));
            let f: Vec<&str> = line[name.len()..].split_whitespace().collect();
            (f[0].to_string(), f[1].to_string())
        };
        assert_eq!(limit("Max core file size"), ("0".into(), "0".into()));
        let (soft, hard) = limit("Max open files");
        assert_eq!(soft, hard, "the descriptor limit can be raised again");
        let nofile: u64 = soft.parse().unwrap();
        assert!((1024..1 << 20).contains(&nofile), "{nofile}");
        // Address space is left alone (wasmtime reserves large ranges): as this process's.
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        let own_as = own
            .lines()
            .find(|l| l.starts_with("Max address space"))
            .unwrap();
        let own_as: Vec<&str> = own_as["Max address space".len()..]
            .split_whitespace()
            .collect();
        assert_eq!(
            limit("Max address space"),
            (own_as[0].to_string(), own_as[1].to_string())
        );
        // No secrets from the server's environment.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for var in environ.split(|b| *b == 0).filter(|v| !v.is_empty()) {
            let var = String::from_utf8_lossy(var);
            let name = var.split('=').next().unwrap();
            assert!(WORKER_ENV.contains(&name), "worker {index} has {name} set");
        }
        // None of the server's files: not its database, not its File blobs.
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
        {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            assert!(
                !t.contains("oasis.sqlite3") && !target.starts_with(app.data_dir.join("files")),
                "worker {index} holds {t}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_worker_dies_with_its_parent() {
    // `sh` starts a worker (its stdin stays open: only the parent-death signal can end it),
    // writes the worker's pid, then is killed.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut sh = std::process::Command::new("sh");
    for k in crate::helpers::foreign_oasis_vars(&[]) {
        sh.env_remove(k);
    }
    let mut sh = sh
        .arg("-c")
        .arg(
            r#"exec 3<&0; "$0" sandbox-worker --root "$1" --cache-dir "$2" --warm-pool 0 --parent $$ <&3 & echo $! > "$3.tmp"; mv "$3.tmp" "$3"; wait"#,
        )
        .arg(env!("CARGO_BIN_EXE_oasis"))
        .arg(dir.path().join("sessions"))
        .arg(crate::helpers::data_dir())
        .arg(&pidfile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_file(&pidfile).await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Hardened (PR_SET_PDEATHSIG comes first, NO_NEW_PRIVS last).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"]))
        {
            break;
        }
        assert!(
            Instant::now() < deadline && stat(pid).is_some_and(|(_, s)| s != 'Z'),
            "the worker did not start: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Hold the pipes: `wait` would close stdin, and the worker ends at its end of input.
    let (stdin, stdout) = (sh.stdin.take(), sh.stdout.take());
    kill9(sh.id() as i32);
    sh.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(pid).is_some_and(|(_, s)| s != 'Z') {
        assert!(Instant::now() < deadline, "the worker outlived its parent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its stdin and stdout were still open all along.
    drop((stdin, stdout));
}
