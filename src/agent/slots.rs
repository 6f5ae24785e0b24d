//! Open connections per uid on the agent's sockets (the workload API and
//! each proxy). Every local user may open them, so a uid the socket does
//! not admit may hold only a few at once (each is answered and closed
//! quickly), and no uid may hold so many that the agent runs out of
//! descriptors for the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Connections a uid the socket does not admit may have open at once.
pub const NOT_ADMITTED: usize = 8;
/// Connections an admitted uid may have open at once (its sessions, its
/// programs' Workload API streams).
pub const ADMITTED: usize = 512;

#[derive(Debug, Default)]
pub struct Slots(Arc<Mutex<HashMap<u32, usize>>>);

/// One open connection of a uid; its slot is freed when dropped.
#[derive(Debug)]
pub struct Slot {
    uid: u32,
    open: Arc<Mutex<HashMap<u32, usize>>>,
}

impl Slots {
    /// A slot for a connection of `uid`, unless it has `limit` open already.
    pub fn take(&self, uid: u32, limit: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(uid).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            uid,
            open: self.0.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_holds_at_most_its_limit_and_gets_slots_back() {
        let slots = Slots::default();
        let held: Vec<Slot> = (0..3).map(|_| slots.take(65534, 3).unwrap()).collect();
        assert!(slots.take(65534, 3).is_none());
        // Another uid is not held up by it.
        assert!(slots.take(1001, 3).is_some());
        drop(held);
        assert!(slots.take(65534, 3).is_some());
    }
}
