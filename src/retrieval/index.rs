//! A vector store's in-memory search index: BM25 over analyzed text, cosine over the chunks'
//! vectors, and the two fused (hybrid), with attribute filters applied before ranking.
//!
//! It is built from the chunks `store` keeps, so any node can rebuild it from shared storage;
//! nothing here is persisted. Building takes the CPU for a while (about 4 s per 100k chunks of
//! 800 tokens, on two cores): call it from a blocking thread, not an async task. An `Index` is
//! `Send + Sync`: searches share it (behind an `Arc`) and never modify it.
//!
//! Scores are in 0..1, higher better, so `score_threshold` means the same for every query:
//!
//! - BM25: the chunk's BM25 score over the most a chunk could score for the query's known
//!   terms (each term's idf × (k1 + 1)); a chunk holding every term once, at average length,
//!   scores 1 / (k1 + 1).
//! - Dense: the cosine of the query's and the chunk's (L2-normalised) vectors, computed on
//!   8-bit quantized vectors (within about 0.005 of the exact value); chunks at or below 0
//!   are not hits. A brute-force scan: about 1.5 ms per 100k 256-d chunks with AVX2.
//! - Hybrid: see [`Fusion`].
//!
//! A query without a vector (or with an all-zero one, which an embedder gives text with no
//! tokens), or an index without vectors, is ranked by BM25 whatever the mode.

mod analyze;
#[cfg(test)]
mod tests;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use analyze::Analyzer;
pub use analyze::AnalyzerConfig;

use super::filter::{Attributes, Filter};

/// One chunk of a file, as the index is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedChunk {
    pub file_id: String,
    pub file_name: String,
    /// The chunk's place in its file.
    pub chunk_index: u32,
    pub text: String,
    /// L2-normalised; empty when the chunk has no vector (no embedder).
    pub vector: Vec<f32>,
    pub attributes: Attributes,
}

/// What a search ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Bm25,
    Dense,
    #[default]
    Hybrid,
}

/// How hybrid search fuses the BM25 and the dense rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// Reciprocal rank fusion (k = 60) of each ranking's top candidates, weighted; scaled so a
    /// chunk first in both rankings scores 1.
    Rrf,
    /// The weighted mean of a chunk's two scores (BM25 and cosine, as above), over the union
    /// of each ranking's top candidates.
    #[default]
    Weighted,
}

/// How to search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Hits returned at most.
    pub max_results: usize,
    /// Hits scoring below this (0..1) are dropped.
    pub score_threshold: f32,
    /// Only chunks whose attributes match are ranked.
    pub filter: Option<Filter>,
    pub mode: Mode,
    /// BM25's term-frequency saturation.
    pub k1: f32,
    /// BM25's length normalisation.
    pub b: f32,
    /// `(embedding_weight, text_weight)` for hybrid search, as OpenAI's
    /// `ranking_options.hybrid_search`; `None` for the defaults.
    pub hybrid_weights: Option<(f32, f32)>,
    pub fusion: Fusion,
}

/// Hybrid weights when none are given: `(embedding, text)`.
pub const DEFAULT_HYBRID_WEIGHTS: (f32, f32) = (1.0, 1.0);

/// Candidates each ranking hands to fusion, at least (more when more results are asked for).
const FUSION_DEPTH: usize = 100;

/// Reciprocal rank fusion's constant.
const RRF_K: f32 = 60.0;

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            max_results: 10,
            score_threshold: 0.0,
            filter: None,
            mode: Mode::default(),
            k1: 0.9,
            b: 0.4,
            hybrid_weights: None,
            fusion: Fusion::default(),
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The chunk's place in the order the index was built from.
    pub chunk: usize,
    pub file_id: String,
    pub file_name: String,
    pub chunk_index: u32,
    pub text: String,
    /// 0..1, higher better.
    pub score: f32,
    pub attributes: Attributes,
}

/// Consecutive chunks of one file share this.
#[derive(Debug)]
struct Group {
    file_id: String,
    file_name: String,
    attributes: Attributes,
}

