//! The MariaDB/MySQL proxy. The client gets the database's own greeting
//! (minus TLS and compression) and logs in without a password; the proxy
//! logs the connection's fresh user in upstream (mysql_native_password,
//! TLS when the connection has a CA), answers the client with the
//! database's OK, then relays every byte. Refusals are ERR packets (1045).

pub mod handshake;
pub mod packet;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpStream;

use super::conn::Conn;
use super::relay::Io;
use super::session::{self, Session};
use super::Ctx;
use super::{Admitted, Refused};
use handshake::ClientHello;

/// A client has this long to answer the greeting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ER_ACCESS_DENIED_ERROR, and ER_UNKNOWN_ERROR for every other refusal:
/// codes from 2000 up are the client library's own, and libmariadb takes
/// one from a server for a malformed packet (ERROR 2027) instead of
/// printing the proxy's reason.
const ACCESS_DENIED: u16 = 1045;
const CANNOT_CONNECT: u16 = 1105;

/// Greets the client standalone, reads its answer, then refuses it with
/// `code` and `message` (so the client prints a proper error).
async fn refuse(client: &mut impl Io, code: u16, message: &str) {
    let nonce: [u8; 20] = rand::random();
    if packet::write(client, 0, &handshake::client_greeting(None, &nonce))
        .await
        .is_err()
    {
        return;
    }
    // A second to answer the greeting: enough for any client, and all a
    // caller about to be refused may hold the agent for.
    let seq = match tokio::time::timeout(Duration::from_secs(1), packet::read(client)).await {
        Ok(Ok((seq, _))) => seq.wrapping_add(1),
        _ => 2,
    };
    let state = if code == ACCESS_DENIED {
        "28000"
    } else {
        "08S01"
    };
    let _ = packet::write(client, seq, &packet::err(code, state, message)).await;
}

/// Serves one local connection of a caller `admitted` (or refused, why).
pub async fn serve(ctx: Arc<Ctx>, mut client: Conn, admitted: Result<Admitted, Refused>) {
    let name = ctx.config.name.clone();
    let who = match admitted {
        Ok(w) => w,
        Err(why) => {
            println!("proxy {name}: refused: {why}");
            return refuse(&mut client, ACCESS_DENIED, &why.to_string()).await;
        }
    };
    let session = match session::open(&ctx, who.who.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let code = match e {
                super::lease::IssueError::Refused { status: 403, .. } => ACCESS_DENIED,
                _ => CANNOT_CONNECT,
            };
            let why = format!("zeroth proxy {name}: no database user for this connection: {e}");
            println!("proxy {name}: {why}");
            return refuse(&mut client, code, &why).await;
        }
    };
    let addr = ctx
        .config
        .upstream_addr(&session.creds.host, session.creds.port);
    match login(&mut client, &session, &who, &name, &addr).await {
        Ok(server) => session::run(&ctx, session, client, server).await,
        Err(Failed { to_client, log }) => {
            println!("proxy {name}: the session did not start: {log}");
            if let Some((seq, payload)) = to_client {
                let _ = packet::write(&mut client, seq, &payload).await;
            }
            session::abandon(&ctx, session).await;
        }
    }
}

/// Why a login failed: what to tell the client (if it can still be told),
/// and what to log.
struct Failed {
    to_client: Option<(u8, Vec<u8>)>,
    log: String,
}

impl Failed {
    fn proxy(seq: u8, code: u16, message: String) -> Self {
        Self {
            to_client: Some((seq, packet::err(code, "08S01", &message))),
            log: message,
        }
    }

