//! One conformance suite for both stores: SQLite (the embedded default) and PostgreSQL (a real
//! server started here). Each case runs against both and must behave the same: a story of
//! every kind of record, pagination, all-or-nothing writes, the thread lock taken in one
//! transaction, compare-and-set, the run queue with concurrent claimers, node liveness, and
//! chunks.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, OnceLock};

use oasis::model::Kind;
use oasis::store::{
    Filter, Order, Page, PgStore, Record, SqliteStore, Store, StoreError, StoredChunk,
};

use crate::services::Postgres;

/// One PostgreSQL server for the suite; each case gets its own database.
fn shared_pg() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(Postgres::start)
}

fn pg_store(name: &str) -> Arc<dyn Store> {
    let url = shared_pg().fresh_database(name);
    Arc::new(PgStore::connect(&url).unwrap())
}

fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("oasis.sqlite3")).unwrap();
    (dir, Arc::new(s))
}

/// Run `case` against a fresh SQLite store and a fresh PostgreSQL database.
fn both(name: &str, case: impl Fn(Arc<dyn Store>)) {
    let (_dir, s) = sqlite_store();
    case(s);
    case(pg_store(name));
}

fn rec(kind: Kind, id: &str, scope: Option<&str>, body: serde_json::Value) -> Record {
    let mut body = body;
    body["id"] = id.into();
    Record {
        kind,
        id: id.into(),
        scope: scope.map(str::to_string),
        created_at: 1_700_000_000,
        body: body.to_string(),
        project: "default".into(),
    }
}

fn page(order: Order, after: Option<&str>, before: Option<&str>, limit: usize) -> Page {
    Page {
        limit,
        order,
        after: after.map(str::to_string),
        before: before.map(str::to_string),
    }
}

