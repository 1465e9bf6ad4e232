//! What operators watch: the metrics `GET /metrics` renders in Prometheus's text format.
//!
//! The rest of Oasis calls the small typed functions here (never the `metrics` macros itself),
//! so every metric has one name, one set of labels and one help text, all in this file.
//!
//! **Labels are bounded and secret-free:** a label never holds an API key, a URL, an id, a file
//! name or a raw path. HTTP requests are labelled by their axum route template
//! (`/v1/threads/{thread_id}/runs`, `unmatched` for no route) and a known method; upstream
//! requests by a model name from the configured allow-list (`other` for the rest, since without
//! a list any name a client sends reaches the upstream); statuses, kinds and states by their
//! fixed names.
//!
//! The recorder is installed once per process ([`install`]; servers started later in the same
//! process, as in the tests, share it). Before it is installed, recording does nothing.
//! Histograms are rendered as Prometheus histograms with [`BUCKETS`] (not as summaries), so that
//! the nodes of a cluster can be added up.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{
    SharedString, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::RunStatus;

/// `{method, route, status}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "oasis_http_requests_total";
/// `{method, route, status}`: from a request's arrival to its answer's head.
pub const HTTP_DURATION: &str = "oasis_http_request_duration_seconds";
/// `{status}`: runs that reached a terminal status.
pub const RUNS_ENDED: &str = "oasis_runs_ended_total";
/// `{status}`: from a run's creation to its terminal status.
pub const RUN_DURATION: &str = "oasis_run_duration_seconds";
/// Runs a node took from the queue.
pub const RUNS_CLAIMED: &str = "oasis_runs_claimed_total";
/// How long a run waited in the queue before a node took it.
pub const RUN_QUEUE_WAIT: &str = "oasis_run_queue_wait_seconds";
/// Runs waiting in the queue.
pub const RUN_QUEUE_DEPTH: &str = "oasis_run_queue_depth";
/// How long a code-interpreter call waited for its session and a place in the pool.
pub const SANDBOX_WAIT: &str = "oasis_sandbox_wait_seconds";
/// `{state}` (`live`, `hibernated`): code-interpreter sessions on this node.
pub const SANDBOX_SESSIONS: &str = "oasis_sandbox_sessions";
/// How long a session's lease took to pass from one node to another.
pub const LEASE_HANDOVER: &str = "oasis_session_lease_handover_seconds";
/// `{model, outcome}`: chat completions asked of the upstream model server.
pub const UPSTREAM_REQUESTS: &str = "oasis_upstream_requests_total";
/// `{model, outcome}`: a chat completion from its request to its answer's end (retries included).
pub const UPSTREAM_DURATION: &str = "oasis_upstream_request_duration_seconds";
/// `{kind}` (`unavailable`, `other`): database failures answered to a client.
pub const STORE_ERRORS: &str = "oasis_store_errors_total";
/// `{op}`: failures of the object store.
pub const OBJECT_STORE_ERRORS: &str = "oasis_object_store_errors_total";
/// `{limit}` (`runs`, `sessions`, `storage`): what a project's limit refused (never by project:
/// labels stay bounded).
pub const LIMIT_REFUSALS: &str = "oasis_project_limit_refusals_total";

/// Histogram buckets, in seconds: from a fast HTTP answer to a long run.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

/// The `model` label of an upstream model that is not in the configured allow-list.
pub const OTHER_MODEL: &str = "other";

/// How often histogram samples are folded into their buckets when nobody scrapes (a scrape
/// does it too), so that they do not pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process's recorder (once; later calls return the same handle) and describe
/// every metric.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("BUCKETS is not empty");
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                // Another recorder was installed first (not by Oasis): render an empty one.
                tracing::warn!(error = %e, "could not install the metrics recorder");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the metrics upkeep thread");
        }
        handle
    })
}

