//! Hibernated interpreters: what a quiet interpreter is, as one file — the 4 KiB chunks of its
//! linear memory that differ from its image's fresh instance (zstd), the memory's size, every
//! mutable global, and what the host keeps for it — and the checks that file passes before
//! any of it touches a fresh instance.
//!
//! Layout: `OASISHB2`, the SHA-256 of everything after it, a little-endian `u32` header
//! length, the header (JSON), then the body: one zstd frame holding the differing chunks'
//! indices (`u32`, strictly increasing) followed by each chunk XORed with the image's bytes
//! there (zeros past the image's memory). A chunk of a CPython heap usually differs from the
//! image in a few words (reference counts, links), so its XOR is mostly zeros: 4-10x smaller
//! and 2.5-5x faster to compress and decompress than the chunk itself. A fresh instance holds
//! the image's bytes, so a resume XORs each stored chunk into it in place.
//!
//! Finding the chunks that differ need not read the whole memory: on Linux, a page that
//! `/proc/self/pagemap` shows still mapped to the module's memory image (copy-on-write, never
//! written) or never mapped holds the image's bytes, and is skipped ([`clean_chunks`]). That
//! reading is trusted only after [`pagemap_probe`] saw it tell a written page from its
//! neighbours on a fresh instance of the image; otherwise every chunk is compared.
//!
//! The file is untrusted input (it lives on disk, and later in an object store): its size is
//! checked before it is read, its digest before it is parsed, its header before the body is
//! decompressed, and the body is decompressed straight into the new instance's memory in
//! bounded reads; nothing is allocated from a length the file claims except the index list,
//! which is bounded by the memory limit.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The state file's name inside a session's folder (beside `data/` and `tmp/`, never mounted).
pub const STATE_FILE: &str = "hibernated.state";

const MAGIC: &[u8; 8] = b"OASISHB2";
/// The first format (chunks stored as they are), refused with its own reason.
const MAGIC_V1: &[u8; 8] = b"OASISHB1";
/// Bytes compared and stored per chunk (the host's page size).
pub const CHUNK: usize = 4096;
const PREFIX_LEN: usize = 8 + 32 + 4;
const MAX_HEADER: usize = 64 << 10;
const MAX_GLOBALS: usize = 256;
/// zstd level: the chunks' XORs with the image compress 10-25x at 1. Level 3 saves ~5 % more
/// at 1.5x the time; -1 stores ~10 % more and, measured through `encode`, saves only ~8 % of
/// its time (BENCHMARKS.md).
const LEVEL: i32 = 1;
/// Largest zstd window a state may ask of the decoder (8 MiB; level 1 uses far less).
const WINDOW_LOG_MAX: u32 = 23;

/// A value type of a global.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalKind {
    I32,
    I64,
    F32,
    F64,
}

/// A mutable global's value (its export name, type, and bits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedGlobal {
    pub name: String,
    pub kind: GlobalKind,
    pub bits: u64,
}

/// What the host restores besides the instance: the helper's flags, and the monotonic clock
/// (so the guest's `time.monotonic()` never runs backwards across a resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub installed: bool,
    pub figures_hooked: bool,
    pub monotonic_ns: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    /// The image's state key: its module (runtime pin, recipe), wasmtime and engine config.
    key: String,
    memory_bytes: u64,
    chunk_bytes: u64,
    chunks: u64,
    body_bytes: u64,
    globals: Vec<SavedGlobal>,
    host: HostState,
}

/// Why a state was not applied (the session then starts fresh and says so).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(why: impl Into<String>) -> Refused {
    Refused(why.into())
}

/// A state ready to write, and what it holds.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// Chunks that differ from the image.
    pub chunks: usize,
    /// Where the time went (`write` is left for the caller to fill in).
    pub timings: HibernateTimings,
}

/// Where one hibernation's time went (for `oasis bench sandbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HibernateTimings {
    /// Finding the chunks that differ from the image.
    pub diff: Duration,
    /// zstd over the indices and the chunks.
    pub compress: Duration,
    /// The header, and the SHA-256 over the file.
    pub digest: Duration,
    /// Writing the file atomically (synced).
    pub write: Duration,
    /// Dropping the interpreter (unmapping its memory), when it is not kept.
    pub release: Duration,
}

