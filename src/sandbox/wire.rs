//! The channel between the server's [`super::Supervisor`] and a sandbox worker process
//! ([`super::worker`]): frames over the worker's stdin (requests) and stdout (replies).
//!
//! A frame is a big-endian `u32` length (of what follows, at most [`MAX_FRAME`]), then a `u32`
//! head length, a `u16` blob count, one `u32` length per blob, the head (a small JSON object,
//! [`Head`]) and the blobs back to back. Bulk bytes (code, output chunks, stdout and stderr,
//! PNG images) travel as raw blobs: nothing is escaped or base64-inflated.
//!
//! Both sides treat what they read as untrusted: lengths are checked before anything is
//! allocated, and a malformed frame ends the channel (the supervisor then restarts the worker).

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::SandboxError;
use super::limits::Limits;
use super::result::{ExecResult, FileChange, Outcome, PythonError};
use super::session::InputFile;

/// Bumped whenever a frame changes shape; a worker of another version is refused.
pub const VERSION: u32 = 5;

/// Largest frame either side accepts: a call's result carries at most its stdout and stderr
/// caps plus the door's 128 MiB of reports.
pub const MAX_FRAME: usize = 512 << 20;

/// Most blobs in one frame (a result: stdout, stderr and up to 256 figures).
const MAX_BLOBS: usize = 1024;

/// What a frame says. Requests go server → worker, the rest worker → server; `call` ties a
/// reply to its request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Head {
    /// Run the code (blob 0, UTF-8) in `session`. With `tap`, output chunks come back as
    /// [`Head::Output`] while it runs.
    Exec {
        call: u64,
        session: String,
        image: Option<String>,
        limits: Option<Limits>,
        tap: bool,
        /// Host files to copy into `/mnt/data` first.
        #[serde(default)]
        inputs: Vec<InputFile>,
    },
    /// Cancel call `call` (no reply of its own: the call ends `cancelled`).
    Cancel {
        call: u64,
    },
    /// End `session`: its interpreter and folders.
    Remove {
        call: u64,
        session: String,
    },
    /// Whether `session` has a live interpreter; answered with [`Head::Status`] (the server
    /// reads the rest of what it reports from the session's folder itself).
    Info {
        call: u64,
        session: String,
    },
    /// Hibernate every live interpreter (the server is shutting down), waiting at most
    /// `busy_wait_ms` for sessions busy with a call; answered with [`Head::HibernatedAll`]
    /// once done.
    HibernateAll {
        call: u64,
        busy_wait_ms: u64,
    },
    /// How many sessions are live and how many hibernated (for metrics); answered with
    /// [`Head::Counted`].
    Counts {
        call: u64,
    },
    /// Which sessions have a live interpreter (cheap: no disk walk); answered with
    /// [`Head::LiveKeys`].
    Live {
        call: u64,
    },
    /// Liveness check; answered with [`Head::Pong`].
    Ping {
        seq: u64,
    },
    /// First frame of a worker: its protocol version and pid.
    Hello {
        version: u32,
        pid: u32,
    },
    /// A chunk of a call's output (blob 0).
    Output {
        call: u64,
        stderr: bool,
    },
    /// A call's result; blobs: stdout, stderr, then one PNG per image.
    Done {
        call: u64,
        result: Box<WireResult>,
    },
    /// A call that could not run.
    Failed {
        call: u64,
        error: WireError,
    },
    /// A remove's answer.
    Removed {
        call: u64,
        existed: bool,
    },
    /// An info's answer.
    Status {
        call: u64,
        live: bool,
    },
    /// A hibernate-all's answer: how many interpreters were hibernated.
    HibernatedAll {
        call: u64,
        sessions: u64,
    },
    /// A counts' answer.
    Counted {
        call: u64,
        live: u64,
        hibernated: u64,
    },
    /// A live's answer: the keys of the sessions with a live interpreter.
    LiveKeys {
        call: u64,
        keys: Vec<String>,
    },
    Pong {
        seq: u64,
    },
}

/// A decoded frame.
#[derive(Debug)]
pub struct Frame {
    pub head: Head,
    pub blobs: Vec<Vec<u8>>,
}

