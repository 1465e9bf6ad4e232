//! Hibernated interpreters: what a quiet interpreter is, as one file — the 4 KiB chunks of its
//! linear memory that differ from its image's fresh instance (zstd), the memory's size, every
//! mutable global, and what the host keeps for it — and the checks that file passes before
//! any of it touches a fresh instance.
//!
//! Layout: `OASISHB1`, the SHA-256 of everything after it, a little-endian `u32` header
//! length, the header (JSON), then the body: one zstd frame holding the differing chunks'
//! indices (`u32`, strictly increasing) followed by their bytes.
//!
//! The file is untrusted input (it lives on disk, and later in an object store): its size is
//! checked before it is read, its digest before it is parsed, its header before the body is
//! decompressed, and the body is decompressed straight into the new instance's memory in
//! bounded reads; nothing is allocated from a length the file claims except the index list,
//! which is bounded by the memory limit.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The state file's name inside a session's folder (beside `data/` and `tmp/`, never mounted).
pub const STATE_FILE: &str = "hibernated.state";

const MAGIC: &[u8; 8] = b"OASISHB1";
/// Bytes compared and stored per chunk (the host's page size).
pub const CHUNK: usize = 4096;
const PREFIX_LEN: usize = 8 + 32 + 4;
const MAX_HEADER: usize = 64 << 10;
const MAX_GLOBALS: usize = 256;
/// zstd level: 1 is the fastest; pages of an interpreter compress 3-5x at it.
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
}

/// Encode an interpreter's state: `memory` compared with `base` (the image's fresh memory;
/// what lies past it is compared with zeros, as grown memory starts).
pub fn encode(
    key: &str,
    memory: &[u8],
    base: &[u8],
    globals: Vec<SavedGlobal>,
    host: HostState,
) -> anyhow::Result<Encoded> {
    static ZERO: [u8; CHUNK] = [0; CHUNK];
    let n = memory.len() / CHUNK;
    anyhow::ensure!(
        memory.len().is_multiple_of(CHUNK),
        "memory is not whole chunks"
    );
    let differs: Vec<u32> = (0..n)
        .filter(|&i| {
            let m = &memory[i * CHUNK..(i + 1) * CHUNK];
            match base.get(i * CHUNK..(i + 1) * CHUNK) {
                Some(b) => m != b,
                None => m != ZERO,
            }
        })
        .map(|i| i as u32)
        .collect();
    let mut z = zstd::stream::Encoder::new(Vec::new(), LEVEL)?;
    for i in &differs {
        z.write_all(&i.to_le_bytes())?;
    }
    for &i in &differs {
        let at = i as usize * CHUNK;
        z.write_all(&memory[at..at + CHUNK])?;
    }
    let body = z.finish()?;
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
    /// [`Self::memory_bytes`]). On error the instance must be discarded.
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
        for i in indices {
            z.read_exact(&mut memory[i * CHUNK..(i + 1) * CHUNK])
                .map_err(damaged)?;
        }
        let mut extra = [0u8; 1];
        match z.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(refused("its body holds more than its header says")),
            Err(e) => Err(damaged(e)),
        }
    }
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
        let e = encode(KEY, &mem, &base, globals(), host()).unwrap();
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
    fn damaged_foreign_or_oversized_states_are_refused_before_use() {
        let (base, mem) = memories();
        let good = encode(KEY, &mem, &base, globals(), host()).unwrap().bytes;
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
