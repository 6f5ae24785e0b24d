//! The relay once a session is authenticated: bytes both ways, counted,
//! until either side hangs up (a database that ends the session, e.g. on
//! revocation, ends it for the client too).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Anything a session runs over: a Unix or TCP socket, with or without TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Bytes relayed each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    pub from_client: u64,
    pub to_client: u64,
}

const BUFFER: usize = 32 * 1024;

/// Copies until `from` ends or either side fails; counts into `count`.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    count: &mut u64,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        *count += n as u64;
        // Flush only when nothing more is waiting: TLS writers buffer.
        if to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Relays between `client` and `server` until one of them is done.
pub async fn relay(client: &mut impl Io, server: &mut impl Io) -> Relayed {
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let mut counts = Relayed::default();
    {
        let up = pump(&mut cr, &mut sw, &mut counts.from_client);
        let down = pump(&mut sr, &mut cw, &mut counts.to_client);
        tokio::pin!(up, down);
        tokio::select! {
            () = &mut up => {}
            () = &mut down => {}
        }
    }
    counts
}
