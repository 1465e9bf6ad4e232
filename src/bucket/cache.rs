//! The local cache of an S3 bucket's objects: copies for code that needs a path, checked by
//! ETag, least recently used evicted past a budget.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Cached copies of S3 objects kept on a node, in bytes (a copy used in the last
/// [`CACHE_PINNED`] is kept even past it).
pub const CACHE_BUDGET: u64 = 2 << 30;
/// How long a cached copy handed out is safe from eviction (a sandbox may copy it later).
pub(super) const CACHE_PINNED: Duration = Duration::from_secs(600);

/// Cached copies of remote objects, least recently used evicted past [`CACHE_BUDGET`].
pub(super) struct Cache {
    /// Copies by key.
    pub(super) dir: PathBuf,
    /// Temporary files: downloads under way, uploads being received.
    pub(super) staging: PathBuf,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<String, CacheEntry>,
    total: u64,
}

struct CacheEntry {
    size: u64,
    etag: Option<String>,
    used: Instant,
}

impl Cache {
    /// The cache in `root`, emptied (what a previous run left is not known to be current).
    pub(super) fn open(root: &Path) -> anyhow::Result<Cache> {
        match std::fs::remove_dir_all(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("emptying {}: {e}", root.display()),
        }
        let (dir, staging) = (root.join("objects"), root.join("staging"));
        for d in [&dir, &staging] {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", d.display()))?;
        }
        Ok(Cache {
            dir,
            staging,
            state: Mutex::new(CacheState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ETag of the copy of `key` at `path`, if there is one.
    pub(super) async fn etag(&self, key: &str, path: &Path) -> Option<String> {
        let etag = self.state().entries.get(key)?.etag.clone()?;
        tokio::fs::try_exists(path)
            .await
            .unwrap_or(false)
            .then_some(etag)
    }

    pub(super) fn touch(&self, key: &str) {
        if let Some(e) = self.state().entries.get_mut(key) {
            e.used = Instant::now();
        }
    }

    /// Note the copy of `key` just written, and evict others past the budget.
    pub(super) fn insert(&self, key: &str, size: u64, etag: Option<String>) {
        let mut st = self.state();
        let old = st.entries.insert(
            key.to_string(),
            CacheEntry {
                size,
                etag,
                used: Instant::now(),
            },
        );
        st.total = st.total - old.map_or(0, |o| o.size) + size;
        if st.total <= CACHE_BUDGET {
            return;
        }
        let mut old: Vec<(Instant, String)> = st
            .entries
            .iter()
            .filter(|(k, e)| k.as_str() != key && e.used.elapsed() > CACHE_PINNED)
            .map(|(k, e)| (e.used, k.clone()))
            .collect();
        old.sort();
        for (_, k) in old {
            if st.total <= CACHE_BUDGET {
                break;
            }
            if let Some(e) = st.entries.remove(&k) {
                st.total -= e.size;
                let _ = std::fs::remove_file(self.dir.join(&k));
            }
        }
    }

    /// Drop the copy of `key` (its object changed or is gone).
    pub(super) fn forget(&self, key: &str) {
        let mut st = self.state();
        if let Some(e) = st.entries.remove(key) {
            st.total -= e.size;
        }
        let _ = std::fs::remove_file(self.dir.join(key));
    }
}
