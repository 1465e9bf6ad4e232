//! Hibernation as a user of the API sees it: sessions that keep their variables across a
//! graceful restart and a `kill -9` of their sandbox worker, `GET
//! /v1/code_interpreter/sessions/{id}` following a session from live to hibernated and back,
//! and damaged state files refused with a notice in the execute answer and the run step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{TestApp, err_parts};
use crate::worker_processes::{
    answer_within, id_on, in_worker_processes, kill9, spawn_exec, wait_workers,
};
use crate::workers::{assistant, data, exec, run_cell, tool_step, wait_file, wait_run};

/// A server on `dir` (a new one if `None`), its sandboxes in worker processes if `process`,
/// after `tweak`.
async fn app_on(
    dir: Option<PathBuf>,
    process: bool,
    tweak: impl FnOnce(&mut oasis::server::Settings),
) -> TestApp {
    TestApp::spawn_with(dir, |s| {
        if process {
            in_worker_processes(s);
        }
        tweak(s);
    })
    .await
}

async fn session(app: &TestApp, id: &str) -> Value {
    let (s, v) = app
        .get(&format!("/v1/code_interpreter/sessions/{id}"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "code_interpreter.session", "{v}");
    assert_eq!(v["id"], id, "{v}");
    v
}

/// Wait (at most a minute) until session `id` shows `status`.
async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = session(app, id).await;
        if v["status"] == status {
            return v;
        }
        assert!(Instant::now() < deadline, "never {status}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_file(app: &TestApp, id: &str) -> PathBuf {
    app.data_dir
        .join("sessions")
        .join(id)
        .join("hibernated.state")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const BUILD: &str = "import pandas as pd, numpy as np\n\
df = pd.DataFrame({'x': np.arange(10_000), 'y': np.arange(10_000) * 2.5})\n\
total = float(df.y.sum())\n\
who";

const CHECK: &str = "(who, len(df), float(df.y.sum()) == total, float(df.y.iloc[-1]))";

async fn variables_and_a_dataframe_survive_a_graceful_restart(process: bool) {
    let dir = tempfile::tempdir().unwrap();
    let app = app_on(Some(dir.path().to_path_buf()), process, |_| {}).await;
    // One session in each worker.
    let ids = [id_on(0, "restart"), id_on(1, "restart")];
    for id in &ids {
        let r = exec(&app, id, &format!("who = {id:?}\n{BUILD}")).await;
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["notice"], Value::Null, "{r}");
        assert_eq!(session(&app, id).await["status"], "live");
    }
    let workers = if process {
        wait_workers(&app).await
    } else {
        HashMap::new()
    };
    app.stop().await;
    // The workers hibernated their sessions, then were stopped and reaped with the server.
    for pid in workers.values() {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} outlived its server"
        );
    }

    let app = app_on(Some(dir.path().to_path_buf()), process, |_| {}).await;
    for id in &ids {
        let v = session(&app, id).await;
        assert_eq!(v["status"], "hibernated", "{v}");
        assert!(v["state_bytes"].as_u64().unwrap() > 0, "{v}");
        let r = exec(&app, id, CHECK).await;
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(
            r["result"],
            format!("('{id}', 10000, True, 24997.5)"),
            "{r}"
        );
        assert_eq!(r["notice"], Value::Null, "{r}");
        assert_eq!(session(&app, id).await["status"], "live");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_and_a_dataframe_survive_a_graceful_restart_with_worker_processes() {
    variables_and_a_dataframe_survive_a_graceful_restart(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_and_a_dataframe_survive_a_graceful_restart_in_process() {
    variables_and_a_dataframe_survive_a_graceful_restart(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_a_worker_loses_only_the_turn_in_flight_with_hibernate_every_turn() {
    let app = app_on(None, true, |s| s.sessions.hibernate_every_turn = true).await;
    let id = id_on(0, "every-turn");
    let r = exec(
        &app,
        &id,
        "import pandas as pd\nx = 41\ndf = pd.DataFrame({'a': range(1000)})",
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    // The finished call's state is on disk while its interpreter stays live.
    let v = session(&app, &id).await;
    assert_eq!(v["status"], "live", "{v}");
    assert!(v["state_bytes"].as_u64().unwrap() > 0, "{v}");
    let pids = wait_workers(&app).await;

    let in_flight = spawn_exec(
        &app,
        &id,
        "x = 1000\nlost = True\nopen('/mnt/data/started', 'w').write('1')\n\
         import time\ntime.sleep(50)",
    );
    wait_file(&data(&app, &id).join("started")).await;
    kill9(pids[&0]);
    let r = answer_within(
        in_flight,
        Duration::from_secs(30),
        "the call on the killed worker hung",
    )
    .await;
    assert_eq!(r["status"], "crashed", "{r}");
    let notice = r["notice"]
        .as_str()
        .unwrap_or_else(|| panic!("no notice: {r}"));
    assert!(
        notice.contains("turn in flight is lost") && notice.contains("last hibernated state"),
        "{notice}"
    );

    // The next call (on the restarted worker) has everything the finished call set, and
    // nothing of the lost one.
    let r = exec(&app, &id, "(x, len(df), 'lost' in globals())").await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["result"], "(41, 1000, False)", "{r}");
    assert_eq!(r["notice"], Value::Null, "{r}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_shows_live_then_hibernated_then_live_again() {
    // Saving only when idle (not after every call), so a live session has nothing stored yet.
    let app = app_on(None, true, |s| {
        s.sessions.idle_ttl = Duration::from_secs(3);
        s.sessions.hibernate_every_turn = false;
    })
    .await;
    let (s, v) = app.get("/v1/code_interpreter/sessions/cisess_nope").await;
    assert_eq!(s, 404, "{v}");
    let (message, kind, _) = err_parts(&v);
    assert_eq!(message, "No session found with id 'cisess_nope'.");
    assert_eq!(kind, "invalid_request_error");

    let id = id_on(1, "status");
    let before = now_secs();
    let r = exec(&app, &id, "v = 1").await;
    assert_eq!(r["status"], "completed", "{r}");
    let live = session(&app, &id).await;
    assert_eq!(live["status"], "live", "{live}");
    assert_eq!(live["state_bytes"], 0, "{live}");
    let used = live["last_used_at"].as_i64().unwrap();
    assert!((before - 1..=now_secs() + 1).contains(&used), "{live}");

    // Idle past the TTL: written to disk. Hibernating is not a use.
    let asleep = wait_status(&app, &id, "hibernated").await;
    assert!(asleep["state_bytes"].as_u64().unwrap() > 0, "{asleep}");
    assert_eq!(asleep["last_used_at"], used, "{asleep}");

    let r = exec(&app, &id, "v + 1").await;
    assert_eq!(r["result"], "2", "{r}");
    assert_eq!(session(&app, &id).await["status"], "live");

    // exit() ends the interpreter, and with it what was saved: the session is idle, and its
    // next call starts fresh.
    let r = exec(&app, &id, "exit()").await;
    assert_eq!(r["status"], "completed", "{r}");
    let idle = session(&app, &id).await;
    assert_eq!(idle["status"], "idle", "{idle}");
    assert_eq!(idle["state_bytes"], 0, "{idle}");
    let r = exec(&app, &id, "'v' in globals()").await;
    assert_eq!(r["result"], "False", "{r}");

    // Deleted: gone.
    let (s, _) = app
        .delete(&format!("/v1/code_interpreter/sessions/{id}"))
        .await;
    assert_eq!(s, 200);
    let (s, v) = app
        .get(&format!("/v1/code_interpreter/sessions/{id}"))
        .await;
    assert_eq!(s, 404, "{v}");
    app.stop().await;
}

/// Damage done to a state file, and a word of why it is refused.
struct Damage {
    name: &'static str,
    apply: fn(&Path),
    why: &'static str,
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Past the bound for the session's memory limit (sparse: nothing is written).
fn oversize(path: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(3 << 30).unwrap();
}

fn garbage(path: &Path) {
    std::fs::write(path, b"#!/bin/sh\nrm -rf /\n").unwrap();
}

/// A well-formed state (its digest right) that says it was made by another image.
fn another_image(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let len = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[44..44 + len]).unwrap();
    header["key"] = json!("another-image");
    let header = serde_json::to_vec(&header).unwrap();
    let mut out = bytes[..40].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[44 + len..]);
    let digest = sha2::Sha256::digest(&out[40..]);
    out[8..40].copy_from_slice(&digest);
    std::fs::write(path, out).unwrap();
}

const DAMAGES: &[Damage] = &[
    Damage {
        name: "truncated",
        apply: truncate,
        why: "digest",
    },
    Damage {
        name: "bit-flipped",
        apply: flip_a_bit,
        why: "digest",
    },
    Damage {
        name: "oversized",
        apply: oversize,
        why: "bound",
    },
    Damage {
        name: "garbage",
        apply: garbage,
        why: "not a hibernated interpreter state",
    },
    Damage {
        name: "another-image",
        apply: another_image,
        why: "another image",
    },
];

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_state_file_is_refused_and_the_session_starts_fresh_with_a_notice() {
    let app = app_on(None, false, |s| {
        s.sessions.idle_ttl = Duration::from_secs(1)
    })
    .await;
    for d in DAMAGES {
        let r = exec(&app, d.name, "mine = 'secret'").await;
        assert_eq!(r["status"], "completed", "{r}");
    }
    for d in DAMAGES {
        wait_status(&app, d.name, "hibernated").await;
        (d.apply)(&state_file(&app, d.name));
    }
    for d in DAMAGES {
        let r = exec(&app, d.name, "'mine' in globals()").await;
        assert_eq!(r["status"], "completed", "{}: {r}", d.name);
        assert_eq!(r["result"], "False", "{}: {r}", d.name);
        let notice = r["notice"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no notice in {r}", d.name));
        assert!(
            notice.contains("could not be restored") && notice.contains(d.why),
            "{}: {notice}",
            d.name
        );
        // The refused file was dropped: the next call says nothing more.
        let r = exec(&app, d.name, "1 + 1").await;
        assert_eq!(r["notice"], Value::Null, "{}: {r}", d.name);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_state_is_said_first_in_the_run_steps_logs() {
    let app = app_on(None, false, |s| {
        s.sessions.idle_ttl = Duration::from_secs(1)
    })
    .await;
    let asst = assistant(&app).await;
    let (thread, run) = run_cell(&app, &asst, None, "mine = 'secret'").await;
    let r = wait_run(&app, &thread, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "completed", "{r}");
    wait_status(&app, &thread, "hibernated").await;
    flip_a_bit(&state_file(&app, &thread));

    let (_, run) = run_cell(&app, &asst, Some(&thread), "print('mine' in globals())").await;
    let r = wait_run(&app, &thread, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "completed", "{r}");
    let step = tool_step(&app, &thread, &run).await;
    let logs = step["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"][0]["logs"]
        .as_str()
        .unwrap_or_else(|| panic!("no logs: {step}"));
    assert!(
        logs.starts_with("[The session's saved interpreter state could not be restored")
            && logs.ends_with("]\nFalse\n"),
        "{logs}"
    );
    app.stop().await;
}
