//! Several zeroth servers behind one `server` setting
//! (`"https://a:8443,https://b:8443"`, or a list in agent.toml): a request
//! goes to the server that answered last, and on to the next one when a
//! server cannot be reached or answers 503 (its store or HSM is away).
//! Any other answer, refusals included, is the cluster's answer.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::Duration;

/// The base URL that answered last, tried first next time.
static LAST_GOOD: Mutex<Option<String>> = Mutex::new(None);

/// How long a server that is not the last to ask may take to answer before
/// the next is asked: a server that is stopped, or stalled (its process
/// paused, its machine swapping), is passed over as one that is away.
pub const FAILOVER_WAIT: Duration = Duration::from_secs(3);
/// How long the last (or only) server may take.
pub const LAST_WAIT: Duration = Duration::from_secs(30);

thread_local! {
    static ATTEMPT_WAIT: Cell<Duration> = const { Cell::new(LAST_WAIT) };
}

/// How long the call being made may wait for its answer: short while
/// another server is left to ask, long for the last one.
pub fn attempt_wait() -> Duration {
    ATTEMPT_WAIT.with(Cell::get)
}

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

impl Failover for super::upstream::UpstreamError {
    fn try_next(&self) -> bool {
        matches!(self, super::upstream::UpstreamError::Unreachable(_))
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
    for (i, base) in bases.iter().enumerate() {
        let wait = match i + 1 < bases.len() {
            true => FAILOVER_WAIT,
            false => LAST_WAIT,
        };
        let answer = ATTEMPT_WAIT.with(|w| {
            let before = w.replace(wait);
            let answer = call(base);
            w.set(before);
            answer
        });
        match answer {
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

/// As [`first_answer`] for calls whose answer is an HTTP status and body:
/// a server that answers 503 (its store or HSM is away) is passed over for
/// the next too, and its 503 is the answer only when no other server does
/// better.
pub fn first_served<E: Failover, B: Default>(
    server: &str,
    mut call: impl FnMut(&str) -> Result<(u16, B), E>,
) -> Result<(u16, B), E> {
    let bases = bases(server);
    let mut unavailable = None;
    let answer = first_answer(server, |base| match call(base) {
        Ok((503, text)) if bases.len() > 1 => {
            tracing::warn!(server = %base, "zeroth server answered 503; trying the next");
            unavailable = Some((503, text));
            Err(None)
        }
        Ok(answer) => Ok(answer),
        Err(e) => Err(Some(e)),
    });
    match answer {
        Ok(a) => Ok(a),
        Err(Some(e)) => match unavailable {
            // One server was away, another answered 503: say what a server said.
            Some(a) => Ok(a),
            None => Err(e),
        },
        Err(None) => Ok(unavailable.unwrap_or((503, B::default()))),
    }
}

/// A call passed over for the next server: its error, or None for a 503.
impl<E: Failover> Failover for Option<E> {
    fn try_next(&self) -> bool {
        self.as_ref().is_none_or(|e| e.try_next())
    }
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

    #[test]
    fn a_server_answering_503_is_passed_over_for_one_that_serves() {
        let server = "https://c:1, https://d:2";
        let mut asked = Vec::new();
        let r: Result<(u16, String), AgentError> = first_served(server, |base| {
            asked.push(base.to_owned());
            match base {
                "https://c:1" => Ok((503, "the HSM is unavailable".into())),
                _ => Ok((200, "{}".into())),
            }
        });
        assert_eq!(r.unwrap().0, 200);
        assert_eq!(asked, ["https://c:1", "https://d:2"]);
        // Every server answers 503: that is the answer, not an error.
        let r: Result<(u16, String), AgentError> =
            first_served(server, |_| Ok((503, "away".into())));
        assert_eq!(r.unwrap(), (503, "away".to_owned()));
        // One alone answering 503 is asked once.
        let mut asked = 0;
        let r: Result<(u16, String), AgentError> = first_served("https://e:1", |_| {
            asked += 1;
            Ok((503, "away".into()))
        });
        assert_eq!(r.unwrap().0, 503);
        assert_eq!(asked, 1);
        // One unreachable, the other 503: the 503 is the answer.
        let r: Result<(u16, String), AgentError> =
            first_served("https://f:1, https://g:2", |b| match b {
                "https://f:1" => Err(AgentError::Unreachable {
                    url: b.into(),
                    reason: "refused".into(),
                }),
                _ => Ok((503, "away".into())),
            });
        assert_eq!(r.unwrap().0, 503);
    }
}
