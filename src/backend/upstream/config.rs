//! Where and how to reach the upstream, from `OASIS_UPSTREAM_*`.

use std::fmt;
use std::time::Duration;

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
    /// Whether an answer whose whole text is a tool call written as JSON (bare, in a ```` ```json
    /// ```` fence or in `<tool_call>` tags), as small local models often write them, is taken
    /// as that call (see `text_calls`).
    pub text_tool_calls: bool,
}

impl UpstreamConfig {
    /// Defaults: no key, no allow-list, 3 retries, 500 ms initial backoff, 300 s per attempt,
    /// tool calls written as text recovered.
    pub fn new(base_url: impl Into<String>) -> UpstreamConfig {
        UpstreamConfig {
            base_url: base_url.into(),
            api_key: None,
            models: None,
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(300),
            text_tool_calls: true,
        }
    }

    /// Reads `OASIS_UPSTREAM_BASE_URL` (required; `None` without it), `OASIS_UPSTREAM_API_KEY`,
    /// `OASIS_UPSTREAM_MODELS` (a comma-separated allow-list) and
    /// `OASIS_UPSTREAM_TEXT_TOOL_CALLS` (`off` disables the recovery of tool calls written as
    /// text).
    pub fn from_env() -> Option<UpstreamConfig> {
        UpstreamConfig::from_lookup(|name| std::env::var(name).ok())
    }

    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<UpstreamConfig> {
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
        if let Some(value) = non_empty("OASIS_UPSTREAM_TEXT_TOOL_CALLS") {
            cfg.text_tool_calls = !matches!(
                value.to_ascii_lowercase().as_str(),
                "off" | "false" | "0" | "no"
            );
        }
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
            .field("text_tool_calls", &self.text_tool_calls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(cfg.text_tool_calls);
        let bare = UpstreamConfig::from_lookup(env(&[
            ("OASIS_UPSTREAM_BASE_URL", "http://gpu:8000/v1"),
            ("OASIS_UPSTREAM_API_KEY", ""),
            ("OASIS_UPSTREAM_MODELS", ","),
        ]))
        .unwrap();
        assert_eq!((bare.api_key, bare.models), (None, None));
    }

    #[test]
    fn text_tool_calls_are_turned_off_by_off() {
        let with = |value: &'static str| {
            UpstreamConfig::from_lookup(move |name: &str| match name {
                "OASIS_UPSTREAM_BASE_URL" => Some("http://gpu:8000/v1".into()),
                "OASIS_UPSTREAM_TEXT_TOOL_CALLS" => Some(value.into()),
                _ => None,
            })
            .unwrap()
            .text_tool_calls
        };
        assert!(!with("off"));
        assert!(!with(" OFF "));
        assert!(!with("false"));
        assert!(with("on"));
        assert!(with(""));
    }
}
