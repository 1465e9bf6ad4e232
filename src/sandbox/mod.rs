//! The code-interpreter sandbox: WASI CPython on wasmtime, one live interpreter per session.
//!
//! This module knows nothing of HTTP, SQL or OpenAI's wire format.
//!
//! - [`Sandbox`]: the engine, the runtime on disk, and images compiled once ([`LoadedImage`]).
//! - [`Session`]: one interpreter bound to a `/mnt/data` folder, driven turn by turn.
//! - [`SessionManager`]: sessions by id, with idle expiry, LRU eviction and a bounded pool.
//! - [`Sessions`]: the one way the rest of Oasis reaches sessions: a [`SessionManager`] in this
//!   process, or a [`Supervisor`] of `oasis sandbox-worker` processes ([`worker`]) that each run
//!   one, talking over pipes ([`wire`]).

mod engine;
mod globals;
mod hibernate;
mod image;
mod interp;
mod limits;
mod manager;
mod preinit;
mod progress;
mod result;
mod runtime;
mod session;
mod sessions;
mod supervisor;
mod wasi;
pub mod wire;
pub mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use wasmtime::{Engine, InstancePre, Linker};

pub use hibernate::{HibernateTimings, ResumeTimings};
pub use image::{DEFAULT_IMAGE, Image, Warm};
pub use limits::Limits;
pub use manager::{ManagerConfig, SessionInfo, SessionManager, valid_session_id};
pub use progress::Progress;
pub use result::{ExecResult, FileChange, Outcome, PythonError};
pub use runtime::{Pin, Runtime};
pub use session::{ExecOptions, Hibernated, InputFile, Session};
pub use sessions::Sessions;
pub use supervisor::{Supervisor, SupervisorConfig, shard_of};
pub use wasi::{OutputTap, StreamKind};

