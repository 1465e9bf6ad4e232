//! Holding an Upload for a change: its lock on this server and, on a store shared with other
//! nodes, its lease in the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, PoisonError};
use std::time::{Duration, Instant};

use super::super::AppState;
use super::super::error::{ApiError, ApiResult};
use crate::model::new_id;
use crate::store::Store;
use axum::http::StatusCode;

/// How long an Upload's lease lasts unless renewed (a node that dies holding one holds it this
/// long), and how often it is renewed while held.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(15);
pub(super) const LEASE_RENEW: Duration = Duration::from_secs(5);
/// How long a request waits for an Upload that another request holds (then a 409), and how
/// often it asks again meanwhile.
pub(super) const HOLD_WAIT: Duration = Duration::from_secs(30);
pub(super) const LEASE_POLL: Duration = Duration::from_millis(20);

/// An Upload held for a change: its lock on this server and, on a store shared with other
/// nodes, its lease in the store. Give it back with [`Hold::release`] (dropped, it gives back
/// its lease in the background).
pub(super) struct Hold {
    /// Declared first: given back before the lock, so that a request waiting here finds the
    /// lease free.
    lease: Option<Lease>,
    _local: Held,
    /// Set once the Upload is known to be over (completed, cancelled, expired): its lease is
    /// then forgotten rather than given back, so the store keeps no row for it.
    ended: AtomicBool,
}

impl Hold {
    /// Note that the Upload is over.
    pub(super) fn ended(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    pub(super) async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back(self.ended.load(Ordering::Relaxed)).await;
        }
    }
}

/// Whether the store is shared with other nodes (PostgreSQL; a server on one comes with
/// roaming sessions). Alone on its store (SQLite), a server's own lock orders an Upload's
/// changes.
pub(super) fn shared(state: &AppState) -> bool {
    state.roaming.is_some()
}

/// Hold the Upload `id`. Alone on its store, a server waits for its other requests as long as
/// they take; on a shared store it waits up to [`HOLD_WAIT`] while another request (of this
/// node or another) holds it, then answers 409 (which the SDKs retry).
pub(super) async fn hold(state: &AppState, id: &str) -> ApiResult<Hold> {
    if !shared(state) {
        return Ok(Hold {
            lease: None,
            _local: lock(state, id).await,
            ended: AtomicBool::new(false),
        });
    }
    let started = Instant::now();
    let local = tokio::time::timeout(HOLD_WAIT, lock(state, id))
        .await
        .map_err(|_| busy(id))?;
    let lease = Lease::take(state, id, HOLD_WAIT.saturating_sub(started.elapsed()))
        .await?
        .ok_or_else(|| busy(id))?;
    Ok(Hold {
        lease: Some(lease),
        _local: local,
        ended: AtomicBool::new(false),
    })
}

/// Hold the Upload `id` if no other request holds it.
pub(super) async fn try_hold(state: &AppState, id: &str) -> ApiResult<Option<Hold>> {
    let Some(local) = try_lock(state, id) else {
        return Ok(None);
    };
    let lease = if shared(state) {
        match Lease::take(state, id, Duration::ZERO).await? {
            Some(l) => Some(l),
            None => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some(Hold {
        lease,
        _local: local,
        ended: AtomicBool::new(false),
    }))
}

/// The 409 for an Upload another request held too long.
pub(super) fn busy(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("Upload {id} is being changed by another request; please try again shortly."),
    )
}

/// The lease of an Upload in a store that several nodes share (a cluster's PostgreSQL):
/// `upload.<upload id>`, held under a name of its own (each hold has a new one, so two
/// requests of one node never share a lease), renewed while held. A node that dies holding
/// one holds it for [`LEASE_TTL`] at most.
pub(super) struct Lease {
    store: Arc<dyn Store>,
    id: String,
    holder: String,
    renewing: tokio::task::JoinHandle<()>,
    given_back: bool,
}

impl Lease {
    /// The lease of Upload `upload_id`, asking every [`LEASE_POLL`] for up to `wait` while
    /// another holds it; `None` if it did not come free.
    async fn take(state: &AppState, upload_id: &str, wait: Duration) -> ApiResult<Option<Lease>> {
        let (id, holder) = (format!("upload.{upload_id}"), new_id("upload-hold-"));
        let ttl = LEASE_TTL.as_millis() as i64;
        let started = Instant::now();
        loop {
            let (store, l, h) = (state.store.clone(), id.clone(), holder.clone());
            // The store's calls block (PostgreSQL's client): never on an async thread.
            let taken =
                tokio::task::spawn_blocking(move || store.take_lease(&l, &h, ttl)).await??;
            if taken.is_some() {
                break;
            }
            if started.elapsed() + LEASE_POLL > wait {
                return Ok(None);
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
        let (store, l, h) = (state.store.clone(), id.clone(), holder.clone());
        let renewing = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                let (store, l2, h) = (store.clone(), l.clone(), h.clone());
                let held =
                    tokio::task::spawn_blocking(move || store.renew_lease(&l2, &h, ttl)).await;
                if !matches!(held, Ok(Ok(true))) {
                    tracing::warn!(lease = %l, "could not renew an Upload's lease");
                }
            }
        });
        Ok(Some(Lease {
            store: state.store.clone(),
            id,
            holder,
            renewing,
            given_back: false,
        }))
    }

    /// The store call that gives the lease back: forgets it if the Upload is over.
    fn giving_back(&mut self, ended: bool) -> impl FnOnce() + Send + 'static {
        self.renewing.abort();
        self.given_back = true;
        let (store, id, holder) = (self.store.clone(), self.id.clone(), self.holder.clone());
        move || {
            let done = if ended {
                store.drop_lease(&id)
            } else {
                store.release_lease(&id, &holder, false).map(drop)
            };
            if let Err(e) = done {
                tracing::warn!(lease = %id, error = %e, "giving back an Upload's lease");
            }
        }
    }

    async fn give_back(mut self, ended: bool) {
        let call = self.giving_back(ended);
        if let Err(e) = tokio::task::spawn_blocking(call).await {
            tracing::warn!(lease = %self.id, error = %e, "giving back an Upload's lease");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        // A request dropped while it held the Upload (its client went away).
        let call = self.giving_back(false);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(call);
        }
    }
}

/// Each server's requests for one Upload queue here, so that only one of them at a time asks
/// for its lease (see [`lock`]).
type Locks = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;
pub(super) static LOCKS: LazyLock<Locks> = LazyLock::new(Locks::default);

/// The lock of one Upload on one server, held until dropped (then forgotten if no one else
/// wants it).
pub(super) struct Held {
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

/// The key of Upload `id`'s lock on the server of `state` (several servers may run in one
/// process, as in the tests: each is a node of its own).
pub(super) fn lock_key(state: &AppState, id: &str) -> String {
    format!("{:p}/{id}", Arc::as_ptr(&state.store))
}

pub(super) fn lock_of(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    LOCKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.to_string())
        .or_default()
        .clone()
}

pub(super) async fn lock(state: &AppState, id: &str) -> Held {
    let key = lock_key(state, id);
    let m = lock_of(&key);
    Held {
        key,
        guard: Some(m.lock_owned().await),
    }
}

pub(super) fn try_lock(state: &AppState, id: &str) -> Option<Held> {
    let key = lock_key(state, id);
    // Held by another, which forgets it when done.
    let guard = lock_of(&key).try_lock_owned().ok()?;
    Some(Held {
        key,
        guard: Some(guard),
    })
}
