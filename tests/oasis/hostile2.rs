//! Hardening, round 2: weaknesses found by probing a release build as an attacker would, after
//! the 62-case checklist passed. One test per finding (`hostile2_NN_…`, numbered as in the
//! finding list); each checks the safe outcome and, where the case can hurt a session, that the
//! session and a sibling are healthy afterwards. Finding 9 (unfinished headers, connection
//! floods) and the 50 MB body are in `hostile_net.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use oasis::sandbox::{ExecOptions, ManagerConfig, Outcome};
use serde_json::{Value, json};

use crate::durability::Server;
use crate::helpers::{PNG_SIGNATURE, TestApp};
use crate::hostile::{Case, SHORT, SLACK};
use crate::workers::{assistant, run_cell, wait_file, wait_file_within, wait_run};

/// Python that builds a valid 1x1 PNG file in `png`.
const TINY_PNG: &str = r#"
import struct, zlib
def _chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
png = (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 0, 0, 0, 0))
       + _chunk(b'IDAT', zlib.compress(b'\x00\x00')) + _chunk(b'IEND', b''))
"#;

/// Writes 4 MiB chunks to `f` until refused; prints `<label> <bytes written> <refused with
/// ENOSPC>`.
const FILL: &str = r#"
import os, errno
def fill(label, f, most=512 << 20):
    n = 0
    try:
        while n < most:
            f.write(b'x' * (4 << 20)); f.flush(); n += 4 << 20
    except OSError as e:
        print(label, n, e.errno == errno.ENOSPC)
        return
    print(label, n, False)
"#;