/// Where one resume's time went (for `oasis bench sandbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeTimings {
    /// Reading the state file.
    pub read: Duration,
    /// Its digest and header checks.
    pub check: Duration,
    /// A fresh instance of the image.
    pub instantiate: Duration,
    /// Growing the memory, decompressing the chunks into it, setting the globals.
    pub apply: Duration,
    /// All of it, from the state file to a ready interpreter.
    pub total: Duration,
}

/// The image's bytes of chunk `i`: `base`'s, or zeros past it (grown memory starts zeroed).
fn base_chunk(base: &[u8], i: usize) -> &[u8; CHUNK] {
    static ZERO: [u8; CHUNK] = [0; CHUNK];
    base.get(i * CHUNK..(i + 1) * CHUNK)
        .map_or(&ZERO, |b| b.try_into().expect("one chunk"))
}

/// `dst ^= src`, a chunk at a time (the compiler vectorizes it).
fn xor_into(dst: &mut [u8; CHUNK], src: &[u8; CHUNK]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// `dst ^= src` where `dst` is a page of a fresh instance, with a write as its first access: a
/// page not yet written is a copy-on-write mapping of the image, and a read first would fault
/// it in twice (mapped to read, then copied to write), which costs a resume about as much as
/// decompressing. An atomic read-modify-write of the first byte faults it in writable at once.
fn xor_into_fresh(dst: &mut [u8; CHUNK], src: &[u8; CHUNK]) {
    {
        // SAFETY: the pointer comes from an exclusive reference, valid for this block, and no
        // other access to the byte happens while `first` lives; `AtomicU8` has `u8`'s size and
        // alignment.
        let first = unsafe { std::sync::atomic::AtomicU8::from_ptr(dst.as_mut_ptr()) };
        // Sequentially consistent: no access below is moved above it. (A constant operand of
        // 0 could be lowered to a plain load; `src[0]` is not known to the compiler.)
        first.fetch_xor(src[0], std::sync::atomic::Ordering::SeqCst);
    }
    for (d, s) in dst[1..].iter_mut().zip(&src[1..]) {
        *d ^= s;
    }
}

/// Encode an interpreter's state: `memory` compared with `base` (the image's fresh memory;
/// what lies past it is compared with zeros, as grown memory starts). `clean`, if known,
/// marks the chunks that certainly hold the image's bytes ([`clean_chunks`]): they are not
/// compared.
pub fn encode(
    key: &str,
    memory: &[u8],
    base: &[u8],
    clean: Option<&[bool]>,
    globals: Vec<SavedGlobal>,
    host: HostState,
) -> anyhow::Result<Encoded> {
    let started = Instant::now();
    let n = memory.len() / CHUNK;
    anyhow::ensure!(
        memory.len().is_multiple_of(CHUNK),
        "memory is not whole chunks"
    );
    anyhow::ensure!(
        clean.is_none_or(|c| c.len() == n),
        "the clean-chunk map is not the memory's size"
    );
    let chunk = |i: usize| -> &[u8; CHUNK] {
        memory[i * CHUNK..(i + 1) * CHUNK]
            .try_into()
            .expect("one chunk")
    };
    let differs: Vec<u32> = (0..n)
        .filter(|&i| {
            if clean.is_some_and(|c| c[i]) {
                // Tests (debug builds) hold the pagemap to its word.
                debug_assert!(
                    chunk(i) == base_chunk(base, i),
                    "chunk {i} is marked clean but differs from the image"
                );
                return false;
            }
            chunk(i) != base_chunk(base, i)
        })
        .map(|i| i as u32)
        .collect();
    let diffed = Instant::now();
    let mut z = zstd::stream::Encoder::new(Vec::new(), LEVEL)?;
    for i in &differs {
        z.write_all(&i.to_le_bytes())?;
    }
    let mut delta = [0u8; CHUNK];
    for &i in &differs {
        delta.copy_from_slice(chunk(i as usize));
        xor_into(&mut delta, base_chunk(base, i as usize));
        z.write_all(&delta)?;
    }
    let body = z.finish()?;
    let compressed = Instant::now();
    let header = serde_json::to_vec(&Header {
        key: key.to_string(),
        memory_bytes: memory.len() as u64,
        chunk_bytes: CHUNK as u64,
        chunks: differs.len() as u64,
        body_bytes: body.len() as u64,
        globals,
        host,
    })?;
    anyhow::ensure!(
        header.len() <= MAX_HEADER,
        "the state's header is too large"
    );
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 32]);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    let digest = Sha256::digest(&out[40..]);
    out[8..40].copy_from_slice(&digest);
    Ok(Encoded {
        bytes: out,
        chunks: differs.len(),
        timings: HibernateTimings {
            diff: diffed - started,
            compress: compressed - diffed,
            digest: compressed.elapsed(),
            write: Duration::ZERO,
            release: Duration::ZERO,
        },
    })
}

