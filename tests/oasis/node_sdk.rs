//! The Node suite in `tests/node` (the official `openai` Node SDK, pinned in its package.json
//! and package-lock.json, run with `node --test`) against two live servers: one serving runs
//! with the built-in model, one whose upstream is the scripted Chat Completions server of
//! `tests/python/scripted_upstream.py`, started here. The SDK is installed with `npm ci` into
//! `tests/node/node_modules` on first run (again whenever package-lock.json changes), so the
//! first run needs Node.js 20+, npm and access to the npm registry.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn the_official_node_sdk_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("tests/node");
    require_node();
    npm_ci_once(&suite);

    let (app, upstream_app, upstream_socket) = crate::helpers::sdk_servers().await;
    let _upstream = ScriptedUpstream::start(root, upstream_socket).await;

    let started = Instant::now();
    let out = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .current_dir(&suite)
        .env("OASIS_BASE_URL", &app.base)
        .env("OASIS_UPSTREAM_OASIS_URL", &upstream_app.base)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("could not start `node --test`");
    let text = crate::helpers::printed(&out);
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "the Node SDK suite failed (after {took:.1} s):\n{text}"
    );
    println!("{text}\n(node --test took {took:.1} s)");
}

/// Node.js 20 or newer on PATH, or a failure saying so (never a skip).
pub(crate) fn require_node() {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("the Node SDK suite needs Node.js 20+ (`node` on PATH), and npm: {e}")
        });
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        out.status.success() && major >= 20,
        "the Node SDK suite needs Node.js 20+, `node --version` says {version:?}"
    );
}

/// `npm ci` in `suite` unless node_modules was installed from this very package-lock.json.
pub(crate) fn npm_ci_once(suite: &Path) {
    let lock = std::fs::read_to_string(suite.join("package-lock.json")).unwrap();
    let stamp = suite.join("node_modules").join(".oasis-package-lock.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(lock.as_str()) {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(suite)
        .status()
        .unwrap_or_else(|e| panic!("the Node SDK suite needs npm (to install `openai`): {e}"));
    assert!(status.success(), "`npm ci` in tests/node failed");
    std::fs::write(&stamp, lock).unwrap();
}

/// `tests/python/scripted_upstream.py` serving on `socket` in its own process, killed on drop.
/// It uses only the standard library, so any python3 runs it.
struct ScriptedUpstream(Child);

impl ScriptedUpstream {
    async fn start(root: &Path, socket: std::net::TcpListener) -> ScriptedUpstream {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let port = socket.local_addr().unwrap().port();
        let fd = socket.as_raw_fd();
        let dir = root.join("tests/python");
        let mut cmd = Command::new("python3");
        cmd.arg("-B")
            .arg(dir.join("scripted_upstream.py"))
            .current_dir(&dir)
            .env("SCRIPTED_UPSTREAM_FD", fd.to_string())
            .env_remove("SCRIPTED_UPSTREAM_PORT")
            .stdout(Stdio::null());
        // SAFETY: runs in the child between fork and exec, and only calls fcntl(2), which is
        // async-signal-safe. It lets the child (alone: the flag is per process after the fork)
        // keep the listening socket across exec, under the same number.
        unsafe {
            cmd.pre_exec(move || {
                use nix::fcntl::{FcntlArg, FdFlag, fcntl};
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("python3 is needed to run the scripted upstream: {e}"));
        drop(socket); // the child has its own copy
        let mut upstream = ScriptedUpstream(child);
        // Serving, not just listening: its model list answers.
        let url = format!("http://127.0.0.1:{port}/v1/models");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answered = http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return upstream;
            }
            if let Some(status) = upstream.0.try_wait().unwrap() {
                panic!("the scripted upstream exited before serving on port {port}: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the scripted upstream does not answer on port {port} after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
