//! The upstream backend: any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama,
//! llama.cpp, LiteLLM …).
//!
//! Every question is one `POST {base}/chat/completions` with `stream: true`; the answer is read
//! as server-sent events, text is passed on as it arrives and tool-call fragments are
//! assembled. Servers that answer with a plain JSON completion anyway are understood too.
//! Failures before the answer starts (429, 5xx, connection errors, timeouts) are retried with
//! exponential backoff; nothing is retried once the answer's body is being read.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Backend, BackendError, ChatMessage, ChatRequest, ChatResponse, DeltaSink, FinishReason,
    ModelDelta, Role, ToolCall, ToolChoice, Usage, estimate_tokens,
};

/// Receives the answer's text as it is produced.
type TextSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// The longest wait between two attempts, whatever `Retry-After` asks for.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How much of an upstream's error message an error quotes.
const MAX_DETAIL_CHARS: usize = 500;
/// How much of an error response's body is read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The largest single server-sent event accepted.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;
/// The `tool_calls` slot a legacy `function_call` delta is assembled in.
const LEGACY_FUNCTION_CALL_INDEX: u64 = u64::MAX;

/// Where and how to reach an upstream Chat Completions server.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The API's base, e.g. `http://host:port/v1` (a trailing slash is tolerated).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// The models this upstream serves; `None` means every model.
    pub models: Option<Vec<String>>,
    /// How many times a failed request is retried (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub initial_backoff: Duration,
    /// The most one attempt (connecting, sending and reading the whole answer) may take.
    pub request_timeout: Duration,
}

impl UpstreamConfig {
    /// Defaults: no key, no allow-list, 3 retries, 500 ms initial backoff, 300 s per attempt.
    pub fn new(base_url: impl Into<String>) -> UpstreamConfig {
        UpstreamConfig {
            base_url: base_url.into(),
            api_key: None,
            models: None,
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(300),
        }
    }

    /// Reads `OASIS_UPSTREAM_BASE_URL` (required; `None` without it), `OASIS_UPSTREAM_API_KEY`
    /// and `OASIS_UPSTREAM_MODELS` (a comma-separated allow-list).
    pub fn from_env() -> Option<UpstreamConfig> {
        UpstreamConfig::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<UpstreamConfig> {
        let non_empty = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut cfg = UpstreamConfig::new(non_empty("OASIS_UPSTREAM_BASE_URL")?);
        cfg.api_key = non_empty("OASIS_UPSTREAM_API_KEY");
        cfg.models = non_empty("OASIS_UPSTREAM_MODELS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .filter(|models| !models.is_empty());
        Some(cfg)
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("models", &self.models)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

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
        on_text: TextSink<'_>,
    ) -> Result<ChatResponse, BackendError> {
        if !self.serves(&req.model) {
            return Err(BackendError::InvalidPrompt(format!(
                "the model `{}` is not served by the upstream model server",
                req.model
            )));
        }
        let body = request_body(&req);
        let resp = self.post_with_retries(&body).await?;
        let mut answer = Assembler::default();
        if is_json(resp.headers()) {
            self.read_json(resp, &mut answer, on_text).await?;
        } else {
            self.read_stream(resp, &mut answer, on_text).await?;
        }
        answer.finish(&req.messages)
    }

    /// Sends the completion request, retrying what may be retried; returns a 2xx response
    /// whose body has not been read yet.
    async fn post_with_retries(&self, body: &Value) -> Result<reqwest::Response, BackendError> {
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
        mut resp: reqwest::Response,
        answer: &mut Assembler,
        on_text: TextSink<'_>,
    ) -> Result<(), BackendError> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(chunk) => chunk,
                // The answer is complete; only usage or `[DONE]` went missing.
                Err(e) if answer.finish_reason.is_some() => {
                    tracing::warn!(error = %self.body_error(&e), "upstream stream broke off after its finish_reason");
                    return Ok(());
                }
                Err(e) => return Err(self.body_error(&e)),
            };
            let ended = chunk.is_none();
            match chunk {
                Some(bytes) => parser.feed(&bytes, &mut events),
                None => parser.finish(&mut events),
            }
            .map_err(malformed)?;
            for event in events.drain(..) {
                answer.apply_event(&event, on_text)?;
                if answer.done {
                    return Ok(());
                }
            }
            if ended {
                break;
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
        on_text: TextSink<'_>,
    ) -> Result<(), BackendError> {
        let bytes = resp.bytes().await.map_err(|e| self.body_error(&e))?;
        if bytes.trim_ascii_start().starts_with(b"data:") {
            // Mislabelled server-sent events.
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            parser.feed(&bytes, &mut events).map_err(malformed)?;
            parser.finish(&mut events).map_err(malformed)?;
            for event in &events {
                answer.apply_event(event, on_text)?;
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
            answer.apply_delta(message, on_text);
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

impl Upstream {
    /// [`Backend::complete`] with a sink for the text only.
    async fn complete_text(
        &self,
        req: ChatRequest,
        on_text: TextSink<'_>,
    ) -> Result<ChatResponse, BackendError> {
        self.chat(req, on_text).await.map_err(|e| self.redact(e))
    }
}

impl Backend for Upstream {
    fn complete<'a>(
        &'a self,
        req: ChatRequest,
        on_delta: DeltaSink<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, BackendError>> {
        Box::pin(async move {
            let on_text = |t: &str| on_delta(ModelDelta::Text(t));
            let answer = self.complete_text(req, &on_text).await?;
            // The calls once assembled.
            for (index, call) in answer.tool_calls.iter().enumerate() {
                on_delta(ModelDelta::CallStarted {
                    index,
                    id: &call.id,
                    name: &call.name,
                });
                on_delta(ModelDelta::Arguments {
                    index,
                    text: &call.arguments,
                });
            }
            Ok(answer)
        })
    }

    fn models(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move { self.list_models().await.map_err(|e| self.redact(e)) })
    }
}

// ---- The request -------------------------------------------------------------------------

/// The JSON body of a streamed Chat Completions request.
fn request_body(req: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    body.insert(
        "messages".into(),
        req.messages.iter().map(wire_message).collect(),
    );
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .map(|f| json!({"type": "function", "function": f}))
            .collect();
        body.insert("tools".into(), tools);
        let choice = match &req.tool_choice {
            ToolChoice::Auto => None,
            ToolChoice::None => Some(json!("none")),
            ToolChoice::Required => Some(json!("required")),
            ToolChoice::Function(name) => {
                Some(json!({"type": "function", "function": {"name": name}}))
            }
        };
        if let Some(choice) = choice {
            body.insert("tool_choice".into(), choice);
        }
        body.insert("parallel_tool_calls".into(), json!(req.parallel_tool_calls));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(n) = req.max_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    if let Some(format) = &req.response_format {
        body.insert("response_format".into(), format.clone());
    }
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    Value::Object(body)
}

/// One message in OpenAI's wire format.
fn wire_message(m: &ChatMessage) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User if m.images.is_empty() => json!({"role": "user", "content": m.content}),
        // Text first, then the images, as content parts (vision models read these).
        Role::User => {
            let mut parts = vec![];
            if !m.content.is_empty() {
                parts.push(json!({"type": "text", "text": m.content}));
            }
            for image in &m.images {
                let mut url = json!({"url": image.url});
                if let Some(d) = &image.detail {
                    url["detail"] = json!(d);
                }
                parts.push(json!({"type": "image_url", "image_url": url}));
            }
            json!({"role": "user", "content": parts})
        }
        Role::Assistant if m.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": m.content})
        }
        Role::Assistant => {
            let content = if m.content.is_empty() {
                Value::Null
            } else {
                json!(m.content)
            };
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect();
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id.as_deref().unwrap_or_default(),
            "content": m.content,
        }),
    }
}

