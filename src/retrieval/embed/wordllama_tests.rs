//! The built-in embedder with the real pinned model (downloaded once into the test data dir,
//! `OASIS_TEST_DATA_DIR` or `target/tmp/oasis-data`, shared with the integration tests).

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;

use super::{Embedder, WordLlama};

fn data_dir() -> PathBuf {
    std::env::var_os("OASIS_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tmp/oasis-data"))
}

/// One model for every test of this binary.
fn model() -> &'static WordLlama {
    static MODEL: OnceLock<WordLlama> = OnceLock::new();
    MODEL.get_or_init(|| WordLlama::load(&data_dir()).expect("the built-in model loads"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

#[test]
fn vectors_are_256_d_unit_length_and_empty_text_is_zero() {
    let m = model();
    assert_eq!(m.dims(), 256);
    assert_eq!(m.id(), "wordllama-l2-supercat-256");
    let texts = strings(&["hello world", " ", "<s>", "🦀", "a\u{0}b", ""]);
    let vectors = m.embed_sync(&texts);
    assert_eq!(vectors.len(), texts.len());
    for (text, v) in texts.iter().zip(&vectors[..5]) {
        assert_eq!(v.len(), 256);
        assert!(
            (dot(v, v) - 1.0).abs() < 1e-5,
            "{text:?}: |v|² = {}",
            dot(v, v)
        );
    }
    assert_eq!(vectors[5], vec![0.0; 256], "no tokens, no direction");
}

#[test]
fn related_sentences_score_higher_than_unrelated_ones() {
    let texts = strings(&[
        "How do I bake sourdough bread at home?",
        "A simple recipe for homemade sourdough loaves.",
        "The central bank raised interest rates by a quarter point.",
        "Inflation pushed the Federal Reserve to increase borrowing costs.",
    ]);
    let v = model().embed_sync(&texts);
    let (bread, rates) = (dot(&v[0], &v[1]), dot(&v[2], &v[3]));
    for unrelated in [
        dot(&v[0], &v[2]),
        dot(&v[0], &v[3]),
        dot(&v[1], &v[2]),
        dot(&v[1], &v[3]),
    ] {
        assert!(
            bread > unrelated && rates > unrelated,
            "related {bread:.3} / {rates:.3} vs unrelated {unrelated:.3}"
        );
    }
}

#[test]
fn a_text_gets_the_same_vector_alone_in_any_batch_and_on_any_thread() {
    let m = model();
    let text = "Vector stores hold chunks of files; file_search ranks them.".to_string();
    let alone = m.embed_sync(std::slice::from_ref(&text));
    // Big enough to be spread over threads, with the text in several places.
    let mut batch: Vec<String> = (0..4000)
        .map(|i| format!("filler text number {i}, to spread the batch over threads"))
        .collect();
    for at in [0, 1234, 3999] {
        batch[at] = text.clone();
    }
    let vectors = m.embed_sync(&batch);
    for at in [0, 1234, 3999] {
        assert_eq!(vectors[at], alone[0], "position {at}");
    }
    assert_eq!(m.embed_sync(std::slice::from_ref(&text)), alone);
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

/// `testdata/wordllama_expected.json` is wordllama 0.4.0.post1's own output, made by
/// `testdata/wordllama_expected.py` with the wheel installed (numpy, tokenizers).
#[test]
fn tokens_and_vectors_match_wordllamas_own_python_code() {
    let expected: Expected =
        serde_json::from_str(include_str!("testdata/wordllama_expected.json")).unwrap();
    let m = model();
    let texts: Vec<String> = expected.cases.iter().map(|c| c.text.clone()).collect();
    let vectors = m.embed_sync(&texts);
    for (case, v) in expected.cases.iter().zip(&vectors) {
        assert_eq!(m.token_ids(&case.text), case.ids, "{:?}", case.text);
        let worst = v
            .iter()
            .zip(&case.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{:?}: off by {worst}", case.text);
    }
}

#[test]
fn special_tokens_are_taken_from_the_raw_text_as_tokenizers_does() {
    let m = model();
    // Expected ids from the `tokenizers` Python package with the same file.
    assert_eq!(
        m.token_ids("hello <s> world"),
        [22172, 29871, 1, 29871, 3186]
    );
    assert_eq!(m.token_ids("hello<s>world"), [22172, 1, 3186]);
    assert_eq!(m.token_ids(" <unk> x"), [259, 0, 29871, 921]);
    assert_eq!(m.token_ids("a</s>"), [263, 2]);
    assert_eq!(m.token_ids(""), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_embedder_gives_what_embed_sync_gives() {
    let m = model();
    let small = strings(&["one query"]);
    let large: Vec<String> = (0..500).map(|i| format!("chunk {i} ").repeat(20)).collect();
    assert_eq!(m.embed(&small).await.unwrap(), m.embed_sync(&small));
    assert_eq!(m.embed(&large).await.unwrap(), m.embed_sync(&large));
    assert!(m.bench_throughput(&large) > 0.0);
}