/// Every metric in Prometheus's text format (version 0.0.4).
pub fn render() -> String {
    install().render()
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by method, route template and status class"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency to the answer's head (a stream's first byte), by method, route \
         template and status class"
    );
    describe_counter!(
        RUNS_ENDED,
        Unit::Count,
        "Runs that reached a terminal status, by status"
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Run time from creation to a terminal status, by status"
    );
    describe_counter!(
        RUNS_CLAIMED,
        Unit::Count,
        "Runs this node took from the queue"
    );
    describe_histogram!(
        RUN_QUEUE_WAIT,
        Unit::Seconds,
        "Time a run waited in the queue before a node took it"
    );
    describe_gauge!(RUN_QUEUE_DEPTH, Unit::Count, "Runs waiting in the queue");
    describe_histogram!(
        SANDBOX_WAIT,
        Unit::Seconds,
        "Time a code-interpreter call waited for its session and a place in the sandbox pool \
         (with sandbox workers: its time in the worker beyond its code's, resume included)"
    );
    describe_gauge!(
        SANDBOX_SESSIONS,
        Unit::Count,
        "Code-interpreter sessions on this node, by state (live, hibernated), as of the scrape"
    );
    describe_histogram!(
        LEASE_HANDOVER,
        Unit::Seconds,
        "Time a code-interpreter session's lease took to pass to another node"
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        Unit::Count,
        "Chat completions asked of the upstream model server, by model (allow-listed names, \
         else other) and outcome"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Upstream chat completion time, retries and the whole answer included, by model and \
         outcome"
    );
    describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Database failures answered to a client, by kind (unavailable, other)"
    );
    describe_counter!(
        OBJECT_STORE_ERRORS,
        Unit::Count,
        "Object store failures, by operation"
    );
    describe_counter!(
        LIMIT_REFUSALS,
        Unit::Count,
        "Runs, sessions and Files a project's limits refused, by limit (runs, sessions, storage)"
    );
}

/// An HTTP request was answered with `status` after `seconds`. `route` is the axum route
/// template it matched (`None`: no route did); `method` outside the usual ones counts as
/// `other`.
pub fn http_request(method: &str, route: Option<&str>, status: u16, seconds: f64) {
    let labels: [(&str, SharedString); 3] = [
        ("method", method_label(method).into()),
        ("route", route.unwrap_or("unmatched").to_owned().into()),
        ("status", status_class(status).into()),
    ];
    counter!(HTTP_REQUESTS, &labels).increment(1);
    ::metrics::histogram!(HTTP_DURATION, &labels).record(seconds);
}

fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// A run reached terminal `status`, `seconds` after it was created.
pub fn run_ended(status: RunStatus, seconds: f64) {
    let labels = [("status", run_status_label(status))];
    counter!(RUNS_ENDED, &labels).increment(1);
    ::metrics::histogram!(RUN_DURATION, &labels).record(seconds);
}

fn run_status_label(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "queued",
        RunStatus::InProgress => "in_progress",
        RunStatus::RequiresAction => "requires_action",
        RunStatus::Cancelling => "cancelling",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Failed => "failed",
        RunStatus::Completed => "completed",
        RunStatus::Incomplete => "incomplete",
        RunStatus::Expired => "expired",
    }
}

/// This node took a run from the queue, `wait_seconds` after it was queued.
pub fn run_claimed(wait_seconds: f64) {
    counter!(RUNS_CLAIMED).increment(1);
    ::metrics::histogram!(RUN_QUEUE_WAIT).record(wait_seconds);
}

/// `n` runs wait in the queue.
pub fn queue_depth(n: usize) {
    gauge!(RUN_QUEUE_DEPTH).set(n as f64);
}

/// A code-interpreter call waited `seconds` for its session and a place in the pool.
pub fn sandbox_wait(seconds: f64) {
    ::metrics::histogram!(SANDBOX_WAIT).record(seconds);
}

/// `live` sessions have an interpreter in memory, `hibernated` ones a saved state instead.
pub fn sessions(live: usize, hibernated: usize) {
    gauge!(SANDBOX_SESSIONS, "state" => "live").set(live as f64);
    gauge!(SANDBOX_SESSIONS, "state" => "hibernated").set(hibernated as f64);
}

/// A session's lease passed to this node `seconds` after it was asked for.
pub fn lease_handover(seconds: f64) {
    ::metrics::histogram!(LEASE_HANDOVER).record(seconds);
}

