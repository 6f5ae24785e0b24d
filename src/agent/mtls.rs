//! The agent's mTLS client: its X.509-SVID as client certificate, and every
//! handshake signature made by the TPM-resident identity key, which never
//! leaves the TPM (on a token host: by the key in the agent's memory).

use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::{Digest, Sha256};
use zeroth_attest::verify::attestation::Signature;
use zeroth_attest::{Attester, KeyBlob};

use super::enrol::AgentError;

/// The identity key, as rustls sees it.
struct TpmKey {
    tpm: Arc<Attester>,
    key: KeyBlob,
}

impl std::fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TpmKey({:?})", self.key)
    }
}

impl SigningKey for TpmKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(TpmSigner {
                    tpm: self.tpm.clone(),
                    key: self.key.clone(),
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

struct TpmSigner {
    tpm: Arc<Attester>,
    key: KeyBlob,
}

impl std::fmt::Debug for TpmSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TpmSigner({:?})", self.key)
    }
}

impl Signer for TpmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let digest = Sha256::digest(message).to_vec();
        let key = self.key.clone();
        let tpmt = self
            .tpm
            .run(move |t| t.sign_digest(&key, &digest))
            .map_err(|e| rustls::Error::General(format!("TPM signature: {e}")))?;
        let Ok(Signature::Ecdsa { r, s, .. }) = Signature::parse(&tpmt) else {
            return Err(rustls::Error::General(
                "the TPM returned no ECDSA signature".into(),
            ));
        };
        let pad = |v: &[u8]| {
            let mut out = [0u8; 32];
            let v = &v[v.len().saturating_sub(32)..];
            out[32 - v.len()..].copy_from_slice(v);
            out
        };
        let sig = p256::ecdsa::Signature::from_scalars(pad(&r), pad(&s))
            .map_err(|_| rustls::Error::General("the TPM's ECDSA signature is malformed".into()))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[derive(Debug)]
struct OneClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        sigschemes
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

/// An HTTPS client that trusts only the zeroth CA in `ca_bundle` and
/// authenticates with `svid_pem`, signing through the TPM.
pub fn client(
    ca_bundle: &Path,
    svid_pem: &str,
    tpm: Arc<Attester>,
    key: KeyBlob,
) -> Result<reqwest::blocking::Client, AgentError> {
    client_signing_with(ca_bundle, svid_pem, Arc::new(TpmKey { tpm, key }))
}

/// The same for a token host, whose SVID key exists only in the agent's
/// memory.
pub fn client_with_key(
    ca_bundle: &Path,
    svid_pem: &str,
    key: &p256::ecdsa::SigningKey,
) -> Result<reqwest::blocking::Client, AgentError> {
    use p256::pkcs8::EncodePrivateKey;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| AgentError::BadAnswer(format!("encoding the SVID key: {e}")))?;
    let private = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    let signing = rustls::crypto::ring::sign::any_ecdsa_type(&private.into())
        .map_err(|e| AgentError::BadAnswer(format!("the SVID key: {e}")))?;
    client_signing_with(ca_bundle, svid_pem, signing)
}

fn client_signing_with(
    ca_bundle: &Path,
    svid_pem: &str,
    key: Arc<dyn SigningKey>,
) -> Result<reqwest::blocking::Client, AgentError> {
    let pem = std::fs::read(ca_bundle).map_err(|source| AgentError::File {
        what: "read the CA bundle",
        path: ca_bundle.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_certificates(&pem) {
        roots
            .add(der.into())
            .map_err(|e| AgentError::BadAnswer(format!("CA bundle: {e}")))?;
    }
    let chain: Vec<_> = pem_certificates(svid_pem.as_bytes())
        .into_iter()
        .map(Into::into)
        .collect();
    if chain.is_empty() || roots.is_empty() {
        return Err(AgentError::BadAnswer(
            "no certificate in the SVID or the CA bundle".into(),
        ));
    }
    let certified = CertifiedKey::new(chain, key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::BadAnswer(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(OneClientCert(Arc::new(certified))));
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(super::servers::LAST_WAIT)
        .build()
        .map_err(|e| AgentError::BadAnswer(e.to_string()))
}
