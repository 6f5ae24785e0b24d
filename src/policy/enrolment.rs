//! A node group's enrolment policy, loaded from its configuration.

use std::path::Path;
use std::time::Duration;

use zeroth_attest::verify::alg::HashAlg;
use zeroth_attest::verify::attestation::ClockInfo;
use zeroth_attest::verify::ek_chain::ChainError;
use zeroth_attest::verify::pcr::{PcrPolicy, PcrValues};
use zeroth_attest::verify::quote::{verify_quote, Ak, VerifiedQuote};
use zeroth_attest::TrustAnchors;

use crate::config::GroupConfig;

/// Why a group's policy could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("group {group}: {reason}")]
pub struct PolicyError {
    pub group: String,
    pub reason: String,
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
}

impl GroupPolicy {
    pub fn load(g: &GroupConfig) -> Result<Self, PolicyError> {
        let err = |reason: String| PolicyError {
            group: g.name.clone(),
            reason,
        };
        let anchors =
            trust_anchors(g.ek_roots.as_deref(), g.ek_intermediates.as_deref()).map_err(err)?;
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
        })
    }

    /// Verifies a quote by the node's AK over `nonce` (signature, nonce,
    /// PCR digest, clock not going backwards) and then this group's PCR
    /// expectations. The error is the verifier's precise reason.
    pub fn check_quote(
        &self,
        ak: &Ak,
        attest: &[u8],
        signature: &[u8],
        nonce: &[u8],
        reported: &PcrValues,
        previous: Option<&ClockInfo>,
    ) -> Result<VerifiedQuote, String> {
        let quote = verify_quote(ak, attest, signature, nonce, reported, previous)
            .map_err(|e| format!("quote: {e}"))?;
        let covered: Vec<u8> = quote
            .selection
            .banks
            .iter()
            .filter(|(bank, _)| *bank == HashAlg::Sha256.tpm_id())
            .flat_map(|(_, p)| p.clone())
            .collect();
        if let Some(missing) = self.pcrs.iter().find(|p| !covered.contains(p)) {
            return Err(format!("the quote does not cover sha256 PCR {missing}"));
        }
        self.pcr_policy
            .check(&quote.pcrs)
            .map_err(|e| e.to_string())?;
        Ok(quote)
    }
}

/// Trusted roots from every PEM file in `roots_dir`, and intermediates from
/// a PEM file.
pub fn trust_anchors(
    roots_dir: Option<&Path>,
    intermediates: Option<&Path>,
) -> Result<TrustAnchors, String> {
    let mut anchors = TrustAnchors::default();
    if let Some(dir) = roots_dir {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read the EK roots directory {}: {e}", dir.display()))?;
        let mut n = 0;
        for e in entries {
            let path = e.map_err(|e| e.to_string())?.path();
            if !path.is_file() {
                continue;
            }
            let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            match anchors.add_roots_pem(&pem) {
                Ok(k) => n += k,
                Err(ChainError::NoPemCertificate) => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        if n == 0 {
            return Err(format!("no PEM certificates in {}", dir.display()));
        }
    }
    if let Some(f) = intermediates {
        let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        anchors
            .add_intermediates_pem(&pem)
            .map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(anchors)
}
