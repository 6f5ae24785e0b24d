//! A node group's enrolment policy, loaded from its configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use zeroth_attest::verify::alg::HashAlg;
use zeroth_attest::verify::attestation::ClockInfo;
use zeroth_attest::verify::ek_chain::ChainError;
use zeroth_attest::verify::event_log::replay;
use zeroth_attest::verify::pcr::{PcrPolicy, PcrValues};
use zeroth_attest::verify::quote::{verify_quote, Ak, VerifiedQuote};
use zeroth_attest::verify::VerifyError;
use zeroth_attest::TrustAnchors;

use crate::config::GroupConfig;
use crate::store::nodes::{Node, NodeState};

/// EV_SEPARATOR: the boundary between firmware phases, the same on every
/// machine, not a measurement of code.
const EV_SEPARATOR: u32 = 0x0000_0004;

/// Why a group's policy could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("group {group}: {reason}")]
pub struct PolicyError {
    pub group: String,
    pub reason: String,
}

/// Why a quote does not meet a group's policy; the verifier's precise
/// reason, as the refused node is told it.
#[derive(Debug, thiserror::Error)]
pub enum QuoteRefusal {
    #[error("quote: {0}")]
    Quote(VerifyError),
    #[error("the quote does not cover sha256 PCR {0}")]
    Uncovered(u8),
    #[error("{0}")]
    Pcrs(VerifyError),
    #[error("this group's policy reads the boot event log, and none was sent")]
    NoEventLog,
    #[error("event log: {0}")]
    EventLog(VerifyError),
    #[error("event log: event {index} measured {digest} into PCR {pcr}, which this group does not allow")]
    EventNotAllowed {
        index: usize,
        digest: String,
        pcr: u8,
    },
}

/// Why the EK trust anchors could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    #[error("cannot read the EK roots directory {}: {source}", dir.display())]
    RootsDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pem {
        path: std::path::PathBuf,
        source: ChainError,
    },
    #[error("no PEM certificates in {}", .0.display())]
    NoRoots(std::path::PathBuf),
}

/// What a group requires of its nodes.
#[derive(Debug, Clone)]
pub struct GroupPolicy {
    pub name: String,
    pub anchors: TrustAnchors,
    pub ek_allow: Vec<String>,
    pub pcrs: Vec<u8>,
    pub pcr_policy: PcrPolicy,
    pub auto_approve: bool,
    pub svid_ttl: Duration,
    /// SHA-256 PCR -> the digests its measured events may have.
    pub event_log_allow: BTreeMap<u8, BTreeSet<Vec<u8>>>,
}

