//! Run statuses and the one function allowed to change them.
//!
//! `queued → in_progress → (requires_action ⇄ queued) → completed | incomplete | failed |
//! cancelling → cancelled | expired`, as OpenAI's runs behave.

pub use crate::model::RunStatus;

/// What happened to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// A worker picked the run up.
    Start,
    /// The model asked for function outputs.
    NeedToolOutputs,
    /// The client submitted them; the run goes back in the queue.
    ToolOutputsSubmitted,
    /// The model finished.
    Finish,
    /// A token limit ended the run early.
    HitTokenLimit,
    /// The backend or a tool failed.
    Fail,
    /// The client asked to cancel.
    Cancel,
    /// The worker stopped after a cancel request.
    Stopped,
    /// `expires_at` passed.
    Expire,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a run that is {from:?} cannot take {event:?}")]
pub struct InvalidTransition {
    pub from: RunStatus,
    pub event: RunEvent,
}

/// The next status of a run in `from` after `event`.
pub fn transition(from: RunStatus, event: RunEvent) -> Result<RunStatus, InvalidTransition> {
    use RunEvent as E;
    use RunStatus as S;
    let to = match (from, event) {
        (S::Queued, E::Start) => S::InProgress,
        (S::InProgress, E::NeedToolOutputs) => S::RequiresAction,
        (S::RequiresAction, E::ToolOutputsSubmitted) => S::Queued,
        (S::InProgress, E::Finish) => S::Completed,
        (S::InProgress, E::HitTokenLimit) => S::Incomplete,
        (S::Queued | S::InProgress, E::Fail) => S::Failed,
        (S::Queued | S::InProgress | S::RequiresAction, E::Cancel) => S::Cancelling,
        (S::Cancelling, E::Stopped) => S::Cancelled,
        // Expiry ends any run that has not finished.
        (S::Queued | S::InProgress | S::RequiresAction | S::Cancelling, E::Expire) => S::Expired,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::RunEvent as E;
    use super::RunStatus as S;
    use super::*;

    #[test]
    fn the_happy_paths_of_a_run() {
        let walk = |events: &[E]| {
            events
                .iter()
                .try_fold(S::Queued, |s, e| transition(s, *e))
                .unwrap()
        };
        assert_eq!(walk(&[E::Start, E::Finish]), S::Completed);
        assert_eq!(
            walk(&[
                E::Start,
                E::NeedToolOutputs,
                E::ToolOutputsSubmitted,
                E::Start,
                E::Finish
            ]),
            S::Completed
        );
        assert_eq!(walk(&[E::Start, E::HitTokenLimit]), S::Incomplete);
        assert_eq!(walk(&[E::Start, E::Cancel, E::Stopped]), S::Cancelled);
        assert_eq!(walk(&[E::Start, E::NeedToolOutputs, E::Expire]), S::Expired);
        assert_eq!(walk(&[E::Start, E::Fail]), S::Failed);
    }

    #[test]
    fn terminal_runs_never_change_and_nothing_skips_a_step() {
        let all_events = [
            E::Start,
            E::NeedToolOutputs,
            E::ToolOutputsSubmitted,
            E::Finish,
            E::HitTokenLimit,
            E::Fail,
            E::Cancel,
            E::Stopped,
            E::Expire,
        ];
        for s in [
            S::Cancelled,
            S::Failed,
            S::Completed,
            S::Incomplete,
            S::Expired,
        ] {
            assert!(s.is_terminal() && !s.locks_thread());
            for e in all_events {
                assert!(transition(s, e).is_err(), "{s:?} took {e:?}");
            }
        }
        assert!(transition(S::Queued, E::Finish).is_err());
        assert!(transition(S::RequiresAction, E::Finish).is_err());
        assert!(transition(S::Queued, E::NeedToolOutputs).is_err());
        assert!(S::RequiresAction.locks_thread());
    }

    #[test]
    fn statuses_serialize_as_openai_names() {
        assert_eq!(
            serde_json::to_string(&S::RequiresAction).unwrap(),
            "\"requires_action\""
        );
        assert_eq!(
            serde_json::to_string(&S::InProgress).unwrap(),
            "\"in_progress\""
        );
    }
}
