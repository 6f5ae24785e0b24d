//! An OpenSSH certificate authority over an HSM-held Ed25519 or ECDSA P-256
//! key (PROTOCOL.certkeys): ssh-key builds the certificate, the HSM signs it.

use std::sync::Arc;

use ssh_key::certificate::{Builder, CertType, Certificate};
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData};
use ssh_key::{Algorithm, EcdsaCurve, PublicKey, Signature};
use zeroth_hsm::{HsmError, KeyName, KeyStore};

/// The HSM keys of the user and host CAs (Ed25519; P-256 ones end in `-p256`).
pub const USER_CA_KEY: &str = "ssh-user-ca";
pub const HOST_CA_KEY: &str = "ssh-host-ca";

/// The CA key's algorithm (`ssh_ca_algorithm` in server.toml).
pub use crate::config::CaAlgorithm;

#[derive(Debug, thiserror::Error)]
pub enum SshCaError {
    #[error("the CA key: {0}")]
    Hsm(#[from] HsmError),
    #[error("the CA key {0} is not of the configured algorithm")]
    WrongKey(String),
    #[error("building the certificate: {0}")]
    Build(#[from] ssh_key::Error),
    #[error("the CA table: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Rotation(String),
}

/// Signs through the HSM; what ssh-key needs of a CA key.
struct HsmSigner {
    keys: Arc<dyn KeyStore>,
    name: KeyName,
    public: KeyData,
}

impl signature::Signer<Signature> for HsmSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Signature, signature::Error> {
        let raw = self
            .keys
            .sign(&self.name, msg)
            .map_err(signature::Error::from_source)?;
        match self.public {
            KeyData::Ecdsa(_) => {
                // The HSM returns r || s; SSH wants two mpints.
                let sig = p256::ecdsa::Signature::from_slice(&raw)?;
                Signature::try_from(&sig).map_err(signature::Error::from_source)
            }
            _ => Signature::new(Algorithm::Ed25519, raw).map_err(signature::Error::from_source),
        }
    }
}

impl From<&HsmSigner> for KeyData {
    fn from(s: &HsmSigner) -> KeyData {
        s.public.clone()
    }
}

/// One CA (user or host).
pub struct SshCa {
    signer: HsmSigner,
    kind: CertType,
}

/// What a certificate says, besides its key.
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub serial: u64,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub critical_options: Vec<(String, String)>,
    pub extensions: Vec<String>,
}

impl SshCa {
    /// Opens (or creates in the HSM) the CA key `name` of `algorithm`.
    pub fn open(
        keys: Arc<dyn KeyStore>,
        name: &str,
        algorithm: CaAlgorithm,
        kind: CertType,
    ) -> Result<Self, SshCaError> {
        let key_name = KeyName::new(name)?;
        let info = keys.get_or_generate(&key_name, algorithm.kind())?;
        let public = match (algorithm, info.public) {
            (CaAlgorithm::Ed25519, Some(zeroth_hsm::PublicKey::Ed25519(raw))) => {
                KeyData::Ed25519(Ed25519PublicKey(raw))
            }
            (CaAlgorithm::EcdsaP256, Some(zeroth_hsm::PublicKey::EcdsaP256(point))) => {
                let point = EcdsaPublicKey::from_sec1_bytes(&point)?;
                KeyData::Ecdsa(point)
            }
            _ => return Err(SshCaError::WrongKey(name.to_owned())),
        };
        Ok(Self {
            signer: HsmSigner {
                keys,
                name: key_name,
                public,
            },
            kind,
        })
    }

    /// The algorithm of the CA's signatures.
    pub fn algorithm(&self) -> Algorithm {
        match self.signer.public {
            KeyData::Ecdsa(_) => Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            _ => Algorithm::Ed25519,
        }
    }

    /// The CA's public key in OpenSSH format (for TrustedUserCAKeys or
    /// `@cert-authority`).
    pub fn public_openssh(&self) -> String {
        PublicKey::new(self.signer.public.clone(), "zeroth")
            .to_openssh()
            .unwrap_or_default()
    }

    /// The CA's public key in SSH wire format (as KRLs name it).
    pub fn public_blob(&self) -> Vec<u8> {
        PublicKey::new(self.signer.public.clone(), "")
            .to_bytes()
            .unwrap_or_default()
    }

    /// Certifies `subject` as `spec` says.
    pub fn certify(&self, subject: &PublicKey, spec: &CertSpec) -> Result<Certificate, SshCaError> {
        let mut nonce = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
        let mut b = Builder::new(
            nonce.to_vec(),
            subject.key_data().clone(),
            spec.valid_after,
            spec.valid_before,
        )?;
        b.serial(spec.serial)?
            .key_id(spec.key_id.clone())?
            .cert_type(self.kind)?;
        for p in &spec.principals {
            b.valid_principal(p.clone())?;
        }
        for (k, v) in &spec.critical_options {
            b.critical_option(k.clone(), v.clone())?;
        }
        for e in &spec.extensions {
            b.extension(e.clone(), "")?;
        }
        Ok(b.sign(&self.signer)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_verify_under_an_ed25519_or_p256_ca_key_and_say_what_was_asked() {
        for algorithm in [CaAlgorithm::Ed25519, CaAlgorithm::EcdsaP256] {
            certify_and_check(algorithm);
        }
    }

    fn certify_and_check(algorithm: CaAlgorithm) {
        let keys: Arc<dyn KeyStore> = Arc::new(zeroth_hsm::SoftwareKeyStore::new_insecure());
        let ca = SshCa::open(
            keys,
            &algorithm.key_name(USER_CA_KEY),
            algorithm,
            CertType::User,
        )
        .unwrap();
        let subject = ssh_key::PrivateKey::random(
            &mut p256::elliptic_curve::rand_core::OsRng,
            Algorithm::Ed25519,
        )
        .unwrap();
        let spec = CertSpec {
            serial: 42,
            key_id: "spiffe://t/node/1 lease 9".into(),
            principals: vec!["deploy".into()],
            valid_after: 1_000,
            valid_before: 2_000,
            critical_options: vec![("source-address".into(), "127.0.0.1/32".into())],
            extensions: vec!["permit-pty".into()],
        };
        let cert = ca.certify(subject.public_key(), &spec).unwrap();
        let ca_key = PublicKey::from_openssh(&ca.public_openssh()).unwrap();
        let fp = ca_key.fingerprint(ssh_key::HashAlg::Sha256);
        cert.validate_at(1_500, [&fp]).unwrap();
        assert!(cert.validate_at(2_500, [&fp]).is_err(), "expired");
        assert_eq!(cert.serial(), 42);
        assert_eq!(cert.valid_principals(), ["deploy"]);
        assert_eq!(
            cert.critical_options()
                .get("source-address")
                .map(String::as_str),
            Some("127.0.0.1/32")
        );
    }
}
