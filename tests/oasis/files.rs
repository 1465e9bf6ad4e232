//! Files and Uploads as OpenAI's spec has them: `expires_after` (and expired Files gone, bytes
//! and all), the files list's 10,000 limit, OpenAI's 404 for a missing File, the purposes Oasis
//! takes, and `/v1/uploads` (Parts joined in the order given, md5, sizes, states, expiry).
//!
//! Expiry is tested with the server's own clock moved forward (`ApiConfig::clock`), never by
//! waiting: Files and Uploads are made through the API with OpenAI's shortest lifetime (an
//! hour), then the server's time passes that hour.

use std::path::Path;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::helpers::{PNG_SIGNATURE, TestApp};

/// The error of a refused request, checked to be OpenAI's body with the `expected` status.
fn error(expected: u16, (status, v): (u16, Value)) -> Value {
    assert_eq!(status, expected, "{v}");
    let e = &v["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(e.get(key).is_some(), "no {key} in {v}");
    }
    assert_eq!(e["type"], "invalid_request_error", "{v}");
    e.clone()
}

/// `POST /v1/files` with these text fields and, if given, a file.
async fn create_file(
    app: &TestApp,
    fields: &[(&str, &str)],
    file: Option<(&str, Vec<u8>)>,
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some((name, bytes)) = file {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    }
    app.post_form("/v1/files", form).await
}

/// `POST /v1/uploads/{id}/parts` with `bytes` as its `data`.
async fn add_part(app: &TestApp, upload_id: &str, bytes: Vec<u8>) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "data",
        reqwest::multipart::Part::bytes(bytes).file_name("blob"),
    );
    app.post_form(&format!("/v1/uploads/{upload_id}/parts"), form)
        .await
}

