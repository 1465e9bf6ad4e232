//! Admitting a session under a project's `max_live_sessions`: the sandbox's live sessions are
//! counted with the ones being brought to life right now (admitted, their call not yet over),
//! so two calls arriving together cannot both take a project's last place.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::Project;

/// The sessions admitted and not yet done with, by sandbox key (one process's: live sessions
/// are counted per node). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Admissions {
    pending: Arc<Mutex<HashMap<String, usize>>>,
}

/// A session admitted: counted as live until dropped (when its call is over, by which time it
/// is live in the sandbox, or failed).
#[derive(Debug)]
pub struct Admitted {
    admissions: Option<(Admissions, String)>,
}

impl Admissions {
    /// Admit session `key` of `project`: `Err(max)` (counted in the metrics) when the project
    /// already has `max_live_sessions` live or admitted sessions and `key` is not one of them.
    /// `live` gives the sandbox's live session keys (every project's); it is asked only when
    /// the project has a limit.
    pub async fn admit_with<F: Future<Output = Vec<String>>>(
        &self,
        project: &Project,
        key: &str,
        live: impl FnOnce() -> F,
    ) -> Result<Admitted, u64> {
        let live = match project.limits.max_live_sessions {
            Some(_) => live().await,
            None => vec![],
        };
        self.admit(project, &live, key)
            .inspect_err(|_| crate::metrics::limit_refused("sessions"))
    }

    /// [`Self::admit_with`], the sandbox's `live` session keys known.
    fn admit(&self, project: &Project, live: &[String], key: &str) -> Result<Admitted, u64> {
        if project.limits.max_live_sessions.is_none() {
            return Ok(Admitted { admissions: None });
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen: Vec<String> = live.to_vec();
        seen.extend(pending.keys().cloned());
        if let Some(max) = project.sessions_full(&seen, key) {
            return Err(max);
        }
        *pending.entry(key.to_string()).or_default() += 1;
        Ok(Admitted {
            admissions: Some((self.clone(), key.to_string())),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some((admissions, key)) = self.admissions.take() else {
            return;
        };
        let mut pending = admissions.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Limits;

    fn project(max: Option<u64>) -> Project {
        Project {
            id: Arc::from("team"),
            name: "team".into(),
            limits: Limits {
                max_live_sessions: max,
                ..Limits::default()
            },
        }
    }

    #[test]
    fn sessions_being_started_count_until_their_call_is_over() {
        let (a, p) = (Admissions::default(), project(Some(1)));
        let first = a.admit(&p, &[], "team.s1").unwrap();
        // Not live yet in the sandbox, but admitted: the project's one place is taken.
        assert_eq!(a.admit(&p, &[], "team.s2").unwrap_err(), 1);
        // The same session again is no new one.
        let again = a.admit(&p, &[], "team.s1").unwrap();
        // Another project's sessions are not counted.
        let other = Project {
            id: Arc::from("other"),
            ..project(Some(1))
        };
        let theirs = a.admit(&other, &[], "other.s1").unwrap();
        drop((first, again, theirs));
        // Done and not live (it failed): the place is free again.
        let second = a.admit(&p, &[], "team.s2").unwrap();
        // A live session of the project counts as well.
        drop(second);
        assert_eq!(a.admit(&p, &["team.s1".into()], "team.s2").unwrap_err(), 1);
        // Without a limit nothing is counted.
        let open = project(None);
        let held: Vec<_> = (0..3)
            .map(|i| a.admit(&open, &[], &format!("team.x{i}")).unwrap())
            .collect();
        assert!(a.pending.lock().unwrap().is_empty());
        drop(held);
    }
}