/// The index of one vector store.
pub struct Index {
    analyzer: Analyzer,
    /// All chunk texts, one after the other; chunk `i` ends at `text_ends[i]`.
    texts: String,
    text_ends: Vec<usize>,
    chunk_index: Vec<u32>,
    group_of: Vec<u32>,
    groups: Vec<Group>,
    /// Term → id; term `t`'s postings are `post_doc/post_tf[post_start[t]..post_start[t+1]]`,
    /// chunks in ascending order.
    vocab: HashMap<Box<str>, u32>,
    post_start: Vec<u32>,
    post_doc: Vec<u32>,
    post_tf: Vec<u16>,
    /// Terms per chunk (after analysis).
    doc_len: Vec<u32>,
    avg_len: f32,
    /// Vector length (0: no vectors). Vectors are kept as 8 bits a component: chunk `i`'s is
    /// `vectors[i*dim..(i+1)*dim]` times `scales[i]` (0 when it has none). A quarter of the
    /// memory of f32 and a faster scan, for cosines within about 0.005 of the exact ones.
    dim: usize,
    vectors: Vec<i8>,
    scales: Vec<f32>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("chunks", &self.len())
            .field("terms", &self.vocab.len())
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl Default for Index {
    fn default() -> Self {
        Index::build(Vec::new())
    }
}

/// One chunk's analyzed terms: (term, count) and its length.
type Analyzed = (Vec<(u32, u16)>, u32);

impl Index {
    /// Builds the index with the default analyzer.
    pub fn build(chunks: Vec<IndexedChunk>) -> Index {
        Index::build_with(chunks, AnalyzerConfig::default())
    }

    /// Builds the index (on all cores when there are many chunks).
    pub fn build_with(chunks: Vec<IndexedChunk>, config: AnalyzerConfig) -> Index {
        let analyzer = Analyzer::new(config);
        let n = chunks.len();
        let dim = chunks
            .iter()
            .map(|c| c.vector.len())
            .find(|&d| d > 0)
            .unwrap_or(0);

        // Analysis, the costly part, runs on contiguous ranges in parallel, each with its own
        // vocabulary; the ranges are merged in order, so postings stay sorted by chunk.
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let threads = threads.clamp(1, n.div_ceil(1024).max(1));
        let per = n.div_ceil(threads).max(1);
        let parts: Vec<(Vec<Box<str>>, Vec<Analyzed>)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .chunks(per)
                .map(|range| s.spawn(|| analyze_range(&analyzer, range)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("analysis thread panicked"))
                .collect()
        });

