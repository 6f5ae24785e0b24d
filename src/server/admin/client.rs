//! The operator's side of the admin socket: one request, one answer (and
//! for a backup, the snapshot's bytes after it).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::AdminRequest;

/// Why an operator's request did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Unreachable(String),
    #[error("the admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer: {0}")]
    Malformed(serde_json::Error),
    /// The server's refusal, in its words.
    #[error("{0}")]
    Refused(String),
    #[error("the answer does not say the backup's size")]
    NoSize,
    #[error("the server sent {got} of the backup's {bytes} bytes")]
    Short { got: u64, bytes: u64 },
}

/// Why the admin socket cannot be reached, and what to check.
fn unreachable(socket: &Path, e: &std::io::Error) -> ClientError {
    use std::io::ErrorKind;
    let at = socket.display();
    ClientError::Unreachable(match e.kind() {
        ErrorKind::NotFound => format!(
            "no admin socket at {at}: the zeroth server is not running, or its socket is elsewhere (check `systemctl status zeroth-server`; the socket is server.toml's admin_socket, /run/zeroth/admin.sock in the packaged example, else <state_dir>/admin.sock; pass --socket PATH)"
        ),
        ErrorKind::ConnectionRefused => format!(
            "nothing listens on the admin socket {at}: the zeroth server that made it is no longer running (check `systemctl status zeroth-server`)"
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied on the admin socket {at}: run as root or as a member of the server's admin_group"
        ),
        _ => format!("cannot connect to the admin socket {at}: {e}"),
    })
}

/// Takes a backup through the admin socket into `out`: the answer, and
/// the snapshot's bytes after it (exactly as many as it says).
pub fn fetch_backup(socket: &Path, out: &mut impl Write) -> Result<serde_json::Value, ClientError> {
    let mut conn = UnixStream::connect(socket).map_err(|e| unreachable(socket, &e))?;
    let req = AdminRequest {
        op: "store.backup".into(),
        ..Default::default()
    };
    let line = serde_json::to_string(&req).map_err(ClientError::Malformed)?;
    writeln!(conn, "{line}")?;
    let mut reader = BufReader::new(&conn);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let v: serde_json::Value = serde_json::from_str(&answer).map_err(ClientError::Malformed)?;
    if v["ok"] != true {
        return Err(refused(&v));
    }
    let bytes = v["bytes"].as_u64().ok_or(ClientError::NoSize)?;
    let got = std::io::copy(&mut reader.take(bytes), out)?;
    if got != bytes {
        return Err(ClientError::Short { got, bytes });
    }
    Ok(v)
}

/// Sends one request to the admin socket and returns the answer.
pub fn call(socket: &Path, req: &AdminRequest) -> Result<serde_json::Value, ClientError> {
    let mut conn = UnixStream::connect(socket).map_err(|e| unreachable(socket, &e))?;
    let line = serde_json::to_string(req).map_err(ClientError::Malformed)?;
    writeln!(conn, "{line}")?;
    let mut answer = String::new();
    BufReader::new(&conn).read_line(&mut answer)?;
    let v: serde_json::Value = serde_json::from_str(&answer).map_err(ClientError::Malformed)?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err(refused(&v))
    }
}

fn refused(answer: &serde_json::Value) -> ClientError {
    ClientError::Refused(
        answer["error"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned(),
    )
}
