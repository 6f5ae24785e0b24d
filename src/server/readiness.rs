//! `/readyz` answers from a result at most a second old: the check signs
//! with the HSM, and the endpoint needs no credential, so callers must not
//! be able to turn scrapes into HSM load.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one readiness check stands.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last check's outcome (`Err` holds the reason shown to callers).
#[derive(Debug, Default)]
pub struct Readiness {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    /// The outcome of a check made within [`FRESH_FOR`] of `now`, if any.
    pub fn fresh(&self, now: Instant) -> Option<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < FRESH_FOR)
            .map(|(_, r)| r.clone())
    }

    pub fn record(&self, at: Instant, outcome: Result<(), String>) {
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
        r.record(t, Err("the HSM is unavailable".into()));
        assert_eq!(
            r.fresh(t + Duration::from_millis(999)),
            Some(Err("the HSM is unavailable".into()))
        );
        assert_eq!(r.fresh(t + FRESH_FOR), None);
    }
}