        let mut vocab: HashMap<Box<str>, u32> = HashMap::new();
        let mut maps = Vec::with_capacity(parts.len());
        for (terms, _) in &parts {
            let map: Vec<u32> = terms
                .iter()
                .map(|t| {
                    let next = vocab.len() as u32;
                    *vocab.entry(t.clone()).or_insert(next)
                })
                .collect();
            maps.push(map);
        }
        let mut counts = vec![0u32; vocab.len() + 1];
        for ((_, docs), map) in parts.iter().zip(&maps) {
            for (terms, _) in docs {
                for &(t, _) in terms {
                    counts[map[t as usize] as usize + 1] += 1;
                }
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let post_start = counts;
        let total = *post_start.last().unwrap_or(&0) as usize;
        let mut cursor = post_start.clone();
        let mut post_doc = vec![0u32; total];
        let mut post_tf = vec![0u16; total];
        let mut doc_len = Vec::with_capacity(n);
        let mut doc = 0u32;
        for ((_, docs), map) in parts.iter().zip(&maps) {
            for (terms, len) in docs {
                for &(t, tf) in terms {
                    let slot = &mut cursor[map[t as usize] as usize];
                    post_doc[*slot as usize] = doc;
                    post_tf[*slot as usize] = tf;
                    *slot += 1;
                }
                doc_len.push(*len);
                doc += 1;
            }
        }
        drop(parts);
        let avg_len = if n == 0 {
            1.0
        } else {
            (doc_len.iter().map(|&l| l as f64).sum::<f64>() / n as f64).max(1.0) as f32
        };

        let mut texts = String::with_capacity(chunks.iter().map(|c| c.text.len()).sum());
        let mut text_ends = Vec::with_capacity(n);
        let mut chunk_index = Vec::with_capacity(n);
        let mut group_of = Vec::with_capacity(n);
        let mut groups: Vec<Group> = Vec::new();
        let mut vectors = Vec::with_capacity(n * dim);
        let mut scales = Vec::with_capacity(n);
        for c in chunks {
            texts.push_str(&c.text);
            text_ends.push(texts.len());
            chunk_index.push(c.chunk_index);
            let same = groups.last().is_some_and(|g| {
                g.file_id == c.file_id && g.file_name == c.file_name && g.attributes == c.attributes
            });
            if !same {
                groups.push(Group {
                    file_id: c.file_id,
                    file_name: c.file_name,
                    attributes: c.attributes,
                });
            }
            group_of.push(groups.len() as u32 - 1);
            // A vector of another length than the first one's cannot be compared: the chunk
            // is found by its text only.
            if c.vector.len() == dim {
                scales.push(quantize(&c.vector, &mut vectors));
            } else {
                vectors.resize(vectors.len() + dim, 0);
                scales.push(0.0);
            }
        }
        groups.shrink_to_fit();

        Index {
            analyzer,
            texts,
            text_ends,
            chunk_index,
            group_of,
            groups,
            vocab,
            post_start,
            post_doc,
            post_tf,
            doc_len,
            avg_len,
            dim,
            vectors,
            scales,
        }
    }

    /// Chunks in the index.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vectors' length (0 when the chunks have none).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes the index holds on the heap (texts included), approximately.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let groups: usize = self
            .groups
            .iter()
            .map(|g| {
                size_of::<Group>()
                    + g.file_id.capacity()
                    + g.file_name.capacity()
                    + g.attributes.len() * 96
                    + g.attributes
                        .iter()
                        .map(|(k, v)| {
                            k.len()
                                + match v {
                                    super::filter::AttrValue::String(s) => s.capacity(),
                                    _ => 0,
                                }
                        })
                        .sum::<usize>()
            })
            .sum();
        let vocab: usize = self
            .vocab
            .keys()
            .map(|k| k.len() + size_of::<(Box<str>, u32)>() + 8)
            .sum();
        self.texts.capacity()
            + self.text_ends.capacity() * size_of::<usize>()
            + self.chunk_index.capacity() * 4
            + self.group_of.capacity() * 4
            + groups
            + vocab
            + self.post_start.capacity() * 4
            + self.post_doc.capacity() * 4
            + self.post_tf.capacity() * 2
            + self.doc_len.capacity() * 4
            + self.vectors.capacity()
            + self.scales.capacity() * 4
    }

    fn text(&self, chunk: usize) -> &str {
        let start = if chunk == 0 {
            0
        } else {
            self.text_ends[chunk - 1]
        };
        &self.texts[start..self.text_ends[chunk]]
    }

    fn hit(&self, chunk: usize, score: f32) -> Hit {
        let g = &self.groups[self.group_of[chunk] as usize];
        Hit {
            chunk,
            file_id: g.file_id.clone(),
            file_name: g.file_name.clone(),
            chunk_index: self.chunk_index[chunk],
            text: self.text(chunk).to_string(),
            score,
            attributes: g.attributes.clone(),
        }
    }

    /// The best chunks for `query` (and its vector, for dense and hybrid ranking), best first
    /// (ties by build order).
    pub fn search(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        opts: &SearchOptions,
    ) -> Vec<Hit> {
        self.ranked(query, query_vector, opts)
            .into_iter()
            .map(|(c, s)| self.hit(c as usize, s))
            .collect()
    }

