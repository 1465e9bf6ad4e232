//! The built-in embedder: wordllama's static word-embedding table (`l2_supercat`, 256-d).
//!
//! It does what wordllama 0.4.0's own `WordLlama.load().embed(texts, norm=True)` does, checked
//! against that code's output (`testdata/wordllama_expected.json`): tokenize with the Llama-2
//! BPE tokenizer it ships (no special tokens added, no truncation), average the tokens' rows
//! (F16, read as f32), and scale the mean to length 1. A text with no tokens (`""`) gets a zero
//! vector, where wordllama would divide by zero.
//!
//! The tokenizer file has a normalizer and no pre-tokenizer, so the `tokenizers` crate's own
//! pipeline would run BPE over each whole text as one word, with offsets tracked per byte. Its
//! steps are done here instead, with the same result and far faster: special tokens (`<s>`, …)
//! are split out of the raw text as `tokenizers`' added vocabulary does; each remaining piece is
//! normalized (`▁` prepended, spaces replaced by `▁`); and BPE runs on pieces cut before each
//! `▁` that follows another character. No token of the vocabulary holds such a `▁` (checked at
//! load; otherwise each piece is one word, as in `tokenizers`), so no merge crosses a cut, and
//! repeated words come from a cache.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use tokenizers::Model;
use tokenizers::models::bpe::BPE;

use super::{EmbedError, Embedder, fetch, normalize};

/// The id stored with each vector.
const ID: &str = "wordllama-l2-supercat-256";
const TENSOR: &str = "embedding.weight";
/// The normalizer's word marker.
const SPACE: char = '▁';
/// Texts together shorter than this are embedded on the caller's thread.
const INLINE_BYTES: usize = 16 * 1024;
/// Each thread gets at least this much text (spawning costs more than embedding less).
const BYTES_PER_THREAD: usize = 64 * 1024;
/// Texts a thread takes from the shared queue at a time.
const TEXTS_PER_TAKE: usize = 8;
/// Words (pieces) at most this long are cached, and at most this many per thread.
const CACHED_WORD_BYTES: usize = 64;
const CACHED_WORDS: usize = 1 << 16;
/// Caches kept between calls (a few MB each, full); more concurrent workers start cold.
const POOLED_CACHES: usize = 4;

/// The built-in, offline embedder. Cheap to clone (the table is shared).
#[derive(Clone)]
pub struct WordLlama {
    model: Arc<Loaded>,
}

struct Loaded {
    /// `rows × dims` f32, row-major.
    table: Vec<f32>,
    rows: usize,
    dims: usize,
    bpe: BPE,
    /// Special tokens matched in the raw text (content, id), longest first.
    specials: Vec<(String, u32)>,
    /// The bytes a special token starts with.
    special_starts: [bool; 256],
    /// Whether BPE may run on `▁`-led words rather than on whole pieces (see the module doc).
    split_words: bool,
    /// Word caches kept between calls: a worker takes one and gives it back when done.
    caches: Mutex<Vec<WordCache>>,
}

/// Words' token ids.
type WordCache = HashMap<Box<str>, Box<[u32]>>;

impl std::fmt::Debug for WordLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordLlama")
            .field("rows", &self.model.rows)
            .field("dims", &self.model.dims)
            .finish_non_exhaustive()
    }
}

impl WordLlama {
    /// Loads the model from `<data_dir>/models`, downloading and verifying it first if needed
    /// (once; a progress line on stderr). Blocks: call it from a blocking thread.
    pub fn load(data_dir: &Path) -> Result<WordLlama, EmbedError> {
        let unavailable = |e: anyhow::Error| EmbedError::Unavailable(format!("{e:#}"));
        let files = fetch::ensure(data_dir).map_err(unavailable)?;
        Self::from_files(&files.weights, &files.tokenizer).map_err(unavailable)
    }

