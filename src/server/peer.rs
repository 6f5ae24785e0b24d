//! Who is on the other end of a TLS connection. The handshake has already
//! checked any client certificate against the zeroth CA (chain, validity,
//! client-auth usage); this acceptor hands the verified leaf to the request
//! handlers as an extension, so endpoints that need a node can ask for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use axum::middleware::AddExtension;
use axum::Extension;
use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsAcceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tower_layer::Layer;

/// The verified client certificate of this connection, if the client sent one.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

/// Wraps the rustls acceptor and attaches [`PeerCertificate`] to every
/// request on the connection.
#[derive(Clone)]
pub struct PeerAcceptor {
    pub inner: RustlsAcceptor,
}

type Accepted<I, S> = io::Result<(TlsStream<I>, AddExtension<S, PeerCertificate>)>;

/// Streams that know the address at their other end.
pub trait PeerAddr {
    fn peer(&self) -> Option<std::net::SocketAddr>;
}

impl PeerAddr for tokio::net::TcpStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer_addr().ok()
    }
}

impl<I, S> Accept<I, S> for PeerAcceptor
where
    I: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = TlsStream<I>;
    type Service = AddExtension<S, PeerCertificate>;
    type Future = Pin<Box<dyn Future<Output = Accepted<I, S>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let peer = stream.peer();
            let (stream, service) = inner.accept(stream, service).await.inspect_err(|e| {
                // One line per refused handshake: who, and why.
                let peer = peer.map_or_else(|| "unknown".into(), |p| p.to_string());
                tracing::warn!(%peer, reason = %e, "TLS handshake refused");
            })?;
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| Arc::new(c.as_ref().to_vec()));
            Ok((stream, Extension(PeerCertificate(leaf)).layer(service)))
        })
    }
}
