//! The one wasmtime `Engine`, its epoch ticker, and the compiled-module cache.
//!
//! Compiling the 100 MB CPython module with Cranelift takes about a minute, so a module is
//! compiled once and its serialized form kept under `<data-dir>/cache/modules/`, keyed by the
//! input's SHA-256, the wasmtime version and the engine configuration. Each entry carries the
//! SHA-256 of its own bytes and is verified before `Module::deserialize_file` sees it; a stale or
//! corrupt entry is rebuilt. A file lock makes concurrent processes compile once.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, Module};

use super::progress::Progress;
use crate::disk::{lock_file, sha256_file, write_atomic};

/// Wall-clock length of one epoch tick; deadlines are checked at this granularity.
pub const TICK: Duration = Duration::from_millis(10);

/// wasmtime's version, part of every cache key.
pub const WASMTIME_VERSION: &str = "48";

/// Build the engine every sandbox shares: exceptions on (the runtime needs them), 8 MiB of wasm
/// stack (deep C recursion in `json` etc.), epoch interruption for deadlines and cancellation.
/// (The sandbox takes [`new_engine_with_cache`]; tests take this.)
#[cfg(test)]
pub fn new_engine() -> anyhow::Result<Engine> {
    Ok(new_engine_with_cache()?.0)
}

/// Cranelift's incremental compilation cache, in memory. Pre-initializing an image compiles
/// the runtime once to run it, and then its snapshot: the same functions (wizer changes only
/// data, globals and exports), so the second compile finds every function in the cache.
/// Emptied once an image is ready ([`CompileCache::clear`]).
#[derive(Debug, Default)]
pub struct CompileCache(std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>);

impl CompileCache {
    /// Drop every entry (they are only useful while an image is being built).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl wasmtime::CacheStore for CompileCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .map(std::borrow::Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_vec(), value);
        true
    }
}

/// [`new_engine`], with its incremental compilation cache.
pub fn new_engine_with_cache() -> anyhow::Result<(Engine, std::sync::Arc<CompileCache>)> {
    let cache = std::sync::Arc::new(CompileCache::default());
    let mut cfg = Config::new();
    cfg.enable_incremental_compilation(cache.clone())
        .map_err(anyhow::Error::from)
        .context("enabling incremental compilation")?;
    cfg.wasm_exceptions(true)
        .epoch_interruption(true)
        .max_wasm_stack(8 << 20)
        .async_stack_size(10 << 20)
        .memory_init_cow(true)
        .parallel_compilation(true);
    let engine = Engine::new(&cfg)
        .map_err(anyhow::Error::from)
        .context("configuring wasmtime")?;
    spawn_ticker(&engine);
    Ok((engine, cache))
}