    /// Several queries at once (OpenAI's search takes a string or an array of them): each
    /// chunk scores its best score over the queries.
    pub fn search_many(
        &self,
        queries: &[(&str, Option<&[f32]>)],
        opts: &SearchOptions,
    ) -> Vec<Hit> {
        let mut best: HashMap<u32, f32> = HashMap::new();
        for (q, v) in queries {
            for (c, s) in self.ranked(q, *v, opts) {
                let e = best.entry(c).or_insert(s);
                *e = e.max(s);
            }
        }
        let mut all: Vec<(u32, f32)> = best.into_iter().collect();
        all.sort_by(|a, b| by_score(*a, *b));
        all.truncate(opts.max_results);
        all.into_iter()
            .map(|(c, s)| self.hit(c as usize, s))
            .collect()
    }

    fn ranked(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        opts: &SearchOptions,
    ) -> Vec<(u32, f32)> {
        if opts.max_results == 0 || self.is_empty() {
            return Vec::new();
        }
        let allowed = opts.filter.as_ref().map(|f| {
            let ok: Vec<bool> = self
                .groups
                .iter()
                .map(|g| f.matches(&g.attributes))
                .collect();
            ok
        });
        let allowed = allowed.as_deref();
        let vector = query_vector
            .filter(|v| self.dim > 0 && v.len() == self.dim && v.iter().any(|&x| x != 0.0))
            .map(Query::new);
        let vector = vector.as_ref();
        let mode = if vector.is_none() {
            Mode::Bm25
        } else {
            opts.mode
        };
        let depth = FUSION_DEPTH.max(opts.max_results);
        let mut ranked = match (mode, vector) {
            (Mode::Dense, Some(v)) => self.dense_top(v, opts.max_results, allowed),
            (Mode::Hybrid, Some(v)) => self.hybrid(query, v, depth, allowed, opts),
            _ => {
                let scores = self.bm25(query, opts.k1, opts.b, allowed);
                top_k(
                    scores.touched.iter().map(|&d| (d, scores.acc[d as usize])),
                    opts.max_results,
                )
            }
        };
        ranked.retain(|&(_, s)| s >= opts.score_threshold);
        ranked.truncate(opts.max_results);
        ranked
    }

    fn hybrid(
        &self,
        query: &str,
        v: &Query,
        depth: usize,
        allowed: Option<&[bool]>,
        opts: &SearchOptions,
    ) -> Vec<(u32, f32)> {
        let (we, wt) = opts.hybrid_weights.unwrap_or(DEFAULT_HYBRID_WEIGHTS);
        let (we, wt) = (we.max(0.0), wt.max(0.0));
        let (we, wt) = if we + wt > 0.0 {
            (we, wt)
        } else {
            DEFAULT_HYBRID_WEIGHTS
        };
        let text = self.bm25(query, opts.k1, opts.b, allowed);
        let text_top = top_k(
            text.touched.iter().map(|&d| (d, text.acc[d as usize])),
            depth,
        );
        let dense_top = self.dense_top(v, depth, allowed);
        let mut fused: HashMap<u32, f32> = HashMap::with_capacity(text_top.len() + dense_top.len());
        match opts.fusion {
            Fusion::Rrf => {
                for (rank, &(d, _)) in text_top.iter().enumerate() {
                    *fused.entry(d).or_default() += wt / (RRF_K + 1.0 + rank as f32);
                }
                for (rank, &(d, _)) in dense_top.iter().enumerate() {
                    *fused.entry(d).or_default() += we / (RRF_K + 1.0 + rank as f32);
                }
                let top = (we + wt) / (RRF_K + 1.0);
                fused.values_mut().for_each(|s| *s /= top);
            }
            Fusion::Weighted => {
                for &(d, _) in text_top.iter().chain(&dense_top) {
                    fused.entry(d).or_insert_with(|| {
                        let cos = self.cosine(v, d as usize).max(0.0);
                        (we * cos + wt * text.acc[d as usize]) / (we + wt)
                    });
                }
            }
        }
        top_k(
            fused.into_iter().filter(|&(_, s)| s > 0.0),
            opts.max_results,
        )
    }