impl GroupPolicy {
    pub fn load(g: &GroupConfig) -> Result<Self, PolicyError> {
        let err = |reason: String| PolicyError {
            group: g.name.clone(),
            reason,
        };
        let anchors = trust_anchors(g.ek_roots.as_deref(), g.ek_intermediates.as_deref())
            .map_err(|e| err(e.to_string()))?;
        let mut pcr_policy = PcrPolicy::default();
        for (k, v) in &g.pcr_policy {
            // The configuration was validated: "sha256:<index>" = 64 hex digits.
            let idx = k
                .trim_start_matches("sha256:")
                .parse::<u8>()
                .map_err(|e| err(e.to_string()))?;
            let value = (0..v.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&v[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| err(e.to_string()))?;
            pcr_policy.expect(HashAlg::Sha256, idx, value);
        }
        let mut event_log_allow = BTreeMap::new();
        for (k, digests) in &g.event_log_allow {
            // The configuration was validated: "sha256:<index>" = [64 hex digits].
            let idx = k
                .trim_start_matches("sha256:")
                .parse::<u8>()
                .map_err(|e| err(e.to_string()))?;
            let set: BTreeSet<Vec<u8>> = digests
                .iter()
                .map(|d| hex::decode(d).map_err(|e| err(e.to_string())))
                .collect::<Result<_, _>>()?;
            event_log_allow.insert(idx, set);
        }
        let mut pcrs = g.pcrs.clone();
        pcrs.sort_unstable();
        pcrs.dedup();
        Ok(Self {
            name: g.name.clone(),
            anchors,
            ek_allow: g.ek_allow.iter().map(|h| h.to_ascii_lowercase()).collect(),
            pcrs,
            pcr_policy,
            auto_approve: g.auto_approve,
            svid_ttl: g.svid_ttl,
            event_log_allow,
        })
    }

    /// Verifies a quote by the node's AK over `nonce` (signature, nonce,
    /// PCR digest, clock not going backwards) and then this group's PCR
    /// expectations, raw or over the node's `event_log`. The error is the
    /// verifier's precise reason.
    #[allow(clippy::too_many_arguments)]
    pub fn check_quote(
        &self,
        ak: &Ak,
        attest: &[u8],
        signature: &[u8],
        nonce: &[u8],
        reported: &PcrValues,
        previous: Option<&ClockInfo>,
        event_log: Option<&[u8]>,
    ) -> Result<VerifiedQuote, QuoteRefusal> {
        let quote = verify_quote(ak, attest, signature, nonce, reported, previous)
            .map_err(QuoteRefusal::Quote)?;
        let covered: Vec<u8> = quote
            .selection
            .banks
            .iter()
            .filter(|(bank, _)| *bank == HashAlg::Sha256.tpm_id())
            .flat_map(|(_, p)| p.clone())
            .collect();
        if let Some(missing) = self.pcrs.iter().find(|p| !covered.contains(p)) {
            return Err(QuoteRefusal::Uncovered(*missing));
        }
        self.pcr_policy
            .check(&quote.pcrs)
            .map_err(QuoteRefusal::Pcrs)?;
        self.check_event_log(&quote.pcrs, event_log)?;
        Ok(quote)
    }

    /// The group's event-log policy: the log replays to the quoted value of
    /// every PCR the policy names, and each event measured into them
    /// (separators aside) has an allowed digest.
    fn check_event_log(&self, quoted: &PcrValues, log: Option<&[u8]>) -> Result<(), QuoteRefusal> {
        if self.event_log_allow.is_empty() {
            return Ok(());
        }
        let log = log.ok_or(QuoteRefusal::NoEventLog)?;
        let replayed = replay(log).map_err(QuoteRefusal::EventLog)?;
        let mut named = PcrValues::default();
        for pcr in self.event_log_allow.keys() {
            let value = quoted
                .0
                .get(&(HashAlg::Sha256.tpm_id(), *pcr))
                .ok_or(QuoteRefusal::Uncovered(*pcr))?;
            named.insert(HashAlg::Sha256, *pcr, value.clone());
        }
        replayed
            .check_against(&named)
            .map_err(QuoteRefusal::EventLog)?;
        for (i, e) in replayed.events.iter().enumerate() {
            let Some(allowed) = self.event_log_allow.get(&e.pcr) else {
                continue;
            };
            if e.event_type == EV_SEPARATOR {
                continue;
            }
            let digest = e
                .digests
                .get(&HashAlg::Sha256.tpm_id())
                .cloned()
                .unwrap_or_default();
            if !allowed.contains(&digest) {
                return Err(QuoteRefusal::EventNotAllowed {
                    index: i + 1,
                    digest: hex::encode(&digest),
                    pcr: e.pcr,
                });
            }
        }
        Ok(())
    }
}

/// Trusted roots from every PEM file in `roots_dir`, and intermediates from
/// a PEM file.
pub fn trust_anchors(
    roots_dir: Option<&Path>,
    intermediates: Option<&Path>,
) -> Result<TrustAnchors, AnchorsError> {
    let mut anchors = TrustAnchors::default();
    if let Some(dir) = roots_dir {
        let dir_err = |source| AnchorsError::RootsDir {
            dir: dir.to_owned(),
            source,
        };
        let mut n = 0;
        for e in std::fs::read_dir(dir).map_err(dir_err)? {
            let path = e.map_err(dir_err)?.path();
            if !path.is_file() {
                continue;
            }
            let pem = std::fs::read(&path).map_err(|source| AnchorsError::Read {
                path: path.clone(),
                source,
            })?;
            match anchors.add_roots_pem(&pem) {
                Ok(k) => n += k,
                Err(ChainError::NoPemCertificate) => {}
                Err(source) => return Err(AnchorsError::Pem { path, source }),
            }
        }
        if n == 0 {
            return Err(AnchorsError::NoRoots(dir.to_owned()));
        }
    }
    if let Some(f) = intermediates {
        let pem = std::fs::read(f).map_err(|source| AnchorsError::Read {
            path: f.to_owned(),
            source,
        })?;
        anchors
            .add_intermediates_pem(&pem)
            .map_err(|source| AnchorsError::Pem {
                path: f.to_owned(),
                source,
            })?;
    }
    Ok(anchors)
}

/// Why a TPM that attested well is still not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    #[error("this TPM is node {0}, which was revoked; an operator must re-admit it (`zeroth node readmit {0}`)")]
    Revoked(String),
    #[error("this TPM is node {node} of group {stored:?}; it enrols only in its own group (moving it is an operator action)")]
    OtherGroup { node: String, stored: String },
}