// ---- Errors ------------------------------------------------------------------------------

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The error for an HTTP error status; `detail` is the upstream's own message (maybe empty).
fn status_error(status: StatusCode, detail: &str, attempts: u32) -> BackendError {
    let tries = if attempts > 1 {
        format!(", {attempts} attempts")
    } else {
        String::new()
    };
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    };
    match status.as_u16() {
        429 => BackendError::RateLimited(format!(
            "the upstream model server is rate limiting Oasis (HTTP {status}{tries}){detail}"
        )),
        401 | 403 => BackendError::Server(format!(
            "the upstream model server rejected Oasis's credentials (HTTP {status}; check \
             OASIS_UPSTREAM_API_KEY){detail}"
        )),
        408 | 500..=599 => BackendError::Server(format!(
            "the upstream model server failed (HTTP {status}{tries}){detail}"
        )),
        400..=499 => BackendError::InvalidPrompt(format!(
            "the upstream model server refused the request (HTTP {status}){detail}"
        )),
        _ => BackendError::Server(format!(
            "the upstream model server answered with an unexpected HTTP {status}{detail}"
        )),
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" ({attempts} attempts)")
    } else {
        String::new()
    }
}

fn malformed(what: String) -> BackendError {
    BackendError::Server(format!(
        "the upstream model server sent a malformed stream: {what}"
    ))
}

/// `e` and its sources, without the URL (which may hold credentials).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The upstream's message from an error response: `error.message` (OpenAI), `error` or
/// `message`/`detail` (vLLM, FastAPI), else the body's text; at most 500 characters.
async fn error_detail(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(bytes)) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    let detail = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => detail_of(&value),
        Err(_) => String::from_utf8_lossy(&body).into_owned(),
    };
    truncate(&detail.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The most telling message in an error object.
fn detail_of(value: &Value) -> String {
    let message = value
        .pointer("/error/message")
        .or_else(|| value.get("error").filter(|e| e.is_string()))
        .or_else(|| value.get("message"))
        .or_else(|| value.get("detail"))
        .unwrap_or(value);
    let text = match message {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    truncate(&text)
}

fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// `Retry-After` (or OpenAI's `retry-after-ms`) as a wait, capped; HTTP dates are ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let secs = number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number(header::RETRY_AFTER.as_str()))?;
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_DELAY.as_secs_f64()),
    ))
}

/// The wait before retry number `retry` (0-based): `Retry-After` if given, else exponential.
fn retry_delay(initial: Duration, retry: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| initial.saturating_mul(2u32.saturating_pow(retry)))
        .min(MAX_RETRY_DELAY)
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

// ---- Server-sent events ------------------------------------------------------------------

/// Splits a byte stream into server-sent events' `data` (whatever the network's reads).
#[derive(Debug, Default)]
struct SseParser {
    /// Bytes not yet ending in a line break.
    pending: Vec<u8>,
    /// The current event's data lines, joined with `\n`.
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; the data of every event they complete is pushed onto `out`.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), String> {
        self.pending.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.pending);
        let mut start = 0;
        while let Some(offset) = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + offset;
            let next = if buf[end] == b'\n' {
                end + 1
            } else if end + 1 < buf.len() {
                if buf[end + 1] == b'\n' {
                    end + 2
                } else {
                    end + 1
                }
            } else {
                // A `\r` at the end: wait to see whether `\n` follows.
                break;
            };
            self.line(&buf[start..end], out)?;
            start = next;
        }
        self.pending = buf;
        self.pending.drain(..start);
        if self.pending.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(format!("an event exceeded {MAX_EVENT_BYTES} bytes"));
        }
        Ok(())
    }

    /// Ends the stream: an unterminated last line and event still count.
    fn finish(&mut self, out: &mut Vec<String>) -> Result<(), String> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        if !rest.is_empty() {
            self.line(rest, out)?;
        }
        self.line(b"", out)
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), String> {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| "a line is not UTF-8".to_string())?;
        if line.starts_with(':') {
            return Ok(()); // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        Ok(())
    }
}

// ---- The answer --------------------------------------------------------------------------

/// A streamed chunk, or the whole non-streamed completion's relevant parts.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Option<Vec<CompletionChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// A streamed delta, or a non-streamed message.
#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
    /// The deprecated single-function form.
    #[serde(default)]
    function_call: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A string (possibly a fragment); some servers send an object.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    id: String,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Assembles an answer from chunks.
#[derive(Debug, Default)]
struct Assembler {
    text: String,
    /// By the server's `index`.
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<String>,
    usage: Option<WireUsage>,
    /// `[DONE]` was seen (or the whole answer was read).
    done: bool,
}

