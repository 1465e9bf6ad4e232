//! `/v1/uploads` on a cluster: two Oasis servers in this process on one real PostgreSQL and one
//! real S3 (SeaweedFS), as a round-robin load balancer would use them: an Upload's Parts and
//! its completion reach different nodes. Parts live in the bucket
//! (`<prefix>/files/uploads/<upload id>/<part id>`), and changes to one Upload are ordered
//! across the nodes by its lease in the database.

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::services::{Postgres, S3};

/// A node named `node` on the database `url` and the prefix `prefix` of `s3`.
async fn node(url: &str, s3: &S3, prefix: &str, node: &str) -> TestApp {
    let (url, store, env, node) = (url.to_string(), s3.url(prefix), s3.env(), node.to_string());
    TestApp::spawn_with(None, move |s| {
        s.database_url = Some(url);
        s.object_store_url = Some(store);
        s.object_store_options = env.into();
        s.runs.exclusive = false;
        s.runs.node = node;
    })
    .await
}

async fn create_upload(app: &TestApp, bytes: usize) -> String {
    let (s, u) = app
        .post(
            "/v1/uploads",
            json!({"filename": "joined.bin", "purpose": "assistants", "bytes": bytes,
                   "mime_type": "application/octet-stream"}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["status"], "pending", "{u}");
    u["id"].as_str().unwrap().to_string()
}

async fn add_part(app: &TestApp, uid: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "data",
        reqwest::multipart::Part::bytes(bytes).file_name("blob"),
    );
    app.post_form(&format!("/v1/uploads/{uid}/parts"), form)
        .await
}

async fn complete(
    app: &TestApp,
    uid: &str,
    part_ids: &[String],
    md5: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({ "part_ids": part_ids });
    if let Some(m) = md5 {
        body["md5"] = json!(m);
    }
    app.post(&format!("/v1/uploads/{uid}/complete"), body).await
}

fn part_id(p: &Value) -> String {
    p["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a Part: {p}"))
        .to_string()
}

/// The keys of the Parts of Upload `uid` in the bucket.
fn part_keys(s3: &S3, uid: &str) -> Vec<String> {
    s3.list_keys(&format!("p/files/uploads/{uid}/"))
}