fn field(stdout: &str, label: &str) -> (u64, bool) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no {label} line in {stdout:?}"));
    let parts: Vec<&str> = line.split(' ').collect();
    (parts[1].parse().unwrap(), parts[2] == "True")
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_01_files_deleted_while_open_stay_charged_to_the_quota() {
    let c = Case::new().await;
    let quota = c.limits().disk_bytes;
    // Deleted while open, in /mnt/data and in /tmp; replaced by a rename while open.
    let r = c
        .run(
            "ghost",
            &format!(
                "{FILL}\nghost = open('/mnt/data/ghost', 'wb'); os.remove('/mnt/data/ghost')\n\
                 fill('ghost', ghost)"
            ),
        )
        .await;
    let (n, refused) = field(&r.stdout, "ghost");
    assert!(refused && n <= quota, "{r:?}");
    let r = c
        .run(
            "tmp-ghost",
            &format!(
                "{FILL}\nghost = open('/tmp/ghost', 'wb'); os.remove('/tmp/ghost')\nfill('tmp', ghost)"
            ),
        )
        .await;
    let (n, refused) = field(&r.stdout, "tmp");
    assert!(refused && n <= quota, "{r:?}");
    let r = c
        .run(
            "renamed",
            &format!(
                "{FILL}\nold = open('/mnt/data/a', 'wb'); open('/mnt/data/b', 'wb').close()\n\
                 os.rename('/mnt/data/b', '/mnt/data/a')\nfill('renamed', old)"
            ),
        )
        .await;
    let (n, refused) = field(&r.stdout, "renamed");
    assert!(refused && n <= quota, "{r:?}");

    // The space stays charged in later turns while the handle lives, and is free once closed.
    let r = c
        .run(
            "ghost",
            "try:\n    open('/mnt/data/more', 'wb').write(b'y' * (8 << 20)); print('wrote')\n\
             except OSError as e:\n    print('refused', e.errno == errno.ENOSPC)",
        )
        .await;
    assert_eq!(r.stdout, "refused True\n", "{r:?}");
    let r = c
        .run(
            "ghost",
            "ghost.close()\nopen('/mnt/data/more', 'wb').write(b'y' * (8 << 20)); print('wrote')",
        )
        .await;
    assert_eq!(r.stdout, "wrote\n", "{r:?}");
    c.assert_healthy("ghost").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_02_guest_code_cannot_hand_back_images_of_its_own() {
    let c = Case::new().await;
    // From the user's turn: refused, PNG or not.
    let r = c
        .run(
            "door",
            &format!(
                "{TINY_PNG}\nimport _host\nfor frame in [b'I<html>hi</html>', b'I' + png] * 4:\n    \
                 try:\n        _host.call(frame)\n    except Exception as e:\n        pass\nprint('sent')"
            ),
        )
        .await;
    assert_eq!(
        (r.outcome, r.stdout.as_str()),
        (Outcome::Ok, "sent\n"),
        "{r:?}"
    );
    assert!(r.images.is_empty(), "{} images", r.images.len());

    // From a hijacked figure step: only whole PNG files, at most 32 of them.
    let r = c
        .run(
            "door",
            &format!(
                "{TINY_PNG}\nimport _host, _oasis\ndef evil():\n    for frame in [b'I<html>hi</html>', \
                 b'I' + png[:-4], b'I' + png + b'<html>']:\n        try:\n            _host.call(frame)\n        \
                 except Exception:\n            pass\n    for i in range(100):\n        try:\n            \
                 _host.call(b'I' + png)\n        except Exception:\n            pass\n\
                 _oasis.finish = evil\n_host.call(b'F')\nprint('ok')"
            ),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.images.len(), 32, "{r:?}");
    assert!(
        r.images
            .iter()
            .all(|i| i.starts_with(PNG_SIGNATURE) && !i.windows(6).any(|w| w == b"<html>"))
    );
    c.assert_healthy("door").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_02_what_a_session_adds_to_the_file_store_is_bounded() {
    let app = TestApp::spawn_with(None, |s| s.sessions.max_export_bytes = 10_000).await;
    let exec = |code: &'static str| {
        let app = &app;
        async move {
            let (s, v) = app
                .post(
                    "/v1/code_interpreter/execute",
                    json!({"code": code, "session_id": "exporter"}),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    // A changed file becomes a File on every call, until the session's budget is used up.
    let mut stored = 0;
    for _ in 0..5 {
        let v = exec("open('/mnt/data/a.bin', 'wb').write(b'z' * 3000)").await;
        let files = v["files"].as_array().unwrap().len();
        stored += files;
        if files == 0 {
            assert!(
                v["stderr"]
                    .as_str()
                    .unwrap()
                    .contains("was not stored as a File"),
                "{v}"
            );
        }
    }
    assert_eq!(stored, 3, "10 000 bytes hold three 3000-byte files");
    let (_, list) = app.get("/v1/files?limit=100").await;
    let outputs = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["purpose"] == "assistants_output")
        .count();
    assert_eq!(outputs, 3, "{list}");
    // The file itself is still there for the code.
    let v = exec("print(len(open('/mnt/data/a.bin', 'rb').read()))").await;
    assert_eq!(v["stdout"], "3000\n", "{v}");
    // Another session has its own budget.
    let (s, v) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "open('/mnt/data/b.bin', 'wb').write(b'z' * 3000)"}),
        )
        .await;
    assert_eq!((s, v["files"].as_array().unwrap().len()), (200, 1), "{v}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_03_the_figure_step_keeps_the_calls_deadline() {
    let c = Case::new().await;
    for (label, code) in [
        (
            "hijacked",
            "import _host, _oasis\ndef slow():\n    while True:\n        pass\n\
             _oasis.finish = slow\n_host.call(b'F')",
        ),
        (
            "artist",
            "import matplotlib.pyplot as plt\nfrom matplotlib.artist import Artist\n\
             class Loop(Artist):\n    def draw(self, renderer):\n        while True:\n            pass\n\
             fig = plt.figure()\nfig.add_artist(Loop())",
        ),
    ] {
        let started = Instant::now();
        let r = c.run_with(label, code, |l| l.timeout = SHORT).await;
        let took = started.elapsed();
        assert_eq!(r.outcome, Outcome::Timeout, "{label}: {r:?}");
        assert!(r.interpreter_reset, "{label}: {r:?}");
        assert!(took < SHORT + SLACK, "{label}: took {took:?}");
        c.assert_healthy(label).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_04_cancel_interrupts_the_figure_step() {
    let c = Case::new().await;
    let marker = c.data("cancelled").join("in-finish");
    let cancel = tokio_util::sync::CancellationToken::new();
    let opts = ExecOptions {
        limits: Some({
            let mut l = c.limits();
            l.timeout = Duration::from_secs(60);
            l
        }),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let manager = c.s.manager.clone();
    let call = tokio::spawn(async move {
        manager
            .execute(
                "cancelled",
                None,
                "import _host, _oasis\ndef slow():\n    open('/mnt/data/in-finish', 'w').write('1')\n    \
                 while True:\n        pass\n_oasis.finish = slow\n_host.call(b'F')"
                    .to_string(),
                opts,
            )
            .await
    });
    wait_file(&marker).await;
    let at = Instant::now();
    cancel.cancel();
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.outcome, Outcome::Cancelled, "{r:?}");
    assert!(at.elapsed() < SLACK, "cancel took {:?}", at.elapsed());
    c.assert_healthy("cancelled").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_04_cancelling_a_run_stuck_in_the_figure_step_is_prompt() {
    let app = TestApp::spawn().await;
    let asst = assistant(&app).await;
    let (t, run) = run_cell(
        &app,
        &asst,
        None,
        "import _host, _oasis\ndef slow():\n    open('/mnt/data/in-finish', 'w').write('1')\n    \
         while True:\n        pass\n_oasis.finish = slow\n_host.call(b'F')",
    )
    .await;
    wait_file(
        &app.data_dir
            .join("sessions")
            .join(&t)
            .join("data")
            .join("in-finish"),
    )
    .await;
    let (s, r) = app
        .post(&format!("/v1/threads/{t}/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    let r = wait_run(&app, &t, &run, Duration::from_secs(5)).await;
    assert_eq!(r["status"], "cancelled", "{r}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_05_a_delete_during_a_call_is_ordered_with_later_calls() {
    let c = Case::new().await;
    let m = c.s.manager.clone();
    let r = c.run("deleted", "x = 1").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let marker = c.data("deleted").join("a");
    let a = {
        let m = m.clone();
        tokio::spawn(async move {
            let code = "open('/mnt/data/a', 'w').write('a')\nimport time, os\ntime.sleep(2)\n\
                        print(sorted(os.listdir('/mnt/data')), x)";
            m.execute("deleted", None, code.into(), ExecOptions::default())
                .await
        })
    };
    wait_file(&marker).await;
    // The delete waits for call A; poll it once so it queues before call B.
    let mut delete = Box::pin({
        let m = m.clone();
        async move { m.remove("deleted").await }
    });
    assert!(futures::poll!(&mut delete).is_pending());
    let delete = tokio::spawn(delete);
    let b = {
        let m = m.clone();
        tokio::spawn(async move {
            let code = "open('/mnt/data/b', 'w').write('b')\nimport os\n\
                        print(sorted(os.listdir('/mnt/data')), 'x' in globals())";
            m.execute("deleted", None, code.into(), ExecOptions::default())
                .await
        })
    };
    let ra = a.await.unwrap().unwrap();
    assert_eq!(ra.stdout, "['a'] 1\n", "A ran alone: {ra:?}");
    assert!(delete.await.unwrap().unwrap());
    let rb = b.await.unwrap().unwrap();
    // B came after the delete: a new interpreter on empty folders.
    assert_eq!(rb.stdout, "['b'] False\n", "{rb:?}");
    // And the session is whole: its folder is there and takes new files.
    let r = c
        .run(
            "deleted",
            "open('/mnt/data/c', 'w').write('c')\nimport os\nprint(sorted(os.listdir('/mnt/data')))",
        )
        .await;
    assert_eq!(r.stdout, "['b', 'c']\n", "{r:?}");
    c.assert_healthy("deleted").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_06_the_last_value_and_exceptions_obey_the_output_caps() {
    let c = Case::new().await;
    let cap = c.limits().stdout_bytes;
    let r = c.run("big", "'x' * 30_000_000").await;
    let result = r.result.as_deref().unwrap_or_default();
    assert!(
        result.starts_with("'xxx") && result.len() <= cap,
        "{}",
        result.len()
    );
    assert!(
        r.truncated() && r.outcome == Outcome::OutputLimit,
        "{:?}",
        r.outcome
    );

    let r = c.run("big", "raise ValueError('y' * 15_000_000)").await;
    let e = r.error.as_ref().expect("the exception");
    assert_eq!(e.name, "ValueError");
    assert!(e.message.starts_with("yyy") && e.message.len() <= cap);
    assert!(e.traceback.len() <= cap && r.stderr.len() <= cap);
    assert!(r.truncated(), "{:?}", r.outcome);

    // Forged reports are worth what stdout is, no more.
    let r = c
        .run(
            "big",
            "import _host, json\n_host.call(b'R' + json.dumps('z' * 10_000_000).encode())\n\
             _host.call(b'E' + json.dumps({'name': 'N' * 1000, 'message': 'm' * 10_000_000, \
             'traceback': 't' * 10_000_000}).encode())",
        )
        .await;
    assert!(r.result.as_deref().unwrap_or_default().len() <= cap);
    let e = r.error.as_ref().expect("the forged exception");
    assert!(e.name.len() <= 256 && e.message.len() <= cap && e.traceback.len() <= cap);
    assert!(r.truncated());
    c.assert_healthy("big").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_06_a_runs_stored_step_is_bounded() {
    let app = TestApp::spawn().await;
    let asst = assistant(&app).await;
    let (t, run) = run_cell(&app, &asst, None, "'x' * 30_000_000").await;
    let r = wait_run(&app, &t, &run, Duration::from_secs(60)).await;
    assert_eq!(r["status"], "completed", "{r}");
    let (s, steps) = app.get(&format!("/v1/threads/{t}/runs/{run}/steps")).await;
    assert_eq!(s, 200);
    let body = steps.to_string();
    // The image's caps are 1 MiB a stream; the step holds the capped value, not 30 MB.
    assert!(body.len() < 4 << 20, "{} bytes", body.len());
    assert!(body.contains("xxxxxxxx"));
    app.stop().await;
}

/// A copy of the `scientific` manifest with other limits, in a fresh folder for
/// `OASIS_IMAGES_DIR`.
fn images_dir(dir: &Path, timeout_ms: u64, disk_bytes: u64) {
    let text = include_str!("../../sandbox-images/scientific.toml");
    let text = text
        .replace("timeout_ms = 60000", &format!("timeout_ms = {timeout_ms}"))
        .replace(
            "disk_bytes = 536870912",
            &format!("disk_bytes = {disk_bytes}"),
        );
    assert!(text.contains(&format!("timeout_ms = {timeout_ms}")));
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("scientific.toml"), text).unwrap();
}

/// The real binary, sandboxes in process, with an image whose deadline is 3 s and whose disk
/// quota is 1 MiB.
async fn small_image_server(tmp: &Path) -> Server {
    let images = tmp.join("images");
    images_dir(&images, 3000, 1 << 20);
    let config = tmp.join("oasis.toml");
    std::fs::write(&config, "isolation = \"in-process\"\n").unwrap();
    let server =
        Server::start_with(&tmp.join("data"), &config, &[("OASIS_IMAGES_DIR", &images)]).await;
    // The first call waits for the image to load; later ones time only their code.
    let (s, v) = server
        .post("/v1/code_interpreter/execute", json!({"code": "print(1)"}))
        .await;
    assert_eq!((s, v["stdout"].as_str()), (200, Some("1\n")), "{v}");
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_07_timeout_ms_cannot_raise_the_images_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = small_image_server(tmp.path()).await;
    let started = Instant::now();
    let (s, v) = server
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "import time\ntime.sleep(6)\nprint('late')", "timeout_ms": 10000}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "timeout", "{v}");
    assert_eq!(v["stdout"], "", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // Lowering still works.
    let (s, v) = server
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "import time\ntime.sleep(2)\nprint('late')", "timeout_ms": 500}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("timeout")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_lower_input_files_are_charged_to_the_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let server = small_image_server(tmp.path()).await;
    let small = server.upload("small.csv", vec![b'a'; 600 << 10]).await;
    let big = server.upload("big.csv", vec![b'b'; 2 << 20]).await;
    let (s, v) = server
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "import os\nprint(os.listdir('/mnt/data'))", "session_id": "inputs",
                   "file_ids": [big["id"]]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "file_ids", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage quota"),
        "{v}"
    );
    // What fits is copied; a second copy of it would not fit beside the first.
    let (s, v) = server
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "import os\nprint(os.listdir('/mnt/data'))", "session_id": "inputs",
                   "file_ids": [small["id"]]}),
        )
        .await;
    assert_eq!(
        (s, v["stdout"].as_str()),
        (200, Some("['small.csv']\n")),
        "{v}"
    );
    let (s, v) = server
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "import shutil\nshutil.copy('/mnt/data/small.csv', '/mnt/data/copy.csv')",
                   "session_id": "inputs"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["error"]["name"], "OSError", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_08_idle_interpreters_are_evicted_past_the_memory_budget() {
    let c = Case::with(ManagerConfig {
        warm_pool: 0,
        max_live_memory: 800 << 20,
        ..ManagerConfig::default()
    })
    .await;
    let hold = "held = bytearray(450 << 20)\nopen('/mnt/data/f.txt', 'w').write('kept')\nprint(len(held) >> 20)";
    let r = c.run("hog-a", hold).await;
    assert_eq!(r.stdout, "450\n", "{r:?}");
    // The sibling is used after A: A is now the least recently used.
    c.assert_sibling_intact().await;
    let r = c.run("hog-b", hold).await;
    assert_eq!(r.stdout, "450\n", "{r:?}");
    assert!(
        c.s.manager.live_memory() <= 800 << 20,
        "{} MiB live",
        c.s.manager.live_memory() >> 20
    );
    // A's interpreter left memory: hibernated (its variables on disk; see hibernation.rs for
    // `hibernate = false`, where they are dropped), its files kept.
    let a = c.s.manager.info("hog-a").unwrap().unwrap();
    assert!(a.hibernated && !a.live, "{a:?}");
    // Each comes back whole in turn, and the budget holds: the other is put to sleep for it.
    for hog in ["hog-a", "hog-b"] {
        let r = c
            .run(
                hog,
                "print('held' in globals(), open('/mnt/data/f.txt').read())",
            )
            .await;
        assert_eq!(r.stdout, "True kept\n", "{hog}: {r:?}");
        assert!(
            c.s.manager.live_memory() <= 800 << 20,
            "{} MiB live",
            c.s.manager.live_memory() >> 20
        );
    }
    c.assert_sibling_intact().await;
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib << 10
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_10_a_stream_nobody_reads_does_not_grow_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("oasis.toml");
    std::fs::write(&config, "").unwrap();
    let server = Server::start_with(&tmp.path().join("data"), &config, &[]).await;
    let pid = server.child.id().unwrap();
    // Warm up: the first call starts the worker's interpreter and the server's pools.
    let (s, v) = server
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "session_id": "slow"}),
        )
        .await;
    assert_eq!((s, v["stdout"].as_str()), (200, Some("1\n")), "{v}");
    let before = rss(pid);

    // One byte a write, a million writes, to a client that reads nothing until the call is over.
    let n = 1_000_000;
    let code = format!(
        "import sys\nfor i in range({n}):\n    sys.stdout.write('x'); sys.stdout.flush()\n\
         open('/mnt/data/done', 'w').write('1')"
    );
    let resp = server
        .client
        .post(format!("{}/v1/code_interpreter/execute", server.base))
        .json(&json!({"session_id": "slow", "stream": true, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_file_within(
        &tmp.path().join("data/sessions/slow/data/done"),
        Duration::from_secs(300),
    )
    .await;
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < 64 << 20, "the server grew by {} MiB", grown >> 20);

    // The reader still gets everything, batched into far fewer events than writes.
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends")
        .unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.contains("event: stdout"))
        .collect();
    let stdout: String = events
        .iter()
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(stdout.len(), n, "all output arrives");
    assert!(stdout.chars().all(|c| c == 'x'));
    assert!(
        events.len() < n / 2,
        "{} events for {n} writes",
        events.len()
    );
    assert!(text.contains("event: result") && text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile2_lower_output_file_names_show_control_and_bidi_characters() {
    let app = TestApp::spawn().await;
    let (s, v) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "open('/mnt/data/invoice\\u202efdp.exe', 'w').write('1')\n\
                            open('/mnt/data/red\\x1b[31m.txt', 'w').write('2')"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut names = vec![];
    for f in v["files"].as_array().unwrap() {
        let id = f["file_id"].as_str().unwrap();
        let (_, file) = app.get(&format!("/v1/files/{id}")).await;
        names.push(file["filename"].as_str().unwrap().to_string());
    }
    names.sort();
    assert_eq!(names, ["invoice\\u{202e}fdp.exe", "red\\u{1b}[31m.txt"]);
    app.stop().await;
}