/// The state an attested TPM gets in `group`, given what the registry holds
/// for its EK. A revoked node stays revoked, a node belongs to the group it
/// first enrolled in, and an approved node stays approved; a new or pending
/// one is approved only if its group says so.
pub fn admission(
    existing: Option<&Node>,
    group: &GroupPolicy,
) -> Result<NodeState, AdmissionRefusal> {
    match existing {
        Some(n) if n.state == NodeState::Revoked => Err(AdmissionRefusal::Revoked(n.id.clone())),
        Some(n) if n.group != group.name => Err(AdmissionRefusal::OtherGroup {
            node: n.id.clone(),
            stored: n.group.clone(),
        }),
        Some(n) if n.state == NodeState::Approved => Ok(NodeState::Approved),
        _ if group.auto_approve => Ok(NodeState::Approved),
        _ => Ok(NodeState::Pending),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, auto_approve: bool) -> GroupPolicy {
        GroupPolicy {
            name: name.into(),
            anchors: TrustAnchors::default(),
            ek_allow: vec![],
            pcrs: vec![],
            pcr_policy: PcrPolicy::default(),
            auto_approve,
            svid_ttl: Duration::from_secs(60),
            event_log_allow: BTreeMap::new(),
        }
    }

    fn node(group: &str, state: NodeState) -> Node {
        Node {
            id: "n1".into(),
            group: group.into(),
            state,
            ek_hash: "e".into(),
            ek_public: vec![],
            ak_public: vec![],
            hostname: "h".into(),
            clock: 0,
            reset_count: 0,
            restart_count: 0,
            created: 0,
            updated: 0,
        }
    }

    #[test]
    fn revoked_stays_revoked_and_a_node_keeps_its_group() {
        let lax = policy("lax", true);
        let strict = policy("strict", false);
        assert_eq!(admission(None, &lax), Ok(NodeState::Approved));
        assert_eq!(admission(None, &strict), Ok(NodeState::Pending));
        let revoked = node("lax", NodeState::Revoked);
        assert_eq!(
            admission(Some(&revoked), &lax),
            Err(AdmissionRefusal::Revoked("n1".into()))
        );
        let pending = node("strict", NodeState::Pending);
        assert_eq!(admission(Some(&pending), &strict), Ok(NodeState::Pending));
        assert!(matches!(
            admission(Some(&pending), &lax),
            Err(AdmissionRefusal::OtherGroup { .. })
        ));
        let approved = node("strict", NodeState::Approved);
        assert_eq!(admission(Some(&approved), &strict), Ok(NodeState::Approved));
    }
}
