//! SSH user and host certificates for enrolled nodes: role checks, a serial
//! from the store, the certificate signed in the HSM, and a lease plus an
//! audit event committed together.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::ca::{CaAlgorithm, CertSpec, SshCa, SshCaError};
use super::ca_set::{load, CaKind, CaSet};
use super::request::parse_public_key;
use crate::audit::{self, Event};
use crate::config::{SshCertKind, SshRoleConfig};
use crate::creds::{CredsError, Holder};
use crate::store::leases::{self, Lease, LeaseState};
use crate::store::{now, ssh_certs, Store, StoreError};

/// The `source-address` that pins a certificate to its caller. An IPv4
/// client seen on a dual-stack socket arrives as `::ffff:a.b.c.d`, which
/// sshd never matches against the IPv4 peer it sees: write it as IPv4.
fn source_address(caller: IpAddr) -> String {
    match caller.to_canonical() {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

pub struct SshIssuer {
    pub(super) store: Arc<Store>,
    pub(super) keys: Arc<dyn zeroth_hsm::KeyStore>,
    pub(super) algorithm: CaAlgorithm,
    user: RwLock<CaSet>,
    host: RwLock<CaSet>,
    roles: BTreeMap<String, SshRoleConfig>,
    /// Serials reserved in the store, handed out without a write each:
    /// (next, last).
    serials: std::sync::Mutex<(u64, u64)>,
    writer: crate::store::group_commit::GroupWriter,
}

/// Ledger work that records an issued certificate.
type Record =
    Box<dyn FnOnce(&crate::store::sql::Tx<'_>) -> Result<(), crate::store::StoreError> + Send>;

/// Serials reserved at a time.
const SERIAL_BLOCK: u64 = 256;

/// What a caller asks for.
#[derive(Debug, Clone)]
pub struct SignRequest {
    pub public_key: String,
    /// Principals wanted (default: every one the role allows).
    pub principals: Option<Vec<String>>,
    pub ttl: Option<Duration>,
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Signed {
    pub certificate: String,
    pub serial: u64,
    pub lease_id: String,
    pub principals: Vec<String>,
    pub valid_before: i64,
}

impl SshIssuer {
    pub fn new(
        store: Arc<Store>,
        keys: Arc<dyn zeroth_hsm::KeyStore>,
        roles: &[SshRoleConfig],
        algorithm: CaAlgorithm,
    ) -> Result<Self, SshCaError> {
        Ok(Self {
            user: RwLock::new(load(&store, &keys, algorithm, CaKind::User)?),
            host: RwLock::new(load(&store, &keys, algorithm, CaKind::Host)?),
            keys,
            algorithm,
            serials: std::sync::Mutex::new((1, 0)),
            writer: crate::store::group_commit::GroupWriter::spawn(store.clone()),
            store,
            roles: roles.iter().map(|r| (r.name.clone(), r.clone())).collect(),
        })
    }

    /// The KRL of the user or host CA: every certificate of that kind
    /// revoked before its expiry.
    pub fn krl(&self, kind: CaKind) -> Result<Vec<u8>, CredsError> {
        let cas: Vec<Vec<u8>> = self.set(kind).published().map(SshCa::public_blob).collect();
        let conn = self.store.lock();
        let lease_kind = match kind {
            CaKind::User => super::engine::USER_KIND,
            CaKind::Host => super::engine::HOST_KIND,
        };
        let revoked = ssh_certs::revoked_ssh_certs(&conn, now(), lease_kind)?;
        let (version, generated) = ssh_certs::last_ssh_revocation(&conn)?;
        Ok(super::krl::build(&cas, &revoked, version, generated))
    }

    /// A certificate serial unique across restarts: from the reserved
    /// block, reserving the next block when it runs out.
    fn serial(&self) -> Result<u64, StoreError> {
        let mut pool = self
            .serials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.0 > pool.1 {
            *pool = ssh_certs::reserve_ssh_serials(&mut self.store.lock(), SERIAL_BLOCK)?;
        }
        let s = pool.0;
        pool.0 += 1;
        Ok(s)
    }

    pub(super) fn set(&self, kind: CaKind) -> std::sync::RwLockReadGuard<'_, CaSet> {
        let lock = match kind {
            CaKind::User => &self.user,
            CaKind::Host => &self.host,
        };
        lock.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn set_mut(&self, kind: CaKind) -> std::sync::RwLockWriteGuard<'_, CaSet> {
        let lock = match kind {
            CaKind::User => &self.user,
            CaKind::Host => &self.host,
        };
        lock.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signs `req` for `holder` and returns once the certificate, its lease
    /// and its audit event are durable. The HSM signature is made on a
    /// blocking thread; the commit is awaited without holding one.
    pub async fn sign(
        self: &Arc<Self>,
        role_name: String,
        holder: Holder,
        node_id: String,
        caller: IpAddr,
        req: SignRequest,
    ) -> Result<Signed, CredsError> {
        let me = self.clone();
        let (signed, record) = tokio::task::spawn_blocking(move || {
            me.certify(&role_name, &holder, &node_id, caller, &req)
        })
        .await
        .map_err(|e| CredsError::Unavailable(format!("the SSH signer: {e}")))??;
        self.writer.write_async(record).await?;
        Ok(signed)
    }

    /// The certificate for `req`, and the ledger work that records it (its
    /// serial, lease and audit event), to be committed before it is handed
    /// out.
    fn certify(
        &self,
        role_name: &str,
        holder: &Holder,
        node_id: &str,
        caller: IpAddr,
        req: &SignRequest,
    ) -> Result<(Signed, Record), CredsError> {
        let role = self
            .roles
            .get(role_name)
            .ok_or_else(|| CredsError::NotFound(format!("no SSH role {role_name:?}")))?;
        let allowed = holder
            .group
            .as_ref()
            .is_some_and(|g| role.allow_groups.contains(g))
            || role.allow_spiffe.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => holder.spiffe_id.starts_with(prefix),
                None => *p == holder.spiffe_id,
            });
        if !allowed {
            return Err(CredsError::Forbidden(format!(
                "{} may not use SSH role {role_name}",
                holder.spiffe_id
            )));
        }
        let key =
            parse_public_key(&req.public_key).map_err(|e| CredsError::BadRequest(e.to_string()))?;
        let permitted: Vec<String> = role
            .principals
            .iter()
            .map(|p| p.replace("{{node}}", node_id))
            .collect();
        let principals = match &req.principals {
            None => permitted.clone(),
            Some(wanted) => {
                if let Some(p) = wanted.iter().find(|p| !permitted.contains(p)) {
                    return Err(CredsError::Forbidden(format!(
                        "principal {p:?} is not allowed by SSH role {role_name} (allowed: {permitted:?})"
                    )));
                }
                wanted.clone()
            }
        };
        if principals.is_empty() {
            return Err(CredsError::BadRequest("`principals` is empty".into()));
        }
        let ttl = req.ttl.unwrap_or(role.default_ttl).min(role.max_ttl);
        if ttl < Duration::from_secs(10) {
            return Err(CredsError::BadRequest(
                "`ttl_seconds` must be at least 10".into(),
            ));
        }
        let created = now();
        let valid_before = created + ttl.as_secs() as i64;
        let lease_id = hex::encode(rand::random::<[u8; 16]>());
        let host = role.cert_type == SshCertKind::Host;
        let (set, lease_kind, key_id) = if host {
            let id = format!("{} host lease {lease_id}", holder.spiffe_id);
            (self.set(CaKind::Host), super::engine::HOST_KIND, id)
        } else {
            let id = format!("{} lease {lease_id}", holder.spiffe_id);
            (self.set(CaKind::User), super::engine::USER_KIND, id)
        };
        let ca = &set.active.1;
        let mut critical = Vec::new();
        let mut extensions = Vec::new();
        if !host {
            let source = role
                .source_address
                .clone()
                .unwrap_or_else(|| source_address(caller));
            critical.push(("source-address".to_owned(), source));
            if let Some(cmd) = &role.force_command {
                critical.push(("force-command".to_owned(), cmd.clone()));
            }
            extensions.clone_from(&role.extensions);
        }

        // Signed outside the store's lock: the HSM works for many callers at
        // once; the serial is ours alone already.
        let serial = self.serial()?;
        let cert = ca
            .certify(
                &key,
                &CertSpec {
                    serial,
                    key_id: key_id.clone(),
                    principals: principals.clone(),
                    valid_after: (created - role.backdate.as_secs() as i64).max(0) as u64,
                    valid_before: valid_before as u64,
                    critical_options: critical,
                    extensions,
                },
            )
            .map_err(|e| CredsError::Unavailable(format!("the SSH CA: {e}")))?;
        drop(set);
        // Certificate, lease and audit event become durable together, in a
        // commit shared with whatever else is being issued right now.
        let lease = Lease {
            id: lease_id.clone(),
            kind: lease_kind.into(),
            role: role_name.to_owned(),
            connection: String::new(),
            holder: holder.spiffe_id.clone(),
            external_name: serial.to_string(),
            state: LeaseState::Active,
            created,
            expires: valid_before,
            max_expires: valid_before,
        };
        let detail = serde_json::json!({
            "serial": serial, "key_id": key_id, "principals": principals,
            "valid_before": valid_before, "fingerprint": key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
            "workload": holder.workload,
        });
        let (role, principals_kept) = (role_name.to_owned(), principals.clone());
        let record: Record = Box::new(move |tx| {
            ssh_certs::record_ssh_cert(
                tx,
                serial,
                &lease.id,
                &key_id,
                &lease.holder,
                &role,
                &principals_kept,
                valid_before,
            )?;
            leases::insert(tx, &lease)?;
            audit::append(
                tx,
                &Event {
                    kind: if host {
                        "ssh.host_cert.issued"
                    } else {
                        "ssh.cert.issued"
                    },
                    subject: &format!("lease/{}", lease.id),
                    detail,
                },
            )
            .map_err(|e| StoreError::Writer(e.to_string()))?;
            Ok(())
        });
        let signed = Signed {
            certificate: cert
                .to_openssh()
                .map_err(|e| CredsError::Unavailable(format!("encoding the certificate: {e}")))?,
            serial,
            lease_id,
            principals,
            valid_before,
        };
        Ok((signed, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_written_as_sshd_sees_the_peer() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_address(mapped), "192.0.2.7/32");
        assert_eq!(source_address("192.0.2.7".parse().unwrap()), "192.0.2.7/32");
        assert_eq!(
            source_address("2001:db8::1".parse().unwrap()),
            "2001:db8::1/128"
        );
    }
}
