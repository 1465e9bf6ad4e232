//! The guest's view of the world: WASI preview1 with Oasis's fences on top.
//!
//! Defaults, all deliberate: no inherited env, args or stdin; no sockets (preview1 cannot open
//! any and none are granted); only the preopens a session asks for. On top of wasmtime-wasi:
//! - stdout/stderr go to [`OutputSink`]s that keep up to a cap and drop the rest quietly;
//! - writes and creations in the writable mounts are charged to a [`DiskQuota`] *before* they
//!   happen, and refused with `ENOSPC` past it;
//! - hard links are refused (`EPERM`): a link from a read-only mount into a writable one would
//!   make a shared file writable;
//! - the quota counts files the guest deleted while it still holds them open (their bytes stay
//!   on the host's disk until the handle closes);
//! - `host.call` (the runtime's door) carries the `_oasis` helper's reports (last value,
//!   exception, figures), bounded in count and size per call; figures only from the host's
//!   own figure step, and only as PNG files.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use super::result::is_png;
use wasmtime::{AsContextMut, Caller, Linker, ResourceLimiter};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

/// WASI errno values used by the fences.
const ERRNO_FAULT: i32 = 21;
const ERRNO_MFILE: i32 = 33;
const ERRNO_NOSPC: i32 = 51;
const ERRNO_PERM: i32 = 63;

/// Largest frame the guest may pass through the door (a PNG of a large figure fits easily).
pub const MAX_DOOR_FRAME: usize = 32 << 20;
/// Most report frames (last value, exception) per turn, and their bytes together. Reports are
/// cut to the call's output caps afterwards; this bounds what the host holds meanwhile.
pub const MAX_DOOR_FRAMES: usize = 64;
pub const MAX_REPORT_BYTES: usize = 32 << 20;
/// Most figures one call may hand back, and their PNG bytes together.
pub const MAX_IMAGES: usize = 32;
pub const MAX_IMAGE_BYTES: usize = 64 << 20;
/// Most handles (open files and folders, the mounts and stdio included) one interpreter may
/// hold; `open` past it fails with `EMFILE` in the guest. Each open file is a host descriptor.
pub const MAX_GUEST_HANDLES: usize = 256;

/// Per-store state.
pub struct State {
    pub wasi: WasiP1Ctx,
    pub limiter: MemoryLimiter,
    pub disk: DiskQuota,
    pub door: Door,
}

/// Refuses linear-memory growth past a cap (the guest sees `MemoryError`) and remembers that
/// it did.
#[derive(Debug)]
pub struct MemoryLimiter {
    pub max_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Frames the guest sent through the door during the current turn.
#[derive(Debug, Default)]
pub struct Door {
    /// Closed (the guest sees "no host") outside Oasis's calls, e.g. while pre-initializing.
    pub open: bool,
    /// The host's own figure step is running: only `I` frames (PNG files) are taken. Outside
    /// it, only reports (`R`, `E`) and the `F` notice are: user code cannot hand back images.
    pub figures: bool,
    pub frames: Vec<Vec<u8>>,
    pub bytes: usize,
    /// A `F` frame arrived: a matplotlib figure was opened.
    pub figure_opened: bool,
}

impl Door {
    /// Take `frame` if this phase of the call accepts it and it fits the call's bounds.
    fn accept(&mut self, frame: Vec<u8>) -> bool {
        let (count, bytes) = if self.figures {
            if !frame.starts_with(b"I") || !is_png(&frame[1..]) {
                return false;
            }
            (MAX_IMAGES, MAX_IMAGE_BYTES)
        } else {
            match frame.first() {
                Some(b'F') if frame.len() == 1 => {
                    self.figure_opened = true;
                    return true;
                }
                Some(b'R' | b'E') => (MAX_DOOR_FRAMES, MAX_REPORT_BYTES),
                _ => return false,
            }
        };
        if self.frames.len() >= count || self.bytes + frame.len() > bytes {
            return false;
        }
        self.bytes += frame.len();
        self.frames.push(frame);
        true
    }
}

/// Byte and entry quota over a session's writable mounts.
///
/// Every write and creation is charged before it happens. When the running total would pass
/// the quota, the folders are scanned (without following links) to learn the true usage
/// (deletions, overwrites and files added from outside all show up) before saying no.
#[derive(Debug)]
pub struct DiskQuota {
    pub roots: Vec<PathBuf>,
    pub max_bytes: u64,
    pub max_files: u64,
    pub used_bytes: u64,
    pub used_files: u64,
    pub hit: bool,
}

impl DiskQuota {
    /// Learn the true usage: the folders (links not followed) plus `held`, the files deleted
    /// while still open (see [`State::rescan_disk`]).
    pub fn rescan(&mut self, held: (u64, u64)) {
        let (mut bytes, mut files) = held;
        for root in &self.roots {
            for entry in walkdir::WalkDir::new(root)
                .follow_links(false)
                .min_depth(1)
                .into_iter()
                .flatten()
            {
                files += 1;
                if let Ok(md) = entry.metadata()
                    && md.is_file()
                {
                    bytes += md.len();
                }
            }
        }
        self.used_bytes = bytes;
        self.used_files = files;
    }

