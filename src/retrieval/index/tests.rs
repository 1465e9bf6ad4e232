use serde_json::json;

use super::*;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn chunk(file: &str, text: &str, vector: &[f32], attrs: serde_json::Value) -> IndexedChunk {
    IndexedChunk {
        file_id: file.into(),
        file_name: format!("{file}.txt"),
        chunk_index: 0,
        text: text.into(),
        vector: if vector.is_empty() {
            Vec::new()
        } else {
            unit(vector)
        },
        attributes: serde_json::from_value(attrs).unwrap(),
    }
}

fn corpus() -> Vec<IndexedChunk> {
    vec![
        chunk(
            "f0",
            "The cat sat on the mat and purred.",
            &[1.0, 0.0, 0.0],
            json!({"kind": "pet", "year": 2020}),
        ),
        chunk(
            "f1",
            "Stock markets fell sharply on Monday as rates rose.",
            &[0.0, 1.0, 0.0],
            json!({"kind": "news", "year": 2024}),
        ),
        chunk(
            "f2",
            "Dogs and cats are the most common household pets.",
            &[0.8, 0.2, 0.1],
            json!({"kind": "pet", "year": 2023}),
        ),
        chunk(
            "f3",
            "Interest rates and bond yields: a primer for investors.",
            &[0.1, 0.9, 0.2],
            json!({"kind": "finance", "year": 2022}),
        ),
        chunk(
            "f4",
            "Recipes: bread, butter and jam.",
            &[0.0, 0.0, 1.0],
            json!({}),
        ),
    ]
}

fn files(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.file_id.as_str()).collect()
}

fn opts(mode: Mode) -> SearchOptions {
    SearchOptions {
        mode,
        ..SearchOptions::default()
    }
}

#[test]
fn bm25_ranks_the_obvious_chunk_first() {
    let index = Index::build(corpus());
    assert_eq!(index.len(), 5);
    let hits = index.search("interest rates for investors", None, &opts(Mode::Bm25));
    assert_eq!(hits[0].file_id, "f3");
    assert_eq!(
        hits[0].text,
        "Interest rates and bond yields: a primer for investors."
    );
    assert_eq!(hits[0].file_name, "f3.txt");
    assert!(files(&hits).contains(&"f1"), "f1 says rates too: {hits:?}");
    assert!(hits.iter().all(|h| h.score > 0.0 && h.score <= 1.0));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // Stemming: "purring cats" finds "purred" and "cats"/"cat".
    let hits = index.search("purring cats", None, &opts(Mode::Bm25));
    assert_eq!(hits[0].file_id, "f0");
    // Nothing known: no hits.
    assert!(index.search("zeppelin", None, &opts(Mode::Bm25)).is_empty());
    assert!(
        index
            .search("the and of", None, &opts(Mode::Bm25))
            .is_empty()
    );
}

#[test]
fn bm25_score_is_the_share_of_the_best_possible() {
    let index = Index::build(vec![
        chunk("a", "alpha beta", &[], json!({})),
        chunk("b", "gamma delta", &[], json!({})),
    ]);
    let o = SearchOptions {
        b: 0.0,
        ..opts(Mode::Bm25)
    };
    // Every query term once: (k1 + 1) / (1 + k1) per term over (k1 + 1) per term.
    let hits = index.search("alpha beta", None, &o);
    assert!(
        (hits[0].score - 1.0 / 1.9).abs() < 1e-5,
        "{}",
        hits[0].score
    );
    // Half the query's weight (both terms are equally rare).
    let hits = index.search("alpha gamma", None, &o);
    assert!(
        (hits[0].score - 0.5 / 1.9).abs() < 1e-5,
        "{}",
        hits[0].score
    );
}

#[test]
fn dense_ranks_by_cosine() {
    let index = Index::build(corpus());
    assert_eq!(index.dim(), 3);
    let q = unit(&[0.9, 0.1, 0.0]);
    let hits = index.search("", Some(&q), &opts(Mode::Dense));
    // f4 is orthogonal to the query: cosine 0 is no hit.
    assert_eq!(files(&hits), ["f0", "f2", "f3", "f1"]);
    let expect = dot(&q, &unit(&[0.8, 0.2, 0.1]));
    assert!(
        (hits[1].score - expect).abs() < 0.005,
        "{} vs {expect}",
        hits[1].score
    );
    // A vector of the wrong length is ignored: BM25 answers.
    let hits = index.search("bread", Some(&[1.0, 0.0]), &opts(Mode::Dense));
    assert_eq!(files(&hits), ["f4"]);
}

