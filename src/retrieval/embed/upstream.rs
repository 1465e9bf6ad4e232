//! Embeddings from an upstream OpenAI-compatible server: `POST {base}/embeddings` with
//! `{"model", "input": [...]}`, answered with `data[i].embedding`.
//!
//! Texts go in batches (at most 256 inputs and 512 KiB of text a request, one after another, in
//! order). 408, 429 and 5xx answers and failed connections are retried with exponential backoff
//! (or the server's `Retry-After`); other errors are not. Vectors are scaled to length 1, since
//! not every server does so. Empty texts are not sent: they get zero vectors.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EmbedError, Embedder, normalize};

/// Where and how to reach the upstream (the server reads it from `OASIS_EMBEDDINGS_*`).
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamEmbeddingsConfig {
    /// The API's base, e.g. `http://host:port/v1` (a trailing slash is tolerated).
    pub base_url: String,
    /// Sent as `model`, and part of the embedder's id (`upstream:<model>`).
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
}

impl fmt::Debug for UpstreamEmbeddingsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamEmbeddingsConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// An [`Embedder`] backed by an upstream embeddings API.
#[derive(Debug)]
pub struct UpstreamEmbeddings {
    cfg: UpstreamEmbeddingsConfig,
    /// `{base}/embeddings`, or why the base URL cannot be used (reported by each call).
    url: Result<String, String>,
    client: reqwest::Client,
    /// The vectors' length, once the upstream has answered (0 before).
    dims: AtomicUsize,
    max_inputs: usize,
    max_bytes: usize,
    max_retries: u32,
    initial_backoff: Duration,
    request_timeout: Duration,
}