    fn silent(log: impl Into<String>) -> Self {
        Self {
            to_client: None,
            log: log.into(),
        }
    }
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Both handshakes; the authenticated upstream connection.
async fn login(
    client: &mut Conn,
    session: &Session,
    who: &Admitted,
    proxy: &str,
    addr: &str,
) -> Result<Conn, Failed> {
    let creds = &session.creds;
    // Before the client is greeted, failures are told with a standalone
    // greeting: the client then prints the reason.
    let early = |message: String| Failed {
        to_client: None,
        log: message,
    };
    let mut tcp = match connect(addr).await {
        Ok(t) => t,
        Err(e) => {
            let e = format!("zeroth proxy {proxy}: cannot reach the database at {addr}: {e}");
            refuse(client, CANNOT_CONNECT, &e).await;
            return Err(early(e));
        }
    };
    let greeting = match tokio::time::timeout(CONNECT_TIMEOUT, packet::read(&mut tcp))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)))
    {
        Ok((_, p)) if p.first() == Some(&packet::ERR) => {
            let e = format!(
                "zeroth proxy {proxy}: the database refused: {}",
                packet::err_text(&p)
            );
            refuse(client, CANNOT_CONNECT, &e).await;
            return Err(early(e));
        }
        Ok((_, p)) => handshake::parse_greeting(&p)
            .map_err(|e| format!("zeroth proxy {proxy}: the database's greeting: {e}")),
        Err(e) => Err(format!(
            "zeroth proxy {proxy}: reading the database's greeting: {e}"
        )),
    };
    let upstream = match greeting {
        Ok(g) => g,
        Err(e) => {
            refuse(client, CANNOT_CONNECT, &e).await;
            return Err(early(e));
        }
    };
    let nonce: [u8; 20] = rand::random();
    packet::write(
        client,
        0,
        &handshake::client_greeting(Some(&upstream), &nonce),
    )
    .await
    .map_err(|e| Failed::silent(format!("greeting the client: {e}")))?;
    let hello: ClientHello = match tokio::time::timeout(HELLO_TIMEOUT, packet::read(client)).await {
        Ok(Ok((_, p))) => handshake::parse_client_response(&p)
            .map_err(|e| Failed::proxy(2, 1043, format!("zeroth proxy {proxy}: {e}")))?,
        Ok(Err(e)) => return Err(Failed::silent(format!("reading the client's answer: {e}"))),
        Err(_) => return Err(Failed::silent("the client did not answer the greeting")),
    };
    // The program that answered must still be the one admitted.
    who.still_same()
        .map_err(|e| Failed::proxy(2, ACCESS_DENIED, format!("zeroth proxy {proxy}: {e}")))?;
    let tls = creds.tls_ca.is_some();
    let caps = handshake::session_capabilities(&hello, &upstream, tls);
    let mut seq = 1u8;
    let mut server = match &creds.tls_ca {
        None => Conn::Tcp(tcp),
        Some(ca) => {
            if !upstream
                .capabilities()
                .contains(mysql_common::constants::CapabilityFlags::CLIENT_SSL)
            {
                return Err(Failed::proxy(2, CANNOT_CONNECT, format!("zeroth proxy {proxy}: TLS to the database at {addr}: the database does not offer TLS")));
            }
            packet::write(
                &mut tcp,
                seq,
                &handshake::ssl_request(caps, &hello, &upstream),
            )
            .await
            .map_err(|e| Failed::proxy(2, CANNOT_CONNECT, format!("zeroth proxy {proxy}: {e}")))?;
            seq += 1;
            let stream = super::tls::connect(ca.as_bytes(), &creds.host, tcp)
                .await
                .map_err(|e| {
                    Failed::proxy(
                        2,
                        CANNOT_CONNECT,
                        format!("zeroth proxy {proxy}: TLS to the database at {addr}: {e}"),
                    )
                })?;
            Conn::Tls(Box::new(stream))
        }
    };
    let password = creds.password.expose_secret().as_bytes();
    let response = handshake::upstream_response(caps, &hello, &upstream, &creds.username, password);
    let lost = |e: std::io::Error| {
        Failed::proxy(
            2,
            CANNOT_CONNECT,
            format!("zeroth proxy {proxy}: the database: {e}"),
        )
    };
    packet::write(&mut server, seq, &response)
        .await
        .map_err(lost)?;
    for _ in 0..3 {
        let (up_seq, reply) = packet::read(&mut server).await.map_err(lost)?;
        match reply.first() {
            Some(&packet::OK) => {
                // The client's sequence: greeting 0, its answer 1, this 2.
                packet::write(client, 2, &reply)
                    .await
                    .map_err(|e| Failed::silent(e.to_string()))?;
                return Ok(server);
            }
            Some(&packet::ERR) => {
                return Err(Failed {
                    log: packet::err_text(&reply),
                    to_client: Some((2, reply)),
                })
            }
            Some(&packet::AUTH_SWITCH) => {
                let answer = handshake::auth_switch_answer(&reply, password).map_err(|e| {
                    Failed::proxy(2, ACCESS_DENIED, format!("zeroth proxy {proxy}: {e}"))
                })?;
                packet::write(&mut server, up_seq.wrapping_add(1), &answer)
                    .await
                    .map_err(lost)?;
            }
            _ => break,
        }
    }
    Err(Failed::proxy(
        2,
        CANNOT_CONNECT,
        format!("zeroth proxy {proxy}: the database's authentication did not end"),
    ))
}
