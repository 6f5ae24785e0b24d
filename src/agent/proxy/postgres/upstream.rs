//! The proxy's side towards PostgreSQL: connect (TLS verify-full when the
//! connection has a CA), send the session's start-up with the fresh user,
//! and authenticate it with SCRAM-SHA-256 (md5 or a plain password only if
//! the server asks for them). Messages and SCRAM come from
//! `postgres-protocol`.

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend::Message, frontend};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{read_frame, Frame};
use crate::agent::proxy::conn::Conn;
use crate::wire::db::CredsResponse;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages before the session is ready are small.
pub const MAX_AUTH_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the database at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS to the database at {addr}: {reason}")]
    Tls { addr: String, reason: String },
    /// The database's own ErrorResponse, passed on to the client as is.
    #[error("the database refused: {message}")]
    Refused { frame: Frame, message: String },
    #[error("the database's authentication failed: {0}")]
    Auth(String),
    #[error("the database sent {0}")]
    Protocol(String),
}

/// The text of an ErrorResponse ("SEVERITY: message").
pub fn error_text(frame: &Frame) -> String {
    let mut buf = BytesMut::from(frame.bytes.as_slice());
    match Message::parse(&mut buf) {
        Ok(Some(Message::ErrorResponse(body))) => {
            let mut fields = body.fields();
            let (mut severity, mut message) = (String::new(), String::new());
            while let Ok(Some(f)) = fields.next() {
                match f.type_() {
                    b'S' => severity = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                    b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                    _ => {}
                }
            }
            format!("{severity}: {message}")
        }
        _ => "an unreadable error".into(),
    }
}

