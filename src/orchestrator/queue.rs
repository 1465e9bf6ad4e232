//! The durable queue: the store's `queued` runs, claimed by any node with a free worker;
//! taking over what a previous process or a lost node left; the expiry sweep; the heartbeat
//! that keeps this node alive in the store and passes on cancels made on other nodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::state::{RunEvent, RunStatus};

use crate::model::{Kind, Run, now};
use crate::store::{Filter, Order, Page, StoreExt};

use super::{Orchestrator, Result};

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Orchestrator {
    /// Start the workers' claimer, the sweeper and (on a shared store) the heartbeat, after
    /// taking over the runs a previous process left. Call once, inside a Tokio runtime.
    pub async fn start(&self) -> Result<()> {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if !self.inner.config.exclusive {
            self.beat().await?;
        }
        self.recover().await?;
        let me = self.clone();
        tokio::spawn(async move { me.claim_loop().await });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.inner.config.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep().await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
                if let Ok(n) = me.db(|s| s.queued_runs()).await {
                    crate::metrics::queue_depth(n.max(0) as usize);
                }
            }
        });
        if !self.inner.config.exclusive {
            let me = self.clone();
            tokio::spawn(async move { me.heartbeat_loop().await });
        }
        Ok(())
    }

    /// On a shared store: heart-beat, pass on cancels made on other nodes, and take over the
    /// runs of nodes that stopped heart-beating. The heartbeat has a task of its own, so that
    /// the slower work never delays it.
    async fn heartbeat_loop(&self) {
        let lease = self.inner.config.node_lease;
        let every = (lease / 5).max(std::time::Duration::from_millis(100));
        // Since when this node's heartbeats have all reached the database.
        let (healthy_tx, healthy) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
        let me = self.clone();
        let beats = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match me.beat().await {
                    Ok(()) => healthy_tx.send_if_modified(|since| {
                        since.is_none() && {
                            *since = Some(tokio::time::Instant::now());
                            true
                        }
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeat failed");
                        healthy_tx.send_replace(None);
                        false
                    }
                };
            }
        });
        let _beats = AbortOnDrop(beats);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.watch_cancels().await {
                tracing::warn!(error = %e, "checking for cancels failed");
            }
            // Another node is judged lost only after two leases of this node's own heartbeats
            // reaching the database: while the database was down every node's heartbeat
            // lapsed, and the nodes still alive need time to show it again (their connection
            // pools reconnect with a backoff).
            let since = *healthy.borrow();
            if since.is_some_and(|t| t.elapsed() >= 2 * lease)
                && let Err(e) = self.take_over_lost().await
            {
                tracing::warn!(error = %e, "taking over lost nodes failed");
            }
        }
    }

    /// Stop claiming runs (a draining node finishes what it holds).
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Leave the cluster (on a shared store; alone on its store, a node leaves its runs to
    /// its next start): claim no more runs, let those it drives finish for up to `wait`, then
    /// hand back the rest: queued ones to other nodes; unfinished ones fail.
    pub async fn leave(&self, wait: std::time::Duration) {
        self.drain();
        if self.inner.config.exclusive {
            return;
        }
        let until = tokio::time::Instant::now() + wait;
        while self.driving_count() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let node = self.inner.config.node.clone();
        let msg = "The Oasis node running this run shut down before it finished.";
        if let Err(e) = self.end_runs_of(&node, msg).await {
            tracing::warn!(error = %e, "could not hand back this node's runs");
        }
        let n = node.clone();
        if let Err(e) = self.db(move |s| s.forget_node(&n)).await {
            tracing::warn!(error = %e, "could not leave the cluster");
        }
    }

    /// Runs now held by this node's workers.
    pub fn driving_count(&self) -> usize {
        self.inner
            .driving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Claim queued runs while workers are free; sleep until a run is queued here, a worker
    /// comes free, or it is time to look for runs other nodes queued.
    async fn claim_loop(&self) {
        let workers = Arc::new(tokio::sync::Semaphore::new(
            self.inner.config.workers.max(1),
        ));
        loop {
            let Ok(permit) = workers.clone().acquire_owned().await else {
                return;
            };
            if self.inner.draining.load(Ordering::SeqCst) {
                return;
            }
            let node = self.inner.config.node.clone();
            match self.db(move |s| s.claim_run(&node)).await {
                Ok(Some(claim)) => {
                    if let Some(ms) = claim.waited_ms {
                        crate::metrics::run_claimed(ms.max(0) as f64 / 1000.0);
                    }
                    // Everything the run touches is its project's.
                    let me = self.for_project_id(&claim.project);
                    tokio::spawn(async move {
                        me.drive(&claim.run_id).await;
                        drop(permit);
                        me.inner.wake.notify_one();
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a run failed"),
            }
            drop(permit);
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.config.claim_poll) => {}
            }
        }
    }

    /// Every run of `status`, oldest first, each with its project's handle.
    pub(super) async fn runs_with_status(
        &self,
        status: RunStatus,
    ) -> Result<Vec<(Run, Orchestrator)>> {
        let value = super::status_str(status).to_string();
        self.db(move |s| {
            let filter = Filter {
                field: "status",
                value: value.clone(),
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
                let (records, more) = s.list(Kind::Run, None, Some(&filter), &page)?;
                after = records.last().map(|r| r.id.clone());
                for r in records {
                    out.push((r.decode::<Run>()?, r.project));
                }
                if !more {
                    return Ok(out);
                }
            }
        })
        .await
        .map(|runs| {
            runs.into_iter()
                .map(|(run, p)| (run, self.for_project_id(&p)))
                .collect()
        })
    }

    /// Take over what a previous process left. Alone on its store, this node ends every run
    /// that was in flight (its worker died with that process) and requeues the rest; on a
    /// shared store, only the runs its own name held (other nodes' runs are theirs until they
    /// are lost).
    pub(super) async fn recover(&self) -> Result<()> {
        let msg = "Oasis restarted while this run was in progress.";
        if self.inner.config.exclusive {
            for (run, of) in self.runs_with_status(RunStatus::InProgress).await? {
                let _ = of
                    .finish(&run.id, RunEvent::Fail, Some(("server_error", msg)))
                    .await;
            }
            for (run, of) in self.runs_with_status(RunStatus::Cancelling).await? {
                let _ = of.finish(&run.id, RunEvent::Stopped, None).await;
            }
            for (run, _) in self.runs_with_status(RunStatus::Queued).await? {
                self.release(&run.id).await?;
            }
            self.inner.wake.notify_one();
            return Ok(());
        }
        let node = self.inner.config.node.clone();
        self.end_runs_of(&node, msg).await
    }

    /// End or release the unfinished runs `node` held or was to drive: in-flight ones fail
    /// with `msg`, cancelling ones are cancelled, queued ones go back to any node.
    async fn end_runs_of(&self, node: &str, msg: &str) -> Result<()> {
        let n = node.to_string();
        let runs = self.db(move |s| s.node_runs(&n)).await?;
        for (record, _held) in runs {
            let Ok(run) = record.decode::<Run>() else {
                continue;
            };
            let of = self.for_project_id(&record.project);
            let _ = match run.status {
                RunStatus::InProgress => of
                    .finish(&run.id, RunEvent::Fail, Some(("server_error", msg)))
                    .await
                    .map(|_| ()),
                RunStatus::Cancelling => of
                    .finish(&run.id, RunEvent::Stopped, None)
                    .await
                    .map(|_| ()),
                _ => self.release(&run.id).await,
            };
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Let any node's worker take a queued run.
    async fn release(&self, run_id: &str) -> Result<()> {
        let rid = run_id.to_string();
        self.db(move |s| s.within(|tx| tx.set_run_owner(&rid, None, false)))
            .await
    }

    /// Say this node is alive.
    async fn beat(&self) -> Result<()> {
        let node = self.inner.config.node.clone();
        self.db(move |s| s.heartbeat(&node)).await
    }

    /// End the runs of nodes that stopped heart-beating, and forget those nodes.
    async fn take_over_lost(&self) -> Result<()> {
        let lapse = self.inner.config.node_lease.as_millis() as i64;
        let lost = self.db(move |s| s.lost_nodes(lapse)).await?;
        for node in lost {
            if node == self.inner.config.node {
                // Its own heartbeat lapsed (a long pause): it is alive, so it keeps its runs.
                continue;
            }
            tracing::warn!(node = %node, "node lost; ending its runs");
            let msg = format!(
                "The Oasis node running this run ({node}) stopped answering; the run was lost."
            );
            self.end_runs_of(&node, &msg).await?;
            let n = node.clone();
            self.db(move |s| s.forget_node(&n)).await?;
        }
        Ok(())
    }

    /// Interrupt the runs this node drives that another node asked to cancel.
    async fn watch_cancels(&self) -> Result<()> {
        if self.driving_count() == 0 {
            return Ok(());
        }
        let node = self.inner.config.node.clone();
        let runs = self.db(move |s| s.node_runs(&node)).await?;
        let driving = self.inner.driving.lock().unwrap_or_else(|p| p.into_inner());
        for (record, _) in runs {
            if let Ok(run) = record.decode::<Run>()
                && run.status == RunStatus::Cancelling
                && let Some(flag) = driving.get(&run.id)
            {
                flag.cancel();
            }
        }
        Ok(())
    }

    /// Expire the waiting runs whose time is up (running ones are checked by their worker).
    pub(super) async fn sweep(&self) -> Result<()> {
        let t = now();
        for status in [RunStatus::RequiresAction, RunStatus::Queued] {
            let value = super::status_str(status).to_string();
            let due = self
                .db(move |s| {
                    let filter = Filter {
                        field: "status",
                        value: value.clone(),
                    };
                    s.expired(Kind::Run, Some(&filter), t, 256)
                })
                .await?;
            for record in due {
                if !self.is_driving(&record.id) {
                    let of = self.for_project_id(&record.project);
                    let _ = of.finish(&record.id, RunEvent::Expire, None).await;
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