/// Errors a caller can act on; anything else is `Internal`.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("unknown image `{name}`; known images: {known}")]
    UnknownImage { name: String, known: String },
    #[error("invalid session id `{0}`: use 1-64 letters, digits, `-` or `_`")]
    InvalidSessionId(String),
    #[error("{0}")]
    InvalidInput(String),
    /// An input file does not fit the session's storage quota.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("session `{id}` runs image `{has}`, not `{wanted}`")]
    ImageMismatch {
        id: String,
        has: String,
        wanted: String,
    },
    /// A service sessions are shared through (on a cluster: the database or the object
    /// store) does not answer; the call did not run.
    #[error("the {what} is unavailable: {message}")]
    Unavailable { what: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Engine, runtime and compiled images, shared by every session.
pub struct Sandbox {
    engine: Engine,
    runtime: Runtime,
    cache: engine::ModuleCache,
    linker: Linker<wasi::State>,
    progress: Progress,
    /// Held while an image is loaded, so the same module is never compiled twice at once.
    images: Mutex<HashMap<String, Arc<LoadedImage>>>,
    /// Cranelift's per-function cache, filled while an image is built and emptied after.
    compile_cache: Arc<engine::CompileCache>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("runtime", &self.runtime.dir)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Open the sandbox with its runtime and module cache under `data_dir`, provisioning the
    /// runtime first if it is not there yet.
    pub fn open(data_dir: &Path, progress: Progress) -> anyhow::Result<Sandbox> {
        let runtime = Runtime::locate(data_dir, &progress)?;
        let (engine, compile_cache) = engine::new_engine_with_cache()?;
        let linker = wasi::linker(&engine)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Ok(Sandbox {
            engine,
            runtime,
            cache: engine::ModuleCache::new(data_dir),
            linker,
            progress,
            images: Mutex::new(HashMap::new()),
            compile_cache,
        })
    }

    /// The image `name`, compiled (and pre-initialized) on first use. Blocking: the first call
    /// for an image may take minutes; later calls are a map lookup.
    pub fn image(&self, name: &str) -> Result<Arc<LoadedImage>, SandboxError> {
        let mut images = self.images.lock().expect("images lock");
        if let Some(img) = images.get(name) {
            return Ok(img.clone());
        }
        let image = Image::load(name)?;
        // Every module gets its mutable globals exported (hibernation reads and sets them).
        let (module, key) = match image.warm {
            Warm::Snapshot if !image.preimport.is_empty() => preinit::module(
                &self.engine,
                &self.cache,
                &self.runtime,
                &image,
                &self.progress,
            )?,
            _ => {
                let artifact = "python-snapshot.wasm";
                let sha = self.runtime.pin.artifact_sha256(artifact)?;
                let key = self
                    .cache
                    .key(&self.engine, "python-snapshot", sha, globals::VERSION);
                let path = self.runtime.artifact(artifact);
                let module = self
                    .cache
                    // About 40 s on 2 cores: nothing compiled it before.
                    .get_or_compile(
                        &self.engine,
                        &key,
                        &self.progress,
                        std::time::Duration::from_secs(40),
                        || {
                            let wasm = std::fs::read(&path)
                                .with_context(|| format!("reading {}", path.display()))?;
                            globals::export_mutable_globals(&wasm)
                        },
                    )?;
                (module, key)
            }
        };
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(anyhow::Error::from)
            .context("linking the runtime module")?;
        let loaded = Arc::new(LoadedImage {
            image,
            pre,
            engine: self.engine.clone(),
            runtime: self.runtime.clone(),
            state_key: key,
            base: tokio::sync::OnceCell::new(),
        });
        images.insert(name.to_string(), loaded.clone());
        self.compile_cache.clear();
        Ok(loaded)
    }
}

/// An image ready to instantiate: its manifest and its linked, compiled module.
pub struct LoadedImage {
    pub image: Image,
    pre: InstancePre<wasi::State>,
    engine: Engine,
    runtime: Runtime,
    /// What a hibernated state must have been made for: the compiled module's cache key
    /// (runtime pin, image recipe, wasmtime version, engine configuration).
    state_key: String,
    /// A fresh instance's linear memory, which hibernated states are diffed against (made on
    /// first use).
    base: tokio::sync::OnceCell<Arc<BaseMemory>>,
}

/// An image's fresh linear memory, and whether the kernel's pagemap may be used to skip the
/// chunks of an instance that still hold it ([`hibernate::pagemap_probe`]).
#[derive(Debug)]
pub struct BaseMemory {
    pub bytes: Vec<u8>,
    pub pagemap: bool,
}

impl LoadedImage {
    /// The key hibernated states of this image carry.
    pub fn state_key(&self) -> &str {
        &self.state_key
    }

    /// The image's fresh linear memory (instantiated once, on scratch folders).
    pub async fn base_memory(&self) -> anyhow::Result<Arc<BaseMemory>> {
        self.base
            .get_or_try_init(|| async {
                let scratch = tempfile::tempdir().context("creating a scratch folder")?;
                let dirs = SessionDirs {
                    data: scratch.path().join("data"),
                    tmp: scratch.path().join("tmp"),
                };
                std::fs::create_dir_all(&dirs.data)?;
                std::fs::create_dir_all(&dirs.tmp)?;
                let limit = self.image.limits().memory_bytes;
                let mut interp = interp::Interpreter::instantiate(self, &dirs, limit, 0).await?;
                let bytes = interp.memory_copy();
                let pagemap = interp.pagemap_probe();
                if !pagemap {
                    tracing::info!(image = %self.image.name,
                        "hibernation compares every chunk (the pagemap cannot tell written pages)");
                }
                Ok(Arc::new(BaseMemory { bytes, pagemap }))
            })
            .await
            .cloned()
    }
}

impl std::fmt::Debug for LoadedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedImage")
            .field("image", &self.image.name)
            .finish_non_exhaustive()
    }
}

/// Host folders behind a session's writable mounts.
#[derive(Debug, Clone)]
pub struct SessionDirs {
    /// Mounted read-write at `/mnt/data`; survives the interpreter.
    pub data: PathBuf,
    /// Mounted read-write at `/tmp` (HOME lives here); emptied when an interpreter starts.
    pub tmp: PathBuf,
}
