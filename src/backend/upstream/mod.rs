//! The upstream backend: any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama,
//! llama.cpp, LiteLLM …).
//!
//! Every question is one `POST {base}/chat/completions` with `stream: true` (`request.rs`);
//! the answer is read as server-sent events (`sse.rs`) and assembled (`assemble.rs`), its text
//! and tool calls passed on as they arrive. Servers that answer with a plain JSON completion
//! anyway are understood too. Tool calls a model wrote as text are recovered
//! (`text_calls.rs`). Failures before the answer starts (429, 5xx, connection errors,
//! timeouts) are retried with exponential backoff; nothing is retried once the answer's body
//! is being read (`error.rs`). Settings: `config.rs`. Tests: `tests.rs`, against the scripted
//! server of `test_server.rs`.

mod assemble;
mod config;
mod error;
mod request;
mod sse;
mod text_calls;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;

use std::fmt;

use anyhow::Context as _;
use futures::future::BoxFuture;
use reqwest::Method;
use reqwest::header::{self, HeaderMap};

use self::assemble::{Assembler, Completion, ModelList};
pub use self::config::UpstreamConfig;
use self::error::{
    attempts_note, detail_of, error_chain, error_detail, malformed, retry_after, retry_delay,
    retryable_status, status_error,
};
use self::request::RequestBody;
use self::sse::{Events, SseError};
use self::text_calls::TextCalls;
use super::{Backend, BackendError, ChatRequest, ChatResponse, DeltaSink};