/// A state that passed its checks, not yet applied.
#[derive(Debug)]
pub struct Parsed<'a> {
    header: Header,
    body: &'a [u8],
}

/// Check a state file's bytes: its digest, that it was made for `key`, that its memory fits
/// `max_memory`, and that its header is consistent with its size.
pub fn parse<'a>(bytes: &'a [u8], key: &str, max_memory: u64) -> Result<Parsed<'a>, Refused> {
    if bytes.len() >= 8 && &bytes[..8] == MAGIC_V1 {
        return Err(refused(
            "it was written in an older format (chunks not XORed with the image)",
        ));
    }
    if bytes.len() < PREFIX_LEN || &bytes[..8] != MAGIC {
        return Err(refused("it is not a hibernated interpreter state"));
    }
    if Sha256::digest(&bytes[40..]).as_slice() != &bytes[8..40] {
        return Err(refused("its digest does not match (the file is damaged)"));
    }
    let len = u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER || PREFIX_LEN + len > bytes.len() {
        return Err(refused("its header length is out of bounds"));
    }
    let header: Header = serde_json::from_slice(&bytes[PREFIX_LEN..PREFIX_LEN + len])
        .map_err(|e| refused(format!("its header cannot be read: {e}")))?;
    let body = &bytes[PREFIX_LEN + len..];
    if header.key != key {
        return Err(refused(
            "it was made by another image, runtime pin or engine configuration",
        ));
    }
    if header.chunk_bytes != CHUNK as u64 {
        return Err(refused("its chunk size is not this version's"));
    }
    let m = header.memory_bytes;
    if m == 0 || !m.is_multiple_of(65536) {
        return Err(refused("its memory size is not whole wasm pages"));
    }
    if m > max_memory {
        return Err(refused(format!(
            "its memory ({} MiB) is over the session's memory limit ({} MiB)",
            m >> 20,
            max_memory >> 20
        )));
    }
    if header.chunks > m / CHUNK as u64 {
        return Err(refused("it claims more chunks than its memory holds"));
    }
    if header.body_bytes != body.len() as u64 {
        return Err(refused("its body is not the length its header says"));
    }
    if header.globals.len() > MAX_GLOBALS {
        return Err(refused("it has too many globals"));
    }
    Ok(Parsed { header, body })
}

impl Parsed<'_> {
    pub fn memory_bytes(&self) -> u64 {
        self.header.memory_bytes
    }

    pub fn globals(&self) -> &[SavedGlobal] {
        &self.header.globals
    }

    pub fn host(&self) -> HostState {
        self.header.host
    }

    pub fn chunks(&self) -> u64 {
        self.header.chunks
    }

    /// Write the stored chunks into `memory` (a fresh instance's, already grown to
    /// [`Self::memory_bytes`]: it holds the image's bytes, which each stored chunk is XORed
    /// into). On error the instance must be discarded.
    pub fn apply(&self, memory: &mut [u8]) -> Result<(), Refused> {
        if memory.len() as u64 != self.header.memory_bytes {
            return Err(refused("the instance's memory is not the state's size"));
        }
        let damaged = |e: std::io::Error| refused(format!("its body cannot be read: {e}"));
        let mut z = zstd::stream::Decoder::with_buffer(self.body).map_err(damaged)?;
        z.window_log_max(WINDOW_LOG_MAX).map_err(damaged)?;
        let total = memory.len() / CHUNK;
        let n = self.header.chunks as usize;
        let mut indices = Vec::with_capacity(n);
        let mut word = [0u8; 4];
        for _ in 0..n {
            z.read_exact(&mut word).map_err(damaged)?;
            let i = u32::from_le_bytes(word) as usize;
            if i >= total || indices.last().is_some_and(|&p| i <= p) {
                return Err(refused(
                    "its chunk indices are out of order or out of bounds",
                ));
            }
            indices.push(i);
        }
        let mut delta = [0u8; CHUNK];
        for i in indices {
            z.read_exact(&mut delta).map_err(damaged)?;
            let at: &mut [u8; CHUNK] = (&mut memory[i * CHUNK..(i + 1) * CHUNK])
                .try_into()
                .expect("one chunk");
            xor_into_fresh(at, &delta);
        }
        let mut extra = [0u8; 1];
        match z.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(refused("its body holds more than its header says")),
            Err(e) => Err(damaged(e)),
        }
    }
}