    fn from_files(weights: &Path, tokenizer: &Path) -> anyhow::Result<WordLlama> {
        let (bpe, specials) = read_tokenizer(tokenizer)?;
        let bytes = fs::read(weights).with_context(|| format!("reading {}", weights.display()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("reading {} as safetensors", weights.display()))?;
        let tensor = tensors
            .tensor(TENSOR)
            .with_context(|| format!("{} has no tensor {TENSOR}", weights.display()))?;
        ensure!(
            tensor.dtype() == safetensors::Dtype::F16,
            "{TENSOR} is {:?}, not F16",
            tensor.dtype()
        );
        let [rows, dims] = tensor.shape() else {
            bail!("{TENSOR} has shape {:?}, not [rows, dims]", tensor.shape());
        };
        let (rows, dims) = (*rows, *dims);
        ensure!(
            rows >= bpe.get_vocab_size() && dims > 0,
            "{TENSOR} has {rows} rows of {dims} for a vocabulary of {}",
            bpe.get_vocab_size()
        );
        let table: Vec<f32> = tensor
            .data()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        let split_words = !bpe
            .get_vocab()
            .keys()
            .any(|token| token.trim_start_matches(SPACE).contains(SPACE));
        let mut special_starts = [false; 256];
        for (content, _) in &specials {
            special_starts[content.as_bytes()[0] as usize] = true;
        }
        Ok(WordLlama {
            model: Arc::new(Loaded {
                table,
                rows,
                dims,
                bpe,
                specials,
                special_starts,
                split_words,
                caches: Mutex::new(Vec::new()),
            }),
        })
    }

    /// One unit-length vector per text (zeros for a text with no tokens), on all cores for a
    /// large batch. Deterministic: a text's vector does not depend on the rest of the batch.
    pub fn embed_sync(&self, texts: &[String]) -> Vec<Vec<f32>> {
        let total: usize = texts.iter().map(String::len).sum();
        let threads = total
            .div_ceil(BYTES_PER_THREAD)
            .min(texts.len().div_ceil(TEXTS_PER_TAKE));
        // `available_parallelism` reads cgroup files: only asked when it matters.
        let threads = match threads {
            0 | 1 => 1,
            n => n.min(std::thread::available_parallelism().map_or(1, |c| c.get())),
        };
        if threads == 1 {
            let mut worker = Worker::new(&self.model);
            return texts.iter().map(|t| worker.embed(t)).collect();
        }
        // Threads take the next few texts from a shared counter, so a slow text holds up only
        // its own thread.
        let next = AtomicUsize::new(0);
        let done: Vec<Vec<(usize, Vec<f32>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut worker = Worker::new(&self.model);
                        let mut out = Vec::new();
                        loop {
                            let start = next.fetch_add(TEXTS_PER_TAKE, Ordering::Relaxed);
                            if start >= texts.len() {
                                return out;
                            }
                            let end = (start + TEXTS_PER_TAKE).min(texts.len());
                            for (i, text) in texts[start..end].iter().enumerate() {
                                out.push((start + i, worker.embed(text)));
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an embedding thread panicked"))
                .collect()
        });
        let mut vectors = vec![Vec::new(); texts.len()];
        for (i, v) in done.into_iter().flatten() {
            vectors[i] = v;
        }
        vectors
    }

    /// The token ids of `text`, as wordllama's tokenizer gives them (for tests and tools).
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        Worker::new(&self.model).each_token(text, |id| ids.push(id));
        ids
    }

    /// Embeds `texts` once and returns the rate, in MB (10^6 bytes) of text per second.
    pub fn bench_throughput(&self, texts: &[String]) -> f64 {
        let bytes: usize = texts.iter().map(String::len).sum();
        let start = Instant::now();
        let vectors = self.embed_sync(texts);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(vectors.len(), texts.len());
        bytes as f64 / 1e6 / secs.max(1e-9)
    }
}

impl Embedder for WordLlama {
    fn id(&self) -> String {
        ID.to_string()
    }

    fn dims(&self) -> usize {
        self.model.dims
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        async move {
            let total: usize = texts.iter().map(String::len).sum();
            if total <= INLINE_BYTES {
                return Ok(self.embed_sync(texts));
            }
            let this = self.clone();
            let texts = texts.to_vec();
            tokio::task::spawn_blocking(move || this.embed_sync(&texts))
                .await
                .map_err(|e| EmbedError::Internal(e.to_string()))
        }
        .boxed()
    }
}

/// The tokenizer file's parts that are used; the rest (decoder, post-processor) is for
/// decoding and for special tokens, which wordllama does not add.
#[derive(Deserialize)]
struct TokenizerFile {
    added_tokens: Vec<AddedToken>,
    normalizer: Value,
    pre_tokenizer: Value,
    model: BPE,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
}

/// Reads the BPE model and the special tokens, after checking that the file's pipeline is the
/// one this module reproduces.
fn read_tokenizer(path: &Path) -> anyhow::Result<(BPE, Vec<(String, u32)>)> {
    let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: TokenizerFile = serde_json::from_slice(&text)
        .with_context(|| format!("reading {} as a BPE tokenizer", path.display()))?;
    let expected = json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": SPACE.to_string()},
        {"type": "Replace", "pattern": {"String": " "}, "content": SPACE.to_string()},
    ]});
    ensure!(
        file.normalizer == expected && file.pre_tokenizer.is_null(),
        "{} has a normalizer or pre-tokenizer this embedder does not reproduce",
        path.display()
    );
    let mut specials = Vec::new();
    for token in file.added_tokens {
        ensure!(
            !(token.normalized || token.single_word || token.lstrip || token.rstrip),
            "{}: added token {:?} has options this embedder does not reproduce",
            path.display(),
            token.content
        );
        ensure!(!token.content.is_empty(), "an added token is empty");
        specials.push((token.content, token.id));
    }
    // Longest first, so that at one place the longest match wins.
    specials.sort_by_key(|(content, _)| std::cmp::Reverse(content.len()));
    Ok((file.model, specials))
}

