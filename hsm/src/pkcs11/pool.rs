//! A pool of sessions on one token, shared by every thread.
//!
//! A PKCS#11 session runs one operation at a time (`Session` is Send, not
//! Sync), so each concurrent caller needs its own. Sessions are opened on
//! demand up to a bound and reused; the login is per application, so a
//! session opened after the login is already authorised.
//!
//! Reinitialising the module (C_Finalize, C_Initialize: what a token that
//! went away and came back needs) is done only while no session is in use
//! (PKCS#11 leaves C_Finalize during other calls undefined), and every
//! session opened before it is forgotten, never closed: after C_Initialize
//! the module hands out handles afresh, so closing an old handle could end
//! another thread's new session.

use std::sync::{Condvar, Mutex, RwLock};

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
    /// Held shared by every use of a session, exclusively to reinitialise.
    gate: RwLock<()>,
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
            gate: RwLock::new(()),
        }
    }

    /// Runs `f` on a pooled session. A session whose operation failed in a
    /// way that may have broken it is closed rather than returned.
    pub(crate) fn with<T>(
        &self,
        ctx: &Pkcs11,
        f: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let _in_use = self.gate.read().unwrap_or_else(|p| p.into_inner());
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

    /// Closes every idle session (after the token failed, before a re-login).
    pub(crate) fn drain(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.idle.len();
        st.idle.clear();
        st.open = st.open.saturating_sub(n);
    }

    /// Waits until no session is in use, then runs `reinit` (which
    /// finalises and initialises the module and finds the token's slot
    /// again) with no other caller inside the module. Every session from
    /// before is forgotten without C_CloseSession.
    pub(crate) fn reinitialize(
        &self,
        reinit: impl FnOnce() -> Result<Slot, HsmError>,
    ) -> Result<(), HsmError> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // No session is checked out while the gate is held exclusively.
        for old in st.idle.drain(..) {
            std::mem::forget(old);
        }
        st.open = 0;
        drop(st);
        let found = reinit();
        if let Ok(slot) = &found {
            *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = *slot;
        }
        self.returned.notify_all();
        found.map(drop)
    }
}
