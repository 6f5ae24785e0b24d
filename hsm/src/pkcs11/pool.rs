//! A pool of sessions on one token, shared by every thread.
//!
//! A PKCS#11 session runs one operation at a time (`Session` is Send, not
//! Sync), so each concurrent caller needs its own. Sessions are opened on
//! demand up to a bound and reused; the login is per application, so a
//! session opened after the login is already authorised.

use std::sync::{Condvar, Mutex};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use cryptoki::slot::Slot;

use crate::HsmError;

pub(crate) struct SessionPool {
    /// The token's slot; it may change when the module is reinitialised.
    slot: Mutex<Slot>,
    max: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
}

impl SessionPool {
    pub(crate) fn new(slot: Slot, max: usize) -> Self {
        Self {
            slot: Mutex::new(slot),
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// Runs `f` on a pooled session. A session whose operation failed in a
    /// way that may have broken it is closed rather than returned.
    pub(crate) fn with<T>(
        &self,
        ctx: &Pkcs11,
        f: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let session = self.checkout(ctx)?;
        let result = f(&session);
        match &result {
            Err(e) if e.needs_new_session() => self.discard(session),
            _ => self.checkin(session),
        }
        result
    }

    fn checkout(&self, ctx: &Pkcs11) -> Result<Session, HsmError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = st.idle.pop() {
                return Ok(s);
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
                return ctx.open_rw_session(slot).map_err(|e| {
                    self.forget_one();
                    HsmError::pkcs11("C_OpenSession")(e)
                });
            }
            st = self.returned.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn checkin(&self, s: Session) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.idle.push(s);
        drop(st);
        self.returned.notify_one();
    }

    fn discard(&self, s: Session) {
        drop(s);
        self.forget_one();
    }

    fn forget_one(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.returned.notify_one();
    }

    pub(crate) fn slot(&self) -> Slot {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens later sessions on `slot` (the token was found again there).
    pub(crate) fn move_to(&self, slot: Slot) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = slot;
    }

    /// Closes every idle session (after the token failed, before a re-login).
    pub(crate) fn drain(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.idle.len();
        st.idle.clear();
        st.open = st.open.saturating_sub(n);
    }
}
