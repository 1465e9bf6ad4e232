//! Stream events of runs (`thread.run.*`, `thread.run.step.*`, `thread.message.*`), fanned out
//! to whoever streams a run. Events are not stored: polling reads the stored objects, streaming
//! reads these, and both describe the same changes.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One server-sent event: its name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub event: String,
    pub data: serde_json::Value,
}

impl StreamEvent {
    /// A stream ends after the run's terminal event or `requires_action`.
    pub fn ends_stream(&self) -> bool {
        matches!(
            self.event.as_str(),
            "thread.run.completed"
                | "thread.run.incomplete"
                | "thread.run.failed"
                | "thread.run.cancelled"
                | "thread.run.expired"
                | "thread.run.requires_action"
                | "error"
        )
    }
}

/// A run's events as they happen.
pub type EventStream = UnboundedReceiver<StreamEvent>;

#[derive(Default)]
pub struct Hub {
    subs: Mutex<HashMap<String, Vec<UnboundedSender<StreamEvent>>>>,
}

impl Hub {
    /// Receive every later event of `run_id`.
    pub fn subscribe(&self, run_id: &str) -> EventStream {
        let (tx, rx) = unbounded_channel();
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    /// Drop the subscriptions of a run that will send nothing (its creation failed).
    pub fn forget(&self, run_id: &str) {
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }

    pub fn emit(&self, run_id: &str, event: &str, data: serde_json::Value) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = subs.get_mut(run_id) else {
            return;
        };
        let ev = StreamEvent {
            event: event.to_string(),
            data,
        };
        let ends = ev.ends_stream();
        list.retain(|tx| tx.send(ev.clone()).is_ok());
        // A stream is over at its end event; the next stream subscribes anew.
        if list.is_empty() || ends {
            subs.remove(run_id);
        }
    }
}
