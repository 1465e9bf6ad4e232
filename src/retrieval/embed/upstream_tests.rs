//! Upstream embeddings against a scripted HTTP server on loopback (the fake upstream of
//! `backend/upstream/test_server.rs`): batching, order, retries, errors.

use std::time::Duration;

use serde_json::{Value, json};

// The backend's own tests compile the same file; sharing one fake upstream beats two.
#[allow(clippy::duplicate_mod)]
#[path = "../../backend/upstream/test_server.rs"]
mod test_server;

use test_server::{Reply, Server, json_reply};

use super::{EmbedError, Embedder, UpstreamEmbeddings, UpstreamEmbeddingsConfig};

fn embedder(server: &Server) -> UpstreamEmbeddings {
    UpstreamEmbeddings::new(UpstreamEmbeddingsConfig {
        base_url: format!("{}/", server.base),
        model: "text-embedding-3-small".into(),
        api_key: Some("sk-test-key".into()),
    })
    .with_retries(3, Duration::from_millis(1))
}

/// An embeddings answer with one `[n, 1]` vector per `n`, listed in reverse order.
fn answer(ns: &[f32]) -> Reply {
    let mut data: Vec<Value> = ns
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"object": "embedding", "index": i, "embedding": [n, 1.0]}))
        .collect();
    data.reverse();
    json_reply(
        200,
        json!({"object": "list", "data": data, "model": "text-embedding-3-small"}),
    )
}

fn unit(n: f32) -> Vec<f32> {
    let len = (n * n + 1.0).sqrt();
    vec![n / len, 1.0 / len]
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn texts_go_in_batches_in_order_with_the_key_and_come_back_normalized() {
    let server = Server::start(vec![
        answer(&[1.0, 2.0]),
        answer(&[3.0, 4.0]),
        answer(&[5.0]),
    ])
    .await;
    let e = embedder(&server).with_batch_limits(2, 1 << 20);
    assert_eq!(e.id(), "upstream:text-embedding-3-small");
    assert_eq!(e.dims(), 0, "unknown before the first answer");

    let texts = strings(&["a", "b", "c", "", "d", "e"]);
    let got = e.embed(&texts).await.unwrap();

    let want = vec![
        unit(1.0),
        unit(2.0),
        unit(3.0),
        vec![0.0, 0.0],
        unit(4.0),
        unit(5.0),
    ];
    assert_eq!(got, want);
    assert_eq!(e.dims(), 2);
    let received = server.received();
    let inputs: Vec<Value> = received.iter().map(|r| r.json()["input"].clone()).collect();
    assert_eq!(
        inputs,
        [json!(["a", "b"]), json!(["c", "d"]), json!(["e"])],
        "the empty text is not sent"
    );
    for r in &received {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/embeddings")
        );
        assert_eq!(r.header("authorization"), Some("Bearer sk-test-key"));
        assert_eq!(r.json()["model"], "text-embedding-3-small");
    }
}

#[tokio::test]
async fn a_batch_holds_at_most_256_inputs_by_default() {
    let first: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let server = Server::start(vec![answer(&first), answer(&[7.0, 8.0])]).await;
    let e = embedder(&server);
    let texts: Vec<String> = (0..258).map(|i| format!("text {i}")).collect();
    let got = e.embed(&texts).await.unwrap();
    assert_eq!(got.len(), 258);
    assert_eq!(got[255], unit(255.0));
    assert_eq!(got[257], unit(8.0));
    let sizes: Vec<usize> = server
        .received()
        .iter()
        .map(|r| r.json()["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [256, 2]);
}

#[tokio::test]
async fn a_429_is_retried_after_the_servers_retry_after() {
    let limited = Reply::Whole {
        status: 429,
        content_type: "application/json",
        headers: vec![("retry-after-ms", "5")],
        body: json!({"error": {"message": "Rate limit reached", "type": "requests"}}).to_string(),
    };
    let server = Server::start(vec![limited, answer(&[1.0])]).await;
    let got = embedder(&server).embed(&strings(&["x"])).await.unwrap();
    assert_eq!(got, vec![unit(1.0)]);
    let bodies: Vec<Value> = server.received().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1], "the same request again");
}

