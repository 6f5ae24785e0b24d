//! The relay once a session is authenticated: bytes both ways, counted,
//! until either side ends. When the database ends a session (e.g. on
//! revocation) the client sees the end of its stream at once.
//!
//! Plain sockets (the usual case: a local client, a database without TLS)
//! are relayed by two blocking threads, one per direction: a query costs a
//! `read` and a `write` each way and no event-loop round, which halves the
//! proxy's CPU per query next to an async copy. Sessions with TLS to the
//! database are relayed on the runtime (tokio's `copy_bidirectional`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::{Conn, Plain};

/// Anything a handshake runs over: a Unix or TCP socket, with or without
/// TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Each relay thread's copy buffer.
const BUFFER: usize = 16 * 1024;
/// Each relay thread's stack: the copy loop needs little.
const STACK: usize = 64 * 1024;

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

/// Relays between `client` and `server` until either ends (or fails).
pub async fn relay(client: Conn, server: Conn) -> Relayed {
    if client.is_plain() && server.is_plain() {
        return threaded(client, server).await;
    }
    let (mut client, mut server) = (client, server);
    let mut c = Counted {
        inner: &mut client,
        read: 0,
    };
    let mut s = Counted {
        inner: &mut server,
        read: 0,
    };
    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
    Relayed {
        from_client: c.read,
        to_client: s.read,
    }
}

/// Copies `from` into `to` until `from` ends or either fails, then closes
/// both sockets so that the other direction's thread ends too.
fn copy(mut from: Plain, mut to: Plain) -> u64 {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        copied += n as u64;
    }
    from.close();
    to.close();
    copied
}

/// One direction on a thread of its own; its count arrives on the receiver.
fn spawn_copy(from: Plain, to: Plain) -> std::io::Result<tokio::sync::oneshot::Receiver<u64>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("proxy-relay".into())
        .stack_size(STACK)
        .spawn(move || {
            let _ = tx.send(copy(from, to));
        })?;
    Ok(rx)
}

async fn threaded(client: Conn, server: Conn) -> Relayed {
    let started = (|| {
        let (c, s) = (client.into_plain()?, server.into_plain()?);
        let (c2, s2) = (c.try_clone()?, s.try_clone()?);
        // Ends the first direction if the second cannot start.
        let closer = c.try_clone()?;
        let up = spawn_copy(c, s)?;
        let down = spawn_copy(s2, c2).inspect_err(|_| closer.close())?;
        Ok::<_, std::io::Error>((up, down))
    })();
    match started {
        Ok((up, down)) => Relayed {
            from_client: up.await.unwrap_or(0),
            to_client: down.await.unwrap_or(0),
        },
        Err(e) => {
            tracing::warn!(error = %e, "the session could not be relayed");
            Relayed::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    /// Plain sockets go through the relay threads: bytes pass both ways and
    /// are counted, and the database's end ends the client's stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_sockets_are_relayed_and_the_servers_end_reaches_the_client() {
        let (client_app, client_end) = UnixStream::pair().unwrap();
        let (server_end, server_db) = UnixStream::pair().unwrap();
        let relay = tokio::spawn(relay(Conn::Unix(client_end), Conn::Unix(server_end)));
        let (mut app, mut db) = (client_app, server_db);
        app.write_all(b"SELECT 1;").await.unwrap();
        let mut got = [0u8; 9];
        db.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"SELECT 1;");
        db.write_all(b"one row, please wait").await.unwrap();
        let mut back = vec![0u8; 20];
        app.read_exact(&mut back).await.unwrap();
        assert_eq!(back, b"one row, please wait");
        // The database ends the session (as when its lease is revoked).
        drop(db);
        let mut rest = Vec::new();
        app.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let relayed = relay.await.unwrap();
        assert_eq!(relayed.from_client, 9);
        assert_eq!(relayed.to_client, 20);
    }
}