    /// BM25 scores (normalised to 0..1) of the chunks holding a query term.
    fn bm25(&self, query: &str, k1: f32, b: f32, allowed: Option<&[bool]>) -> Accumulator {
        let n = self.len();
        let mut terms: Vec<u32> = Vec::new();
        self.analyzer.terms(query, |t| {
            if let Some(&id) = self.vocab.get(t) {
                terms.push(id);
            }
        });
        terms.sort_unstable();
        terms.dedup();
        let mut acc = Accumulator {
            acc: vec![0.0; n],
            touched: Vec::new(),
        };
        let (k1, b) = (k1.max(0.0), b.clamp(0.0, 1.0));
        let mut most = 0.0f32;
        for &t in &terms {
            let range =
                self.post_start[t as usize] as usize..self.post_start[t as usize + 1] as usize;
            let df = range.len() as f32;
            let idf = (1.0 + (n as f32 - df + 0.5) / (df + 0.5)).ln();
            most += idf * (k1 + 1.0);
            for (&d, &tf) in self.post_doc[range.clone()]
                .iter()
                .zip(&self.post_tf[range])
            {
                if allowed.is_some_and(|ok| !ok[self.group_of[d as usize] as usize]) {
                    continue;
                }
                let tf = tf as f32;
                let norm = k1 * (1.0 - b + b * self.doc_len[d as usize] as f32 / self.avg_len);
                let slot = &mut acc.acc[d as usize];
                if *slot == 0.0 {
                    acc.touched.push(d);
                }
                *slot += idf * tf * (k1 + 1.0) / (tf + norm);
            }
        }
        if most > 0.0 {
            for &d in &acc.touched {
                acc.acc[d as usize] /= most;
            }
        }
        acc
    }

    fn cosine(&self, v: &Query, chunk: usize) -> f32 {
        let row = &self.vectors[chunk * self.dim..(chunk + 1) * self.dim];
        dot_kernel(&v.components, row) as f32 * v.scale * self.scales[chunk]
    }

