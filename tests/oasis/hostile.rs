//! The hostile-input checklist (`sandbox-peers.md` §2.4), one test per case, named after its
//! number. Each test asserts the safe outcome the checklist names; where a capability does not
//! exist under WASI, it proves the capability is absent. After each case the host must still
//! be healthy: the same session (or a fresh one, where the case reset it) still prints, and a
//! sibling session kept its variables and files.
//!
//! Case 60 (killing the worker process mid-run) lives with the worker-process tests.
//!
//! Calls use short limits (a 1 s deadline where the call is meant to time out, 5 s where it
//! is not; small output caps) so the file stays fast.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oasis::sandbox::{
    ExecOptions, ExecResult, Limits, ManagerConfig, Outcome, OutputTap, SandboxError,
};
use serde_json::json;

use crate::helpers::{Sessions, TestApp, data_dir, sessions};

/// Deadline of a call that is not meant to time out.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of a call that is meant to time out.
pub const SHORT: Duration = Duration::from_secs(1);
/// Generous bound on how long past its deadline a call may take to come back: it proves
/// "prompt, not hung", it times nothing.
pub const SLACK: Duration = Duration::from_secs(3);
/// The session that must keep its state whatever its neighbours do.
pub const SIBLING: &str = "sibling";

/// Python shared by the probing cases: `probe(label, f)` prints `denied <label> <error>` when
/// `f()` raises one of `allowed` (OSError and ValueError by default), else `ALLOWED <label>`.
const PROBE: &str = r#"
import os, sys, errno
def probe(label, f, allowed=(OSError, ValueError)):
    try:
        v = f()
    except allowed as e:
        print('denied', label, type(e).__name__, getattr(e, 'errno', None))
    else:
        print('ALLOWED', label, repr(v)[:100])
"#;

/// A session manager (warm pool off: every test starts its own interpreters), with a sibling
/// session that holds state from before the case ran.
pub struct Case {
    pub s: Sessions,
}

impl Case {
    pub async fn new() -> Case {
        Case::with(ManagerConfig {
            warm_pool: 0,
            ..ManagerConfig::default()
        })
        .await
    }

    pub async fn with(config: ManagerConfig) -> Case {
        let c = Case {
            s: sessions(config).await,
        };
        let r = c
            .run(
                SIBLING,
                "kept = 'sibling state'\nopen('/mnt/data/kept.txt', 'w').write('sibling file')",
            )
            .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        c
    }

    /// The image's limits with a short deadline and small output caps.
    pub fn limits(&self) -> Limits {
        let mut l = self.s.image_limits();
        l.timeout = TIMEOUT;
        l.stdout_bytes = 64 << 10;
        l.stderr_bytes = 64 << 10;
        l.disk_bytes = 64 << 20;
        l.disk_files = 500;
        l
    }

    pub async fn try_run(
        &self,
        id: &str,
        code: &str,
        f: impl FnOnce(&mut Limits),
    ) -> Result<ExecResult, SandboxError> {
        let mut limits = self.limits();
        f(&mut limits);
        self.s.execute_limited(id, code, limits).await
    }

    pub async fn run(&self, id: &str, code: &str) -> ExecResult {
        self.run_with(id, code, |_| {}).await
    }

    pub async fn run_with(&self, id: &str, code: &str, f: impl FnOnce(&mut Limits)) -> ExecResult {
        self.try_run(id, code, f).await.unwrap()
    }

    /// Run probing code (see [`PROBE`]) and check that exactly `n` probes were denied.
    pub async fn probes(&self, id: &str, code: &str, n: usize) -> ExecResult {
        let r = self.run(id, &format!("{PROBE}\n{code}")).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert!(!r.stdout.contains("ALLOWED"), "{}", r.stdout);
        assert_eq!(
            r.stdout
                .lines()
                .filter(|l| l.starts_with("denied "))
                .count(),
            n,
            "{}",
            r.stdout
        );
        r
    }

    /// `id` still runs code and prints; the sibling kept its variables and its files.
    pub async fn assert_healthy(&self, id: &str) {
        let r = self.run(id, "print(1)").await;
        assert_eq!(
            (r.outcome, r.stdout.as_str()),
            (Outcome::Ok, "1\n"),
            "{r:?}"
        );
        self.assert_sibling_intact().await;
    }

    pub async fn assert_sibling_intact(&self) {
        let r = self
            .run(SIBLING, "print(kept, open('/mnt/data/kept.txt').read())")
            .await;
        assert_eq!(r.stdout, "sibling state sibling file\n", "{r:?}");
    }

    /// Host folder behind `/mnt/data` of `id` (created).
    pub fn data(&self, id: &str) -> PathBuf {
        let d = self.s.manager.data_dir(id).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Put a secret file right next to `id`'s mounts (in its session folder) and in a folder
    /// outside every session; returns the secret and the outside folder.
    pub fn plant_canary(&self, id: &str) -> (String, PathBuf) {
        let secret = format!("CANARY-{}", std::process::id());
        let session_dir = self.data(id).parent().unwrap().to_path_buf();
        std::fs::write(session_dir.join("secret.txt"), &secret).unwrap();
        let outside = self.s._root.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), &secret).unwrap();
        (secret, outside)
    }
}

fn assert_no_canary(r: &ExecResult, secret: &str) {
    assert!(
        !r.stdout.contains(secret) && !r.stderr.contains(secret),
        "host content leaked: {r:?}"
    );
}

/// The shared, provisioned runtime folder (read here, never written).
fn runtime_dir() -> PathBuf {
    std::fs::read_dir(data_dir().join("runtime"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("READY").is_file())
        .expect("a provisioned runtime")
}

/// Size, modification time, link count and mode: enough to see any write.
fn fingerprint(p: &Path) -> (u64, std::time::SystemTime, u64, u32) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).unwrap();
    (md.len(), md.modified().unwrap(), md.nlink(), md.mode())
}

/// Every path under `dir`, links not followed.
fn tree(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .collect()
}

fn assert_prompt(took: Duration, deadline: Duration) {
    assert!(took < deadline + SLACK, "took {took:?}");
}

// ---------------------------------------------------------------------------------------------
// File system

