//! The handshakes on both sides, with `mysql_common`'s packets: the client
//! is offered the database's own greeting (same version and capabilities,
//! minus TLS and compression, which a local socket does not need) with a
//! nonce of our own; its answer is read for the database, the
//! capabilities and the connection attributes, and its password (if any)
//! ignored; upstream the fresh user logs in with mysql_native_password.

use std::collections::HashMap;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest,
};
use mysql_common::proto::MySerialize;

/// What the local side never offers.
fn local_only_off() -> CapabilityFlags {
    CapabilityFlags::CLIENT_SSL
        | CapabilityFlags::CLIENT_COMPRESS
        | CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM
        | CapabilityFlags::CLIENT_SSL_VERIFY_SERVER_CERT
}

/// The capabilities of the greeting the proxy sends when it has no
/// database greeting to copy (a refusal follows).
fn standalone_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("the database's greeting does not parse: {0}")]
    Greeting(String),
    #[error("the client's handshake response does not parse: {0}")]
    Response(String),
    #[error("the client asked for TLS, which this local socket does not offer")]
    ClientTls,
    #[error("the database asks for the {0} authentication plugin; the proxy speaks mysql_native_password")]
    Plugin(String),
}

/// Parses the database's greeting.
pub fn parse_greeting(payload: &[u8]) -> Result<HandshakePacket<'static>, HandshakeError> {
    let mut buf = ParseBuf(payload);
    let p: HandshakePacket<'_> = buf
        .parse(())
        .map_err(|e| HandshakeError::Greeting(e.to_string()))?;
    if p.protocol_version() != 10 {
        return Err(HandshakeError::Greeting(format!(
            "protocol version {}, not 10",
            p.protocol_version()
        )));
    }
    Ok(p.into_owned())
}

/// The greeting for the client: the database's (or a standalone one),
/// with the proxy's `nonce` (20 bytes).
pub fn client_greeting(upstream: Option<&HandshakePacket<'_>>, nonce: &[u8; 20]) -> Vec<u8> {
    let mut second = nonce[8..].to_vec();
    second.push(0);
    let first: [u8; 8] = [
        nonce[0], nonce[1], nonce[2], nonce[3], nonce[4], nonce[5], nonce[6], nonce[7],
    ];
    let p = match upstream {
        Some(u) => HandshakePacket::new(
            10,
            u.server_version_ref().to_vec(),
            u.connection_id(),
            first,
            Some(second),
            (u.capabilities()
                | CapabilityFlags::CLIENT_PLUGIN_AUTH
                | CapabilityFlags::CLIENT_SECURE_CONNECTION)
                - local_only_off(),
            u.default_collation(),
            u.status_flags(),
            Some(&b"mysql_native_password"[..]),
        )
        .with_mariadb_ext_capabilities(u.mariadb_ext_capabilities()),
        None => HandshakePacket::new(
            10,
            &b"5.5.5-zeroth-proxy"[..],
            0,
            first,
            Some(second),
            standalone_capabilities(),
            45,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(&b"mysql_native_password"[..]),
        ),
    };
    let mut out = Vec::new();
    p.serialize(&mut out);
    out
}

/// What the proxy keeps of the client's handshake response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub database: Option<Vec<u8>>,
    pub attributes: Option<HashMap<String, String>>,
}

/// Reads the client's answer to the greeting. The user name and password
/// in it are ignored: the kernel said who connected.
pub fn parse_client_response(payload: &[u8]) -> Result<ClientHello, HandshakeError> {
    // An SSLRequest is the first 32 bytes of a response, with CLIENT_SSL.
    let caps = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| HandshakeError::Response("shorter than its capability flags".into()))?;
    if caps & CapabilityFlags::CLIENT_SSL.bits() != 0 {
        return Err(HandshakeError::ClientTls);
    }
    if caps & CapabilityFlags::CLIENT_PROTOCOL_41.bits() == 0 {
        return Err(HandshakeError::Response(
            "the client does not speak protocol 4.1".into(),
        ));
    }
    let mut buf = ParseBuf(payload);
    let r: HandshakeResponse<'_> = buf
        .parse(())
        .map_err(|e| HandshakeError::Response(e.to_string()))?;
    Ok(ClientHello {
        capabilities: r.capabilities(),
        mariadb_capabilities: r.mariadb_ext_capabilities(),
        collation: r.collation(),
        database: r.db_name().map(<[u8]>::to_vec),
        attributes: r.connect_attributes(),
    })
}

/// The capabilities the session runs with: what the client asked of what
/// the database offers (TLS added for the proxy's own upstream leg).
pub fn session_capabilities(
    client: &ClientHello,
    upstream: &HandshakePacket<'_>,
    tls: bool,
) -> CapabilityFlags {
    let mut caps = client.capabilities & upstream.capabilities();
    caps.insert(CapabilityFlags::CLIENT_PLUGIN_AUTH | CapabilityFlags::CLIENT_SECURE_CONNECTION);
    caps.set(CapabilityFlags::CLIENT_SSL, tls);
    caps
}

/// The MariaDB extended capabilities of the session.
fn session_mariadb_capabilities(
    client: &ClientHello,
    upstream: &HandshakePacket<'_>,
) -> MariadbCapabilities {
    client.mariadb_capabilities & upstream.mariadb_ext_capabilities()
}

/// The SSLRequest that starts TLS upstream. It carries the same
/// capabilities as the response after it: MariaDB settles the extended
/// ones from this first packet.
pub fn ssl_request(
    caps: CapabilityFlags,
    client: &ClientHello,
    upstream: &HandshakePacket<'_>,
) -> Vec<u8> {
    let mut out = Vec::new();
    SslRequest::new(caps, 16 * 1024 * 1024, client.collation)
        .with_mariadb_capabilities(session_mariadb_capabilities(client, upstream))
        .serialize(&mut out);
    out
}

