//! Who opened a loopback TCP connection: the kernel lists every socket in
//! /proc/net/tcp and /proc/net/tcp6 with its owner's uid. The client's
//! socket is the one whose local end is our peer and whose remote end is
//! us. Only the uid is known this way: not the pid, nor the unit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address in /proc/net/tcp{,6} notation: hex words in host byte
/// order, then the port in hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The uid owning the socket `local` → `remote` in a /proc/net/tcp text.
pub fn find(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (l, r, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        (parse_addr(l)? == local && parse_addr(r)? == remote)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// Why the owner of a connection is unknown.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no owner of the connection from {peer} in {file}")]
    NotFound {
        peer: SocketAddr,
        file: &'static str,
    },
}

/// The uid of the program at `peer` connected to us at `us`.
pub fn owner(peer: SocketAddr, us: SocketAddr) -> Result<u32, OwnerError> {
    let unmapped = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (peer, us) = (unmapped(peer), unmapped(us));
    let file = if peer.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let table =
        std::fs::read_to_string(file).map_err(|source| OwnerError::Read { file, source })?;
    find(&table, peer, us).ok_or(OwnerError::NotFound { peer, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_side_of_a_loopback_connection_names_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = owner(peer, listener.local_addr().unwrap()).unwrap();
        assert_eq!(uid, rustix::process::geteuid().as_raw());
        // Swapped ends are the server's own socket, not the client's: the
        // same uid here, but found by the other line.
        let e = owner(
            "127.0.0.1:1".parse().unwrap(),
            listener.local_addr().unwrap(),
        );
        assert!(matches!(e, Err(OwnerError::NotFound { .. })));
    }

    #[test]
    fn addresses_read_as_the_kernel_writes_them() {
        let v4 = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            parse_addr(&format!("{v4:08X}:1F90")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        assert_eq!(
            parse_addr(&format!("000000000000000000000000{one:08X}:0016")),
            Some("[::1]:22".parse().unwrap())
        );
        assert_eq!(parse_addr("zz:1"), None);
        assert_eq!(parse_addr("0100007F"), None);
    }
}