impl Assembler {
    /// Applies one event's data.
    fn apply_event(&mut self, data: &str, on_text: TextSink<'_>) -> Result<(), BackendError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data)
            .map_err(|e| malformed(format!("an event was not understood ({e})")))?;
        if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
            return Err(BackendError::Server(format!(
                "the upstream model server reported an error mid-answer: {}",
                detail_of(&err)
            )));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) {
            if let Some(delta) = choice.delta {
                self.apply_delta(delta, on_text);
            }
            self.set_finish_reason(choice.finish_reason);
        }
        Ok(())
    }

    fn apply_delta(&mut self, delta: Delta, on_text: TextSink<'_>) {
        if let Some(content) = delta.content {
            let text = content_text(&content);
            if !text.is_empty() {
                on_text(&text);
                self.text.push_str(&text);
            }
        }
        for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
            // A missing index: the call's place in this delta (0 for a lone call).
            let index = call.index.unwrap_or(position as u64);
            self.apply_call_fragment(index, call.id, call.function);
        }
        if let Some(function) = delta.function_call {
            self.apply_call_fragment(LEGACY_FUNCTION_CALL_INDEX, None, Some(function));
        }
    }

    fn apply_call_fragment(&mut self, index: u64, id: Option<String>, f: Option<FunctionDelta>) {
        let call = self.calls.entry(index).or_default();
        if call.id.is_none() {
            call.id = id.filter(|id| !id.is_empty());
        }
        let Some(f) = f else { return };
        if let Some(name) = f.name.filter(|n| !n.is_empty())
            && call.name.is_empty()
        {
            call.name = name;
        }
        match f.arguments {
            Some(Value::String(fragment)) => call.arguments.push_str(&fragment),
            Some(Value::Null) | None => {}
            Some(other) => call.arguments.push_str(&other.to_string()),
        }
    }

    fn set_finish_reason(&mut self, reason: Option<String>) {
        if let Some(reason) = reason.filter(|r| !r.is_empty()) {
            self.finish_reason = Some(reason);
        }
    }

    /// The answer; usage the server did not report is estimated.
    fn finish(self, prompt: &[ChatMessage]) -> Result<ChatResponse, BackendError> {
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for call in self.calls.into_values() {
            if call.name.is_empty() {
                if call.id.is_none() && call.arguments.trim().is_empty() {
                    continue; // an empty fragment
                }
                return Err(BackendError::Server(
                    "the upstream model server sent a tool call without a function name"
                        .to_string(),
                ));
            }
            let arguments = if call.arguments.trim().is_empty() {
                "{}".to_string()
            } else {
                call.arguments
            };
            tool_calls.push(ToolCall {
                id: call.id.unwrap_or_else(|| crate::model::new_id("call_")),
                name: call.name,
                arguments,
            });
        }
        let finish = match self.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            Some("content_filter") => FinishReason::ContentFilter,
            // Whatever the server said (some say `stop`), calls were made.
            _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        let reported = self.usage;
        let usage = Usage {
            prompt_tokens: reported
                .and_then(|u| u.prompt_tokens)
                .unwrap_or_else(|| estimate_prompt(prompt)),
            completion_tokens: reported
                .and_then(|u| u.completion_tokens)
                .unwrap_or_else(|| estimate_tokens(&self.text) + estimate_calls(&tool_calls)),
        };
        Ok(ChatResponse {
            text: self.text,
            tool_calls,
            finish,
            usage,
        })
    }
}

/// A message's text: a string, or the `text` of an array of content parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn estimate_calls(calls: &[ToolCall]) -> u64 {
    calls
        .iter()
        .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
        .sum()
}

