//! A session: one interpreter bound to one `/mnt/data`, like a notebook kernel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::disk::sha256_file;
use tokio_util::sync::CancellationToken;

use super::hibernate;
use super::interp::{Clock, GUEST_DATA, Interpreter, TurnEnd};
use super::limits::{MAX_CODE_BYTES, MIN_MEMORY_BYTES};
use super::result::{ExecResult, FileChange, Outcome, PythonError};
use super::wasi::{Door, OutputTap};
use super::{LoadedImage, SandboxError, SessionDirs};
use crate::sandbox::Limits;

/// Slack before a call blocked in a host wait (e.g. `time.sleep`) is dropped.
const BLOCKED_GRACE: Duration = Duration::from_millis(200);

/// Options for one call.
#[derive(Clone, Default)]
pub struct ExecOptions {
    /// Limits; `None` takes the image's defaults.
    pub limits: Option<Limits>,
    /// Sees each chunk of stdout/stderr as it is written.
    pub tap: Option<OutputTap>,
    /// Cancelled to cancel the call; the interpreter is then replaced.
    pub cancel: Option<CancellationToken>,
    /// Host files copied into `/mnt/data` first, under the session's lock and charged to its
    /// storage quota.
    pub inputs: Vec<InputFile>,
}

/// A host file to put into a session's `/mnt/data` before a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputFile {
    /// A plain file name (no folders).
    pub name: String,
    /// The host file to copy.
    pub src: std::path::PathBuf,
    /// Replace an entry already there (otherwise it is kept).
    pub replace: bool,
}

/// One interpreter and its folders. Not shared: callers serialize access (see
/// [`super::SessionManager`]).
pub struct Session {
    pub id: String,
    image: Arc<LoadedImage>,
    dirs: SessionDirs,
    interp: Option<Interpreter>,
    pub last_used: Instant,
    /// Said in the next call's result (e.g. that a hibernated state could not be restored).
    notice: Option<String>,
    /// Where the last resume's time went (`None` until one succeeds).
    last_resume: Option<hibernate::ResumeTimings>,
    /// What the last hibernation that kept the interpreter wrote, while no code has run since:
    /// the state file then is the interpreter's state, and dropping it need not write again
    /// (with `hibernate_every_turn`, an eviction costs no encoding).
    saved: Option<Hibernated>,
}

/// What one hibernation wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hibernated {
    /// Bytes of the state file.
    pub bytes: u64,
    /// 4 KiB chunks of memory that differ from the image.
    pub chunks: usize,
    /// The interpreter's linear memory.
    pub memory: u64,
    /// Where the time went.
    pub timings: hibernate::HibernateTimings,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("image", &self.image.image.name)
            .field("live", &self.interp.is_some())
            .finish()
    }
}

type FileState = HashMap<String, (u64, Option<SystemTime>, u64)>;

impl Session {
    /// A session over `dirs`; the interpreter starts on the first call.
    pub fn new(id: impl Into<String>, image: Arc<LoadedImage>, dirs: SessionDirs) -> Session {
        Session {
            id: id.into(),
            image,
            dirs,
            interp: None,
            last_used: Instant::now(),
            notice: None,
            last_resume: None,
            saved: None,
        }
    }

    /// The session's state file (beside its folders; never visible to the guest).
    pub fn state_path(&self) -> std::path::PathBuf {
        state_path(&self.dirs)
    }

    /// Whether a hibernated state waits to be resumed (no interpreter is live).
    pub fn is_hibernated(&self) -> bool {
        self.interp.is_none() && self.state_path().exists()
    }

    /// Write the live interpreter's state to the session's state file, between calls (the
    /// caller holds the session), and drop the interpreter unless `keep`. `None` if no
    /// interpreter is live or it never ran a call (there is nothing to keep).
    pub async fn hibernate(&mut self, keep: bool) -> anyhow::Result<Option<Hibernated>> {
        let Some(interp) = self.interp.as_ref() else {
            return Ok(None);
        };
        if !interp.installed {
            self.interp = None;
            return Ok(None);
        }
        if !keep
            && let Some(saved) = self.saved.take()
            && self.state_path().is_file()
        {
            let t = Instant::now();
            self.interp = None;
            return Ok(Some(Hibernated {
                timings: hibernate::HibernateTimings {
                    release: t.elapsed(),
                    ..Default::default()
                },
                ..saved
            }));
        }
        self.saved = None;
        let base = self.image.base_memory().await?;
        let interp = self.interp.as_mut().expect("live");
        let memory = interp.memory_bytes();
        let mut encoded = interp.hibernate(self.image.state_key(), &base.bytes, base.pagemap)?;
        let t = Instant::now();
        hibernate::write(&self.state_path(), &encoded.bytes)?;
        encoded.timings.write = t.elapsed();
        if !keep {
            let t = Instant::now();
            self.interp = None;
            encoded.timings.release = t.elapsed();
        }
        let done = Hibernated {
            bytes: encoded.bytes.len() as u64,
            chunks: encoded.chunks,
            memory,
            timings: encoded.timings,
        };
        if keep {
            self.saved = Some(done);
        }
        Ok(Some(done))
    }

