//! A TCP relay between one client and its server on loopback, which a test
//! can cut: the network between a zeroth server and its store, say, failing
//! while the store itself and every other client of it stay up.
//!
//! While cut, the relay closes every connection it carries and every new
//! one at once, so the client sees its peer go away (not a stall); `mend`
//! lets new connections through again.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::LabError;

/// A running relay; stopped (and every connection closed) when dropped.
#[derive(Debug)]
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
    accepter: Option<thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    stopping: AtomicBool,
    /// Both ends of every connection carried, to close them on a cut.
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn close_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Relay {
    /// Listens on a free loopback port and relays each connection to `to`.
    pub fn start(to: SocketAddr) -> Result<Self, LabError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| LabError::io("bind the relay's port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| LabError::io("read the relay's port", e))?
            .port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accepter = thread::Builder::new()
            .name("lab-relay".into())
            .spawn(move || accept(listener, to, &s))
            .map_err(|e| LabError::io("start the relay", e))?;
        Ok(Self {
            port,
            shared,
            accepter: Some(accepter),
        })
    }

    /// The port clients connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The network fails: every connection carried is closed and new ones
    /// are closed as soon as they arrive.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// The network is back: new connections are relayed again.
    pub fn mend(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the accepting thread, blocked in accept().
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

fn accept(listener: TcpListener, to: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        if let Err(e) = carry(client, to, shared) {
            tracing::debug!(error = %e, "lab relay: a connection was not carried");
        }
    }
}

/// Relays one connection, a thread per direction.
fn carry(client: TcpStream, to: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    let server = TcpStream::connect(to)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut open = shared.open.lock().unwrap_or_else(|p| p.into_inner());
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    // A cut that came between the accept and the registration above.
    if shared.cut.load(Ordering::SeqCst) {
        shared.close_all();
        return Ok(());
    }
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    thread::Builder::new()
        .name("lab-relay-up".into())
        .spawn(move || pump(client, server))?;
    thread::Builder::new()
        .name("lab-relay-down".into())
        .spawn(move || pump(s2, c2))?;
    Ok(())
}

/// Copies `from` into `to` until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::Relay;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    #[test]
    fn bytes_pass_until_the_relay_is_cut_and_again_after_it_is_mended() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let relay = Relay::start(server.local_addr().unwrap()).unwrap();
        std::thread::spawn(move || {
            for s in server.incoming() {
                let mut s = s.unwrap();
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        });
        let round_trip = || -> std::io::Result<[u8; 5]> {
            let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, relay.port()))?;
            c.write_all(b"hello")?;
            let mut b = [0u8; 5];
            c.read_exact(&mut b)?;
            Ok(b)
        };
        assert_eq!(&round_trip().unwrap(), b"hello");
        // A connection held open across the cut is closed by it.
        let mut held = TcpStream::connect((Ipv4Addr::LOCALHOST, relay.port())).unwrap();
        relay.cut();
        let mut b = [0u8; 1];
        assert!(matches!(held.read(&mut b), Ok(0) | Err(_)));
        assert!(round_trip().is_err());
        relay.mend();
        assert_eq!(&round_trip().unwrap(), b"hello");
        drop(relay);
    }
}
