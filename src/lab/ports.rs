//! Free loopback ports.
//!
//! A port is chosen by binding port 0 and closing the socket, which leaves a
//! small window in which another process may take it; components retry their
//! start with a new port when the daemon reports the address in use.

use std::net::{Ipv4Addr, TcpListener};

use super::LabError;

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16, LabError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| LabError::io("bind a free loopback port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| LabError::io("read the bound port", e))?
        .port();
    Ok(port)
}

/// Two consecutive free loopback ports (swtpm wants its control channel at P+1).
pub fn free_port_pair() -> Result<u16, LabError> {
    for _ in 0..64 {
        let p = free_port()?;
        if p < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(LabError::io(
        "find two consecutive free loopback ports",
        std::io::Error::from(std::io::ErrorKind::AddrInUse),
    ))
}

/// Whether a daemon's log says it lost the race for its port.
pub fn lost_port_race(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("could not bind") || l.contains("eaddrinuse")
}