/// Run `test` on a runtime of its own that is never dropped. The servers' PostgreSQL pools
/// must not be dropped on one of its threads (a `postgres::Client` blocks on a runtime of its
/// own when dropped, which panics there), and their background tasks hold them to the end:
/// the runtime, its tasks and their pools are left to the process's exit.
fn on_a_runtime_kept(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(test)));
    std::mem::forget(rt);
    if let Err(p) = out {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn parts_and_completion_may_reach_different_nodes() {
    let (pg, s3) = (Postgres::start(), S3::start());
    on_a_runtime_kept(parts_and_completion(&pg, &s3));
}

async fn parts_and_completion(pg: &Postgres, s3: &S3) {
    let url = pg.fresh_database("uploads_cluster");
    let a = node(&url, s3, "p", "a").await;
    let b = node(&url, s3, "p", "b").await;
    let nodes = [&a, &b];

    // Six Parts of ~1.2 MB (more than one chunk of every stream), sent alternately to A and
    // B, completed through B in an order of their own; the File downloads byte-identical
    // through A.
    let pieces: Vec<Vec<u8>> = (0..6u32)
        .map(|p| {
            (0..1_200_000u32 + p * 7)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(p) >> 13) as u8)
                .collect()
        })
        .collect();
    let total: usize = pieces.iter().map(Vec::len).sum();
    let uid = create_upload(&a, total).await;
    let mut ids = vec![];
    for (i, piece) in pieces.iter().enumerate() {
        let (s, p) = add_part(nodes[i % 2], &uid, piece.clone()).await;
        assert_eq!(s, 200, "Part {i}: {p}");
        assert_eq!(p["upload_id"], uid.as_str());
        ids.push(part_id(&p));
    }
    assert_eq!(part_keys(s3, &uid).len(), 6, "the Parts are in the bucket");
    let order = [3, 0, 5, 1, 4, 2];
    let joined: Vec<u8> = order.iter().flat_map(|&i| pieces[i].clone()).collect();
    let given: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
    let md5 = hex::encode(Md5::digest(&joined));
    let (s, done) = complete(&b, &uid, &given, Some(&md5)).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["file"]["bytes"], total);
    let fid = done["file"]["id"].as_str().unwrap().to_string();
    let r = a
        .client
        .get(a.url(&format!("/v1/files/{fid}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let got = r.bytes().await.unwrap();
    assert!(
        got.as_ref() == joined.as_slice(),
        "the download is the joined Parts"
    );
    assert_eq!(s3.get_object(&format!("p/files/{fid}")), Some(joined));
    assert!(part_keys(s3, &uid).is_empty(), "the Parts are deleted");
    // Both nodes see it completed.
    for n in nodes {
        let (s, e) = add_part(n, &uid, b"x".to_vec()).await;
        assert_eq!(s, 400, "{e}");
        assert_eq!(
            e["error"]["message"],
            format!("Cannot add Parts to Upload {uid}: it is already completed.")
        );
    }

    // A wrong md5 and a missing Part are refused as on one node, whichever node has the Parts.
    let uid = create_upload(&b, 8).await;
    let p1 = part_id(&add_part(&a, &uid, b"abcd".to_vec()).await.1);
    let p2 = part_id(&add_part(&b, &uid, b"efgh".to_vec()).await.1);
    let (s, e) = complete(&a, &uid, &[p1.clone(), p2.clone()], Some("0123")).await;
    assert_eq!(s, 400, "{e}");
    let right = hex::encode(Md5::digest(b"abcdefgh"));
    assert_eq!(
        (&e["error"]["message"], &e["error"]["param"]),
        (
            &json!(format!(
                "The md5 checksum of the uploaded bytes is {right}, not the one given."
            )),
            &json!("md5")
        )
    );
    let (s, e) = complete(&b, &uid, &[p1.clone(), "part_nope".into()], None).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        (&e["error"]["message"], &e["error"]["param"]),
        (
            &json!(format!(
                "Invalid 'part_ids[1]': Upload {uid} has no Part 'part_nope'."
            )),
            &json!("part_ids[1]")
        )
    );
    let (s, e) = complete(&a, &uid, std::slice::from_ref(&p2), None).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        e["error"]["message"],
        format!(
            "The Parts given hold 4 bytes, but Upload {uid} was created for 8 bytes: they must \
             match."
        )
    );
    // Refusals change nothing: the Parts are still there, and complete.
    assert_eq!(part_keys(s3, &uid).len(), 2);
    let (s, done) = complete(
        &a,
        &uid,
        &[p2, p1],
        Some(&hex::encode(Md5::digest(b"efghabcd"))),
    )
    .await;
    assert_eq!(s, 200, "{done}");

    // Parts sent to both nodes at once are counted one at a time: of six Parts of 4 bytes
    // for an Upload of 4, one lands and the others are refused.
    let uid = create_upload(&a, 4).await;
    let sent = futures::future::join_all(
        (0..6).map(|i| add_part(nodes[i % 2], &uid, vec![b'0' + i as u8; 4])),
    )
    .await;
    let landed = sent.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(landed, 1, "{sent:?}");
    for (s, e) in sent.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*s, 400, "{e}");
        assert_eq!(
            e["error"]["message"],
            format!("Upload {uid} was created for 4 bytes; its Parts would hold 8 with this one.")
        );
    }
    assert_eq!(part_keys(s3, &uid).len(), 1);

    // Cancelled through B: no Part object is left, and A says so.
    let (s, c) = b
        .post(&format!("/v1/uploads/{uid}/cancel"), json!({}))
        .await;
    assert_eq!((s, &c["status"]), (200, &json!("cancelled")), "{c}");
    assert!(
        part_keys(s3, &uid).is_empty(),
        "the cancelled Upload's Parts are deleted"
    );
    let (s, e) = complete(&a, &uid, &[], None).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(
        e["error"]["message"],
        format!("Cannot complete Upload {uid}: it was cancelled.")
    );

    // No Upload's lease is kept once the Upload is over.
    let leases = pg
        .psql(&url, "SELECT count(*) FROM leases WHERE id LIKE 'upload.%'")
        .unwrap();
    assert_eq!(leases, "0");
    assert!(s3.list_keys("p/files/uploads/").is_empty());
    a.stop().await;
    b.stop().await;
}
