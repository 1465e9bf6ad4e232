//! `oasis bench retrieval`: file_search quality on a committed test collection, ingestion
//! throughput, and search latency and memory at scale; printed, never asserted.
//!
//! The collection (`bench/retrieval/`): `corpus.jsonl`, the docstrings of Python's standard
//! library, one document per module, class and function (made by `make_corpus.py`), and
//! `questions.jsonl`, questions worded unlike the text they should find, each with the
//! documents that answer it. Every document is one file: it is chunked as a vector store
//! chunks a file, and a ranking of chunks becomes a ranking of files (first occurrence).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use crate::retrieval::chunk::{ChunkSpec, chunk};
use crate::retrieval::embed::{Embedder, UpstreamEmbeddings, UpstreamEmbeddingsConfig, WordLlama};
use crate::retrieval::filter::{AttrValue, Filter};
use crate::retrieval::index::{AnalyzerConfig, Fusion, Index, IndexedChunk, Mode, SearchOptions};

#[derive(Debug, clap::Args)]
pub struct RetrievalBenchArgs {
    /// The folder holding corpus.jsonl and questions.jsonl.
    #[arg(long, default_value = "bench/retrieval")]
    pub dir: PathBuf,
    /// Chunks in the index the latencies and memory are measured on.
    #[arg(long, default_value_t = 100_000)]
    pub scale_chunks: usize,
    /// Searches timed per mode.
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Measure without the built-in embedder (BM25 only).
    #[arg(long)]
    pub no_embedder: bool,
    /// Also rank with an upstream embeddings server (`POST {url}/embeddings`); its API key, if
    /// it needs one, in OASIS_EMBEDDINGS_API_KEY.
    #[arg(long, requires = "upstream_model")]
    pub upstream_url: Option<String>,
    #[arg(long)]
    pub upstream_model: Option<String>,
    /// Also measure the analyzer and fusion alternatives.
    #[arg(long)]
    pub explore: bool,
    /// Write each system's top 20 files per question here (for judging new candidates).
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Doc {
    id: String,
    text: String,
}

#[derive(Deserialize)]
struct Question {
    query: String,
    relevant: Vec<String>,
}

/// Ranked file ids → (recall@5, recall@20, nDCG@10).
fn metrics(ranked: &[String], relevant: &[String]) -> [f64; 3] {
    let rel: HashSet<&str> = relevant.iter().map(String::as_str).collect();
    let recall = |k: usize| {
        ranked
            .iter()
            .take(k)
            .filter(|d| rel.contains(d.as_str()))
            .count() as f64
            / rel.len() as f64
    };
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, d)| rel.contains(d.as_str()))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..rel.len().min(10))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    [recall(5), recall(20), dcg / ideal]
}

/// Files in order of their best chunk.
fn files_of(hits: Vec<crate::retrieval::index::Hit>) -> Vec<String> {
    let mut seen = HashSet::new();
    hits.into_iter()
        .filter(|h| seen.insert(h.file_id.clone()))
        .map(|h| h.file_id)
        .collect()
}

struct Collection {
    questions: Vec<Question>,
    dump: Option<PathBuf>,
    chunks: Vec<IndexedChunk>,
}

impl Collection {
    fn chunks_with(&self, vectors: Option<&[Vec<f32>]>) -> Vec<IndexedChunk> {
        let mut chunks = self.chunks.clone();
        for (i, c) in chunks.iter_mut().enumerate() {
            c.vector = vectors.map(|v| v[i].clone()).unwrap_or_default();
        }
        chunks
    }

