//! What goes wrong with an upstream, as [`BackendError`]s that say so plainly; retry timing.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;

use crate::backend::BackendError;

/// The longest wait between two attempts, whatever `Retry-After` asks for.
pub(super) const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// How much of an upstream's error message an error quotes.
const MAX_DETAIL_CHARS: usize = 500;
/// How much of an error response's body is read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

pub(super) fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The error for an HTTP error status; `detail` is the upstream's own message (maybe empty).
pub(super) fn status_error(status: StatusCode, detail: &str, attempts: u32) -> BackendError {
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

pub(super) fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" ({attempts} attempts)")
    } else {
        String::new()
    }
}

pub(super) fn malformed(what: impl std::fmt::Display) -> BackendError {
    BackendError::Server(format!(
        "the upstream model server sent a malformed stream: {what}"
    ))
}

pub(super) use crate::outbound::error_chain;

/// The upstream's message from an error response: `error.message` (OpenAI), `error` or
/// `message`/`detail` (vLLM, FastAPI), else the body's text; at most 500 characters.
pub(super) async fn error_detail(mut resp: reqwest::Response) -> String {
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
pub(super) fn detail_of(value: &Value) -> String {
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
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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
pub(super) fn retry_delay(
    initial: Duration,
    retry: u32,
    retry_after: Option<Duration>,
) -> Duration {
    retry_after
        .unwrap_or_else(|| initial.saturating_mul(2u32.saturating_pow(retry)))
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

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