/// `f(store, i)` for `i` in `0..n`, each on a thread of its own, all let go at once.
fn at_once<R: Send + 'static>(
    s: &Arc<dyn Store>,
    n: usize,
    f: impl Fn(&dyn Store, usize) -> R + Send + Sync + 'static,
) -> Vec<R> {
    let (gate, f) = (Arc::new(Barrier::new(n)), Arc::new(f));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (s, gate, f) = (s.clone(), gate.clone(), f.clone());
            std::thread::spawn(move || {
                gate.wait();
                f(s.as_ref(), i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn ids(v: Vec<Record>) -> Vec<String> {
    v.into_iter().map(|r| r.id).collect()
}

fn filter(field: &'static str, value: &str) -> Filter {
    Filter {
        field,
        value: value.into(),
    }
}

#[test]
fn every_kind_of_record_is_stored_found_filtered_and_deleted_with_its_parent() {
    both("story", |s| {
        use serde_json::json;
        let all = [
            rec(
                Kind::File,
                "file-1",
                None,
                json!({"purpose": "assistants", "expires_at": 100}),
            ),
            rec(
                Kind::File,
                "file-2",
                None,
                json!({"purpose": "vision", "expires_at": null}),
            ),
            rec(Kind::Assistant, "asst_1", None, json!({"model": "m"})),
            rec(Kind::Thread, "thread_1", None, json!({})),
            rec(
                Kind::Message,
                "msg_1",
                Some("thread_1"),
                json!({"run_id": null}),
            ),
            rec(
                Kind::Message,
                "msg_2",
                Some("thread_1"),
                json!({"run_id": "run_1"}),
            ),
            rec(
                Kind::Run,
                "run_1",
                Some("thread_1"),
                json!({"status": "queued", "expires_at": 50}),
            ),
            rec(
                Kind::RunStep,
                "step_1",
                Some("thread_1"),
                json!({"run_id": "run_1"}),
            ),
            rec(
                Kind::Transcript,
                "run_1.transcript",
                Some("thread_1"),
                json!({}),
            ),
            rec(
                Kind::Upload,
                "upload_1",
                None,
                json!({"status": "pending", "expires_at": 10}),
            ),
            rec(
                Kind::VectorStore,
                "vs_1",
                None,
                json!({"status": "completed"}),
            ),
            rec(
                Kind::VectorStoreFile,
                "vs_1/file-1",
                Some("vs_1"),
                json!({"file": {"id": "file-1", "status": "in_progress"}}),
            ),
            rec(
                Kind::FileBatch,
                "vsfb_1",
                Some("vs_1"),
                json!({"status": "in_progress"}),
            ),
        ];
        s.insert_all(&all).unwrap();
        for r in &all {
            let got = s.get(r.kind, &r.id).unwrap().expect("stored");
            assert_eq!((got.body, got.scope), (r.body.clone(), r.scope.clone()));
        }
        // Kinds do not mix: a thread's id is no message.
        assert!(s.get(Kind::Message, "thread_1").unwrap().is_none());
        let p = page(Order::Asc, None, None, 10);
        let f = filter("run_id", "run_1");
        let (found, _) = s
            .list(Kind::Message, Some("thread_1"), Some(&f), &p)
            .unwrap();
        assert_eq!(ids(found), ["msg_2"]);
        let f = filter("purpose", "vision");
        assert_eq!(
            ids(s.list(Kind::File, None, Some(&f), &p).unwrap().0),
            ["file-2"]
        );
        let f = filter("file.status", "in_progress");
        let (found, _) = s.list(Kind::VectorStoreFile, None, Some(&f), &p).unwrap();
        assert_eq!(ids(found), ["vs_1/file-1"]);
        let f = filter("file.id", "file-1");
        let (found, _) = s.list(Kind::VectorStoreFile, None, Some(&f), &p).unwrap();
        assert_eq!(ids(found), ["vs_1/file-1"]);
        // An update moves the columns read from the body with it.
        let done = rec(
            Kind::VectorStoreFile,
            "vs_1/file-1",
            Some("vs_1"),
            json!({"file": {"id": "file-1", "status": "completed"}}),
        );
        s.update_all(&[done]).unwrap();
        let f = filter("file.status", "in_progress");
        assert!(
            s.list(Kind::VectorStoreFile, None, Some(&f), &p)
                .unwrap()
                .0
                .is_empty()
        );
        // Expiry reads `expires_at`; none never expires.
        assert_eq!(
            ids(s.expired(Kind::File, None, 1000, 10).unwrap()),
            ["file-1"]
        );
        let f = filter("status", "queued");
        assert_eq!(
            ids(s.expired(Kind::Run, Some(&f), 60, 10).unwrap()),
            ["run_1"]
        );
        assert!(s.expired(Kind::Run, Some(&f), 40, 10).unwrap().is_empty());
        // Deleting a thread deletes what is scoped to it, and nothing else.
        assert!(s.delete(Kind::Thread, "thread_1").unwrap());
        for (k, id) in [
            (Kind::Message, "msg_1"),
            (Kind::Run, "run_1"),
            (Kind::RunStep, "step_1"),
            (Kind::Transcript, "run_1.transcript"),
        ] {
            assert!(s.get(k, id).unwrap().is_none(), "{id} outlived its thread");
        }
        assert!(s.get(Kind::Assistant, "asst_1").unwrap().is_some());
        assert!(!s.delete(Kind::Thread, "thread_1").unwrap());
        // And a vector store its files, batches and chunks.
        s.put_chunks(
            "vs_1",
            "file-9",
            &[],
            &rec(
                Kind::VectorStoreFile,
                "missing",
                Some("vs_1"),
                json!({"file": {"id": "file-9", "status": "completed"}}),
            ),
        )
        .unwrap_err();
        assert!(s.delete(Kind::VectorStore, "vs_1").unwrap());
        assert!(
            s.get(Kind::VectorStoreFile, "vs_1/file-1")
                .unwrap()
                .is_none()
        );
        assert!(s.get(Kind::FileBatch, "vsfb_1").unwrap().is_none());
        assert!(s.get(Kind::File, "file-1").unwrap().is_some());
    });
}

#[test]
fn pages_walk_forward_and_back_in_both_orders() {
    both("pages", |s| {
        let recs: Vec<Record> = (0..5)
            .map(|i| {
                rec(
                    Kind::Message,
                    &format!("m{i}"),
                    Some("t"),
                    serde_json::json!({}),
                )
            })
            .collect();
        s.insert_all(&recs).unwrap();
        let list = |p: Page| {
            let (items, more) = s.list(Kind::Message, Some("t"), None, &p).unwrap();
            (ids(items), more)
        };
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            list(page(Order::Asc, None, None, 2)),
            (v(&["m0", "m1"]), true)
        );
        assert_eq!(
            list(page(Order::Asc, Some("m3"), None, 2)),
            (v(&["m4"]), false)
        );
        assert_eq!(
            list(page(Order::Desc, None, None, 2)),
            (v(&["m4", "m3"]), true)
        );
        assert_eq!(
            list(page(Order::Desc, Some("m3"), None, 10)),
            (v(&["m2", "m1", "m0"]), false)
        );
        assert_eq!(
            list(page(Order::Desc, None, Some("m1"), 2)),
            (v(&["m3", "m2"]), true)
        );
        assert_eq!(
            list(page(Order::Asc, None, Some("m3"), 1)),
            (v(&["m2"]), true)
        );
        assert_eq!(
            list(page(Order::Asc, None, Some("m2"), 5)),
            (v(&["m0", "m1"]), false)
        );
        // A cursor from another thread, or no object at all, is no cursor here.
        s.insert_all(&[rec(
            Kind::Message,
            "x0",
            Some("other"),
            serde_json::json!({}),
        )])
        .unwrap();
        for bad in ["x0", "nope"] {
            let e = s.list(
                Kind::Message,
                Some("t"),
                None,
                &page(Order::Asc, Some(bad), None, 2),
            );
            assert!(matches!(
                e,
                Err(StoreError::BadCursor { param: "after", .. })
            ));
        }
    });
}

#[test]
fn a_failed_write_writes_nothing() {
    both("atomic", |s| {
        let t = |id: &str| rec(Kind::Thread, id, None, serde_json::json!({"v": 1}));
        s.insert_all(&[t("t1")]).unwrap();
        // A batch with a duplicate id is refused whole.
        let e = s.insert_all(&[t("t2"), t("t1")]);
        assert!(matches!(e, Err(StoreError::Duplicate(id)) if id == "t1"));
        assert!(s.get(Kind::Thread, "t2").unwrap().is_none());
        // An update of an object that is gone undoes the insert beside it.
        let mut changed = t("t1");
        changed.body = r#"{"id":"t1","v":2}"#.into();
        let e = s.insert_and_update(&[t("t3")], &[changed.clone(), t("gone")]);
        assert!(matches!(e, Err(StoreError::NotFound { .. })));
        assert!(s.get(Kind::Thread, "t3").unwrap().is_none());
        assert_eq!(
            s.get(Kind::Thread, "t1").unwrap().unwrap().body,
            t("t1").body
        );
        // An error inside a transaction undoes what it wrote before.
        let e = s.atomically(&mut |tx| {
            tx.insert(&t("t4"))?;
            Err(StoreError::Other(anyhow::anyhow!("changed my mind")))
        });
        assert!(e.is_err());
        assert!(s.get(Kind::Thread, "t4").unwrap().is_none());
    });
}

/// The shape of the thread lock: lock the thread, look for a run holding it, add one if
/// none. Whether this call added its run.
fn start_run_if_free(s: &dyn Store, thread: &str, run: &str) -> bool {
    let mut added = false;
    s.atomically(&mut |tx| {
        added = false;
        tx.get(Kind::Thread, thread)?.expect("the thread");
        let p = page(Order::Desc, None, None, 1);
        let (runs, _) = tx.list(Kind::Run, Some(thread), None, &p)?;
        let busy = runs.iter().any(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["status"] == "queued" || v["status"] == "in_progress"
        });
        if !busy {
            tx.insert(&rec(
                Kind::Run,
                run,
                Some(thread),
                serde_json::json!({"status": "queued"}),
            ))?;
            added = true;
        }
        Ok(())
    })
    .unwrap();
    added
}

#[test]
fn the_thread_lock_lets_one_of_many_concurrent_runs_start() {
    both("thread_lock", |s| {
        s.insert_all(&[rec(Kind::Thread, "t", None, serde_json::json!({}))])
            .unwrap();
        let started = at_once(&s, 8, |s, i| start_run_if_free(s, "t", &format!("run_{i}")))
            .into_iter()
            .filter(|x| *x)
            .count();
        assert_eq!(started, 1);
        let (runs, _) = s
            .list(
                Kind::Run,
                Some("t"),
                None,
                &page(Order::Asc, None, None, 20),
            )
            .unwrap();
        assert_eq!(runs.len(), 1);
    });
}

#[test]
fn a_status_change_is_a_compare_and_set() {
    both("cas", |s| {
        let run = |status: &str| {
            rec(
                Kind::Run,
                "r",
                Some("t"),
                serde_json::json!({ "status": status }),
            )
        };
        s.insert_all(&[run("queued")]).unwrap();
        let mut moved = vec![];
        s.atomically(&mut |tx| {
            moved = vec![
                tx.update_if(&run("in_progress"), "queued")?,
                tx.update_if(&run("completed"), "queued")?,
            ];
            Ok(())
        })
        .unwrap();
        assert_eq!(moved, [true, false]);
        let body = s.get(Kind::Run, "r").unwrap().unwrap().body;
        assert!(body.contains("in_progress"), "{body}");
    });
}

#[test]
fn concurrent_claimers_take_each_queued_run_exactly_once() {
    both("claims", |s| {
        let runs: Vec<Record> = (0..60)
            .map(|i| {
                rec(
                    Kind::Run,
                    &format!("run_{i:02}"),
                    Some("t"),
                    serde_json::json!({"status": if i % 10 == 9 { "requires_action" } else { "queued" }}),
                )
            })
            .collect();
        s.insert_all(&runs).unwrap();
        // Two runs are reserved for node "n0" (streamed there).
        s.atomically(&mut |tx| {
            tx.set_run_owner("run_00", Some("n0"), false)?;
            tx.set_run_owner("run_01", Some("n0"), false)
        })
        .unwrap();
        assert_eq!(s.queued_runs().unwrap(), 54);
        let claimed = at_once(&s, 6, |s, i| {
            let node = format!("n{i}");
            let mut mine = vec![];
            while let Some(oasis::store::Claim {
                run_id: id,
                waited_ms: waited,
                project,
            }) = s.claim_run(&node).unwrap()
            {
                assert_eq!(project, "default");
                // How long a run waited is known once its owner was set (as the
                // orchestrator does when it queues one), by the database's clock.
                let reserved = id == "run_00" || id == "run_01";
                assert_eq!(waited.is_some_and(|ms| ms >= 0), reserved, "{id}");
                mine.push(id);
            }
            (node, mine)
        });
        let mut seen = HashSet::new();
        for (node, mine) in claimed {
            for id in mine {
                if id == "run_00" || id == "run_01" {
                    assert_eq!(node, "n0", "{id} was reserved for n0");
                }
                assert!(seen.insert(id.clone()), "{id} claimed twice");
                let mut holder = None;
                s.atomically(&mut |tx| {
                    holder = tx.run_holder(&id)?;
                    Ok(())
                })
                .unwrap();
                assert_eq!(holder.as_deref(), Some(node.as_str()));
            }
        }
        // Every queued run, and only those.
        assert_eq!(seen.len(), 54);
        assert!(!seen.contains("run_09"));
        assert_eq!(s.claim_run("n1").unwrap(), None);
        assert_eq!(s.queued_runs().unwrap(), 0);
    });
}

#[test]
fn silent_nodes_and_the_runs_they_held_are_found() {
    both("nodes", |s| {
        s.heartbeat("alive").unwrap();
        s.heartbeat("alive").unwrap();
        assert!(s.lost_nodes(60_000).unwrap().is_empty());
        // A lapse in the future: every node has been silent "that long".
        assert_eq!(s.lost_nodes(-60_000).unwrap(), ["alive"]);
        // A run held by a node the store never heard of names a lost node too.
        s.insert_all(&[rec(
            Kind::Run,
            "r",
            Some("t"),
            serde_json::json!({"status": "in_progress"}),
        )])
        .unwrap();
        s.atomically(&mut |tx| tx.set_run_owner("r", Some("ghost"), true))
            .unwrap();
        assert_eq!(s.lost_nodes(60_000).unwrap(), ["ghost"]);
        let held = s.node_runs("ghost").unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].0.id.as_str(), held[0].1), ("r", true));
        s.forget_node("alive").unwrap();
        assert_eq!(s.lost_nodes(-60_000).unwrap(), ["ghost"]);
    });
}

