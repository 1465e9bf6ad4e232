//! The sandbox core, through `SessionManager`, as the API will use it.

use std::time::{Duration, Instant};

use oasis::sandbox::{ExecOptions, ManagerConfig, Outcome, SandboxError};

use crate::helpers::{PNG_SIGNATURE, Sessions, run, run_with, sessions};

#[tokio::test(flavor = "multi_thread")]
async fn prints_the_first_20_fibonacci_numbers() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run(
        &s,
        "fib",
        "a, b = 0, 1\nout = []\nfor _ in range(20):\n    out.append(a)\n    a, b = b, a + b\nprint(out)",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(
        r.stdout,
        "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]\n"
    );
    assert_eq!(r.exit_code, Some(0));
    assert!(r.error.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_in_mnt_data_becomes_a_png_chart_there() {
    let s = sessions(ManagerConfig::default()).await;
    let data = s.manager.data_dir("chart").unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("sales.csv"), oasis::bench::sales_csv()).unwrap();
    let r = run(&s, "chart", oasis::bench::CHART_CODE).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.stdout, "12\n");
    let png = std::fs::read(data.join("chart.png")).unwrap();
    assert!(png.starts_with(PNG_SIGNATURE), "not a PNG");
    let f = r
        .files
        .iter()
        .find(|f| f.path == "/mnt/data/chart.png")
        .expect("chart.png is reported");
    assert_eq!(f.size, png.len() as u64);
    assert!(f.created);
    use sha2::Digest;
    assert_eq!(f.sha256, hex::encode(sha2::Sha256::digest(&png)));
    // The input was only read, so it is not reported.
    assert!(!r.files.iter().any(|f| f.relative == "sales.csv"));
    // The chart was closed, so no inline image.
    assert!(r.images.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_figure_left_open_or_shown_becomes_an_image_output_once() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run(
        &s,
        "fig",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.figure()\nplt.bar(['a', 'b'], [3, 5])\nplt.show()",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.images.len(), 2, "{r:?}");
    for img in &r.images {
        assert!(img.starts_with(PNG_SIGNATURE));
    }
    assert!(!r.stderr.contains("non-interactive"), "{}", r.stderr);
    // Rendered figures are closed: the next call has none.
    let r = run(
        &s,
        "fig",
        "import matplotlib.pyplot as plt\nlen(plt.get_fignums())",
    )
    .await;
    assert_eq!(r.result.as_deref(), Some("0"));
    assert!(r.images.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_and_imports_persist_across_calls_and_the_last_value_is_returned() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run(&s, "state", "import statistics\nx = 41").await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.result, None);
    let r = run(&s, "state", "x += 1\nstatistics.mean([x, x])").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.result.as_deref(), Some("42"));
    // The value is the result, not printed output.
    assert_eq!(r.stdout, "");
    let r = run(&s, "state", "'text'").await;
    assert_eq!(r.result.as_deref(), Some("'text'"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exception_returns_its_traceback_and_the_session_keeps_working() {
    let s = sessions(ManagerConfig::default()).await;
    run(&s, "exc", "y = 7").await;
    let r = run(&s, "exc", "def f():\n    return 1 / 0\nf()").await;
    assert_eq!(r.outcome, Outcome::Error);
    assert_eq!(r.exit_code, Some(1));
    let e = r.error.expect("a Python error");
    assert_eq!(e.name, "ZeroDivisionError");
    assert_eq!(e.message, "division by zero");
    assert!(e.traceback.contains("Traceback"), "{}", e.traceback);
    assert!(e.traceback.contains("in f"), "{}", e.traceback);
    assert!(r.stderr.contains("ZeroDivisionError"), "{}", r.stderr);
    assert!(!r.interpreter_reset);
    let r = run(&s, "exc", "y * 6").await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.result.as_deref(), Some("42"));
    let r = run(&s, "exc", "import sys\nsys.exit(3)").await;
    assert_eq!(r.outcome, Outcome::Error);
    assert_eq!(r.exit_code, Some(3));
    assert!(r.error.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_ends_at_the_deadline_and_a_fresh_interpreter_follows() {
    let s = sessions(ManagerConfig::default()).await;
    run(
        &s,
        "loop",
        "z = 5\nopen('/mnt/data/keep.txt', 'w').write('kept')",
    )
    .await;
    let t = Instant::now();
    let r = run_with(&s, "loop", "while True: pass", |l| {
        l.timeout = Duration::from_secs(1)
    })
    .await;
    let took = t.elapsed();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(r.interpreter_reset);
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // Same /mnt/data, new interpreter.
    let r = run(
        &s,
        "loop",
        "print(open('/mnt/data/keep.txt').read())\n'z' in globals()",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.stdout, "kept\n");
    assert_eq!(r.result.as_deref(), Some("False"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_sleep_ends_at_the_deadline() {
    let s = sessions(ManagerConfig::default()).await;
    let t = Instant::now();
    let r = run_with(&s, "sleep", "import time\ntime.sleep(1000)", |l| {
        l.timeout = Duration::from_secs(1)
    })
    .await;
    let took = t.elapsed();
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    let r = run(&s, "sleep", "1 + 1").await;
    assert_eq!(r.result.as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_allocation_hits_the_memory_cap_as_memory_error() {
    let s = sessions(ManagerConfig::default()).await;
    // The guest is 32-bit: 2**31 bytes cannot even be asked for.
    let r = run_with(&s, "mem", "b = bytearray(2**31)", |l| {
        l.memory_bytes = 512 << 20
    })
    .await;
    assert_eq!(r.outcome, Outcome::Error, "{r:?}");
    assert_eq!(r.error.expect("an exception").name, "OverflowError");
    // 1.5 GB is a real request, refused at the 512 MiB cap.
    let r = run_with(&s, "mem", "b = bytearray(1_500_000_000)", |l| {
        l.memory_bytes = 512 << 20
    })
    .await;
    assert_eq!(r.outcome, Outcome::MemoryLimit, "{r:?}");
    let e = r.error.expect("MemoryError is raised in the guest");
    assert_eq!(e.name, "MemoryError");
    assert!(!r.interpreter_reset);
    // The session survives a MemoryError with its state.
    let r = run_with(&s, "mem", "keep = 1\nx = [0] * 10**9", |l| {
        l.memory_bytes = 512 << 20
    })
    .await;
    assert_eq!(r.outcome, Outcome::MemoryLimit, "{r:?}");
    let r = run(&s, "mem", "len(bytearray(10)) + keep").await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(r.result.as_deref(), Some("11"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mb_print_is_truncated_at_the_cap() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run_with(
        &s,
        "big",
        "print('x' * (100 * 1024 * 1024))\nprint('done')",
        |l| l.stdout_bytes = 1 << 20,
    )
    .await;
    assert_eq!(r.outcome, Outcome::OutputLimit, "{:?}", r.detail);
    assert!(r.stdout_truncated);
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stdout.bytes().all(|b| b == b'x'));
    assert_eq!(r.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_cannot_see_each_others_files() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run(
        &s,
        "alice",
        "open('/mnt/data/secret.txt', 'w').write('alice only')",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok);
    let r = run(
        &s,
        "bob",
        "import os\nprint(os.listdir('/mnt/data'))\nprint(os.path.exists('/mnt/data/secret.txt'))\n\
         for p in ['../alice/data/secret.txt', '/mnt/data/../../alice/data/secret.txt', '/mnt/alice/data/secret.txt']:\n    \
         try:\n        open(p).read(); print('READ', p)\n    except OSError as e:\n        print('denied', type(e).__name__)",
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(r.stdout.starts_with("[]\nFalse\n"), "{}", r.stdout);
    assert!(!r.stdout.contains("READ"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("denied").count(), 3, "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_and_dot_dot_escapes_are_out_of_reach() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run(
        &s,
        "escape",
        r#"
import os
out = []
for p in ['/etc/passwd', '/mnt/data/../../etc/passwd', '../../../../etc/passwd', '/proc/self/environ', '/root']:
    try:
        open(p).read()
        out.append('READ ' + p)
    except OSError as e:
        out.append('denied')
try:
    os.symlink('/etc/passwd', '/mnt/data/link')
    open('/mnt/data/link').read()
    out.append('READ via symlink')
except OSError:
    out.append('denied')
try:
    os.listdir('/')
    out.append('LISTED /')
except OSError:
    out.append('denied')
print(out)
print(sorted(k for k in os.environ))
"#,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(
        !r.stdout.contains("READ") && !r.stdout.contains("LISTED"),
        "{}",
        r.stdout
    );
    // No host environment leaks in: only what Oasis and the image set.
    assert!(
        r.stdout.ends_with(
            "['HOME', 'MPLBACKEND', 'MPLCONFIGDIR', 'PYTHONIOENCODING', 'PYTHONTZPATH', 'TMPDIR']\n"
        ),
        "{}",
        r.stdout
    );
    // The stdlib is read-only.
    let r = run(
        &s,
        "escape",
        "import os\ntry:\n    open('/usr/local/lib/python315.zip', 'ab').write(b'x')\n    print('WROTE')\nexcept OSError:\n    print('denied')\ntry:\n    os.link('/usr/local/lib/python315.zip', '/mnt/data/zip')\n    print('LINKED')\nexcept OSError:\n    print('denied')",
    )
    .await;
    assert_eq!(r.stdout, "denied\ndenied\n", "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_past_the_storage_quota_fail_with_enospc() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run_with(
        &s,
        "quota",
        "import errno\ntry:\n    with open('/mnt/data/big.bin', 'wb') as f:\n        for _ in range(100):\n            f.write(b'x' * 100_000)\n    print('WROTE ALL')\nexcept OSError as e:\n    print('stopped', e.errno == errno.ENOSPC)",
        |l| l.disk_bytes = 1_000_000,
    )
    .await;
    assert!(r.stdout.contains("stopped True"), "{r:?}");
    let size = std::fs::metadata(s.manager.data_dir("quota").unwrap().join("big.bin"))
        .unwrap()
        .len();
    assert!(size <= 1_000_000, "{size}");
    let r = run_with(
        &s,
        "quota",
        "n = 0\ntry:\n    for i in range(100):\n        open(f'/mnt/data/f{i}', 'w').close(); n += 1\nexcept OSError:\n    pass\nn",
        |l| l.disk_files = 10,
    )
    .await;
    let n: u32 = r.result.unwrap().parse().unwrap();
    assert!(n < 10, "{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn evicted_sessions_keep_their_files_but_not_their_variables() {
    // With hibernation off (see hibernation.rs for it on).
    let s = sessions(ManagerConfig {
        max_live: 2,
        hibernate: false,
        ..ManagerConfig::default()
    })
    .await;
    run(&s, "s1", "v = 1\nopen('/mnt/data/a.txt', 'w').write('one')").await;
    run(&s, "s2", "v = 2").await;
    run(&s, "s3", "v = 3").await;
    assert!(s.manager.live_count() <= 2);
    // s1 was least recently used: its interpreter is gone, its files are not.
    let r = run(
        &s,
        "s1",
        "print(open('/mnt/data/a.txt').read())\n'v' in globals()",
    )
    .await;
    assert_eq!(r.stdout, "one\n");
    assert_eq!(r.result.as_deref(), Some("False"));
    let r = run(&s, "s3", "v").await;
    assert_eq!(r.result.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_interpreters_are_dropped_after_the_ttl() {
    // With hibernation off (see hibernation.rs for it on).
    let s = sessions(ManagerConfig {
        idle_ttl: Duration::from_millis(100),
        hibernate: false,
        ..ManagerConfig::default()
    })
    .await;
    run(&s, "idle", "w = 1").await;
    assert_eq!(s.manager.live_count(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.manager.reap_idle().await, 1);
    let r = run(&s, "idle", "'w' in globals()").await;
    assert_eq!(r.result.as_deref(), Some("False"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_on_one_session_run_one_at_a_time() {
    let s = sessions(ManagerConfig::default()).await;
    run(&s, "serial", "log = []").await;
    let mut tasks = vec![];
    for i in 0..4 {
        let m = s.manager.clone();
        tasks.push(tokio::spawn(async move {
            m.execute(
                "serial",
                None,
                format!("import time\nlog.append(('start', {i}))\ntime.sleep(0.05)\nlog.append(('end', {i}))"),
                ExecOptions::default(),
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().outcome, Outcome::Ok);
    }
    let r = run(&s, "serial", "all(log[k][0] == 'start' and log[k+1][0] == 'end' and log[k][1] == log[k+1][1] for k in range(0, 8, 2))").await;
    assert_eq!(r.result.as_deref(), Some("True"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_and_unknown_images_are_clear_errors() {
    let s = sessions(ManagerConfig::default()).await;
    let e = s
        .manager
        .execute("../x", None, "1".into(), ExecOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SandboxError::InvalidSessionId(_)), "{e}");
    let e = s
        .manager
        .execute("ok", Some("nope"), "1".into(), ExecOptions::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown image `nope`"), "{e}");
}

async fn wait_warm(s: &Sessions, n: usize) {
    s.manager.refill_warm();
    let until = Instant::now() + Duration::from_secs(60);
    while s.manager.warm_count() < n {
        assert!(Instant::now() < until, "the warm pool never filled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn warm_interpreters_serve_new_and_returning_sessions_with_their_own_files() {
    let s = sessions(ManagerConfig {
        warm_pool: 2,
        ..ManagerConfig::default()
    })
    .await;
    wait_warm(&s, 2).await;
    // A brand-new session takes a warm interpreter; its files land in its own folder.
    let r = run(
        &s,
        "w1",
        "open('/mnt/data/one.txt', 'w').write('1')\nimport os\nos.listdir('/mnt/data')",
    )
    .await;
    assert_eq!(r.result.as_deref(), Some("['one.txt']"), "{r:?}");
    assert!(s.manager.data_dir("w1").unwrap().join("one.txt").is_file());
    // A session whose files were put there first (e.g. uploads) sees them.
    let data = s.manager.data_dir("w2").unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in.csv"), "a,b\n1,2\n").unwrap();
    wait_warm(&s, 2).await;
    let r = run(&s, "w2", "import os\nsorted(os.listdir('/mnt/data'))").await;
    assert_eq!(r.result.as_deref(), Some("['in.csv']"), "{r:?}");
    // The quota follows the session's folders.
    let r = run_with(
        &s,
        "w2",
        "with open('/mnt/data/big', 'wb') as f:\n    f.write(b'x' * 5000)",
        |l| l.disk_bytes = 1000,
    )
    .await;
    assert_eq!(
        r.error.map(|e| e.name).as_deref(),
        Some("OSError"),
        "{:?}",
        r.stderr
    );
    // Another new session sees neither.
    wait_warm(&s, 1).await;
    let r = run(&s, "w3", "import os\nos.listdir('/mnt/data')").await;
    assert_eq!(r.result.as_deref(), Some("[]"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_has_no_network_and_no_processes() {
    let s = sessions(ManagerConfig::default()).await;
    let r = run(
        &s,
        "net",
        r#"
import socket, os, subprocess
out = []
for attempt in [
    lambda: socket.create_connection(('169.254.169.254', 80), timeout=1),
    lambda: socket.getaddrinfo('example.com', 80),
    lambda: __import__('urllib.request').request.urlopen('http://127.0.0.1:1', timeout=1),
    lambda: subprocess.run(['id']),
    lambda: os.system('id'),
]:
    try:
        res = attempt()
        out.append('ALLOWED' if res not in (-1, None) else 'refused')
    except Exception as e:
        out.append('refused')
print(out)
"#,
    )
    .await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(!r.stdout.contains("ALLOWED"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("refused").count(), 5, "{}", r.stdout);
}
