//! The relay once a session is authenticated: bytes both ways, counted,
//! until either side ends. When the database ends a session (e.g. on
//! revocation) the client sees the end of its stream at once.
//!
//! Plain sockets (the usual case: a local client, a database without TLS)
//! are relayed by one thread of their own for all sessions (`reactor.rs`):
//! a query costs a `read` and a `write` each way and a share of one wait,
//! with none of the async runtime's wake-ups. Sessions with TLS to the
//! database are relayed on the runtime (tokio's `copy_bidirectional`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::Conn;
use super::reactor;

/// Anything a handshake runs over: a Unix or TCP socket, with or without
/// TLS.
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

/// Relays between `client` and `server` until either ends (or fails).
pub async fn relay(client: Conn, server: Conn) -> Relayed {
    if client.is_plain() && server.is_plain() {
        return on_relay_thread(client, server).await;
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

async fn on_relay_thread(client: Conn, server: Conn) -> Relayed {
    let handed = (|| reactor::relay(client.into_plain()?, server.into_plain()?))();
    match handed {
        Ok(done) => done.await.unwrap_or_default(),
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

    /// Plain sockets go through the relay thread: bytes pass both ways and
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

    /// More than the sockets can hold at once, both ways at the same time,
    /// read slowly: the relay parks what a side cannot take, loses and
    /// reorders nothing, and the client's end ends the database's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_transfers_both_ways_arrive_whole_and_in_order() {
        const SIZE: usize = 8 * 1024 * 1024;
        let (client_app, client_end) = UnixStream::pair().unwrap();
        let (server_end, server_db) = UnixStream::pair().unwrap();
        let relay = tokio::spawn(relay(Conn::Unix(client_end), Conn::Unix(server_end)));
        let pattern = |seed: u8| {
            (0..SIZE)
                .map(|i| (i % 251) as u8 ^ seed)
                .collect::<Vec<_>>()
        };
        let (up, down) = (pattern(0x5a), pattern(0xa5));
        let (mut app_r, mut app_w) = client_app.into_split();
        let (mut db_r, mut db_w) = server_db.into_split();
        let send_up = {
            let up = up.clone();
            tokio::spawn(async move { app_w.write_all(&up).await.map(|_| app_w) })
        };
        let send_down = {
            let down = down.clone();
            tokio::spawn(async move { db_w.write_all(&down).await.map(|_| db_w) })
        };
        let mut got_up = vec![0u8; SIZE];
        let mut got_down = vec![0u8; SIZE];
        for chunk in got_up.chunks_mut(4096) {
            db_r.read_exact(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
        app_r.read_exact(&mut got_down).await.unwrap();
        assert!(got_up == up, "the client's bytes arrived changed");
        assert!(got_down == down, "the database's bytes arrived changed");
        let app_w = send_up.await.unwrap().unwrap();
        let _db_w = send_down.await.unwrap().unwrap();
        drop(app_w);
        drop(app_r);
        let mut rest = Vec::new();
        db_r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let relayed = relay.await.unwrap();
        assert_eq!(relayed.from_client, SIZE as u64);
        assert_eq!(relayed.to_client, SIZE as u64);
    }

    fn threads() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line["Threads:".len()..].trim().parse().unwrap()
    }

    /// Hundreds of open sessions add no thread per session: the relay's
    /// threads are one per core, started once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_sessions_do_not_add_threads() {
        // The relay threads start with the first session.
        let mut open = Vec::new();
        let start = |open: &mut Vec<(UnixStream, UnixStream)>| {
            let (app, client_end) = UnixStream::pair().unwrap();
            let (server_end, db) = UnixStream::pair().unwrap();
            tokio::spawn(relay(Conn::Unix(client_end), Conn::Unix(server_end)));
            open.push((app, db));
        };
        async fn ping(open: &mut [(UnixStream, UnixStream)]) {
            for (app, db) in open.iter_mut() {
                app.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                db.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"ping");
            }
        }
        start(&mut open);
        ping(&mut open).await;
        let before = threads();
        for _ in 0..300 {
            start(&mut open);
        }
        ping(&mut open).await;
        let after = threads();
        assert!(
            after <= before + 2,
            "{before} threads with one session, {after} with 301"
        );
    }
}