/// The upstream handshake response logging `user` in with `password`.
pub fn upstream_response(
    caps: CapabilityFlags,
    client: &ClientHello,
    upstream: &HandshakePacket<'_>,
    user: &str,
    password: &[u8],
) -> Vec<u8> {
    let scramble = mysql_common::scramble::scramble_native(&upstream.nonce(), password)
        .map(|s| s.to_vec())
        .unwrap_or_default();
    let r = HandshakeResponse::new(
        Some(scramble),
        upstream.server_version_parsed().unwrap_or((5, 5, 5)),
        Some(user.as_bytes().to_vec()),
        client.database.clone(),
        Some(AuthPlugin::MysqlNativePassword),
        caps,
        client.attributes.clone(),
        16 * 1024 * 1024,
    )
    .with_mariadb_ext_capabilities(
        client.mariadb_capabilities & upstream.mariadb_ext_capabilities(),
    );
    let mut out = Vec::new();
    r.serialize(&mut out);
    // The client's character set, not the library's default (byte 8: after
    // the capability flags and the maximum packet size).
    if let Some(b) = out.get_mut(8) {
        *b = client.collation;
    }
    out
}

/// The answer to an AuthSwitchRequest for mysql_native_password.
pub fn auth_switch_answer(payload: &[u8], password: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = ParseBuf(payload);
    let switch: AuthSwitchRequest<'_> = buf
        .parse(())
        .map_err(|e| HandshakeError::Greeting(format!("an auth switch: {e}")))?;
    match switch.auth_plugin() {
        AuthPlugin::MysqlNativePassword => Ok(mysql_common::scramble::scramble_native(
            switch.plugin_data(),
            password,
        )
        .map(|s| s.to_vec())
        .unwrap_or_default()),
        other => Err(HandshakeError::Plugin(
            String::from_utf8_lossy(other.as_bytes()).into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_greeting_parses_back_with_our_nonce_and_without_tls() {
        let nonce = [7u8; 20];
        let g = client_greeting(None, &nonce);
        let p = parse_greeting(&g).unwrap();
        assert_eq!(p.nonce(), nonce.to_vec());
        assert!(!p.capabilities().contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(
            p.auth_plugin_name_ref(),
            Some(&b"mysql_native_password"[..])
        );
        // Copied from a database that offers TLS: still not offered.
        let tls = HandshakePacket::new(
            10,
            &b"5.5.5-10.11.6-MariaDB"[..],
            42,
            [1; 8],
            Some(vec![2u8; 13]),
            standalone_capabilities()
                | CapabilityFlags::CLIENT_SSL
                | CapabilityFlags::CLIENT_COMPRESS,
            45,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(&b"mysql_native_password"[..]),
        );
        let p = parse_greeting(&client_greeting(Some(&tls), &nonce)).unwrap();
        assert_eq!(p.connection_id(), 42);
        assert!(!p.capabilities().contains(CapabilityFlags::CLIENT_SSL));
        assert!(!p.capabilities().contains(CapabilityFlags::CLIENT_COMPRESS));
        assert_eq!(p.server_version_ref(), b"5.5.5-10.11.6-MariaDB");
    }

    #[test]
    fn the_clients_database_and_attributes_reach_the_database() {
        let up = parse_greeting(&client_greeting(None, &[3; 20])).unwrap();
        let attrs: HashMap<String, String> =
            [("program_name".to_owned(), "shop".to_owned())].into();
        let hello = HandshakeResponse::new(
            Some(vec![9u8; 20]),
            (10, 11, 6),
            Some(&b"whoever"[..]),
            Some(&b"shop"[..]),
            Some(AuthPlugin::MysqlNativePassword),
            standalone_capabilities(),
            Some(attrs.clone()),
            1 << 24,
        );
        let mut bytes = Vec::new();
        hello.serialize(&mut bytes);
        let client = parse_client_response(&bytes).unwrap();
        assert_eq!(client.database.as_deref(), Some(&b"shop"[..]));
        let caps = session_capabilities(&client, &up, false);
        let out = upstream_response(caps, &client, &up, "zt_x", b"secret");
        let back = parse_client_response(&out).unwrap();
        assert_eq!(back.database.as_deref(), Some(&b"shop"[..]));
        assert_eq!(back.attributes, Some(attrs));
        assert_eq!(back.collation, client.collation);
        let mut parsed = ParseBuf(&out);
        let r: HandshakeResponse<'_> = parsed.parse(()).unwrap();
        assert_eq!(r.user(), b"zt_x");
        assert_eq!(
            r.scramble_buf(),
            mysql_common::scramble::scramble_native(&[3; 20], b"secret").unwrap()
        );
    }

    #[test]
    fn malformed_client_responses_get_a_reason() {
        assert!(matches!(
            parse_client_response(&[]),
            Err(HandshakeError::Response(_))
        ));
        let ssl = (CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_PROTOCOL_41).bits();
        assert_eq!(
            parse_client_response(&ssl.to_le_bytes()),
            Err(HandshakeError::ClientTls)
        );
        let old = CapabilityFlags::CLIENT_LONG_PASSWORD.bits().to_le_bytes();
        assert!(matches!(
            parse_client_response(&old),
            Err(HandshakeError::Response(_))
        ));
        let short = CapabilityFlags::CLIENT_PROTOCOL_41.bits().to_le_bytes();
        assert!(matches!(
            parse_client_response(&short),
            Err(HandshakeError::Response(_))
        ));
    }
}
