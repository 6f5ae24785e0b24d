//! The relay once a session is authenticated: bytes both ways, counted,
//! until both sides are done (tokio's `copy_bidirectional`: one task polls
//! both directions, so a query costs no cross-task wake-up). When the
//! database ends a session (e.g. on revocation) the client sees the end of
//! its stream at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Anything a session runs over: a Unix or TCP socket, with or without TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Bytes relayed each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    pub from_client: u64,
    pub to_client: u64,
}

/// A stream that counts the bytes read from it, whatever becomes of the
/// copy (an error ends it, the count stays right).
struct Counted<'a, S> {
    inner: &'a mut S,
    read: u64,
}

impl<S: Io> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<S: Io> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Relays between `client` and `server` until both directions have ended
/// (or either failed).
pub async fn relay(client: &mut impl Io, server: &mut impl Io) -> Relayed {
    let mut c = Counted {
        inner: client,
        read: 0,
    };
    let mut s = Counted {
        inner: server,
        read: 0,
    };
    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
    Relayed {
        from_client: c.read,
        to_client: s.read,
    }
}