    pub fn image_name(&self) -> &str {
        &self.image.image.name
    }

    /// Whether an interpreter is live (holding memory).
    pub fn is_live(&self) -> bool {
        self.interp.is_some()
    }

    /// Bytes of linear memory its interpreter holds (0 if none is live).
    pub fn memory_bytes(&self) -> u64 {
        self.interp.as_ref().map_or(0, Interpreter::memory_bytes)
    }

    /// Where the time of this session's last resume went, taken (for `oasis bench sandbox`).
    pub fn take_last_resume(&mut self) -> Option<hibernate::ResumeTimings> {
        self.last_resume.take()
    }

    /// Drop the interpreter; files stay.
    pub fn evict(&mut self) {
        self.interp = None;
        self.saved = None;
    }

    /// Give this session an interpreter that was started elsewhere (the warm pool) on
    /// folders that now are this session's `dirs`.
    pub fn adopt(&mut self, mut interp: Interpreter, dirs: SessionDirs) {
        interp.rebase(&dirs);
        self.dirs = dirs;
        self.interp = Some(interp);
        self.saved = None;
    }

    async fn ensure_interp(&mut self, limits: &Limits) -> Result<&mut Interpreter, SandboxError> {
        if self.interp.is_none() {
            self.interp = match self.resume(limits.memory_bytes).await {
                Ok(Some(interp)) => Some(interp),
                Ok(None) => None,
                Err(refused) => {
                    tracing::warn!(session = %self.id, reason = %refused,
                        "a hibernated state was not restored");
                    let _ = hibernate::remove(&self.state_path());
                    self.notice = Some(format!(
                        "The session's saved interpreter state could not be restored ({refused}); \
                         a new interpreter started: variables and imports from before are gone \
                         (files in /mnt/data are kept)."
                    ));
                    None
                }
            };
        }
        if self.interp.is_none() {
            let interp = Interpreter::start(&self.image, &self.dirs, limits.memory_bytes).await?;
            self.interp = Some(interp);
        }
        Ok(self.interp.as_mut().expect("just set"))
    }

    /// The interpreter the session's state file holds, if it has one.
    async fn resume(
        &mut self,
        memory_limit: u64,
    ) -> Result<Option<Interpreter>, hibernate::Refused> {
        let started = Instant::now();
        let path = self.state_path();
        let Some(bytes) = hibernate::read(&path, hibernate::max_file_bytes(memory_limit))? else {
            return Ok(None);
        };
        let read = started.elapsed();
        let parsed = hibernate::parse(&bytes, self.image.state_key(), memory_limit)?;
        let mut timings = hibernate::ResumeTimings {
            read,
            check: started.elapsed() - read,
            ..Default::default()
        };
        let interp =
            Interpreter::resume(&self.image, &self.dirs, memory_limit, &parsed, &mut timings)
                .await?;
        timings.total = started.elapsed();
        self.last_resume = Some(timings);
        Ok(Some(interp))
    }

