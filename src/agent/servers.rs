//! Several zeroth servers behind one `server` setting
//! (`"https://a:8443,https://b:8443"`, or a list in agent.toml): a request
//! goes to the server that answered last, and on to the next one when a
//! server cannot be reached or answers 503 (its store or HSM is away).
//! Any other answer, refusals included, is the cluster's answer.

use std::sync::Mutex;

/// The base URL that answered last, tried first next time.
static LAST_GOOD: Mutex<Option<String>> = Mutex::new(None);

/// The base URLs in `server`, the one that answered last first.
pub fn bases(server: &str) -> Vec<String> {
    let mut all: Vec<String> = server
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let last = LAST_GOOD.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(pos) = last.and_then(|l| all.iter().position(|b| *b == l)) {
        all[..=pos].rotate_right(1);
    }
    all
}

/// Whether a failure is worth asking another server.
pub trait Failover {
    fn try_next(&self) -> bool;
}

impl Failover for super::enrol::AgentError {
    fn try_next(&self) -> bool {
        matches!(
            self,
            super::enrol::AgentError::Unreachable { .. }
                | super::enrol::AgentError::Refused { status: 503, .. }
        )
    }
}

impl Failover for super::workload_api::UpstreamError {
    fn try_next(&self) -> bool {
        matches!(self, super::workload_api::UpstreamError::Unreachable(_))
    }
}

/// Runs `call` against each base URL of `server` in turn until one gives
/// an answer that is not worth a failover; that answer (or the last
/// failure).
pub fn first_answer<T, E: Failover>(
    server: &str,
    mut call: impl FnMut(&str) -> Result<T, E>,
) -> Result<T, E> {
    let bases = bases(server);
    let mut last = None;
    for base in &bases {
        match call(base) {
            Err(e) if e.try_next() => {
                tracing::warn!(server = %base, "zeroth server unreachable; trying the next");
                last = Some(Err(e));
            }
            answer => {
                if bases.len() > 1 {
                    *LAST_GOOD.lock().unwrap_or_else(|p| p.into_inner()) = Some(base.clone());
                }
                return answer;
            }
        }
    }
    // `bases` is never empty after validation; an empty setting is a call
    // that was never made.
    last.unwrap_or_else(|| call(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::enrol::AgentError;

    #[test]
    fn the_next_server_is_asked_only_when_one_is_away() {
        let server = "https://a:1/, https://b:2";
        let mut asked = Vec::new();
        let r: Result<u16, AgentError> = first_answer(server, |base| {
            asked.push(base.to_owned());
            if base == "https://a:1" {
                Err(AgentError::Unreachable {
                    url: base.into(),
                    reason: "refused".into(),
                })
            } else {
                Ok(200)
            }
        });
        assert_eq!(r.unwrap(), 200);
        assert_eq!(asked, ["https://a:1", "https://b:2"]);
        // B answered: it is asked first from now on.
        assert_eq!(bases(server), ["https://b:2", "https://a:1"]);
        // A refusal is the cluster's answer: nobody else is asked.
        let mut asked = 0;
        let r: Result<u16, AgentError> = first_answer(server, |_| {
            asked += 1;
            Err(AgentError::Refused {
                status: 403,
                reason: "revoked".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(asked, 1);
    }
}
