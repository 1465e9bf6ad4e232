//! Hibernating sessions: an interpreter dropped for idleness or room is written to its
//! session's folder and comes back, variables, imports and all, on the next call.

use std::time::Duration;

use oasis::sandbox::{ExecOptions, ExecResult, ManagerConfig, Outcome};

use crate::helpers::{Sessions, sessions};

async fn run(s: &Sessions, id: &str, code: &str) -> ExecResult {
    let r = s
        .manager
        .execute(id, None, code.to_string(), ExecOptions::default())
        .await
        .unwrap();
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
    let r = run(&s, "idle", BUILD).await;
    assert_eq!(r.result.as_deref(), Some("True"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.manager.reap_idle().await, 1);
    assert_eq!(s.manager.live_count(), 0);
    let info = s.manager.info("idle").unwrap().unwrap();
    assert!(info.hibernated && !info.live, "{info:?}");
    assert!(info.state_bytes > 0, "{info:?}");
    let r = run(&s, "idle", CHECK).await;
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
    run(
        &s,
        "a",
        "who = 'a'\nimport json\nblob = json.dumps({'k': list(range(1000))})",
    )
    .await;
    run(&s, "b", "who = 'b'\nimport statistics").await;
    // a was evicted for b, then b for a, and so on.
    for _ in 0..2 {
        let r = run(&s, "a", "(who, len(blob), 'statistics' in dir())").await;
        assert_eq!(r.result.as_deref(), Some("('a', 4897, False)"), "{r:?}");
        let r = run(
            &s,
            "b",
            "(who, 'blob' in dir(), statistics.mean([1, 2, 3]))",
        )
        .await;
        assert_eq!(r.result.as_deref(), Some("('b', False, 2)"), "{r:?}");
    }
}
