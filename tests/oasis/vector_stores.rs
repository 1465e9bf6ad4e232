//! Vector stores: the ingestion queue across a restart, and runs that search the stores the
//! `vector_stores` helper made.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, settled, vector_store_file};

/// Poll a store's file until it has left `in_progress` (what the SDK's `poll` does).
async fn read(app: &TestApp, vs: &str, file: &str) -> Value {
    settled(app, vs, file, Duration::from_secs(120)).await
}

/// The id of the thread `t`'s own store (for file_search).
fn thread_store(t: &Value) -> String {
    t["tool_resources"]["file_search"]["vector_store_ids"][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// A file still waiting to be read when the server stops is read after it starts again: the
/// store's `in_progress` files are the queue.
#[tokio::test(flavor = "multi_thread")]
async fn files_waiting_to_be_read_are_read_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let (s, f) = app
        .upload(
            "notes.md",
            b"# Notes\nThe quarterly report is due on the third Friday.".to_vec(),
            "assistants",
        )
        .await;
    assert_eq!(s, 200, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    let (_, vs) = app.post("/v1/vector_stores", json!({"name": "kept"})).await;
    let vs = vs["id"].as_str().unwrap().to_string();
    app.stop().await;

    // While it is down, the file joins the store, queued (as a crash right after the request
    // would leave it).
    {
        use oasis::model::{
            ChunkingShown, StaticChunking, StoredVectorStoreFile, VectorStoreFile,
            VectorStoreFileStatus, VectorStoreFileTag,
        };
        use oasis::store::{Store, StoreExt};
        let store = oasis::store::SqliteStore::open(&dir.path().join("oasis.sqlite3")).unwrap();
        // Written as the API writes: in the default project's view.
        let store = store.for_project(oasis::tenancy::DEFAULT_PROJECT);
        store
            .insert(&StoredVectorStoreFile {
                key: StoredVectorStoreFile::key_of(&vs, &fid),
                file: VectorStoreFile {
                    id: fid.clone(),
                    object: VectorStoreFileTag,
                    created_at: oasis::model::now(),
                    usage_bytes: 0,
                    vector_store_id: vs.clone(),
                    status: VectorStoreFileStatus::InProgress,
                    last_error: None,
                    chunking_strategy: ChunkingShown::Static {
                        r#static: StaticChunking::AUTO,
                    },
                    attributes: Default::default(),
                },
                batch_id: None,
                chunking: StaticChunking::AUTO,
            })
            .unwrap();
    }

    let app = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let f = read(&app, &vs, &fid).await;
    assert_eq!(f["status"], "completed", "{f}");
    let (s, found) = app
        .post(
            &format!("/v1/vector_stores/{vs}/search"),
            json!({"query": "when is the quarterly report due"}),
        )
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["data"][0]["file_id"], fid.as_str());
    app.stop().await;
}

/// The `vector_stores` helper makes a store from its files; a run with file_search searches it:
/// the built-in model quotes the best passages with markers that become `file_citation`
/// annotations of the file they came from, and the step is a `file_search` call whose results'
/// text shows only with `include[]`.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_searches_the_threads_store_and_cites_the_file() {
    let app = TestApp::spawn().await;
    let (_, faq) = app
        .upload(
            "faq.txt",
            b"Returns are accepted within 30 days of delivery, with the receipt.".to_vec(),
            "assistants",
        )
        .await;
    let (_, other) = app
        .upload(
            "menu.txt",
            b"Soup of the day: tomato with basil.".to_vec(),
            "assistants",
        )
        .await;
    let (faq, other) = (faq["id"].as_str().unwrap(), other["id"].as_str().unwrap());
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({
                "messages": [{"role": "user", "content": "How many days do I have to return an item?"}],
                "tool_resources": {"file_search": {"vector_stores": [{"file_ids": [faq, other]}]}}
            }),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let vs = thread_store(&t);
    let tid = t["id"].as_str().unwrap();
    for f in [faq, other] {
        assert_eq!(read(&app, &vs, f).await["status"], "completed");
    }
    let (_, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "file_search"}]}),
        )
        .await;
    let aid = a["id"].as_str().unwrap();
    let run = crate::runs::start_run(&app, tid, json!({"assistant_id": aid})).await;
    let rid = run["id"].as_str().unwrap();
    let done = crate::runs::wait_for(&app, tid, rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");

    let msgs = crate::runs::messages(&app, tid).await;
    let answer = msgs.last().unwrap();
    let text = &answer["content"][0]["text"];
    let value = text["value"].as_str().unwrap();
    assert!(value.contains("30 days"), "{value}");
    let notes = text["annotations"].as_array().unwrap();
    assert!(!notes.is_empty(), "{text}");
    assert_eq!(notes[0]["type"], "file_citation");
    assert_eq!(notes[0]["file_citation"]["file_id"], faq);
    let chars: Vec<char> = value.chars().collect();
    let (start, end) = (
        notes[0]["start_index"].as_u64().unwrap() as usize,
        notes[0]["end_index"].as_u64().unwrap() as usize,
    );
    let marker: String = chars[start..end].iter().collect();
    assert_eq!(marker, notes[0]["text"].as_str().unwrap());
    assert!(
        marker.starts_with('【') && marker.contains("faq.txt"),
        "{marker}"
    );

    let steps = crate::runs::steps(&app, tid, rid).await;
    let call = &steps[0]["step_details"]["tool_calls"][0];
    assert_eq!(call["type"], "file_search", "{call}");
    let results = call["file_search"]["results"].as_array().unwrap();
    assert_eq!(results[0]["file_id"], faq);
    assert_eq!(results[0]["file_name"], "faq.txt");
    assert!(results[0].get("content").is_none(), "{call}");
    let sid = steps[0]["id"].as_str().unwrap();
    let include = "step_details.tool_calls[*].file_search.results[*].content";
    let (_, step) = app
        .get(&format!(
            "/v1/threads/{tid}/runs/{rid}/steps/{sid}?include[]={include}"
        ))
        .await;
    let content = &step["step_details"]["tool_calls"][0]["file_search"]["results"][0]["content"];
    assert!(
        content[0]["text"].as_str().unwrap().contains("30 days"),
        "{step}"
    );
    let _: &Value = content;
    app.stop().await;
}

