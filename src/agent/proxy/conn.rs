//! One end of a proxied session: the client's Unix or TCP socket, or the
//! database's TCP connection with or without TLS. Handshakes use it as an
//! async stream; once a session is authenticated, plain sockets are handed
//! to the relay thread (see `reactor.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A socket without TLS, non-blocking, for the relay thread.
pub enum Plain {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Conn {
    /// Whether this end is a socket without TLS.
    pub fn is_plain(&self) -> bool {
        !matches!(self, Conn::Tls(_))
    }

    /// The plain socket under this end, taken off the async runtime (still
    /// non-blocking). TLS ends cannot be (their state lives in memory).
    pub fn into_plain(self) -> std::io::Result<Plain> {
        Ok(match self {
            Conn::Tls(_) => {
                return Err(std::io::Error::other(
                    "a TLS connection cannot be relayed as a plain socket",
                ))
            }
            Conn::Unix(s) => Plain::Unix(s.into_std()?),
            Conn::Tcp(s) => Plain::Tcp(s.into_std()?),
        })
    }
}

impl Plain {
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Plain::Unix(s) => s.as_fd(),
            Plain::Tcp(s) => s.as_fd(),
        }
    }

    /// Ends both directions: the peer sees the end of its stream.
    pub fn close(&self) {
        let _ = match self {
            Plain::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Plain::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl std::io::Read for Plain {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Plain::Unix(s) => s.read(buf),
            Plain::Tcp(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Plain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Plain::Unix(s) => s.write(buf),
            Plain::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