    /// Run `code` as the next cell. Blocking for the length of the call: run it on a thread
    /// that may block (the manager uses its pool).
    pub async fn exec(
        &mut self,
        code: &str,
        opts: &ExecOptions,
    ) -> Result<ExecResult, SandboxError> {
        let started = Instant::now();
        self.last_used = started;
        // Code runs: the state file no longer is the interpreter's state.
        self.saved = None;
        let limits = opts
            .limits
            .clone()
            .unwrap_or_else(|| self.image.image.limits());
        if code.len() > MAX_CODE_BYTES {
            return Err(SandboxError::InvalidInput(format!(
                "code is {} bytes; the limit is {MAX_CODE_BYTES}",
                code.len()
            )));
        }
        if code.contains('\0') {
            return Err(SandboxError::InvalidInput(
                "code contains a NUL byte".to_string(),
            ));
        }
        if limits.memory_bytes < MIN_MEMORY_BYTES {
            return Err(SandboxError::InvalidInput(format!(
                "memory limit must be at least {} MiB",
                MIN_MEMORY_BYTES >> 20
            )));
        }
        let deadline = started + limits.timeout;
        let cancel = opts.cancel.clone().unwrap_or_default();
        let data = self.dirs.data.clone();
        let interp = self.ensure_interp(&limits).await?;
        interp.set_clock(Clock {
            deadline,
            cancel: cancel.clone(),
        });
        {
            let st = interp.state();
            st.limiter.max_bytes = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
            st.limiter.hit = false;
            st.disk.max_bytes = limits.disk_bytes;
            st.disk.max_files = limits.disk_files;
            st.disk.hit = false;
            // Start from what the folders hold: a new interpreter (after a timeout, an eviction)
            // must not get a fresh quota on top of what earlier ones wrote.
            st.rescan_disk();
            st.door = Door {
                open: true,
                ..Door::default()
            };
        }
        for input in &opts.inputs {
            copy_input(interp, &data, input)?;
        }

        if !interp.installed
            && let Err((end, err)) = interp.install(deadline).await
        {
            self.interp = None;
            return Ok(failed_setup(end, &err, started));
        }

        let before = scan_files(&self.dirs.data);
        let interp = self.interp.as_mut().expect("live");
        // Again: a first turn (`install`) sets its own clock, whose cancel flag is not the
        // caller's, and the epoch check must see the caller's to stop running code.
        interp.set_clock(Clock {
            deadline,
            cancel: cancel.clone(),
        });
        interp.stdout.reset(limits.stdout_bytes, opts.tap.clone());
        interp.stderr.reset(limits.stderr_bytes, opts.tap.clone());
        let end = bounded(interp.turn(code), deadline, &cancel).await;
        let (stdout, stdout_truncated) = interp.stdout.take();
        let (stderr, stderr_truncated) = interp.stderr.take();
        let door = interp.take_door();
        let run_finish = !interp.figures_hooked || door.figure_opened;
        let mem_hit = interp.state().limiter.hit;
        let disk_hit = interp.state().disk.hit;

        let mut result = ExecResult {
            outcome: Outcome::Ok,
            exit_code: None,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_truncated,
            stderr_truncated,
            report_truncated: false,
            result: None,
            error: None,
            detail: None,
            files: vec![],
            images: vec![],
            duration: Duration::ZERO,
            interpreter_reset: false,
            worker_lost: false,
            notice: self.notice.take(),
        };
        read_frames(&mut result, door.frames, &limits);

        let mut alive = true;
        match end {
            TurnEnd::Returned(status) if (0..=255).contains(&status) => {
                result.exit_code = Some(status);
                result.outcome = if status == 0 {
                    Outcome::Ok
                } else if mem_hit {
                    Outcome::MemoryLimit
                } else {
                    Outcome::Error
                };
            }
            TurnEnd::Returned(status) if (256..=511).contains(&status) => {
                // exit()/quit(): the interpreter is finished.
                let code = status - 256;
                result.exit_code = Some(code);
                result.outcome = if code == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Error
                };
                result.detail =
                    Some("the interpreter exited; a new one starts on the next call".into());
                alive = false;
            }
            TurnEnd::Returned(status) => {
                result.outcome = Outcome::Crashed;
                result.detail = Some(format!(
                    "the interpreter refused the turn (status {status})"
                ));
                alive = false;
            }
            TurnEnd::Exited(code) => {
                result.exit_code = Some(code);
                result.outcome = if code == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Error
                };
                result.detail = Some(format!("the process exited with status {code}"));
                alive = false;
            }
            TurnEnd::Deadline => {
                result.outcome = Outcome::Timeout;
                result.detail = Some(format!(
                    "execution exceeded the {:.3} s time limit",
                    limits.timeout.as_secs_f64()
                ));
                alive = false;
            }
            TurnEnd::Cancelled => {
                result.outcome = Outcome::Cancelled;
                result.detail = Some("execution was cancelled".into());
                alive = false;
            }
            TurnEnd::Trapped(msg) => {
                result.outcome = if mem_hit {
                    Outcome::MemoryLimit
                } else {
                    Outcome::Crashed
                };
                result.detail = Some(format!("the interpreter crashed: {msg}"));
                alive = false;
            }
        }
        if mem_hit && result.outcome == Outcome::MemoryLimit && result.detail.is_none() {
            result.detail = Some(format!(
                "the {} MiB memory limit was reached",
                limits.memory_bytes >> 20
            ));
        }
        if disk_hit && result.detail.is_none() {
            result.detail = Some(format!(
                "the storage quota ({} bytes, {} files in /mnt/data and /tmp) was reached",
                limits.disk_bytes, limits.disk_files
            ));
        }

        if alive {
            if run_finish {
                self.finish(&mut result, deadline, &cancel, &limits).await;
            }
        } else {
            self.discard_interp();
            result.interpreter_reset = true;
        }
        // An uncaught MemoryError is the memory limit, whether the cap refused a grow or
        // CPython refused a request no 32-bit guest could satisfy.
        if result.outcome == Outcome::Error
            && result
                .error
                .as_ref()
                .is_some_and(|e| e.name == "MemoryError")
        {
            result.outcome = Outcome::MemoryLimit;
            result.detail.get_or_insert_with(|| {
                format!("out of memory (limit {} MiB)", limits.memory_bytes >> 20)
            });
        }
        if result.truncated() && matches!(result.outcome, Outcome::Ok | Outcome::Error) {
            result.outcome = Outcome::OutputLimit;
        }
        result.files = changed_files(&self.dirs.data, &before, &scan_files(&self.dirs.data));
        result.duration = started.elapsed();
        self.last_used = Instant::now();
        Ok(result)
    }

    /// Oasis's post-turn hook: render the figures left open, then close them. It runs guest
    /// code (matplotlib's, or whatever the user put in its place), so it is part of the call:
    /// the same deadline and cancel, and only here may the guest hand back images (PNG files,
    /// bounded in count and bytes by the door).
    async fn finish(
        &mut self,
        result: &mut ExecResult,
        deadline: Instant,
        cancel: &CancellationToken,
        limits: &Limits,
    ) {
        let Some(interp) = self.interp.as_mut() else {
            return;
        };
        interp.set_clock(Clock {
            deadline,
            cancel: cancel.clone(),
        });
        interp.stdout.reset(0, None);
        interp.stderr.reset(limits.stderr_bytes.min(16 << 10), None);
        interp.state().door.figures = true;
        let end = bounded(
            interp.turn("__import__('_oasis').finish()"),
            deadline,
            cancel,
        )
        .await;
        let door = interp.take_door();
        interp.state().door.figures = false;
        let _ = interp.stdout.take();
        let (err, _) = interp.stderr.take();
        if !err.is_empty() {
            result.stderr.push_str(&String::from_utf8_lossy(&err));
        }
        result.images = door
            .frames
            .into_iter()
            .filter_map(|f| f.strip_prefix(b"I").map(<[u8]>::to_vec))
            .collect();
        match end {
            TurnEnd::Returned(0) => return,
            TurnEnd::Deadline => {
                result.outcome = Outcome::Timeout;
                result.detail = Some(format!(
                    "execution exceeded the {:.3} s time limit (while rendering figures)",
                    limits.timeout.as_secs_f64()
                ));
            }
            TurnEnd::Cancelled => {
                result.outcome = Outcome::Cancelled;
                result.detail = Some("execution was cancelled".into());
            }
            other => {
                tracing::warn!(session = %self.id, end = ?other, "post-turn hook failed; replacing the interpreter");
            }
        }
        self.discard_interp();
        result.interpreter_reset = true;
    }

    /// The interpreter ended mid-call (timeout, cancel, crash, exit): the next call starts a
    /// new one, so an older hibernated state must not come back in its place.
    fn discard_interp(&mut self) {
        self.interp = None;
        if let Err(e) = hibernate::remove(&self.state_path()) {
            tracing::warn!(session = %self.id, error = %e, "could not remove a stale hibernated state");
        }
    }
}