#[tokio::test]
async fn persistent_rate_limiting_and_server_errors_end_after_the_retries() {
    let server = Server::start(vec![json_reply(
        429,
        json!({"error": {"message": "slow down"}}),
    )])
    .await;
    let err = embedder(&server).embed(&strings(&["x"])).await.unwrap_err();
    assert!(
        matches!(&err, EmbedError::RateLimited(m) if m.contains("4 attempts") && m.contains("slow down")),
        "{err:?}"
    );
    assert_eq!(server.received().len(), 4);

    let server = Server::start(vec![json_reply(503, json!({"detail": "overloaded"}))]).await;
    let err = embedder(&server)
        .with_retries(1, Duration::from_millis(1))
        .embed(&strings(&["x"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EmbedError::Upstream(m) if m.contains("HTTP 503") && m.contains("overloaded")),
        "{err:?}"
    );
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn refusals_are_not_retried_and_never_quote_the_key() {
    let server = Server::start(vec![json_reply(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-test-key."}}),
    )])
    .await;
    let err = embedder(&server).embed(&strings(&["x"])).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EmbedError::Refused(_)), "{err:?}");
    assert!(msg.contains("OASIS_EMBEDDINGS_API_KEY"), "{msg}");
    assert!(!msg.contains("sk-test-key"), "{msg}");
    assert_eq!(server.received().len(), 1);

    let server = Server::start(vec![json_reply(
        400,
        json!({"error": {"message": "This model's maximum context length is 8192 tokens"}}),
    )])
    .await;
    let err = embedder(&server).embed(&strings(&["x"])).await.unwrap_err();
    assert!(
        matches!(&err, EmbedError::Refused(m) if m.contains("maximum context length")),
        "{err:?}"
    );
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn unusable_answers_are_errors_that_say_why() {
    let server = Server::start(vec![
        answer(&[1.0]),
        json_reply(200, json!({"data": [{"embedding": "AAAA"}]})),
    ])
    .await;
    let e = embedder(&server);
    let err = e.embed(&strings(&["a", "b"])).await.unwrap_err();
    assert!(
        matches!(&err, EmbedError::Upstream(m) if m.contains("1 embeddings for 2 inputs")),
        "{err:?}"
    );
    let err = e.embed(&strings(&["a"])).await.unwrap_err().to_string();
    assert!(err.contains("unusable"), "{err}");
    assert_eq!(
        server.received().len(),
        2,
        "answers that arrived are not retried"
    );
}

#[tokio::test]
async fn a_vector_length_change_is_refused() {
    let server = Server::start(vec![
        answer(&[1.0]),
        json_reply(200, json!({"data": [{"embedding": [1.0, 2.0, 3.0]}]})),
    ])
    .await;
    let e = embedder(&server);
    e.embed(&strings(&["a"])).await.unwrap();
    let err = e.embed(&strings(&["b"])).await.unwrap_err().to_string();
    assert!(
        err.contains("3-dimensional vectors after 2-dimensional"),
        "{err}"
    );
}

#[tokio::test]
async fn only_empty_texts_still_get_vectors_of_the_models_length() {
    let server = Server::start(vec![answer(&[1.0])]).await;
    let e = embedder(&server);
    let got = e.embed(&strings(&["", ""])).await.unwrap();
    assert_eq!(got, vec![vec![0.0, 0.0]; 2]);
    assert_eq!(
        server.received().len(),
        1,
        "one request to learn the length"
    );
    assert_eq!(e.embed(&[]).await.unwrap(), Vec::<Vec<f32>>::new());
}

#[tokio::test]
async fn an_unreachable_server_and_a_bad_url_are_clear_errors() {
    // A port nobody listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let e = UpstreamEmbeddings::new(UpstreamEmbeddingsConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        model: "m".into(),
        api_key: None,
    })
    .with_retries(1, Duration::from_millis(1));
    let err = e.embed(&strings(&["x"])).await.unwrap_err();
    assert!(
        matches!(&err, EmbedError::Upstream(m) if m.contains("could not connect") && m.contains("2 attempts")),
        "{err:?}"
    );

    let e = UpstreamEmbeddings::new(UpstreamEmbeddingsConfig {
        base_url: "ftp://example.invalid".into(),
        model: "m".into(),
        api_key: None,
    });
    let err = e.embed(&strings(&["x"])).await.unwrap_err().to_string();
    assert!(err.contains("http:// or https://"), "{err}");
}
