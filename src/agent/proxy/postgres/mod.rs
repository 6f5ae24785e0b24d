//! The PostgreSQL proxy. Locally it plays the server up to the end of
//! authentication: TLS and GSS encryption are declined (the socket is
//! local), the client's start-up parameters are kept but its user name is
//! not, and no password is asked. Upstream it logs in as the connection's
//! fresh user; from the database's AuthenticationOk on, every byte is
//! relayed. A CancelRequest (psql's Ctrl-C) on a new local connection is
//! passed to the backend it names.

pub mod frame;
pub mod startup;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::Conn;
use super::lease::IssueError;
use super::relay::Io;
use super::{session, Admitted, Ctx, Refused};
use frame::{fatal, read_frame, AUTHENTICATION_OK};
use startup::Startup;
use upstream::UpstreamError;

/// A client has this long to send its start-up packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller about to be refused has to send its start-up.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages between authentication and ReadyForQuery are small.
const MAX_READY_MESSAGE: usize = 1024 * 1024;

/// SQLSTATEs of the proxy's own refusals.
const INVALID_AUTHORIZATION: &str = "28000";
const CANNOT_CONNECT: &str = "08001";
const PROTOCOL_VIOLATION: &str = "08P01";
/// Start-up parameters passed on to the database (what psql, libpq,
/// psycopg, asyncpg and JDBC send).
const PASSED_PARAMETERS: [&str; 11] = [
    "user",
    "database",
    "application_name",
    "fallback_application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
    "standard_conforming_strings",
];

/// Live sessions' cancel keys: (backend pid, secret key) → database
/// address, so a cancel on a new connection reaches the right backend.
#[derive(Default)]
pub struct CancelKeys(Mutex<HashMap<(i32, i32), String>>);

impl CancelKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i32), String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a client's start-up could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StartupReadError {
    #[error("reading the start-up packet: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Malformed(#[from] startup::StartupError),
    #[error("encryption was asked for again and again")]
    Repeated,
}

/// Reads start-up packets until a session or a cancel (declining TLS and
/// GSS encryption on the way).
async fn read_startup(client: &mut impl Io) -> Result<Startup, StartupReadError> {
    for _ in 0..3 {
        let mut prefix = [0u8; 4];
        client.read_exact(&mut prefix).await?;
        let len = startup::length(prefix)?;
        let mut body = vec![0u8; len - 4];
        client.read_exact(&mut body).await?;
        match startup::parse(&body)? {
            Startup::Ssl | Startup::GssEnc => client.write_all(b"N").await?,
            other => return Ok(other),
        }
    }
    Err(StartupReadError::Repeated)
}

async fn refuse(client: &mut impl Io, code: &str, message: &str) {
    let _ = client.write_all(&fatal(code, message)).await;
    let _ = client.shutdown().await;
}

