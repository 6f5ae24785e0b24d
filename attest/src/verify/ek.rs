//! Deciding whether an EK belongs to a trusted TPM: a certificate chain to a
//! manufacturer root whose key is the EK presented, or the EK's hash on an
//! allow-list. A certificate serial number alone never decides.

use std::time::SystemTime;

use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as X509Key;

use super::ek_chain::{verify_ek_chain, EkChain, TrustAnchors};
use super::pcr::hex;
use super::public::{KeyMaterial, Public};
use super::VerifyError;

/// How the EK was accepted.
#[derive(Debug, Clone)]
pub enum EkTrust {
    Certificate(EkChain),
    AllowListed,
}

/// SHA-256 of the EK's TPM2B_PUBLIC: what an allow-list holds.
pub fn ek_hash(ek: &Public) -> String {
    hex(&super::alg::HashAlg::Sha256.digest(&[&ek.to_tpm2b()]))
}

/// Accepts `ek` if its certificate chains to `anchors` and certifies this
/// very key, or if its hash is in `allow_list`.
pub fn check_ek(
    ek: &Public,
    ek_cert_der: Option<&[u8]>,
    anchors: &TrustAnchors,
    allow_list: &[String],
    now: SystemTime,
) -> Result<EkTrust, VerifyError> {
    let hash = ek_hash(ek);
    if allow_list.iter().any(|h| h.eq_ignore_ascii_case(&hash)) {
        return Ok(EkTrust::AllowListed);
    }
    let Some(der) = ek_cert_der else {
        return Err(VerifyError::EkNotAllowed(hash));
    };
    let chain = verify_ek_chain(der, anchors, now)?;
    cert_key_matches(der, ek)?;
    Ok(EkTrust::Certificate(chain))
}

/// The certificate's subject public key is the EK (RSA modulus and
/// exponent, or the ECC point).
pub fn cert_key_matches(cert_der: &[u8], ek: &Public) -> Result<(), VerifyError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).map_err(|e| {
        super::ek_chain::ChainError::Malformed {
            which: "EK".into(),
            reason: e.to_string(),
        }
    })?;
    let spki = cert.public_key();
    let matches = match (spki.parsed(), &ek.key) {
        (
            Ok(X509Key::RSA(rsa)),
            KeyMaterial::Rsa {
                exponent, modulus, ..
            },
        ) => {
            let e = if *exponent == 0 { 65537 } else { *exponent };
            strip(rsa.modulus) == strip(modulus) && rsa.try_exponent().ok() == Some(u64::from(e))
        }
        (Ok(X509Key::EC(point)), KeyMaterial::Ecc { x, y, .. }) => {
            point.data() == [&[0x04][..], x, y].concat().as_slice()
        }
        _ => false,
    };
    matches.then_some(()).ok_or(VerifyError::EkCertKeyMismatch)
}

fn strip(v: &[u8]) -> &[u8] {
    let i = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[i..]
}
