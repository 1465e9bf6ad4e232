//! Per-call limits, enforced while the guest runs.

use std::time::Duration;

/// Limits for one call. Defaults come from the image manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Wall-clock deadline; ends CPU loops (epoch interruption) and sleeps (the call is dropped).
    pub timeout: Duration,
    /// Linear-memory cap; growth past it fails and the guest sees `MemoryError`.
    pub memory_bytes: u64,
    /// Bytes of stdout kept; the rest is dropped and the result flagged truncated.
    pub stdout_bytes: usize,
    /// Bytes of stderr kept.
    pub stderr_bytes: usize,
    /// Bytes in `/mnt/data` and `/tmp` together; writes past it fail with `ENOSPC`.
    pub disk_bytes: u64,
    /// Files, folders and links in `/mnt/data` and `/tmp` together.
    pub disk_files: u64,
}

/// The smallest memory cap an interpreter can start with (the pre-initialized image's linear
/// memory is about 80 MiB before any user code runs).
pub const MIN_MEMORY_BYTES: u64 = 128 << 20;

/// Largest source a call may submit.
pub const MAX_CODE_BYTES: usize = 4 << 20;
