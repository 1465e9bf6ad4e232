use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use oasis::sandbox::{
    ExecOptions, ExecResult, Limits, ManagerConfig, Progress, Sandbox, SandboxError, SessionManager,
};

/// Where the runtime and compiled modules are cached across test runs.
pub fn data_dir() -> PathBuf {
    std::env::var_os("OASIS_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oasis-data"))
}

/// `OASIS_*` variables of this process that the binaries started by tests still get: where
/// the runtime's files are, which the harness honours for its own shared [`sandbox`] too.
const HANDED_ON: &[&str] = &["OASIS_RUNTIME_DIR"];

/// The `OASIS_*` variables of this process's environment that a binary started by a test must
/// not inherit: all but [`HANDED_ON`] and the ones the test sets itself (`sets`). Remove each
/// from the command (`env_remove`), so that a developer's exported settings (API keys, an
/// upstream, an address, a log filter …) cannot change what a test sees. Only the child's
/// environment changes: tests run in parallel threads of one process.
pub fn foreign_oasis_vars(sets: &[&str]) -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            let name = k.to_string_lossy();
            name.starts_with("OASIS_") && !HANDED_ON.contains(&&*name) && !sets.contains(&&*name)
        })
        .collect()
}

/// The `oasis` binary with no `OASIS_*` variable of the developer's environment but those in
/// `sets` (which the caller then sets) and the ones the harness hands on.
pub fn oasis_binary(sets: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_oasis"));
    for k in foreign_oasis_vars(sets) {
        c.env_remove(k);
    }
    c
}

/// The sandbox every test shares (one engine, images compiled once).
pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let sb = Sandbox::open(&data_dir(), Progress::stderr()).expect(
                "the runtime can be provisioned (python3 + pip + network, or OASIS_RUNTIME_DIR)",
            );
            sb.image("scientific")
                .expect("the scientific image compiles");
            Arc::new(sb)
        })
        .clone()
}

/// A session manager over a fresh temporary root.
pub struct Sessions {
    pub manager: SessionManager,
    pub _root: tempfile::TempDir,
}

impl Sessions {
    /// The scientific image's limits (a call's without options).
    pub fn image_limits(&self) -> Limits {
        self.manager
            .sandbox()
            .image("scientific")
            .unwrap()
            .image
            .limits()
    }

    /// `code` in session `id` with `limits`.
    pub async fn execute_limited(
        &self,
        id: &str,
        code: &str,
        limits: Limits,
    ) -> Result<ExecResult, SandboxError> {
        let opts = ExecOptions {
            limits: Some(limits),
            ..Default::default()
        };
        self.manager.execute(id, None, code.to_string(), opts).await
    }
}

pub async fn sessions(config: ManagerConfig) -> Sessions {
    let sb = tokio::task::spawn_blocking(sandbox).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    Sessions {
        manager: SessionManager::new(sb, root.path().join("sessions"), config),
        _root: root,
    }
}

/// `code` in session `id` with the default options.
pub async fn run(s: &Sessions, id: &str, code: &str) -> ExecResult {
    s.manager
        .execute(id, None, code.to_string(), ExecOptions::default())
        .await
        .unwrap()
}

/// `code` in session `id` with the image's limits, changed by `f`.
pub async fn run_with(
    s: &Sessions,
    id: &str,
    code: &str,
    f: impl FnOnce(&mut Limits),
) -> ExecResult {
    let mut limits = s.image_limits();
    f(&mut limits);
    s.execute_limited(id, code, limits).await.unwrap()
}

