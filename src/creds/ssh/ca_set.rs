//! The SSH CAs of each kind as loaded from the store and the HSM: the one
//! signing, the one published to come next, and retired ones.

use std::sync::Arc;

use ssh_key::certificate::CertType;

use super::ca::{CaAlgorithm, SshCa, SshCaError, HOST_CA_KEY, USER_CA_KEY};
use crate::store::{ssh_cas, Store};

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

    pub(super) fn base_key(self) -> &'static str {
        match self {
            Self::User => USER_CA_KEY,
            Self::Host => HOST_CA_KEY,
        }
    }

    pub(super) fn cert_type(self) -> CertType {
        match self {
            Self::User => CertType::User,
            Self::Host => CertType::Host,
        }
    }
}

/// The CAs of one kind: the one signing, the one published to come next,
/// and retired ones still trusted until what they signed has expired.
pub(super) struct CaSet {
    pub(super) active: (String, SshCa),
    pub(super) next: Option<(String, SshCa)>,
    pub(super) retired: Vec<(String, SshCa)>,
}

impl CaSet {
    /// Each key's name and rotation state, sorted: what the store's rows
    /// for this kind must match.
    pub(super) fn states(&self) -> Vec<(String, &'static str)> {
        let mut v = vec![(self.active.0.clone(), "active")];
        v.extend(self.next.iter().map(|(n, _)| (n.clone(), "next")));
        v.extend(self.retired.iter().map(|(n, _)| (n.clone(), "retired")));
        v.sort();
        v
    }

    /// What verifiers should trust, the signing CA first.
    pub(super) fn published(&self) -> impl Iterator<Item = &SshCa> {
        std::iter::once(&self.active.1)
            .chain(self.next.iter().map(|(_, c)| c))
            .chain(self.retired.iter().map(|(_, c)| c))
    }
}

/// The algorithm of a CA key, from its name (keys of both algorithms may
/// coexist across a rotation).
fn algorithm_of(key_name: &str) -> CaAlgorithm {
    if key_name.contains("-p256") {
        CaAlgorithm::EcdsaP256
    } else {
        CaAlgorithm::Ed25519
    }
}

/// One CA as `zeroth ssh ca list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaInfo {
    pub kind: &'static str,
    pub key_name: String,
    pub state: &'static str,
    pub public_key: String,
}

pub(super) fn load(
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