#[test]
fn hybrid_combines_both_rankings() {
    let index = Index::build(corpus());
    // The text points at f3 ("bond"), the vector at f1: both come first in one ranking.
    let q = unit(&[0.0, 1.0, 0.0]);
    for fusion in [Fusion::Rrf, Fusion::Weighted] {
        let o = SearchOptions {
            fusion,
            ..opts(Mode::Hybrid)
        };
        let hits = index.search("bond", Some(&q), &o);
        let top2: Vec<&str> = files(&hits)[..2].to_vec();
        assert!(
            top2.contains(&"f1") && top2.contains(&"f3"),
            "{fusion:?}: {hits:?}"
        );
        assert!(
            hits.iter().all(|h| h.score > 0.0 && h.score <= 1.0),
            "{hits:?}"
        );
        // Weights move the balance.
        let text_only = SearchOptions {
            hybrid_weights: Some((0.0, 1.0)),
            ..o.clone()
        };
        assert_eq!(index.search("bond", Some(&q), &text_only)[0].file_id, "f3");
        let dense_only = SearchOptions {
            hybrid_weights: Some((1.0, 0.0)),
            ..o
        };
        assert_eq!(index.search("bond", Some(&q), &dense_only)[0].file_id, "f1");
    }
    // RRF: first in both rankings scores 1.
    let o = SearchOptions {
        fusion: Fusion::Rrf,
        ..opts(Mode::Hybrid)
    };
    let hits = index.search("bond yields", Some(&unit(&[0.1, 0.9, 0.2])), &o);
    assert_eq!(hits[0].file_id, "f3");
    assert!((hits[0].score - 1.0).abs() < 1e-6);
}

#[test]
fn hybrid_without_vectors_is_bm25() {
    let mut chunks = corpus();
    chunks.iter_mut().for_each(|c| c.vector.clear());
    let index = Index::build(chunks);
    assert_eq!(index.dim(), 0);
    let q = unit(&[0.0, 1.0, 0.0]);
    let hybrid = index.search("bond", Some(&q), &opts(Mode::Hybrid));
    let bm25 = index.search("bond", None, &opts(Mode::Bm25));
    assert_eq!(hybrid, bm25);
    assert_eq!(files(&hybrid), ["f3"]);
}

#[test]
fn filters_apply_before_ranking() {
    let index = Index::build(corpus());
    let filter: Filter =
        serde_json::from_value(json!({"type": "eq", "key": "kind", "value": "pet"})).unwrap();
    let q = unit(&[0.0, 1.0, 0.0]);
    for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
        let o = SearchOptions {
            filter: Some(filter.clone()),
            max_results: 1,
            ..opts(mode)
        };
        // The best match overall (f1 or f3) is filtered out; with one result asked for, the
        // result is still a pet chunk rather than nothing.
        let hits = index.search("rates cats", Some(&q), &o);
        assert_eq!(hits.len(), 1, "{mode:?}");
        assert_eq!(
            hits[0].attributes["kind"],
            crate::retrieval::filter::AttrValue::String("pet".into())
        );
    }
    let filter: Filter =
        serde_json::from_value(json!({"type": "gte", "key": "year", "value": 2023})).unwrap();
    let o = SearchOptions {
        filter: Some(filter),
        ..opts(Mode::Bm25)
    };
    let hits = index.search("cats rates", None, &o);
    let mut got = files(&hits);
    got.sort();
    assert_eq!(got, ["f1", "f2"]);
}

#[test]
fn threshold_and_max_results() {
    let index = Index::build(corpus());
    let q = unit(&[0.9, 0.1, 0.0]);
    let all = index.search("", Some(&q), &opts(Mode::Dense));
    assert_eq!(all.len(), 4);
    let o = SearchOptions {
        score_threshold: all[1].score,
        ..opts(Mode::Dense)
    };
    assert_eq!(index.search("", Some(&q), &o), all[..2].to_vec());
    let o = SearchOptions {
        max_results: 3,
        ..opts(Mode::Dense)
    };
    assert_eq!(index.search("", Some(&q), &o), all[..3].to_vec());
    let o = SearchOptions {
        max_results: 0,
        ..opts(Mode::Dense)
    };
    assert!(index.search("", Some(&q), &o).is_empty());
    let o = SearchOptions {
        score_threshold: 1.01,
        ..opts(Mode::Dense)
    };
    assert!(index.search("", Some(&q), &o).is_empty());
}

