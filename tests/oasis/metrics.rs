//! `GET /metrics` (Prometheus text) and `GET /ready`: what operators watch, served without a
//! key, and never showing a key or an id.

use serde_json::{Value, json};

use crate::helpers::TestApp;

const KEY: &str = "sk-metrics-test-key-4f1d9c27";

/// `method path` with the key and a JSON body; the status and the answer.
async fn call(app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .request(method, app.url(path))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_template_and_show_no_key_or_id() {
    let app = TestApp::spawn_with(None, |s| {
        s.api.keys = oasis::tenancy::Keys::new(Some(vec![KEY.into()]), None).unwrap();
    })
    .await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let (s, assistant) = call(&app, post.clone(), "/v1/assistants", json!({"model": "m"})).await;
    assert_eq!(s, 200, "{assistant}");
    let (s, thread) = call(&app, post, "/v1/threads", json!({})).await;
    assert_eq!(s, 200, "{thread}");
    let thread_id = thread["id"].as_str().unwrap();
    let assistant_id = assistant["id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        get.clone(),
        &format!("/v1/threads/{thread_id}"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(&app, get.clone(), "/v1/threads/thread_nope42", json!({})).await;
    assert_eq!(s, 404);
    let (s, _) = call(&app, get, "/no/such/route/here", json!({})).await;
    assert_eq!(s, 404);
    // A wrong key: refused, and the key it showed is not kept either.
    let r = app
        .client
        .get(app.url("/v1/assistants"))
        .bearer_auth("sk-wrong-key-8e3a61")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // No key needed.
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = r.text().await.unwrap();
    for line in [
        r#"oasis_http_requests_total{method="POST",route="/v1/assistants",status="2xx"}"#,
        r#"oasis_http_requests_total{method="POST",route="/v1/threads",status="2xx"}"#,
        r#"oasis_http_requests_total{method="GET",route="/v1/threads/{thread_id}",status="2xx"}"#,
        r#"oasis_http_requests_total{method="GET",route="/v1/threads/{thread_id}",status="4xx"}"#,
        r#"oasis_http_requests_total{method="GET",route="unmatched",status="4xx"}"#,
        r#"oasis_http_requests_total{method="GET",route="/v1/assistants",status="4xx"}"#,
        "# TYPE oasis_http_requests_total counter",
        "# TYPE oasis_http_request_duration_seconds histogram",
        "# HELP oasis_http_request_duration_seconds HTTP request latency",
        r#"oasis_http_request_duration_seconds_bucket{method="POST",route="/v1/threads",status="2xx",le="+Inf"}"#,
        r#"oasis_http_request_duration_seconds_count{method="POST",route="/v1/threads",status="2xx"}"#,
        r#"oasis_sandbox_sessions{state="live"}"#,
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    for secret in [
        KEY,
        "sk-wrong-key",
        thread_id,
        assistant_id,
        "thread_nope42",
        "/no/such",
        &app.base,
    ] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    // Every label value is a route template, a fixed name or a number.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(labels) = line.split_once('{').and_then(|(_, l)| l.rsplit_once('}')) {
            assert!(!labels.0.contains("_nope"), "{line}");
            assert!(
                !labels.0.contains("thread_") || labels.0.contains("{thread_id}"),
                "{line}"
            );
        }
    }

    let (s, v) = app.get("/ready").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"status": "ready", "database": "ok", "object_store": "ok"})
    );
    app.stop().await;
}

/// An object store that does not answer makes the node unready (503, OpenAI's error body)
/// without saying where it is; `/health` still answers.
#[tokio::test(flavor = "multi_thread")]
async fn ready_names_the_part_that_does_not_answer() {
    let objects = tempfile::tempdir().unwrap();
    let root = objects.path().join("bucket");
    let url = format!("file://{}", root.display());
    let app = TestApp::spawn_with(None, |s| s.object_store_url = Some(url)).await;
    let (s, v) = app.get("/ready").await;
    assert_eq!(s, 200, "{v}");
    std::fs::remove_dir_all(&root).unwrap();
    let (s, v) = app.get("/ready").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["param"], Value::Null);
    assert_eq!(v["error"]["code"], Value::Null);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("object store"), "{message}");
    assert!(!message.contains("database"), "{message}");
    assert!(
        !message.contains(&*objects.path().to_string_lossy()),
        "{message}"
    );
    let (s, _) = app.get("/health").await;
    assert_eq!(s, 200);
    let text = app.text("/metrics").await;
    assert!(
        text.contains(r#"oasis_object_store_errors_total{op="any"}"#),
        "{text}"
    );
    app.stop().await;
}

/// With sandboxes in worker processes (the default), the sessions gauge counts what the
/// workers hold: live interpreters, and hibernated states once they were evicted.
#[tokio::test(flavor = "multi_thread")]
async fn the_sessions_gauge_counts_what_the_sandbox_workers_hold() {
    let app = TestApp::spawn_with(None, crate::worker_processes::in_worker_processes).await;
    for session in ["gauge-a", "gauge-b"] {
        let (s, v) = app
            .post(
                "/v1/code_interpreter/execute",
                json!({"session_id": session, "code": "x = 1"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let text = app.text("/metrics").await;
    let gauge = |state: &str| {
        let name = format!("oasis_sandbox_sessions{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .trim()
            .to_string()
    };
    assert_eq!(gauge("live"), "2");
    assert_eq!(gauge("hibernated"), "0");
    app.stop().await;
}
