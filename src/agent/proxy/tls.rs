//! TLS from the proxy to the database, verified as libpq's verify-full
//! does: the certificate chains to the connection's CA and names the host.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why TLS to the database failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the connection's CA: {0}")]
    Ca(#[from] crate::wire::db_tls::CaError),
    #[error("host {host:?} is not a TLS server name: {reason}")]
    Name { host: String, reason: String },
    #[error(transparent)]
    Handshake(#[from] std::io::Error),
}

pub async fn connect(
    ca_pem: &[u8],
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let config = crate::wire::db_tls::client_config(ca_pem).map_err(TlsError::Ca)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| TlsError::Name {
        host: host.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?)
}
