//! Waiting on real conditions with a deadline.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::process::Daemon;
use super::LabError;

/// Polls `ready` until it returns `Some`, the daemon exits, or `timeout` passes.
/// `ready` checks the real condition (a port answering, a query succeeding);
/// the short pause between polls only paces the checks.
pub fn until<T>(
    what: &str,
    daemon: &mut Daemon,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        daemon.ensure_running()?;
        if Instant::now() >= deadline {
            return Err(LabError::NotReady {
                what: what.to_owned(),
                after: timeout,
                log: daemon.log_tail(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True once `addr` accepts a TCP connection.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The first line a server sends after accepting, e.g. an SSH banner.
pub fn banner(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.lines().next().map(str::to_owned)
}
