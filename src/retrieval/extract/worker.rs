//! The bounded path: `oasis extract-worker`, a child process that runs [`extract_text`] under
//! an address-space and CPU limit, killed at a wall-clock timeout; and its in-process stand-in
//! for tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    ExtractError, ExtractLimits, Failed, Invalid, extract_text, is_supported, size, too_large,
    unsupported,
};

/// Thread stack for extraction: deeply nested documents recurse in some parsers.
const STACK_BYTES: usize = 64 << 20;
/// stderr kept from the child, for the reason it died.
const STDERR_KEEP: usize = 8 << 10;

/// Where [`extract_bounded_with`] runs the extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// In a child process, `<exe> extract-worker`, under `RLIMIT_AS`, `RLIMIT_CPU` and a
    /// wall-clock timeout that kills it. `exe` must be an `oasis` binary of this version.
    Process(PathBuf),
    /// On a thread of this process (unit tests; no `oasis` binary at hand): sizes are bounded
    /// and the caller stops waiting at the timeout, but memory and CPU are not bounded and a
    /// thread past its timeout runs on to its end.
    InProcess,
}

impl Isolation {
    /// The running binary, for a server: resolve it at start, before an upgrade could replace
    /// the file.
    pub fn current_exe() -> Result<Self, ExtractError> {
        std::env::current_exe()
            .map(Isolation::Process)
            .map_err(|e| Failed(format!("The text extractor could not be located ({e}).")))
    }
}

/// The text of the stored file at `path` named `filename`, extracted in a child process
/// running this binary (see [`extract_bounded_with`]).
pub async fn extract_bounded(
    filename: &str,
    path: &Path,
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    extract_bounded_with(&Isolation::current_exe()?, filename, path, limits).await
}

/// The text of the stored file at `path` named `filename`. An unsupported name is refused
/// before anything runs; a killed, crashed or timed-out extraction is [`ExtractError::Invalid`]
/// saying it took too long or used too much memory; a missing file or a binary that cannot be
/// started is [`ExtractError::Failed`].
pub async fn extract_bounded_with(
    isolation: &Isolation,
    filename: &str,
    path: &Path,
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    if !is_supported(filename) {
        return Err(unsupported(filename));
    }
    match isolation {
        Isolation::InProcess => in_thread(filename, path, limits).await,
        Isolation::Process(exe) => in_child(exe, filename, path, limits).await,
    }
}

fn took_too_long(limits: &ExtractLimits) -> ExtractError {
    Invalid(format!(
        "Text extraction took too long (more than {} s) and was stopped; the file may be \
         malformed.",
        limits.timeout.as_secs_f64().ceil()
    ))
}

async fn in_thread(
    filename: &str,
    path: &Path,
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    let (name, path, l) = (filename.to_owned(), path.to_owned(), limits.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("oasis-extract".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let _ = tx.send(
                read_file(&path, l.max_input_bytes)
                    .and_then(|bytes| extract_text(&name, &bytes, &l)),
            );
        })
        .map_err(|e| Failed(format!("The text extractor could not start ({e}).")))?;
    match tokio::time::timeout(limits.timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Invalid("Text extraction crashed on this file.".to_owned())),
        Err(_) => Err(took_too_long(limits)),
    }
}

fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, ExtractError> {
    let cant = |e: std::io::Error| Failed(format!("The stored file could not be read ({e})."));
    let file = std::fs::File::open(path).map_err(cant)?;
    if file.metadata().map_err(cant)?.len() > max {
        return Err(too_large(max));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(cant)?;
    if bytes.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(bytes)
}

/// What the server asks of `oasis extract-worker`, as JSON on its stdin.
#[derive(Debug, Serialize, Deserialize)]
struct WorkerRequest {
    filename: String,
    path: PathBuf,
    max_input_bytes: u64,
    max_text_bytes: usize,
    max_unzipped_bytes: u64,
    max_memory_bytes: u64,
    cpu_secs: u64,
}

/// The worker's answer on stdout: one tag byte, then UTF-8 to the end (the text, or the error
/// message). `T` text, `U` unsupported, `I` invalid, `F` failed.
fn encode_reply(result: &Result<String, ExtractError>) -> Vec<u8> {
    let (tag, body) = match result {
        Ok(text) => (b'T', text),
        Err(ExtractError::Unsupported(m)) => (b'U', m),
        Err(Invalid(m)) => (b'I', m),
        Err(Failed(m)) => (b'F', m),
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend_from_slice(body.as_bytes());
    out
}

fn decode_reply(out: Vec<u8>) -> Result<String, ExtractError> {
    let garbled = || Failed("The text extractor answered garbled output.".to_owned());
    let (&tag, body) = out.split_first().ok_or_else(garbled)?;
    let body = String::from_utf8(body.to_vec()).map_err(|_| garbled())?;
    match tag {
        b'T' => Ok(body),
        b'U' => Err(ExtractError::Unsupported(body)),
        b'I' => Err(Invalid(body)),
        b'F' => Err(Failed(body)),
        _ => Err(garbled()),
    }
}

async fn in_child(
    exe: &Path,
    filename: &str,
    path: &Path,
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    let located = |e: std::io::Error| Failed(format!("A path could not be made absolute ({e})."));
    let path = std::path::absolute(path).map_err(located)?;
    let exe = std::path::absolute(exe).map_err(located)?;
    let request = serde_json::to_vec(&WorkerRequest {
        filename: filename.to_owned(),
        path,
        max_input_bytes: limits.max_input_bytes,
        max_text_bytes: limits.max_text_bytes,
        max_unzipped_bytes: limits.max_unzipped_bytes,
        max_memory_bytes: limits.max_memory_bytes,
        cpu_secs: limits.timeout.as_secs().saturating_add(2),
    })
    .map_err(|e| {
        Failed(format!(
            "The extraction request could not be written ({e})."
        ))
    })?;
    // No inherited environment (API keys stay with the server); few malloc arenas, so the
    // address-space limit measures memory rather than per-thread reservations.
    let mut child = tokio::process::Command::new(&exe)
        .arg("extract-worker")
        .env_clear()
        .env("MALLOC_ARENA_MAX", "2")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Failed(format!(
                "The text extractor {} could not start ({e}).",
                exe.display()
            ))
        })?;
    let (mut stdin, stdout, stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let out_cap = limits.max_text_bytes.saturating_add(1 << 16);
    let run = async {
        let write = async {
            if let Some(mut pipe) = stdin.take() {
                // A child that died early is judged by its status below.
                let _ = pipe.write_all(&request).await;
            }
        };
        let (_, out, (err, _)) = tokio::join!(
            write,
            read_capped(stdout, out_cap),
            read_capped(stderr, STDERR_KEEP)
        );
        (out, err, child.wait().await)
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(((out, overflowed), err, status)) => {
            let status = status
                .map_err(|e| Failed(format!("The text extractor could not be awaited ({e}).")))?;
            if overflowed {
                // It checks the text's size itself: more than that is not an answer.
                return Err(Failed("The text extractor answered too much.".to_owned()));
            }
            judge(status, out, &err, limits)
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(took_too_long(limits))
        }
    }
}

/// Reads a pipe to its end, keeping the first `cap` bytes (and saying if there were more).
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let (mut kept, mut more) = (Vec::new(), false);
    let Some(mut pipe) = pipe else {
        return (kept, more);
    };
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        more |= room < n;
    }
    (kept, more)
}

/// What the child's end says about the file.
fn judge(
    status: ExitStatus,
    out: Vec<u8>,
    err: &[u8],
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return decode_reply(out);
    }
    let stderr = String::from_utf8_lossy(err);
    let memory = || {
        Invalid(format!(
            "Text extraction used too much memory (more than {}) and was stopped; the file \
             may be malformed.",
            size(limits.max_memory_bytes)
        ))
    };
    let Some(signal) = status.signal() else {
        // The worker's own error (`oasis: error: …`): a request it could not take.
        let why = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Failed(format!(
            "The text extractor failed ({status}): {why}"
        )));
    };
    let name = nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal");
    if stderr.contains("memory allocation of") || stderr.contains("Cannot allocate memory") {
        return Err(memory());
    }
    match name {
        "SIGXCPU" => Err(took_too_long(limits)),
        "SIGKILL" => Err(Invalid(
            "Text extraction was stopped: it took too long or used too much memory; the file \
             may be malformed."
                .to_owned(),
        )),
        _ if stderr.contains("overflowed its stack") => Err(Invalid(
            "Text extraction ran out of stack on this file (it nests too deeply).".to_owned(),
        )),
        _ => Err(Invalid(format!(
            "Text extraction crashed on this file ({name})."
        ))),
    }
}