/// Serves one local connection of a caller `admitted` (or refused, why).
pub async fn serve(ctx: Arc<Ctx>, mut client: Conn, admitted: Result<Admitted, Refused>) {
    let name = ctx.config.name.clone();
    // A caller the proxy does not admit has a second to send its start-up
    // (to be told why, in its protocol).
    let wait = match admitted {
        Ok(_) => STARTUP_TIMEOUT,
        Err(_) => REFUSAL_TIMEOUT,
    };
    let startup = match tokio::time::timeout(wait, read_startup(&mut client)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            println!("proxy {name}: a malformed start-up was refused: {e}");
            return refuse(
                &mut client,
                PROTOCOL_VIOLATION,
                &format!("zeroth proxy {name}: {e}"),
            )
            .await;
        }
        Err(_) => return,
    };
    let params = match startup {
        Startup::Cancel { pid, key } => {
            if admitted.is_ok() {
                forward_cancel(&ctx, pid, key).await;
            }
            return;
        }
        Startup::Session { params } => params,
        Startup::Ssl | Startup::GssEnc => return,
    };
    let who = match admitted {
        Ok(w) => w,
        Err(why) => {
            println!("proxy {name}: refused: {why}");
            return refuse(&mut client, INVALID_AUTHORIZATION, &why.to_string()).await;
        }
    };
    if params.iter().any(|(k, _)| k == "replication") {
        let why = format!("zeroth proxy {name}: replication connections are not proxied");
        return refuse(&mut client, INVALID_AUTHORIZATION, &why).await;
    }
    // Every other start-up parameter sets a server setting for the
    // session: only those of stock drivers pass (not `options`, which can
    // set any).
    if let Some((k, _)) = params
        .iter()
        .find(|(k, _)| !PASSED_PARAMETERS.contains(&k.as_str()))
    {
        let why = format!(
            "zeroth proxy {name}: the start-up parameter {k:?} is not passed on (passed: {})",
            PASSED_PARAMETERS.join(", ")
        );
        println!("proxy {name}: {why}");
        return refuse(&mut client, INVALID_AUTHORIZATION, &why).await;
    }
    if let Err(e) = who.still_same() {
        let why = format!("zeroth proxy {name}: {e}");
        println!("proxy {name}: refused: {why}");
        return refuse(&mut client, INVALID_AUTHORIZATION, &why).await;
    }
    let session = match session::open(&ctx, who.who).await {
        Ok(s) => s,
        Err(e) => {
            let code = match e {
                IssueError::Refused { status: 403, .. } => INVALID_AUTHORIZATION,
                _ => CANNOT_CONNECT,
            };
            let why = format!("zeroth proxy {name}: no database user for this connection: {e}");
            println!("proxy {name}: {why}");
            return refuse(&mut client, code, &why).await;
        }
    };
    // The user is made for the role's database, and only that one is
    // reached.
    let asked = params.iter().find(|(k, _)| k == "database").map(|(_, v)| v);
    if let Some(db) = asked.filter(|db| **db != session.creds.database) {
        let why = format!(
            "zeroth proxy {name}: this proxy reaches database {:?}, not {db:?}",
            session.creds.database
        );
        println!("proxy {name}: {why}");
        let _ = client.write_all(&fatal(INVALID_AUTHORIZATION, &why)).await;
        session::abandon(&ctx, session).await;
        return;
    }
    let addr = ctx
        .config
        .upstream_addr(&session.creds.host, session.creds.port);
    let mut server = match connect(&session.creds, &addr, &params).await {
        Ok(s) => s,
        Err(e) => {
            match &e {
                UpstreamError::Refused { frame, .. } => {
                    let _ = client.write_all(&frame.bytes).await;
                }
                other => {
                    let why = format!("zeroth proxy {name}: {other}");
                    let _ = client.write_all(&fatal(CANNOT_CONNECT, &why)).await;
                }
            }
            println!("proxy {name}: {e}");
            session::abandon(&ctx, session).await;
            return;
        }
    };
    // The database's greeting up to ReadyForQuery, passed on whole.
    let key = match greet(&mut client, &mut server).await {
        Ok(key) => key,
        Err(e) => {
            println!("proxy {name}: the session did not start: {e}");
            session::abandon(&ctx, session).await;
            return;
        }
    };
    if let Some(k) = key {
        ctx.cancels.lock().insert(k, addr);
    }
    session::run(&ctx, session, client, server).await;
    if let Some(k) = key {
        ctx.cancels.lock().remove(&k);
    }
}

async fn connect(
    creds: &crate::wire::db::CredsResponse,
    addr: &str,
    params: &[(String, String)],
) -> Result<Conn, UpstreamError> {
    let mut server = upstream::connect(creds, addr).await?;
    upstream::authenticate(&mut server, creds, params).await?;
    Ok(server)
}

/// Sends AuthenticationOk, then the database's messages up to and with
/// ReadyForQuery; the backend's cancel key if it sent one.
async fn greet(
    client: &mut impl Io,
    server: &mut Conn,
) -> Result<Option<(i32, i32)>, UpstreamError> {
    let io = |e: std::io::Error| UpstreamError::Protocol(format!("an I/O error: {e}"));
    client.write_all(&AUTHENTICATION_OK).await.map_err(io)?;
    let mut key = None;
    loop {
        let f = read_frame(server, MAX_READY_MESSAGE).await.map_err(io)?;
        client.write_all(&f.bytes).await.map_err(io)?;
        match f.tag {
            b'K' if f.bytes.len() == 13 => {
                let word = |at: usize| {
                    i32::from_be_bytes([
                        f.bytes[at],
                        f.bytes[at + 1],
                        f.bytes[at + 2],
                        f.bytes[at + 3],
                    ])
                };
                key = Some((word(5), word(9)));
            }
            b'Z' => return Ok(key),
            b'E' => {
                let message = upstream::error_text(&f);
                return Err(UpstreamError::Refused { frame: f, message });
            }
            _ => {}
        }
    }
}

/// Passes a cancel to the database whose backend holds this key.
async fn forward_cancel(ctx: &Ctx, pid: i32, key: i32) {
    let Some(addr) = ctx.cancels.lock().get(&(pid, key)).cloned() else {
        return;
    };
    let mut buf = bytes::BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, key, &mut buf);
    if let Ok(Ok(mut tcp)) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        let _ = tcp.write_all(&buf).await;
        let _ = tcp.shutdown().await;
        println!("proxy {}: cancel passed to backend {pid}", ctx.config.name);
    }
}
