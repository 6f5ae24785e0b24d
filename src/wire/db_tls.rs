//! TLS to a database with full verification (libpq's verify-full): the
//! server's certificate must chain to the connection's CA and name the host
//! dialled. The server's broker and the agent's proxies reach databases
//! with the same settings.

use std::sync::Arc;

/// Why a database CA cannot be trusted as given.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA file is not PEM: {0}")]
    NotPem(String),
    #[error("the CA file: {0}")]
    Certificate(rustls::Error),
    #[error("the CA file holds no certificate")]
    Empty,
    #[error("TLS: {0}")]
    Tls(rustls::Error),
}

/// A verify-full TLS configuration trusting only `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in x509_parser::pem::Pem::iter_from_buffer(ca_pem) {
        let pem = pem.map_err(|e| CaError::NotPem(e.to_string()))?;
        roots
            .add(pem.contents.into())
            .map_err(CaError::Certificate)?;
    }
    if roots.is_empty() {
        return Err(CaError::Empty);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(CaError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