    /// Prints the mean recall@5, recall@20 and nDCG@10 of `index` over the questions, and
    /// with `--dump` writes each question's top 20 files to `<dump>/<name>.jsonl`.
    fn evaluate(
        &self,
        name: &str,
        index: &Index,
        qvecs: Option<&[Vec<f32>]>,
        opts: &SearchOptions,
    ) -> anyhow::Result<()> {
        let mut sum = [0.0; 3];
        let mut dump = String::new();
        for (i, q) in self.questions.iter().enumerate() {
            let v = qvecs.map(|v| v[i].as_slice());
            let ranked = files_of(index.search(&q.query, v, opts));
            let m = metrics(&ranked, &q.relevant);
            (0..3).for_each(|j| sum[j] += m[j]);
            let top: Vec<&String> = ranked.iter().take(20).collect();
            dump.push_str(&serde_json::json!({"query": q.query, "top": top}).to_string());
            dump.push('\n');
        }
        let m = sum.map(|s| s / self.questions.len() as f64);
        println!("{name:<56} {:>9.3} {:>10.3} {:>8.3}", m[0], m[1], m[2]);
        if let Some(dir) = &self.dump {
            std::fs::create_dir_all(dir)?;
            let file: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            std::fs::write(dir.join(format!("{file}.jsonl")), dump)?;
        }
        Ok(())
    }
}

fn load(dir: &Path) -> anyhow::Result<(Vec<Doc>, Vec<Question>)> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let docs: Vec<Doc> = read("corpus.jsonl")?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing corpus.jsonl")?;
    let questions: Vec<Question> = read("questions.jsonl")?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing questions.jsonl")?;
    let ids: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    for q in &questions {
        for r in &q.relevant {
            anyhow::ensure!(
                ids.contains(r.as_str()),
                "question {:?} names unknown {r}",
                q.query
            );
        }
    }
    Ok((docs, questions))
}

