//! TLS to a database with full verification (libpq's verify-full): the
//! server's certificate must chain to the connection's CA and name the host
//! dialled. The server's broker and the agent's proxies reach databases
//! with the same settings.

use std::sync::Arc;

/// A verify-full TLS configuration trusting only `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in x509_parser::pem::Pem::iter_from_buffer(ca_pem) {
        let pem = pem.map_err(|e| format!("the CA file is not PEM: {e}"))?;
        roots
            .add(pem.contents.into())
            .map_err(|e| format!("the CA file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
