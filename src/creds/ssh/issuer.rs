//! SSH user and host certificates for enrolled nodes: role checks, a serial
//! from the store, the certificate signed in the HSM, and a lease plus an
//! audit event committed together.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ssh_key::certificate::CertType;

use super::ca::{CaAlgorithm, CertSpec, SshCa, HOST_CA_KEY, USER_CA_KEY};
use super::request::parse_public_key;
use crate::audit::{self, Event};
use crate::config::{SshCertKind, SshRoleConfig};
use crate::creds::db::leases::{CredsError, Holder};
use crate::store::leases::{self, Lease, LeaseState};
use crate::store::{now, Store, StoreError};

pub struct SshIssuer {
    store: Arc<Store>,
    user_ca: SshCa,
    host_ca: SshCa,
    roles: BTreeMap<String, SshRoleConfig>,
}

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
    ) -> Result<Self, super::ca::SshCaError> {
        Ok(Self {
            store,
            user_ca: SshCa::open(
                keys.clone(),
                &algorithm.key_name(USER_CA_KEY),
                algorithm,
                CertType::User,
            )?,
            host_ca: SshCa::open(
                keys,
                &algorithm.key_name(HOST_CA_KEY),
                algorithm,
                CertType::Host,
            )?,
            roles: roles.iter().map(|r| (r.name.clone(), r.clone())).collect(),
        })
    }

    /// The KRL of the user CA: every certificate revoked before its expiry.
    pub fn krl(&self) -> Result<Vec<u8>, CredsError> {
        let conn = self.store.lock();
        let serials = leases::revoked_ssh_serials(&conn, now())?;
        let (version, generated) = leases::last_ssh_revocation(&conn)?;
        Ok(super::krl::build(
            &self.user_ca.public_blob(),
            &serials,
            version,
            generated,
        ))
    }

    /// The user CA's public key, OpenSSH format.
    pub fn user_ca(&self) -> String {
        self.user_ca.public_openssh()
    }

    /// The host CA's public key, OpenSSH format.
    pub fn host_ca(&self) -> String {
        self.host_ca.public_openssh()
    }

    pub fn sign(
        &self,
        role_name: &str,
        holder: &Holder,
        node_id: &str,
        caller: IpAddr,
        req: &SignRequest,
    ) -> Result<Signed, CredsError> {
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
        let key = parse_public_key(&req.public_key).map_err(CredsError::BadRequest)?;
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
        let (ca, lease_kind, key_id) = if host {
            let id = format!("{} host lease {lease_id}", holder.spiffe_id);
            (&self.host_ca, "ssh-host", id)
        } else {
            let id = format!("{} lease {lease_id}", holder.spiffe_id);
            (&self.user_ca, "ssh", id)
        };
        let mut critical = Vec::new();
        let mut extensions = Vec::new();
        if !host {
            let source = role.source_address.clone().unwrap_or_else(|| match caller {
                IpAddr::V4(a) => format!("{a}/32"),
                IpAddr::V6(a) => format!("{a}/128"),
            });
            critical.push(("source-address".to_owned(), source));
            if let Some(cmd) = &role.force_command {
                critical.push(("force-command".to_owned(), cmd.clone()));
            }
            extensions.clone_from(&role.extensions);
        }

        let mut conn = self.store.lock();
        let tx = conn
            .transaction()
            .map_err(StoreError::sql("starting a transaction"))?;
        let serial = leases::next_ssh_serial(
            &tx,
            &lease_id,
            &key_id,
            &holder.spiffe_id,
            role_name,
            &principals,
            valid_before,
        )?;
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
        leases::insert(
            &tx,
            &Lease {
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
            },
        )?;
        audit::append(
            &tx,
            &Event {
                kind: if host {
                    "ssh.host_cert.issued"
                } else {
                    "ssh.cert.issued"
                },
                subject: &format!("lease/{lease_id}"),
                detail: serde_json::json!({
                    "serial": serial, "key_id": key_id, "principals": principals,
                    "valid_before": valid_before, "fingerprint": key.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
                }),
            },
        )?;
        tx.commit()
            .map_err(StoreError::sql("committing an SSH certificate"))?;
        Ok(Signed {
            certificate: cert
                .to_openssh()
                .map_err(|e| CredsError::Unavailable(format!("encoding the certificate: {e}")))?,
            serial,
            lease_id,
            principals,
            valid_before,
        })
    }
}