/// One thread's embedding state: a scratch string and a cache of words' token ids (from the
/// model's pool, and back to it when the worker is dropped).
struct Worker<'m> {
    model: &'m Loaded,
    words: WordCache,
    normalized: String,
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        if let Ok(mut caches) = self.model.caches.lock()
            && caches.len() < POOLED_CACHES
        {
            caches.push(words);
        }
    }
}

impl<'m> Worker<'m> {
    fn new(model: &'m Loaded) -> Worker<'m> {
        let words = model
            .caches
            .lock()
            .ok()
            .and_then(|mut caches| caches.pop())
            .unwrap_or_default();
        Worker {
            model,
            words,
            normalized: String::new(),
        }
    }

    /// The mean of the tokens' rows, scaled to length 1.
    fn embed(&mut self, text: &str) -> Vec<f32> {
        let model = self.model;
        let mut sum = vec![0f32; model.dims];
        let mut count = 0usize;
        self.each_token(text, |id| {
            // Out-of-range ids are clamped, as wordllama does (none occur with this table).
            let row = (id as usize).min(model.rows - 1) * model.dims;
            for (s, x) in sum.iter_mut().zip(&model.table[row..row + model.dims]) {
                *s += x;
            }
            count += 1;
        });
        if count > 0 {
            let n = count as f32;
            sum.iter_mut().for_each(|s| *s /= n);
        }
        normalize(&mut sum);
        sum
    }

    /// Calls `f` with each token id of `text`, in order.
    fn each_token(&mut self, text: &str, mut f: impl FnMut(u32)) {
        let mut rest = text;
        while !rest.is_empty() {
            let (piece, special) = self.next_special(rest);
            self.each_piece_token(&rest[..piece], &mut f);
            match special {
                Some((len, id)) => {
                    f(id);
                    rest = &rest[piece + len..];
                }
                None => break,
            }
        }
    }

    /// Where the next special token starts in `text`, with its length and id: the leftmost,
    /// and the longest there, as `tokenizers` matches its added vocabulary.
    fn next_special(&self, text: &str) -> (usize, Option<(usize, u32)>) {
        let bytes = text.as_bytes();
        let model = self.model;
        // A special token starts with a character's first byte, so a match is at a boundary.
        for at in (0..bytes.len()).filter(|&at| model.special_starts[bytes[at] as usize]) {
            for (content, id) in &model.specials {
                if bytes[at..].starts_with(content.as_bytes()) {
                    return (at, Some((content.len(), *id)));
                }
            }
        }
        (text.len(), None)
    }

    /// The tokens of a piece of text without special tokens: normalized, then BPE.
    fn each_piece_token(&mut self, piece: &str, f: &mut impl FnMut(u32)) {
        if piece.is_empty() {
            return;
        }
        let mut normalized = std::mem::take(&mut self.normalized);
        normalized.clear();
        normalized.push(SPACE);
        for c in piece.chars() {
            normalized.push(if c == ' ' { SPACE } else { c });
        }
        if self.model.split_words {
            let mut start = 0;
            let mut prev_is_space = true;
            for (at, c) in normalized.char_indices() {
                let is_space = c == SPACE;
                if is_space && !prev_is_space {
                    self.each_word_token(&normalized[start..at], f);
                    start = at;
                }
                prev_is_space = is_space;
            }
            self.each_word_token(&normalized[start..], f);
        } else {
            self.each_word_token(&normalized, f);
        }
        self.normalized = normalized;
    }

    fn each_word_token(&mut self, word: &str, f: &mut impl FnMut(u32)) {
        if let Some(ids) = self.words.get(word) {
            ids.iter().copied().for_each(f);
            return;
        }
        let ids: Box<[u32]> = match self.model.bpe.tokenize(word) {
            Ok(tokens) => tokens.into_iter().map(|t| t.id).collect(),
            // Only an unknown character without byte fallback fails; this vocabulary has it.
            Err(_) => Box::new([]),
        };
        ids.iter().copied().for_each(&mut *f);
        if word.len() <= CACHED_WORD_BYTES {
            if self.words.len() >= CACHED_WORDS {
                self.words.clear();
            }
            self.words.insert(word.into(), ids);
        }
    }
}
