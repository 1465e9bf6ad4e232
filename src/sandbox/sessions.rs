//! [`Sessions`]: what the rest of Oasis uses to reach sandbox sessions, wherever they run: in
//! this process ([`SessionManager`]) or in supervised worker processes ([`Supervisor`]).

use std::path::PathBuf;
use std::time::Duration;

use super::image::Image;
use super::limits::Limits;
use super::manager::{SessionInfo, SessionManager, charge_export};
use super::result::ExecResult;
use super::session::ExecOptions;
use super::supervisor::Supervisor;
use super::{DEFAULT_IMAGE, SandboxError};

/// How long the writing of states at a shutdown may take on top of that, in this process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub enum Sessions {
    /// Interpreters live in this process.
    InProcess(SessionManager),
    /// Interpreters live in worker processes; a worker's crash ends only its sessions' calls
    /// (as `crashed`, with `worker_lost`).
    Workers(Supervisor),
}

impl Sessions {
    /// How long a graceful shutdown waits for a session busy with a call before leaving it as
    /// it is (its last hibernated state, if any, stays on disk).
    pub const SHUTDOWN_BUSY_WAIT: Duration = Duration::from_secs(5);

    /// Run `code` in session `id` (see [`SessionManager::execute`]).
    pub async fn execute(
        &self,
        id: &str,
        image: Option<&str>,
        code: String,
        opts: ExecOptions,
    ) -> Result<ExecResult, SandboxError> {
        match self {
            Sessions::InProcess(m) => m.execute(id, image, code, opts).await,
            Sessions::Workers(s) => s.execute(id, image, code, opts).await,
        }
    }

    /// The default limits of image `name` (default image when `None`), from its manifest.
    pub fn image_limits(&self, name: Option<&str>) -> Result<Limits, SandboxError> {
        Ok(Image::load(name.unwrap_or(DEFAULT_IMAGE))?.limits())
    }

    /// Host folder behind a session's `/mnt/data`.
    pub fn data_dir(&self, id: &str) -> Result<PathBuf, SandboxError> {
        match self {
            Sessions::InProcess(m) => m.data_dir(id),
            Sessions::Workers(s) => s.data_dir(id),
        }
    }

    /// Host file of a session's hibernated state (it may not exist).
    pub fn state_path(&self, id: &str) -> Result<PathBuf, SandboxError> {
        let data = self.data_dir(id)?;
        Ok(data
            .parent()
            .unwrap_or(&data)
            .join(super::hibernate::STATE_FILE))
    }

    /// Files in a session's `/mnt/data` (relative path, size), links not followed.
    pub fn list_files(&self, id: &str) -> Result<Vec<(String, u64)>, SandboxError> {
        match self {
            Sessions::InProcess(m) => m.list_files(id),
            Sessions::Workers(s) => s.list_files(id),
        }
    }

    /// Read a file of a session's `/mnt/data` without leaving it.
    pub fn read_file(&self, id: &str, rel: &str, max: u64) -> std::io::Result<Vec<u8>> {
        match self {
            Sessions::InProcess(m) => m.read_file(id, rel, max),
            Sessions::Workers(s) => s.read_file(id, rel, max),
        }
    }

    /// Charge `bytes` that are about to become Files to session `id`'s export ledger; `false`
    /// (nothing charged) if that would pass the server's `max_export_bytes`.
    pub fn charge_export(&self, id: &str, bytes: u64) -> std::io::Result<bool> {
        let (root, config) = match self {
            Sessions::InProcess(m) => (m.root(), m.config()),
            Sessions::Workers(s) => (s.root(), s.config()),
        };
        charge_export(root, id, bytes, config.max_export_bytes)
    }

    /// What is known of session `id`: live, hibernated (a saved state waits), or neither;
    /// the bytes its state takes; when it was last used. `None` if it has no folder.
    pub async fn info(&self, id: &str) -> Result<Option<SessionInfo>, SandboxError> {
        match self {
            Sessions::InProcess(m) => m.info(id),
            Sessions::Workers(s) => s.info(id).await,
        }
    }

    /// How many sessions have a live interpreter and how many a hibernated state instead
    /// (read from disk: for a metrics scrape, not a hot path); with workers, summed over
    /// those that answer.
    pub async fn counts(&self) -> Option<(usize, usize)> {
        match self {
            Sessions::InProcess(m) => {
                let m = m.clone();
                tokio::task::spawn_blocking(move || m.counts()).await.ok()
            }
            Sessions::Workers(s) => Some(s.counts().await),
        }
    }

    /// The keys of the sessions with a live interpreter (with workers, of those that answer).
    pub async fn live_keys(&self) -> Vec<String> {
        match self {
            Sessions::InProcess(m) => m.live_keys(),
            Sessions::Workers(s) => s.live_keys().await,
        }
    }

    /// The server is shutting down: hibernate every live interpreter (bounded: sessions busy
    /// for longer than `busy_wait` are left as they are), then, with workers, stop them.
    /// Returns how many interpreters were hibernated.
    pub async fn shutdown(&self, busy_wait: Duration) -> u64 {
        match self {
            Sessions::InProcess(m) => {
                tokio::time::timeout(busy_wait + SHUTDOWN_GRACE, m.hibernate_all(busy_wait))
                    .await
                    .map_or(0, |n| n as u64)
            }
            Sessions::Workers(s) => s.shutdown(busy_wait).await,
        }
    }

    /// End a session: its interpreter and its folders.
    pub async fn remove(&self, id: &str) -> Result<bool, SandboxError> {
        match self {
            Sessions::InProcess(m) => m.remove(id).await,
            Sessions::Workers(s) => s.remove(id).await,
        }
    }

    /// Background work a server runs: the idle reaper, loading the default image (compiling it
    /// on first use) and filling the warm pool; with workers, preparing the image here and then
    /// starting and supervising the worker processes (which run the rest themselves).
    pub fn start_background(&self) {
        match self {
            Sessions::InProcess(m) => {
                m.spawn_reaper();
                let m = m.clone();
                tokio::spawn(async move {
                    let sb = m.sandbox().clone();
                    let loaded = tokio::task::spawn_blocking(move || sb.image(DEFAULT_IMAGE)).await;
                    match loaded {
                        Ok(Ok(_)) => m.refill_warm(),
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "could not load the default image")
                        }
                        Err(e) => tracing::error!(error = %e, "loading the default image panicked"),
                    }
                });
            }
            Sessions::Workers(s) => s.start(),
        }
    }
}
