//! File bytes in a real S3-compatible store (SeaweedFS, `services::S3`): what the API does with
//! them, and what it does while the store is down.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, err_parts, settled};
use crate::services::S3;

/// An Oasis server whose File bytes live in `s3` under `prefix`. The S3 client's settings are
/// handed to the server, not set in this process's environment (tests run in parallel).
async fn app_on(s3: &S3, prefix: &str) -> TestApp {
    let (url, env) = (s3.url(prefix), s3.env());
    TestApp::spawn_with(None, move |s| {
        s.object_store_url = Some(url);
        s.object_store_options = env.into();
    })
    .await
}

async fn content(app: &TestApp, id: &str) -> (u16, Vec<u8>) {
    let r = app
        .client
        .get(app.url(&format!("/v1/files/{id}/content")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn file_ids(list: &serde_json::Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

/// Uploads (small, large in parts, and through the Uploads API) land in the bucket and
/// nowhere else; they list, download whole, are read into a vector store and into the code
/// interpreter's `/mnt/data`; files the code writes land in the bucket too; a deleted File's
/// object is gone.
#[tokio::test(flavor = "multi_thread")]
async fn file_bytes_live_in_an_s3_store() {
    let s3 = tokio::task::block_in_place(S3::start);
    let app = app_on(&s3, "node-a").await;
    let object = |id: &str| s3.get_object(&format!("node-a/files/{id}"));

    let notes = b"# Notes\nThe quarterly report is due on the third Friday.\n".to_vec();
    let (s, f) = app.upload("notes.md", notes.clone(), "assistants").await;
    assert_eq!(s, 200, "{f}");
    let small = f["id"].as_str().unwrap().to_string();
    assert_eq!(object(&small).as_deref(), Some(&notes[..]));

    // 20 MiB: sent in parts, streamed from the staged upload.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = app.data_dir.join("big.bin");
    std::fs::write(&path, &big).unwrap();
    let (s, f) = app.upload_path("big.bin", &path, "assistants").await;
    assert_eq!(s, 200, "{f}");
    let large = f["id"].as_str().unwrap().to_string();
    assert_eq!(f["bytes"].as_u64(), Some(big.len() as u64));
    assert!(
        object(&large).as_deref() == Some(&big[..]),
        "the object is the upload"
    );

    // The Uploads API: Parts joined into a File stored in the bucket with its record.
    let (s, u) = app
        .post(
            "/v1/uploads",
            json!({"filename": "joined.txt", "purpose": "assistants", "bytes": 11,
                   "mime_type": "text/plain"}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let uid = u["id"].as_str().unwrap();
    let mut parts = vec![];
    for piece in ["hello ", "world"] {
        let form = reqwest::multipart::Form::new().part(
            "data",
            reqwest::multipart::Part::bytes(piece.as_bytes().to_vec()),
        );
        let (s, p) = app
            .post_form(&format!("/v1/uploads/{uid}/parts"), form)
            .await;
        assert_eq!(s, 200, "{p}");
        parts.push(p["id"].clone());
    }
    let (s, u) = app
        .post(
            &format!("/v1/uploads/{uid}/complete"),
            json!({"part_ids": parts}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let joined = u["file"]["id"].as_str().unwrap().to_string();
    assert_eq!(object(&joined).as_deref(), Some(&b"hello world"[..]));

    // Listed and downloaded whole.
    let (s, list) = app.get("/v1/files").await;
    assert_eq!(s, 200, "{list}");
    let mut ids = file_ids(&list);
    ids.sort();
    let mut want = vec![small.clone(), large.clone(), joined.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(content(&app, &small).await, (200, notes.clone()));
    let (s, got) = content(&app, &large).await;
    assert_eq!(s, 200);
    assert!(got == big, "the download is the upload");
    // No File bytes were kept on this node's disk.
    let local: Vec<String> = std::fs::read_dir(app.data_dir.join("files"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("file-"))
        .collect();
    assert_eq!(local, Vec::<String>::new());

    // A vector store reads it.
    let (s, vs) = app
        .post(
            "/v1/vector_stores",
            json!({"name": "s3", "file_ids": [small]}),
        )
        .await;
    assert_eq!(s, 200, "{vs}");
    let vs = vs["id"].as_str().unwrap().to_string();
    let f = settled(&app, &vs, &small, Duration::from_secs(120)).await;
    assert_eq!(f["status"], "completed", "{f}");
    let (s, found) = app
        .post(
            &format!("/v1/vector_stores/{vs}/search"),
            json!({"query": "when is the quarterly report due"}),
        )
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["data"][0]["file_id"], small.as_str());

    // The code interpreter reads it in /mnt/data, and what it writes becomes a File there.
    let code = "print(open('/mnt/data/notes.md').read().split()[3])\n\
                open('/mnt/data/out.txt', 'w').write('from the sandbox')";
    let (s, r) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": code, "file_ids": [small]}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "completed", "{r}");
    assert!(r.to_string().contains("quarterly"), "{r}");
    let out = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/mnt/data/out.txt")
        .unwrap_or_else(|| panic!("out.txt is reported: {r}"));
    let out = out["file_id"].as_str().unwrap();
    assert_eq!(object(out).as_deref(), Some(&b"from the sandbox"[..]));
    assert_eq!(content(&app, out).await.1, b"from the sandbox");

    // Deleting a File deletes its object.
    let (s, d) = app.delete(&format!("/v1/files/{small}")).await;
    assert_eq!((s, d["deleted"].as_bool()), (200, Some(true)), "{d}");
    assert_eq!(object(&small), None);
    assert_eq!(content(&app, &small).await.0, 404);
    app.stop().await;
}

/// With the store down, an upload answers 503 with OpenAI's error body and leaves no File;
/// downloads answer 503 too; once the store is back, uploads work again.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_fail_cleanly_while_the_s3_store_is_down() {
    let mut s3 = tokio::task::block_in_place(S3::start);
    let app = app_on(&s3, "down").await;
    let (s, f) = app
        .upload("before.txt", b"before".to_vec(), "assistants")
        .await;
    assert_eq!(s, 200, "{f}");
    let before = f["id"].as_str().unwrap().to_string();

    tokio::task::block_in_place(|| s3.kill());
    let (s, e) = app
        .upload("during.txt", b"during".to_vec(), "assistants")
        .await;
    assert_eq!(s, 503, "{e}");
    let (message, kind, param) = err_parts(&e);
    assert_eq!(kind, "server_error");
    assert_eq!(param, None);
    assert!(e["error"]["code"].is_null(), "{e}");
    assert!(message.contains("unavailable"), "{message}");
    // Nor one large enough to be sent in parts; nor can stored bytes be read.
    let (s, e) = app
        .upload("during.bin", vec![7; 10 << 20], "assistants")
        .await;
    assert_eq!(s, 503, "{e}");
    let r = app
        .client
        .get(app.url(&format!("/v1/files/{before}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err_parts(&body).1, "server_error");
    // No File record without bytes.
    let (s, list) = app.get("/v1/files").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(file_ids(&list), vec![before.clone()]);

    tokio::task::block_in_place(|| s3.start_again());
    let (s, f) = app
        .upload("after.txt", b"after".to_vec(), "assistants")
        .await;
    assert_eq!(s, 200, "{f}");
    let after = f["id"].as_str().unwrap();
    assert_eq!(content(&app, after).await, (200, b"after".to_vec()));
    assert_eq!(content(&app, &before).await, (200, b"before".to_vec()));
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(file_ids(&list).len(), 2);
    app.stop().await;
}