/// `/proc/self/pagemap` entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// A file page or shared anonymous page: in a private mapping of the memory image, a page that
/// was never written (a written one is a private anonymous copy).
const PM_FILE: u64 = 1 << 61;

/// For each 4 KiB chunk of `memory` (a linear memory of this process, page-aligned), whether
/// the kernel shows it still holding what its mapping started with: never mapped (neither
/// present nor swapped: the image's bytes or zeros on the next touch), or mapped to a file
/// page (the memory image, copy-on-write, not yet written). Anything else (written, swapped,
/// the shared zero page) is "maybe changed". `None` where the pagemap cannot be read. Only to
/// be trusted once [`pagemap_probe`] passed for the same kind of memory.
pub fn clean_chunks(memory: &[u8]) -> Option<Vec<bool>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::FileExt;
        let addr = memory.as_ptr() as usize;
        if !addr.is_multiple_of(CHUNK) || !memory.len().is_multiple_of(CHUNK) {
            return None;
        }
        let n = memory.len() / CHUNK;
        let f = std::fs::File::open("/proc/self/pagemap").ok()?;
        let mut raw = vec![0u8; n * 8];
        f.read_exact_at(&mut raw, (addr / CHUNK * 8) as u64).ok()?;
        Some(
            raw.chunks_exact(8)
                .map(|e| {
                    let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
                    if e & PM_PRESENT != 0 {
                        e & PM_FILE != 0
                    } else {
                        e & PM_SWAPPED == 0
                    }
                })
                .collect(),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = memory;
        None
    }
}

/// Whether [`clean_chunks`] can be trusted for memories made like `memory` (a fresh instance's,
/// about to be discarded: one byte of it is changed). Three neighbouring chunks inside the
/// memory image, all clean once read, must read clean, dirty, clean after the middle one is
/// written: so writes show (the image is mapped private, copy-on-write), reads do not, and a
/// chunk is a host page (with another page size the entries read are not these chunks').
pub fn pagemap_probe(memory: &mut [u8]) -> bool {
    let n = memory.len() / CHUNK;
    if n < 64 {
        return false;
    }
    let three = |memory: &[u8], k: usize| clean_chunks(&memory[(k - 1) * CHUNK..(k + 2) * CHUNK]);
    for i in 1..16 {
        let k = (i * n / 16) | 1;
        if k + 2 > n {
            continue;
        }
        for j in k - 1..=k + 1 {
            std::hint::black_box(memory[j * CHUNK]);
        }
        if three(memory, k).as_deref() != Some(&[true, true, true]) {
            // Not in the image (read as the shared zero page), or no pagemap.
            continue;
        }
        memory[k * CHUNK] ^= 1;
        std::hint::black_box(&mut memory[k * CHUNK]);
        return three(memory, k).as_deref() == Some(&[true, false, true]);
    }
    false
}

/// Write a state file atomically (a reader sees the old file or the new one, never half).
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::disk::write_atomic(path, bytes)
}

