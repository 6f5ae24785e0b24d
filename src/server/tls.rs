//! The server's TLS: TLS 1.3 only, a certificate from the HSM CA, and a
//! private key that stays in the HSM (rustls asks it for each signature).

use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use zeroth_hsm::{KeyKind, KeyName, KeyStore, PublicKey};

use crate::identity::{P256Subject, X509Ca};

/// The HSM key behind the server's TLS certificate.
pub const TLS_KEY: &str = "tls-server";

/// Signs TLS handshakes with an ECDSA P-256 key in the HSM. A signature
/// costs one HSM round trip (tens of microseconds on a local token).
struct HsmKey {
    keys: Arc<dyn KeyStore>,
    name: KeyName,
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmKey({})", self.name)
    }
}

impl std::fmt::Debug for HsmSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmSigner({})", self.name)
    }
}

impl SigningKey for HsmKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(HsmSigner {
                    keys: self.keys.clone(),
                    name: self.name.clone(),
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

struct HsmSigner {
    keys: Arc<dyn KeyStore>,
    name: KeyName,
}

impl Signer for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let rs = self
            .keys
            .sign(&self.name, message)
            .map_err(|e| rustls::Error::General(format!("HSM signature: {e}")))?;
        let sig = p256::ecdsa::Signature::from_slice(&rs).map_err(|_| {
            rustls::Error::General("HSM returned a malformed ECDSA signature".into())
        })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the TLS key: {0}")]
    Hsm(#[from] zeroth_hsm::HsmError),
    #[error("issuing the server certificate: {0}")]
    Ca(#[from] crate::identity::x509_ca::CaError),
    #[error("the TLS key is not ECDSA P-256")]
    WrongKey,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS 1.3 server configuration whose certificate (for `names`, valid for
/// `ttl`) the HSM CA issues at start-up over the HSM key `tls-server`.
pub fn server_config(
    keys: Arc<dyn KeyStore>,
    ca: &X509Ca,
    names: &[String],
    ttl: Duration,
) -> Result<rustls::ServerConfig, TlsError> {
    let name = KeyName::new(TLS_KEY)?;
    let info = keys.get_or_generate(&name, KeyKind::EcdsaP256)?;
    let Some(PublicKey::EcdsaP256(point)) = info.public else {
        return Err(TlsError::WrongKey);
    };
    let cert = ca.issue_server(&P256Subject(point), names, ttl)?;
    let chain = vec![cert.der.into(), ca.cert_der().to_vec().into()];
    let certified = CertifiedKey::new(chain, Arc::new(HsmKey { keys, name }));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Clients may come without a certificate (enrolment, the bundle, OIDC
    // discovery); one that presents a certificate must present a valid
    // zeroth SVID, or the handshake fails.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().to_vec().into())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