fn estimate_prompt(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + estimate_calls(&m.tool_calls))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Notify;

    use super::*;
    use crate::backend::FunctionSpec;

    const KEY: &str = "sk-test-secret-key-1234";

    // ---- A scripted HTTP/1.1 server ----------------------------------------------------

    /// A request the test server received.
    #[derive(Debug, Clone)]
    struct Received {
        method: String,
        path: String,
        /// Lower-case names.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("the request body is JSON")
        }
    }

    #[derive(Clone)]
    enum Piece {
        /// Sent as one HTTP chunk.
        Bytes(Vec<u8>),
        /// Waits (5 s at most) until the client has passed text on; sets the flag if it did.
        AwaitText(Arc<Notify>, Arc<AtomicBool>),
        /// Sends nothing more until the client hangs up.
        Hold,
    }

    #[derive(Clone)]
    enum Reply {
        Whole {
            status: u16,
            content_type: &'static str,
            headers: Vec<(&'static str, &'static str)>,
            body: String,
        },
        /// `200 text/event-stream`, chunked; `abrupt` closes the connection mid-chunk.
        Stream { pieces: Vec<Piece>, abrupt: bool },
        /// Never answers.
        Silent,
    }

    /// The `n`th request gets `replies[n]`; the last reply repeats.
    struct Server {
        base: String,
        received: Arc<Mutex<Vec<Received>>>,
    }

    impl Server {
        async fn start(replies: Vec<Reply>) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let received = Arc::new(Mutex::new(Vec::new()));
            let log = received.clone();
            let replies = Arc::new(replies);
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let (log, replies) = (log.clone(), replies.clone());
                    tokio::spawn(async move { serve_one(socket, &replies, &log).await });
                }
            });
            Server {
                base: format!("http://{addr}/v1"),
                received,
            }
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    async fn serve_one(mut socket: TcpStream, replies: &[Reply], log: &Mutex<Vec<Received>>) {
        let Some(request) = read_request(&mut socket).await else {
            return;
        };
        let n = {
            let mut log = log.lock().unwrap();
            log.push(request);
            log.len() - 1
        };
        let _ = write_reply(&mut socket, &replies[n.min(replies.len() - 1)]).await;
    }

    async fn read_request(socket: &mut TcpStream) -> Option<Received> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_len = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_len].to_vec()).ok()?;
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_len + len {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(Received {
            method,
            path,
            headers,
            body: buf[head_len..head_len + len].to_vec(),
        })
    }

    async fn write_reply(socket: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
        match reply {
            Reply::Whole {
                status,
                content_type,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} Scripted\r\nContent-Type: {content_type}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(body.as_bytes()).await?;
                socket.shutdown().await
            }
            Reply::Stream { pieces, abrupt } => {
                socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    )
                    .await?;
                for piece in pieces {
                    match piece {
                        Piece::Bytes(bytes) => {
                            let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
                            frame.extend_from_slice(bytes);
                            frame.extend_from_slice(b"\r\n");
                            socket.write_all(&frame).await?;
                            socket.flush().await?;
                        }
                        Piece::AwaitText(notify, flag) => {
                            let waited =
                                tokio::time::timeout(Duration::from_secs(5), notify.notified());
                            if waited.await.is_ok() {
                                flag.store(true, Ordering::SeqCst);
                            }
                        }
                        Piece::Hold => {
                            let mut buf = [0u8; 256];
                            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                            return Ok(());
                        }
                    }
                }
                if *abrupt {
                    socket.write_all(b"40\r\ncut short").await?;
                } else {
                    socket.write_all(b"0\r\n\r\n").await?;
                }
                socket.shutdown().await
            }
            Reply::Silent => {
                let mut buf = [0u8; 256];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                Ok(())
            }
        }
    }

    // ---- Helpers -----------------------------------------------------------------------

    fn json_reply(status: u16, body: Value) -> Reply {
        Reply::Whole {
            status,
            content_type: "application/json",
            headers: vec![],
            body: body.to_string(),
        }
    }

    /// `bytes` as pieces of `n` bytes (splitting UTF-8 characters and `\r\n` pairs).
    fn pieces(bytes: &[u8], n: usize) -> Vec<Piece> {
        bytes.chunks(n).map(|c| Piece::Bytes(c.to_vec())).collect()
    }

    fn stream(body: &str, n: usize) -> Reply {
        Reply::Stream {
            pieces: pieces(body.as_bytes(), n),
            abrupt: false,
        }
    }

    /// Events as `data:` lines, then `[DONE]`.
    fn sse(events: &[Value]) -> String {
        let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        body.push_str("data: [DONE]\n\n");
        body
    }

    fn text_event(text: &str) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    }

    fn finish_event(reason: &str) -> Value {
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
    }

    fn simple_stream() -> Reply {
        stream(&sse(&[text_event("ok"), finish_event("stop")]), 64)
    }

    fn config(server: &Server) -> UpstreamConfig {
        UpstreamConfig {
            api_key: Some(KEY.to_string()),
            initial_backoff: Duration::from_millis(1),
            request_timeout: Duration::from_secs(10),
            ..UpstreamConfig::new(&server.base)
        }
    }

    fn upstream(server: &Server) -> Upstream {
        Upstream::new(config(server)).unwrap()
    }

    fn chat(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: "test-model".into(),
            messages,
            tools: vec![],
            code_tool: None,
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            temperature: None,
            top_p: None,
            max_tokens: None,
            response_format: None,
        }
    }

    fn hello() -> ChatRequest {
        chat(vec![ChatMessage::new(Role::User, "Hello?")])
    }

    /// Completes `req`, returning the result and the pieces of text passed to `on_text`.
    async fn run(
        up: &Upstream,
        req: ChatRequest,
    ) -> (Result<ChatResponse, BackendError>, Vec<String>) {
        let seen = Mutex::new(Vec::new());
        let sink = |t: &str| seen.lock().unwrap().push(t.to_string());
        let result = up.complete_text(req, &sink).await;
        (result, seen.into_inner().unwrap())
    }

    // ---- (1) streamed text -------------------------------------------------------------

    #[tokio::test]
    async fn streamed_text_arrives_in_order_with_reported_usage() {
        let deltas = ["Hel", "lo, w", "örld! ", "🌍 Ün", "ïcode", "."];
        let event = |v: &Value| format!("data: {v}\r\n\r\n");
        let first = format!(
            ": keep-alive\r\n\r\nevent: message\r\nid: 1\r\nretry: 1000\r\n{}",
            event(&text_event(deltas[0]))
        );
        let mut rest: String = deltas[1..].iter().map(|d| event(&text_event(d))).collect();
        rest.push_str(": ping\r\n\r\n");
        rest.push_str(&event(&finish_event("stop")));
        rest.push_str(&event(&json!({
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
        })));
        rest.push_str("data: [DONE]\r\n\r\n");

        // The server sends the rest only once the first text has reached `on_text`.
        let notify = Arc::new(Notify::new());
        let streamed = Arc::new(AtomicBool::new(false));
        let mut script = pieces(first.as_bytes(), 3);
        script.push(Piece::AwaitText(notify.clone(), streamed.clone()));
        script.extend(pieces(rest.as_bytes(), 3));
        let server = Server::start(vec![Reply::Stream {
            pieces: script,
            abrupt: false,
        }])
        .await;

        let up = upstream(&server);
        let seen = Mutex::new(Vec::new());
        let sink = |t: &str| {
            seen.lock().unwrap().push(t.to_string());
            notify.notify_one();
        };
        let answer = up.complete_text(hello(), &sink).await.unwrap();
        let seen = seen.into_inner().unwrap();

        assert!(
            streamed.load(Ordering::SeqCst),
            "text was not passed on as it arrived"
        );
        assert_eq!(seen, deltas);
        assert_eq!(answer.text, deltas.concat());
        assert_eq!(answer.text, "Hello, wörld! 🌍 Ünïcode.");
        assert!(answer.tool_calls.is_empty());
        assert_eq!(answer.finish, FinishReason::Stop);
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 7
            }
        );
        assert_eq!(server.received().len(), 1);
    }

    // ---- (2) parallel tool calls -------------------------------------------------------

    /// `s` in pieces of `n` characters.
    fn char_pieces(s: &str, n: usize) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        chars.chunks(n).map(|c| c.iter().collect()).collect()
    }

    fn call_event(calls: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}]})
    }

    #[tokio::test]
    async fn interleaved_parallel_tool_calls_are_assembled() {
        let args_a = r#"{"city": "Paris, France", "unit": "celsius"}"#;
        let args_b = r#"{"timezone": "Europe/Paris", "format": "24h ünïcode \"quoted\""}"#;
        let mut events = vec![
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null,
                "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                "function": {"name": "get_weather", "arguments": ""}}]},
                "finish_reason": null}]}),
            call_event(json!([{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "get_time", "arguments": ""}}])),
        ];
        let (frags_a, frags_b) = (char_pieces(args_a, 3), char_pieces(args_b, 4));
        for i in 0..frags_a.len().max(frags_b.len()) {
            let a = frags_a.get(i).map(|f| {
                let mut frag = json!({"index": 0, "function": {"arguments": f}});
                if i == 2 {
                    frag["id"] = json!("call_a"); // sent again
                }
                frag
            });
            let b = frags_b.get(i).map(|f| {
                let mut frag = json!({"index": 1, "function": {"arguments": f}});
                if i == 3 {
                    frag["id"] = json!("call_other"); // a different id: the first one stays
                }
                frag
            });
            match (a, b) {
                // Both calls' fragments in one delta, the second call first.
                (Some(a), Some(b)) if i == 5 => events.push(call_event(json!([b, a]))),
                (a, b) => {
                    events.extend(b.map(|b| call_event(json!([b]))));
                    events.extend(a.map(|a| call_event(json!([a]))));
                }
            }
        }
        events.push(finish_event("tool_calls"));
        let server = Server::start(vec![stream(&sse(&events), 7)]).await;
        let question = "What's the weather and the time in Paris?";
        let req = chat(vec![ChatMessage::new(Role::User, question)]);

        let (answer, seen) = run(&upstream(&server), req).await;
        let answer = answer.unwrap();

        assert_eq!(
            answer.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "get_weather".into(),
                    arguments: args_a.into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "get_time".into(),
                    arguments: args_b.into()
                },
            ]
        );
        assert_eq!(answer.finish, FinishReason::ToolCalls);
        assert_eq!(answer.text, "");
        assert!(seen.is_empty());
        // No usage reported: estimated.
        let completion = estimate_tokens("get_weather")
            + estimate_tokens(args_a)
            + estimate_tokens("get_time")
            + estimate_tokens(args_b);
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: estimate_tokens(question),
                completion_tokens: completion
            }
        );
    }

    // ---- (3) the request ---------------------------------------------------------------

    #[tokio::test]
    async fn the_request_has_openais_shape() {
        let server = Server::start(vec![simple_stream()]).await;
        let cfg = UpstreamConfig {
            base_url: format!("{}/", server.base), // a trailing slash
            ..config(&server)
        };
        let up = Upstream::new(cfg).unwrap();
        let code_args = r#"{"code":"1+1"}"#;
        let params = json!({"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]});
        let req = ChatRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![
                ChatMessage::new(Role::System, "You are helpful."),
                ChatMessage::new(Role::User, "What is 1+1?"),
                ChatMessage {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "python".into(),
                        arguments: code_args.into(),
                    }],
                    tool_call_id: None,
                    images: vec![],
                },
                ChatMessage::tool_result("call_1", r#"{"status":"completed","logs":"2"}"#),
                ChatMessage::new(Role::Assistant, "It is 2."),
                ChatMessage {
                    images: vec![
                        crate::backend::ImagePart {
                            url: "https://example.test/sky.png".into(),
                            detail: Some("low".into()),
                        },
                        crate::backend::ImagePart {
                            url: "data:image/png;base64,iVBORw0KGgo=".into(),
                            detail: None,
                        },
                    ],
                    ..ChatMessage::new(Role::User, "And the weather?")
                },
            ],
            tools: vec![
                FunctionSpec {
                    name: "python".into(),
                    description: Some("Runs Python.".into()),
                    parameters: json!({"type": "object"}),
                    strict: None,
                },
                FunctionSpec {
                    name: "get_weather".into(),
                    description: None,
                    parameters: params.clone(),
                    strict: Some(true),
                },
            ],
            code_tool: Some("python".into()),
            tool_choice: ToolChoice::Function("get_weather".into()),
            parallel_tool_calls: false,
            temperature: Some(0.5),
            top_p: Some(0.25),
            max_tokens: Some(256),
            response_format: Some(json!({"type": "json_object"})),
        };

        let (answer, _) = run(&up, req).await;
        assert_eq!(answer.unwrap().text, "ok");

        let received = server.received();
        assert_eq!(received.len(), 1);
        let request = &received[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let expected = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "What is 1+1?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "python", "arguments": code_args}}]},
                {"role": "tool", "tool_call_id": "call_1",
                 "content": r#"{"status":"completed","logs":"2"}"#},
                {"role": "assistant", "content": "It is 2."},
                {"role": "user", "content": [
                    {"type": "text", "text": "And the weather?"},
                    {"type": "image_url", "image_url": {"url": "https://example.test/sky.png", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
            ],
            "tools": [
                {"type": "function", "function": {"name": "python",
                    "description": "Runs Python.", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "get_weather",
                    "parameters": params, "strict": true}},
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "temperature": 0.5,
            "top_p": 0.25,
            "max_tokens": 256,
            "response_format": {"type": "json_object"},
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        assert_eq!(request.json(), expected);
    }

    #[tokio::test]
    async fn a_plain_request_has_no_tool_fields_and_no_key() {
        let server = Server::start(vec![simple_stream()]).await;
        let up = Upstream::new(UpstreamConfig::new(&server.base)).unwrap();
        let mut req = hello();
        req.tool_choice = ToolChoice::Required; // no tools: not sent

        run(&up, req).await.0.unwrap();

        let request = &server.received()[0];
        assert_eq!(request.header("authorization"), None);
        assert_eq!(
            request.json(),
            json!({
                "model": "test-model",
                "messages": [{"role": "user", "content": "Hello?"}],
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn tool_choice_is_sent_only_when_not_auto() {
        let mut req = hello();
        req.tools = vec![FunctionSpec {
            name: "f".into(),
            description: None,
            parameters: json!({}),
            strict: None,
        }];
        let body = request_body(&req);
        assert_eq!(body.get("tool_choice"), None);
        assert_eq!(body["parallel_tool_calls"], json!(true));
        req.tool_choice = ToolChoice::None;
        assert_eq!(request_body(&req)["tool_choice"], json!("none"));
        req.tool_choice = ToolChoice::Required;
        assert_eq!(request_body(&req)["tool_choice"], json!("required"));
    }

    // ---- (4) retries and errors --------------------------------------------------------

    fn openai_error(message: &str) -> Value {
        json!({"error": {"message": message, "type": "invalid_request_error",
                         "param": null, "code": null}})
    }

    #[tokio::test]
    async fn rate_limits_are_retried_until_success() {
        let limited = json_reply(429, openai_error("Rate limit reached"));
        let server = Server::start(vec![limited.clone(), limited, simple_stream()]).await;

        let (answer, seen) = run(&upstream(&server), hello()).await;

        assert_eq!(answer.unwrap().text, "ok");
        assert_eq!(seen, ["ok"]);
        assert_eq!(server.received().len(), 3);
    }

    #[tokio::test]
    async fn endless_rate_limits_give_rate_limited() {
        let server = Server::start(vec![json_reply(429, openai_error("Rate limit reached"))]).await;
        let cfg = UpstreamConfig {
            max_retries: 2,
            ..config(&server)
        };

        let (answer, _) = run(&Upstream::new(cfg).unwrap(), hello()).await;

        match answer {
            Err(BackendError::RateLimited(msg)) => {
                assert!(msg.contains("Rate limit reached"), "{msg}");
                assert!(msg.contains("3 attempts"), "{msg}");
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert_eq!(server.received().len(), 3);
    }

    #[tokio::test]
    async fn endless_server_errors_give_server_error() {
        let server = Server::start(vec![Reply::Whole {
            status: 500,
            content_type: "text/plain",
            headers: vec![],
            body: "Internal   Server\nError".into(),
        }])
        .await;

        let (answer, _) = run(&upstream(&server), hello()).await;

        match answer {
            Err(BackendError::Server(msg)) => {
                assert!(msg.contains("500"), "{msg}");
                assert!(msg.contains("Internal Server Error"), "{msg}");
            }
            other => panic!("expected Server, got {other:?}"),
        }
        assert_eq!(server.received().len(), 4); // 1 + max_retries
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_prompts_and_not_retried() {
        let upstream_msg = "This model's maximum context length is 4096 tokens.";
        let server = Server::start(vec![json_reply(400, openai_error(upstream_msg))]).await;

        let (answer, seen) = run(&upstream(&server), hello()).await;

        match answer {
            Err(BackendError::InvalidPrompt(msg)) => assert!(msg.contains(upstream_msg), "{msg}"),
            other => panic!("expected InvalidPrompt, got {other:?}"),
        }
        assert!(seen.is_empty());
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn vllm_style_errors_are_quoted_and_truncated() {
        let long = "x".repeat(2000);
        let server = Server::start(vec![
            json_reply(
                404,
                json!({"object": "error", "message": "The model `nope` does not exist.",
                       "type": "NotFoundError", "code": 404}),
            ),
            json_reply(422, openai_error(&long)),
        ])
        .await;
        let up = upstream(&server);

        let (first, _) = run(&up, hello()).await;
        let (second, _) = run(&up, hello()).await;

        assert_eq!(
            first,
            Err(BackendError::InvalidPrompt(
                "the upstream model server refused the request (HTTP 404 Not Found): \
                 The model `nope` does not exist."
                    .into()
            ))
        );
        let Err(BackendError::InvalidPrompt(msg)) = second else {
            panic!("expected InvalidPrompt, got {second:?}");
        };
        assert!(msg.contains(&"x".repeat(500)), "{msg}");
        assert!(!msg.contains(&"x".repeat(501)), "{msg}");
        assert!(msg.ends_with('…'), "{msg}");
    }

    #[tokio::test]
    async fn rejected_credentials_are_a_server_error_without_the_key() {
        let echo = format!("Incorrect API key provided: {KEY}.");
        let server = Server::start(vec![json_reply(401, openai_error(&echo))]).await;

        let (answer, _) = run(&upstream(&server), hello()).await;

        let Err(BackendError::Server(msg)) = answer else {
            panic!("expected Server, got {answer:?}");
        };
        assert!(msg.contains("credentials"), "{msg}");
        assert!(msg.contains("Incorrect API key provided"), "{msg}");
        assert!(!msg.contains(KEY), "the key leaked: {msg}");
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let server = Server::start(vec![
            Reply::Whole {
                status: 503,
                content_type: "application/json",
                headers: vec![("Retry-After", "0")],
                body: openai_error("overloaded").to_string(),
            },
            simple_stream(),
        ])
        .await;
        // Without Retry-After the first retry would wait a minute.
        let cfg = UpstreamConfig {
            initial_backoff: Duration::from_secs(60),
            ..config(&server)
        };

        let up = Upstream::new(cfg).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), run(&up, hello()))
            .await
            .expect("Retry-After: 0 was not honoured");

        assert_eq!(answer.0.unwrap().text, "ok");
        assert_eq!(server.received().len(), 2);
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_a_server_error() {
        let server = Server::start(vec![Reply::Silent]).await;
        let cfg = UpstreamConfig {
            max_retries: 1,
            request_timeout: Duration::from_millis(150),
            ..config(&server)
        };

        let (answer, _) = run(&Upstream::new(cfg).unwrap(), hello()).await;

        let Err(BackendError::Server(msg)) = answer else {
            panic!("expected Server, got {answer:?}");
        };
        assert!(msg.contains("did not answer within"), "{msg}");
        assert_eq!(server.received().len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_server_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let cfg = UpstreamConfig {
            max_retries: 1,
            initial_backoff: Duration::from_millis(1),
            ..UpstreamConfig::new(format!("http://{addr}/v1"))
        };

        let (answer, _) = run(&Upstream::new(cfg).unwrap(), hello()).await;

        let Err(BackendError::Server(msg)) = answer else {
            panic!("expected Server, got {answer:?}");
        };
        assert!(msg.contains("could not connect"), "{msg}");
        assert!(msg.contains("2 attempts"), "{msg}");
    }

    // ---- (5) broken streams ------------------------------------------------------------

    #[tokio::test]
    async fn a_stream_ending_before_done_is_a_server_error_and_not_retried() {
        let body: String = ["data: ", &text_event("Partial ").to_string(), "\n\n"].concat();
        let server = Server::start(vec![stream(&body, 5), simple_stream()]).await;

        let (answer, seen) = run(&upstream(&server), hello()).await;

        let Err(BackendError::Server(msg)) = answer else {
            panic!("expected Server, got {answer:?}");
        };
        assert!(msg.contains("ended before"), "{msg}");
        assert_eq!(seen, ["Partial "]);
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn a_connection_cut_mid_stream_is_a_server_error() {
        let body: String = ["data: ", &text_event("Partial ").to_string(), "\n\n"].concat();
        let server = Server::start(vec![
            Reply::Stream {
                pieces: pieces(body.as_bytes(), 5),
                abrupt: true,
            },
            simple_stream(),
        ])
        .await;

        let (answer, seen) = run(&upstream(&server), hello()).await;

        let Err(BackendError::Server(msg)) = answer else {
            panic!("expected Server, got {answer:?}");
        };
        assert!(msg.contains("broke off"), "{msg}");
        assert_eq!(seen, ["Partial "]);
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn reading_stops_at_done_even_if_the_connection_stays_open() {
        let mut script = pieces(sse(&[text_event("Hi"), finish_event("stop")]).as_bytes(), 9);
        script.push(Piece::Bytes(b"data: {not json\n\n".to_vec()));
        script.push(Piece::Hold);
        let server = Server::start(vec![Reply::Stream {
            pieces: script,
            abrupt: false,
        }])
        .await;

        let up = upstream(&server);
        let (answer, _) = tokio::time::timeout(Duration::from_secs(5), run(&up, hello()))
            .await
            .expect("the client waited past [DONE]");

        assert_eq!(answer.unwrap().text, "Hi");
    }

    #[tokio::test]
    async fn a_cut_after_the_finish_reason_still_counts() {
        let body: String = [text_event("Done."), finish_event("stop")]
            .iter()
            .map(|e| format!("data: {e}\n\n"))
            .collect();
        let server = Server::start(vec![Reply::Stream {
            pieces: pieces(body.as_bytes(), 16),
            abrupt: true,
        }])
        .await;

        let answer = run(&upstream(&server), hello()).await.0.unwrap();

        assert_eq!(answer.text, "Done.");
        assert_eq!(answer.finish, FinishReason::Stop);
        assert_eq!(server.received().len(), 1);
    }

    #[tokio::test]
    async fn a_finish_reason_without_done_is_enough() {
        let body: String = [text_event("Done."), finish_event("length")]
            .iter()
            .map(|e| format!("data: {e}\n\n"))
            .collect();
        let server = Server::start(vec![stream(&body, 16)]).await;

        let answer = run(&upstream(&server), hello()).await.0.unwrap();

        assert_eq!(answer.text, "Done.");
        assert_eq!(answer.finish, FinishReason::Length);
    }

    #[tokio::test]
    async fn errors_and_garbage_in_the_stream_are_server_errors() {
        let server = Server::start(vec![
            stream(
                &sse(&[
                    text_event("A"),
                    json!({"error": {"message": "GPU fell over"}}),
                ]),
                64,
            ),
            stream("data: {\"choices\": [\n\n", 64),
        ])
        .await;
        let up = upstream(&server);

        let (first, _) = run(&up, hello()).await;
        let (second, _) = run(&up, hello()).await;

        let Err(BackendError::Server(msg)) = first else {
            panic!("expected Server, got {first:?}");
        };
        assert!(msg.contains("GPU fell over"), "{msg}");
        let Err(BackendError::Server(msg)) = second else {
            panic!("expected Server, got {second:?}");
        };
        assert!(msg.contains("malformed"), "{msg}");
    }

    // ---- (6) non-streamed answers ------------------------------------------------------

    #[tokio::test]
    async fn a_non_streamed_answer_is_understood() {
        let server = Server::start(vec![
            json_reply(
                200,
                json!({
                    "id": "chatcmpl-9", "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": "Let me look.",
                        "tool_calls": [{"id": "call_x", "type": "function",
                            "function": {"name": "lookup", "arguments": "{\"q\":\"rust\"}"}}]}}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
                }),
            ),
            json_reply(
                200,
                json!({"choices": [{"message": {"role": "assistant", "content": "Hi there."},
                                    "finish_reason": "stop"}]}),
            ),
        ])
        .await;
        let up = upstream(&server);

        let (first, seen) = run(&up, hello()).await;
        let first = first.unwrap();
        assert_eq!(seen, ["Let me look."]);
        assert_eq!(first.text, "Let me look.");
        assert_eq!(
            first.tool_calls,
            vec![ToolCall {
                id: "call_x".into(),
                name: "lookup".into(),
                arguments: r#"{"q":"rust"}"#.into()
            }]
        );
        assert_eq!(first.finish, FinishReason::ToolCalls);
        assert_eq!(
            first.usage,
            Usage {
                prompt_tokens: 20,
                completion_tokens: 5
            }
        );

        let (second, seen) = run(&up, hello()).await;
        let second = second.unwrap();
        assert_eq!(seen, ["Hi there."]);
        assert_eq!(second.finish, FinishReason::Stop);
        assert_eq!(
            second.usage,
            Usage {
                prompt_tokens: estimate_tokens("Hello?"),
                completion_tokens: estimate_tokens("Hi there.")
            }
        );
    }

    // ---- (7) models --------------------------------------------------------------------

    #[tokio::test]
    async fn models_come_from_the_allow_list_or_the_server() {
        let server = Server::start(vec![json_reply(
            200,
            json!({"object": "list", "data": [
                {"id": "gpt-4o", "object": "model", "owned_by": "openai"},
                {"id": "llama3.1:8b", "object": "model"}]}),
        )])
        .await;
        let listed = UpstreamConfig {
            models: Some(vec!["a".into(), "b".into()]),
            ..config(&server)
        };

        let up = Upstream::new(listed).unwrap();
        assert_eq!(up.models().await.unwrap(), ["a", "b"]);
        assert!(server.received().is_empty());

        let up = upstream(&server);
        assert_eq!(up.models().await.unwrap(), ["gpt-4o", "llama3.1:8b"]);
        let received = server.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].method, "GET");
        assert_eq!(received[0].path, "/v1/models");
        assert_eq!(
            received[0].header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
    }

    #[tokio::test]
    async fn model_list_errors_are_mapped() {
        let server = Server::start(vec![
            json_reply(503, openai_error("warming up")),
            json_reply(200, json!({"unexpected": true})),
        ])
        .await;
        let up = upstream(&server);

        let first = up.models().await;
        let second = up.models().await;

        assert!(
            matches!(&first, Err(BackendError::Server(m)) if m.contains("warming up")),
            "{first:?}"
        );
        assert!(
            matches!(&second, Err(BackendError::Server(m)) if m.contains("not understood")),
            "{second:?}"
        );
    }

    // ---- Units -------------------------------------------------------------------------

    fn parse_all(bytes: &[u8], step: usize) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(step) {
            parser.feed(piece, &mut out).unwrap();
        }
        parser.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn sse_parsing_does_not_depend_on_how_bytes_arrive() {
        let stream = "retry: 10\n: comment\ndata: one\n\n\
                      data:two\r\n\r\n\
                      event: x\rdata: three\rdata: 3b\r\r\
                      id: 7\n\n\
                      data: four ü\r\n\r\n\
                      data: five";
        let expected = ["one", "two", "three\n3b", "four ü", "five"];
        for step in [1, 2, 3, 5, 8, stream.len()] {
            assert_eq!(parse_all(stream.as_bytes(), step), expected, "step {step}");
        }
    }

    #[test]
    fn sse_rejects_invalid_utf8() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"data: \xff\xfe\n\n", &mut Vec::new()).is_err());
    }

    fn assemble(events: &[Value]) -> Result<ChatResponse, BackendError> {
        let mut answer = Assembler::default();
        for event in events {
            answer.apply_event(&event.to_string(), &|_| {})?;
        }
        answer.finish(&[])
    }

    #[test]
    fn a_call_without_index_or_id_is_assembled_with_a_fresh_id() {
        let answer = assemble(&[
            call_event(json!([{"function": {"name": "f", "arguments": "{\"a\""}}])),
            call_event(json!([{"function": {"arguments": ": 1}"}}])),
        ])
        .unwrap();
        let [call] = &answer.tool_calls[..] else {
            panic!("{answer:?}");
        };
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("f", "{\"a\": 1}")
        );
        let tail = call.id.strip_prefix("call_").unwrap();
        assert_eq!(tail.len(), 24);
        assert!(tail.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(answer.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn whole_calls_in_one_chunk_are_taken_as_they_are() {
        let answer = assemble(&[
            call_event(json!([
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"x": 1}}},
                {"id": "c3", "type": "function", "function": {"name": "h"}},
            ])),
            finish_event("stop"),
        ])
        .unwrap();
        let calls: Vec<_> = answer
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("c1", "f", "{}"),
                ("c2", "g", r#"{"x":1}"#),
                ("c3", "h", "{}")
            ]
        );
        assert_eq!(answer.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn legacy_function_calls_are_tool_calls() {
        let delta = |f: Value| json!({"choices": [{"delta": {"function_call": f}}]});
        let answer = assemble(&[
            delta(json!({"name": "f", "arguments": "{\"a\":"})),
            delta(json!({"arguments": "2}"})),
            finish_event("function_call"),
        ])
        .unwrap();
        assert_eq!(answer.tool_calls.len(), 1);
        assert_eq!(answer.tool_calls[0].arguments, r#"{"a":2}"#);
        assert_eq!(answer.finish, FinishReason::ToolCalls);
    }

    #[test]
    fn a_call_without_a_name_is_an_error() {
        let result = assemble(&[call_event(
            json!([{"index": 0, "function": {"arguments": "{}"}}]),
        )]);
        assert!(matches!(result, Err(BackendError::Server(_))), "{result:?}");
    }

    #[test]
    fn finish_reasons_are_mapped() {
        for (reason, expected) in [
            ("stop", FinishReason::Stop),
            ("length", FinishReason::Length),
            ("content_filter", FinishReason::ContentFilter),
            ("tool_calls", FinishReason::Stop), // but no call came
            ("eos", FinishReason::Stop),
        ] {
            let answer = assemble(&[text_event("x"), finish_event(reason)]).unwrap();
            assert_eq!(answer.finish, expected, "{reason}");
        }
        assert_eq!(
            assemble(&[text_event("x")]).unwrap().finish,
            FinishReason::Stop
        );
    }

    #[test]
    fn partly_reported_usage_is_completed_by_estimates() {
        let answer = assemble(&[
            text_event("abcdefgh"),
            json!({"choices": [], "usage": {"prompt_tokens": 3}}),
        ])
        .unwrap();
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            }
        );
    }

    #[test]
    fn config_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(UpstreamConfig::from_lookup(env(&[])), None);
        assert_eq!(
            UpstreamConfig::from_lookup(env(&[("OASIS_UPSTREAM_BASE_URL", " ")])),
            None
        );
        let cfg = UpstreamConfig::from_lookup(env(&[
            ("OASIS_UPSTREAM_BASE_URL", "http://gpu:8000/v1/"),
            ("OASIS_UPSTREAM_API_KEY", "k"),
            ("OASIS_UPSTREAM_MODELS", " llama , qwen,,"),
        ]))
        .unwrap();
        assert_eq!(cfg.base_url, "http://gpu:8000/v1/");
        assert_eq!(cfg.api_key.as_deref(), Some("k"));
        assert_eq!(cfg.models, Some(vec!["llama".into(), "qwen".into()]));
        assert_eq!(cfg.max_retries, 3);
        assert_eq!(cfg.initial_backoff, Duration::from_millis(500));
        assert_eq!(cfg.request_timeout, Duration::from_secs(300));
        let bare = UpstreamConfig::from_lookup(env(&[
            ("OASIS_UPSTREAM_BASE_URL", "http://gpu:8000/v1"),
            ("OASIS_UPSTREAM_API_KEY", ""),
            ("OASIS_UPSTREAM_MODELS", ","),
        ]))
        .unwrap();
        assert_eq!((bare.api_key, bare.models), (None, None));
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let cfg = UpstreamConfig {
            api_key: Some(KEY.into()),
            ..UpstreamConfig::new("http://h/v1")
        };
        let up = Upstream::new(cfg.clone()).unwrap();
        for shown in [format!("{cfg:?}"), format!("{up:?}")] {
            assert!(!shown.contains(KEY), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn serves_follows_the_allow_list() {
        let open = Upstream::new(UpstreamConfig::new("http://h/v1")).unwrap();
        assert!(open.serves("anything"));
        let listed = Upstream::new(UpstreamConfig {
            models: Some(vec!["llama".into()]),
            ..UpstreamConfig::new("http://h/v1")
        })
        .unwrap();
        assert!(listed.serves("llama"));
        assert!(!listed.serves("gpt-4o"));
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert!(Upstream::new(UpstreamConfig::new("not a url")).is_err());
        assert!(Upstream::new(UpstreamConfig::new("ftp://h/v1")).is_err());
    }

    #[test]
    fn backoff_doubles_and_retry_after_wins_within_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(retry_delay(ms(500), 0, None), ms(500));
        assert_eq!(retry_delay(ms(500), 2, None), ms(2000));
        assert_eq!(retry_delay(ms(500), 40, None), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(ms(500), 0, Some(ms(7))), ms(7));

        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, v.parse().unwrap());
            }
            map
        };
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(ms(2000))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3600")])),
            Some(MAX_RETRY_DELAY)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250")])),
            Some(ms(250))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            None
        );
    }
}
