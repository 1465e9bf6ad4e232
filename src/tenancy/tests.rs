//! The key table, the project model and the keys file watcher.

use super::*;

fn project(id: &str) -> Project {
    Project {
        id: Arc::from(id),
        name: id.to_string(),
        limits: Limits::default(),
    }
}

fn hash_line(key: &str) -> String {
    format!("\"sha256:{}\"", hex::encode(hash_key(key)))
}

/// A keys file in a fresh temporary folder (kept alive by the returned guard).
fn keys_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn two_projects() -> String {
    format!(
        "[[projects]]\nid = \"team-a\"\nname = \"Team A\"\nkeys = [{}]\nmax_concurrent_runs = 4\n\n\
         [[projects]]\nid = \"team-b\"\nkeys = [{}, {}]\n",
        hash_line("sk-a"),
        hash_line("sk-b1"),
        hash_line("sk-b2")
            .to_uppercase()
            .replace("SHA256:", "sha256:"),
    )
}

#[test]
fn the_default_project_owns_session_keys_without_a_dot_and_others_their_prefix() {
    let default = Project::default_project();
    assert!(default.is_default());
    assert_eq!(default.session_key("thread_abc"), "thread_abc");
    assert!(default.owns_session_key("thread_abc"));
    assert!(!default.owns_session_key("a.thread_abc"));

    let a = project("a");
    assert!(!a.is_default());
    assert_eq!(a.session_key("thread_abc"), "a.thread_abc");
    assert!(a.owns_session_key("a.thread_abc"));
    assert!(!a.owns_session_key("thread_abc"));
    assert!(!a.owns_session_key("a."));
    assert!(!a.owns_session_key("ab.thread_abc"));
    // A session id with a dot cannot pass as another project's key.
    assert!(!a.owns_session_key("a.b.c"));
    assert!(!project("a-b").owns_session_key("a.thread"));
    assert!(!project("a").owns_session_key("a-b.thread"));
    // Keys made for different projects never collide, nor with the default's.
    let made: Vec<String> = ["a", "ab", "a-b", "b"]
        .iter()
        .flat_map(|p| ["x", "b", "a_x"].map(|s| project(p).session_key(s)))
        .chain(["x", "b", "a_x"].map(|s| default.session_key(s)))
        .collect();
    let unique: std::collections::HashSet<_> = made.iter().collect();
    assert_eq!(unique.len(), made.len());
    for key in &made {
        let owners = ["a", "ab", "a-b", "b"]
            .iter()
            .map(|p| project(p))
            .chain([Project::default_project()])
            .filter(|p| p.owns_session_key(key))
            .count();
        assert_eq!(owners, 1, "{key}");
    }
}

#[test]
fn a_project_is_full_when_it_has_its_most_live_sessions_and_the_key_is_not_one() {
    let live: Vec<String> = ["a.1", "a.2", "b.1", "3", "ab.4"]
        .map(String::from)
        .to_vec();
    let mut a = project("a");
    assert_eq!(a.sessions_full(&live, "a.9"), None, "no limit");
    a.limits.max_live_sessions = Some(2);
    assert_eq!(a.sessions_full(&live, "a.9"), Some(2));
    assert_eq!(a.sessions_full(&live, "a.1"), None, "already live");
    a.limits.max_live_sessions = Some(3);
    assert_eq!(a.sessions_full(&live, "a.9"), None);
    let mut d = Project::default_project();
    d.limits.max_live_sessions = Some(1);
    assert_eq!(d.sessions_full(&live, "9"), Some(1));
    d.limits.max_live_sessions = Some(2);
    assert_eq!(d.sessions_full(&live, "9"), None);
    let gone = Project::unlisted("gone");
    assert_eq!((&*gone.id, gone.limits), ("gone", Limits::default()));
}

#[test]
fn project_ids_are_1_to_64_letters_digits_underscores_or_dashes() {
    assert!(valid_project_id("a"));
    assert!(valid_project_id("Team_A-2"));
    assert!(valid_project_id(&"x".repeat(64)));
    assert!(!valid_project_id(""));
    assert!(!valid_project_id(&"x".repeat(65)));
    assert!(!valid_project_id("a.b"));
    assert!(!valid_project_id("a b"));
    assert!(!valid_project_id("a/b"));
    assert!(!valid_project_id("é"));
}

#[test]
fn constant_time_equality_is_one_only_for_equal_hashes() {
    let a = hash_key("x");
    let mut b = a;
    assert_eq!(ct_eq(&a, &b), 1);
    for i in [0, 17, 31] {
        for bit in [1u8, 0x80] {
            b = a;
            b[i] ^= bit;
            assert_eq!(ct_eq(&a, &b), 0);
        }
    }
}

