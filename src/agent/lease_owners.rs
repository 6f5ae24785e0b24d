//! Which local program each lease the agent obtained belongs to. A lease
//! is the program's that asked for it (its uid and systemd unit, the facts
//! the kernel reports and the program cannot change): only that program may
//! renew or give it back through the agent. Leases the proxies hold are
//! never here, so no program can end another's proxied session.

use std::collections::HashMap;
use std::sync::Mutex;

use super::attest::Caller;

/// The most leases remembered; the expired go first when it is reached.
const MAX_LEASES: usize = 100_000;

#[derive(Debug, Default)]
pub struct LeaseOwners(Mutex<HashMap<String, Owner>>);

/// Why a program may not act on a lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease {lease} was not issued to {who} through this agent: a program may renew or give back only its own leases")]
pub struct NotYours {
    pub lease: String,
    /// "uid 1001", or "uid 1001 in unit shop.service".
    pub who: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    uid: u32,
    unit: Option<String>,
    /// When the lease ends (Unix seconds), after which it is forgotten.
    expires: i64,
}

impl LeaseOwners {
    /// `id` was issued to `who`, until `expires`.
    pub fn record(&self, id: &str, who: &Caller, expires: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_LEASES {
            let now = crate::wire::now();
            map.retain(|_, o| o.expires >= now);
        }
        if map.len() < MAX_LEASES {
            map.insert(
                id.to_owned(),
                Owner {
                    uid: who.uid,
                    unit: who.unit.clone(),
                    expires,
                },
            );
        }
    }

    /// Whether `who` may act on lease `id`: it was issued to the same uid
    /// and unit through this agent.
    pub fn check(&self, id: &str, who: &Caller) -> Result<(), NotYours> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(o) if o.uid == who.uid && o.unit == who.unit => Ok(()),
            _ => Err(NotYours {
                lease: id.to_owned(),
                who: match &who.unit {
                    Some(u) => format!("uid {} in unit {u}", who.uid),
                    None => format!("uid {}", who.uid),
                },
            }),
        }
    }

    /// The lease now ends at `expires` (renewed).
    pub fn extend(&self, id: &str, expires: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = map.get_mut(id) {
            o.expires = expires;
        }
    }

    /// The lease is over (given back).
    pub fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, unit: Option<&str>) -> Caller {
        Caller {
            uid,
            pid: 4242,
            unit: unit.map(str::to_owned),
        }
    }

    #[test]
    fn a_lease_is_its_programs_only() {
        let owners = LeaseOwners::default();
        let a = caller(1001, Some("shop.service"));
        owners.record("l1", &a, crate::wire::now() + 60);
        // The same uid and unit, another pid (a later process): its own.
        assert!(owners
            .check("l1", &caller(1001, Some("shop.service")))
            .is_ok());
        // Another uid, the same uid outside the unit, another unit: not.
        for other in [
            caller(1002, Some("shop.service")),
            caller(1001, None),
            caller(1001, Some("other.service")),
        ] {
            let why = owners.check("l1", &other).unwrap_err();
            assert_eq!(why.lease, "l1");
            assert!(why.to_string().contains("only its own leases"), "{why}");
        }
        // A lease the agent never issued to anyone (a proxy's): no one's.
        assert!(owners.check("proxied", &a).is_err());
        owners.forget("l1");
        assert!(owners.check("l1", &a).is_err());
    }
}
