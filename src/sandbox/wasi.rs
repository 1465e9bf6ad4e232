//! The guest's view of the world: WASI preview1 with Oasis's fences on top.
//!
//! Defaults, all deliberate: no inherited env, args or stdin; no sockets (preview1 cannot open
//! any and none are granted); only the preopens a session asks for. On top of wasmtime-wasi:
//! - stdout/stderr go to [`OutputSink`]s that keep up to a cap and drop the rest quietly;
//! - writes and creations in the writable mounts are charged to a [`DiskQuota`] *before* they
//!   happen, and refused with `ENOSPC` past it;
//! - hard links are refused (`EPERM`): a link from a read-only mount into a writable one would
//!   make a shared file writable;
//! - `host.call` (the runtime's door) carries the `_oasis` helper's reports (last value,
//!   exception, figures), bounded in count and size per call.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use wasmtime::{AsContextMut, Caller, Linker, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p1::wasi_snapshot_preview1 as p1;
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;

/// WASI errno values used by the fences.
const ERRNO_NOSPC: i32 = 51;
const ERRNO_PERM: i32 = 63;

/// Largest frame the guest may pass through the door (a PNG of a large figure fits easily).
pub const MAX_DOOR_FRAME: usize = 32 << 20;
/// Most door frames per call (figures per turn + the report).
pub const MAX_DOOR_FRAMES: usize = 256;

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
    pub frames: Vec<Vec<u8>>,
    pub bytes: usize,
    /// A `F` frame arrived: a matplotlib figure was opened.
    pub figure_opened: bool,
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
    pub fn rescan(&mut self) {
        let (mut bytes, mut files) = (0u64, 0u64);
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

    fn charge(&mut self, bytes: u64, files: u64) -> bool {
        let fits = |q: &DiskQuota| {
            q.used_bytes.saturating_add(bytes) <= q.max_bytes
                && q.used_files.saturating_add(files) <= q.max_files
        };
        if !fits(self) {
            self.rescan();
            if !fits(self) {
                self.hit = true;
                return false;
            }
        }
        self.used_bytes += bytes;
        self.used_files += files;
        true
    }
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
                    if !caller.data_mut().disk.charge(n, 0) {
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
                if !caller.data_mut().disk.charge(n, 0) {
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
                if !caller.data_mut().disk.charge(size as u64, 0) {
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
                if oflags & OFLAGS_CREAT != 0 && !caller.data_mut().disk.charge(0, 1) {
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
                if !caller.data_mut().disk.charge(0, 1) {
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
                if !caller.data_mut().disk.charge(0, 1) {
                    return Ok(ERRNO_NOSPC);
                }
                forward!(caller, path_symlink(old, old_len, dirfd, new, new_len))
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
    {
        let door = &mut caller.data_mut().door;
        if frame == b"F" {
            door.figure_opened = true;
        } else if door.frames.len() >= MAX_DOOR_FRAMES || door.bytes + len > MAX_DOOR_FRAME * 4 {
            return -2;
        } else {
            door.bytes += len;
            door.frames.push(frame);
        }
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