async fn create_upload(app: &TestApp, bytes: usize, purpose: &str) -> Value {
    let (s, u) = app
        .post(
            "/v1/uploads",
            json!({"filename": "data.csv", "purpose": purpose, "bytes": bytes,
                   "mime_type": "text/csv"}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    u
}

/// `POST /v1/uploads/{id}/complete` with these `part_ids` (and `md5`).
async fn complete(app: &TestApp, uid: &str, part_ids: Value, md5: Option<&str>) -> (u16, Value) {
    let mut body = json!({"part_ids": part_ids});
    if let Some(m) = md5 {
        body["md5"] = json!(m);
    }
    app.post(&format!("/v1/uploads/{uid}/complete"), body).await
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn list_ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(id).collect()
}

/// Wait (at most 20 s) for `path` to be gone.
async fn gone(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_given_expires_after_expires_and_its_bytes_are_deleted() {
    let mut clock = None;
    let app = TestApp::spawn_with(None, |s| clock = Some(s.api.clock.clone())).await;
    let clock = clock.unwrap();
    let blob = |id: &str| app.data_dir.join("files").join(id);
    let hour = [
        ("purpose", "assistants"),
        ("expires_after[anchor]", "created_at"),
        ("expires_after[seconds]", "3600"),
    ];
    let (s, f) = create_file(&app, &hour, Some(("a.txt", b"soon gone".to_vec()))).await;
    assert_eq!(s, 200, "{f}");
    let created = f["created_at"].as_i64().unwrap();
    assert_eq!(f["expires_at"].as_i64(), Some(created + 3600));
    let (s, f2) = create_file(&app, &hour, Some(("b.txt", b"also".to_vec()))).await;
    assert_eq!(s, 200, "{f2}");
    let (s, f3) = create_file(&app, &hour, Some(("c.txt", b"and this".to_vec()))).await;
    assert_eq!(s, 200, "{f3}");
    let (_, keeps) = app.upload("keep.txt", b"kept".to_vec(), "assistants").await;
    // A File without expires_after carries null, as OpenAI's did.
    assert_eq!(keeps["expires_at"], Value::Null);
    assert_eq!(keeps["status_details"], Value::Null);
    let (fid, fid2, fid3) = (id(&f), id(&f2), id(&f3));
    // Within the hour it is there.
    clock.advance(3000);
    assert_eq!(app.get(&format!("/v1/files/{fid}")).await.1, f);

    clock.advance(600);
    let e = error(404, app.get(&format!("/v1/files/{fid}")).await);
    assert_eq!(e["message"], format!("No such File object: {fid}"));
    assert!(!blob(&fid).exists(), "an expired File's bytes are deleted");
    // Its content and a delete: as for a deleted File.
    error(404, app.get(&format!("/v1/files/{fid}/content")).await);
    error(404, app.delete(&format!("/v1/files/{fid}")).await);
    // The code interpreter cannot be handed an expired File either.
    let (s, v) = app
        .post(
            "/v1/code_interpreter/execute",
            json!({"code": "1", "file_ids": [fid3]}),
        )
        .await;
    assert_eq!(error(400, (s, v))["param"], "file_ids");
    assert!(!blob(&fid3).exists());
    // The other expired one leaves the list (and the disk) without being read first.
    assert!(blob(&fid2).exists());
    let (s, list) = app.get("/v1/files").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list_ids(&list), vec![id(&keeps)]);
    assert!(!blob(&fid2).exists());
    // One that does not expire stays.
    assert_eq!(app.get(&format!("/v1/files/{}", id(&keeps))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_deletes_expired_files_and_abandoned_upload_parts_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let app = TestApp::spawn_with(Some(data.clone()), |_| {}).await;
    let fields = [
        ("purpose", "user_data"),
        ("expires_after[anchor]", "created_at"),
        ("expires_after[seconds]", "3600"),
    ];
    let (s, f) = create_file(&app, &fields, Some(("x.bin", vec![7; 100]))).await;
    assert_eq!(s, 200, "{f}");
    let u = create_upload(&app, 10, "assistants").await;
    assert_eq!(add_part(&app, &id(&u), vec![1; 4]).await.0, 200);
    let blob = data.join("files").join(id(&f));
    let parts = data.join("files").join("uploads").join(id(&u));
    assert!(blob.exists() && parts.exists());
    app.stop().await;
    // The same data an hour on: the server's sweep (at start, then every minute) deletes both
    // without any request asking for them.
    let app = TestApp::spawn_with(Some(data.clone()), |s| s.api.clock.advance(3600)).await;
    assert!(gone(&blob).await, "the expired File's bytes were not swept");
    assert!(
        gone(&parts).await,
        "the expired Upload's Parts were not swept"
    );
    let e = error(
        400,
        app.post(
            &format!("/v1/uploads/{}/complete", id(&u)),
            json!({"part_ids": []}),
        )
        .await,
    );
    assert!(
        e["message"].as_str().unwrap().contains("it expired at"),
        "{e}"
    );
    error(404, app.get(&format!("/v1/files/{}", id(&f))).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_after_outside_openais_bounds_is_refused_in_openais_words() {
    let app = TestApp::spawn().await;
    let file = || Some(("a.txt", b"a".to_vec()));
    // (extra form fields, param, code, message)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[
                ("expires_after[anchor]", "created_at"),
                ("expires_after[seconds]", "3599"),
            ],
            "expires_after.seconds",
            "integer_below_min_value",
            "Invalid 'expires_after.seconds': integer below minimum value. Expected a value >= \
             3600, but got 3599 instead.",
        ),
        (
            &[
                ("expires_after[anchor]", "created_at"),
                ("expires_after[seconds]", "2592001"),
            ],
            "expires_after.seconds",
            "integer_above_max_value",
            "Invalid 'expires_after.seconds': integer above maximum value. Expected a value <= \
             2592000, but got 2592001 instead.",
        ),
        (
            &[
                ("expires_after[anchor]", "last_used"),
                ("expires_after[seconds]", "3600"),
            ],
            "expires_after.anchor",
            "invalid_value",
            "Invalid value: 'last_used'. Supported values are: 'created_at'.",
        ),
        (
            &[
                ("expires_after[anchor]", "created_at"),
                ("expires_after[seconds]", "an hour"),
            ],
            "expires_after.seconds",
            "invalid_type",
            "Invalid type for 'expires_after.seconds': expected an integer, but got a string \
             instead.",
        ),
        (
            &[("expires_after[seconds]", "3600")],
            "expires_after.anchor",
            "",
            "Missing required parameter: 'expires_after.anchor'.",
        ),
    ];
    for (extra, param, code, message) in cases {
        let mut fields = vec![("purpose", "assistants")];
        fields.extend_from_slice(extra);
        let e = error(400, create_file(&app, &fields, file()).await);
        assert_eq!(e["param"], *param, "{e}");
        assert_eq!(e["message"], *message, "{e}");
        if !code.is_empty() {
            assert_eq!(e["code"], *code, "{e}");
        }
    }
    // The longest lifetime is taken.
    let fields = [
        ("purpose", "assistants"),
        ("expires_after[anchor]", "created_at"),
        ("expires_after[seconds]", "2592000"),
    ];
    let (s, f) = create_file(&app, &fields, file()).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(
        f["expires_at"].as_i64(),
        Some(f["created_at"].as_i64().unwrap() + 2_592_000)
    );
    // Nothing was stored by the refused ones.
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(list_ids(&list), vec![id(&f)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_list_takes_up_to_10000_and_other_lists_keep_100() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        app.upload(&format!("{i}.txt"), vec![b'x'], "assistants")
            .await;
    }
    let (s, list) = app.get("/v1/files?limit=1000").await;
    assert_eq!((s, list["data"].as_array().map(Vec::len)), (200, Some(3)));
    assert_eq!(app.get("/v1/files?limit=10000").await.0, 200);
    // No limit: all of them (OpenAI's default is 10,000).
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(
        (list["data"].as_array().map(Vec::len), &list["has_more"]),
        (Some(3), &json!(false))
    );
    for bad in ["10001", "0", "-1", "many"] {
        let e = error(400, app.get(&format!("/v1/files?limit={bad}")).await);
        assert_eq!(e["param"], "limit");
        assert_eq!(
            e["message"],
            format!("Invalid 'limit': integer must be between 1 and 10000, got '{bad}'.")
        );
    }
    let e = error(400, app.get("/v1/assistants?limit=101").await);
    assert_eq!(
        e["message"],
        "Invalid 'limit': integer must be between 1 and 100, got '101'."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_is_openais_no_such_file_object() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (reqwest::Method::GET, "/v1/files/file-nope"),
        (reqwest::Method::GET, "/v1/files/file-nope/content"),
        (reqwest::Method::DELETE, "/v1/files/file-nope"),
    ] {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "No such File object: file-nope",
                             "type": "invalid_request_error", "param": "id", "code": null}}),
            "{method} {path}"
        );
        assert_eq!(status, 404);
    }
    // Other objects keep their own words.
    let e = error(404, app.get("/v1/assistants/asst_nope").await);
    assert_eq!(e["message"], "No assistant found with id 'asst_nope'.");
}