/// The label of upstream model `model`: itself when the configured allow-list names it,
/// [`OTHER_MODEL`] otherwise (without a list, any name a client writes would be a label).
pub fn model_label<'a>(model: &'a str, allowed: Option<&[String]>) -> &'a str {
    match allowed {
        Some(list) if list.iter().any(|m| m == model) => model,
        _ => OTHER_MODEL,
    }
}

/// A chat completion of `model` (a [`model_label`]) took `seconds` and succeeded or not.
pub fn upstream_request(model: &str, seconds: f64, ok: bool) {
    let labels: [(&str, SharedString); 2] = [
        ("model", model.to_owned().into()),
        ("outcome", if ok { "ok" } else { "error" }.into()),
    ];
    counter!(UPSTREAM_REQUESTS, &labels).increment(1);
    ::metrics::histogram!(UPSTREAM_DURATION, &labels).record(seconds);
}

/// The database failed (`kind`: `unavailable` or `other`).
pub fn store_error(kind: &'static str) {
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// The object store failed at `op` (a fixed name: `get`, `put`, `delete`, `list`, `head`, or
/// `any` where the operation is not known).
pub fn object_store_error(op: &'static str) {
    counter!(OBJECT_STORE_ERRORS, "op" => op).increment(1);
}

/// A project's limit refused something (`limit`: `runs`, `sessions` or `storage`).
pub fn limit_refused(limit: &'static str) {
    counter!(LIMIT_REFUSALS, "limit" => limit).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the typed calls record, rendered by a recorder of this test's own.
    fn rendered(record: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            record();
        });
        handle.render()
    }

    #[test]
    fn labels_hold_only_bounded_values() {
        let out = rendered(|| {
            http_request("BREW", None, 404, 0.01);
            http_request("POST", Some("/v1/threads/{thread_id}/runs"), 200, 0.2);
            let allowed = ["llama".to_string()];
            upstream_request(
                model_label("sk-secret-model-name", Some(&allowed)),
                1.0,
                false,
            );
            upstream_request(model_label("llama", Some(&allowed)), 1.0, true);
            upstream_request(model_label("llama", None), 1.0, true);
            limit_refused("storage");
            limit_refused("storage");
        });
        assert!(
            out.contains(r#"oasis_project_limit_refusals_total{limit="storage"} 2"#),
            "{out}"
        );
        assert!(
            out.contains(r#"method="other",route="unmatched",status="4xx""#),
            "{out}"
        );
        assert!(
            out.contains(r#"method="POST",route="/v1/threads/{thread_id}/runs",status="2xx""#),
            "{out}"
        );
        assert!(
            out.contains(r#"oasis_upstream_requests_total{model="other",outcome="error"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"oasis_upstream_requests_total{model="llama",outcome="ok"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"oasis_upstream_requests_total{model="other",outcome="ok"} 1"#),
            "{out}"
        );
        assert!(!out.contains("BREW") && !out.contains("sk-secret"), "{out}");
    }

    #[test]
    fn durations_are_histograms_with_help() {
        let out = rendered(|| {
            run_ended(RunStatus::Completed, 3.0);
            sessions(2, 5);
        });
        assert!(
            out.contains("# TYPE oasis_run_duration_seconds histogram"),
            "{out}"
        );
        assert!(
            out.contains("# HELP oasis_run_duration_seconds Run time"),
            "{out}"
        );
        assert!(
            out.contains(r#"oasis_run_duration_seconds_bucket{status="completed",le="5"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"oasis_runs_ended_total{status="completed"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"oasis_sandbox_sessions{state="hibernated"} 5"#),
            "{out}"
        );
    }

    #[test]
    fn every_status_has_its_wire_name() {
        for status in [
            RunStatus::Queued,
            RunStatus::InProgress,
            RunStatus::RequiresAction,
            RunStatus::Cancelling,
            RunStatus::Cancelled,
            RunStatus::Failed,
            RunStatus::Completed,
            RunStatus::Incomplete,
            RunStatus::Expired,
        ] {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                run_status_label(status)
            );
        }
    }
}