#[test]
fn search_many_keeps_each_chunks_best_score() {
    let index = Index::build(corpus());
    let o = opts(Mode::Bm25);
    let hits = index.search_many(&[("bread", None), ("bond", None)], &o);
    let mut got = files(&hits);
    got.sort();
    assert_eq!(got, ["f3", "f4"]);
    let bread = index.search("bread", None, &o);
    assert_eq!(
        hits.iter().find(|h| h.file_id == "f4").unwrap().score,
        bread[0].score
    );
}

#[test]
fn chunks_of_a_file_share_one_group_and_ties_keep_build_order() {
    let mut chunks = Vec::new();
    for i in 0..3 {
        let mut c = chunk("same", "identical words here", &[], json!({"k": 1}));
        c.chunk_index = i;
        chunks.push(c);
    }
    let index = Index::build(chunks);
    assert_eq!(index.groups.len(), 1);
    let hits = index.search("identical", None, &opts(Mode::Bm25));
    assert_eq!(hits.iter().map(|h| h.chunk).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        hits.iter().map(|h| h.chunk_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn parallel_build_matches_a_single_range() {
    // Enough chunks for several analysis ranges; each text names its own number, so every
    // chunk is findable and postings must be in order for the ranking to match.
    let chunks: Vec<IndexedChunk> = (0..5000)
        .map(|i| {
            chunk(
                &format!("f{i}"),
                &format!("common word{} word{}", i, i % 7),
                &[],
                json!({}),
            )
        })
        .collect();
    let index = Index::build(chunks);
    assert_eq!(index.len(), 5000);
    assert!(index.post_doc.windows(2).filter(|w| w[0] >= w[1]).count() < index.vocab.len());
    for t in 0..index.vocab.len() {
        let r = index.post_start[t] as usize..index.post_start[t + 1] as usize;
        assert!(index.post_doc[r].windows(2).all(|w| w[0] < w[1]));
    }
    let hits = index.search("word4321", None, &opts(Mode::Bm25));
    assert_eq!(files(&hits), ["f4321"]);
    assert!(index.heap_bytes() > 5000 * 20);
    let o = SearchOptions {
        max_results: 50,
        ..opts(Mode::Bm25)
    };
    assert_eq!(index.search("common", None, &o).len(), 50);
}

#[test]
fn empty_index() {
    let index = Index::default();
    assert!(index.is_empty());
    assert!(
        index
            .search("anything", Some(&[1.0]), &SearchOptions::default())
            .is_empty()
    );
}

#[test]
fn quantized_cosines_stay_close_to_exact_ones() {
    // Pseudo-random unit vectors of a few lengths, including ones not a multiple of 16 and
    // one long enough to need the query's smaller scale.
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 2001) as f32 / 1000.0 - 1.0
    };
    for dim in [3, 100, 256, 3072] {
        let vecs: Vec<Vec<f32>> = (0..50)
            .map(|_| unit(&(0..dim).map(|_| next()).collect::<Vec<_>>()))
            .collect();
        let chunks = vecs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut c = chunk(&format!("f{i}"), "x", &[], json!({}));
                c.vector = v.clone();
                c
            })
            .collect();
        let index = Index::build(chunks);
        let q = Query::new(&vecs[0]);
        for (i, v) in vecs.iter().enumerate() {
            let exact = dot(&vecs[0], v);
            let got = index.cosine(&q, i);
            assert!((got - exact).abs() < 0.005, "dim {dim}: {got} vs {exact}");
        }
        let mut dots = vec![0; vecs.len()];
        dot_all(&q.components, &index.vectors, &mut dots);
        for (i, &d) in dots.iter().enumerate() {
            let row = &index.vectors[i * dim..(i + 1) * dim];
            assert_eq!(d, dot_kernel(&q.components, row));
        }
    }
}

#[test]
fn index_is_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Index>();
}
