//! Vector stores: the ingestion queue across a restart, stores made by the `vector_stores`
//! helper, and runs that would need a search.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, err_parts};

/// Poll a store's file until it has left `in_progress` (what the SDK's `poll` does).
async fn read(app: &TestApp, vs: &str, file: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, f) = app
            .get(&format!("/v1/vector_stores/{vs}/files/{file}"))
            .await;
        assert_eq!(s, 200, "{f}");
        if f["status"] != "in_progress" {
            return f;
        }
        assert!(Instant::now() < deadline, "never read: {f}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        use oasis::store::StoreExt;
        let store = oasis::store::SqliteStore::open(&dir.path().join("oasis.sqlite3")).unwrap();
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

/// The `vector_stores` helper makes a store from its files; a run that would have to search a
/// store is refused with a 400 that says so (runs do not search yet), never run without it.
#[tokio::test(flavor = "multi_thread")]
async fn the_helper_makes_a_store_and_runs_that_would_search_are_refused() {
    let app = TestApp::spawn().await;
    let (_, f) = app
        .upload(
            "faq.txt",
            b"Returns are accepted within 30 days.".to_vec(),
            "assistants",
        )
        .await;
    let fid = f["id"].as_str().unwrap();
    let (s, t) = app
        .post(
            "/v1/threads",
            json!({"tool_resources": {"file_search": {"vector_stores": [{"file_ids": [fid]}]}}}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let vs = t["tool_resources"]["file_search"]["vector_store_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let tid = t["id"].as_str().unwrap();
    assert_eq!(read(&app, &vs, fid).await["status"], "completed");

    let (_, a) = app
        .post(
            "/v1/assistants",
            json!({"model": "oasis-local", "tools": [{"type": "file_search"}]}),
        )
        .await;
    let aid = a["id"].as_str().unwrap();
    let (s, e) = app
        .post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    let (message, _, param) = err_parts(&e);
    assert_eq!(param.as_deref(), Some("tools"));
    assert!(
        message.contains("do not search vector stores yet"),
        "{message}"
    );
    // Without the tool, the thread runs.
    let (s, r) = app
        .post(
            &format!("/v1/threads/{tid}/runs"),
            json!({"assistant_id": aid, "tools": []}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    app.stop().await;
}
