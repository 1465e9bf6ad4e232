//! What Oasis's HTTP clients (the upstream model server, upstream embeddings) share.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use serde_json::Value;

/// The longest a server may ask a client to wait before retrying.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The most characters of an upstream's error message kept.
const MAX_DETAIL_CHARS: usize = 500;

/// The most bytes of an error answer read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// `e` and its sources, without the URL (which may hold credentials).
pub fn error_chain(e: &reqwest::Error) -> String {
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
pub async fn error_detail(mut resp: reqwest::Response) -> String {
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
pub fn detail_of(value: &Value) -> String {
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
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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

/// HTTP statuses worth another attempt (timeouts, rate limits, passing server trouble).
pub fn retryable_status(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The two endings of an HTTP error's message: `, N attempts` (if more than one) and
/// `: <detail>` (if the server said anything).
pub fn status_suffixes(detail: &str, attempts: u32) -> (String, String) {
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
    (tries, detail)
}
