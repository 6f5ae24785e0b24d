//! TLS from the proxy to the database, verified as libpq's verify-full
//! does: the certificate chains to the connection's CA and names the host.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub async fn connect(
    ca_pem: &[u8],
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let config = crate::creds::db::pg_tls::client_config(ca_pem)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("host {host:?}: {e}"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}
