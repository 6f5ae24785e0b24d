//! The X.509 certificate authority whose key lives in the HSM: the trust
//! root of every X.509-SVID and of the server's own TLS certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, RemoteKeyPair, SanType, SerialNumber,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use zeroth_hsm::{HsmError, KeyKind, KeyName, KeyStore, PublicKey};

use super::spiffe::SpiffeId;

/// The HSM key of the X.509 CA.
pub const CA_KEY: &str = "x509-ca";
/// Issued certificates start this long before "now", for clock skew.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA key: {0}")]
    Hsm(#[from] HsmError),
    #[error("the CA key is not an ECDSA P-256 key")]
    WrongKey,
    #[error("the subject key is not an uncompressed ECDSA P-256 point")]
    SubjectKey,
    #[error("building the certificate: {0}")]
    Build(#[from] rcgen::Error),
}

/// A P-256 public key to certify (e.g. a TPM-resident key's point).
#[derive(Debug, Clone)]
pub struct P256Subject(pub [u8; 65]);

impl PublicKeyData for P256Subject {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Signs with the HSM key; rcgen expects an ASN.1 DER ECDSA signature.
struct HsmSigner {
    keys: Arc<dyn KeyStore>,
    name: KeyName,
    public: [u8; 65],
}

impl RemoteKeyPair for HsmSigner {
    fn public_key(&self) -> &[u8] {
        &self.public
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let rs = self
            .keys
            .sign(&self.name, msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        let sig =
            p256::ecdsa::Signature::from_slice(&rs).map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: Vec<u8>,
    pub serial: String,
    pub not_after: SystemTime,
}

/// The CA: its certificate (DER, the trust bundle) and its HSM key.
pub struct X509Ca {
    key: KeyPair,
    issuer: rcgen::Certificate,
    /// The CA certificate as first issued and persisted: what clients trust.
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for X509Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Ca").finish_non_exhaustive()
    }
}

fn ca_params(trust_domain: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "zeroth");
    dn.push(DnType::CommonName, format!("zeroth CA {trust_domain}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // A SPIFFE trust root carries the trust domain as its URI SAN.
    if let Ok(uri) = format!("spiffe://{trust_domain}").try_into() {
        p.subject_alt_names = vec![SanType::URI(uri)];
    }
    p
}

impl X509Ca {
    /// Loads the CA over the HSM key `x509-ca` (created if missing).
    /// `existing_cert` is the CA certificate persisted earlier; when `None`,
    /// a new self-signed certificate valid for ten years is made, and the
    /// caller persists [`X509Ca::cert_der`].
    pub fn open(
        keys: Arc<dyn KeyStore>,
        trust_domain: &str,
        existing_cert: Option<Vec<u8>>,
    ) -> Result<Self, CaError> {
        let name = KeyName::new(CA_KEY)?;
        let info = keys.get_or_generate(&name, KeyKind::EcdsaP256)?;
        let Some(PublicKey::EcdsaP256(public)) = info.public else {
            return Err(CaError::WrongKey);
        };
        let key = KeyPair::from_remote(Box::new(HsmSigner { keys, name, public }))?;
        let mut params = ca_params(trust_domain);
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
        // rcgen signs with the issuer's name and key identifier only, so a
        // freshly self-signed copy issues exactly as the persisted one does.
        let issuer = params.self_signed(&key)?;
        let cert_der = existing_cert.unwrap_or_else(|| issuer.der().to_vec());
        Ok(Self {
            key,
            issuer,
            cert_der,
        })
    }

    /// The CA certificate (DER): the trust bundle.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// An X.509-SVID: one URI SAN (the SPIFFE ID), no CA rights, usable for
    /// TLS client and server authentication, valid for `ttl`.
    pub fn issue_svid(
        &self,
        subject: &P256Subject,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        self.issue_svid_with_dns(subject, id, &[], ttl)
    }

    /// An X.509-SVID that also carries DNS names (a registration entry's).
    pub fn issue_svid_with_dns(
        &self,
        subject: &P256Subject,
        id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        for name in dns_names {
            p.subject_alt_names
                .push(SanType::DnsName(name.as_str().try_into()?));
        }
        self.finish_leaf(p, subject, ttl)
    }

    /// A TLS server certificate for the given DNS names and IP addresses.
    pub fn issue_server(
        &self,
        subject: &P256Subject,
        names: &[String],
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        p.distinguished_name = dn;
        for n in names {
            match n.parse::<std::net::IpAddr>() {
                Ok(ip) => p.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => p
                    .subject_alt_names
                    .push(SanType::DnsName(n.as_str().try_into()?)),
            }
        }
        self.finish_leaf(p, subject, ttl)
    }

    fn finish_leaf(
        &self,
        mut p: CertificateParams,
        subject: &P256Subject,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let now = SystemTime::now();
        let not_after = now + ttl;
        p.not_before = (now - BACKDATE).into();
        p.not_after = not_after.into();
        // basicConstraints, critical, cA false: in DER an empty SEQUENCE
        // (the default is never encoded; strict parsers such as Python's
        // `cryptography` refuse an explicit FALSE, which rcgen's
        // `ExplicitNoCa` writes).
        p.is_ca = IsCa::NoCa;
        let mut constraints =
            rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
        constraints.set_criticality(true);
        p.custom_extensions.push(constraints);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let mut serial = [0u8; 16];
        getrandom_fill(&mut serial);
        serial[0] &= 0x7f; // a positive INTEGER
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        if subject.0[0] != 0x04 {
            return Err(CaError::SubjectKey);
        }
        let cert = p.signed_by(subject, &self.issuer, &self.key)?;
        Ok(Issued {
            der: cert.der().to_vec(),
            serial: hex::encode(serial),
            not_after,
        })
    }
}

fn getrandom_fill(b: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(b);
}

/// PEM text for DER bytes.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;
    use zeroth_hsm::SoftwareKeyStore;

    fn subject() -> P256Subject {
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core_06());
        let point = sk.verifying_key().to_encoded_point(false);
        P256Subject(point.as_bytes().try_into().unwrap())
    }

    fn rand_core_06() -> p256::elliptic_curve::rand_core::OsRng {
        p256::elliptic_curve::rand_core::OsRng
    }

    #[test]
    fn svids_carry_one_spiffe_uri_and_chain_to_the_ca() {
        let keys: Arc<dyn KeyStore> = Arc::new(SoftwareKeyStore::new_insecure());
        let ca = X509Ca::open(keys.clone(), "example.org", None).unwrap();
        let id = SpiffeId::new("example.org", &["node", "n1"]).unwrap();
        let svid = ca
            .issue_svid(&subject(), &id, Duration::from_secs(3600))
            .unwrap();

        let (_, leaf) = X509Certificate::from_der(&svid.der).unwrap();
        let (_, root) = X509Certificate::from_der(ca.cert_der()).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        root.verify_signature(None).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let uris: Vec<_> = san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec!["spiffe://example.org/node/n1"]);
        assert!(!leaf.is_ca());
        // basicConstraints is there, critical, and in DER: cA false is the
        // default, so its SEQUENCE is empty (30 00).
        let bc = leaf
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.5.29.19")
            .unwrap();
        assert!(bc.critical);
        assert_eq!(bc.value, [0x30, 0x00]);
        let lifetime =
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 60);

        // Reopened over the same HSM key, the CA issues certificates that
        // chain to the certificate persisted the first time.
        let again = X509Ca::open(keys, "example.org", Some(ca.cert_der().to_vec())).unwrap();
        let svid2 = again
            .issue_svid(&subject(), &id, Duration::from_secs(60))
            .unwrap();
        let (_, leaf2) = X509Certificate::from_der(&svid2.der).unwrap();
        leaf2.verify_signature(Some(root.public_key())).unwrap();
        assert_ne!(svid.serial, svid2.serial);
    }
}
