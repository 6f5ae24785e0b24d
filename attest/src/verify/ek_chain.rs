//! EK certificate path validation.
//!
//! An EK certificate proves that a key lives in a TPM made by a manufacturer
//! the operator trusts. Trust rests only on signatures up to a pinned root
//! certificate: two CAs may share a subject name and serial numbers (every
//! swtpm local CA is called `swtpm-localca`), so names select candidates but
//! never decide. EK certificates carry critical extensions that web PKI
//! validators reject (a SAN of directory names, the EK EKU), so this is a
//! general X.509 path check, not a TLS one.

use std::time::{SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

/// A chain longer than this is refused (leaf + intermediates + root).
const MAX_DEPTH: usize = 6;

/// The certificates a verifier trusts (roots) and may use to build a path
/// (intermediates), each as DER.
#[derive(Debug, Default, Clone)]
pub struct TrustAnchors {
    pub roots: Vec<Vec<u8>>,
    pub intermediates: Vec<Vec<u8>>,
}

impl TrustAnchors {
    /// Adds every certificate found in a PEM text as a trusted root.
    pub fn add_roots_pem(&mut self, pem: &[u8]) -> Result<usize, ChainError> {
        let certs = pem_certificates(pem)?;
        let n = certs.len();
        self.roots.extend(certs);
        Ok(n)
    }

    /// Adds every certificate found in a PEM text as an untrusted intermediate.
    pub fn add_intermediates_pem(&mut self, pem: &[u8]) -> Result<usize, ChainError> {
        let certs = pem_certificates(pem)?;
        let n = certs.len();
        self.intermediates.extend(certs);
        Ok(n)
    }
}

/// Why an EK certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the {which} certificate is not valid X.509 DER: {reason}")]
    Malformed { which: String, reason: String },
    #[error("the PEM text holds no certificate")]
    NoPemCertificate,
    #[error("the PEM text is malformed: {0}")]
    Pem(String),
    #[error(
        "certificate {subject:?} is not valid at this time (valid {not_before} to {not_after})"
    )]
    Expired {
        subject: String,
        not_before: String,
        not_after: String,
    },
    #[error("no trusted root or intermediate signed {subject:?} (issuer {issuer:?})")]
    NoIssuer { subject: String, issuer: String },
    #[error("the chain from the EK certificate is longer than {MAX_DEPTH} certificates")]
    TooDeep,
    #[error(
        "certificate {subject:?} is signed with {algorithm}, which is too weak (SHA-1 or older)"
    )]
    WeakSignature { subject: String, algorithm: String },
    #[error("certificate {subject:?} signed another certificate but may not: {reason}")]
    NotACa { subject: String, reason: String },
    #[error("certificate {subject:?} allows {allowed} CA certificates below it, but {below} are")]
    PathTooLong {
        subject: String,
        allowed: u32,
        below: usize,
    },
}

/// An EK certificate whose path to a trusted root checked out.
#[derive(Debug, Clone)]
pub struct EkChain {
    /// Subject DN of the EK certificate (RFC 4514 form).
    pub subject: String,
    /// Issuer DN of the EK certificate.
    pub issuer: String,
    /// Subject DNs from the EK certificate up to the root, in order.
    pub path: Vec<String>,
}

/// Verifies that `ek_cert_der` chains to one of `anchors.roots` by signatures,
/// with every certificate on the path valid at `now`.
pub fn verify_ek_chain(
    ek_cert_der: &[u8],
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<EkChain, ChainError> {
    let leaf = parse("EK", ek_cert_der)?;
    let roots = parse_all("trusted root", &anchors.roots)?;
    let intermediates = parse_all("intermediate", &anchors.intermediates)?;
    let now = asn1_time(now);

    let mut path = vec![leaf.subject().to_string()];
    let mut current = &leaf;
    check_validity(current, now)?;
    for below in 0..MAX_DEPTH {
        // Whatever is not a trusted root was signed by someone we check.
        check_signature_algorithm(current)?;
        // A trusted root that signed the current certificate ends the path.
        if let Some(root) = roots.iter().find(|r| signed_by(current, r)) {
            check_validity(root, now)?;
            if !is_same(current, root) {
                check_issuer(root, below)?;
                path.push(root.subject().to_string());
            }
            return Ok(EkChain {
                subject: leaf.subject().to_string(),
                issuer: leaf.issuer().to_string(),
                path,
            });
        }
        let next = intermediates
            .iter()
            .filter(|i| !is_same(i, current))
            .find(|i| signed_by(current, i))
            .ok_or_else(|| ChainError::NoIssuer {
                subject: current.subject().to_string(),
                issuer: current.issuer().to_string(),
            })?;
        check_validity(next, now)?;
        check_issuer(next, below)?;
        path.push(next.subject().to_string());
        current = next;
    }
    Err(ChainError::TooDeep)
}

fn parse<'a>(which: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, ChainError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| ChainError::Malformed {
        which: which.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(cert)
}

