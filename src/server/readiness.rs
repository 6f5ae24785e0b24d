//! `/readyz` answers from a result at most a second old: the check signs
//! with the HSM, and the endpoint needs no credential, so callers must not
//! be able to turn scrapes into HSM load.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one readiness check stands.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Why the server is not ready, as callers are told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// The last check's outcome.
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), NotReady>)>>,
}

impl Readiness {
    /// The outcome of a check made within [`FRESH_FOR`] of `now`, if any.
    pub fn fresh(&self, now: Instant) -> Option<Result<(), NotReady>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < FRESH_FOR)
            .map(|(_, r)| r.clone())
    }

    pub fn record(&self, at: Instant, outcome: Result<(), NotReady>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_stands_for_a_second_then_is_made_again() {
        let r = Readiness::default();
        let t = Instant::now();
        assert_eq!(r.fresh(t), None);
        let away = NotReady("the HSM is unavailable".into());
        r.record(t, Err(away.clone()));
        assert_eq!(r.fresh(t + Duration::from_millis(999)), Some(Err(away)));
        assert_eq!(r.fresh(t + FRESH_FOR), None);
    }
}