impl Frame {
    pub fn new(head: Head) -> Frame {
        Frame {
            head,
            blobs: vec![],
        }
    }

    pub fn with(head: Head, blobs: Vec<Vec<u8>>) -> Frame {
        Frame { head, blobs }
    }

    /// The frame's bytes, length prefix included; an error if it would exceed [`MAX_FRAME`].
    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        let head = serde_json::to_vec(&self.head).context("encoding a frame head")?;
        ensure!(self.blobs.len() <= MAX_BLOBS, "too many blobs in a frame");
        let len = 4
            + 2
            + 4 * self.blobs.len()
            + head.len()
            + self.blobs.iter().map(Vec::len).sum::<usize>();
        ensure!(
            len <= MAX_FRAME,
            "a frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        );
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.blobs.len() as u16).to_be_bytes());
        for b in &self.blobs {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(&head);
        for b in &self.blobs {
            out.extend_from_slice(b);
        }
        Ok(out)
    }

    /// Decode a frame's bytes (without the length prefix, as [`read_frame`] returns them).
    pub fn decode(buf: &[u8]) -> anyhow::Result<Frame> {
        let mut at = 0usize;
        let mut take = |n: usize| -> anyhow::Result<&[u8]> {
            let end = at.checked_add(n).filter(|&e| e <= buf.len());
            let Some(end) = end else {
                bail!("truncated frame")
            };
            let s = &buf[at..end];
            at = end;
            Ok(s)
        };
        let head_len = u32::from_be_bytes(take(4)?.try_into()?) as usize;
        let n = u16::from_be_bytes(take(2)?.try_into()?) as usize;
        ensure!(n <= MAX_BLOBS, "too many blobs in a frame");
        let mut lens = Vec::with_capacity(n);
        for _ in 0..n {
            lens.push(u32::from_be_bytes(take(4)?.try_into()?) as usize);
        }
        let head: Head =
            serde_json::from_slice(take(head_len)?).context("decoding a frame head")?;
        let mut blobs = Vec::with_capacity(n);
        for len in lens {
            blobs.push(take(len)?.to_vec());
        }
        ensure!(at == buf.len(), "trailing bytes after a frame");
        Ok(Frame { head, blobs })
    }
}

/// Read one frame's bytes (without its length prefix); `None` at a clean end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// An [`ExecResult`] without its bulk bytes (those are the frame's blobs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireResult {
    outcome: Outcome,
    exit_code: Option<i32>,
    stdout_truncated: bool,
    stderr_truncated: bool,
    report_truncated: bool,
    result: Option<String>,
    error: Option<PythonError>,
    detail: Option<String>,
    files: Vec<FileChange>,
    duration: Duration,
    interpreter_reset: bool,
    #[serde(default)]
    notice: Option<String>,
}

/// The [`Head::Done`] frame for `r`.
pub fn done(call: u64, r: ExecResult) -> Frame {
    let mut blobs = Vec::with_capacity(2 + r.images.len());
    blobs.push(r.stdout.into_bytes());
    blobs.push(r.stderr.into_bytes());
    blobs.extend(r.images);
    let result = WireResult {
        outcome: r.outcome,
        exit_code: r.exit_code,
        stdout_truncated: r.stdout_truncated,
        stderr_truncated: r.stderr_truncated,
        report_truncated: r.report_truncated,
        result: r.result,
        error: r.error,
        detail: r.detail,
        files: r.files,
        duration: r.duration,
        interpreter_reset: r.interpreter_reset,
        notice: r.notice,
    };
    Frame::with(
        Head::Done {
            call,
            result: Box::new(result),
        },
        blobs,
    )
}