#[tokio::test(flavor = "multi_thread")]
async fn purposes_oasis_has_no_use_for_are_refused_and_vision_files_must_be_images() {
    let app = TestApp::spawn().await;
    for purpose in ["batch", "fine-tune", "evals"] {
        let e = error(
            400,
            app.upload("data.jsonl", b"{}\n".to_vec(), purpose).await,
        );
        assert_eq!(
            (&e["param"], &e["code"]),
            (&json!("purpose"), &json!("invalid_value"))
        );
        let m = e["message"].as_str().unwrap();
        assert!(
            m.starts_with(&format!(
                "Invalid value: '{purpose}'. Supported values are: 'assistants', 'vision', and \
                 'user_data'."
            )) && m.contains("no Batch, fine-tuning or Evals API"),
            "{m}"
        );
    }
    let e = error(400, app.upload("x.txt", b"x".to_vec(), "answers").await);
    assert_eq!(
        e["message"],
        "Invalid value: 'answers'. Supported values are: 'assistants', 'vision', and 'user_data'."
    );
    // A `vision` File must be an image Oasis can show a model.
    let e = error(
        400,
        app.upload("cat.png", b"not a picture".to_vec(), "vision")
            .await,
    );
    assert_eq!(
        (&e["param"], &e["code"]),
        (&json!("file"), &json!("invalid_file_format"))
    );
    let mut png = PNG_SIGNATURE.to_vec();
    png.extend_from_slice(b"\0\0\0\rIHDR");
    let (s, f) = app.upload("cat.png", png, "vision").await;
    assert_eq!((s, &f["purpose"]), (200, &json!("vision")), "{f}");
    for (name, head) in [
        ("a.jpg", &b"\xFF\xD8\xFF\xE0 jfif"[..]),
        ("a.gif", b"GIF89a...."),
        ("a.webp", b"RIFF\x10\0\0\0WEBPVP8 "),
    ] {
        let (s, f) = app.upload(name, head.to_vec(), "vision").await;
        assert_eq!(s, 200, "{name}: {f}");
    }
    let (s, f) = app
        .upload("notes.md", b"# any bytes".to_vec(), "user_data")
        .await;
    assert_eq!((s, &f["purpose"]), (200, &json!("user_data")), "{f}");
    // Nothing refused was stored.
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_joins_its_parts_in_the_order_given_into_a_file() {
    let app = TestApp::spawn().await;
    let u = create_upload(&app, 11, "assistants").await;
    assert_eq!(u["object"], "upload");
    assert_eq!(u["status"], "pending");
    assert_eq!(u["file"], Value::Null);
    assert_eq!(
        u["expires_at"].as_i64(),
        Some(u["created_at"].as_i64().unwrap() + 3600)
    );
    let uid = id(&u);
    let (s, first) = add_part(&app, &uid, b"hello ".to_vec()).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        (&first["object"], &first["upload_id"]),
        (&json!("upload.part"), &json!(uid))
    );
    let (_, second) = add_part(&app, &uid, b"world".to_vec()).await;
    // Completed in the other order, with the md5 of what that gives.
    let md5 = hex::encode(Md5::digest(b"worldhello "));
    let (s, done) = app
        .post(
            &format!("/v1/uploads/{uid}/complete"),
            json!({"part_ids": [id(&second), id(&first)], "md5": md5}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["status"], "completed");
    let file = &done["file"];
    assert_eq!(
        (
            &file["object"],
            &file["bytes"],
            &file["filename"],
            &file["purpose"]
        ),
        (
            &json!("file"),
            &json!(11),
            &json!("data.csv"),
            &json!("assistants")
        )
    );
    let fid = id(file);
    let body = app
        .client
        .get(app.url(&format!("/v1/files/{fid}/content")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), b"worldhello ");
    assert_eq!(app.get(&format!("/v1/files/{fid}")).await.1, *file);
    // The Parts are gone from the disk.
    assert!(
        !app.data_dir
            .join("files")
            .join("uploads")
            .join(&uid)
            .exists()
    );
    // An Upload made with expires_after makes a File that expires.
    let (s, u) = app
        .post(
            "/v1/uploads",
            json!({"filename": "e.txt", "purpose": "user_data", "bytes": 0,
                   "mime_type": "text/plain",
                   "expires_after": {"anchor": "created_at", "seconds": 7200}}),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let (s, done) = app
        .post(
            &format!("/v1/uploads/{}/complete", id(&u)),
            json!({"part_ids": []}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    let f = &done["file"];
    assert_eq!(
        f["expires_at"].as_i64(),
        Some(f["created_at"].as_i64().unwrap() + 7200)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_in_the_wrong_state_or_with_wrong_parts_get_openai_style_errors() {
    let app = TestApp::spawn().await;
    let e = error(
        404,
        app.post("/v1/uploads/upload_nope/cancel", json!({})).await,
    );
    assert_eq!(
        (&e["message"], &e["param"]),
        (&json!("No such Upload object: upload_nope"), &json!("id"))
    );
    error(404, add_part(&app, "upload_nope", b"x".to_vec()).await);

    let u = create_upload(&app, 4, "assistants").await;
    let uid = id(&u);
    let (_, p) = add_part(&app, &uid, b"ab".to_vec()).await;
    let pid = id(&p);
    // Fewer bytes than declared; unknown, malformed and repeated Part ids; a wrong md5.
    let e = error(400, complete(&app, &uid, json!([pid]), None).await);
    assert_eq!(e["param"], "part_ids");
    assert!(
        e["message"].as_str().unwrap().contains("hold 2 bytes"),
        "{e}"
    );
    let e = error(400, complete(&app, &uid, json!(["part_nope"]), None).await);
    assert_eq!(
        (&e["param"], &e["message"]),
        (
            &json!("part_ids[0]"),
            &json!(format!(
                "Invalid 'part_ids[0]': Upload {uid} has no Part 'part_nope'."
            ))
        )
    );
    error(
        400,
        complete(&app, &uid, json!(["../../oasis.sqlite3"]), None).await,
    );
    let (_, p2) = add_part(&app, &uid, b"cd".to_vec()).await;
    let e = error(400, complete(&app, &uid, json!([pid, pid]), None).await);
    assert_eq!(e["param"], "part_ids[1]");
    // More bytes than declared are refused when the Part comes.
    let e = error(400, add_part(&app, &uid, b"e".to_vec()).await);
    assert_eq!(e["param"], "data");
    let wrong = Some("0123456789abcdef0123456789abcdef");
    let e = error(
        400,
        complete(&app, &uid, json!([pid, id(&p2)]), wrong).await,
    );
    assert_eq!(e["param"], "md5");
    // Bad bodies.
    error(400, complete(&app, &uid, json!("nope"), None).await);
    let e = error(
        400,
        app.post(
            &format!("/v1/uploads/{uid}/complete"),
            json!({"part_ids": [], "extra": 1}),
        )
        .await,
    );
    assert_eq!(
        e["message"],
        "Unrecognized request argument supplied: extra"
    );

    // Completed: no more Parts, no second completion, no cancel.
    let (s, done) = complete(&app, &uid, json!([pid, id(&p2)]), None).await;
    assert_eq!(s, 200, "{done}");
    let e = error(400, add_part(&app, &uid, b"x".to_vec()).await);
    assert_eq!(
        e["message"],
        format!("Cannot add Parts to Upload {uid}: it is already completed.")
    );
    let e = error(400, complete(&app, &uid, json!([pid, id(&p2)]), None).await);
    assert_eq!(
        e["message"],
        format!("Cannot complete Upload {uid}: it is already completed.")
    );
    let e = error(
        400,
        app.post(&format!("/v1/uploads/{uid}/cancel"), json!({}))
            .await,
    );
    assert_eq!(
        e["message"],
        format!("Cannot cancel Upload {uid}: it is already completed.")
    );

    // Cancelled: its Parts are deleted, and nothing more can happen to it.
    let u = create_upload(&app, 4, "assistants").await;
    let uid = id(&u);
    let (_, p) = add_part(&app, &uid, b"abcd".to_vec()).await;
    let (s, c) = app
        .post(&format!("/v1/uploads/{uid}/cancel"), json!({}))
        .await;
    assert_eq!((s, &c["status"]), (200, &json!("cancelled")), "{c}");
    assert!(
        !app.data_dir
            .join("files")
            .join("uploads")
            .join(&uid)
            .exists()
    );
    let e = error(400, add_part(&app, &uid, b"x".to_vec()).await);
    assert_eq!(
        e["message"],
        format!("Cannot add Parts to Upload {uid}: it was cancelled.")
    );
    let e = error(
        400,
        app.post(
            &format!("/v1/uploads/{uid}/complete"),
            json!({"part_ids": [id(&p)]}),
        )
        .await,
    );
    assert_eq!(
        e["message"],
        format!("Cannot complete Upload {uid}: it was cancelled.")
    );
    error(
        400,
        app.post(&format!("/v1/uploads/{uid}/cancel"), json!({}))
            .await,
    );

    // Bad creations.
    let base =
        json!({"filename": "a.csv", "purpose": "assistants", "bytes": 1, "mime_type": "text/csv"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, param) in [
        (with("purpose", json!("batch")), "purpose"),
        (with("bytes", json!(-1)), "bytes"),
        (with("mime_type", json!("")), "mime_type"),
        (with("filename", json!("../")), "filename"),
        (
            with(
                "expires_after",
                json!({"anchor": "created_at", "seconds": 60}),
            ),
            "expires_after.seconds",
        ),
    ] {
        let e = error(400, app.post("/v1/uploads", body.clone()).await);
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("mime_type");
    let e = error(400, app.post("/v1/uploads", missing).await);
    assert_eq!(e["message"], "Missing required parameter: 'mime_type'.");
    let e = error(
        400,
        app.post(
            "/v1/uploads",
            with("expires_after", json!(["created_at", 3600])),
        )
        .await,
    );
    assert_eq!(e["param"], "expires_after");
    // A Part with no `data`, or with something else besides.
    let u = create_upload(&app, 4, "assistants").await;
    let form = reqwest::multipart::Form::new().text("chunk", "abcd");
    let r = app
        .client
        .post(app.url(&format!("/v1/uploads/{}/parts", id(&u))))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let e = error(400, (r.status().as_u16(), r.json().await.unwrap()));
    assert_eq!(
        e["message"],
        "Unrecognized request argument supplied: chunk"
    );
    // A form whose one part has no name.
    let body = "--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n";
    let r = app
        .client
        .post(app.url(&format!("/v1/uploads/{}/parts", id(&u))))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body)
        .send()
        .await
        .unwrap();
    let e = error(400, (r.status().as_u16(), r.json().await.unwrap()));
    assert_eq!(e["message"], "Missing required parameter: 'data'.");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_held_to_the_same_size_cap_as_files() {
    let app = TestApp::spawn_with(None, |s| s.api.max_upload_bytes = 1000).await;
    let e = error(
        400,
        app.post(
            "/v1/uploads",
            json!({"filename": "a", "purpose": "assistants", "bytes": 1001, "mime_type": "x"}),
        )
        .await,
    );
    assert_eq!(
        (&e["param"], &e["code"]),
        (&json!("bytes"), &json!("integer_above_max_value"))
    );
    let u = create_upload(&app, 1000, "assistants").await;
    // One Part past the cap is a 413, read no further than the cap.
    let e = error(413, add_part(&app, &id(&u), vec![0; 1001]).await);
    assert_eq!(e["param"], "data");
    // Parts together past the declared size are refused.
    assert_eq!(add_part(&app, &id(&u), vec![0; 600]).await.0, 200);
    let e = error(400, add_part(&app, &id(&u), vec![0; 600]).await);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("created for 1000 bytes"),
        "{e}"
    );
    // A vision Upload must make an image.
    let u = create_upload(&app, 3, "vision").await;
    let (_, p) = add_part(&app, &id(&u), b"abc".to_vec()).await;
    let e = error(
        400,
        app.post(
            &format!("/v1/uploads/{}/complete", id(&u)),
            json!({"part_ids": [id(&p)]}),
        )
        .await,
    );
    assert_eq!(e["code"], "invalid_file_format");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_expires_an_hour_after_it_was_created_and_its_parts_are_deleted() {
    let mut clock = None;
    let app = TestApp::spawn_with(None, |s| clock = Some(s.api.clock.clone())).await;
    let clock = clock.unwrap();
    let u = create_upload(&app, 4, "assistants").await;
    let uid = id(&u);
    let (s, p) = add_part(&app, &uid, b"abcd".to_vec()).await;
    assert_eq!(s, 200, "{p}");
    let parts = app.data_dir.join("files").join("uploads").join(&uid);
    assert!(parts.exists());
    clock.advance(3000);
    assert_eq!(add_part(&app, &uid, vec![]).await.0, 200, "within the hour");
    clock.advance(600);
    let e = error(
        400,
        app.post(
            &format!("/v1/uploads/{uid}/complete"),
            json!({"part_ids": [id(&p)]}),
        )
        .await,
    );
    assert_eq!(
        e["message"],
        format!(
            "Cannot complete Upload {uid}: it expired at {} (an Upload expires an hour after it \
             is created).",
            u["expires_at"]
        )
    );
    assert!(!parts.exists(), "an expired Upload's Parts are deleted");
    error(400, add_part(&app, &uid, b"x".to_vec()).await);
    error(
        400,
        app.post(&format!("/v1/uploads/{uid}/cancel"), json!({}))
            .await,
    );
    let (_, list) = app.get("/v1/files").await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_mode_serves_uploads_too() {
    let app = TestApp::spawn_with(None, |s| s.api.mode = oasis::api::Mode::Tools).await;
    let u = create_upload(&app, 2, "assistants").await;
    let (_, p) = add_part(&app, &id(&u), b"ok".to_vec()).await;
    let (s, done) = app
        .post(
            &format!("/v1/uploads/{}/complete", id(&u)),
            json!({"part_ids": [id(&p)]}),
        )
        .await;
    assert_eq!((s, &done["status"]), (200, &json!("completed")), "{done}");
}
