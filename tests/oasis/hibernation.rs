//! Hibernating sessions: an interpreter dropped for idleness or room is written to its
//! session's folder and comes back, variables, imports and all, on the next call.

use std::time::Duration;

use oasis::sandbox::{ExecOptions, ExecResult, ManagerConfig, Outcome, SessionManager};

use crate::helpers::{Sessions, run, run_with, sessions};

/// `code` in session `id`, which must end `Ok`.
async fn run_ok(s: &Sessions, id: &str, code: &str) -> ExecResult {
    let r = run(s, id, code).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    r
}

const BUILD: &str = "import pandas as pd, numpy as np, random\n\
random.seed(7)\n\
df = pd.DataFrame({'x': np.arange(10_000), 'y': np.arange(10_000) * 2.5})\n\
total = float(df.y.sum())\n\
nxt = random.random()\n\
random.seed(7)\n\
random.random() == nxt";

const CHECK: &str = "(len(df), float(df.y.sum()) == total, random.random() != nxt, pd.__name__)";

#[tokio::test(flavor = "multi_thread")]
async fn variables_imports_and_a_dataframe_survive_the_idle_ttl() {
    let s = sessions(ManagerConfig {
        idle_ttl: Duration::from_millis(100),
        ..ManagerConfig::default()
    })
    .await;
    let r = run_ok(&s, "idle", BUILD).await;
    assert_eq!(r.result.as_deref(), Some("True"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.manager.reap_idle().await, 1);
    assert_eq!(s.manager.live_count(), 0);
    let info = s.manager.info("idle").unwrap().unwrap();
    assert!(info.hibernated && !info.live, "{info:?}");
    assert!(info.state_bytes > 0, "{info:?}");
    let r = run_ok(&s, "idle", CHECK).await;
    assert_eq!(
        r.result.as_deref(),
        Some("(10000, True, True, 'pandas')"),
        "{r:?}"
    );
    assert!(r.notice.is_none(), "{r:?}");
    assert!(s.manager.info("idle").unwrap().unwrap().live);
}

#[tokio::test(flavor = "multi_thread")]
async fn evicted_sessions_come_back_whole_and_never_mix() {
    let s = sessions(ManagerConfig {
        max_live: 1,
        ..ManagerConfig::default()
    })
    .await;
    run_ok(
        &s,
        "a",
        "who = 'a'\nimport json\nblob = json.dumps({'k': list(range(1000))})",
    )
    .await;
    run_ok(&s, "b", "who = 'b'\nimport statistics").await;
    // a was evicted for b, then b for a, and so on.
    for _ in 0..2 {
        let r = run_ok(&s, "a", "(who, len(blob), 'statistics' in dir())").await;
        assert_eq!(r.result.as_deref(), Some("('a', 4897, False)"), "{r:?}");
        let r = run_ok(
            &s,
            "b",
            "(who, 'blob' in dir(), statistics.mean([1, 2, 3]))",
        )
        .await;
        assert_eq!(r.result.as_deref(), Some("('b', False, 2)"), "{r:?}");
    }
}

/// A call that ends its interpreter (here a timeout) starts the next one fresh, as the result
/// says: an older hibernated state does not come back in its place.
#[tokio::test(flavor = "multi_thread")]
async fn an_interpreter_that_dies_is_not_replaced_by_an_older_state() {
    let s = sessions(ManagerConfig {
        idle_ttl: Duration::from_millis(50),
        ..ManagerConfig::default()
    })
    .await;
    run_ok(&s, "die", "old = 1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.manager.reap_idle().await, 1);
    // Resumed from the state, then a loop past the deadline ends the interpreter.
    let r = run_with(&s, "die", "assert old == 1\nwhile True: pass", |l| {
        l.timeout = Duration::from_millis(500)
    })
    .await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(r.interpreter_reset);
    let r = run_ok(&s, "die", "'old' in globals()").await;
    assert_eq!(r.result.as_deref(), Some("False"), "{r:?}");
    assert!(r.notice.is_none(), "{r:?}");
}

/// Set `keep` in session `id`, then hibernate it (as a shutdown would).
async fn hibernated(s: &Sessions, id: &str) {
    run_ok(s, id, "import numpy as np\nkeep = 'kept'").await;
    assert!(s.manager.hibernate_all(Duration::ZERO).await >= 1);
    let info = s.manager.info(id).unwrap().unwrap();
    assert!(info.hibernated && !info.live, "{info:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_session_is_held_to_its_memory_cap_deadline_and_disk_quota() {
    let s = sessions(ManagerConfig::default()).await;

    // Memory: the resumed interpreter (its variables there) cannot grow past the cap.
    hibernated(&s, "mem").await;
    let r = run_with(
        &s,
        "mem",
        "print(keep)\nblob = bytearray(400 * 1024 * 1024)",
        |l| l.memory_bytes = 256 << 20,
    )
    .await;
    assert_eq!(r.outcome, Outcome::MemoryLimit, "{r:?}");
    assert_eq!(r.stdout, "kept\n", "{r:?}");
    assert!(r.notice.is_none(), "{r:?}");
    // The MemoryError was the code's: the session goes on, variables and all.
    let r = run_ok(&s, "mem", "keep, 'blob' in globals()").await;
    assert_eq!(r.result.as_deref(), Some("('kept', False)"), "{r:?}");

    // Deadline: a busy loop in the resumed interpreter is stopped, and the interpreter is
    // replaced as without hibernation: its saved state goes with it.
    hibernated(&s, "time").await;
    let r = run_with(
        &s,
        "time",
        "print(keep, flush=True)\nwhile True:\n    pass",
        |l| l.timeout = Duration::from_secs(2),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_eq!(r.stdout, "kept\n", "{r:?}");
    let info = s.manager.info("time").unwrap().unwrap();
    assert!(
        !info.live && !info.hibernated && info.state_bytes == 0,
        "{info:?}"
    );
    let r = run_ok(&s, "time", "'keep' in globals()").await;
    assert_eq!(r.result.as_deref(), Some("False"), "{r:?}");

    // Disk: writes past the quota fail with ENOSPC, whatever the interpreter went through.
    hibernated(&s, "disk").await;
    let code = "print(keep)\n\
                import errno\n\
                try:\n\
                \x20   with open('/mnt/data/big.bin', 'wb') as f:\n\
                \x20       for _ in range(8):\n\
                \x20           f.write(b'x' * (1 << 20))\n\
                except OSError as e:\n\
                \x20   print('refused', e.errno == errno.ENOSPC)";
    let r = run_with(&s, "disk", code, |l| l.disk_bytes = 4 << 20).await;
    assert_eq!(r.stdout, "kept\nrefused True\n", "{r:?}");
    let big = s.manager.data_dir("disk").unwrap().join("big.bin");
    assert!(std::fs::metadata(&big).unwrap().len() <= 4 << 20);
}

/// Set a folder's modification time back by `ago` (what retention reads).
fn age(dir: &std::path::Path, ago: Duration) {
    let f = std::fs::File::open(dir).unwrap();
    f.set_modified(std::time::SystemTime::now() - ago).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_unused_past_their_retention_are_deleted_with_their_state() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let sb = tokio::task::spawn_blocking(crate::helpers::sandbox)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("sessions");
    let config = ManagerConfig {
        session_retention: DAY,
        ..ManagerConfig::default()
    };
    let before = SessionManager::new(sb.clone(), &root, config.clone());
    let (old_0, old_1, recent) = (shard_id(0, "old"), shard_id(1, "old"), "recent");
    for id in [old_0.as_str(), old_1.as_str(), recent] {
        before
            .execute(id, None, "v = 1".into(), ExecOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(before.hibernate_all(Duration::ZERO).await, 3);
    drop(before);
    for id in [&old_0, &old_1] {
        assert!(root.join(id).join("hibernated.state").exists());
        age(&root.join(id), 2 * DAY);
    }
    age(&root.join(recent), DAY / 2);

    // A sandbox worker sweeps only the sessions that shard to it.
    let worker_1 = SessionManager::in_worker(sb.clone(), &root, config.clone(), 1, 2);
    assert_eq!(worker_1.sweep_retired().await, 1);
    assert!(!root.join(&old_1).exists());
    assert!(worker_1.info(&old_1).unwrap().is_none());
    assert!(root.join(&old_0).exists());

    // After a restart (one manager for all), the other old one goes, the recent one stays
    // with its state.
    let after = SessionManager::new(sb, &root, config);
    assert_eq!(after.sweep_retired().await, 1);
    assert!(!root.join(&old_0).exists());
    let info = after.info(recent).unwrap().unwrap();
    assert!(info.hibernated && info.state_bytes > 0, "{info:?}");
    let r = after
        .execute(recent, None, "v + 1".into(), ExecOptions::default())
        .await
        .unwrap();
    assert_eq!(r.result.as_deref(), Some("2"), "{r:?}");
}

/// A session id (made from `tag`) that shards to worker `shard` of 2.
fn shard_id(shard: usize, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|id| oasis::sandbox::shard_of(id, 2) == shard)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tmp_is_kept_across_hibernation_and_files_left_open_are_closed() {
    let s = sessions(ManagerConfig::default()).await;
    run_ok(
        &s,
        "open",
        "open('/tmp/note.txt', 'w').write('in tmp')\n\
         log = open('/mnt/data/log.txt', 'w')\n\
         log.write('before\\n')\n\
         log.flush()",
    )
    .await;
    assert_eq!(s.manager.hibernate_all(Duration::ZERO).await, 1);
    let r = run_ok(
        &s,
        "open",
        "import errno\n\
         print(open('/tmp/note.txt').read())\n\
         try:\n\
         \x20   log.write('after\\n')\n\
         \x20   log.flush()\n\
         \x20   print('still open')\n\
         except OSError as e:\n\
         \x20   print('closed', e.errno == errno.EBADF)\n\
         print(open('/mnt/data/log.txt').read(), end='')",
    )
    .await;
    assert_eq!(r.stdout, "in tmp\nclosed True\nbefore\n", "{r:?}");
}

/// On Linux the kernel's pagemap is trusted for the scientific image, so the hibernations of
/// these tests (debug builds) skip untouched chunks and check each skipped one against the
/// image: a chunk wrongly shown untouched would fail them.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn untouched_chunks_are_found_from_the_pagemap_and_checked_in_tests() {
    let sb = tokio::task::spawn_blocking(crate::helpers::sandbox)
        .await
        .unwrap();
    let image = sb.image("scientific").unwrap();
    let base = image.base_memory().await.unwrap();
    assert!(
        base.pagemap,
        "the pagemap probe failed: every chunk is compared"
    );
    let s = sessions(ManagerConfig {
        max_live: 1,
        ..ManagerConfig::default()
    })
    .await;
    run_ok(
        &s,
        "p",
        "import numpy as np\nv = np.arange(100_000, dtype=np.int64)",
    )
    .await;
    run_ok(&s, "q", "w = 2").await;
    let r = run_ok(&s, "p", "int(v.sum())").await;
    assert_eq!(r.result.as_deref(), Some("4999950000"), "{r:?}");
}

/// With `hibernate_every_turn`, evicting an interpreter writes nothing again (its state file
/// already is its state, no code having run since), and the session comes back as its last
/// turn left it.
#[tokio::test(flavor = "multi_thread")]
async fn an_every_turn_state_is_not_written_again_at_eviction() {
    use std::os::unix::fs::MetadataExt;
    let s = sessions(ManagerConfig {
        max_live: 1,
        hibernate_every_turn: true,
        ..ManagerConfig::default()
    })
    .await;
    run_ok(&s, "a", "x = 41").await;
    run_ok(&s, "a", "x += 1").await;
    let state = s
        .manager
        .data_dir("a")
        .unwrap()
        .parent()
        .unwrap()
        .join("hibernated.state");
    let written = std::fs::metadata(&state).unwrap().ino();
    // b's call evicts a.
    run_ok(&s, "b", "y = 1").await;
    assert!(s.manager.info("a").unwrap().unwrap().hibernated);
    assert_eq!(std::fs::metadata(&state).unwrap().ino(), written);
    let r = run_ok(&s, "a", "x").await;
    assert_eq!(r.result.as_deref(), Some("42"), "{r:?}");
    // A turn since the last write is never lost to the shortcut.
    run_ok(&s, "a", "x += 1").await;
    run_ok(&s, "b", "y += 1").await;
    let r = run_ok(&s, "a", "x").await;
    assert_eq!(r.result.as_deref(), Some("43"), "{r:?}");
}