impl UpstreamEmbeddings {
    /// Defaults: batches of at most 256 inputs and 512 KiB, 4 retries from 500 ms, 300 s per
    /// attempt. A base URL that is not http(s) makes every call fail, saying so.
    pub fn new(cfg: UpstreamEmbeddingsConfig) -> Self {
        let base = cfg.base_url.trim().trim_end_matches('/').to_string();
        let url = match reqwest::Url::parse(&base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(format!("{base}/embeddings")),
            Ok(_) => Err("it must start with http:// or https://".to_string()),
            Err(e) => Err(format!("it is not a valid URL ({e})")),
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("oasis/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with rustls builds");
        UpstreamEmbeddings {
            cfg,
            url,
            client,
            dims: AtomicUsize::new(0),
            max_inputs: 256,
            max_bytes: 512 * 1024,
            max_retries: 4,
            initial_backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(300),
        }
    }

    /// At most `inputs` texts and `bytes` of text a request (a longer text goes alone).
    pub fn with_batch_limits(mut self, inputs: usize, bytes: usize) -> Self {
        self.max_inputs = inputs.max(1);
        self.max_bytes = bytes.max(1);
        self
    }

    /// `max_retries` retries of a failed request, the first after `initial_backoff`, each
    /// further one after twice as long (or what the server's `Retry-After` asks, up to 30 s).
    pub fn with_retries(mut self, max_retries: u32, initial_backoff: Duration) -> Self {
        self.max_retries = max_retries;
        self.initial_backoff = initial_backoff;
        self
    }

    /// The most one attempt (connecting, sending, reading the answer) may take.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    async fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let url = self.url.as_ref().map_err(|why| {
            EmbedError::Refused(format!(
                "the embeddings base URL `{}` cannot be used: {why}",
                self.cfg.base_url
            ))
        })?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        let wanted: Vec<usize> = (0..texts.len()).filter(|&i| !texts[i].is_empty()).collect();
        for batch in batches(&wanted, texts, self.max_inputs, self.max_bytes) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_str()).collect();
            let got = self.embed_batch(url, &inputs).await?;
            for (&i, v) in batch.iter().zip(got) {
                vectors[i] = Some(v);
            }
        }
        if vectors.iter().any(Option::is_none) && self.dims.load(Ordering::Relaxed) == 0 {
            // Only empty texts, and nothing embedded yet: ask once how long a vector is.
            self.embed_batch(url, &["."]).await?;
        }
        let dims = self.dims.load(Ordering::Relaxed);
        Ok(vectors
            .into_iter()
            .map(|v| v.unwrap_or_else(|| vec![0.0; dims]))
            .collect())
    }

    /// One request: the inputs' vectors, in order, normalized.
    async fn embed_batch(&self, url: &str, inputs: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = json!({"model": self.cfg.model, "input": inputs});
        let resp = self.post_with_retries(url, &body).await?;
        let bytes = resp.bytes().await.map_err(|e| {
            self.redact(EmbedError::Upstream(format!(
                "the upstream embeddings server's answer broke off: {}",
                error_chain(&e)
            )))
        })?;
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            malformed(format!(
                "it is not `{{\"data\": [{{\"embedding\": [numbers…]}}, …]}}` ({e})"
            ))
        })?;
        let vectors = answer.into_vectors(inputs.len())?;
        let dims = vectors[0].len();
        if let Err(had) = self
            .dims
            .compare_exchange(0, dims, Ordering::Relaxed, Ordering::Relaxed)
            && had != dims
        {
            return Err(malformed(format!(
                "model `{}` answered {dims}-dimensional vectors after {had}-dimensional ones",
                self.cfg.model
            )));
        }
        Ok(vectors)
    }

    /// Sends `body`, retrying what may be retried; returns a 2xx response, body unread.
    async fn post_with_retries(
        &self,
        url: &str,
        body: &Value,
    ) -> Result<reqwest::Response, EmbedError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .post(url)
                .timeout(self.request_timeout)
                .json(body);
            if let Some(key) = self.key() {
                request = request.bearer_auth(key);
            }
            let (err, wait) = match request.send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let wait = retry_after(resp.headers());
                    let detail = error_detail(resp).await;
                    let err = self.redact(self.status_error(status, &detail, attempt));
                    if !crate::outbound::retryable_status(status) {
                        return Err(err);
                    }
                    (err, wait)
                }
                Err(e) => {
                    let err = self.redact(self.transport_error(&e, attempt));
                    if e.is_builder() {
                        return Err(err);
                    }
                    (err, None)
                }
            };
            if attempt > self.max_retries {
                return Err(err);
            }
            let delay = wait
                .unwrap_or_else(|| {
                    self.initial_backoff
                        .saturating_mul(2u32.saturating_pow(attempt - 1))
                })
                .min(MAX_RETRY_DELAY);
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "upstream embeddings request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn key(&self) -> Option<&str> {
        self.cfg.api_key.as_deref().filter(|k| !k.is_empty())
    }

    /// Removes the API key from a message (an upstream may quote it back).
    fn redact(&self, err: EmbedError) -> EmbedError {
        let Some(key) = self.key() else {
            return err;
        };
        let clean = |m: String| m.replace(key, "[redacted]");
        match err {
            EmbedError::Unavailable(m) => EmbedError::Unavailable(clean(m)),
            EmbedError::RateLimited(m) => EmbedError::RateLimited(clean(m)),
            EmbedError::Refused(m) => EmbedError::Refused(clean(m)),
            EmbedError::Upstream(m) => EmbedError::Upstream(clean(m)),
            EmbedError::Internal(m) => EmbedError::Internal(clean(m)),
        }
    }

    fn status_error(&self, status: StatusCode, detail: &str, attempts: u32) -> EmbedError {
        let (tries, detail) = crate::outbound::status_suffixes(detail, attempts);
        let model = &self.cfg.model;
        match status.as_u16() {
            429 => EmbedError::RateLimited(format!(
                "the upstream embeddings server is rate limiting Oasis (HTTP {status}{tries}){detail}"
            )),
            401 | 403 => EmbedError::Refused(format!(
                "the upstream embeddings server rejected Oasis's credentials (HTTP {status}; \
                 check OASIS_EMBEDDINGS_API_KEY){detail}"
            )),
            404 => EmbedError::Refused(format!(
                "the upstream embeddings server has no {}/embeddings or no model `{model}` \
                 (HTTP {status}; check OASIS_EMBEDDINGS_BASE_URL, e.g. http://host:port/v1, and \
                 OASIS_EMBEDDINGS_MODEL){detail}",
                self.cfg.base_url.trim_end_matches('/')
            )),
            408 | 500..=599 => EmbedError::Upstream(format!(
                "the upstream embeddings server failed (HTTP {status}{tries}){detail}"
            )),
            400..=499 => EmbedError::Refused(format!(
                "the upstream embeddings server refused the request for model `{model}` \
                 (HTTP {status}){detail}"
            )),
            _ => EmbedError::Upstream(format!(
                "the upstream embeddings server answered with an unexpected HTTP {status}{detail}"
            )),
        }
    }

    /// An error for a request that got no HTTP answer.
    fn transport_error(&self, e: &reqwest::Error, attempts: u32) -> EmbedError {
        let tries = if attempts > 1 {
            format!(" ({attempts} attempts)")
        } else {
            String::new()
        };
        let base = self.cfg.base_url.trim();
        EmbedError::Upstream(if e.is_timeout() {
            format!(
                "the upstream embeddings server at {base} did not answer within {} s{tries}",
                self.request_timeout.as_secs_f64()
            )
        } else if e.is_connect() {
            format!(
                "could not connect to the upstream embeddings server at {base}{tries}: {}",
                error_chain(e)
            )
        } else {
            format!(
                "the request to the upstream embeddings server at {base} failed{tries}: {}",
                error_chain(e)
            )
        })
    }
}

