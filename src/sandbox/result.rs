//! What one call into a session returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The code ran to the end.
    Ok,
    /// The code raised (traceback in `error` and stderr) or exited with a non-zero status.
    Error,
    /// The wall-clock deadline passed; the interpreter was replaced.
    Timeout,
    /// The memory cap was hit and the code failed because of it.
    MemoryLimit,
    /// Output went past a stream's cap and was truncated.
    OutputLimit,
    /// The interpreter trapped or died (or the worker process running it did); it was
    /// replaced.
    Crashed,
    /// The call was cancelled by the host; the interpreter was replaced.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::OutputLimit => "output_limit",
            Outcome::Crashed => "crashed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// A Python exception that ended the turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonError {
    pub name: String,
    pub message: String,
    pub traceback: String,
}

/// A file in `/mnt/data` that the call created or changed (found without following links).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Guest path, e.g. `/mnt/data/chart.png`.
    pub path: String,
    /// Path relative to `/mnt/data`, `/`-separated.
    pub relative: String,
    pub size: u64,
    pub sha256: String,
    /// New in this call (as opposed to modified).
    pub created: bool,
}

/// The typed result of one call.
#[derive(Debug, Clone, Serialize)]
pub struct ExecResult {
    pub outcome: Outcome,
    /// The guest's exit status: 0, 1 after an uncaught exception, n for `sys.exit(n)`.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// `repr` of the final expression's value, as a notebook shows it.
    pub result: Option<String>,
    pub error: Option<PythonError>,
    /// A host-side explanation for outcomes that are not Python's (timeout, crash, limits).
    pub detail: Option<String>,
    pub files: Vec<FileChange>,
    /// PNG images of the matplotlib figures left open at the end of the call.
    #[serde(skip)]
    pub images: Vec<Vec<u8>>,
    #[serde(serialize_with = "as_millis")]
    pub duration: Duration,
    /// The interpreter was replaced after this call: variables and imports are gone
    /// (`/mnt/data` is kept).
    pub interpreter_reset: bool,
    /// The sandbox worker process running the call died (`outcome` is `Crashed`): the failure
    /// is the host's, not the code's. Never set in process (`Sessions::InProcess`).
    #[serde(skip)]
    pub worker_lost: bool,
}

impl ExecResult {
    /// A call cancelled while it waited its turn: no code ran, the interpreter is untouched.
    pub fn cancelled_before_start() -> ExecResult {
        ExecResult {
            outcome: Outcome::Cancelled,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            result: None,
            error: None,
            detail: Some("execution was cancelled before it started".into()),
            files: vec![],
            images: vec![],
            duration: Duration::ZERO,
            interpreter_reset: false,
            worker_lost: false,
        }
    }

    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}