pub const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// An Oasis server on a free port with its own data dir (runtime cache shared).
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(None, |_| {}).await
    }

    /// Spawn on `dir` (a new temp dir if `None`), after `tweak` adjusts the settings.
    pub async fn spawn_with(
        dir: Option<PathBuf>,
        tweak: impl FnOnce(&mut oasis::server::Settings),
    ) -> TestApp {
        let (tmp, data_dir) = match dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let args = oasis::server::ServeArgs {
            config: None,
            knobs: oasis::server::Knobs {
                cache_dir: Some(self::data_dir()),
                ..Default::default()
            },
        };
        let mut settings = oasis::server::Settings::resolve(&data_dir, &args).unwrap();
        // `args` is built here, not parsed (no flag comes from the environment), but `resolve`
        // also reads `OASIS_API_KEYS` and the `OASIS_UPSTREAM_*` variables: a developer's
        // exported ones must not reach the tests. A test that wants them sets them in `tweak`.
        settings.api.keys = oasis::tenancy::Keys::new(None, None).unwrap();
        settings.upstream = None;
        settings.embeddings = oasis::vectors::EmbeddingsConfig::BuiltIn;
        // Documents are read by the real binary's `extract-worker`, as in production (this test
        // binary is not `oasis`).
        settings.extract_exe = Some(env!("CARGO_BIN_EXE_oasis").into());
        // Sandboxes run in this process (sharing one Sandbox) unless a test opts into workers.
        settings.isolation = oasis::server::Isolation::InProcess;
        tweak(&mut settings);
        let sb = tokio::task::spawn_blocking(sandbox).await.unwrap();
        let s2 = settings.clone();
        let state = tokio::task::spawn_blocking(move || oasis::server::build_state(&s2, Some(sb)))
            .await
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            oasis::server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestApp {
            base,
            client: reqwest::Client::new(),
            data_dir,
            _dir: tmp,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stop the server and wait for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `GET path`'s body as text (no key), whatever its status.
    pub async fn text(&self, path: &str) -> String {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("OpenAI-Beta", "assistants=v2")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.delete(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `POST path` with a multipart `form`.
    pub async fn post_form(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `POST /v1/files` of `bytes` named `name`.
    pub async fn upload(
        &self,
        name: &str,
        bytes: Vec<u8>,
        purpose: &str,
    ) -> (u16, serde_json::Value) {
        self.upload_part(name, reqwest::multipart::Part::bytes(bytes), purpose)
            .await
    }

    /// `POST /v1/files` of the file at `path` named `name`, streamed from disk.
    pub async fn upload_path(
        &self,
        name: &str,
        path: &std::path::Path,
        purpose: &str,
    ) -> (u16, serde_json::Value) {
        let len = std::fs::metadata(path).unwrap().len();
        let file = tokio::fs::File::open(path).await.unwrap();
        let part = reqwest::multipart::Part::stream_with_length(file, len);
        self.upload_part(name, part, purpose).await
    }

    async fn upload_part(
        &self,
        name: &str,
        part: reqwest::multipart::Part,
        purpose: &str,
    ) -> (u16, serde_json::Value) {
        let form = reqwest::multipart::Form::new()
            .text("purpose", purpose.to_string())
            .part("file", part.file_name(name.to_string()));
        self.post_form("/v1/files", form).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The two servers the SDK suites run against: one with the built-in model, one whose
/// upstream is a scripted Chat Completions server to be served on the returned socket (bound
/// and listening here, so its port is known before the Oasis that calls it starts).
pub async fn sdk_servers() -> (TestApp, TestApp, std::net::TcpListener) {
    let app = TestApp::spawn().await;
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let upstream_app = TestApp::spawn_with(None, |s| {
        let mut cfg =
            oasis::backend::upstream::UpstreamConfig::new(format!("http://127.0.0.1:{port}/v1"));
        cfg.initial_backoff = std::time::Duration::from_millis(50);
        s.upstream = Some(cfg);
    })
    .await;
    (app, upstream_app, socket)
}

/// What a finished child process printed: its stdout, then its stderr.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An OpenAI error body's parts.
pub fn err_parts(v: &serde_json::Value) -> (String, String, Option<String>) {
    let e = &v["error"];
    assert!(e.is_object(), "not an OpenAI error body: {v}");
    assert!(e.get("code").is_some() && e.get("param").is_some(), "{v}");
    (
        e["message"].as_str().unwrap_or_default().to_string(),
        e["type"].as_str().unwrap_or_default().to_string(),
        e["param"].as_str().map(str::to_string),
    )
}

/// A vector store's file, as `GET /v1/vector_stores/{vs}/files/{file}` answers.
pub async fn vector_store_file(app: &TestApp, vs: &str, file: &str) -> (u16, serde_json::Value) {
    app.get(&format!("/v1/vector_stores/{vs}/files/{file}"))
        .await
}

/// Poll `path` until the object there has left `in_progress`, every `every`; `waiting` sees
/// each answer still `in_progress` first. The answer that left it.
pub async fn until_settled(
    app: &TestApp,
    path: &str,
    every: Duration,
    mut waiting: impl FnMut(&serde_json::Value),
) -> serde_json::Value {
    loop {
        let (s, v) = app.get(path).await;
        assert_eq!(s, 200, "{v}");
        if v["status"] != "in_progress" {
            return v;
        }
        waiting(&v);
        tokio::time::sleep(every).await;
    }
}

/// Poll a store's file until it has left `in_progress` (what the SDK's `poll` does), at most
/// `bound`.
pub async fn settled(app: &TestApp, vs: &str, file: &str, bound: Duration) -> serde_json::Value {
    let start = Instant::now();
    let path = format!("/v1/vector_stores/{vs}/files/{file}");
    until_settled(app, &path, Duration::from_millis(50), |f| {
        assert!(
            start.elapsed() < bound,
            "still in_progress after {:?}: {f}",
            start.elapsed()
        );
    })
    .await
}

/// `block` `times` over, deflated in zlib's framing (its checksum left zero: PDF readers
/// inflate anyway). Written a block at a time, so the whole is never held.
pub fn zlib_of_repeated(block: &[u8], times: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    w.start_file("x", opts).unwrap();
    for _ in 0..times {
        w.write_all(block).unwrap();
    }
    let mut archive = zip::ZipArchive::new(w.finish().unwrap()).unwrap();
    let mut out = vec![0x78, 0x9C];
    archive
        .by_index_raw(0)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out.extend([0, 0, 0, 0]);
    out
}

/// `target/py-venv` with the SDK suites' pinned requirements (made once, however many tests
/// ask at once): its python.
pub fn python_venv() -> PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MADE.lock().unwrap_or_else(|p| p.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("py-venv");
    let python = venv.join("bin").join("python");
    let reqs = root.join("tests/python/requirements.txt");
    let stamp = venv.join("requirements.stamp");
    let wanted = std::fs::read_to_string(&reqs).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the SDK suite")
            .success();
        assert!(ok, "python3 -m venv failed");
        let ok = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs)
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install -r tests/python/requirements.txt failed");
        std::fs::write(&stamp, wanted).unwrap();
    }
    python
}

/// Let pytest's scripted upstream serve on `socket` (bound here): the child keeps it across
/// exec under the same number, named by `SCRIPTED_UPSTREAM_FD`.
pub fn hand_down_upstream_socket(
    pytest: &mut tokio::process::Command,
    socket: &std::net::TcpListener,
) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    pytest.env("SCRIPTED_UPSTREAM_FD", fd.to_string());
    // SAFETY: runs in the child between fork and exec, and only calls fcntl(2), which is
    // async-signal-safe. It lets the child (alone: the flag is per process after the fork)
    // keep the listening socket across exec, under the same number.
    unsafe {
        pytest.pre_exec(move || {
            use nix::fcntl::{FcntlArg, FdFlag, fcntl};
            let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}
