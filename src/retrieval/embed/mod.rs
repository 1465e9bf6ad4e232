//! Embeddings for `file_search`: texts in, unit-length vectors out.
//!
//! - [`WordLlama`]: built in and offline. The static word-embedding table of wordllama
//!   (`l2_supercat`, 256 dimensions, MIT license): a text's vector is the mean of its tokens'
//!   rows, L2-normalised. Downloaded once with pip and verified against a pin compiled in
//!   ([`fetch`], `wordllama.toml`).
//! - [`UpstreamEmbeddings`]: any OpenAI-compatible `POST {base}/embeddings`, batched and retried.
//!
//! Every [`Embedder`] returns one vector per text, in order, each of [`Embedder::dims`]
//! components and of length 1 (or all zeros for a text with nothing to embed, such as `""`), so
//! a dot product is the cosine. Vectors of different [`Embedder::id`]s are never comparable.

pub mod fetch;
mod upstream;
mod wordllama;

#[cfg(test)]
mod upstream_tests;
#[cfg(test)]
mod wordllama_tests;

use futures::future::BoxFuture;

pub use upstream::{UpstreamEmbeddings, UpstreamEmbeddingsConfig};
pub use wordllama::WordLlama;

/// Something that turns texts into vectors.
pub trait Embedder: Send + Sync + 'static {
    /// e.g. "wordllama-l2-supercat-256" or "upstream:<model>"; stored with each vector so a
    /// store embedded by one model is never searched with another.
    fn id(&self) -> String;
    /// Components of each vector. An upstream's is known once it has answered (0 before).
    fn dims(&self) -> usize;
    /// One unit-length vector per text, in order (all zeros for a text with no tokens).
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}

/// Why texts could not be embedded. The messages are meant for the person running Oasis.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The built-in model could not be downloaded, verified or loaded.
    #[error("the built-in embedding model is unavailable: {0}")]
    Unavailable(String),
    /// The upstream embeddings server kept rate limiting (429) after the retries.
    #[error("{0}")]
    RateLimited(String),
    /// The upstream refused the request (a 4xx other than 429: credentials, an unknown model,
    /// an input too long); retrying would not help.
    #[error("{0}")]
    Refused(String),
    /// The upstream failed, could not be reached, or answered something unusable.
    #[error("{0}")]
    Upstream(String),
    /// A bug: the embedding work itself failed.
    #[error("embedding failed: {0}")]
    Internal(String),
}

/// Scales `v` to length 1 in place; a zero (or non-finite) vector becomes all zeros.
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v.iter_mut().for_each(|x| *x = 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_makes_unit_vectors_and_zeroes_degenerate_ones() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
        let mut bad = vec![f32::NAN, 1.0];
        normalize(&mut bad);
        assert_eq!(bad, [0.0, 0.0]);
    }
}