/// Rebuild the result of a [`Head::Done`] frame from its head and blobs.
pub fn result_of(w: WireResult, blobs: Vec<Vec<u8>>) -> anyhow::Result<ExecResult> {
    ensure!(blobs.len() >= 2, "a result frame without stdout and stderr");
    let mut blobs = blobs.into_iter();
    let text = |b: Vec<u8>| match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    let stdout = text(blobs.next().unwrap_or_default());
    let stderr = text(blobs.next().unwrap_or_default());
    Ok(ExecResult {
        outcome: w.outcome,
        exit_code: w.exit_code,
        stdout,
        stderr,
        stdout_truncated: w.stdout_truncated,
        stderr_truncated: w.stderr_truncated,
        report_truncated: w.report_truncated,
        result: w.result,
        error: w.error,
        detail: w.detail,
        files: w.files,
        images: blobs.collect(),
        duration: w.duration,
        interpreter_reset: w.interpreter_reset,
        worker_lost: false,
        notice: w.notice,
    })
}

/// A [`SandboxError`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireError {
    UnknownImage {
        name: String,
        known: String,
    },
    InvalidSessionId {
        id: String,
    },
    InvalidInput {
        message: String,
    },
    QuotaExceeded {
        message: String,
    },
    ImageMismatch {
        id: String,
        has: String,
        wanted: String,
    },
    Internal {
        message: String,
    },
}

impl From<&SandboxError> for WireError {
    fn from(e: &SandboxError) -> WireError {
        match e {
            SandboxError::UnknownImage { name, known } => WireError::UnknownImage {
                name: name.clone(),
                known: known.clone(),
            },
            SandboxError::InvalidSessionId(id) => WireError::InvalidSessionId { id: id.clone() },
            SandboxError::InvalidInput(m) => WireError::InvalidInput { message: m.clone() },
            SandboxError::QuotaExceeded(m) => WireError::QuotaExceeded { message: m.clone() },
            SandboxError::ImageMismatch { id, has, wanted } => WireError::ImageMismatch {
                id: id.clone(),
                has: has.clone(),
                wanted: wanted.clone(),
            },
            SandboxError::Internal(e) => WireError::Internal {
                message: format!("{e:#}"),
            },
            // Never made in a worker (only the server shares sessions); sent as it reads.
            SandboxError::Unavailable { .. } => WireError::Internal {
                message: e.to_string(),
            },
        }
    }
}

impl From<WireError> for SandboxError {
    fn from(e: WireError) -> SandboxError {
        match e {
            WireError::UnknownImage { name, known } => SandboxError::UnknownImage { name, known },
            WireError::InvalidSessionId { id } => SandboxError::InvalidSessionId(id),
            WireError::InvalidInput { message } => SandboxError::InvalidInput(message),
            WireError::QuotaExceeded { message } => SandboxError::QuotaExceeded(message),
            WireError::ImageMismatch { id, has, wanted } => {
                SandboxError::ImageMismatch { id, has, wanted }
            }
            WireError::Internal { message } => {
                SandboxError::Internal(anyhow::anyhow!("in the sandbox worker: {message}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_raw_blobs() {
        let png = vec![0x89, b'P', b'N', b'G', 0, 255, 10];
        let f = Frame::with(
            Head::Output {
                call: 7,
                stderr: true,
            },
            vec![png.clone(), vec![]],
        );
        let bytes = f.encode().unwrap();
        // The blob is carried as is, not escaped.
        assert!(bytes.windows(png.len()).any(|w| w == png.as_slice()));
        let back = Frame::decode(&bytes[4..]).unwrap();
        assert!(matches!(
            back.head,
            Head::Output {
                call: 7,
                stderr: true
            }
        ));
        assert_eq!(back.blobs, vec![png, vec![]]);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let bytes = Frame::new(Head::Ping { seq: 1 }).encode().unwrap();
        let body = &bytes[4..];
        for cut in 0..body.len() {
            assert!(Frame::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = body.to_vec();
        extra.push(0);
        assert!(Frame::decode(&extra).is_err());
        // A blob length past the end.
        let mut lying = Frame::with(Head::Ping { seq: 1 }, vec![vec![1, 2, 3]])
            .encode()
            .unwrap()[4..]
            .to_vec();
        lying[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Frame::decode(&lying).is_err());
    }

    #[tokio::test]
    async fn an_oversized_length_prefix_is_refused_before_allocating() {
        let mut r: &[u8] = &(u32::MAX).to_be_bytes();
        assert!(read_frame(&mut r).await.is_err());
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none());
    }
}