fn chunk_docs(docs: &[Doc]) -> Vec<IndexedChunk> {
    docs.iter()
        .flat_map(|d| {
            chunk(&d.text, ChunkSpec::AUTO)
                .into_iter()
                .enumerate()
                .map(|(i, c)| IndexedChunk {
                    file_id: d.id.clone(),
                    file_name: d.id.clone(),
                    chunk_index: i as u32,
                    text: c,
                    vector: Vec::new(),
                    attributes: Default::default(),
                })
        })
        .collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

pub fn retrieval(data_dir: &Path, args: RetrievalBenchArgs) -> anyhow::Result<()> {
    let (docs, questions) = load(&args.dir)?;
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    println!("oasis bench retrieval: machine: {}", machine());
    println!(
        "collection: {} documents ({:.2} MB of text), {} questions",
        docs.len(),
        bytes as f64 / 1e6,
        questions.len()
    );

    let embedder = if args.no_embedder {
        None
    } else {
        let t = Instant::now();
        let e = WordLlama::load(data_dir).context("loading the built-in embedder")?;
        println!(
            "built-in embedder loaded in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        Some(e)
    };

    // Ingestion: chunk, embed, build; the best of three runs (the first warms the caches).
    println!("\n## ingestion ({} of text)", mb(bytes));
    let mut best: Option<(Duration, Duration, Duration)> = None;
    let mut chunks = Vec::new();
    let mut vectors = None;
    for _ in 0..3 {
        let t = Instant::now();
        chunks = chunk_docs(&docs);
        let t_chunk = t.elapsed();
        let t = Instant::now();
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        vectors = embedder.as_ref().map(|e| e.embed_sync(&texts));
        let t_embed = t.elapsed();
        let t = Instant::now();
        let with: Vec<IndexedChunk> = chunks
            .iter()
            .cloned()
            .zip(
                vectors
                    .clone()
                    .unwrap_or_else(|| vec![Vec::new(); chunks.len()]),
            )
            .map(|(mut c, v)| {
                c.vector = v;
                c
            })
            .collect();
        let index = Index::build(with);
        let t_build = t.elapsed();
        assert_eq!(index.len(), chunks.len());
        let total = t_chunk + t_embed + t_build;
        if best.is_none_or(|(a, b, c)| total < a + b + c) {
            best = Some((t_chunk, t_embed, t_build));
        }
    }
    let (t_chunk, t_embed, t_build) = best.expect("three runs");
    let total = t_chunk + t_embed + t_build;
    println!(
        "{} chunks; chunk {:.0} ms, embed {:.0} ms, index {:.0} ms: {:.2} MB/s of text{}",
        chunks.len(),
        ms(t_chunk),
        ms(t_embed),
        ms(t_build),
        bytes as f64 / 1e6 / total.as_secs_f64(),
        if embedder.is_some() {
            " (built-in embeddings)"
        } else {
            " (no embeddings)"
        }
    );

    // Quality.
    let collection = Collection {
        questions,
        chunks,
        dump: args.dump.clone(),
    };
    let queries: Vec<String> = collection
        .questions
        .iter()
        .map(|q| q.query.clone())
        .collect();
    let qvecs = embedder.as_ref().map(|e| e.embed_sync(&queries));
    println!(
        "\n## quality ({} questions; files ranked by their best chunk)",
        queries.len()
    );
    println!(
        "{:<52} {:>9} {:>10} {:>8}",
        "system", "recall@5", "recall@20", "nDCG@10"
    );
    let deep = SearchOptions {
        max_results: 100,
        ..SearchOptions::default()
    };
    let bm25 = SearchOptions {
        mode: Mode::Bm25,
        ..deep.clone()
    };
    let text_index = Index::build(collection.chunks_with(None));
    collection.evaluate("BM25 k1=0.9 b=0.4 (baseline)", &text_index, None, &bm25)?;
    if args.explore {
        for (name, stopwords, stem) in [
            ("BM25, no stemming", true, false),
            ("BM25, no stopwords", false, true),
            ("BM25, neither (lowercased words only)", false, false),
        ] {
            let idx = Index::build_with(
                collection.chunks_with(None),
                AnalyzerConfig { stopwords, stem },
            );
            collection.evaluate(name, &idx, None, &bm25)?;
        }
        for (k1, b) in [(1.2, 0.75), (1.5, 0.75), (0.9, 0.75)] {
            let o = SearchOptions {
                k1,
                b,
                ..bm25.clone()
            };
            collection.evaluate(&format!("BM25 k1={k1} b={b}"), &text_index, None, &o)?;
        }
    }
    if let (Some(vecs), Some(qv)) = (&vectors, &qvecs) {
        let index = Index::build(collection.chunks_with(Some(vecs)));
        let dense = SearchOptions {
            mode: Mode::Dense,
            ..deep.clone()
        };
        collection.evaluate(
            "built-in vectors only (wordllama 256-d)",
            &index,
            Some(qv),
            &dense,
        )?;
        collection.evaluate(
            &format!("hybrid, built-in vectors ({})", describe(&deep)),
            &index,
            Some(qv),
            &deep,
        )?;
        if args.explore {
            for fusion in [Fusion::Rrf, Fusion::Weighted] {
                for w in [(1.0, 1.0), (1.0, 2.0), (1.0, 3.0), (2.0, 1.0)] {
                    let o = SearchOptions {
                        fusion,
                        hybrid_weights: Some(w),
                        ..deep.clone()
                    };
                    collection.evaluate(
                        &format!("hybrid ({})", describe(&o)),
                        &index,
                        Some(qv),
                        &o,
                    )?;
                }
            }
        }
    }
    if let (Some(url), Some(model)) = (&args.upstream_url, &args.upstream_model) {
        let up = UpstreamEmbeddings::new(UpstreamEmbeddingsConfig {
            base_url: url.clone(),
            model: model.clone(),
            api_key: std::env::var("OASIS_EMBEDDINGS_API_KEY").ok(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let texts: Vec<String> = collection.chunks.iter().map(|c| c.text.clone()).collect();
        let t = Instant::now();
        let vecs = rt
            .block_on(up.embed(&texts))
            .context("upstream embeddings")?;
        println!(
            "upstream embedded the chunks in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let qv = rt
            .block_on(up.embed(&queries))
            .context("upstream embeddings")?;
        let index = Index::build(collection.chunks_with(Some(&vecs)));
        let dense = SearchOptions {
            mode: Mode::Dense,
            ..deep.clone()
        };
        collection.evaluate(
            &format!("upstream vectors only ({model})"),
            &index,
            Some(&qv),
            &dense,
        )?;
        collection.evaluate(
            &format!("hybrid, upstream vectors ({model})"),
            &index,
            Some(&qv),
            &deep,
        )?;
    }

    scale(
        &args,
        &collection,
        qvecs.as_deref(),
        embedder.as_ref().map(|e| e.dims()).unwrap_or(256),
    );
    Ok(())
}

fn describe(o: &SearchOptions) -> String {
    let (we, wt) = o
        .hybrid_weights
        .unwrap_or(crate::retrieval::index::DEFAULT_HYBRID_WEIGHTS);
    let f = match o.fusion {
        Fusion::Rrf => "RRF",
        Fusion::Weighted => "weighted sum",
    };
    format!("{f}, embedding {we} : text {wt}")
}

/// Latency and memory at `scale_chunks`: chunks of about 800 tokens cut from the corpus text
/// at staggered offsets (real vocabulary, every chunk different), with random unit vectors
/// (cost does not depend on their values) and a `shard` attribute for a filtered search.
fn scale(
    args: &RetrievalBenchArgs,
    collection: &Collection,
    qvecs: Option<&[Vec<f32>]>,
    dim: usize,
) {
    let n = args.scale_chunks;
    println!("\n## scale: {n} chunks of ~3,200 bytes, {dim}-d vectors");
    let text: String = collection
        .chunks
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.as_bytes();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t = Instant::now();
    let chunks: Vec<IndexedChunk> = (0..n)
        .map(|i| {
            let start = (next() as usize) % (text.len() - 3300);
            let window = String::from_utf8_lossy(&text[start..start + 3200]).into_owned();
            let mut v: Vec<f32> = (0..dim)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            IndexedChunk {
                file_id: format!("file-{}", i / 20),
                file_name: format!("file-{}.txt", i / 20),
                chunk_index: (i % 20) as u32,
                text: window,
                vector: v,
                attributes: [("shard".to_string(), AttrValue::Number((i / 20 % 10) as f64))].into(),
            }
        })
        .collect();
    let text_bytes: usize = chunks.iter().map(|c| c.text.len()).sum();
    println!(
        "made in {:.1} s ({} of text)",
        t.elapsed().as_secs_f64(),
        mb(text_bytes)
    );
    let t = Instant::now();
    let index = Index::build(chunks);
    let build = t.elapsed();
    let heap = index.heap_bytes();
    println!(
        "index built in {:.2} s; {} bytes per chunk ({} without the chunk text, {} of it the vector)",
        build.as_secs_f64(),
        heap / n,
        (heap - text_bytes) / n,
        dim + 4
    );
    let random_q = |i: usize| -> Vec<f32> {
        let mut s = (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let qv: Vec<Vec<f32>> = match qvecs {
        Some(q) if q.first().is_some_and(|v| v.len() == dim) => q.to_vec(),
        _ => (0..collection.questions.len()).map(random_q).collect(),
    };
    let filter: Filter = serde_json::from_value(serde_json::json!(
        {"type": "in", "key": "shard", "value": [1, 2, 3]}
    ))
    .expect("a valid filter");
    let modes = [
        (
            "BM25",
            SearchOptions {
                mode: Mode::Bm25,
                ..SearchOptions::default()
            },
        ),
        (
            "dense",
            SearchOptions {
                mode: Mode::Dense,
                ..SearchOptions::default()
            },
        ),
        ("hybrid", SearchOptions::default()),
        (
            "hybrid, filter (30% of chunks pass)",
            SearchOptions {
                filter: Some(filter),
                ..SearchOptions::default()
            },
        ),
    ];
    for (name, opts) in modes {
        let mut lat = Vec::with_capacity(args.samples);
        let mut found = 0usize;
        for i in 0..args.samples.max(1) {
            let q = &collection.questions[i % collection.questions.len()];
            let t = Instant::now();
            let hits = index.search(&q.query, Some(&qv[i % qv.len()]), &opts);
            lat.push(t.elapsed());
            found += hits.len();
            std::hint::black_box(hits);
        }
        lat.sort();
        let p = |q: f64| ms(lat[((lat.len() - 1) as f64 * q).round() as usize]);
        println!(
            "search {name:<36} p50 {:>7.2} ms   p99 {:>7.2} ms   ({} searches, {:.1} hits each)",
            p(0.5),
            p(0.99),
            lat.len(),
            found as f64 / lat.len() as f64
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