#[test]
fn chunks_are_kept_with_their_file_only_while_it_is_being_read() {
    both("chunks", |s| {
        let vsf = |status: &str| {
            rec(
                Kind::VectorStoreFile,
                "vs/f",
                Some("vs"),
                serde_json::json!({"file": {"id": "f", "status": status}}),
            )
        };
        s.insert_all(&[vsf("in_progress")]).unwrap();
        let chunk = |i: u32| StoredChunk {
            file_id: "f".into(),
            index: i,
            text: format!("chunk {i}"),
            embedder: "e".into(),
            vector: vec![i as f32, 0.5, -1.0],
        };
        s.put_chunks("vs", "f", &[chunk(0), chunk(1)], &vsf("completed"))
            .unwrap();
        assert_eq!(s.chunks("vs").unwrap(), [chunk(0), chunk(1)]);
        // The file is no longer being read: a second reading keeps nothing.
        let e = s.put_chunks("vs", "f", &[chunk(7)], &vsf("completed"));
        assert!(matches!(e, Err(StoreError::NotFound { .. })));
        assert_eq!(s.chunks("vs").unwrap(), [chunk(0), chunk(1)]);
        s.delete_chunks(None, Some("f")).unwrap();
        assert!(s.chunks("vs").unwrap().is_empty());
    });
}