/// One thread advances the engine's epoch every [`TICK`]; it ends when the engine is dropped.
fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("oasis-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// A short hex digest of the engine's compatibility-relevant configuration.
fn engine_key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The on-disk cache of compiled modules.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    pub fn new(data_dir: &Path) -> ModuleCache {
        ModuleCache {
            dir: data_dir.join("cache").join("modules"),
        }
    }

    /// Cache key for a module derived from `input_sha256` (+ whatever else `recipe` names).
    pub fn key(&self, engine: &Engine, name: &str, input_sha256: &str, recipe: &str) -> String {
        let mut h = Sha256::new();
        h.update(input_sha256.as_bytes());
        h.update(b"\0");
        h.update(recipe.as_bytes());
        let digest = hex::encode(h.finalize());
        format!(
            "{name}-{}-wasmtime{WASMTIME_VERSION}-{}",
            &digest[..16],
            engine_key(engine)
        )
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.cwasm")),
            self.dir.join(format!("{key}.sha256")),
            self.dir.join(format!("{key}.lock")),
        )
    }

    /// Load the module for `key`, or build its wasm with `build` and compile it, once across
    /// threads and processes.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        key: &str,
        progress: &Progress,
        expected: Duration,
        build: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Module> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let (cwasm, digest, lock) = self.paths(key);
        if let Some(m) = self.load_verified(engine, &cwasm, &digest)? {
            return Ok(m);
        }
        let _lock = lock_file(&lock)?;
        if let Some(m) = self.load_verified(engine, &cwasm, &digest)? {
            return Ok(m);
        }
        let wasm = build()?;
        let phase = progress.phase(&format!("compiling {key} with Cranelift (once)"), expected);
        let bytes = engine
            .precompile_module(&wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling {key}"))?;
        drop(wasm);
        phase.finish();
        progress.message(&format!("compiled {key} ({} MB)", bytes.len() >> 20));
        let sha = hex::encode(Sha256::digest(&bytes));
        // Digest first, then the module: a crash in between leaves a mismatch, which is rebuilt.
        write_atomic(&digest, sha.as_bytes())?;
        write_atomic(&cwasm, &bytes)?;
        drop(bytes);
        self.remove_superseded(key);
        match self.load_verified(engine, &cwasm, &digest)? {
            Some(m) => Ok(m),
            None => bail!(
                "the module just compiled to {} does not load",
                cwasm.display()
            ),
        }
    }

    /// Delete entries for the same module name under other keys (an older pin, recipe or
    /// wasmtime): each is about 300 MB and would never be loaded again by this build.
    fn remove_superseded(&self, key: &str) {
        let module_of = |stem: &str| {
            // `<module>-<digest16>-wasmtime<v>-<engine>`
            stem.split_once("-wasmtime")
                .and_then(|(n, _)| n.rsplit_once('-'))
                .map(|(m, _)| m.to_string())
        };
        let Some(module) = module_of(key) else {
            return;
        };
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = file
                .strip_suffix(".cwasm")
                .or_else(|| file.strip_suffix(".sha256"))
            else {
                continue;
            };
            if stem != key && module_of(stem).as_deref() == Some(module.as_str()) {
                tracing::info!(entry = %file, "removing a superseded compiled module");
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Deserialize a cache entry only if its bytes match the recorded digest; a bad entry is
    /// removed and `None` returned.
    fn load_verified(
        &self,
        engine: &Engine,
        cwasm: &Path,
        digest: &Path,
    ) -> anyhow::Result<Option<Module>> {
        let (Ok(expected), true) = (fs::read_to_string(digest), cwasm.is_file()) else {
            return Ok(None);
        };
        let actual = sha256_file(cwasm)?;
        if actual != expected.trim() {
            tracing::warn!(path = %cwasm.display(), "cached module is corrupt; rebuilding");
            let _ = fs::remove_file(cwasm);
            return Ok(None);
        }
        // SAFETY: the file was produced by `Engine::precompile_module` in this cache and its
        // bytes match the digest recorded when it was written; wasmtime itself also rejects a
        // module built by another version or configuration.
        match unsafe { Module::deserialize_file(engine, cwasm) } {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                tracing::warn!(path = %cwasm.display(), error = %e, "cached module is stale; rebuilding");
                let _ = fs::remove_file(cwasm);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn engine() -> Engine {
        new_engine().unwrap()
    }

    #[test]
    fn concurrent_callers_compile_a_module_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ModuleCache::new(dir.path());
        let key = cache.key(&engine, "t", "abc", "");
        let builds = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (cache, engine, key, builds) = (&cache, &engine, &key, builds.clone());
                s.spawn(move || {
                    cache
                        .get_or_compile(
                            engine,
                            key,
                            &Progress::hidden(),
                            Duration::from_secs(1),
                            || {
                                builds.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(100));
                                Ok(EMPTY_MODULE.to_vec())
                            },
                        )
                        .unwrap();
                });
            }
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_corrupt_or_tampered_cache_entry_is_rebuilt_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ModuleCache::new(dir.path());
        let key = cache.key(&engine, "t", "abc", "");
        let builds = AtomicUsize::new(0);
        let build = || {
            builds.fetch_add(1, Ordering::SeqCst);
            Ok(EMPTY_MODULE.to_vec())
        };
        cache
            .get_or_compile(
                &engine,
                &key,
                &Progress::hidden(),
                Duration::from_secs(1),
                build,
            )
            .unwrap();
        let (cwasm, _, _) = cache.paths(&key);
        // Flip one byte: the digest no longer matches.
        let mut bytes = fs::read(&cwasm).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&cwasm, &bytes).unwrap();
        cache
            .get_or_compile(
                &engine,
                &key,
                &Progress::hidden(),
                Duration::from_secs(1),
                build,
            )
            .unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // Garbage with a matching digest (e.g. an entry from another wasmtime) is refused by
        // wasmtime and rebuilt too.
        fs::write(&cwasm, b"not a module").unwrap();
        let (_, digest, _) = cache.paths(&key);
        fs::write(&digest, hex::encode(Sha256::digest(b"not a module"))).unwrap();
        cache
            .get_or_compile(
                &engine,
                &key,
                &Progress::hidden(),
                Duration::from_secs(1),
                build,
            )
            .unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 3);
        // A good entry is reused.
        cache
            .get_or_compile(
                &engine,
                &key,
                &Progress::hidden(),
                Duration::from_secs(1),
                build,
            )
            .unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn compiling_a_new_key_removes_the_superseded_entry_of_the_same_module() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ModuleCache::new(dir.path());
        let build = || Ok(EMPTY_MODULE.to_vec());
        let old = cache.key(&engine, "img-preinit", "sha-old", "");
        let other = cache.key(&engine, "other", "sha-old", "");
        let new = cache.key(&engine, "img-preinit", "sha-new", "");
        for k in [&old, &other, &new] {
            cache
                .get_or_compile(
                    &engine,
                    k,
                    &Progress::hidden(),
                    Duration::from_secs(1),
                    build,
                )
                .unwrap();
        }
        assert!(!cache.paths(&old).0.exists(), "the old entry is gone");
        assert!(cache.paths(&new).0.exists());
        assert!(
            cache.paths(&other).0.exists(),
            "another module's entry stays"
        );
    }

    #[test]
    fn cache_keys_change_with_the_input_and_the_recipe() {
        let engine = engine();
        let cache = ModuleCache::new(Path::new("/nowhere"));
        let a = cache.key(&engine, "m", "sha-a", "r1");
        assert_ne!(a, cache.key(&engine, "m", "sha-b", "r1"));
        assert_ne!(a, cache.key(&engine, "m", "sha-a", "r2"));
        assert!(a.contains("wasmtime48"));
    }
}
