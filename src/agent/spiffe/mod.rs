//! Workload identities on a node: registration entries from the server,
//! an X.509-SVID per entry with its key in the agent's memory, and the
//! SPIFFE Workload API (gRPC) that hands each program the identities its
//! kernel-attested selectors match.
//!
//! The workload socket speaks two protocols, told apart by the first byte
//! a client sends: HTTP/2 (gRPC: the SPIFFE Workload API, for stock SPIFFE
//! clients) and one JSON line (zeroth's own requests: database users, SSH
//! certificates, leases).

pub mod authority;
pub mod grpc;
pub mod identities;
pub mod jwt_check;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use crate::agent::attest;

pub use identities::Identities;

/// A gRPC connection, what was attested of its peer at accept, and the
/// slot it takes among its uid's connections (freed when it closes).
pub struct GrpcConn {
    io: authority::AuthorityFix<UnixStream>,
    peer: grpc::Peer,
    _slot: crate::agent::slots::Slot,
}

impl GrpcConn {
    pub fn new(io: UnixStream, peer: grpc::Peer, slot: crate::agent::slots::Slot) -> Self {
        Self {
            io: authority::AuthorityFix::new(io),
            peer,
            _slot: slot,
        }
    }
}

impl tonic::transport::server::Connected for GrpcConn {
    type ConnectInfo = grpc::Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The first byte `conn` will read, without consuming it; `None` if the
/// peer closed first.
pub async fn peek_first(conn: &UnixStream) -> io::Result<Option<u8>> {
    loop {
        conn.readable().await?;
        let mut b = [0u8; 1];
        // Through `try_io`, so that "nothing yet" clears the readiness
        // tokio remembers (a raw recv would leave it set, and this loop
        // would spin).
        let peeked = conn.try_io(tokio::io::Interest::READABLE, || {
            rustix::net::recv(conn, &mut b, rustix::net::RecvFlags::PEEK)
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        });
        match peeked {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The gRPC server for connections handed over on `incoming`.
pub async fn serve_grpc(
    ids: Identities,
    incoming: tokio::sync::mpsc::Receiver<io::Result<GrpcConn>>,
) -> Result<(), tonic::transport::Error> {
    use crate::wire::workload_api::spiffe_workload_api_server::SpiffeWorkloadApiServer;
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(grpc::WorkloadApi { ids }))
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming))
        .await
}

/// Attests the peer of `conn` on a blocking thread.
pub async fn attest_peer(conn: &UnixStream, hashes: Arc<attest::HashCache>) -> grpc::Peer {
    let fd = match conn.as_fd_owned() {
        Ok(fd) => fd,
        Err(e) => {
            return grpc::Peer(Arc::new(Err(attest::AttestError::Credentials(
                e.to_string(),
            ))))
        }
    };
    let result = tokio::task::spawn_blocking(move || attest::attest(&fd, &hashes))
        .await
        .unwrap_or_else(|e| Err(attest::AttestError::Credentials(e.to_string())));
    grpc::Peer(Arc::new(result))
}

trait OwnedFdOf {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd>;
}

impl OwnedFdOf for UnixStream {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}