#[tokio::test(flavor = "multi_thread")]
async fn hostile_01_host_files_are_not_there() {
    let c = Case::new().await;
    let (secret, outside) = c.plant_canary("h01");
    let r = c
        .probes(
            "h01",
            &format!(
                "for p in ['/etc/passwd', '/proc/self/environ', '/root/.ssh/id_rsa', {:?}]:\n    \
                 probe(p, lambda: open(p).read())",
                outside.join("secret.txt").display().to_string()
            ),
            4,
        )
        .await;
    assert!(
        r.stdout
            .lines()
            .all(|l| l.ends_with(" 44") || l.ends_with(" 63")),
        "not ENOENT/EPERM: {}",
        r.stdout
    );
    assert_no_canary(&r, &secret);
    c.assert_healthy("h01").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_02_dot_dot_paths_stay_inside_the_mount() {
    let c = Case::new().await;
    let (secret, _) = c.plant_canary("h02");
    let session_dir = c.data("h02").parent().unwrap().to_path_buf();
    let r = c
        .probes(
            "h02",
            r#"
os.makedirs('/mnt/data/sub', exist_ok=True)
open('/mnt/data/inside.txt', 'w').write('inside')
for p in ['/mnt/data/../secret.txt', '/mnt/data/../../secret.txt', '/mnt/data///..//secret.txt',
          '/mnt/data/./../secret.txt', './../secret.txt', '../secret.txt', '/mnt/data/sub/../../secret.txt',
          '/tmp/../mnt/data/../secret.txt', '/mnt/data/../data/../secret.txt']:
    probe(p, lambda: open(p).read())
probe('write up', lambda: open('/mnt/data/../escaped.txt', 'w').write('x'))
probe('mkdir up', lambda: os.mkdir('/mnt/data/../escaped-dir'))
print('inside:', open('/mnt/data/sub/../inside.txt').read())
"#,
            11,
        )
        .await;
    assert!(r.stdout.ends_with("inside: inside\n"), "{}", r.stdout);
    assert_no_canary(&r, &secret);
    assert!(!session_dir.join("escaped.txt").exists());
    assert!(!session_dir.join("escaped-dir").exists());
    c.assert_healthy("h02").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_03_absolute_symlinks_are_refused() {
    let c = Case::new().await;
    let (secret, outside) = c.plant_canary("h03");
    let host = outside.join("secret.txt").display().to_string();
    let r = c
        .probes(
            "h03",
            &format!(
                "probe('to passwd', lambda: os.symlink('/etc/passwd', '/mnt/data/l'))\n\
                 probe('to host file', lambda: os.symlink({host:?}, '/mnt/data/l2'))\n\
                 probe('to stdlib', lambda: os.symlink('/usr/local/lib/python315.zip', '/mnt/data/l3'))\n\
                 probe('read l', lambda: open('/mnt/data/l').read())\n\
                 probe('read l2', lambda: open('/mnt/data/l2').read())\n\
                 print('links left:', [n for n in os.listdir('/mnt/data') if os.path.islink('/mnt/data/' + n)])"
            ),
            5,
        )
        .await;
    assert!(r.stdout.ends_with("links left: []\n"), "{}", r.stdout);
    assert_no_canary(&r, &secret);
    assert!(
        tree(&c.data("h03")).iter().all(|p| !p.is_symlink()),
        "a link was made on the host"
    );
    c.assert_healthy("h03").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_04_relative_symlinks_out_of_a_nested_folder_are_not_followed() {
    let c = Case::new().await;
    let (secret, _) = c.plant_canary("h04");
    let canary = c.data("h04").parent().unwrap().join("secret.txt");
    let r = c
        .probes(
            "h04",
            r#"
os.makedirs('/mnt/data/a/b/c', exist_ok=True)
open('/mnt/data/inside.txt', 'w').write('inside')
for target in ['../../../../secret.txt', '../../../../../../../../etc/passwd']:
    try:
        os.symlink(target, '/mnt/data/a/b/c/up')
    except OSError:
        pass
    probe('read ' + target, lambda: open('/mnt/data/a/b/c/up').read())
    probe('write ' + target, lambda: open('/mnt/data/a/b/c/up', 'w').write('overwritten'))
    probe('stat ' + target, lambda: os.stat('/mnt/data/a/b/c/up').st_size)
    try:
        os.unlink('/mnt/data/a/b/c/up')
    except OSError:
        pass
# A link that stays inside works: links are confined, not banned.
os.symlink('../../../inside.txt', '/mnt/data/a/b/c/in')
print('inside:', open('/mnt/data/a/b/c/in').read())
"#,
            6,
        )
        .await;
    assert!(r.stdout.ends_with("inside: inside\n"), "{}", r.stdout);
    assert_no_canary(&r, &secret);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), secret);
    c.assert_healthy("h04").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_05_trailing_slash_symlinks_do_not_escape() {
    let c = Case::new().await;
    let (secret, outside) = c.plant_canary("h05");
    // Links the guest could never make itself, planted from the host: an absolute one to a
    // host folder and one to a host file (GHSA-vqjp-4c8c-hfgg resolved `link/` outside).
    let data = c.data("h05");
    std::os::unix::fs::symlink(&outside, data.join("hostdir")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), data.join("hostfile")).unwrap();
    let before: Vec<PathBuf> = tree(&outside);
    let r = c
        .probes(
            "h05",
            r#"
try:
    os.symlink('../..', '/mnt/data/updir')
except OSError:
    pass
for p in ['/mnt/data/hostfile/', '/mnt/data/hostdir/secret.txt', '/mnt/data/updir/secret.txt',
          '/mnt/data/hostdir/./secret.txt']:
    probe('open ' + p, lambda: open(p).read())
for p in ['/mnt/data/hostdir/', '/mnt/data/updir/', '/mnt/data/hostdir/.']:
    probe('list ' + p, lambda: os.listdir(p))
    probe('stat ' + p, lambda: os.stat(p).st_mode)
probe('create in hostdir/', lambda: open('/mnt/data/hostdir/new.txt', 'w').write('x'))
probe('mkdir in hostdir/', lambda: os.mkdir('/mnt/data/hostdir/newdir/'))
"#,
            12,
        )
        .await;
    assert_no_canary(&r, &secret);
    assert_eq!(tree(&outside), before, "the host folder changed");
    c.assert_healthy("h05").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_06_hard_links_are_refused() {
    let c = Case::new().await;
    let zip = runtime_dir().join("lib").join("python315.zip");
    let before = fingerprint(&zip);
    c.probes(
        "h06",
        r#"
open('/mnt/data/own.txt', 'w').write('own')
probe('from stdlib', lambda: os.link('/usr/local/lib/python315.zip', '/mnt/data/zip'))
probe('from passwd', lambda: os.link('/etc/passwd', '/mnt/data/passwd'))
probe('inside', lambda: os.link('/mnt/data/own.txt', '/mnt/data/own2.txt'))
probe('into stdlib', lambda: os.link('/mnt/data/own.txt', '/usr/local/lib/own.txt'))
print(sorted(os.listdir('/mnt/data')))
"#,
        4,
    )
    .await;
    assert_eq!(fingerprint(&zip), before, "the stdlib zip gained a link");
    let names: Vec<_> = std::fs::read_dir(c.data("h06"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["own.txt"]);
    c.assert_healthy("h06").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_07_read_only_mounts_cannot_be_written_or_truncated() {
    let c = Case::new().await;
    let rt = runtime_dir();
    let zip = rt.join("lib").join("python315.zip");
    let rc = rt.join("mpl-data").join("matplotlibrc");
    let (zip_before, rc_before) = (fingerprint(&zip), fingerprint(&rc));
    let r = c
        .probes(
            "h07",
            r#"
ro = '/usr/local/lib/python315.zip'
rc = ro + '/matplotlib/mpl-data/matplotlibrc'
size = os.stat(ro).st_size
for p in [ro, rc]:
    probe('w ' + p, lambda: open(p, 'w'))
    probe('ab ' + p, lambda: open(p, 'ab').write(b'x'))
    probe('r+b ' + p, lambda: open(p, 'r+b').write(b'x'))
    probe('O_TRUNC ' + p, lambda: os.open(p, os.O_WRONLY | os.O_TRUNC))
    probe('O_RDONLY|O_TRUNC ' + p, lambda: os.open(p, os.O_RDONLY | os.O_TRUNC))
    probe('truncate ' + p, lambda: os.truncate(p, 0))
    def ftruncate():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
    probe('ftruncate ' + p, ftruncate)
    probe('unlink ' + p, lambda: os.unlink(p))
    probe('rename ' + p, lambda: os.rename(p, '/mnt/data/moved'))
    probe('utime ' + p, lambda: os.utime(p, (0, 0)))
    try:
        os.chmod(p, 0o777)  # preview1 has no chmod; whatever the call says, nothing changes
    except OSError:
        pass
probe('create', lambda: open('/usr/local/lib/new.py', 'w'))
probe('mkdir', lambda: os.mkdir('/usr/local/lib/new'))
print('size kept:', os.stat(ro).st_size == size)
"#,
            22,
        )
        .await;
    assert!(r.stdout.ends_with("size kept: True\n"), "{}", r.stdout);
    assert_eq!(fingerprint(&zip), zip_before);
    assert_eq!(fingerprint(&rc), rc_before);
    c.assert_healthy("h07").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_08_unicode_and_nul_paths_do_not_escape() {
    let c = Case::new().await;
    let (secret, _) = c.plant_canary("h08");
    let session_dir = c.data("h08").parent().unwrap().to_path_buf();
    let r = c
        .probes(
            "h08",
            r#"
for p in ['/mnt/data/\u2025/secret.txt', '/mnt/data/\uff0e\uff0e/secret.txt',
          '/mnt/data/\u2025\u2025/secret.txt', '/mnt/data/\u002e\u002e\u2215secret.txt',
          '/etc\x00/passwd', '/mnt/data/x\x00/../../secret.txt']:
    probe(ascii(p), lambda: open(p).read())
open('/mnt/data/\u2025', 'w').write('dots')
print(os.listdir('/mnt/data') == ['\u2025'])
"#,
            6,
        )
        .await;
    assert!(r.stdout.ends_with("True\n"), "{}", r.stdout);
    assert_eq!(
        r.stdout.matches("ValueError").count(),
        2,
        "NUL paths are ValueErrors: {}",
        r.stdout
    );
    assert_no_canary(&r, &secret);
    assert_eq!(
        std::fs::read_to_string(c.data("h08").join("\u{2025}")).unwrap(),
        "dots"
    );
    let mut top: Vec<_> = std::fs::read_dir(&session_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    // (The host's own state file sits beside the folders; the guest never sees it.)
    top.retain(|n| n != "hibernated.state");
    assert_eq!(top, ["data", "secret.txt", "tmp"]);
    c.assert_healthy("h08").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_09_listing_the_root_shows_only_the_guest_view() {
    let c = Case::new().await;
    let r = c
        .probes(
            "h09",
            r#"
import glob
open('/mnt/data/mine.txt', 'w').write('x')
probe('listdir /', lambda: os.listdir('/'))
probe('scandir /', lambda: list(os.scandir('/')))
probe('listdir /mnt', lambda: os.listdir('/mnt'))
print('walk', list(os.walk('/')))
print('glob', glob.glob('/**', recursive=True))
print('lib', os.listdir('/usr/local/lib'))
print('data', os.listdir('/mnt/data'))
print('tmp', sorted(os.listdir('/tmp')))
"#,
            3,
        )
        .await;
    assert!(
        r.stdout.ends_with(
            "walk []\nglob []\nlib ['python315.zip']\ndata ['mine.txt']\ntmp ['.config', 'home']\n"
        ),
        "{}",
        r.stdout
    );
    c.assert_healthy("h09").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_10_devices_and_mmap_are_not_there() {
    let c = Case::new().await;
    c.probes(
        "h10",
        r#"
import mmap
for p, mode in [('/dev/zero', 'rb'), ('/dev/null', 'wb'), ('/dev/urandom', 'rb'),
                ('/dev/tcp/1.2.3.4/80', 'wb'), ('/proc/self/maps', 'rb'), ('/proc/self/fd/3', 'rb')]:
    probe(p, lambda: open(p, mode).read(4) if 'r' in mode else open(p, mode).write(b'x'))
def mapped():
    with open('/usr/local/lib/python315.zip', 'rb') as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)[:4]
probe('mmap', mapped)
"#,
        7,
    )
    .await;
    c.assert_healthy("h10").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_11_filling_the_disk_stops_at_the_quota() {
    let c = Case::new().await;
    let quota = |l: &mut Limits| l.disk_bytes = 4 << 20;
    let fill = "import errno\nn = 0\ntry:\n    with open(NAME, 'wb') as f:\n        while True:\n            \
                f.write(b'x' * 10**6); f.flush(); n += 1\nexcept OSError as e:\n    \
                print('stopped', n, e.errno == errno.ENOSPC)";
    let r = c
        .run_with("h11", &fill.replace("NAME", "'/mnt/data/fill'"), quota)
        .await;
    assert!(
        r.stdout.starts_with("stopped ") && r.stdout.ends_with(" True\n"),
        "{r:?}"
    );
    assert!(
        r.detail.as_deref().unwrap_or("").contains("storage quota"),
        "{r:?}"
    );
    let size = std::fs::metadata(c.data("h11").join("fill")).unwrap().len();
    assert!(size <= 4 << 20, "{size}");
    // /tmp shares the quota.
    let r = c
        .run_with("h11", &fill.replace("NAME", "'/tmp/fill'"), quota)
        .await;
    assert_eq!(r.stdout, "stopped 0 True\n", "{r:?}");
    // A new interpreter (after a crash, a timeout, an eviction) does not get a fresh quota.
    let r = c.run_with("h11", "import os\nos._exit(0)", quota).await;
    assert!(r.interpreter_reset, "{r:?}");
    let r = c
        .run_with("h11", &fill.replace("NAME", "'/mnt/data/more'"), quota)
        .await;
    assert_eq!(r.stdout, "stopped 0 True\n", "{r:?}");
    // Deleting frees the space again.
    let r = c
        .run_with(
            "h11",
            "import os\nos.remove('/mnt/data/fill')\nopen('/mnt/data/after', 'wb').write(b'x' * 10**6)",
            quota,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    c.assert_healthy("h11").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_12_sparse_files_are_charged_at_their_logical_size() {
    let c = Case::new().await;
    let t = Instant::now();
    let r = c
        .probes(
            "h12",
            r#"
def seek_write():
    with open('/mnt/data/seek', 'wb') as f:
        f.seek(2**32)
        f.write(b'x')
probe('seek+write', seek_write)
def pwrite():
    fd = os.open('/mnt/data/pwrite', os.O_WRONLY | os.O_CREAT)
    try:
        return os.pwrite(fd, b'x', 2**32)
    finally:
        os.close(fd)
probe('pwrite', pwrite)
probe('truncate', lambda: os.truncate('/mnt/data/seek', 2**32))
def ftruncate():
    with open('/mnt/data/ftruncate', 'wb') as f:
        f.truncate(2**32)
probe('ftruncate', ftruncate)
# A small hole within the quota is fine.
with open('/mnt/data/small', 'wb') as f:
    f.seek(1000)
    f.write(b'x')
print('small', os.stat('/mnt/data/small').st_size)
"#,
            4,
        )
        .await;
    assert!(r.stdout.ends_with("small 1001\n"), "{}", r.stdout);
    assert!(r.stdout.contains("OSError 51"), "ENOSPC: {}", r.stdout);
    for (name, size) in c.s.manager.list_files("h12").unwrap() {
        assert!(size <= 64 << 20, "{name} is {size} bytes");
    }
    // The host never had a huge file to hash. (2**32, not 2**40: should the charge regress,
    // this bound fails in seconds instead of the host hashing a terabyte for hours.)
    assert_prompt(t.elapsed(), TIMEOUT);
    c.assert_healthy("h12").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_13_an_inode_bomb_stops_at_the_entry_quota() {
    let c = Case::new().await;
    let files = |l: &mut Limits| l.disk_files = 200;
    let r = c
        .run_with(
            "h13",
            "import os, errno\nn = 0\ntry:\n    for i in range(10**6):\n        \
             open(f'/mnt/data/f{i}', 'w').close(); n += 1\nexcept OSError as e:\n    \
             print('files', n < 200, e.errno == errno.ENOSPC)\nm = 0\ntry:\n    \
             for i in range(10**6):\n        os.mkdir(f'/tmp/d{i}'); m += 1\nexcept OSError as e:\n    \
             print('dirs', m, e.errno == errno.ENOSPC)",
            files,
        )
        .await;
    assert!(r.stdout.starts_with("files True True\ndirs "), "{r:?}");
    assert!(r.stdout.ends_with(" True\n"), "{r:?}");
    let dir = c.data("h13").parent().unwrap().to_path_buf();
    // The session folder, data/ and tmp/ themselves, and the host's state file beside them.
    let entries = tree(&dir)
        .iter()
        .filter(|p| !p.ends_with("hibernated.state"))
        .count()
        - 3;
    assert!(entries <= 200, "{entries} entries");
    // Removing files makes room again.
    let r = c
        .run_with(
            "h13",
            "import os\nfor i in range(50):\n    os.remove(f'/mnt/data/f{i}')\nopen('/mnt/data/again', 'w').close()",
            files,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    c.assert_healthy("h13").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_14_deep_trees_and_long_names_fail_cleanly_and_the_host_cleans_up() {
    let c = Case::new().await;
    let r = c
        .run_with(
            "h14",
            r#"
import os
p, depth = '/mnt/data', 0
try:
    for _ in range(1000):
        p += '/d'
        os.mkdir(p)
        depth += 1
    open(p + '/leaf.txt', 'w').write('deep')
except OSError as e:
    print('stopped', type(e).__name__)
print('depth', depth)
for n in [255, 256, 4096]:
    try:
        open('/mnt/data/' + 'a' * n, 'w').close()
        print('made', n)
    except OSError as e:
        print('refused', n)
"#,
            |l| l.disk_files = 5000,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(
        r.stdout
            .ends_with("depth 1000\nmade 255\nrefused 256\nrefused 4096\n"),
        "{}",
        r.stdout
    );
    assert!(r.files.iter().any(|f| f.relative.ends_with("d/d/leaf.txt")));
    // The host deletes the whole session, however deep.
    let session_dir = c.data("h14").parent().unwrap().to_path_buf();
    assert!(c.s.manager.remove("h14").await.unwrap());
    assert!(!session_dir.exists());
    c.assert_healthy("h14").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_15_fd_exhaustion_is_emfile_inside_the_guest() {
    let c = Case::new().await;
    let r = c
        .run(
            "h15",
            r#"
import errno
open('/mnt/data/f', 'w').close()
held = []
try:
    for _ in range(10**5):
        held.append(open('/mnt/data/f', 'rb'))
except OSError as e:
    print('stopped', len(held) < 300, e.errno == errno.EMFILE)
"#,
        )
        .await;
    assert_eq!(r.stdout, "stopped True True\n", "{r:?}");
    // Still at the cap in the next call (the files stay open), then usable once closed.
    let r = c
        .run(
            "h15",
            "try:\n    open('/mnt/data/f')\n    print('opened')\nexcept OSError as e:\n    print('EMFILE', e.errno == errno.EMFILE)\n\
             for f in held:\n    f.close()\nprint(open('/mnt/data/f').read() == '')",
        )
        .await;
    assert_eq!(r.stdout, "EMFILE True\nTrue\n", "{r:?}");
    // The host can still open files.
    std::fs::File::open(c.data("h15").join("f")).unwrap();
    c.assert_healthy("h15").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_16_the_mount_roots_cannot_be_removed_or_renamed() {
    let c = Case::new().await;
    c.probes(
        "h16",
        r#"
import shutil
open('/mnt/data/f', 'w').write('x')
probe('rmdir data', lambda: os.rmdir('/mnt/data'))
probe('rename data', lambda: os.rename('/mnt/data', '/tmp/data'))
probe('rename data up', lambda: os.rename('/mnt/data', '/mnt/other'))
probe('rmdir tmp', lambda: os.rmdir('/tmp'))
probe('rename tmp', lambda: os.rename('/tmp', '/mnt/data/tmp'))
probe('rmtree data', lambda: shutil.rmtree('/mnt/data'))
open('/mnt/data/after.txt', 'w').write('after')
"#,
        6,
    )
    .await;
    let data = c.data("h16");
    assert!(!data.is_symlink() && data.is_dir());
    assert_eq!(
        std::fs::read_to_string(data.join("after.txt")).unwrap(),
        "after"
    );
    c.assert_healthy("h16").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_17_links_the_guest_leaves_are_never_followed_by_the_host() {
    let c = Case::new().await;
    let (secret, outside) = c.plant_canary("h17");
    // The guest cannot make FIFOs or device nodes at all.
    let r = c
        .run(
            "h17",
            r#"
import os
print(hasattr(os, 'mkfifo'), hasattr(os, 'mknod'))
open('/mnt/data/real.txt', 'w').write('real')
for target, name in [('../secret.txt', 'up'), ('../../../../../etc/passwd', 'passwd'),
                     ('..', 'updir'), ('real.txt', 'inside')]:
    os.symlink(target, '/mnt/data/' + name)
"#,
        )
        .await;
    assert_eq!(r.stdout, "False False\n", "{r:?}");
    // A link to a host file, as if a bug had let one in.
    let data = c.data("h17");
    std::os::unix::fs::symlink(outside.join("secret.txt"), data.join("hostlink")).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("hostdir")).unwrap();
    // Collecting outputs: only the regular file is reported and listed.
    assert_eq!(
        r.files
            .iter()
            .map(|f| f.relative.as_str())
            .collect::<Vec<_>>(),
        ["real.txt"]
    );
    let listed = c.s.manager.list_files("h17").unwrap();
    assert_eq!(listed, [("real.txt".to_string(), 4)]);
    for name in [
        "up",
        "passwd",
        "updir/secret.txt",
        "hostlink",
        "hostdir/secret.txt",
    ] {
        assert!(
            c.s.manager.read_file("h17", name, 1 << 20).is_err(),
            "{name} was followed"
        );
    }
    // Changed-file scans after a call do not follow them either.
    let r = c
        .run("h17", "open('/mnt/data/real.txt', 'a').write('!')")
        .await;
    assert_eq!(
        r.files
            .iter()
            .map(|f| f.relative.as_str())
            .collect::<Vec<_>>(),
        ["real.txt"]
    );
    c.assert_healthy("h17").await;
    // Deleting the session deletes the links, not what they point to.
    assert!(c.s.manager.remove("h17").await.unwrap());
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        secret
    );
    let r = c.run("h17", "print(1)").await;
    assert_eq!(r.stdout, "1\n");
}

/// A zip whose entries climb out of wherever they are unpacked.
fn zip_slip() -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for name in [
        "../../slipped-1.txt",
        "../../../../../../tmp/slipped-2.txt",
        "/slipped-3.txt",
        "ok.txt",
    ] {
        w.start_file(name, opts).unwrap();
        w.write_all(b"zip-slip payload").unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_18_an_uploaded_zip_slip_archive_lands_as_one_opaque_file() {
    let app = TestApp::spawn().await;
    let zip = zip_slip();
    let (status, file) = app.upload("slip.zip", zip.clone(), "assistants").await;
    assert_eq!(status, 200, "{file}");
    let file_id = file["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({
                "code": "import os, zipfile\nprint(sorted(os.listdir('/mnt/data')), os.path.getsize('/mnt/data/slip.zip'))\n\
                         print(sorted(zipfile.ZipFile('/mnt/data/slip.zip').namelist()))\n\
                         try:\n    open('/mnt/data/../../slipped-4.txt', 'w').write('x')\nexcept OSError:\n    print('denied')",
                "file_ids": [file_id],
                "timeout_ms": 5000,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let session = body["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        body["stdout"],
        format!(
            "['slip.zip'] {}\n['../../../../../../tmp/slipped-2.txt', '../../slipped-1.txt', '/slipped-3.txt', 'ok.txt']\ndenied\n",
            zip.len()
        ),
        "{body}"
    );
    // Nothing was written anywhere but the upload's own copy in /mnt/data.
    let parent = app.data_dir.parent().unwrap();
    let slipped: Vec<_> = tree(&app.data_dir)
        .into_iter()
        .chain(
            [
                "slipped-1.txt",
                "slipped-2.txt",
                "slipped-3.txt",
                "slipped-4.txt",
            ]
            .iter()
            .map(|n| parent.join(n))
            .filter(|p| p.exists()),
        )
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("slipped"))
        })
        .collect();
    assert!(slipped.is_empty(), "{slipped:?}");
    let session_data = app.data_dir.join("sessions").join(&session).join("data");
    let names: Vec<_> = std::fs::read_dir(&session_data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["slip.zip"]);
    assert_eq!(std::fs::read(session_data.join("slip.zip")).unwrap(), zip);
    // Healthy: the same session and a sibling.
    let (_, body) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "kept = 7", "session_id": "sib18"}),
        )
        .await;
    assert_eq!(body["status"], "completed", "{body}");
    let (_, body) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "session_id": session}),
        )
        .await;
    assert_eq!(body["stdout"], "1\n", "{body}");
    let (_, body) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "kept", "session_id": "sib18"}),
        )
        .await;
    assert_eq!(body["result"], "7", "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_19_a_conversation_cannot_see_another_ones_files() {
    let c = Case::new().await;
    let r = c
        .run(
            "alice",
            "open('/mnt/data/secret', 'w').write('alice only')\nopen('/tmp/scratch', 'w').write('alice tmp')",
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let r = c
        .probes(
            "bob",
            r#"
print('data', os.listdir('/mnt/data'))
print('tmp', sorted(os.listdir('/tmp')))
for p in ['/mnt/data/secret', '/mnt/data/../../alice/data/secret', '../alice/data/secret',
          '/mnt/alice/data/secret', '/tmp/scratch', '/tmp/../alice/tmp/scratch']:
    probe(p, lambda: open(p).read())
"#,
            6,
        )
        .await;
    assert!(
        r.stdout.starts_with("data []\ntmp ['.config', 'home']\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("alice only") && !r.stdout.contains("alice tmp"));
    assert_eq!(
        c.s.manager.read_file("alice", "secret", 100).unwrap(),
        b"alice only"
    );
    c.assert_healthy("bob").await;
    c.assert_healthy("alice").await;
}

// ---------------------------------------------------------------------------------------------
// Environment and information leaks

#[tokio::test(flavor = "multi_thread")]
async fn hostile_20_the_environment_holds_only_the_allowlisted_variables() {
    let c = Case::new().await;
    let r = c
        .run(
            "h20",
            "import os, json\nprint(json.dumps(dict(os.environ), sort_keys=True))",
        )
        .await;
    let seen: BTreeMap<String, String> = serde_json::from_str(r.stdout.trim()).unwrap();
    let mut expected: BTreeMap<String, String> =
        c.s.manager
            .sandbox()
            .image("scientific")
            .unwrap()
            .image
            .env
            .clone();
    for (k, v) in [
        ("HOME", "/tmp/home"),
        ("TMPDIR", "/tmp"),
        ("PYTHONTZPATH", ""),
    ] {
        expected.entry(k.into()).or_insert(v.into());
    }
    assert_eq!(seen, expected);
    // No value of the host's environment shows through.
    for (k, v) in std::env::vars() {
        if v.len() >= 4 && !expected.values().any(|e| e == &v) {
            assert!(!r.stdout.contains(&v), "host {k} leaked");
        }
    }
    c.assert_healthy("h20").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_21_names_and_paths_are_the_guests_own() {
    let c = Case::new().await;
    let r = c
        .run(
            "h21",
            r#"
import os, sys, platform, socket, json
print(json.dumps({
    'argv': sys.argv, 'executable': sys.executable, 'cwd': os.getcwd(), 'node': platform.node(),
    'hostname': socket.gethostname(), 'uname': list(os.uname()), 'platform': platform.platform(),
    'path': sys.path, 'prefix': [sys.prefix, sys.exec_prefix, sys.base_prefix],
    'file': json.__file__,
}))
json.loads('{')
"#,
        )
        .await;
    assert_eq!(
        r.error.as_ref().map(|e| e.name.as_str()),
        Some("JSONDecodeError")
    );
    let seen = format!("{}{}", r.stdout, r.error.as_ref().unwrap().traceback);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_strings = [
        hostname.trim().to_string(),
        c.s._root.path().display().to_string(),
        runtime_dir().display().to_string(),
        data_dir().display().to_string(),
        env!("CARGO_MANIFEST_DIR").to_string(),
        std::env::current_dir().unwrap().display().to_string(),
    ];
    for h in &host_strings {
        assert!(
            !h.is_empty() && !seen.contains(h.as_str()),
            "{h} leaked: {seen}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["cwd"], "/");
    assert_eq!(v["executable"], "/usr/local/bin/python.wasm");
    assert_eq!(v["path"], json!(["/usr/local/lib/python315.zip"]));
    c.assert_healthy("h21").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_22_native_code_and_host_bindings_are_not_importable() {
    let c = Case::new().await;
    let r = c
        .probes(
            "h22",
            r#"
import importlib
for m in ['_ctypes', '_posixsubprocess', 'js', 'pyodide', 'pyodide_js', '_wasi', 'wasmtime',
          '_testcapi', '_multiprocessing', 'fcntl', 'resource', '_ssl']:
    probe('import ' + m, lambda: importlib.import_module(m), ImportError)
# `ctypes` is a stub in this runtime: importing it works, loading anything does not.
import ctypes
probe('CDLL(None)', lambda: ctypes.CDLL(None))
probe('LoadLibrary', lambda: ctypes.cdll.LoadLibrary('libc.so.6'))
probe('pythonapi', lambda: ctypes.pythonapi, (OSError, AttributeError))
print('builtin', sorted(m for m in sys.builtin_module_names if m in ('_ctypes', '_posixsubprocess', '_socket', '_host')))
"#,
            15,
        )
        .await;
    // `_socket` is compiled in but cannot open sockets (cases 25-28); `_host` is the door (24).
    assert!(
        r.stdout.ends_with("builtin ['_host', '_socket']\n"),
        "{}",
        r.stdout
    );
    c.assert_healthy("h22").await;
}

/// A wasm module that imports a function Oasis never grants (`env.evil`).
const EVIL_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one () -> ()
    0x02, 0x0c, 0x01, 0x03, b'e', b'n', b'v', 0x04, b'e', b'v', b'i', b'l', 0x00,
    0x00, // import section: env.evil, func type 0
];

#[tokio::test(flavor = "multi_thread")]
async fn hostile_23_a_custom_wasm_module_is_never_run() {
    // The guest has no way to load a module: no wasm runtime, no loader, no native code.
    let c = Case::new().await;
    c.probes(
        "h23",
        r#"
import importlib
for m in ['wasmtime', 'wasmer', '_wasi', 'js']:
    probe(m, lambda: importlib.import_module(m), ImportError)
probe('compile wasm', lambda: compile(bytes.fromhex('0061736d01000000'), 'm.wasm', 'exec'), (ValueError, SyntaxError))
"#,
        5,
    )
    .await;
    // Oasis runs only the pinned runtime: a runtime folder whose modules were swapped for one
    // that imports `env.evil` is refused before anything is compiled or linked.
    let evil = tempfile::tempdir().unwrap();
    let rt = runtime_dir();
    for entry in std::fs::read_dir(&rt).unwrap().flatten() {
        let name = entry.file_name();
        if entry.path().extension().is_some_and(|e| e == "wasm") {
            std::fs::write(evil.path().join(&name), EVIL_WASM).unwrap();
        } else if name != "READY" {
            std::os::unix::fs::symlink(entry.path(), evil.path().join(&name)).unwrap();
        }
    }
    let out = crate::helpers::oasis_binary(&["OASIS_RUNTIME_DIR", "OASIS_DATA_DIR"])
        .args(["runtime", "fetch"])
        .env("OASIS_RUNTIME_DIR", evil.path())
        .env("OASIS_DATA_DIR", evil.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("but python-wasm/pin.toml pins"), "{err}");
    c.assert_healthy("h23").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_24_probing_the_door_gets_errors_not_a_host_fault() {
    let c = Case::new().await;
    let r = c
        .run(
            "h24",
            r#"
import _host
out = []
def attempt(label, f):
    try:
        f()
        out.append(label + ' ok')
    except Exception as e:
        out.append(label + ' ' + type(e).__name__)
attempt('empty', lambda: _host.call(b''))
attempt('huge', lambda: _host.call(bytes(33 << 20)))
attempt('str', lambda: _host.call('text'))
attempt('none', lambda: _host.call(None))
attempt('strided', lambda: _host.call(memoryview(b'abcd')[::2]))
attempt('bad report', lambda: _host.call(b'R{not json'))
attempt('bad error', lambda: _host.call(b'E{"name": 1}'))
attempt('bad image', lambda: _host.call(b'Inot a png'))
n = 0
try:
    while n < 10000:
        _host.call(b'Z')
        n += 1
except OSError:
    pass
out.append('frames capped %s' % (n < 10000))
print(out)
"#,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(
        r.stdout,
        "['empty OSError', 'huge OSError', 'str TypeError', 'none TypeError', \
         'strided BufferError', 'bad report ok', 'bad error ok', 'bad image OSError', \
         'frames capped True']\n",
        "{r:?}"
    );
    // Reports that do not parse are dropped: no forged error reaches the result. Image frames
    // are refused outside the host's figure step (and are only ever taken as whole PNG files).
    assert!(r.error.is_none(), "{r:?}");
    assert!(r.images.is_empty(), "{r:?}");
    c.assert_healthy("h24").await;
}

// ---------------------------------------------------------------------------------------------
// Network

/// A host port nothing in the guest should ever reach.
fn listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn assert_never_connected(l: &std::net::TcpListener) {
    match l.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the host port: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_25_cloud_metadata_and_host_ports_cannot_be_reached() {
    let c = Case::new().await;
    let (l, port) = listener();
    c.probes(
        "h25",
        &format!(
            r#"
import socket
for host in ['169.254.169.254', '127.0.0.1']:
    port = 80 if host.startswith('169') else {port}
    probe('create_connection ' + host, lambda: socket.create_connection((host, port), timeout=1), Exception)
    def raw():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, port))
    probe('socket.connect ' + host, raw, Exception)
"#
        ),
        4,
    )
    .await;
    assert_never_connected(&l);
    c.assert_healthy("h25").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_26_dns_lookups_are_impossible() {
    let c = Case::new().await;
    c.probes(
        "h26",
        r#"
import socket
probe('getaddrinfo', lambda: socket.getaddrinfo('example.com', 80), Exception)
probe('gethostbyname', lambda: socket.gethostbyname('example.com'), Exception)
probe('udp socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), Exception)
"#,
        3,
    )
    .await;
    c.assert_healthy("h26").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_27_http_requests_to_the_host_fail() {
    let c = Case::new().await;
    let (l, port) = listener();
    c.probes(
        "h27",
        &format!(
            r#"
import urllib.request, http.client
probe('urlopen', lambda: urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1), Exception)
def client():
    h = http.client.HTTPConnection('127.0.0.1', {port}, timeout=1)
    h.request('GET', '/')
    return h.getresponse().status
probe('http.client', client, Exception)
"#
        ),
        2,
    )
    .await;
    assert_never_connected(&l);
    c.assert_healthy("h27").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_28_module_tampering_does_not_bring_sockets_back() {
    let c = Case::new().await;
    let (l, port) = listener();
    c.probes(
        "h28",
        &format!(
            r#"
import importlib, builtins, socket
socket = importlib.reload(socket)
sys.modules.pop('_socket', None)
sys.modules.pop('socket', None)
_socket = importlib.import_module('_socket')
socket = importlib.import_module('socket')
builtins.__import__ = builtins.__import__  # tampered-with, and still the same world
probe('reloaded connect', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1), Exception)
probe('raw _socket', lambda: _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM), Exception)
for fd in range(0, 8):
    def adopt():
        s = socket.socket(fileno=fd)
        s.connect(('127.0.0.1', {port}))
    probe('adopt fd %d' % fd, adopt, Exception)
"#
        ),
        10,
    )
    .await;
    assert_never_connected(&l);
    c.assert_healthy("h28").await;
}

// ---------------------------------------------------------------------------------------------
// Processes and threads

#[tokio::test(flavor = "multi_thread")]
async fn hostile_29_processes_cannot_be_started() {
    let c = Case::new().await;
    let r = c
        .probes(
            "h29",
            r#"
import subprocess
probe('fork', lambda: os.fork(), Exception)
probe('system', lambda: os.system('id'), Exception)
probe('execv', lambda: os.execv('/bin/sh', ['sh']), Exception)
probe('posix_spawn', lambda: os.posix_spawn('/bin/sh', ['sh'], {}), Exception)
probe('popen', lambda: os.popen('id').read(), Exception)
probe('subprocess.run', lambda: subprocess.run(['id']), Exception)
print('absent', [n for n in ['fork', 'system', 'execv', 'posix_spawn', 'spawnv', 'forkpty'] if hasattr(os, n)])
"#,
            6,
        )
        .await;
    assert!(r.stdout.ends_with("absent []\n"), "{}", r.stdout);
    c.assert_healthy("h29").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_30_threads_and_process_pools_cannot_be_started() {
    let c = Case::new().await;
    c.probes(
        "h30",
        r#"
import threading, _thread, multiprocessing, concurrent.futures
probe('Thread.start', lambda: threading.Thread(target=print).start(), Exception)
probe('start_new_thread', lambda: _thread.start_new_thread(print, ()), Exception)
probe('Pool', lambda: multiprocessing.Pool(2), Exception)
probe('Process', lambda: multiprocessing.Process(target=print).start(), Exception)
probe('ThreadPoolExecutor', lambda: concurrent.futures.ThreadPoolExecutor(2).submit(print).result(), Exception)
"#,
        5,
    )
    .await;
    c.assert_healthy("h30").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_31_a_fork_bomb_fails_at_once() {
    let c = Case::new().await;
    let r = c.run("h31", "import os\nwhile 1:\n    os.fork()").await;
    assert_eq!(r.outcome, Outcome::Error, "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().name, "AttributeError");
    assert!(!r.interpreter_reset);
    c.assert_healthy("h31").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_32_signals_and_abort_stay_inside_the_guest() {
    let c = Case::new().await;
    let r = c
        .probes(
            "h32",
            r#"
import signal
probe('kill 1', lambda: os.kill(1, 9), Exception)
probe('killpg', lambda: os.killpg(0, 9), Exception)
probe('alarm', lambda: signal.alarm(1), Exception)
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append('handled'))
signal.raise_signal(signal.SIGTERM)
print(got)
"#,
            3,
        )
        .await;
    assert!(r.stdout.ends_with("['handled']\n"), "{}", r.stdout);
    // The signal was the guest's own: this process is alive and well.
    let r = c.run("h32", "import os\nos.abort()").await;
    assert_eq!(r.outcome, Outcome::Crashed, "{r:?}");
    assert!(r.interpreter_reset);
    c.assert_healthy("h32").await;
}

// ---------------------------------------------------------------------------------------------
// CPU and time

#[tokio::test(flavor = "multi_thread")]
async fn hostile_33_an_endless_loop_ends_at_the_deadline() {
    let c = Case::new().await;
    c.run("h33", "open('/mnt/data/keep', 'w').write('kept')")
        .await;
    let t = Instant::now();
    let r = c
        .run_with("h33", "while True:\n    pass", |l| l.timeout = SHORT)
        .await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(r.interpreter_reset);
    assert!(t.elapsed() >= SHORT);
    assert_prompt(t.elapsed(), SHORT);
    let r = c.run("h33", "print(open('/mnt/data/keep').read())").await;
    assert_eq!(r.stdout, "kept\n");
    c.assert_healthy("h33").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_34_the_wall_clock_fence_cannot_be_caught_or_swallowed() {
    // Oasis meters no fuel: the epoch deadline is the CPU fence, independent of anything the
    // guest can see. Catching every exception does not catch it.
    let c = Case::new().await;
    let t = Instant::now();
    let r = c
        .run_with(
            "h34",
            "import sys\nsys.setrecursionlimit(10**6)\nwhile True:\n    try:\n        while True:\n            pass\n    \
             except BaseException:\n        pass\n    finally:\n        continue",
            |l| l.timeout = SHORT,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_prompt(t.elapsed(), SHORT);
    c.assert_healthy("h34").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_35_blocking_waits_end_at_the_deadline_and_stdin_is_empty() {
    let c = Case::new().await;
    for code in [
        "import time\ntime.sleep(30)",
        "import select\nselect.select([], [], [], 30)",
        "import select\nselect.poll().poll(30000)",
        "import selectors\nselectors.DefaultSelector().select(30)",
    ] {
        let t = Instant::now();
        let r = c.run_with("h35", code, |l| l.timeout = SHORT).await;
        assert_eq!(r.outcome, Outcome::Timeout, "{code}: {r:?}");
        assert_prompt(t.elapsed(), SHORT);
    }
    let r = c
        .run(
            "h35",
            "import sys, os\nprint(repr(sys.stdin.read()), os.read(0, 10))\ninput()",
        )
        .await;
    assert_eq!(r.stdout, "'' b''\n", "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().name, "EOFError");
    c.assert_healthy("h35").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_36_runaway_c_level_work_times_out() {
    let c = Case::new().await;
    for code in [
        "import re\nre.match('(a+)+$', 'a' * 40 + 'b')",
        "x = 10**10**7",
        "sum(range(10**13))",
    ] {
        let t = Instant::now();
        let r = c.run_with("h36", code, |l| l.timeout = SHORT).await;
        assert_eq!(r.outcome, Outcome::Timeout, "{code}: {r:?}");
        assert_prompt(t.elapsed(), SHORT);
    }
    c.assert_healthy("h36").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_37_unbounded_recursion_ends_in_an_error_or_a_trap() {
    let c = Case::new().await;
    let t = Instant::now();
    let r = c
        .run_with(
            "h37",
            "import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return f(n + 1)\nf(0)",
            |l| {
                l.memory_bytes = 256 << 20;
                l.timeout = Duration::from_secs(10);
            },
        )
        .await;
    assert!(
        matches!(
            r.outcome,
            Outcome::Error | Outcome::MemoryLimit | Outcome::Crashed
        ),
        "{r:?}"
    );
    // Either Python raised (and the interpreter lives on), or a trap (the wasm stack ran out,
    // e.g. while freeing the huge traceback) replaced the interpreter.
    if !r.interpreter_reset {
        let name = r.error.as_ref().map(|e| e.name.as_str());
        assert!(
            matches!(name, Some("RecursionError" | "MemoryError")),
            "{r:?}"
        );
    }
    assert_prompt(t.elapsed(), Duration::from_secs(10));
    // Recursion in C (a deeply nested repr) is caught too.
    let r = c
        .run_with(
            "h37",
            "l = []\nfor _ in range(10**5):\n    l = [l]\nrepr(l)",
            |l| l.timeout = Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        r.error.as_ref().map(|e| e.name.as_str()),
        Some("RecursionError"),
        "{r:?}"
    );
    c.assert_healthy("h37").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_38_absurdly_nested_input_is_an_error_not_a_host_crash() {
    let c = Case::new().await;
    let r = c
        .run(
            "h38",
            r#"
import json
for label, f in [('eval parens', lambda: eval('(' * 10**6)),
                 ('nested list literal', lambda: eval('[' * 10**5 + ']' * 10**5)),
                 ('json', lambda: json.loads('[' * 10**6)),
                 ('json dict', lambda: json.loads('{"a":' * 10**6))]:
    try:
        f()
        print(label, 'PARSED')
    except (SyntaxError, RecursionError, MemoryError) as e:
        print(label, type(e).__name__)
"#,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
    assert!(!r.stdout.contains("PARSED"), "{}", r.stdout);
    // An expression too deep for the compiler's own C recursion traps the interpreter, which
    // is replaced.
    let r = c
        .run("h38", "compile('1+' * 10**5 + '1', 's', 'eval')")
        .await;
    assert!(
        matches!(
            r.outcome,
            Outcome::Crashed | Outcome::Error | Outcome::MemoryLimit
        ),
        "{r:?}"
    );
    c.assert_healthy("h38").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_39_more_endless_loops_than_cores_all_time_out_and_the_queue_drains() {
    let c = Case::with(ManagerConfig {
        warm_pool: 0,
        max_parallel: 2,
        ..ManagerConfig::default()
    })
    .await;
    let t = Instant::now();
    let mut tasks = vec![];
    for i in 0..5 {
        let m = c.s.manager.clone();
        let mut limits = c.limits();
        limits.timeout = SHORT;
        tasks.push(tokio::spawn(async move {
            m.execute(
                &format!("loop{i}"),
                None,
                "while True:\n    pass".into(),
                ExecOptions {
                    limits: Some(limits),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }));
    }
    // A well-behaved call waits its turn instead of failing.
    c.assert_sibling_intact().await;
    for task in tasks {
        assert_eq!(task.await.unwrap().outcome, Outcome::Timeout);
    }
    // Five 1 s calls two at a time: three rounds, bounded.
    assert_prompt(t.elapsed(), 3 * (SHORT + Duration::from_millis(500)));
    c.assert_healthy("loop0").await;
}

/// A tap that raises `flag` once the guest printed.
fn started_tap(flag: Arc<AtomicBool>) -> OutputTap {
    Arc::new(move |_, _| flag.store(true, Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_40_a_cancelled_call_ends_promptly_and_the_interpreter_is_replaced() {
    let c = Case::new().await;
    for code in [
        "print('started', flush=True)\nwhile True:\n    pass",
        "import time\nprint('started', flush=True)\ntime.sleep(60)",
    ] {
        let started = Arc::new(AtomicBool::new(false));
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut limits = c.limits();
        limits.timeout = Duration::from_secs(20);
        let opts = ExecOptions {
            limits: Some(limits),
            tap: Some(started_tap(started.clone())),
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        let m = c.s.manager.clone();
        let code = code.to_string();
        let call = tokio::spawn(async move { m.execute("h40", None, code, opts).await });
        let until = Instant::now() + Duration::from_secs(30);
        while !started.load(Ordering::SeqCst) {
            assert!(Instant::now() < until, "the call never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = Instant::now();
        cancel.cancel();
        let r = call.await.unwrap().unwrap();
        assert_eq!(r.outcome, Outcome::Cancelled, "{r:?}");
        assert!(r.interpreter_reset);
        assert_prompt(t.elapsed(), Duration::ZERO);
        assert_eq!(r.stdout, "started\n");
    }
    c.assert_healthy("h40").await;
}

// ---------------------------------------------------------------------------------------------
// Memory

/// A 256 MiB linear-memory cap (the image starts at about 80 MiB).
fn small_memory(l: &mut Limits) {
    l.memory_bytes = 256 << 20;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_41_huge_allocations_are_refused_in_the_guest() {
    let c = Case::new().await;
    c.run("h41", "before = 'kept'").await;
    for code in [
        "b = bytearray(2**31)",
        "s = ' ' * 10**10",
        "l = [0] * 10**9",
        "b = bytearray(10**9)",
        "import numpy\na = numpy.ones(10**8)",
    ] {
        let r = c.run_with("h41", code, small_memory).await;
        let name = r.error.as_ref().map(|e| e.name.as_str());
        // A 32-bit guest cannot even ask for 2**31 bytes: that is an OverflowError.
        assert!(
            r.outcome == Outcome::MemoryLimit
                || (r.outcome == Outcome::Error && name == Some("OverflowError")),
            "{code}: {r:?}"
        );
        assert!(
            matches!(
                name,
                Some("MemoryError" | "OverflowError" | "_ArrayMemoryError")
            ),
            "{code}: {r:?}"
        );
        assert!(!r.interpreter_reset, "{code}: {r:?}");
    }
    let r = c.run("h41", "before").await;
    assert_eq!(r.result.as_deref(), Some("'kept'"));
    c.assert_healthy("h41").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_42_growing_to_the_cap_then_asking_for_more_is_a_clean_limit() {
    let c = Case::new().await;
    let r = c
        .run_with(
            "h42",
            "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(1 << 20))\nexcept MemoryError:\n    \
             print('got', len(chunks) > 50)",
            small_memory,
        )
        .await;
    assert_eq!(
        (r.outcome, r.stdout.as_str()),
        (Outcome::Ok, "got True\n"),
        "{r:?}"
    );
    let r = c
        .run_with("h42", "more = bytearray(8 << 20)", small_memory)
        .await;
    assert_eq!(r.outcome, Outcome::MemoryLimit, "{r:?}");
    assert!(
        r.detail.as_deref().unwrap_or("").contains("256 MiB"),
        "{r:?}"
    );
    assert!(!r.interpreter_reset);
    let r = c
        .run_with(
            "h42",
            "n = len(chunks)\ndel chunks\nx = bytearray(64 << 20)\nn > 50",
            small_memory,
        )
        .await;
    assert_eq!(r.result.as_deref(), Some("True"), "{r:?}");
    c.assert_healthy("h42").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_43_a_decompression_bomb_hits_the_memory_cap() {
    let c = Case::new().await;
    // 1 GiB of zeros in about 1 MB of raw deflate: full flushes make every 1 MiB piece the same
    // bytes, so the bomb is made without ever holding a gigabyte.
    let r = c
        .run_with(
            "h43",
            r#"
import zlib
c = zlib.compressobj(9, zlib.DEFLATED, -15)
zero = bytes(1 << 20)
head = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
piece = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
assert piece == c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
tail = c.flush()
assert len(zlib.decompress(head + piece * 3 + tail, -15)) == 4 << 20
bomb = head + piece * 1023 + tail
print(len(bomb) < 2 << 20)
out = zlib.decompress(bomb, -15)
"#,
            small_memory,
        )
        .await;
    assert_eq!(r.stdout, "True\n", "{r:?}");
    assert_eq!(r.outcome, Outcome::MemoryLimit, "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().name, "MemoryError");
    assert!(!r.interpreter_reset);
    c.assert_healthy("h43").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_44_many_sessions_at_their_memory_cap_are_evicted_not_accumulated() {
    let c = Case::new().await; // the sibling lives in a manager of its own
    let crowded = sessions(ManagerConfig {
        max_live: 2,
        warm_pool: 0,
        ..ManagerConfig::default()
    })
    .await;
    let mut limits = c.limits();
    limits.memory_bytes = 256 << 20;
    for i in 0..5 {
        let r = crowded
            .manager
            .execute(
                &format!("fat{i}"),
                None,
                "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(1 << 20))\nexcept MemoryError:\n    pass\nlen(chunks) > 50".into(),
                ExecOptions {
                    limits: Some(limits.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.result.as_deref(), Some("True"), "{r:?}");
        assert!(crowded.manager.live_count() <= 2);
    }
    // The oldest left memory (hibernated: their variables on disk, see hibernation.rs), and
    // come back whole; the live ones stay within the cap.
    let old = crowded.manager.info("fat0").unwrap().unwrap();
    assert!(old.hibernated && !old.live, "{old:?}");
    let r = crowded
        .manager
        .execute(
            "fat0",
            None,
            "'chunks' in globals()".into(),
            ExecOptions {
                limits: Some(limits.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.result.as_deref(), Some("True"), "{r:?}");
    assert!(crowded.manager.live_count() <= 2);
    let r = crowded
        .manager
        .execute(
            "fat4",
            None,
            "'chunks' in globals()".into(),
            ExecOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.result.as_deref(), Some("True"));
    assert!(crowded.manager.live_count() <= 2);
    c.assert_healthy("h44").await;
}

// ---------------------------------------------------------------------------------------------
// Output

#[tokio::test(flavor = "multi_thread")]
async fn hostile_45_a_print_flood_is_kept_to_the_cap() {
    let c = Case::new().await;
    let cap = |l: &mut Limits| l.stdout_bytes = 64 << 10;
    let r = c
        .run_with(
            "h45",
            "for _ in range(50):\n    print('x' * 10**6)\nprint('done')",
            cap,
        )
        .await;
    assert_eq!(r.outcome, Outcome::OutputLimit, "{:?}", r.detail);
    assert!(r.stdout_truncated);
    assert_eq!(r.stdout.len(), 64 << 10);
    // Endless: the deadline ends it, with the output still capped.
    let t = Instant::now();
    let r = c
        .run_with("h45", "while True:\n    print('x' * 10**6)", |l| {
            cap(l);
            l.timeout = SHORT;
        })
        .await;
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.detail);
    assert!(r.stdout_truncated);
    assert_eq!(r.stdout.len(), 64 << 10);
    assert_prompt(t.elapsed(), SHORT);
    c.assert_healthy("h45").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_46_millions_of_tiny_writes_stay_capped_and_bounded() {
    let c = Case::new().await;
    let cap = |l: &mut Limits| l.stdout_bytes = 1000;
    let r = c
        .run_with(
            "h46",
            "import os\nfor _ in range(10**4):\n    os.write(1, b'x')",
            cap,
        )
        .await;
    assert_eq!(r.outcome, Outcome::OutputLimit, "{r:?}");
    assert_eq!(r.stdout, "x".repeat(1000));
    let t = Instant::now();
    let r = c
        .run_with(
            "h46",
            "for _ in range(10**7):\n    print('x', end='', flush=True)",
            |l| {
                cap(l);
                l.timeout = SHORT;
            },
        )
        .await;
    assert!(
        matches!(r.outcome, Outcome::OutputLimit | Outcome::Timeout),
        "{r:?}"
    );
    assert!(r.stdout_truncated);
    assert_eq!(r.stdout, "x".repeat(1000));
    assert_prompt(t.elapsed(), SHORT);
    c.assert_healthy("h46").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_47_invalid_utf8_and_nul_bytes_are_decoded_lossily() {
    let c = Case::new().await;
    let r = c
        .run(
            "h47",
            "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe ok \\x00 nul\\n')\nsys.stdout.flush()\n\
             sys.stdout.buffer.write(b'\\xe2\\x82')\nsys.stdout.flush()\nsys.stdout.buffer.write(b'\\xac\\n')\n\
             sys.stderr.buffer.write(b'\\xc3(\\n')\nsys.stderr.flush()",
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.stdout, "\u{fffd}\u{fffd} ok \0 nul\n\u{20ac}\n");
    assert_eq!(r.stderr, "\u{fffd}(\n");
    c.assert_healthy("h47").await;
}

const TERMINAL_ATTACK: &str =
    "print('\\x1b[31mred\\x1b[0m\\r\\x07|\\u202eevil|\\x9b2J|\\ttab|\\x1b]0;title\\x07')";

#[tokio::test(flavor = "multi_thread")]
async fn hostile_48_terminal_escapes_are_escaped_in_json_and_in_the_cli() {
    // The API: JSON escapes every control character by construction, and the text survives.
    let app = TestApp::spawn().await;
    let expected =
        "\u{1b}[31mred\u{1b}[0m\r\u{7}|\u{202e}evil|\u{9b}2J|\ttab|\u{1b}]0;title\u{7}\n";
    for stream in [false, true] {
        let r = app
            .client
            .post(app.url("/v1/code_interpreter/execute"))
            .json(&json!({"code": TERMINAL_ATTACK, "session_id": "h48", "stream": stream}))
            .send()
            .await
            .unwrap();
        let raw = r.bytes().await.unwrap();
        // No raw control byte at all (SSE's own line breaks aside).
        assert!(
            raw.iter().all(|&b| b >= 0x20 || (stream && b == b'\n')),
            "raw control bytes in {}",
            String::from_utf8_lossy(&raw)
        );
        let text = String::from_utf8(raw.to_vec()).unwrap();
        let body: serde_json::Value = if stream {
            let line = text
                .lines()
                .skip_while(|l| *l != "event: result")
                .nth(1)
                .unwrap();
            serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        assert_eq!(body["stdout"], expected, "{body}");
    }
    let (_, body) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "print(1)", "session_id": "h48"}),
        )
        .await;
    assert_eq!(body["stdout"], "1\n");
    app.stop().await;

    // The CLI prints guest text to a terminal: controls other than \n and \t come out escaped,
    // in what the code printed, in the final value and in file names.
    crate::helpers::sandbox();
    let out = crate::helpers::oasis_binary(&["OASIS_DATA_DIR"])
        .env_remove("OASIS_RUNTIME_DIR")
        .env("OASIS_DATA_DIR", data_dir())
        .args(["exec", "-c"])
        .arg(format!(
            "{TERMINAL_ATTACK}\nimport sys\nsys.stderr.write('\\x1b[2J\\n')\n\
             open('/mnt/data/\\x1b[2Jx.txt', 'w').write('x')\n\
             class R:\n    def __repr__(self):\n        return '\\x1b]0;owned\\x07'\nR()"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "\\x1b[31mred\\x1b[0m\\r\\x07|\\u{202e}evil|\\u{009b}2J|\ttab|\\x1b]0;title\\x07\n\
         \\x1b]0;owned\\x07\n"
    );
    assert!(stderr.starts_with("\\x1b[2J\n"), "{stderr}");
    assert!(
        stderr.contains("created /mnt/data/\\x1b[2Jx.txt"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_49_closing_or_redirecting_stdout_is_a_guest_error_only() {
    let c = Case::new().await;
    let r = c
        .probes(
            "h49",
            r#"
fd = os.open('/mnt/data/capture', os.O_WRONLY | os.O_CREAT)
probe('close 1', lambda: os.close(1))
probe('close 2', lambda: os.close(2))
probe('close 0', lambda: os.close(0))
probe('dup2 file to 1', lambda: os.dup2(fd, 1))
probe('dup 1', lambda: os.dup(1))
probe('write fd 999', lambda: os.write(999, b'x'))
probe('write fd 3', lambda: os.write(3, b'x'))
sys.stdout.flush()
os.write(1, b'still captured\n')
print('printed')
"#,
            7,
        )
        .await;
    assert!(
        r.stdout.ends_with("still captured\nprinted\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::metadata(c.data("h49").join("capture"))
            .unwrap()
            .len(),
        0
    );
    c.assert_healthy("h49").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_50_output_exactly_at_the_cap_is_whole_and_one_more_byte_is_truncated() {
    let c = Case::new().await;
    let caps = |l: &mut Limits| {
        l.stdout_bytes = 100;
        l.stderr_bytes = 100;
    };
    for stream in ["stdout", "stderr"] {
        let r = c
            .run_with(
                "h50",
                &format!("import sys\nsys.{stream}.write('x' * 100)"),
                caps,
            )
            .await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert!(!r.truncated());
        let text = if stream == "stdout" {
            &r.stdout
        } else {
            &r.stderr
        };
        assert_eq!(text.len(), 100);
        let r = c
            .run_with(
                "h50",
                &format!("import sys\nsys.{stream}.write('x' * 101)"),
                caps,
            )
            .await;
        assert_eq!(r.outcome, Outcome::OutputLimit, "{r:?}");
        let (text, truncated) = if stream == "stdout" {
            (&r.stdout, r.stdout_truncated)
        } else {
            (&r.stderr, r.stderr_truncated)
        };
        assert!(truncated);
        assert_eq!(text.as_str(), "x".repeat(100));
        assert_eq!(r.exit_code, Some(0));
    }
    c.assert_healthy("h50").await;
}

// ---------------------------------------------------------------------------------------------
// Input

#[tokio::test(flavor = "multi_thread")]
async fn hostile_51_oversized_or_binary_source_is_refused_before_it_runs() {
    let c = Case::new().await;
    let big = format!("x = 1\n{}", "# padding\n".repeat(1 << 20));
    for code in [big.as_str(), "print('a')\0print('b')"] {
        let e = c.try_run("h51", code, |_| {}).await.unwrap_err();
        assert!(matches!(e, SandboxError::InvalidInput(_)), "{e}");
    }
    // Bytes that are not UTF-8 never become code: the API refuses the body.
    let app = TestApp::spawn().await;
    let r = app
        .client
        .post(app.url("/v1/code_interpreter/execute"))
        .header("content-type", "application/json")
        .body(b"{\"code\": \"print(1)\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    crate::helpers::err_parts(&body);
    app.stop().await;
    c.assert_healthy("h51").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_52_exits_and_interrupts_are_guest_outcomes() {
    let c = Case::new().await;
    let r = c.run("h52", "keep = 1\nraise SystemExit(7)").await;
    assert_eq!((r.outcome, r.exit_code), (Outcome::Error, Some(7)), "{r:?}");
    assert!(!r.interpreter_reset);
    let r = c.run("h52", "raise KeyboardInterrupt").await;
    assert_eq!((r.outcome, r.exit_code), (Outcome::Error, Some(1)), "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().name, "KeyboardInterrupt");
    let r = c.run("h52", "keep").await;
    assert_eq!(r.result.as_deref(), Some("1"));
    let r = c.run("h52", "import os\nos._exit(9)").await;
    assert_eq!(r.exit_code, Some(9), "{r:?}");
    assert_eq!(r.outcome, Outcome::Error);
    assert!(r.interpreter_reset);
    c.assert_healthy("h52").await;
    let r = c.run("h52", "exit(5)").await;
    assert_eq!((r.outcome, r.exit_code), (Outcome::Error, Some(5)), "{r:?}");
    assert!(r.interpreter_reset);
    c.assert_healthy("h52").await;
}

// ---------------------------------------------------------------------------------------------
// State and isolation

#[tokio::test(flavor = "multi_thread")]
async fn hostile_53_a_trap_in_one_session_leaves_a_busy_neighbour_untouched() {
    let c = Case::with(ManagerConfig {
        warm_pool: 0,
        max_parallel: 2,
        ..ManagerConfig::default()
    })
    .await;
    c.run("busy", "base = 40").await;
    // Waiting on a lock that no thread can release traps in this runtime (`unreachable`).
    let trap = c.run(
        "crash",
        "import _thread\nl = _thread.allocate_lock()\nl.acquire()\nl.acquire(True, 1)",
    );
    let work = c.run(
        "busy",
        "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 0.5:\n    base += 0\nbase + 2",
    );
    let (trap, work) = tokio::join!(trap, work);
    assert_eq!(trap.outcome, Outcome::Crashed, "{trap:?}");
    assert!(trap.interpreter_reset);
    assert_eq!(work.outcome, Outcome::Ok, "{work:?}");
    assert_eq!(work.result.as_deref(), Some("42"));
    let r = c.run("busy", "base").await;
    assert_eq!(r.result.as_deref(), Some("40"));
    c.assert_healthy("crash").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_54_monkeypatches_stay_in_their_own_session() {
    let c = Case::new().await;
    let r = c
        .run(
            "patcher",
            r#"
import builtins, json, sys
orig_print, orig_len, orig_dumps = builtins.print, builtins.len, json.dumps
builtins.len = lambda x: 42
json.dumps = None
sys.path.insert(0, '/nowhere')
sys.modules['os'] = None
builtins.print = lambda *a, **k: None
"#,
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let check = "import json, sys, os\nprint(len([1, 2]), json.dumps([1]), sys.path, os.getcwd())";
    let pristine = "2 [1] ['/usr/local/lib/python315.zip'] /\n";
    for id in [SIBLING, "fresh"] {
        let r = c.run(id, check).await;
        assert_eq!(r.stdout, pristine, "{id}: {r:?}");
    }
    // The patcher sees its own changes (its state persists), until it undoes them.
    let r = c
        .run(
            "patcher",
            "sys.stdout.write(str(len([1, 2])))\nprint('swallowed')",
        )
        .await;
    assert_eq!(r.stdout, "42", "{r:?}");
    let r = c
        .run(
            "patcher",
            "builtins.print, builtins.len, json.dumps = orig_print, orig_len, orig_dumps\n\
             sys.path.remove('/nowhere')\ndel sys.modules['os']",
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let r = c.run("patcher", check).await;
    assert_eq!(r.stdout, pristine);
    c.assert_healthy("patcher").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_55_shared_code_cannot_be_poisoned() {
    let c = Case::new().await;
    let zip = runtime_dir().join("lib").join("python315.zip");
    let before = fingerprint(&zip);
    c.probes(
        "poisoner",
        r#"
for p in ['/usr/local/lib/python315.zip/json/__init__.py', '/usr/local/lib/sitecustomize.py',
          '/usr/local/lib/python315.zip/matplotlib/mpl-data/matplotlibrc']:
    probe(p, lambda: open(p, 'a').write('import os'))
# Shadowing a module in its own folders only fools the guest itself.
open('/mnt/data/json.py', 'w').write('POISONED = True\n')
open('/tmp/usercustomize.py', 'w').write('POISONED = True\n')
sys.path.insert(0, '/mnt/data')
sys.modules.pop('json', None)
import json
print('own', getattr(json, 'POISONED', False))
"#,
        3,
    )
    .await;
    for id in [SIBLING, "fresh"] {
        let r = c
            .run(
                id,
                "import json\nprint(hasattr(json, 'POISONED'), json.dumps([1]))",
            )
            .await;
        assert_eq!(r.stdout, "False [1]\n", "{id}: {r:?}");
    }
    assert_eq!(fingerprint(&zip), before);
    c.assert_healthy("poisoner").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_56_pickles_from_the_guest_are_opaque_bytes_to_the_host() {
    use sha2::Digest;
    let c = Case::new().await;
    let marker = c.s._root.path().join("unpickled");
    let r = c
        .run(
            "h56",
            &format!(
                r#"
import pickle, hashlib, os, _host
class Evil:
    def __reduce__(self):
        return (open, ({:?}, 'w'))
data = pickle.dumps(Evil())
open('/mnt/data/state.pkl', 'wb').write(data)
# The door sees it too, as a report that is not JSON.
_host.call(b'R' + data)
_host.call(b'E' + data)
print(hashlib.sha256(data).hexdigest())
"#,
                marker.display().to_string()
            ),
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let digest = r.stdout.trim();
    let f = r.files.iter().find(|f| f.relative == "state.pkl").unwrap();
    assert_eq!(f.sha256, digest);
    let bytes = c.s.manager.read_file("h56", "state.pkl", 1 << 20).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), digest);
    assert!(r.result.is_none() && r.error.is_none(), "{r:?}");
    assert!(!marker.exists(), "something ran the pickle");
    c.assert_healthy("h56").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_57_tampering_with_the_helper_only_affects_the_guest() {
    let c = Case::new().await;
    c.run("h57", "v = 1").await;
    // Rewire the reporting: results and errors go missing for this session only.
    let r = c
        .run(
            "h57",
            "import sys\nsys.displayhook = lambda v: None\nsys.excepthook = None",
        )
        .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let r = c.run("h57", "v + 1").await;
    assert_eq!(
        (r.outcome, r.result.as_deref()),
        (Outcome::Ok, None),
        "{r:?}"
    );
    // Break Oasis's post-turn hook and make the host run it: the interpreter is replaced.
    let r = c
        .run(
            "h57",
            "import sys, _host\nsys.modules['_oasis'] = None\nimport _reactor\n_reactor._turns = 'x'\n_host.call(b'F')",
        )
        .await;
    assert!(matches!(r.outcome, Outcome::Ok | Outcome::Crashed), "{r:?}");
    assert!(r.interpreter_reset, "{r:?}");
    // A fresh interpreter with the helper intact.
    let r = c.run("h57", "'v' in globals(), 6 * 7").await;
    assert_eq!(r.result.as_deref(), Some("(False, 42)"), "{r:?}");
    c.assert_healthy("h57").await;
}

// ---------------------------------------------------------------------------------------------
// Timing and side channels: out of scope. Oasis does not coarsen clocks and relies on wasmtime's
// own mitigations; these tests pin down what is true so a change is noticed.

#[tokio::test(flavor = "multi_thread")]
async fn hostile_58_the_guest_clock_is_monotonic_with_nanosecond_resolution() {
    // Side channels (timing other tenants) are out of scope: the guest's clocks are the host's,
    // not coarsened. This records the resolution the guest sees.
    let c = Case::new().await;
    let r = c
        .run(
            "h58",
            r#"
import time
info = time.get_clock_info('perf_counter')
reads = [time.perf_counter_ns() for _ in range(10000)]
print(info.resolution, info.monotonic, all(a <= b for a, b in zip(reads, reads[1:])))
"#,
        )
        .await;
    assert_eq!(r.stdout, "1e-09 True True\n", "{r:?}");
    c.assert_healthy("h58").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_59_the_guest_sees_only_its_own_32_bit_linear_memory() {
    // Spectre-style probes are out of scope: Oasis relies on wasmtime's mitigations (bounds-
    // checked linear memory with guard regions, hardened table and br_table) and keeps wasmtime
    // current (Cargo.toml pins the supported 48.x line). What the guest can address is its own.
    let c = Case::new().await;
    let r = c
        .probes(
            "h59",
            r#"
import platform
b = bytearray(16)
m = memoryview(b)
probe('index past the end', lambda: b[2**31 - 1], IndexError)
probe('view past the end', lambda: m[16], IndexError)
print(sys.maxsize == 2**31 - 1, platform.machine(), id(object()) < 2**32)
"#,
            2,
        )
        .await;
    assert!(r.stdout.ends_with("True wasm32 True\n"), "{}", r.stdout);
    c.assert_healthy("h59").await;
}

// ---------------------------------------------------------------------------------------------
// Host plumbing (case 60, killing the worker process, is with the worker tests)

#[tokio::test(flavor = "multi_thread")]
async fn hostile_61_a_corrupt_or_foreign_cached_module_is_rebuilt_never_loaded() {
    // A scratch data dir sharing the provisioned runtime (read-only), whose module cache holds a
    // planted entry under the real key. Rebuilding takes minutes, so the entry's lock path is
    // made a folder: the rebuild is attempted and fails fast, which is what we look for. The
    // shared cache is only listed, to learn the key.
    let keys: Vec<String> = std::fs::read_dir(data_dir().join("cache").join("modules"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".cwasm")
                .map(str::to_string)
        })
        .filter(|k| k.starts_with("scientific-"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    use sha2::Digest;
    for (case, digest_of, warning) in [
        ("corrupt", &b"other bytes"[..], "is corrupt; rebuilding"),
        (
            "foreign",
            &b"\x7fELF not a module"[..],
            "is stale; rebuilding",
        ),
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let modules = scratch.path().join("cache").join("modules");
        std::fs::create_dir_all(modules.join(format!("{key}.lock"))).unwrap();
        let cwasm = modules.join(format!("{key}.cwasm"));
        std::fs::write(&cwasm, b"\x7fELF not a module").unwrap();
        std::fs::write(
            modules.join(format!("{key}.sha256")),
            hex::encode(sha2::Sha256::digest(digest_of)),
        )
        .unwrap();
        let out =
            crate::helpers::oasis_binary(&["OASIS_DATA_DIR", "OASIS_RUNTIME_DIR", "OASIS_LOG"])
                .args(["runtime", "prepare"])
                .env("OASIS_DATA_DIR", scratch.path())
                .env("OASIS_RUNTIME_DIR", runtime_dir())
                .env("OASIS_LOG", "warn")
                .output()
                .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {err}");
        assert!(err.contains(warning), "{case}: {err}");
        assert!(
            err.contains("opening lock"),
            "{case}: went on to rebuild: {err}"
        );
        assert!(!cwasm.exists(), "{case}: the planted module was kept");
    }
    let c = Case::new().await;
    c.assert_healthy("h61").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_62_sessions_beyond_the_live_limit_are_admitted_by_eviction() {
    // Oasis does not use wasmtime's pooling allocator: there are no slots to run out of. Past
    // `max_live`, the least recently used idle interpreter is dropped to admit the next one.
    let c = Case::new().await; // the sibling lives in a manager of its own
    let crowded = sessions(ManagerConfig {
        max_live: 3,
        max_parallel: 2,
        warm_pool: 0,
        ..ManagerConfig::default()
    })
    .await;
    let mut tasks = vec![];
    for i in 0..12 {
        let m = crowded.manager.clone();
        tasks.push(tokio::spawn(async move {
            m.execute(
                &format!("s{i}"),
                None,
                format!("n = {i}\nn"),
                ExecOptions::default(),
            )
            .await
            .unwrap()
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let r = task.await.unwrap();
        assert_eq!(r.result, Some(i.to_string()), "{r:?}");
    }
    // (While calls wait their turn `live_count` counts them too, so look once all are done.)
    assert!(
        crowded.manager.live_count() <= 3,
        "{}",
        crowded.manager.live_count()
    );
    // Once calls come one at a time, a new session brings the count back to the limit.
    let r = crowded
        .manager
        .execute("late", None, "print(1)".into(), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(r.stdout, "1\n");
    assert!(
        crowded.manager.live_count() <= 3,
        "{}",
        crowded.manager.live_count()
    );
    c.assert_healthy("h62").await;
}