/// `oasis extract-worker`: reads a [`WorkerRequest`] from stdin, limits itself, extracts, and
/// answers on stdout. Started by [`extract_bounded_with`], not by hand.
pub fn run_worker() -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::sys::resource::{Resource, setrlimit};
    // Die with the server; no core dumps of documents; no privileges gained through exec.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PDEATHSIG")?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).context("RLIMIT_CORE")?;
    nix::sys::prctl::set_no_new_privs().context("PR_SET_NO_NEW_PRIVS")?;
    // The answer goes to a private copy of stdout; fd 1 then points at stderr, so nothing a
    // parser prints can corrupt it.
    let answer = std::os::fd::AsFd::as_fd(&std::io::stdout())
        .try_clone_to_owned()
        .context("duplicating stdout")?;
    nix::unistd::dup2_stdout(std::io::stderr()).context("pointing stdout at stderr")?;
    let mut input = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut input)
        .context("reading the request")?;
    let req: WorkerRequest = serde_json::from_str(&input).context("parsing the request")?;
    setrlimit(
        Resource::RLIMIT_AS,
        req.max_memory_bytes,
        req.max_memory_bytes,
    )
    .context("RLIMIT_AS")?;
    setrlimit(Resource::RLIMIT_CPU, req.cpu_secs, req.cpu_secs + 1).context("RLIMIT_CPU")?;
    // It writes no files.
    setrlimit(Resource::RLIMIT_FSIZE, 0, 0).context("RLIMIT_FSIZE")?;
    let limits = ExtractLimits {
        max_input_bytes: req.max_input_bytes,
        max_text_bytes: req.max_text_bytes,
        max_unzipped_bytes: req.max_unzipped_bytes,
        timeout: Duration::MAX,
        max_memory_bytes: req.max_memory_bytes,
    };
    let result = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || {
            read_file(&req.path, limits.max_input_bytes)
                .and_then(|bytes| extract_text(&req.filename, &bytes, &limits))
        })
        .context("starting the extraction thread")?
        .join()
        .unwrap_or_else(|_| Err(Invalid("The file could not be parsed.".to_owned())));
    let mut answer = std::fs::File::from(answer);
    answer
        .write_all(&encode_reply(&result))
        .context("answering")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::super::office::tests::docx;
    use super::super::tests::{limits, pdf};
    use super::*;

    fn judged(raw: i32, out: &[u8], err: &str) -> Result<String, ExtractError> {
        judge(
            ExitStatus::from_raw(raw),
            out.to_vec(),
            err.as_bytes(),
            &limits(),
        )
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Ok("text ✓".to_owned()),
            Ok(String::new()),
            Err(ExtractError::Unsupported("u".into())),
            Err(Invalid("i".into())),
            Err(Failed("f".into())),
        ] {
            assert_eq!(decode_reply(encode_reply(&r)), r);
        }
        assert_eq!(decode_reply(Vec::new()).unwrap_err().code(), "server_error");
        assert_eq!(
            decode_reply(b"Tbad\xff".to_vec()).unwrap_err().code(),
            "server_error"
        );
    }

    #[test]
    fn a_childs_end_is_judged() {
        assert_eq!(judged(0, b"Thello", "").unwrap(), "hello");
        assert_eq!(
            judged(0, b"Ino text", "").unwrap_err(),
            Invalid("no text".into())
        );
        // Killed (by the CPU limit's hard end, or the kernel), out of CPU time, out of memory.
        let killed = judged(9, b"", "").unwrap_err();
        assert!(killed.to_string().contains("took too long"), "{killed}");
        let cpu = judged(24, b"", "").unwrap_err();
        assert!(cpu.to_string().contains("more than 120 s"), "{cpu}");
        let oom = judged(6, b"", "memory allocation of 4096 bytes failed\n").unwrap_err();
        assert!(oom.to_string().contains("more than 1024 MiB"), "{oom}");
        let stack = judged(6, b"", "thread 'x' has overflowed its stack\n").unwrap_err();
        assert!(stack.to_string().contains("nests too deeply"), "{stack}");
        let segv = judged(11, b"Tpartial", "").unwrap_err();
        assert_eq!(segv.code(), "invalid_file");
        assert!(segv.to_string().contains("SIGSEGV"), "{segv}");
        // The worker's own error (exit 2 from `oasis: error: …`) is ours, not the file's.
        let ours = judged(2 << 8, b"", "oasis: error: parsing the request\n").unwrap_err();
        assert_eq!(ours.code(), "server_error");
        assert!(ours.to_string().contains("parsing the request"), "{ours}");
    }

    #[tokio::test]
    async fn in_process_isolation_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, pdf(&["In process"], 1)).unwrap();
        let l = limits();
        let text = extract_bounded_with(&Isolation::InProcess, "a.pdf", &path, &l)
            .await
            .unwrap();
        assert!(text.contains("In process"), "{text:?}");
        std::fs::write(&path, docx("<w:p><w:r><w:t>Doc</w:t></w:r></w:p>")).unwrap();
        let text = extract_bounded_with(&Isolation::InProcess, "a.docx", &path, &l).await;
        assert_eq!(text.unwrap(), "Doc\n");
        // Refused by name before the file is opened; a missing file is our fault.
        let missing = dir.path().join("missing");
        let e = extract_bounded_with(&Isolation::InProcess, "a.exe", &missing, &l).await;
        assert_eq!(e.unwrap_err().code(), "unsupported_file");
        let e = extract_bounded_with(&Isolation::InProcess, "a.txt", &missing, &l).await;
        assert_eq!(e.unwrap_err().code(), "server_error");
        let small = ExtractLimits {
            max_input_bytes: 3,
            ..limits()
        };
        let e = extract_bounded_with(&Isolation::InProcess, "a.docx", &path, &small).await;
        assert_eq!(e.unwrap_err().code(), "invalid_file");
    }

    #[tokio::test]
    async fn a_missing_extractor_binary_is_our_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, "text").unwrap();
        let exe = Isolation::Process(dir.path().join("no-such-oasis"));
        let e = extract_bounded_with(&exe, "a.txt", &path, &limits()).await;
        assert_eq!(e.unwrap_err().code(), "server_error");
    }
}
