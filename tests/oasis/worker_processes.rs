//! Servers whose sandboxes run in supervised worker processes (`isolation = process`): their
//! settings, their `oasis sandbox-worker` children of this test process (found through /proc,
//! killed with SIGKILL), and calls left running on them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::TestApp;

pub const WORKERS: usize = 2;

/// Sandboxes in [`WORKERS`] worker processes of this build's `oasis`.
pub fn in_worker_processes(s: &mut oasis::server::Settings) {
    s.isolation = oasis::server::Isolation::Process;
    s.sandbox_workers = WORKERS;
    s.worker_exe = Some(PathBuf::from(env!("CARGO_BIN_EXE_oasis")));
}

/// A session id (made from `tag`) that lives in worker `shard`.
pub fn id_on(shard: usize, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|id| oasis::sandbox::shard_of(id, WORKERS) == shard)
        .unwrap()
}

/// This app's sandbox workers (children of this process) by index: pid.
pub fn worker_pids(app: &TestApp) -> HashMap<usize, i32> {
    let root = std::path::absolute(app.data_dir.join("sessions")).unwrap();
    let me = std::process::id() as i32;
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Some((ppid, state)) = stat(pid) else {
            continue;
        };
        if ppid != me || state == 'Z' {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let arg = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
        };
        if args.get(1).map(String::as_str) == Some("sandbox-worker")
            && arg("--root").map(PathBuf::from).as_deref() == Some(root.as_path())
            && let Some(index) = arg("--index").and_then(|i| i.parse().ok())
        {
            out.insert(index, pid);
        }
    }
    out
}

/// (ppid, state) of a process, if it exists.
pub fn stat(pid: i32) -> Option<(i32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Wait until all workers run; their pids by index.
pub async fn wait_workers(app: &TestApp) -> HashMap<usize, i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pids = worker_pids(app);
        if pids.len() == WORKERS {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox workers did not start: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// `POST /v1/code_interpreter/execute` of `code` in `session`, left running in a task (to be
/// met by a kill or a signal meanwhile); the task ends with the answer's body.
pub fn spawn_exec(app: &TestApp, session: &str, code: &str) -> tokio::task::JoinHandle<Value> {
    let url = app.url("/v1/code_interpreter/execute");
    let body = json!({"session_id": session, "code": code});
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
}

/// What `task` ends with, which must be within `within` (else a panic saying `hung`).
pub async fn answer_within<T>(task: tokio::task::JoinHandle<T>, within: Duration, hung: &str) -> T {
    tokio::time::timeout(within, task)
        .await
        .expect(hung)
        .unwrap()
}
