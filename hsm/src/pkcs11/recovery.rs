//! A token that goes away and comes back: pooled sessions and cached
//! handles are dropped, the user logs in again, and if that fails the
//! module is reinitialised and the token found anew, with a bounded
//! backoff in between and one recovery at a time.

use cryptoki::error::RvError;
use cryptoki::mechanism::MechanismType;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use super::{Module, Pkcs11KeyStore, TokenSelector};
use crate::HsmError;

/// Backoff between attempts to reach a token that went away.
#[derive(Debug)]
pub(super) struct Recovery {
    pub(super) not_before: std::time::Instant,
    pub(super) wait: std::time::Duration,
    /// Counts successful recoveries, so callers that waited on one do not
    /// start another.
    pub(super) generation: u64,
}

pub(super) const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
const LAST_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

impl Pkcs11KeyStore {
    pub(super) fn generation(&self) -> u64 {
        self.recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// Drops every pooled session and cached handle and logs in again; if
    /// that fails, reinitialises the module and finds the token anew (it
    /// may have gone away and come back). While the token stays away, tries
    /// at most every 250 ms, doubling to 2 s (so a token back is found within 2 s), and fails fast in between.
    /// `seen` is the recovery generation the caller started under: if
    /// another caller recovered since, there is nothing left to do.
    pub(super) fn recover(&self, cause: &HsmError, seen: u64) -> Result<(), HsmError> {
        let mut r = self.recovery.lock().unwrap_or_else(|p| p.into_inner());
        if r.generation != seen {
            return Ok(());
        }
        let now = std::time::Instant::now();
        if now < r.not_before {
            return Err(HsmError::TokenGone(format!(
                "{cause}; trying again in {} ms",
                (r.not_before - now).as_millis()
            )));
        }
        tracing::warn!(error = %cause, "HSM sessions or key handles lost; logging in again");
        self.pool.drain();
        self.forget_handles();
        let afresh = || {
            self.pool.reinitialize(|| {
                self.module.reinitialize()?;
                self.module.find_slot(&self.token)
            })?;
            self.login()
        };
        let outcome = match cause {
            // A login would succeed and change nothing: only a module
            // reinitialised sees the token's objects again.
            HsmError::TokenStale(_) => afresh(),
            _ => self.login().or_else(|e| {
                tracing::warn!(error = %e, "logging in again failed; reinitialising the PKCS#11 module");
                afresh()
            }),
        };
        match &outcome {
            Ok(()) => {
                tracing::info!("the HSM is back");
                r.generation += 1;
                r.wait = FIRST_RETRY;
                r.not_before = now;
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in_ms = r.wait.as_millis() as u64, "the HSM is still unreachable");
                r.not_before = now + r.wait;
                r.wait = (r.wait * 2).min(LAST_RETRY);
            }
        }
        outcome
    }

    pub(super) fn forget_handles(&self) {
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// How long a token not seen at start is looked for again.
const OPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Finds the token and its mechanisms, looking again for a few seconds if
/// that fails: a token another process is writing at that moment
/// (SoftHSM's file store, while another server makes keys in it) can be
/// missing from the slot list a module builds then, or fail to describe
/// itself, and is there once the module looks afresh.
pub(super) fn reach_patiently(
    module: &Module,
    token: &TokenSelector,
) -> Result<(Slot, Vec<MechanismType>), HsmError> {
    let deadline = std::time::Instant::now() + OPEN_PATIENCE;
    loop {
        let reached = module.find_slot(token).and_then(|slot| {
            let mechanisms = module
                .ctx()
                .get_mechanism_list(slot)
                .map_err(HsmError::pkcs11("C_GetMechanismList"))?;
            Ok((slot, mechanisms))
        });
        match reached {
            Err(HsmError::TokenAbsent { .. } | HsmError::Pkcs11 { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
                module.reinitialize()?;
            }
            found => return found,
        }
    }
}

impl Pkcs11KeyStore {
    /// Logs in at start, trying again for a few seconds after a general
    /// error: SoftHSM's file store, while other servers make keys in the
    /// same token at the same moment, can fail a login it answers a moment
    /// later. A wrong or locked PIN fails at once.
    pub(super) fn login_patiently(&self) -> Result<(), HsmError> {
        let deadline = std::time::Instant::now() + OPEN_PATIENCE;
        loop {
            match self.login() {
                Err(e)
                    if e.rv() == Some(RvError::GeneralError)
                        && std::time::Instant::now() < deadline =>
                {
                    tracing::warn!(error = %e, "logging in to the token failed; trying again");
                    self.pool.drain();
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }
}

/// Fails (as a lost session, which recovery cures) unless `s` holds the
/// user's login.
pub(super) fn logged_in(s: &Session) -> Result<(), HsmError> {
    use cryptoki::session::SessionState;
    let info = s
        .get_session_info()
        .map_err(HsmError::pkcs11("C_GetSessionInfo"))?;
    match info.session_state() {
        SessionState::RoUser | SessionState::RwUser => Ok(()),
        _ => Err(HsmError::TokenGone("the session lost its login".into())),
    }
}

pub(super) fn stale_handle(e: &HsmError) -> bool {
    matches!(
        e.rv(),
        Some(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid)
    )
}
