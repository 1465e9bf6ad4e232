//! The durable queue: workers take `queued` runs from the store; restart recovery; the expiry
//! sweep.

use std::sync::Arc;

use super::state::{RunEvent, RunStatus};

use crate::model::{Run, now};
use crate::store::{Filter, Order, Page, StoreExt};

use super::{Orchestrator, Result};

impl Orchestrator {
    /// Start the workers and the expiry sweeper, and take over the runs a previous process
    /// left: in-flight ones fail (their worker died with it), queued ones run. Call once,
    /// inside a Tokio runtime.
    pub async fn start(&self) -> Result<()> {
        let Some(rx) = self
            .inner
            .queue_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        self.recover().await?;
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..self.inner.config.workers.max(1) {
            let rx = rx.clone();
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(run_id) = next else { break };
                    me.drive(&run_id).await;
                }
            });
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.inner.config.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep().await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
            }
        });
        Ok(())
    }

    /// Every run of `status`, oldest first.
    pub(super) async fn runs_with_status(&self, status: RunStatus) -> Result<Vec<Run>> {
        let value = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.db(move |s| {
            let filter = Filter {
                field: "status",
                value,
            };
            let mut out = vec![];
            let mut after = None;
            loop {
                let page = Page {
                    limit: 100,
                    order: Order::Asc,
                    after: after.clone(),
                    before: None,
                };
                let (items, more) = s.page::<Run>(None, Some(&filter), &page)?;
                after = items.last().map(|r| r.id.clone());
                out.extend(items);
                if !more {
                    return Ok(out);
                }
            }
        })
        .await
    }

    pub(super) async fn recover(&self) -> Result<()> {
        for run in self.runs_with_status(RunStatus::InProgress).await? {
            let msg = "Oasis restarted while this run was in progress.";
            let _ = self
                .finish(&run.id, RunEvent::Fail, Some(("server_error", msg)))
                .await;
        }
        for run in self.runs_with_status(RunStatus::Cancelling).await? {
            let _ = self.finish(&run.id, RunEvent::Stopped, None).await;
        }
        for run in self.runs_with_status(RunStatus::Queued).await? {
            let _ = self.inner.queue_tx.send(run.id);
        }
        Ok(())
    }

    /// Expire the waiting runs whose time is up (running ones are checked by their worker).
    pub(super) async fn sweep(&self) -> Result<()> {
        let t = now();
        for status in [RunStatus::RequiresAction, RunStatus::Queued] {
            for run in self.runs_with_status(status).await? {
                if run.expires_at.is_some_and(|e| e <= t) && !self.is_driving(&run.id) {
                    let _ = self.finish(&run.id, RunEvent::Expire, None).await;
                }
            }
        }
        Ok(())
    }

    pub(super) fn is_driving(&self, run_id: &str) -> bool {
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(run_id)
    }
}