impl Embedder for UpstreamEmbeddings {
    fn id(&self) -> String {
        format!("upstream:{}", self.cfg.model)
    }

    fn dims(&self) -> usize {
        self.dims.load(Ordering::Relaxed)
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        self.embed_all(texts).boxed()
    }
}

/// `wanted` (indexes of `texts`) cut into runs of at most `max_inputs` texts and `max_bytes`.
fn batches(
    wanted: &[usize],
    texts: &[String],
    max_inputs: usize,
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in wanted {
        let len = texts[i].len();
        match out.last_mut() {
            Some(batch) if batch.len() < max_inputs && bytes + len <= max_bytes => {
                batch.push(i);
                bytes += len;
            }
            _ => {
                out.push(vec![i]);
                bytes = len;
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: Option<usize>,
}

impl Answer {
    /// The vectors in input order (by `index` when given), checked and normalized.
    fn into_vectors(self, inputs: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.data.len() != inputs {
            return Err(malformed(format!(
                "{} embeddings for {inputs} inputs",
                self.data.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs];
        for (n, item) in self.data.into_iter().enumerate() {
            let i = item.index.unwrap_or(n);
            let slot = out
                .get_mut(i)
                .ok_or_else(|| malformed(format!("index {i} for {inputs} inputs")))?;
            if slot.is_some() {
                return Err(malformed(format!("index {i} twice")));
            }
            *slot = Some(item.embedding);
        }
        let mut vectors: Vec<Vec<f32>> = out.into_iter().map(Option::unwrap_or_default).collect();
        let dims = vectors[0].len();
        if dims == 0 || vectors.iter().any(|v| v.len() != dims) {
            return Err(malformed("vectors of different or zero lengths"));
        }
        if vectors.iter().flatten().any(|x| !x.is_finite()) {
            return Err(malformed("a vector holds a non-finite number"));
        }
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

fn malformed(what: impl fmt::Display) -> EmbedError {
    EmbedError::Upstream(format!(
        "the upstream embeddings server's answer is unusable: {what}"
    ))
}

use crate::outbound::{MAX_RETRY_DELAY, error_chain, error_detail, retry_after};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_both_limits_and_a_long_text_goes_alone() {
        let texts: Vec<String> = ["aa", "bb", "cc", "dddddddddd", "ee"]
            .map(String::from)
            .to_vec();
        let all: Vec<usize> = (0..texts.len()).collect();
        assert_eq!(
            batches(&all, &texts, 2, 100),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(
            batches(&all, &texts, 10, 5),
            vec![vec![0, 1], vec![2], vec![3], vec![4]]
        );
        assert!(batches(&[], &texts, 2, 100).is_empty());
    }

    #[test]
    fn answers_are_put_in_input_order_and_checked() {
        let answer = |v: Value| serde_json::from_value::<Answer>(v).unwrap();
        let got = answer(json!({"data": [
            {"index": 1, "embedding": [0.0, 2.0]},
            {"index": 0, "embedding": [3.0, 4.0]},
        ]}))
        .into_vectors(2)
        .unwrap();
        assert_eq!(got, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);

        let err = |v: Value, n| answer(v).into_vectors(n).unwrap_err().to_string();
        assert!(err(json!({"data": [{"embedding": [1.0]}]}), 2).contains("1 embeddings for 2"));
        assert!(
            err(
                json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}),
                2
            )
            .contains("index 0 twice")
        );
        assert!(
            err(
                json!({"data": [{"embedding": [1.0]}, {"embedding": [1.0, 2.0]}]}),
                2
            )
            .contains("different")
        );
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let cfg = UpstreamEmbeddingsConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api_key: Some("sk-secret".into()),
        };
        assert!(!format!("{cfg:?}").contains("sk-secret"));
        assert!(!format!("{:?}", UpstreamEmbeddings::new(cfg)).contains("sk-secret"));
    }
}
