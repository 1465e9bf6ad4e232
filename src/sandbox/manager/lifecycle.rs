//! A [`SessionManager`]'s sessions over time: interpreters put to sleep for idleness, room or
//! a shutdown (hibernated to the session's folder, or dropped when hibernation is off), what
//! is known of a session ([`SessionInfo`]), and sessions past their retention deleted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{SessionManager, Slot, Victim, valid_session_key};
use crate::sandbox::SandboxError;
use crate::sandbox::hibernate;
use crate::sandbox::supervisor::shard_of;

/// What [`SessionManager::info`] reports of a session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// An interpreter is live (in memory), or a call is running on the session.
    pub live: bool,
    /// No interpreter is live, and a hibernated state waits to be resumed.
    pub hibernated: bool,
    /// Bytes of its hibernated state (0 if none).
    pub state_bytes: u64,
    /// When a call last ended on it (its folder's modification time).
    pub last_used: Option<SystemTime>,
}

/// What is on disk of session `id` under `root`, its interpreter being `live` or not; `None`
/// if it has no folder.
pub(in crate::sandbox) fn info_on_disk(root: &Path, id: &str, live: bool) -> Option<SessionInfo> {
    let dir = root.join(id);
    let meta = std::fs::metadata(&dir).ok()?;
    let state = std::fs::metadata(dir.join(hibernate::STATE_FILE))
        .ok()
        .filter(|m| m.is_file());
    Some(SessionInfo {
        live,
        hibernated: !live && state.is_some(),
        state_bytes: state.as_ref().map_or(0, |m| m.len()),
        last_used: meta.modified().ok(),
    })
}

/// Mark a session used now: its folder's modification time is what retention and
/// [`SessionInfo::last_used`] read.
pub(super) fn mark_used(state_path: &Path) {
    if let Some(dir) = state_path.parent() {
        set_modified(dir, SystemTime::now());
    }
}

fn set_modified(dir: &Path, at: SystemTime) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.set_modified(at);
    }
}

impl SessionManager {
    /// Put interpreters taken for eviction to sleep: hibernated (when on; discarded if that
    /// fails) or discarded. Their sessions stay locked meanwhile, so no call runs on one
    /// half-written.
    pub(super) async fn retire(&self, victims: Vec<Victim>) {
        for mut s in victims {
            if !self.inner.config.hibernate {
                s.evict();
                // A state written before hibernation was turned off must not come back.
                let _ = hibernate::remove(&s.state_path());
                continue;
            }
            let handle = tokio::runtime::Handle::current();
            let done = tokio::task::spawn_blocking(move || {
                let path = s.state_path();
                let dir = path.parent().map(Path::to_path_buf);
                let used = dir
                    .as_deref()
                    .and_then(|d| std::fs::metadata(d).ok()?.modified().ok());
                if let Err(e) = handle.block_on(s.hibernate(false)) {
                    tracing::warn!(session = %s.id, error = %e,
                        "could not hibernate; the interpreter is discarded");
                    let _ = hibernate::remove(&path);
                }
                s.evict();
                // Writing the state touched the folder; it was last used when its call ended.
                if let (Some(dir), Some(at)) = (dir, used) {
                    set_modified(&dir, at);
                }
            })
            .await;
            if done.is_err() {
                tracing::warn!("hibernating an interpreter panicked");
            }
        }
    }

    /// Hibernate every live interpreter (a graceful shutdown), one at a time as each is free.
    /// A session busy with a call for longer than `busy_wait` is left as it is (its last
    /// hibernated state, if any, stays). Returns how many were hibernated; nothing is done
    /// when hibernation is off.
    pub async fn hibernate_all(&self, busy_wait: Duration) -> usize {
        if !self.inner.config.hibernate {
            return 0;
        }
        let deadline = tokio::time::Instant::now() + busy_wait;
        let slots: Vec<(String, Slot)> = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .map(|(id, e)| (id.clone(), e.slot.clone()))
            .collect();
        let mut n = 0;
        for (id, slot) in slots {
            // A free session is taken at once, even past the deadline.
            let Ok(s) = tokio::time::timeout_at(deadline, slot.lock_owned()).await else {
                tracing::warn!(session = %id, "busy at shutdown: not hibernated");
                continue;
            };
            if !s.is_live() {
                continue;
            }
            if let Some(e) = self
                .inner
                .sessions
                .lock()
                .expect("sessions lock")
                .get_mut(&id)
            {
                e.memory = 0;
            }
            self.retire(vec![s]).await;
            n += 1;
        }
        n
    }

