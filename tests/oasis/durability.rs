//! Durability: the real `oasis` binary is killed with SIGKILL during runs and an upload, then
//! restarted on the same data dir.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::workers::wait_file;

pub struct Server {
    pub child: tokio::process::Child,
    pub base: String,
    pub client: reqwest::Client,
    /// The last lines the server wrote on stderr, for failure messages. Its stderr is read
    /// all along, so the server never blocks on a full pipe.
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// What `oasis serve` prints on stderr once it listens, before the address.
const LISTENING: &str = "oasis: listening on http://";

/// How many of the server's last stderr lines a [`Server`] keeps.
const TAIL: usize = 200;

impl Server {
    async fn start(data: &Path, config: &Path) -> Server {
        Server::start_with(data, config, &[]).await
    }

    /// The real binary on `data`, with `config` and these extra environment variables (the
    /// only `OASIS_*` ones it gets, besides where the runtime is: see
    /// [`crate::helpers::foreign_oasis_vars`]). It listens on a port of its choosing and says
    /// which on stderr.
    pub async fn start_with(data: &Path, config: &Path, env: &[(&str, &Path)]) -> Server {
        Server::launch(data, config, env, None).await
    }

    /// [`Server::start_with`] with environment values given as strings (URLs, names).
    pub async fn start_with_vars(data: &Path, config: &Path, env: &[(&str, &str)]) -> Server {
        Server::launch(data, config, env, None).await
    }

    /// [`Server::start_with`] under `ulimit -n nofile`.
    pub async fn start_limited(
        data: &Path,
        config: &Path,
        env: &[(&str, &Path)],
        nofile: u32,
    ) -> Server {
        Server::launch(data, config, env, Some(nofile)).await
    }