/// Apply the `_oasis` helper's reports of the user's turn to `result`. They come from code the
/// user controls, so they are worth what stdout is: held to the output caps
/// ([`ExecResult::enforce_caps`]).
fn read_frames(result: &mut ExecResult, frames: Vec<Vec<u8>>, limits: &Limits) {
    for frame in frames {
        match frame.split_first() {
            Some((b'R', json)) => {
                if let Ok(text) = serde_json::from_slice::<String>(json) {
                    result.result = Some(text);
                }
            }
            Some((b'E', json)) => {
                if let Ok(e) = serde_json::from_slice::<PythonError>(json) {
                    result.error = Some(e);
                }
            }
            _ => {}
        }
    }
    result.enforce_caps(limits);
}

/// Copy `input` into the session's `/mnt/data`, charging it to the storage quota first.
fn copy_input(
    interp: &mut Interpreter,
    data: &Path,
    input: &InputFile,
) -> Result<(), SandboxError> {
    let there = std::fs::symlink_metadata(data.join(&input.name)).ok();
    if there.is_some() && !input.replace {
        return Ok(());
    }
    let size = std::fs::metadata(&input.src)
        .map_err(|e| SandboxError::Internal(anyhow::anyhow!("reading {}: {e}", input.name)))?
        .len();
    // What it replaces is freed (a recount sees it if a handle still holds it).
    let freed = there
        .as_ref()
        .filter(|m| m.is_file())
        .map_or(0, |m| m.len());
    let st = interp.state();
    if !st.charge_disk(size.saturating_sub(freed), u64::from(there.is_none())) {
        st.disk.hit = false;
        return Err(SandboxError::QuotaExceeded(format!(
            "the file '{}' ({size} bytes) does not fit in the session's storage quota \
             ({} bytes, {} files in /mnt/data and /tmp; {} bytes used)",
            input.name, st.disk.max_bytes, st.disk.max_files, st.disk.used_bytes
        )));
    }
    super::manager::put_file_into(data, &input.name, &input.src, input.replace)
        .map_err(|e| SandboxError::Internal(anyhow::anyhow!("copying {}: {e}", input.name)))?;
    Ok(())
}