#[test]
fn without_keys_or_file_the_server_is_open() {
    let keys = Keys::new(None, None).unwrap();
    assert!(keys.is_open());
    assert_eq!(keys.project_of("anything"), None);
    assert_eq!(keys.project("default"), Some(Project::default_project()));
    // Set but empty keys are not "no keys": nothing is let in unchecked.
    assert!(!Keys::new(Some(vec![" ".into()]), None).unwrap().is_open());
}

#[test]
fn plain_keys_belong_to_the_default_project_and_wrong_keys_to_none() {
    let keys = Keys::new(Some(vec!["sk-1".into(), " sk-2 ".into(), "".into()]), None).unwrap();
    assert!(!keys.is_open());
    assert_eq!(keys.project_of("sk-1"), Some(Project::default_project()));
    assert_eq!(keys.project_of("sk-2"), Some(Project::default_project()));
    for wrong in ["", "sk-3", "sk-1 ", "SK-1", "sk-"] {
        assert_eq!(keys.project_of(wrong), None, "{wrong:?}");
    }
    assert_eq!(keys.project("team-a"), None);
}

#[test]
fn hashed_keys_of_the_file_find_their_project_and_plain_keys_still_work() {
    let (_dir, path) = keys_file(&two_projects());
    let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path)).unwrap();
    assert!(!keys.is_open());
    assert_eq!(keys.generation(), 1);
    let a = keys.project_of("sk-a").unwrap();
    assert_eq!(&*a.id, "team-a");
    assert_eq!(a.name, "Team A");
    assert_eq!(a.limits.max_concurrent_runs, Some(4));
    assert_eq!(a.limits.max_live_sessions, None);
    assert_eq!(&*keys.project_of("sk-b1").unwrap().id, "team-b");
    // Stored in upper case, found all the same.
    assert_eq!(&*keys.project_of("sk-b2").unwrap().id, "team-b");
    assert_eq!(keys.project_of("team-b").map(|p| p.name), None);
    assert_eq!(keys.project("team-b").unwrap().name, "team-b");
    assert_eq!(
        keys.project_of("sk-plain"),
        Some(Project::default_project())
    );
    assert_eq!(keys.project_of("sk-c"), None);
    assert_eq!(keys.project_of(""), None);
    assert_eq!(keys.project("default"), Some(Project::default_project()));
    assert_eq!(keys.project("team-c"), None);
}

#[test]
fn the_file_may_give_the_default_project_keys_and_limits() {
    let (_dir, path) = keys_file(&format!(
        "[[projects]]\nid = \"default\"\nkeys = [{}, {}]\nmax_live_sessions = 2\n",
        hash_line("sk-d"),
        hash_line("sk-plain"),
    ));
    let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path)).unwrap();
    let d = keys.project_of("sk-d").unwrap();
    assert!(d.is_default());
    assert_eq!(d.limits.max_live_sessions, Some(2));
    assert_eq!(keys.project_of("sk-plain"), Some(d.clone()));
    assert_eq!(keys.project("default"), Some(d));
}

#[test]
fn a_plain_key_listed_under_another_project_is_refused() {
    let (_dir, path) = keys_file(&format!(
        "[[projects]]\nid = \"team-a\"\nkeys = [{}]\n",
        hash_line("sk-plain")
    ));
    let e = Keys::new(Some(vec!["sk-plain".into()]), Some(path.clone())).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("team-a") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("sk-plain") && !msg.contains(&hex::encode(hash_key("sk-plain"))));
}

#[test]
fn an_empty_file_lets_only_the_plain_keys_in() {
    let (_dir, path) = keys_file("# nothing yet\n");
    let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path.clone())).unwrap();
    assert!(keys.project_of("sk-plain").is_some());
    let keys = Keys::new(None, Some(path)).unwrap();
    assert!(!keys.is_open());
    assert_eq!(keys.project_of("sk-plain"), None);
}

#[test]
fn a_missing_or_invalid_file_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = Keys::new(None, Some(missing.clone())).unwrap_err();
    assert!(
        format!("{e:#}").contains(&missing.display().to_string()),
        "{e:#}"
    );
    let (_dir, path) = keys_file("[[projects]]\nid = \"a.b\"\n");
    assert!(Keys::new(None, Some(path)).is_err());
}

