//! Rotation of the SSH CAs without downtime: prepare (a new key in the
//! HSM, published but not signing), activate (it signs; the old one is
//! retired but still published), retire (no longer published, its key
//! destroyed). Other servers of a cluster follow through [`SshIssuer::refresh`].

use super::ca::{SshCa, SshCaError};
use super::ca_set::{load, CaInfo, CaKind};
use super::issuer::SshIssuer;
use crate::audit::{self, Event};
use crate::store::{now, ssh_cas, StoreError};

impl SshIssuer {
    /// Reloads the CA keys of each kind whose rotation another server of
    /// the cluster moved on; whether any changed.
    pub fn refresh(&self) -> Result<bool, SshCaError> {
        let mut changed = false;
        for kind in [CaKind::User, CaKind::Host] {
            let mut rows: Vec<(String, String)> = ssh_cas::list(&self.store.lock(), kind.as_str())?
                .into_iter()
                .map(|r| (r.key_name, r.state))
                .collect();
            rows.sort();
            let known: Vec<(String, String)> = self
                .set(kind)
                .states()
                .into_iter()
                .map(|(n, s)| (n, s.to_owned()))
                .collect();
            if rows != known {
                let fresh = load(&self.store, &self.keys, self.algorithm, kind)?;
                *self.set_mut(kind) = fresh;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// The CA keys verifiers of `kind` should trust, OpenSSH format, one per
    /// line: the signing CA first, then the next and the retired ones.
    pub fn published(&self, kind: CaKind) -> String {
        self.set(kind)
            .published()
            .map(|c| format!("{}\n", c.public_openssh()))
            .collect()
    }

    /// Every CA key and its rotation state.
    pub fn list_cas(&self) -> Vec<CaInfo> {
        let mut out = Vec::new();
        for kind in [CaKind::User, CaKind::Host] {
            let set = self.set(kind);
            let info = |(name, ca): &(String, SshCa), state| CaInfo {
                kind: kind.as_str(),
                key_name: name.clone(),
                state,
                public_key: ca.public_openssh(),
            };
            out.push(info(&set.active, "active"));
            out.extend(set.next.iter().map(|c| info(c, "next")));
            out.extend(set.retired.iter().map(|c| info(c, "retired")));
        }
        out
    }

    /// Rotation, step 1: a new CA key in the HSM, published (so agents and
    /// known_hosts trust it) but not signing yet.
    pub fn prepare(&self, kind: CaKind) -> Result<CaInfo, SshCaError> {
        let mut set = self.set_mut(kind);
        if set.next.is_some() {
            return Err(SshCaError::Rotation(format!(
                "a next {} CA is already published; activate it first",
                kind.as_str()
            )));
        }
        let name = format!(
            "{}-g{}-{}",
            self.algorithm.key_name(kind.base_key()),
            now(),
            hex::encode(rand::random::<[u8; 2]>())
        );
        let ca = SshCa::open(self.keys.clone(), &name, self.algorithm, kind.cert_type())?;
        let public_key = ca.public_openssh();
        self.record(kind, "ssh.ca.prepared", &name, |tx| {
            ssh_cas::insert(tx, &name, kind.as_str(), "next").map(drop)
        })?;
        set.next = Some((name.clone(), ca));
        Ok(CaInfo {
            kind: kind.as_str(),
            key_name: name,
            state: "next",
            public_key,
        })
    }

    /// Rotation, step 2: the next CA signs from now on; the previous one is
    /// retired but stays published while what it signed may be valid.
    pub fn activate(&self, kind: CaKind) -> Result<String, SshCaError> {
        let mut set = self.set_mut(kind);
        let Some(next) = set.next.take() else {
            return Err(SshCaError::Rotation(format!(
                "no next {} CA: run `zeroth ssh ca prepare --kind {}` first and let agents pick it up",
                kind.as_str(),
                kind.as_str()
            )));
        };
        let name = next.0.clone();
        if let Err(e) = self.record(kind, "ssh.ca.activated", &name, |tx| {
            ssh_cas::move_state(tx, kind.as_str(), "active", "retired")?;
            ssh_cas::move_state(tx, kind.as_str(), "next", "active")?;
            Ok(())
        }) {
            set.next = Some(next);
            return Err(e);
        }
        let old = std::mem::replace(&mut set.active, next);
        set.retired.push(old);
        Ok(name)
    }

    /// Rotation, step 3: retired CAs are no longer published (certificates
    /// they signed stop working) and their keys leave the HSM.
    pub fn retire(&self, kind: CaKind) -> Result<Vec<String>, SshCaError> {
        let mut set = self.set_mut(kind);
        let names: Vec<String> = set.retired.iter().map(|(n, _)| n.clone()).collect();
        if names.is_empty() {
            return Ok(names);
        }
        self.record(kind, "ssh.ca.retired", &names.join(","), |tx| {
            ssh_cas::move_state(tx, kind.as_str(), "retired", "removed").map(|_| ())
        })?;
        set.retired.clear();
        for n in &names {
            if let Ok(key) = zeroth_hsm::KeyName::new(n) {
                if let Err(e) = self.keys.destroy(&key) {
                    tracing::warn!(key = %n, error = %e, "could not destroy a retired SSH CA key");
                }
            }
        }
        Ok(names)
    }

    /// A change to the CA table and its audit event, in one transaction.
    fn record(
        &self,
        kind: CaKind,
        event: &'static str,
        key_name: &str,
        change: impl FnOnce(&crate::store::sql::Tx<'_>) -> Result<(), StoreError>,
    ) -> Result<(), SshCaError> {
        let mut conn = self.store.lock();
        let tx = conn
            .transaction()
            .map_err(StoreError::sql("starting a transaction"))?;
        change(&tx)?;
        audit::append(
            &tx,
            &Event {
                kind: event,
                subject: &format!("ssh-ca/{}", kind.as_str()),
                detail: serde_json::json!({ "key": key_name }),
            },
        )
        .map_err(|e| SshCaError::Rotation(e.to_string()))?;
        tx.commit()
            .map_err(StoreError::sql("committing an SSH CA change"))?;
        Ok(())
    }
}
