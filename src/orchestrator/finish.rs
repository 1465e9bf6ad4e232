//! A run's end: its status, usage and the steps and messages it left open, in one transaction,
//! then their events.

use super::events::StreamEvent;
use super::state::{RunEvent, RunStatus, transition};

use crate::model::{LastError, Message, MessageStatus, Run, RunStep, StepDetails, StepStatus, now};
use crate::store::{Filter, Order, Page, Record, Store, StoreExt, Tx, TxExt};

use super::{Orchestrator, Result, RunError, Transcript};

/// Every step of a run, oldest first, read a page at a time by `list` (of a store or a
/// transaction).
fn all_steps(
    run_id: &str,
    mut list: impl FnMut(&Filter, &Page) -> crate::store::Result<(Vec<RunStep>, bool)>,
) -> crate::store::Result<Vec<RunStep>> {
    let filter = Filter {
        field: "run_id",
        value: run_id.to_string(),
    };
    let mut page = Page {
        limit: 100,
        order: Order::Asc,
        after: None,
        before: None,
    };
    let mut out = vec![];
    loop {
        let (items, more) = list(&filter, &page)?;
        page.after = items.last().map(|r| r.id.clone());
        out.extend(items);
        if !more {
            return Ok(out);
        }
    }
}

/// Every step of a run, oldest first, in a transaction.
pub(super) fn steps_in_tx(
    tx: &mut dyn Tx,
    thread_id: &str,
    run_id: &str,
) -> crate::store::Result<Vec<RunStep>> {
    all_steps(run_id, |f, p| {
        tx.page::<RunStep>(Some(thread_id), Some(f), p)
    })
}

/// Every step of a run, oldest first.
pub(super) fn steps_in(
    s: &dyn Store,
    thread_id: &str,
    run_id: &str,
) -> crate::store::Result<Vec<RunStep>> {
    all_steps(run_id, |f, p| {
        s.page::<RunStep>(Some(thread_id), Some(f), p)
    })
}

impl Orchestrator {
    /// End a run with `event` (a terminal transition), closing its open step and message in
    /// the same transaction, so no reader sees a finished run with a step still open.
    pub(super) async fn finish(
        &self,
        run_id: &str,
        event: RunEvent,
        error: Option<(&str, &str)>,
    ) -> Result<Run> {
        self.finish_with(run_id, event, error, |_| {}).await
    }

    /// [`Self::finish`], also setting what only a finished run shows (its `usage`, its
    /// `incomplete_details`) in the same write, so no poller sees them on a running run.
    pub(super) async fn finish_with(
        &self,
        run_id: &str,
        event: RunEvent,
        error: Option<(&str, &str)>,
        mut at_end: impl FnMut(&mut Run) + Send + 'static,
    ) -> Result<Run> {
        let err = error.map(|(c, m)| LastError {
            code: c.to_string(),
            message: m.to_string(),
        });
        let rid = run_id.to_string();
        let node = self.inner.config.node.clone();
        let (run, closed, cut_short) = self
            .db(move |s| {
                s.within(|tx| {
                    let mut r = tx.fetch::<Run>(&rid)?;
                    let from = r.status;
                    let to = match transition(r.status, event) {
                        Ok(to) => to,
                        Err(e) => return Ok(Err(RunError::Internal(e.into()))),
                    };
                    r.status = to;
                    let t = now();
                    r.required_action = None;
                    at_end(&mut r);
                    match to {
                        RunStatus::Failed => {
                            r.failed_at = Some(t);
                            r.last_error = err.clone();
                        }
                        RunStatus::Cancelled => r.cancelled_at = Some(t),
                        RunStatus::Completed | RunStatus::Incomplete => r.completed_at = Some(t),
                        _ => {}
                    }
                    // A run that ended no longer expires: OpenAI shows `expires_at: null` then.
                    if to.is_terminal() {
                        r.expires_at = None;
                    }
                    if to.is_terminal() && r.usage.is_none() {
                        let used = tx
                            .get(crate::model::Kind::Transcript, &Transcript::id_for(&r.id))?
                            .map(|t| t.decode::<Transcript>())
                            .transpose()?
                            .map(|t| t.usage)
                            .unwrap_or_default();
                        r.usage = Some(used);
                    }
                    // Close what the run left open.
                    let (step_status, msg_reason) = match to {
                        RunStatus::Cancelled => (StepStatus::Cancelled, Some("run_cancelled")),
                        RunStatus::Expired => (StepStatus::Expired, Some("run_expired")),
                        RunStatus::Failed => (StepStatus::Failed, Some("run_failed")),
                        _ => (StepStatus::Completed, None),
                    };
                    if !tx.update_if(&Record::of(&r)?, super::status_str(from))? {
                        return Err(crate::store::StoreError::Other(anyhow::anyhow!(
                            "run {rid} changed under its lock"
                        )));
                    }
                    if to.is_terminal() {
                        // No worker holds it any more.
                        tx.set_run_owner(&r.id, Some(&node), false)?;
                    }
                    let mut records = vec![];
                    let mut closed = vec![];
                    let mut cut_short = vec![];
                    for mut step in steps_in_tx(tx, &r.thread_id, &r.id)? {
                        if step.status != StepStatus::InProgress {
                            continue;
                        }
                        step.status = step_status;
                        match step_status {
                            StepStatus::Cancelled => step.cancelled_at = Some(t),
                            StepStatus::Expired => step.expired_at = Some(t),
                            StepStatus::Failed => {
                                step.failed_at = Some(t);
                                step.last_error = err.clone();
                            }
                            _ => step.completed_at = Some(t),
                        }
                        if let (Some(reason), StepDetails::MessageCreation { message_creation }) =
                            (msg_reason, &step.step_details)
                            && let Some(mut m) = tx
                                .get(crate::model::Kind::Message, &message_creation.message_id)?
                                .map(|m| m.decode::<Message>())
                                .transpose()?
                            && m.status == MessageStatus::InProgress
                        {
                            m.status = MessageStatus::Incomplete;
                            m.incomplete_at = Some(t);
                            m.incomplete_details =
                                Some(crate::model::IncompleteDetails::because(reason));
                            records.push(Record::of(&m)?);
                            cut_short.push(m);
                        }
                        records.push(Record::of(&step)?);
                        closed.push(step);
                    }
                    for rec in &records {
                        tx.update(rec)?;
                    }
                    Ok(Ok((r, closed, cut_short)))
                })
            })
            .await??;
        if run.status.is_terminal() {
            crate::metrics::run_ended(run.status, (now() - run.created_at).max(0) as f64);
        }
        for m in &cut_short {
            self.emit(run_id, StreamEvent::MessageIncomplete(Box::new(m.clone())));
        }
        for step in &closed {
            if let Some(ev) = StreamEvent::step_ended(step) {
                self.emit(run_id, ev);
            }
        }
        self.emit(run_id, StreamEvent::run(&run));
        Ok(run)
    }

    /// Streaming ends with an `error` event when a run's events stop making sense (e.g. its
    /// thread was deleted); this builds one.
    pub fn error_event(message: &str) -> StreamEvent {
        StreamEvent::error(message)
    }
}
