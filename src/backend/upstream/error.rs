//! What goes wrong with an upstream, as [`BackendError`]s that say so plainly; retry timing.

use std::time::Duration;

use reqwest::StatusCode;

use crate::backend::BackendError;

pub(super) use crate::outbound::retryable_status;

/// The error for an HTTP error status; `detail` is the upstream's own message (maybe empty).
pub(super) fn status_error(status: StatusCode, detail: &str, attempts: u32) -> BackendError {
    let (tries, detail) = crate::outbound::status_suffixes(detail, attempts);
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

pub(super) use crate::outbound::{
    MAX_RETRY_DELAY, detail_of, error_chain, error_detail, retry_after,
};

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
    use reqwest::header::HeaderMap;

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