async fn connect_tcp(addr: &str) -> Result<TcpStream, UpstreamError> {
    let failed = |reason: String| UpstreamError::Connect {
        addr: addr.to_owned(),
        reason,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Connects to the database `creds` name at `addr`, with TLS (verify-full,
/// against the name in `creds`) when they carry a CA.
pub async fn connect(creds: &CredsResponse, addr: &str) -> Result<Conn, UpstreamError> {
    let mut tcp = connect_tcp(addr).await?;
    let Some(ca) = &creds.tls_ca else {
        return Ok(Conn::Tcp(tcp));
    };
    let tls_err = |reason: String| UpstreamError::Tls {
        addr: addr.to_owned(),
        reason,
    };
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    if answer[0] != b'S' {
        return Err(tls_err("the database does not offer TLS".into()));
    }
    let stream = super::super::tls::connect(ca.as_bytes(), &creds.host, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(Conn::Tls(Box::new(stream)))
}

/// Sends the start-up for `user` with the client's other parameters, then
/// authenticates; returns once the database said AuthenticationOk.
pub async fn authenticate(
    up: &mut Conn,
    creds: &CredsResponse,
    params: &[(String, String)],
) -> Result<(), UpstreamError> {
    let io = |e: std::io::Error| UpstreamError::Protocol(format!("an I/O error: {e}"));
    let mut buf = BytesMut::new();
    let mut startup: Vec<(&str, &str)> = vec![("user", creds.username.as_str())];
    startup.extend(
        params
            .iter()
            .filter(|(k, _)| k != "user")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if !params.iter().any(|(k, _)| k == "database") {
        startup.push(("database", creds.database.as_str()));
    }
    frontend::startup_message(startup, &mut buf).map_err(io)?;
    up.write_all(&buf).await.map_err(io)?;
    let password = creds.password.expose_secret().as_bytes();
    let mut scram: Option<ScramSha256> = None;
    // The database proved it knows the password (SCRAM's server
    // signature), or was sent it over TLS verified against its CA: only
    // then is its AuthenticationOk believed. An impostor on the path that
    // answers Ok at once would otherwise get the session.
    let mut proved = false;
    let tls = matches!(up, Conn::Tls(_));
    let in_clear = |how: &str| {
        UpstreamError::Auth(format!(
            "the database asks for the password {how} on a connection without TLS; zeroth sends it only by SCRAM-SHA-256, or over TLS verified against the connection's CA"
        ))
    };
    loop {
        let frame = read_frame(up, MAX_AUTH_MESSAGE).await.map_err(io)?;
        if frame.tag == b'E' {
            let message = error_text(&frame);
            return Err(UpstreamError::Refused { frame, message });
        }
        let mut bytes = BytesMut::from(frame.bytes.as_slice());
        let message = Message::parse(&mut bytes)
            .map_err(|e| UpstreamError::Protocol(format!("a malformed message: {e}")))?;
        let mut out = BytesMut::new();
        match message {
            Some(Message::AuthenticationOk) if proved => return Ok(()),
            Some(Message::AuthenticationOk) => {
                return Err(UpstreamError::Auth(
                    "the database said AuthenticationOk without proving it knows the user's password (no SCRAM server signature): not the database zeroth made the user on".into(),
                ))
            }
            Some(Message::AuthenticationSasl(body)) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = false;
                while let Some(m) = mechanisms.next().map_err(io)? {
                    offered |= m == SCRAM_SHA_256;
                }
                if !offered {
                    return Err(UpstreamError::Auth(
                        "the database offers no SCRAM-SHA-256".into(),
                    ));
                }
                let s = ScramSha256::new(password, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)
                    .map_err(io)?;
                scram = Some(s);
            }
            Some(Message::AuthenticationSaslContinue(body)) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL continue before SASL".into()))?;
                s.update(body.data())
                    .map_err(|e| UpstreamError::Auth(e.to_string()))?;
                frontend::sasl_response(s.message(), &mut out).map_err(io)?;
            }
            Some(Message::AuthenticationSaslFinal(body)) => {
                let s = scram
                    .as_mut()
                    .ok_or_else(|| UpstreamError::Protocol("SASL final before SASL".into()))?;
                // Proves the database knew the password: not an impostor.
                s.finish(body.data())
                    .map_err(|e| UpstreamError::Auth(format!("the server's SCRAM proof: {e}")))?;
                proved = true;
                continue;
            }
            Some(Message::AuthenticationMd5Password(_)) if !tls => return Err(in_clear("as MD5")),
            Some(Message::AuthenticationCleartextPassword) if !tls => {
                return Err(in_clear("in clear"))
            }
            Some(Message::AuthenticationMd5Password(body)) => {
                proved = true;
                let hash = postgres_protocol::authentication::md5_hash(
                    creds.username.as_bytes(),
                    password,
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io)?;
            }
            Some(Message::AuthenticationCleartextPassword) => {
                proved = true;
                frontend::password_message(password, &mut out).map_err(io)?;
            }
            _ => {
                return Err(UpstreamError::Protocol(format!(
                    "an unexpected message '{}' during authentication",
                    char::from(frame.tag)
                )))
            }
        }
        up.write_all(&out).await.map_err(io)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> CredsResponse {
        CredsResponse {
            lease_id: "l".into(),
            username: "zt_app_ro_x".into(),
            password: "a password".to_owned().into(),
            expires: 0,
            engine: "postgres".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            database: "postgres".into(),
            tls_ca: None,
        }
    }

    /// What `authenticate` makes of a server that answers its start-up
    /// with `reply` (an authentication request).
    async fn against(reply: Vec<u8>) -> Result<(), UpstreamError> {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            let mut len = [0u8; 4];
            theirs.read_exact(&mut len).await.unwrap();
            let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            theirs.read_exact(&mut startup).await.unwrap();
            theirs.write_all(&reply).await.unwrap();
            // Whatever the client sends next (a password, say), kept.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_millis(200), theirs.read_to_end(&mut rest))
                .await;
            rest
        });
        let mut up = Conn::Unix(ours);
        let result = authenticate(&mut up, &creds(), &[]).await;
        drop(up);
        let sent = server.await.unwrap();
        assert!(
            !sent.windows(10).any(|w| w == b"a password"),
            "the password went out in clear"
        );
        result
    }

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&(8 + extra.len() as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    #[tokio::test]
    async fn an_authentication_ok_without_a_scram_proof_is_an_impostor() {
        let err = against(auth(0, &[])).await.unwrap_err().to_string();
        assert!(err.contains("without proving it knows"), "{err}");
    }

    #[tokio::test]
    async fn no_password_goes_out_in_clear_or_as_md5_without_tls() {
        let err = against(auth(3, &[])).await.unwrap_err().to_string();
        assert!(
            err.contains("in clear on a connection without TLS"),
            "{err}"
        );
        let err = against(auth(5, &[1, 2, 3, 4]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("as MD5 on a connection without TLS"), "{err}");
    }
}