/// Two projects' views of one store never see each other's objects, by any operation; the
/// system's view (the run queue, sweeps) sees both, and a claimed run names its project.
#[test]
fn a_projects_view_reads_and_writes_only_its_own_objects() {
    use serde_json::json;
    both("projects", |s| {
        let (a, b) = (s.for_project("alpha"), s.for_project("beta"));
        assert_eq!((a.project(), s.project()), (Some("alpha"), None));
        // The record says `default`: the view's project wins.
        a.insert_all(&[
            rec(Kind::Thread, "thread_a", None, json!({})),
            rec(
                Kind::Message,
                "msg_a",
                Some("thread_a"),
                json!({"run_id": null}),
            ),
            rec(
                Kind::File,
                "file-a",
                None,
                json!({"bytes": 100, "expires_at": 5}),
            ),
            rec(Kind::VectorStore, "vs_a", None, json!({})),
            rec(
                Kind::Run,
                "run_a0",
                Some("thread_a"),
                json!({"status": "completed"}),
            ),
            rec(
                Kind::VectorStoreFile,
                "vs_a/file-a",
                Some("vs_a"),
                json!({"file": {"id": "file-a", "status": "in_progress"}}),
            ),
        ])
        .unwrap();
        b.insert_all(&[rec(
            Kind::File,
            "file-b",
            None,
            json!({"bytes": 7, "expires_at": 5}),
        )])
        .unwrap();
        let found = a.get(Kind::Thread, "thread_a").unwrap().unwrap();
        assert_eq!(found.project, "alpha");
        assert!(b.get(Kind::Thread, "thread_a").unwrap().is_none());
        assert!(b.get(Kind::Message, "msg_a").unwrap().is_none());
        // Lists, and cursors naming the other project's objects.
        let all = page(Order::Asc, None, None, 10);
        assert_eq!(
            ids(a.list(Kind::File, None, None, &all).unwrap().0),
            ["file-a"]
        );
        assert_eq!(
            ids(b.list(Kind::File, None, None, &all).unwrap().0),
            ["file-b"]
        );
        assert_eq!(
            ids(s.list(Kind::File, None, None, &all).unwrap().0),
            ["file-a", "file-b"]
        );
        assert!(
            b.list(Kind::Message, Some("thread_a"), None, &all)
                .unwrap()
                .0
                .is_empty()
        );
        let cursor = page(Order::Asc, Some("file-a"), None, 10);
        assert!(matches!(
            b.list(Kind::File, None, None, &cursor),
            Err(StoreError::BadCursor { .. })
        ));
        assert_eq!(
            ids(b.expired(Kind::File, None, 10, 10).unwrap()),
            ["file-b"]
        );
        assert_eq!(
            ids(s.expired(Kind::File, None, 10, 10).unwrap()),
            ["file-a", "file-b"]
        );
        // Changes and deletions of the other project's objects find nothing.
        let e = b.update(Kind::Thread, "thread_a", r#"{"id":"thread_a","x":1}"#);
        assert!(matches!(e, Err(StoreError::NotFound { .. })), "{e:?}");
        assert!(!b.delete(Kind::Thread, "thread_a").unwrap());
        let mut seen = None;
        b.atomically(&mut |tx| {
            seen = Some(tx.get(Kind::Thread, "thread_a")?.is_some());
            let r = rec(
                Kind::Run,
                "run_a0",
                Some("thread_a"),
                json!({"status": "failed"}),
            );
            assert!(!tx.update_if(&r, "completed")?);
            assert!(!tx.delete(Kind::Message, "msg_a")?);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, Some(false));
        assert_eq!(
            a.get(Kind::Thread, "thread_a").unwrap().unwrap().body,
            found.body
        );
        assert!(a.get(Kind::Message, "msg_a").unwrap().is_some());
        // Chunks of a store are reached only through its project.
        let chunk = StoredChunk {
            file_id: "file-a".into(),
            index: 0,
            text: "alpha's secret".into(),
            embedder: "e".into(),
            vector: vec![1.0],
        };
        let done = rec(
            Kind::VectorStoreFile,
            "vs_a/file-a",
            Some("vs_a"),
            json!({"file": {"id": "file-a", "status": "completed"}}),
        );
        s.put_chunks("vs_a", "file-a", std::slice::from_ref(&chunk), &done)
            .unwrap();
        assert!(b.chunks("vs_a").unwrap().is_empty());
        b.delete_chunks(Some("vs_a"), None).unwrap();
        b.delete_chunks(None, Some("file-a")).unwrap();
        assert_eq!(a.chunks("vs_a").unwrap(), [chunk]);
        // What each project stores, and how many of its runs are unfinished.
        assert_eq!(
            (a.stored_bytes().unwrap(), b.stored_bytes().unwrap()),
            (100, 7)
        );
        assert_eq!(s.stored_bytes().unwrap(), 107);
        a.insert_all(&[
            rec(
                Kind::Run,
                "run_a1",
                Some("thread_a"),
                json!({"status": "queued"}),
            ),
            rec(
                Kind::Run,
                "run_a2",
                Some("thread_a"),
                json!({"status": "requires_action"}),
            ),
            rec(
                Kind::Run,
                "run_a3",
                Some("thread_a"),
                json!({"status": "completed"}),
            ),
        ])
        .unwrap();
        let active = |v: &Arc<dyn Store>| {
            let mut n = 0;
            v.atomically(&mut |tx| {
                n = tx.active_runs()?;
                Ok(())
            })
            .unwrap();
            n
        };
        assert_eq!((active(&a), active(&b)), (2, 0));
        let claim = s.claim_run("n").unwrap().unwrap();
        assert_eq!(
            (claim.run_id.as_str(), claim.project.as_str()),
            ("run_a1", "alpha")
        );
        // Deleting through the right view deletes what belongs to it.
        assert!(a.delete(Kind::Thread, "thread_a").unwrap());
        assert!(s.get(Kind::Message, "msg_a").unwrap().is_none());
    });
}

#[test]
fn a_restarted_postgres_is_unavailable_then_answers_again() {
    let mut pg = Postgres::start();
    let s = PgStore::connect(&pg.url).unwrap();
    s.insert_all(&[rec(Kind::Thread, "t", None, serde_json::json!({}))])
        .unwrap();
    pg.stop();
    let e = s.get(Kind::Thread, "t");
    assert!(matches!(e, Err(StoreError::Unavailable(_))), "{e:?}");
    let e = s.insert_all(&[rec(Kind::Thread, "u", None, serde_json::json!({}))]);
    assert!(matches!(e, Err(StoreError::Unavailable(_))), "{e:?}");
    pg.start_again();
    // The pool drops the connections the restart broke: the next request is answered (a
    // broken connection may fail one more request first).
    let mut answered = None;
    for _ in 0..3 {
        match s.get(Kind::Thread, "t") {
            Ok(r) => {
                answered = r;
                break;
            }
            Err(StoreError::Unavailable(_)) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(answered.is_some(), "no answer after the restart");
    assert!(
        s.get(Kind::Thread, "u").unwrap().is_none(),
        "a refused write was kept"
    );
}

#[test]
fn a_session_lease_is_held_by_one_node_and_counts_shared_turns() {
    both("leases", |s| {
        assert_eq!(s.take_lease("sess", "a", 60_000).unwrap(), Some(0));
        assert_eq!(s.take_lease("sess", "b", 60_000).unwrap(), None);
        // Its holder may take it again (a second call of the same turn) and extend it.
        assert_eq!(s.take_lease("sess", "a", 60_000).unwrap(), Some(0));
        assert!(s.renew_lease("sess", "a", 60_000).unwrap());
        assert!(!s.renew_lease("sess", "b", 60_000).unwrap());
        assert_eq!(s.release_lease("sess", "a", true).unwrap(), Some(1));
        assert_eq!(s.release_lease("sess", "a", true).unwrap(), None);
        assert_eq!(s.take_lease("sess", "b", 60_000).unwrap(), Some(1));
        // A turn whose state could not be shared does not count.
        assert_eq!(s.release_lease("sess", "b", false).unwrap(), Some(1));
        // A lease that lapsed (here: taken already expired) passes to the next node.
        assert_eq!(s.take_lease("sess", "a", -1_000).unwrap(), Some(1));
        assert_eq!(s.take_lease("sess", "b", 60_000).unwrap(), Some(1));
        assert!(!s.renew_lease("sess", "a", 60_000).unwrap());
        s.drop_lease("sess").unwrap();
        assert_eq!(s.take_lease("sess", "c", 60_000).unwrap(), Some(0));
        // Of many nodes asking at once, one gets it.
        let got = at_once(&s, 8, |s, i| {
            s.take_lease("contended", &format!("n{i}"), 60_000).unwrap()
        })
        .into_iter()
        .flatten()
        .count();
        assert_eq!(got, 1);
    });
}