    async fn launch<V: AsRef<std::ffi::OsStr>>(
        data: &Path,
        config: &Path,
        env: &[(&str, V)],
        nofile: Option<u32>,
    ) -> Server {
        let bin = env!("CARGO_BIN_EXE_oasis");
        let mut cmd = match nofile {
            None => tokio::process::Command::new(bin),
            Some(n) => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c")
                    .arg(format!(r#"ulimit -n {n} && exec "$0" "$@""#))
                    .arg(bin);
                c
            }
        };
        cmd.arg("--data-dir")
            .arg(data)
            .arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(config)
            .arg("--cache-dir")
            .arg(crate::helpers::data_dir());
        let sets: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        for k in crate::helpers::foreign_oasis_vars(&sets) {
            cmd.env_remove(k);
        }
        // The S3 client reads every `AWS_*` variable: only the ones a test sets reach it.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") && !sets.contains(&&*k.to_string_lossy()) {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting oasis");
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(read_stderr(
            child.stderr.take().expect("stderr is piped"),
            stderr.clone(),
            tx,
        ));
        // A cold cache means provisioning and compiling the runtime first (minutes).
        let addr = match tokio::time::timeout(Duration::from_secs(600), rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => panic!(
                "oasis ended before listening ({:?}):\n{}",
                child.wait().await,
                joined(&stderr)
            ),
            Err(_) => panic!("oasis did not listen within 600 s:\n{}", joined(&stderr)),
        };
        let s = Server {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stderr,
        };
        // Bound means accepting: this request waits in the backlog until the server serves.
        let health = s
            .client
            .get(format!("{}/health", s.base))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map(|r| r.status());
        assert!(
            matches!(health, Ok(st) if st == 200),
            "oasis at {} does not answer /health: {health:?}\n{}",
            s.base,
            s.stderr_tail()
        );
        s
    }

    /// The server's last stderr lines.
    pub fn stderr_tail(&self) -> String {
        joined(&self.stderr)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn upload(&self, name: &str, bytes: Vec<u8>) -> Value {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "assistants")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
            );
        let r = self
            .client
            .post(format!("{}/v1/files", self.base))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn wait_run(&self, thread: &str, run: &str, want: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (s, r) = self.get(&format!("/v1/threads/{thread}/runs/{run}")).await;
            assert_eq!(s, 200, "{r}");
            if want.contains(&r["status"].as_str().unwrap_or("")) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "run stuck: {r}\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL, no goodbye.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM (a graceful shutdown), then wait up to `bound` for the process to exit; whether
    /// it exited by itself.
    pub async fn terminate(mut self, bound: Duration) -> bool {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => status.unwrap().success(),
            Err(_) => {
                self.child.start_kill().unwrap();
                false
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_runs_and_an_upload_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("oasis.toml");
    // One run worker: a second run stays queued behind the first.
    std::fs::write(&config, "run_workers = 1\nwarm_pool = 0\n").unwrap();
    let s = Server::start(&data, &config).await;

    let (_, a) = s
        .post(
            "/v1/assistants",
            json!({"model": "gpt-4o", "tools": [{"type": "code_interpreter"}]}),
        )
        .await;
    let a = a["id"].as_str().unwrap().to_string();
    let mut files = vec![];
    for i in 0..3 {
        let f = s
            .upload(&format!("f{i}.csv"), format!("x\n{i}\n").into_bytes())
            .await;
        files.push(f["id"].as_str().unwrap().to_string());
    }
    // A thread with acknowledged messages and a finished run.
    let (_, t0) = s
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "```python\nprint(2 + 2)\n```"}]}),
        )
        .await;
    let t0 = t0["id"].as_str().unwrap().to_string();
    let (_, r0) = s
        .post(
            &format!("/v1/threads/{t0}/runs"),
            json!({"assistant_id": a}),
        )
        .await;
    let r0 = r0["id"].as_str().unwrap().to_string();
    s.wait_run(&t0, &r0, &["completed"]).await;
    let mut acked_messages = vec![];
    for i in 0..5 {
        let (st, m) = s
            .post(
                &format!("/v1/threads/{t0}/messages"),
                json!({"role": "user", "content": format!("note {i}")}),
            )
            .await;
        assert_eq!(st, 200);
        acked_messages.push(m["id"].as_str().unwrap().to_string());
    }
    // A run in flight (its cell says so in a file, then sleeps) and one queued behind it.
    let (_, t1) = s
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content":
                "```python\nopen('/mnt/data/started', 'w').write('1')\nimport time\ntime.sleep(60)\n```"}]}),
        )
        .await;
    let t1 = t1["id"].as_str().unwrap().to_string();
    let (_, r1) = s
        .post(
            &format!("/v1/threads/{t1}/runs"),
            json!({"assistant_id": a}),
        )
        .await;
    let r1 = r1["id"].as_str().unwrap().to_string();
    s.wait_run(&t1, &r1, &["in_progress"]).await;
    wait_file(&data.join("sessions").join(&t1).join("data").join("started")).await;
    let (_, t2) = s
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "```python\nprint(6 * 7)\n```"}]}),
        )
        .await;
    let t2 = t2["id"].as_str().unwrap().to_string();
    let (_, r2) = s
        .post(
            &format!("/v1/threads/{t2}/runs"),
            json!({"assistant_id": a}),
        )
        .await;
    let r2 = r2["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.get(&format!("/v1/threads/{t2}/runs/{r2}")).await.1["status"],
        "queued"
    );
    // An upload whose body never finishes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(vec![b'z'; 64 * 1024])).await.unwrap();
    let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }));
    let form = reqwest::multipart::Form::new()
        .text("purpose", "assistants")
        .part(
            "file",
            reqwest::multipart::Part::stream(body).file_name("partial.bin"),
        );
    let upload = tokio::spawn(
        s.client
            .post(format!("{}/v1/files", s.base))
            .multipart(form)
            .send(),
    );
    // The server has begun writing it: a temporary file with bytes in the files folder.
    let files_dir = data.join("files");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&files_dir).unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with(".tmp")
            && e.metadata().is_ok_and(|m| m.len() > 0)
    }) {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the files folder"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    s.kill().await;
    drop(tx);
    let _ = upload.await;

    let s = Server::start(&data, &config).await;
    // Everything acknowledged is there.
    for f in &files {
        let (st, _) = s.get(&format!("/v1/files/{f}")).await;
        assert_eq!(st, 200, "file {f} lost");
    }
    let (_, l) = s
        .get(&format!("/v1/threads/{t0}/messages?order=asc&limit=100"))
        .await;
    let ids: Vec<&str> = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for m in &acked_messages {
        assert_eq!(ids.iter().filter(|x| *x == m).count(), 1, "message {m}");
    }
    assert_eq!(ids.len(), 2 + acked_messages.len());
    assert_eq!(
        s.get(&format!("/v1/threads/{t0}/runs/{r0}")).await.1["status"],
        "completed"
    );
    // The run in flight failed with a reason; the queued one ran.
    let failed = s.wait_run(&t1, &r1, &["failed"]).await;
    assert_eq!(failed["last_error"]["code"], "server_error");
    assert!(
        failed["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("restarted")
    );
    let done = s.wait_run(&t2, &r2, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    // No partial file: no record, no blob, no temp file.
    let (_, list) = s.get("/v1/files?limit=100").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"partial.bin"), "{names:?}");
    let known: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    for e in std::fs::read_dir(data.join("files")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(known.contains(&name), "stray blob {name}");
    }
    s.kill().await;
}

fn joined(lines: &Mutex<VecDeque<String>>) -> String {
    let lines = lines.lock().unwrap();
    lines
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read the server's stderr to its end: send the address of the listening line on `listening`,
/// keep the last [`TAIL`] lines in `tail`.
async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    listening: tokio::sync::oneshot::Sender<String>,
) {
    let mut listening = Some(listening);
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some(addr) = line.strip_prefix(LISTENING)
            && let Some(tx) = listening.take()
        {
            let _ = tx.send(addr.to_string());
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