#[test]
fn debug_shows_counts_but_no_key_or_hash() {
    let (_dir, path) = keys_file(&two_projects());
    let keys = Keys::new(Some(vec!["sk-plain".into()]), Some(path)).unwrap();
    let shown = format!("{keys:?} {keys:#?}");
    assert!(shown.contains("keys: 4"), "{shown}");
    for secret in ["sk-plain", "sk-a", "sk-b1"] {
        assert!(!shown.contains(secret), "{shown}");
        let h = hex::encode(hash_key(secret));
        assert!(!shown.contains(&h) && !shown.contains(&h[..8]), "{shown}");
    }
}

#[test]
fn reload_picks_up_a_changed_file_and_keeps_the_old_table_on_a_broken_one() {
    let (_dir, path) = keys_file(&two_projects());
    let keys = Keys::new(None, Some(path.clone())).unwrap();
    assert!(keys.project_of("sk-a").is_some());
    assert!(keys.project_of("sk-new").is_none());

    std::fs::write(
        &path,
        format!(
            "[[projects]]\nid = \"team-c\"\nkeys = [{}]\n",
            hash_line("sk-new")
        ),
    )
    .unwrap();
    keys.reload().unwrap();
    assert_eq!(keys.generation(), 2);
    assert_eq!(&*keys.project_of("sk-new").unwrap().id, "team-c");
    // Struck out of the file: refused.
    assert_eq!(keys.project_of("sk-a"), None);
    assert_eq!(keys.project("team-a"), None);

    std::fs::write(
        &path,
        "[[projects]]\nid = \"team-c\"\nkeys = [\"sha256:00\"]\n",
    )
    .unwrap();
    assert!(keys.reload().is_err());
    assert_eq!(keys.generation(), 2);
    assert_eq!(&*keys.project_of("sk-new").unwrap().id, "team-c");

    std::fs::remove_file(&path).unwrap();
    assert!(keys.reload().is_err());
    assert_eq!(&*keys.project_of("sk-new").unwrap().id, "team-c");
}

#[test]
fn polling_loads_a_changed_text_but_not_a_touched_one() {
    let (_dir, path) = keys_file(&two_projects());
    let keys = Keys::new(None, Some(path.clone())).unwrap();
    keys.poll();
    assert_eq!(keys.generation(), 1);
    // Same text, new inode: looked at, not loaded again.
    crate::disk::write_atomic(&path, two_projects().as_bytes()).unwrap();
    keys.poll();
    keys.poll();
    assert_eq!(keys.generation(), 1);
    // A new text is read once it looks the same twice in a row (not half written).
    crate::disk::write_atomic(&path, b"").unwrap();
    keys.poll();
    assert_eq!(keys.generation(), 1);
    keys.poll();
    assert_eq!(keys.generation(), 2);
    assert_eq!(keys.project_of("sk-a"), None);
}

/// Wait until `keys` were loaded more than `generation` times; false after 10 s.
async fn reloaded(keys: &Keys, generation: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keys.generation() <= generation {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn watch_picks_up_a_rewritten_file() {
    let (_dir, path) = keys_file(&two_projects());
    let keys = Keys::new(None, Some(path.clone())).unwrap();
    let watcher = keys.watch();
    let before = keys.generation();
    let key = add_key(&path, "team-new", None).unwrap();
    assert!(
        reloaded(&keys, before).await,
        "the rewritten file was not loaded"
    );
    assert_eq!(&*keys.project_of(&key).unwrap().id, "team-new");
    assert_eq!(&*keys.project_of("sk-a").unwrap().id, "team-a");
    watcher.abort();
}

#[tokio::test]
async fn watch_reloads_on_sighup() {
    use tokio::signal::unix::{SignalKind, signal};
    let (_dir, path) = keys_file(&two_projects());
    let keys = Keys::new(None, Some(path)).unwrap();
    // Our own listener first: from here on SIGHUP no longer ends the test process.
    let _listening = signal(SignalKind::hangup()).unwrap();
    let watcher = keys.watch();
    let before = keys.generation();
    // The file is unchanged, so only SIGHUP reloads it. The watcher may not be listening
    // yet when the first signal comes, so send one until it answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keys.generation() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload the keys"
        );
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
}

#[tokio::test]
async fn the_watcher_ends_when_the_keys_are_dropped() {
    let (_dir, path) = keys_file("");
    let keys = Keys::new(None, Some(path)).unwrap();
    let watcher = keys.watch();
    drop(keys);
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the watcher ended")
        .unwrap();
    let open = Keys::new(None, None).unwrap();
    tokio::time::timeout(Duration::from_secs(10), open.watch())
        .await
        .expect("without a file, the watcher ends at once")
        .unwrap();
}
