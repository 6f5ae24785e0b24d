//! The first packet a PostgreSQL client sends (protocol 3, "Start-up" in
//! the protocol chapter of the PostgreSQL manual): a length, a code, then
//! for a StartupMessage NUL-terminated name/value pairs ending in a NUL.
//! Untrusted bytes: every length is checked before use, trailing bytes are
//! refused.

/// Longest start-up packet PostgreSQL itself accepts.
pub const MAX_STARTUP: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3: u32 = 3;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// TLS on the local side: answered 'N' (the socket is local).
    Ssl,
    /// GSSAPI encryption: answered 'N'.
    GssEnc,
    /// Cancel the query of the backend with this pid and secret key.
    Cancel { pid: i32, key: i32 },
    /// A session, with its parameters in the client's order.
    Session { params: Vec<(String, String)> },
}

impl Startup {
    /// A parameter's value (`database`, `user`, `application_name`, ...).
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Self::Session { params } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("the start-up packet's length {0} is out of range (8 to {MAX_STARTUP})")]
    Length(u32),
    #[error("the start-up packet is {got} bytes long, not the {want} its code needs")]
    WrongSize { want: usize, got: usize },
    #[error("unsupported frontend protocol {major}.{minor}: this proxy speaks 3.x")]
    Protocol { major: u16, minor: u16 },
    #[error("a start-up parameter is not NUL-terminated")]
    Unterminated,
    #[error("a start-up parameter is not UTF-8")]
    NotUtf8,
    #[error("the start-up parameter {0:?} has no value")]
    NoValue(String),
    #[error("the start-up parameter {0:?} is given twice")]
    Repeated(String),
    #[error("bytes after the start-up parameters' final NUL")]
    Trailing,
}

/// The length prefix of a start-up packet (its first four bytes), checked.
pub fn length(prefix: [u8; 4]) -> Result<usize, StartupError> {
    let len = u32::from_be_bytes(prefix);
    if !(8..=MAX_STARTUP as u32).contains(&len) {
        return Err(StartupError::Length(len));
    }
    Ok(len as usize)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses the packet's body: everything after the length prefix.
pub fn parse(body: &[u8]) -> Result<Startup, StartupError> {
    let exact = |want: usize| {
        if body.len() == want {
            Ok(())
        } else {
            Err(StartupError::WrongSize {
                want: want + 4,
                got: body.len() + 4,
            })
        }
    };
    let code = be32(body, 0).ok_or(StartupError::WrongSize {
        want: 8,
        got: body.len() + 4,
    })?;
    match code {
        SSL_REQUEST => exact(4).map(|()| Startup::Ssl),
        GSSENC_REQUEST => exact(4).map(|()| Startup::GssEnc),
        CANCEL_REQUEST => {
            exact(12)?;
            // Both present: the length was checked just above.
            let pid = be32(body, 4).unwrap_or_default() as i32;
            let key = be32(body, 8).unwrap_or_default() as i32;
            Ok(Startup::Cancel { pid, key })
        }
        v if v >> 16 == PROTOCOL_3 => parse_params(&body[4..]),
        v => Err(StartupError::Protocol {
            major: (v >> 16) as u16,
            minor: (v & 0xffff) as u16,
        }),
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Startup, StartupError> {
    let mut params: Vec<(String, String)> = Vec::new();
    let cstr = |rest: &mut &[u8]| -> Result<String, StartupError> {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(StartupError::Unterminated)?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| StartupError::NotUtf8)?;
        *rest = &rest[end + 1..];
        Ok(s.to_owned())
    };
    loop {
        let name = cstr(&mut rest)?;
        if name.is_empty() {
            break;
        }
        if rest.is_empty() {
            return Err(StartupError::NoValue(name));
        }
        let value = cstr(&mut rest)?;
        if params.iter().any(|(k, _)| *k == name) {
            return Err(StartupError::Repeated(name));
        }
        params.push((name, value));
    }
    if !rest.is_empty() {
        return Err(StartupError::Trailing);
    }
    Ok(Startup::Session { params })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in pairs {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn a_session_keeps_its_parameters_in_order() {
        let sent = [
            ("user", "app"),
            ("database", "shop"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
        ];
        let s = parse(&session(&sent)).unwrap();
        // As sent, in the order sent (the proxy passes them on so).
        let Startup::Session { params } = &s else {
            panic!("not a session: {s:?}");
        };
        let got: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, sent);
        let reversed: Vec<_> = sent.iter().rev().cloned().collect();
        let Startup::Session { params } = parse(&session(&reversed)).unwrap() else {
            panic!("not a session");
        };
        assert_eq!(params[0].0, "client_encoding");
        assert_eq!(s.param("database"), Some("shop"));
        assert_eq!(s.param("user"), Some("app"));
        assert_eq!(s.param("options"), None);
        assert_eq!(parse(&80_877_103u32.to_be_bytes()).unwrap(), Startup::Ssl);
        let mut cancel = 80_877_102u32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(parse(&cancel).unwrap(), Startup::Cancel { pid: 7, key: -9 });
    }

    #[test]
    fn malformed_packets_get_a_reason() {
        assert_eq!(length([0, 0, 0, 4]), Err(StartupError::Length(4)));
        assert_eq!(length([0, 1, 0, 0]), Err(StartupError::Length(65536)));
        assert!(matches!(parse(&[]), Err(StartupError::WrongSize { .. })));
        assert!(matches!(
            parse(&80_877_102u32.to_be_bytes()),
            Err(StartupError::WrongSize { want: 16, .. })
        ));
        assert_eq!(
            parse(&131_072u32.to_be_bytes()),
            Err(StartupError::Protocol { major: 2, minor: 0 })
        );
        let mut b = session(&[("user", "a")]);
        b.pop();
        assert_eq!(parse(&b), Err(StartupError::Unterminated));
        let mut b = 196_608u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0");
        assert_eq!(parse(&b), Err(StartupError::NoValue("user".into())));
        let b = session(&[("user", "a"), ("user", "b")]);
        assert_eq!(parse(&b), Err(StartupError::Repeated("user".into())));
        let mut b = session(&[("user", "a")]);
        b.push(1);
        assert_eq!(parse(&b), Err(StartupError::Trailing));
        let mut b = 196_608u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"\xff\0x\0\0");
        assert_eq!(parse(&b), Err(StartupError::NotUtf8));
    }
}