/// A file attached to a message for file_search goes into the thread's own store, made on
/// demand (as OpenAI did), and a later attachment joins that same store.
#[tokio::test(flavor = "multi_thread")]
async fn attachments_for_file_search_go_into_the_threads_store() {
    let app = TestApp::spawn().await;
    let (_, a) = app
        .upload("a.txt", b"Alpha notes.".to_vec(), "assistants")
        .await;
    let (_, b) = app
        .upload("b.txt", b"Beta notes.".to_vec(), "assistants")
        .await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let search = json!([{"type": "file_search"}]);
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "see a",
                                 "attachments": [{"file_id": a, "tools": search}]}]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let tid = t["id"].as_str().unwrap();
    let vs = thread_store(&t);
    let (s, m) = app
        .post(
            &format!("/v1/threads/{tid}/messages"),
            json!({"role": "user", "content": "and b",
                   "attachments": [{"file_id": b, "tools": search}]}),
        )
        .await;
    assert_eq!(s, 200, "{m}");
    let (_, t) = app.get(&format!("/v1/threads/{tid}")).await;
    assert_eq!(
        t["tool_resources"]["file_search"]["vector_store_ids"],
        json!([vs])
    );
    for f in [a, b] {
        assert_eq!(read(&app, &vs, f).await["status"], "completed");
    }
    // A code_interpreter attachment does not.
    let (_, t2) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "x",
                "attachments": [{"file_id": a, "tools": [{"type": "code_interpreter"}]}]}]}),
        )
        .await;
    assert!(t2["tool_resources"].get("file_search").is_none(), "{t2}");
    app.stop().await;
}