    /// The `k` chunks most similar to `v` (cosine above 0).
    fn dense_top(&self, v: &Query, k: usize, allowed: Option<&[bool]>) -> Vec<(u32, f32)> {
        let mut dots = vec![0i32; self.len()];
        dot_all(&v.components, &self.vectors, &mut dots);
        let mut top = TopK::new(k);
        for (d, &dot) in dots.iter().enumerate() {
            if dot <= 0 || allowed.is_some_and(|ok| !ok[self.group_of[d] as usize]) {
                continue;
            }
            let s = dot as f32 * v.scale * self.scales[d];
            if s > 0.0 {
                top.push(d as u32, s);
            }
        }
        top.into_sorted()
    }
}

struct Accumulator {
    acc: Vec<f32>,
    touched: Vec<u32>,
}

fn analyze_range(analyzer: &Analyzer, chunks: &[IndexedChunk]) -> (Vec<Box<str>>, Vec<Analyzed>) {
    // Term ids by term, and by the word they come from: each distinct word is stemmed once.
    let mut vocab: HashMap<Box<str>, u32> = HashMap::new();
    let mut by_word: HashMap<Box<str>, u32> = HashMap::new();
    let mut terms: Vec<Box<str>> = Vec::new();
    let mut ids: Vec<u32> = Vec::new();
    let mut out = Vec::with_capacity(chunks.len());
    for c in chunks {
        ids.clear();
        analyzer.words(&c.text, |w| {
            let id = match by_word.get(w) {
                Some(&id) => id,
                None => {
                    let term = analyzer.stem(w);
                    let id = match vocab.get(term.as_ref()) {
                        Some(&id) => id,
                        None => {
                            let id = terms.len() as u32;
                            terms.push(term.as_ref().into());
                            vocab.insert(term.as_ref().into(), id);
                            id
                        }
                    };
                    by_word.insert(w.into(), id);
                    id
                }
            };
            ids.push(id);
        });
        let len = ids.len() as u32;
        ids.sort_unstable();
        let mut counted: Vec<(u32, u16)> = Vec::new();
        for &id in &ids {
            match counted.last_mut() {
                Some((t, n)) if *t == id => *n = n.saturating_add(1),
                _ => counted.push((id, 1)),
            }
        }
        out.push((counted, len));
    }
    (terms, out)
}

/// Best first; ties in build order.
fn by_score(a: (u32, f32), b: (u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn top_k(items: impl IntoIterator<Item = (u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let mut top = TopK::new(k);
    for (d, s) in items {
        top.push(d, s);
    }
    top.into_sorted()
}

/// Keeps the `k` best (chunk, score) pairs seen.
struct TopK {
    k: usize,
    /// A min-heap on goodness: the worst kept is on top.
    heap: BinaryHeap<Reverse<Ranked>>,
}

#[derive(PartialEq)]
struct Ranked(u32, f32);

impl Eq for Ranked {}

impl Ord for Ranked {
    /// Greater is better: a higher score, then an earlier chunk.
    fn cmp(&self, other: &Self) -> Ordering {
        by_score((other.0, other.1), (self.0, self.1))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn push(&mut self, d: u32, s: f32) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Reverse(Ranked(d, s)));
        } else if let Some(Reverse(worst)) = self.heap.peek()
            && Ranked(d, s) > *worst
        {
            self.heap.pop();
            self.heap.push(Reverse(Ranked(d, s)));
        }
    }

    fn into_sorted(self) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = self
            .heap
            .into_iter()
            .map(|Reverse(Ranked(d, s))| (d, s))
            .collect();
        v.sort_by(|a, b| by_score(*a, *b));
        v
    }
}

/// A query vector, quantized to 16 bits a component for the integer dot products: the
/// cosine with chunk `i` is `dot(components, row i) × scale × scales[i]`.
struct Query {
    components: Vec<i16>,
    scale: f32,
}

impl Query {
    fn new(v: &[f32]) -> Query {
        // The largest component maps to at most 32767, less for long vectors so that the
        // integer sum of `dim` products of at most 127 × that cannot overflow an i32.
        let top = (i32::MAX as usize / (127 * v.len().max(1))).min(i16::MAX as usize) as f32;
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if max == 0.0 || !max.is_finite() {
            return Query {
                components: vec![0; v.len()],
                scale: 0.0,
            };
        }
        Query {
            components: v.iter().map(|x| (x / max * top).round() as i16).collect(),
            scale: max / top,
        }
    }
}

/// Appends `v` quantized to 8 bits a component to `out`; returns the scale that turns them back.
fn quantize(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.resize(out.len() + v.len(), 0);
        return 0.0;
    }
    out.extend(v.iter().map(|x| (x / max * 127.0).round() as i8));
    max / 127.0
}

/// `out[i]` = the dot product of `q` with row `i` of `rows`, with AVX2 where the CPU has it
/// (three times faster than the baseline x86-64 instructions).
fn dot_all(q: &[i16], rows: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above; that is the function's only
        // requirement.
        unsafe { dot_all_avx2(q, rows, out) };
        return;
    }
    dot_all_kernel(q, rows, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_all_avx2(q: &[i16], rows: &[i8], out: &mut [i32]) {
    dot_all_kernel(q, rows, out);
}

#[inline(always)]
fn dot_all_kernel(q: &[i16], rows: &[i8], out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len().max(1))) {
        *o = dot_kernel(q, row);
    }
}

/// An integer dot product the compiler vectorises (sixteen independent sums).
#[inline(always)]
fn dot_kernel(q: &[i16], v: &[i8]) -> i32 {
    let mut sums = [0i32; 16];
    let (qc, vc) = (q.chunks_exact(16), v.chunks_exact(16));
    let tail: i32 = qc
        .remainder()
        .iter()
        .zip(vc.remainder())
        .map(|(&a, &b)| a as i32 * b as i32)
        .sum();
    for (a, b) in qc.zip(vc) {
        for i in 0..16 {
            sums[i] += a[i] as i32 * b[i] as i32;
        }
    }
    sums.iter().sum::<i32>() + tail
}
