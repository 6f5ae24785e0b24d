//! SSH user and host certificates for enrolled nodes: role checks, a serial
//! from the store, the certificate signed in the HSM, and a lease plus an
//! audit event committed together.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ssh_key::certificate::CertType;

use super::ca::{CaAlgorithm, CertSpec, SshCa, SshCaError, HOST_CA_KEY, USER_CA_KEY};
use super::request::parse_public_key;
use crate::audit::{self, Event};
use crate::config::{SshCertKind, SshRoleConfig};
use crate::creds::db::leases::{CredsError, Holder};
use crate::store::leases::{self, Lease, LeaseState};
use crate::store::{now, ssh_cas, Store, StoreError};

/// Which CA: the one sshd trusts for logins, or the one clients trust for hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    User,
    Host,
}

impl CaKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "host" => Some(Self::Host),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Host => "host",
        }
    }

    fn base_key(self) -> &'static str {
        match self {
            Self::User => USER_CA_KEY,
            Self::Host => HOST_CA_KEY,
        }
    }

    fn cert_type(self) -> CertType {
        match self {
            Self::User => CertType::User,
            Self::Host => CertType::Host,
        }
    }
}

/// The CAs of one kind: the one signing, the one published to come next,
/// and retired ones still trusted until what they signed has expired.
struct CaSet {
    active: (String, SshCa),
    next: Option<(String, SshCa)>,
    retired: Vec<(String, SshCa)>,
}

impl CaSet {
    /// Each key's name and rotation state, sorted: what the store's rows
    /// for this kind must match.
    fn states(&self) -> Vec<(String, &'static str)> {
        let mut v = vec![(self.active.0.clone(), "active")];
        v.extend(self.next.iter().map(|(n, _)| (n.clone(), "next")));
        v.extend(self.retired.iter().map(|(n, _)| (n.clone(), "retired")));
        v.sort();
        v
    }

    /// What verifiers should trust, the signing CA first.
    fn published(&self) -> impl Iterator<Item = &SshCa> {
        std::iter::once(&self.active.1)
            .chain(self.next.iter().map(|(_, c)| c))
            .chain(self.retired.iter().map(|(_, c)| c))
    }
}

/// The algorithm of a CA key, from its name (keys of both algorithms may
/// coexist across a rotation).
/// The `source-address` that pins a certificate to its caller. An IPv4
/// client seen on a dual-stack socket arrives as `::ffff:a.b.c.d`, which
/// sshd never matches against the IPv4 peer it sees: write it as IPv4.
fn source_address(caller: IpAddr) -> String {
    match caller.to_canonical() {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn algorithm_of(key_name: &str) -> CaAlgorithm {
    if key_name.contains("-p256") {
        CaAlgorithm::EcdsaP256
    } else {
        CaAlgorithm::Ed25519
    }
}

pub struct SshIssuer {
    store: Arc<Store>,
    keys: Arc<dyn zeroth_hsm::KeyStore>,
    algorithm: CaAlgorithm,
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

/// One CA as `zeroth ssh ca list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaInfo {
    pub kind: &'static str,
    pub key_name: String,
    pub state: &'static str,
    pub public_key: String,
}

fn load(
    store: &Store,
    keys: &Arc<dyn zeroth_hsm::KeyStore>,
    algorithm: CaAlgorithm,
    kind: CaKind,
) -> Result<CaSet, SshCaError> {
    let mut rows = ssh_cas::list(&store.lock(), kind.as_str())?;
    if !rows.iter().any(|r| r.state == "active") {
        ssh_cas::insert(
            &store.lock(),
            &algorithm.key_name(kind.base_key()),
            kind.as_str(),
            "active",
        )?;
        rows = ssh_cas::list(&store.lock(), kind.as_str())?;
    }
    let open = |name: &str| -> Result<(String, SshCa), SshCaError> {
        let ca = SshCa::open(keys.clone(), name, algorithm_of(name), kind.cert_type())?;
        Ok((name.to_owned(), ca))
    };
    let mut active = None;
    let mut next = None;
    let mut retired = Vec::new();
    for r in &rows {
        match r.state.as_str() {
            "active" => active = Some(open(&r.key_name)?),
            "next" => next = Some(open(&r.key_name)?),
            _ => retired.push(open(&r.key_name)?),
        }
    }
    let active = active.ok_or_else(|| SshCaError::Rotation("no active CA".into()))?;
    Ok(CaSet {
        active,
        next,
        retired,
    })
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

    /// The KRL of the user or host CA: every certificate of that kind
    /// revoked before its expiry.
    pub fn krl(&self, kind: CaKind) -> Result<Vec<u8>, CredsError> {
        let cas: Vec<Vec<u8>> = self.set(kind).published().map(SshCa::public_blob).collect();
        let conn = self.store.lock();
        let lease_kind = match kind {
            CaKind::User => "ssh",
            CaKind::Host => "ssh-host",
        };
        let revoked = leases::revoked_ssh_certs(&conn, now(), lease_kind)?;
        let (version, generated) = leases::last_ssh_revocation(&conn)?;
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
            *pool = leases::reserve_ssh_serials(&mut self.store.lock(), SERIAL_BLOCK)?;
        }
        let s = pool.0;
        pool.0 += 1;
        Ok(s)
    }

    fn set(&self, kind: CaKind) -> std::sync::RwLockReadGuard<'_, CaSet> {
        let lock = match kind {
            CaKind::User => &self.user,
            CaKind::Host => &self.host,
        };
        lock.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_mut(&self, kind: CaKind) -> std::sync::RwLockWriteGuard<'_, CaSet> {
        let lock = match kind {
            CaKind::User => &self.user,
            CaKind::Host => &self.host,
        };
        lock.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let (set, lease_kind, key_id) = if host {
            let id = format!("{} host lease {lease_id}", holder.spiffe_id);
            (self.set(CaKind::Host), "ssh-host", id)
        } else {
            let id = format!("{} lease {lease_id}", holder.spiffe_id);
            (self.set(CaKind::User), "ssh", id)
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
            leases::record_ssh_cert(
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