/// Read a state file, refusing one larger than `max_bytes` before reading it. `None` if
/// there is none.
pub fn read(path: &Path, max_bytes: u64) -> Result<Option<Vec<u8>>, Refused> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(format!("it cannot be opened: {e}"))),
    };
    let meta = f
        .metadata()
        .map_err(|e| refused(format!("it cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(refused("it is not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(refused(format!(
            "it is {} bytes, over the {max_bytes}-byte bound",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(format!("it cannot be read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(refused("it grew past its bound while being read"));
    }
    Ok(Some(bytes))
}

/// The largest state file a session whose memory may reach `max_memory` can have: every
/// chunk stored (zstd never grows data by more than a small fraction) plus the header.
pub fn max_file_bytes(max_memory: u64) -> u64 {
    let chunks = max_memory / CHUNK as u64;
    max_memory + max_memory / 64 + chunks * 4 + (PREFIX_LEN + MAX_HEADER) as u64 + (1 << 20)
}

/// Remove a session's state file (ignoring one that is not there).
pub fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "image-abc";
    const MIB: u64 = 1 << 20;

    fn host() -> HostState {
        HostState {
            installed: true,
            figures_hooked: false,
            monotonic_ns: 123,
        }
    }

    /// A 2 MiB base, and a 3 MiB memory differing in a few places (one past the base).
    fn memories() -> (Vec<u8>, Vec<u8>) {
        let base: Vec<u8> = (0..2 * MIB as usize).map(|i| (i % 251) as u8).collect();
        let mut mem = base.clone();
        mem.resize(3 * MIB as usize, 0);
        mem[10] ^= 1;
        mem[CHUNK * 7 + 5] = 0xAB;
        mem[2 * MIB as usize + CHUNK * 3] = 9;
        (base, mem)
    }

    fn globals() -> Vec<SavedGlobal> {
        vec![SavedGlobal {
            name: "oasis_global_0".into(),
            kind: GlobalKind::I32,
            bits: 5_000_000,
        }]
    }

    #[test]
    fn a_state_round_trips_into_a_fresh_copy_of_the_base() {
        let (base, mem) = memories();
        let e = encode(KEY, &mem, &base, None, globals(), host()).unwrap();
        assert_eq!(e.chunks, 3);
        assert!(e.bytes.len() < 64 << 10, "{} bytes", e.bytes.len());
        let p = parse(&e.bytes, KEY, 8 * MIB).unwrap();
        assert_eq!(p.memory_bytes(), 3 * MIB);
        assert_eq!(p.globals(), globals().as_slice());
        assert_eq!(p.host(), host());
        let mut fresh = base.clone();
        fresh.resize(3 * MIB as usize, 0);
        p.apply(&mut fresh).unwrap();
        assert!(fresh == mem);
    }

    #[test]
    fn chunks_are_stored_as_their_xor_with_the_image() {
        // Every chunk of the base differs from it in one word: the state stays small.
        let (base, _) = memories();
        let mut mem = base.clone();
        for c in 0..base.len() / CHUNK {
            mem[c * CHUNK + 64] ^= 0x5A;
        }
        let e = encode(KEY, &mem, &base, None, globals(), host()).unwrap();
        assert_eq!(e.chunks, base.len() / CHUNK);
        assert!(e.bytes.len() < base.len() / 50, "{} bytes", e.bytes.len());
        let p = parse(&e.bytes, KEY, 8 * MIB).unwrap();
        let mut fresh = base.clone();
        p.apply(&mut fresh).unwrap();
        assert!(fresh == mem);
    }

    #[test]
    fn chunks_marked_clean_are_not_compared() {
        let (base, mem) = memories();
        let n = mem.len() / CHUNK;
        // Chunk 7 is marked clean (wrongly, here): it is not stored. Debug builds check the
        // mark, so only a release build may be lied to; the check itself is what is tested.
        let mut clean = vec![false; n];
        clean[1] = true;
        let e = encode(KEY, &mem, &base, Some(&clean), globals(), host()).unwrap();
        assert_eq!(e.chunks, 3);
        assert!(encode(KEY, &mem, &base, Some(&clean[1..]), globals(), host()).is_err());
        if !cfg!(debug_assertions) {
            clean[7] = true;
            let e = encode(KEY, &mem, &base, Some(&clean), globals(), host()).unwrap();
            assert_eq!(e.chunks, 2);
        } else {
            clean[7] = true;
            let r = std::panic::catch_unwind(|| {
                encode(KEY, &mem, &base, Some(&clean), globals(), host())
            });
            assert!(r.is_err(), "a wrong clean mark passed the debug check");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_pagemap_shows_written_pages() {
        // A large zeroed allocation is a fresh anonymous mapping: its pages are not mapped
        // until touched.
        let mut v = vec![0u8; 64 << 20];
        let off = v.as_ptr().align_offset(CHUNK);
        let s = &mut v[off..off + 32 * CHUNK];
        let before = clean_chunks(s).expect("the pagemap is readable");
        assert_eq!(before.len(), 32);
        assert!(before[5], "an untouched page reads as changed");
        s[5 * CHUNK] = 1;
        std::hint::black_box(&mut s[5 * CHUNK]);
        assert!(
            !clean_chunks(s).unwrap()[5],
            "a written page reads as clean"
        );
        // Anonymous memory is no memory image: read pages map the shared zero page, which
        // is not clean, so the probe refuses it.
        assert!(!pagemap_probe(&mut v[off..off + 256 * CHUNK]));
    }

    #[test]
    fn a_state_of_the_first_format_is_refused_with_its_reason() {
        let (base, mem) = memories();
        let mut old = encode(KEY, &mem, &base, None, globals(), host())
            .unwrap()
            .bytes;
        old[..8].copy_from_slice(MAGIC_V1);
        assert!(
            parse(&old, KEY, 8 * MIB)
                .unwrap_err()
                .0
                .contains("older format")
        );
    }

    #[test]
    fn damaged_foreign_or_oversized_states_are_refused_before_use() {
        let (base, mem) = memories();
        let good = encode(KEY, &mem, &base, None, globals(), host())
            .unwrap()
            .bytes;
        // Every single bit flipped somewhere in the file is caught (digest, magic).
        for at in [0, 9, 41, 50, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(parse(&bad, KEY, 8 * MIB).is_err(), "flip at {at} passed");
        }
        // Truncated anywhere.
        for len in [0, 7, 40, 44, 60, good.len() - 1] {
            assert!(parse(&good[..len], KEY, 8 * MIB).is_err(), "{len} passed");
        }
        // Another image, or a memory over the limit.
        assert!(
            parse(&good, "another", 8 * MIB)
                .unwrap_err()
                .0
                .contains("another image")
        );
        assert!(
            parse(&good, KEY, 2 * MIB)
                .unwrap_err()
                .0
                .contains("memory limit")
        );
    }

    /// A state with a valid digest but lying contents (someone wrote it on purpose).
    fn forged(header: serde_json::Value, body: &[u8]) -> Vec<u8> {
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        let d = Sha256::digest(&out[40..]);
        out[8..40].copy_from_slice(&d);
        out
    }

    fn header(memory: u64, chunks: u64, body: &[u8]) -> serde_json::Value {
        serde_json::json!({"key": KEY, "memory_bytes": memory, "chunk_bytes": CHUNK,
            "chunks": chunks, "body_bytes": body.len(), "globals": [],
            "host": {"installed": true, "figures_hooked": false, "monotonic_ns": 0}})
    }

    #[test]
    fn forged_states_with_a_valid_digest_are_still_refused() {
        let z = |raw: &[u8]| zstd::bulk::compress(raw, 1).unwrap();
        // More chunks than memory; a memory that is not whole pages.
        let body = z(&[]);
        assert!(parse(&forged(header(MIB, 1000, &body), &body), KEY, 8 * MIB).is_err());
        assert!(parse(&forged(header(MIB + 1, 0, &body), &body), KEY, 8 * MIB).is_err());
        // Indices out of bounds, out of order; a body too short or too long.
        let cases: Vec<(u64, Vec<u8>)> = vec![
            (
                1,
                [999_999u32.to_le_bytes().to_vec(), vec![0; CHUNK]].concat(),
            ),
            (
                2,
                [5u32.to_le_bytes(), 5u32.to_le_bytes()]
                    .concat()
                    .into_iter()
                    .chain(vec![0; 2 * CHUNK])
                    .collect(),
            ),
            (
                1,
                [1u32.to_le_bytes().to_vec(), vec![0; CHUNK - 1]].concat(),
            ),
            (
                1,
                [1u32.to_le_bytes().to_vec(), vec![0; CHUNK + 1]].concat(),
            ),
        ];
        for (n, raw) in cases {
            let body = z(&raw);
            let file = forged(header(MIB, n, &body), &body);
            let p = parse(&file, KEY, 8 * MIB).unwrap();
            let mut mem = vec![0u8; MIB as usize];
            assert!(p.apply(&mut mem).is_err());
        }
        // A body that is not zstd at all.
        let junk = vec![7u8; 100];
        let file = forged(header(MIB, 1, &junk), &junk);
        let p = parse(&file, KEY, 8 * MIB).unwrap();
        assert!(p.apply(&mut vec![0u8; MIB as usize]).is_err());
    }

    #[test]
    fn an_oversized_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert_eq!(read(&path, 100).unwrap(), None);
        std::fs::write(&path, vec![0u8; 101]).unwrap();
        assert!(read(&path, 100).unwrap_err().0.contains("over the"));
        assert_eq!(read(&path, 101).unwrap().unwrap().len(), 101);
    }
}
