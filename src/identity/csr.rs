//! The one thing the server takes from a workload's certification request
//! (PKCS#10): its P-256 public key, once the request's own signature shows
//! that whoever sent it holds the private half. Names in the request are
//! ignored; the registration entry decides them.

use x509_parser::prelude::FromDer;

/// Why a certification request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not DER PKCS#10: {0}")]
    Malformed(String),
    #[error("the CSR has {0} bytes after its end")]
    Trailing(usize),
    #[error("the CSR's key is not an ECDSA P-256 key")]
    NotP256,
    #[error("the CSR is not signed with ecdsa-with-SHA256")]
    Algorithm,
    #[error("the CSR's signature does not verify under its own key")]
    Signature,
}

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const PRIME256V1: &str = "1.2.840.10045.3.1.7";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

/// The uncompressed P-256 point the request `der` certifies, after its
/// signature is checked.
pub fn p256_key(der: &[u8]) -> Result<[u8; 65], CsrError> {
    let (rest, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Trailing(rest.len()));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if spki.algorithm.algorithm.to_id_string() != EC_PUBLIC_KEY
        || curve.as_deref() != Some(PRIME256V1)
    {
        return Err(CsrError::NotP256);
    }
    let point: [u8; 65] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CsrError::NotP256)?;
    if csr.signature_algorithm.algorithm.to_id_string() != ECDSA_SHA256 {
        return Err(CsrError::Algorithm);
    }
    // ring's verification: many times quicker than the pure-Rust curve
    // arithmetic, and this runs once per workload SVID.
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &point)
        .verify(info.raw, &csr.signature_value.data)
        .map_err(|_| CsrError::Signature)?;
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(key: &rcgen::KeyPair) -> Vec<u8> {
        rcgen::CertificateParams::new(vec!["ignored.example".to_owned()])
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn a_request_gives_its_key_only_when_its_signature_holds() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = csr(&key);
        assert_eq!(p256_key(&der).unwrap().as_slice(), key.public_key_raw());

        // Any single flipped byte is refused, never accepted for another key.
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            if let Ok(point) = p256_key(&bad) {
                assert_eq!(point.as_slice(), key.public_key_raw(), "byte {i}");
            }
        }
        let mut long = der.clone();
        long.push(0);
        assert_eq!(p256_key(&long), Err(CsrError::Trailing(1)));
        assert!(matches!(p256_key(&der[..10]), Err(CsrError::Malformed(_))));
    }

    #[test]
    fn other_key_types_are_named() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(p256_key(&csr(&key)), Err(CsrError::NotP256));
    }
}