    /// Whether session `id` has a live interpreter here (a session busy with a call counts
    /// as live).
    pub fn is_live(&self, id: &str) -> bool {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .is_some_and(|e| e.slot.try_lock().map(|s| s.is_live()).unwrap_or(true))
    }

    /// The keys of the sessions with a live interpreter here (in memory: cheap).
    pub fn live_keys(&self) -> Vec<String> {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .filter(|(_, e)| e.slot.try_lock().map(|s| s.is_live()).unwrap_or(true))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many sessions have a live interpreter here, and how many have none but a hibernated
    /// state in their folder (a walk of the root: for a metrics scrape, not a hot path). In a
    /// sandbox worker, only the sessions that shard to it.
    pub fn counts(&self) -> (usize, usize) {
        let live: std::collections::HashSet<String> = self.live_keys().into_iter().collect();
        let hibernated = std::fs::read_dir(&self.inner.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                valid_session_key(&name)
                    && self.owns(&name)
                    && !live.contains(name.as_ref())
                    && e.path().join(hibernate::STATE_FILE).is_file()
            })
            .count();
        (live.len(), hibernated)
    }

    /// What is known of session `id`: whether its interpreter is live or hibernated, the
    /// bytes its state takes, when it was last used. `None` if it has no folder.
    pub fn info(&self, id: &str) -> Result<Option<SessionInfo>, SandboxError> {
        if !valid_session_key(id) {
            return Err(SandboxError::InvalidSessionId(id.to_string()));
        }
        Ok(info_on_disk(&self.inner.root, id, self.is_live(id)))
    }

    /// Whether this manager looks after session `id` (in a sandbox worker: the sessions that
    /// shard to it).
    fn owns(&self, id: &str) -> bool {
        self.inner
            .shard
            .is_none_or(|(index, workers)| shard_of(id, workers) == index)
    }

    /// Delete this manager's sessions unused for longer than `session_retention` (folders,
    /// files, state); returns how many. A session's age is its folder's modification time,
    /// looked at again once the session is held, so one that a call just used is kept.
    pub async fn sweep_retired(&self) -> usize {
        let retention = self.inner.config.session_retention;
        let root = self.inner.root.clone();
        let old = move |dir: &Path| {
            std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > retention)
        };
        let listed = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || {
                let Ok(rd) = std::fs::read_dir(&root) else {
                    return vec![];
                };
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| valid_session_key(name) && old(&root.join(name)))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default()
        };
        let mut n = 0;
        for id in listed.into_iter().filter(|id| self.owns(id)) {
            let dir = root.join(&id);
            match self.remove_unless(&id, || !old(&dir)).await {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "could not delete a retired session")
                }
            }
        }
        n
    }

    /// Hibernate (or drop) interpreters idle longer than the TTL. Returns how many.
    pub async fn reap_idle(&self) -> usize {
        let ttl = self.inner.config.idle_ttl;
        let mut victims = vec![];
        for e in self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .values_mut()
            .filter(|e| e.last_used.elapsed() >= ttl)
        {
            if let Ok(s) = e.slot.clone().try_lock_owned()
                && s.is_live()
            {
                victims.push(s);
                e.memory = 0;
            }
        }
        let n = victims.len();
        self.retire(victims).await;
        n
    }

    /// Run [`Self::reap_idle`] and [`Self::sweep_retired`] periodically until the manager is
    /// dropped.
    pub fn spawn_reaper(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let period = (self.inner.config.idle_ttl / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { return };
                let m = SessionManager { inner };
                let n = m.reap_idle().await;
                if n > 0 {
                    tracing::debug!(evicted = n, "idle interpreters hibernated or dropped");
                }
                let n = m.sweep_retired().await;
                if n > 0 {
                    tracing::info!(deleted = n, "sessions past their retention deleted");
                }
            }
        })
    }
}