/// A run waits (up to a minute) for the files of its thread's store that are still being
/// read, as OpenAI's did: a large file attached to the message that starts the run is found
/// and cited by the run's first search.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_waits_for_the_files_attached_to_its_thread() {
    let app = TestApp::spawn().await;
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 3 << 20 {
        text.push_str(&format!(
            "Section {i}. The warehouse inventory lists crates of item {i} on shelf {}.\n",
            i % 97
        ));
        i += 1;
    }
    text.push_str("The lighthouse keeper's cat is called Marmalade.\n");
    let (_, f) = app.upload("log.txt", text.into_bytes(), "assistants").await;
    let fid = f["id"].as_str().unwrap();
    let (_, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "file_search"}]}),
        )
        .await;
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"messages": [{"role": "user", "content": "What is the lighthouse keeper's cat called?",
                "attachments": [{"file_id": fid, "tools": [{"type": "file_search"}]}]}]}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let tid = t["id"].as_str().unwrap();
    let vs = thread_store(&t);
    let run = crate::runs::start_run(&app, tid, json!({"assistant_id": a["id"]})).await;
    let (_, file) = vector_store_file(&app, &vs, fid).await;
    assert_eq!(
        file["status"], "in_progress",
        "the file was read before the run started, so this proves nothing: make it larger"
    );
    let rid = run["id"].as_str().unwrap();
    let done = crate::runs::wait_for(&app, tid, rid, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, msgs) = app
        .get(&format!("/v1/threads/{tid}/messages?run_id={rid}"))
        .await;
    let text = &msgs["data"][0]["content"][0]["text"];
    assert!(
        text["value"].as_str().unwrap().contains("Marmalade"),
        "{text}"
    );
    assert_eq!(
        text["annotations"][0]["file_citation"]["file_id"], fid,
        "{text}"
    );
    app.stop().await;
}

/// A store past its `expires_after` (its last activity moved two days back while the server
/// is down) says `expired` and refuses searches, as OpenAI's did; a fresh one with the same
/// expiry answers.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_store_says_so_and_cannot_be_searched() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let (_, f) = app
        .upload("a.txt", b"Otters hold hands.".to_vec(), "assistants")
        .await;
    let fid = f["id"].as_str().unwrap();
    let expiring =
        json!({"file_ids": [fid], "expires_after": {"anchor": "last_active_at", "days": 1}});
    let (s, old) = app.post("/v1/vector_stores", expiring.clone()).await;
    assert_eq!(s, 200, "{old}");
    let old = old["id"].as_str().unwrap().to_string();
    assert_eq!(read(&app, &old, fid).await["status"], "completed");
    let (_, fresh) = app.post("/v1/vector_stores", expiring).await;
    let fresh = fresh["id"].as_str().unwrap().to_string();
    assert_eq!(read(&app, &fresh, fid).await["status"], "completed");
    app.stop().await;

    {
        use oasis::model::VectorStore;
        use oasis::store::StoreExt;
        let store = oasis::store::SqliteStore::open(&dir.path().join("oasis.sqlite3")).unwrap();
        let mut vs: VectorStore = store.find(&old).unwrap().unwrap();
        let two_days_ago = oasis::model::now() - 2 * 24 * 3600;
        vs.last_active_at = Some(two_days_ago);
        vs.expires_at = VectorStore::expiry_time(&vs.expires_after, two_days_ago);
        store.save(&vs).unwrap();
    }

    let app = TestApp::spawn_with(Some(dir.path().to_path_buf()), |_| {}).await;
    let (_, v) = app.get(&format!("/v1/vector_stores/{old}")).await;
    assert_eq!(v["status"], "expired", "{v}");
    let (s, e) = app
        .post(
            &format!("/v1/vector_stores/{old}/search"),
            json!({"query": "otters"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has expired"),
        "{e}"
    );
    let (_, before) = app.get(&format!("/v1/vector_stores/{fresh}")).await;
    assert_eq!(before["status"], "completed", "{before}");
    let (s, found) = app
        .post(
            &format!("/v1/vector_stores/{fresh}/search"),
            json!({"query": "otters"}),
        )
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["data"][0]["file_id"], fid);
    app.stop().await;
}
