//! What one call into a session returns.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::Limits;
use super::wasi::{MAX_IMAGE_BYTES, MAX_IMAGES};

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
    /// `result` or `error` was cut to the output caps.
    pub report_truncated: bool,
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
    /// Something the caller should be told about the session itself, e.g. that its
    /// hibernated state could not be restored and a new interpreter started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
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
            report_truncated: false,
            result: None,
            error: None,
            detail: Some("execution was cancelled before it started".into()),
            files: vec![],
            images: vec![],
            duration: Duration::ZERO,
            interpreter_reset: false,
            worker_lost: false,
            notice: None,
        }
    }

    /// Hold what the guest reported to the call's caps: stdout and the last value to the stdout
    /// cap, stderr and the exception's message and traceback to the stderr cap (a cut is
    /// flagged), and images to whole PNG files within [`MAX_IMAGES`] and [`MAX_IMAGE_BYTES`].
    /// The session applies it to its guest's reports, the supervisor again to a worker's.
    pub fn enforce_caps(&mut self, limits: &Limits) {
        self.stdout_truncated |= clip(&mut self.stdout, limits.stdout_bytes);
        self.stderr_truncated |= clip(&mut self.stderr, limits.stderr_bytes);
        if let Some(text) = &mut self.result {
            self.report_truncated |= clip(text, limits.stdout_bytes);
        }
        if let Some(e) = &mut self.error {
            self.report_truncated |= clip(&mut e.name, 256);
            self.report_truncated |= clip(&mut e.message, limits.stderr_bytes);
            self.report_truncated |= clip(&mut e.traceback, limits.stderr_bytes);
        }
        let mut total = 0usize;
        self.images.retain(|png| {
            total = total.saturating_add(png.len());
            total <= MAX_IMAGE_BYTES && is_png(png)
        });
        self.images.truncate(MAX_IMAGES);
    }

    pub fn truncated(&self) -> bool {
        self.stdout_truncated || self.stderr_truncated || self.report_truncated
    }
}

/// Whether `data` is a whole PNG file: the signature, then well-formed chunks (lengths in
/// bounds, CRCs right) from `IHDR` to `IEND`, and nothing after.
pub fn is_png(data: &[u8]) -> bool {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let Some(mut rest) = data.strip_prefix(SIGNATURE) else {
        return false;
    };
    let mut first = true;
    loop {
        if rest.len() < 12 {
            return false;
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = rest.get(4..8 + len) else {
            return false;
        };
        let Some(crc) = rest.get(8 + len..12 + len) else {
            return false;
        };
        if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
            return false;
        }
        let kind = &body[..4];
        if first && kind != b"IHDR" {
            return false;
        }
        first = false;
        rest = &rest[12 + len..];
        if kind == b"IEND" {
            return rest.is_empty();
        }
    }
}

/// Cut `text` to at most `max` bytes (at a character boundary); whether anything was cut.
fn clip(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    true
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        c.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        c
    }

    #[test]
    fn only_whole_png_files_pass() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
        png.extend(chunk(b"IDAT", &[120, 156, 99, 0, 0, 0, 2, 0, 1]));
        png.extend(chunk(b"IEND", b""));
        assert!(is_png(&png));
        let mut trailing = png.clone();
        trailing.extend_from_slice(b"<html>");
        let mut bad_crc = png.clone();
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 1;
        let mut no_ihdr = b"\x89PNG\r\n\x1a\n".to_vec();
        no_ihdr.extend(chunk(b"tEXt", b"<script>"));
        no_ihdr.extend(chunk(b"IEND", b""));
        for bad in [
            &b"<html></html>"[..],
            &png[..png.len() - 4],
            &trailing,
            &bad_crc,
            &no_ihdr,
            &b"\x89PNG\r\n\x1a\n\xff\xff\xff\xff"[..],
        ] {
            assert!(!is_png(bad));
        }
    }
}