/// A [`Backend`] that asks an OpenAI-compatible Chat Completions server.
pub struct Upstream {
    cfg: UpstreamConfig,
    /// `cfg.base_url` without trailing slashes.
    base: String,
    client: reqwest::Client,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Checks the base URL and builds the HTTP client.
    pub fn new(cfg: UpstreamConfig) -> anyhow::Result<Upstream> {
        let base = cfg.base_url.trim().trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base).context("the upstream base URL is not a valid URL")?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "the upstream base URL must start with http:// or https://"
        );
        let client = reqwest::Client::builder()
            .user_agent(concat!("oasis/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client for the upstream")?;
        Ok(Upstream { cfg, base, client })
    }

    /// The configuration this backend was built with.
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// Whether this upstream serves `model` (always, without an allow-list).
    pub fn serves(&self, model: &str) -> bool {
        self.cfg
            .models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}/{path}", self.base))
            .timeout(self.cfg.request_timeout);
        match self.cfg.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Removes the API key from a message (an upstream may quote it back).
    fn redact(&self, err: BackendError) -> BackendError {
        let Some(key) = self.cfg.api_key.as_deref().filter(|k| !k.is_empty()) else {
            return err;
        };
        let clean = |msg: String| msg.replace(key, "[redacted]");
        match err {
            BackendError::RateLimited(m) => BackendError::RateLimited(clean(m)),
            BackendError::Server(m) => BackendError::Server(clean(m)),
            BackendError::InvalidPrompt(m) => BackendError::InvalidPrompt(clean(m)),
        }
    }

    async fn chat(
        &self,
        req: ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, BackendError> {
        if !self.serves(&req.model) {
            return Err(BackendError::InvalidPrompt(format!(
                "the model `{}` is not served by the upstream model server",
                req.model
            )));
        }
        let started = std::time::Instant::now();
        let out = self.ask(&req, sink).await;
        crate::metrics::upstream_request(
            crate::metrics::model_label(&req.model, self.cfg.models.as_deref()),
            started.elapsed().as_secs_f64(),
            out.is_ok(),
        );
        out
    }

    /// Asks for the completion and reads the whole answer.
    async fn ask(
        &self,
        req: &ChatRequest,
        sink: DeltaSink<'_>,
    ) -> Result<ChatResponse, BackendError> {
        let resp = self.post_with_retries(&RequestBody::new(req)).await?;
        let text_calls = TextCalls::for_request(req, self.cfg.text_tool_calls);
        let mut answer = Assembler::new(text_calls);
        if is_json(resp.headers()) {
            self.read_json(resp, &mut answer, sink).await?;
        } else {
            self.read_stream(resp, &mut answer, sink).await?;
        }
        answer.finish(&req.messages, sink)
    }

    /// Sends the completion request, retrying what may be retried; returns a 2xx response
    /// whose body has not been read yet.
    async fn post_with_retries(
        &self,
        body: &RequestBody<'_>,
    ) -> Result<reqwest::Response, BackendError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (err, retry_after) = match self
                .request(Method::POST, "chat/completions")
                .json(body)
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers());
                    let detail = error_detail(resp).await;
                    let err = status_error(status, &detail, attempt);
                    if !retryable_status(status) {
                        return Err(err);
                    }
                    (err, retry_after)
                }
                Err(e) => {
                    let err = self.transport_error(&e, attempt);
                    if e.is_builder() {
                        return Err(err);
                    }
                    (err, None)
                }
            };
            if attempt > self.cfg.max_retries {
                return Err(err);
            }
            let delay = retry_delay(self.cfg.initial_backoff, attempt - 1, retry_after);
            tracing::warn!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %self.redact(err),
                "upstream request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// An error for a request that got no HTTP answer.
    fn transport_error(&self, e: &reqwest::Error, attempts: u32) -> BackendError {
        let tries = attempts_note(attempts);
        if e.is_timeout() {
            BackendError::Server(format!(
                "the upstream model server did not answer within {} s{tries}",
                self.cfg.request_timeout.as_secs_f64()
            ))
        } else if e.is_connect() {
            BackendError::Server(format!(
                "could not connect to the upstream model server{tries}: {}",
                error_chain(e)
            ))
        } else {
            BackendError::Server(format!(
                "the request to the upstream model server failed{tries}: {}",
                error_chain(e)
            ))
        }
    }

    /// An error for a response body that could not be read to its end.
    fn body_error(&self, e: &reqwest::Error) -> BackendError {
        if e.is_timeout() {
            BackendError::Server(format!(
                "the upstream model server did not finish its answer within {} s",
                self.cfg.request_timeout.as_secs_f64()
            ))
        } else {
            BackendError::Server(format!(
                "the upstream model server's answer broke off: {}",
                error_chain(e)
            ))
        }
    }

    /// Reads a server-sent-event stream to `[DONE]` (or to its end after a finish reason).
    async fn read_stream(
        &self,
        resp: reqwest::Response,
        answer: &mut Assembler,
        sink: DeltaSink<'_>,
    ) -> Result<(), BackendError> {
        let mut events = Events::new(Box::pin(resp.bytes_stream()));
        while let Some(event) = events.next().await {
            match event {
                Ok(data) => {
                    answer.apply_event(&data, sink)?;
                    if answer.done {
                        return Ok(());
                    }
                }
                // The answer is complete; only usage or `[DONE]` went missing.
                Err(SseError::Transport(e)) if answer.finish_reason.is_some() => {
                    tracing::warn!(error = %self.body_error(&e), "upstream stream broke off after its finish_reason");
                    return Ok(());
                }
                Err(SseError::Transport(e)) => return Err(self.body_error(&e)),
                Err(SseError::Malformed(what)) => return Err(malformed(what)),
            }
        }
        if answer.finish_reason.is_some() {
            Ok(())
        } else {
            Err(BackendError::Server(
                "the upstream model server's stream ended before the answer was finished \
                 (no finish_reason and no [DONE])"
                    .to_string(),
            ))
        }
    }

    /// Reads a non-streamed completion (some servers ignore `stream: true`).
    async fn read_json(
        &self,
        resp: reqwest::Response,
        answer: &mut Assembler,
        sink: DeltaSink<'_>,
    ) -> Result<(), BackendError> {
        let bytes = resp.bytes().await.map_err(|e| self.body_error(&e))?;
        if bytes.trim_ascii_start().starts_with(b"data:") {
            // Mislabelled server-sent events.
            let whole = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
            let mut events = Events::new(whole);
            while let Some(event) = events.next().await {
                match event {
                    Ok(data) => answer.apply_event(&data, sink)?,
                    Err(SseError::Malformed(what)) => return Err(malformed(what)),
                    Err(SseError::Transport(never)) => match never {},
                }
                if answer.done {
                    return Ok(());
                }
            }
            return match answer.finish_reason {
                Some(_) => Ok(()),
                None => Err(BackendError::Server(
                    "the upstream model server's answer ended before it was finished".to_string(),
                )),
            };
        }
        let completion: Completion = serde_json::from_slice(&bytes).map_err(|e| {
            BackendError::Server(format!(
                "the upstream model server's answer was not understood: {e}"
            ))
        })?;
        if let Some(err) = completion.error.filter(|e| !e.is_null()) {
            return Err(BackendError::Server(format!(
                "the upstream model server reported an error: {}",
                detail_of(&err)
            )));
        }
        let choice = completion
            .choices
            .and_then(|choices| choices.into_iter().next())
            .ok_or_else(|| {
                BackendError::Server("the upstream model server's answer had no choices".into())
            })?;
        if let Some(message) = choice.message {
            answer.apply_delta(message, sink);
        }
        answer.set_finish_reason(choice.finish_reason);
        answer.usage = completion.usage;
        answer.done = true;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<String>, BackendError> {
        if let Some(models) = &self.cfg.models {
            return Ok(models.clone());
        }
        let resp = self
            .request(Method::GET, "models")
            .send()
            .await
            .map_err(|e| self.transport_error(&e, 1))?;
        let status = resp.status();
        if !status.is_success() {
            let detail = error_detail(resp).await;
            return Err(status_error(status, &detail, 1));
        }
        let bytes = resp.bytes().await.map_err(|e| self.body_error(&e))?;
        let list: ModelList = serde_json::from_slice(&bytes).map_err(|e| {
            BackendError::Server(format!(
                "the upstream model server's model list was not understood: {e}"
            ))
        })?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }
}

impl Backend for Upstream {
    fn complete<'a>(
        &'a self,
        req: ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move { self.chat(req, on_delta).await.map_err(|e| self.redact(e)) })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move { self.list_models().await.map_err(|e| self.redact(e)) })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}