fn parse_all<'a>(which: &str, ders: &'a [Vec<u8>]) -> Result<Vec<X509Certificate<'a>>, ChainError> {
    ders.iter().map(|d| parse(which, d)).collect()
}

fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    // Names only narrow the search; the signature decides.
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// A certificate that signed another must say it is a CA (RFC 5280
/// 4.2.1.9), may sign certificates (4.2.1.3), and allow as many CA
/// certificates below it as there are (`below`, the intermediates between
/// it and the EK certificate).
fn check_issuer(cert: &X509Certificate<'_>, below: usize) -> Result<(), ChainError> {
    let not_a_ca = |reason: &str| ChainError::NotACa {
        subject: cert.subject().to_string(),
        reason: reason.to_owned(),
    };
    let bc = match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => bc.value,
        Ok(_) => return Err(not_a_ca("its basicConstraints do not say CA")),
        Err(_) => return Err(not_a_ca("its basicConstraints are malformed")),
    };
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(not_a_ca("its keyUsage lacks keyCertSign"))
        }
        Ok(_) => {}
        Err(_) => return Err(not_a_ca("its keyUsage is malformed")),
    }
    match bc.path_len_constraint {
        Some(allowed) if below > allowed as usize => Err(ChainError::PathTooLong {
            subject: cert.subject().to_string(),
            allowed,
            below,
        }),
        _ => Ok(()),
    }
}

/// Signatures over SHA-1 (or MD5, MD2) can be forged: refuse them on every
/// certificate whose signature the path relies on.
fn check_signature_algorithm(cert: &X509Certificate<'_>) -> Result<(), ChainError> {
    const WEAK: [&str; 6] = [
        "1.2.840.113549.1.1.2", // md2WithRSAEncryption
        "1.2.840.113549.1.1.4", // md5WithRSAEncryption
        "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
        "1.3.14.3.2.29",        // sha1WithRSASignature (OIW)
        "1.2.840.10045.4.1",    // ecdsa-with-SHA1
        "1.2.840.10040.4.3",    // dsa-with-sha1
    ];
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    if WEAK.contains(&oid.as_str()) {
        return Err(ChainError::WeakSignature {
            subject: cert.subject().to_string(),
            algorithm: oid,
        });
    }
    Ok(())
}

fn is_same(a: &X509Certificate<'_>, b: &X509Certificate<'_>) -> bool {
    a.as_ref() == b.as_ref()
}

fn check_validity(cert: &X509Certificate<'_>, now: ASN1Time) -> Result<(), ChainError> {
    let v = cert.validity();
    if now < v.not_before || now > v.not_after {
        return Err(ChainError::Expired {
            subject: cert.subject().to_string(),
            not_before: v.not_before.to_string(),
            not_after: v.not_after.to_string(),
        });
    }
    Ok(())
}

fn asn1_time(t: SystemTime) -> ASN1Time {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    ASN1Time::from_timestamp(secs).unwrap_or_else(|_| ASN1Time::now())
}

/// Every `CERTIFICATE` block of a PEM text, as DER.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, ChainError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| ChainError::Pem(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    if out.is_empty() {
        return Err(ChainError::NoPemCertificate);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let err = verify_ek_chain(
            b"\x30\x03\x02\x01",
            &TrustAnchors::default(),
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ChainError::Malformed { ref which, .. } if which == "EK"),
            "{err}"
        );
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert_eq!(
            pem_certificates(b"no pem here"),
            Err(ChainError::NoPemCertificate)
        );
    }
}