    fn fits(&self, bytes: u64, files: u64) -> bool {
        self.used_bytes.saturating_add(bytes) <= self.max_bytes
            && self.used_files.saturating_add(files) <= self.max_files
    }
}

impl State {
    /// Recount what the session occupies on the host's disk: its folders, and the files the
    /// guest deleted (or replaced by a rename) while a handle still holds them. Their bytes stay
    /// used until the handle closes, and no walk of the folders can see them.
    pub fn rescan_disk(&mut self) {
        let held = unlinked_open_files(&mut self.wasi);
        self.disk.rescan(held);
    }

    /// Charge a write or creation before it happens; `false` (and the quota marked hit) if it
    /// would pass the quota even after a recount.
    pub fn charge_disk(&mut self, bytes: u64, files: u64) -> bool {
        if !self.disk.fits(bytes, files) {
            self.rescan_disk();
            if !self.disk.fits(bytes, files) {
                self.disk.hit = true;
                return false;
            }
        }
        self.disk.used_bytes += bytes;
        self.disk.used_files += files;
        true
    }
}

/// Bytes and count of the files the guest holds open that no longer have a name (each inode
/// once, however many handles share it).
fn unlinked_open_files(wasi: &mut WasiP1Ctx) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    use wasmtime_wasi::filesystem::Descriptor;
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut files) = (0u64, 0u64);
    for entry in wasi.ctx().table.iter_mut() {
        let Some(Descriptor::File(f)) = entry.downcast_ref::<Descriptor>() else {
            continue;
        };
        let Ok(md) = f.file.metadata() else { continue };
        if md.nlink() == 0 && seen.insert((md.dev(), md.ino())) {
            bytes += md.len();
            files += 1;
        }
    }
    (bytes, files)
}

// ---------------------------------------------------------------------------------------------
// Output capture

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Called with each kept chunk of output as the guest writes it.
pub type OutputTap = Arc<dyn Fn(StreamKind, &[u8]) + Send + Sync>;

#[derive(Default)]
struct SinkInner {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
    tap: Option<OutputTap>,
}

/// A stdout/stderr capture that keeps up to `cap` bytes of each call and drops the rest while
/// telling the guest every write succeeded.
#[derive(Clone)]
pub struct OutputSink {
    kind: StreamKind,
    inner: Arc<Mutex<SinkInner>>,
}

impl OutputSink {
    pub fn new(kind: StreamKind) -> OutputSink {
        OutputSink {
            kind,
            inner: Arc::default(),
        }
    }

    /// Start a call: clear the buffer, set the cap and the tap.
    pub fn reset(&self, cap: usize, tap: Option<OutputTap>) {
        let mut s = self.inner.lock().expect("sink lock");
        s.buf.clear();
        s.cap = cap;
        s.truncated = false;
        s.tap = tap;
    }

    /// Take what was captured since `reset`, and whether anything was dropped.
    pub fn take(&self) -> (Vec<u8>, bool) {
        let mut s = self.inner.lock().expect("sink lock");
        s.tap = None;
        (std::mem::take(&mut s.buf), s.truncated)
    }