fn failed_setup(end: TurnEnd, stderr: &[u8], started: Instant) -> ExecResult {
    ExecResult {
        outcome: match end {
            TurnEnd::Deadline => Outcome::Timeout,
            TurnEnd::Cancelled => Outcome::Cancelled,
            _ => Outcome::Crashed,
        },
        exit_code: None,
        stdout: String::new(),
        stderr: String::from_utf8_lossy(stderr).into_owned(),
        stdout_truncated: false,
        stderr_truncated: false,
        report_truncated: false,
        result: None,
        error: None,
        detail: Some(format!("the interpreter failed to start: {end:?}")),
        files: vec![],
        images: vec![],
        duration: started.elapsed(),
        interpreter_reset: true,
        worker_lost: false,
        notice: None,
    }
}

/// Run a turn, dropping it if it is still blocked (in a host wait) shortly after `deadline`.
/// CPU-bound code is stopped at the deadline itself by the epoch callback.
/// Run a turn until it ends, its deadline passes, or the host cancels it. Epoch checks stop
/// running guest code; a guest blocked in the host (a `sleep`) is stopped by dropping the call.
async fn bounded(
    fut: impl Future<Output = TurnEnd>,
    deadline: Instant,
    cancel: &CancellationToken,
) -> TurnEnd {
    let at = tokio::time::Instant::from_std(deadline + BLOCKED_GRACE);
    let cancelled = async {
        cancel.cancelled().await;
        // Give the epoch check a moment to stop running code cleanly.
        tokio::time::sleep(BLOCKED_GRACE).await;
    };
    tokio::select! {
        r = tokio::time::timeout_at(at, fut) => r.unwrap_or(TurnEnd::Deadline),
        _ = cancelled => TurnEnd::Cancelled,
    }
}

/// Regular files under `dir` (links not followed), by relative path.
fn scan_files(dir: &Path) -> FileState {
    let mut out = HashMap::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .flatten()
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(md) = entry.metadata() else { continue };
        let Ok(rel) = entry.path().strip_prefix(dir) else {
            continue;
        };
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&md);
        #[cfg(not(unix))]
        let ino = 0;
        out.insert(rel, (md.len(), md.modified().ok(), ino));
    }
    out
}

fn changed_files(dir: &Path, before: &FileState, after: &FileState) -> Vec<FileChange> {
    let mut out: Vec<FileChange> = after
        .iter()
        .filter(|(rel, st)| before.get(*rel) != Some(*st))
        .filter_map(|(rel, (size, _, _))| {
            let sha256 = sha256_file(&dir.join(rel)).ok()?;
            Some(FileChange {
                path: format!("{GUEST_DATA}/{rel}"),
                relative: rel.clone(),
                size: *size,
                sha256,
                created: !before.contains_key(rel),
            })
        })
        .collect();
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    out
}

/// The state file of a session whose folders are `dirs` (their common parent holds it).
pub(super) fn state_path(dirs: &SessionDirs) -> std::path::PathBuf {
    dirs.data
        .parent()
        .unwrap_or(&dirs.data)
        .join(hibernate::STATE_FILE)
}