    fn write(&self, data: &[u8]) {
        let mut s = self.inner.lock().expect("sink lock");
        let room = s.cap.saturating_sub(s.buf.len());
        let keep = &data[..data.len().min(room)];
        if keep.len() < data.len() {
            s.truncated = true;
        }
        if !keep.is_empty() {
            s.buf.extend_from_slice(keep);
            if let Some(tap) = &s.tap {
                tap(self.kind, keep);
            }
        }
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for OutputSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Linker

/// Read a little-endian u32 from guest memory, if in bounds.
fn read_u32(mem: &[u8], ptr: u32) -> Option<u32> {
    let start = ptr as usize;
    let bytes = mem.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Bytes the host will write for `fd_write`/`fd_pwrite`: wasmtime-wasi writes the first
/// non-empty iovec per call.
fn first_iovec_len(mem: &[u8], iovs: i32, iovs_len: i32) -> u64 {
    let (iovs, n) = (iovs as u32, (iovs_len as u32).min(1024));
    for i in 0..n {
        let Some(at) = iovs.checked_add(i * 8) else {
            return 0;
        };
        match read_u32(mem, at.wrapping_add(4)) {
            Some(0) => continue,
            Some(len) => return u64::from(len),
            None => return 0,
        }
    }
    0
}

/// If the one `subscription` at `subs` is a relative clock timeout (and the pointers are
/// aligned as preview1 requires), its userdata and duration.
fn lone_relative_sleep(
    mem: &[u8],
    subs: i32,
    events: i32,
    nevents: i32,
) -> Option<(u64, std::time::Duration)> {
    const EVENTTYPE_CLOCK: u8 = 0;
    const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
    let (subs, events, nevents) = (subs as u32, events as u32, nevents as u32);
    if subs % 8 != 0 || events % 8 != 0 || nevents % 4 != 0 {
        return None;
    }
    let at = subs as usize;
    // `subscription`: userdata u64, tag u8 at 8, `subscription_clock` at 16 (id u32,
    // timeout u64 at 24, precision u64 at 32, flags u16 at 40); 48 bytes.
    let sub = mem.get(at..at.checked_add(48)?)?;
    if sub[8] != EVENTTYPE_CLOCK {
        return None;
    }
    let flags = u16::from_le_bytes(sub[40..42].try_into().ok()?);
    if flags & SUBCLOCKFLAGS_ABSTIME != 0 {
        return None;
    }
    let userdata = u64::from_le_bytes(sub[..8].try_into().ok()?);
    let timeout = u64::from_le_bytes(sub[24..32].try_into().ok()?);
    Some((userdata, std::time::Duration::from_nanos(timeout)))
}

/// Run the original wasmtime-wasi implementation of a preview1 function with the caller's
/// memory and context, as the generated bindings do.
macro_rules! forward {
    ($caller:ident, $func:ident ( $($arg:expr),* )) => {{
        let fuel = $caller.as_context_mut().hostcall_fuel();
        let Some(wasmtime::Extern::Memory(m)) = $caller.get_export("memory") else {
            wasmtime::bail!("missing required memory export");
        };
        let (mem, state) = m.data_and_store_mut(&mut $caller);
        let ctx = &mut state.wasi;
        ctx.set_hostcall_fuel(fuel);
        let mut mem = wiggle::GuestMemory::Unshared(mem);
        p1::$func(ctx, &mut mem $(, $arg)*).await
    }};
}

/// Bytes of hole a write of `n` bytes to `fd` at `at` (default: the fd's position) would leave
/// before it, so that a sparse file is charged at its logical size: `seek(2**40); write(b'x')`
/// must not make a terabyte file that the host would then hash and read.
async fn hole_before_write(
    caller: &mut Caller<'_, State>,
    fd: i32,
    n: u64,
    at: Option<u64>,
) -> u64 {
    if n == 0 {
        return 0;
    }
    let fuel = caller.as_context_mut().hostcall_fuel();
    let ctx = &mut caller.data_mut().wasi;
    ctx.set_hostcall_fuel(fuel);
    // The preview1 calls write their answers into "guest memory": here a host scratch buffer
    // (offset at 0, `filestat` at 8 with its size at 8 + 32).
    let mut scratch = [0u8; 72];
    let (tell, stat) = {
        let mut mem = wiggle::GuestMemory::Unshared(&mut scratch);
        let tell = match at {
            Some(_) => Ok(0),
            None => p1::fd_tell(ctx, &mut mem, fd, 0),
        };
        (tell, p1::fd_filestat_get(ctx, &mut mem, fd, 8).await)
    };
    if !matches!((tell, stat), (Ok(0), Ok(0))) {
        return 0;
    }
    let word = |at: usize| u64::from_le_bytes(scratch[at..at + 8].try_into().expect("8 bytes"));
    let pos = at.unwrap_or_else(|| word(0));
    pos.saturating_sub(word(40))
}

fn guest_memory<'a>(caller: &'a mut Caller<'_, State>) -> &'a [u8] {
    match caller.get_export("memory") {
        Some(wasmtime::Extern::Memory(m)) => m.data(caller),
        _ => &[],
    }
}

/// The linker every instance uses: WASI preview1 (async), the fences above, and the door.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<State>> {
    let mut linker: Linker<State> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut State| &mut s.wasi)?;
    linker.allow_shadowing(true);
    const M: &str = "wasi_snapshot_preview1";

    linker.func_wrap_async(
        M,
        "fd_write",
        |mut caller: Caller<'_, State>, (fd, iovs, iovs_len, nwritten): (i32, i32, i32, i32)| {
            Box::new(async move {
                if fd > 2 {
                    let n = first_iovec_len(guest_memory(&mut caller), iovs, iovs_len);
                    let hole = hole_before_write(&mut caller, fd, n, None).await;
                    if !caller.data_mut().charge_disk(n.saturating_add(hole), 0) {
                        return Ok(ERRNO_NOSPC);
                    }
                }
                forward!(caller, fd_write(fd, iovs, iovs_len, nwritten))
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "fd_pwrite",
        |mut caller: Caller<'_, State>,
         (fd, iovs, iovs_len, offset, nwritten): (i32, i32, i32, i64, i32)| {
            Box::new(async move {
                let n = first_iovec_len(guest_memory(&mut caller), iovs, iovs_len);
                let at = u64::try_from(offset).unwrap_or(0);
                let hole = hole_before_write(&mut caller, fd, n, Some(at)).await;
                if !caller.data_mut().charge_disk(n.saturating_add(hole), 0) {
                    return Ok(ERRNO_NOSPC);
                }
                forward!(caller, fd_pwrite(fd, iovs, iovs_len, offset, nwritten))
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "fd_filestat_set_size",
        |mut caller: Caller<'_, State>, (fd, size): (i32, i64)| {
            Box::new(async move {
                if !caller.data_mut().charge_disk(size as u64, 0) {
                    return Ok(ERRNO_NOSPC);
                }
                forward!(caller, fd_filestat_set_size(fd, size))
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "path_open",
        |mut caller: Caller<'_, State>,
         (dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            Box::new(async move {
                const OFLAGS_CREAT: i32 = 1;
                // Every open file or folder holds a host file descriptor: a guest that never
                // closes them would take the whole process's.
                let handles = caller.data_mut().wasi.ctx().table.iter_mut().count();
                if handles >= MAX_GUEST_HANDLES {
                    return Ok(ERRNO_MFILE);
                }
                if oflags & OFLAGS_CREAT != 0 && !caller.data_mut().charge_disk(0, 1) {
                    return Ok(ERRNO_NOSPC);
                }
                forward!(
                    caller,
                    path_open(
                        dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened
                    )
                )
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "path_create_directory",
        |mut caller: Caller<'_, State>, (dirfd, path, path_len): (i32, i32, i32)| {
            Box::new(async move {
                if !caller.data_mut().charge_disk(0, 1) {
                    return Ok(ERRNO_NOSPC);
                }
                forward!(caller, path_create_directory(dirfd, path, path_len))
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "path_symlink",
        |mut caller: Caller<'_, State>,
         (old, old_len, dirfd, new, new_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                if !caller.data_mut().charge_disk(0, 1) {
                    return Ok(ERRNO_NOSPC);
                }
                forward!(caller, path_symlink(old, old_len, dirfd, new, new_len))
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "poll_oneoff",
        |mut caller: Caller<'_, State>, (subs, events, nsubs, nevents): (i32, i32, i32, i32)| {
            Box::new(async move {
                // wasmtime-wasi answers a lone relative clock subscription (`select`/`poll`
                // with a timeout and no fds, asyncio's idle loop) with `std::thread::sleep`
                // when blocking is allowed, as it is here for file I/O. A blocked thread cannot
                // be interrupted at the deadline, so sleep on the async clock instead: the call
                // is then dropped at the deadline like any other wait.
                let lone = (nsubs == 1)
                    .then(|| lone_relative_sleep(guest_memory(&mut caller), subs, events, nevents))
                    .flatten();
                let Some((userdata, sleep)) = lone else {
                    return forward!(caller, poll_oneoff(subs, events, nsubs, nevents));
                };
                if !sleep.is_zero() {
                    tokio::time::sleep(sleep).await;
                }
                let Some(wasmtime::Extern::Memory(m)) = caller.get_export("memory") else {
                    return Ok(ERRNO_FAULT);
                };
                // `event`: userdata u64, errno u16 (success), eventtype u8 (clock), then
                // `event_fd_readwrite` at 16 (nbytes 1, as wasmtime-wasi reports it).
                let mut event = [0u8; 32];
                event[..8].copy_from_slice(&userdata.to_le_bytes());
                event[16..24].copy_from_slice(&1u64.to_le_bytes());
                let written = m
                    .write(&mut caller, events as u32 as usize, &event)
                    .and_then(|_| {
                        m.write(&mut caller, nevents as u32 as usize, &1u32.to_le_bytes())
                    });
                Ok(if written.is_ok() { 0 } else { ERRNO_FAULT })
            })
        },
    )?;
    // stdin, stdout and stderr stay what the host made them for the interpreter's life: closing
    // one would silence every later call of the session, and renumbering a file onto stdout
    // would let writes to it skip the disk quota.
    linker.func_wrap_async(
        M,
        "fd_close",
        |mut caller: Caller<'_, State>, (fd,): (i32,)| {
            Box::new(async move {
                if (0..=2).contains(&fd) {
                    return Ok(ERRNO_PERM);
                }
                forward!(caller, fd_close(fd))
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "fd_renumber",
        |mut caller: Caller<'_, State>, (from, to): (i32, i32)| {
            Box::new(async move {
                if (0..=2).contains(&from) || (0..=2).contains(&to) {
                    return Ok(ERRNO_PERM);
                }
                forward!(caller, fd_renumber(from, to))
            })
        },
    )?;
    linker.func_wrap(
        M,
        "path_link",
        |_: Caller<'_, State>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            Ok(ERRNO_PERM)
        },
    )?;

    // The door: -1 ("no host") unless Oasis's hook is running; then frames are collected.
    linker.func_wrap_async(
        "host",
        "call",
        |mut caller: Caller<'_, State>, (req, req_len, out_pp, out_lp): (i32, i32, i32, i32)| {
            Box::new(async move { Ok(door_call(&mut caller, req, req_len, out_pp, out_lp).await) })
        },
    )?;
    Ok(linker)
}

async fn door_call(
    caller: &mut Caller<'_, State>,
    req: i32,
    req_len: i32,
    out_pp: i32,
    out_lp: i32,
) -> i32 {
    if !caller.data().door.open {
        return -1;
    }
    let (start, len) = (req as u32 as usize, req_len as u32 as usize);
    if len > MAX_DOOR_FRAME {
        return -2;
    }
    let frame = match guest_memory(caller).get(start..start.saturating_add(len)) {
        Some(b) => b.to_vec(),
        None => return -2,
    };
    if !caller.data_mut().door.accept(frame) {
        return -2;
    }
    // Answer with an empty frame: allocate it in the guest and write its address and length.
    let Some(alloc) = caller
        .get_export("host_alloc")
        .and_then(|e| e.into_func())
        .and_then(|f| f.typed::<i32, i32>(&*caller).ok())
    else {
        return -2;
    };
    let Ok(ptr) = alloc.call_async(&mut *caller, 0).await else {
        return -2;
    };
    if ptr == 0 {
        return -2;
    }
    let Some(wasmtime::Extern::Memory(m)) = caller.get_export("memory") else {
        return -2;
    };
    let ok = m
        .write(
            &mut *caller,
            out_pp as u32 as usize,
            &(ptr as u32).to_le_bytes(),
        )
        .and_then(|_| m.write(&mut *caller, out_lp as u32 as usize, &0u32.to_le_bytes()));
    if ok.is_err() {
        return -2;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest that calls the door with whatever pointers and lengths it is given. Its
    /// `host_alloc` answers from a bump pointer, or 0 ("out of memory") when asked to.
    const PROBE_WAT: &str = r#"
        (module
          (import "host" "call" (func $call (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 0) "Rxyz")
          (global $fail (mut i32) (i32.const 0))
          (func (export "fail_alloc") (global.set $fail (i32.const 1)))
          (func (export "host_alloc") (param i32) (result i32)
            (if (result i32) (global.get $fail)
              (then (i32.const 0))
              (else (i32.const 4096))))
          (func (export "probe") (param i32 i32 i32 i32) (result i32)
            (call $call (local.get 0) (local.get 1) (local.get 2) (local.get 3))))
    "#;

    fn store(engine: &wasmtime::Engine, open: bool) -> wasmtime::Store<State> {
        let state = State {
            wasi: wasmtime_wasi::WasiCtxBuilder::new().build_p1(),
            limiter: MemoryLimiter {
                max_bytes: 1 << 30,
                hit: false,
            },
            disk: DiskQuota {
                roots: vec![],
                max_bytes: u64::MAX,
                max_files: u64::MAX,
                used_bytes: 0,
                used_files: 0,
                hit: false,
            },
            door: Door {
                open,
                ..Door::default()
            },
        };
        let mut store = wasmtime::Store::new(engine, state);
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    #[tokio::test]
    async fn hostile_24_the_door_answers_bad_pointers_and_lengths_with_an_error() {
        let engine = crate::sandbox::engine::new_engine().unwrap();
        let module = wasmtime::Module::new(&engine, PROBE_WAT).unwrap();
        let linker = linker(&engine).unwrap();
        let page = 65536;
        for open in [false, true] {
            let mut store = store(&engine, open);
            let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
            let probe = instance
                .get_typed_func::<(i32, i32, i32, i32), i32>(&mut store, "probe")
                .unwrap();
            let mut call = async |args| probe.call_async(&mut store, args).await.unwrap();
            if !open {
                // Closed: "no host", whatever the arguments.
                assert_eq!(call((0, 4, 8, 12)).await, -1);
                continue;
            }
            for args in [
                (-1, 16, 8, 12),                         // request past the end of memory
                (page - 4, 16, 8, 12),                   // request straddling the end
                (0, -1, 8, 12),                          // a 4 GiB request
                (0, (MAX_DOOR_FRAME + 1) as i32, 8, 12), // over the frame cap
                (0, 4, -4, 12),                          // answer pointer out of bounds
                (0, 4, 8, page),                         // answer length pointer out of bounds
            ] {
                assert_eq!(call(args).await, -2, "{args:?}");
            }
            assert_eq!(call((0, 4, 8, 12)).await, 0);
            let fail = instance
                .get_typed_func::<(), ()>(&mut store, "fail_alloc")
                .unwrap();
            fail.call_async(&mut store, ()).await.unwrap();
            assert_eq!(
                probe.call_async(&mut store, (0, 4, 8, 12)).await.unwrap(),
                -2
            );
            // What arrived is kept as bytes, within the per-call bounds.
            assert!(store.data().door.frames.iter().all(|f| f.len() == 4));
        }
    }

    #[test]
    fn hostile_23_a_module_importing_anything_not_granted_does_not_link() {
        let engine = crate::sandbox::engine::new_engine().unwrap();
        let linker = linker(&engine).unwrap();
        for import in [
            r#"(import "env" "evil" (func))"#,
            r#"(import "wasi_snapshot_preview1" "sock_open" (func (param i32 i32 i32) (result i32)))"#,
            r#"(import "host" "exec" (func))"#,
        ] {
            let module = wasmtime::Module::new(&engine, format!("(module {import})")).unwrap();
            let err = linker.instantiate_pre(&module).err().expect(import);
            assert!(format!("{err:#}").contains("unknown import"), "{err:#}");
        }
    }
}
