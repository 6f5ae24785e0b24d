//! A private ssh-agent (draft-miller-ssh-agent) holding one certificate and
//! its key in memory only: the system `ssh` asks it for identities and
//! signatures over a Unix socket in a 0700 directory, and nothing of the
//! key or the certificate ever reaches the disk.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use signature::Signer;
use ssh_key::{Certificate, PrivateKey};

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Longest message the agent reads (ssh's are a few kilobytes).
const MAX_MESSAGE: usize = 256 * 1024;

struct Identity {
    key: PrivateKey,
    cert_blob: Vec<u8>,
}

fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

fn take_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let s = buf.get(4..4 + len)?;
    *buf = &buf[4 + len..];
    Some(s)
}

impl Identity {
    fn answer(&self, request: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match request.split_first() {
            Some((&REQUEST_IDENTITIES, _)) => {
                out.push(IDENTITIES_ANSWER);
                out.extend_from_slice(&1u32.to_be_bytes());
                put_string(&mut out, &self.cert_blob);
                put_string(&mut out, b"zeroth");
            }
            Some((&SIGN_REQUEST, mut body)) => {
                let signed = take_string(&mut body)
                    .filter(|blob| *blob == self.cert_blob.as_slice())
                    .and_then(|_| take_string(&mut body))
                    .and_then(|data| self.key.try_sign(data).ok());
                match signed {
                    Some(sig) => {
                        let mut encoded = Vec::new();
                        put_string(&mut encoded, sig.algorithm().as_str().as_bytes());
                        put_string(&mut encoded, sig.as_bytes());
                        out.push(SIGN_RESPONSE);
                        put_string(&mut out, &encoded);
                    }
                    None => out.push(FAILURE),
                }
            }
            // Extensions (session-bind…), adding or removing keys: refused.
            _ => out.push(FAILURE),
        }
        out
    }

    fn serve(&self, mut conn: UnixStream) {
        loop {
            let mut len = [0u8; 4];
            if conn.read_exact(&mut len).is_err() {
                return;
            }
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 || len > MAX_MESSAGE {
                return;
            }
            let mut request = vec![0u8; len];
            if conn.read_exact(&mut request).is_err() {
                return;
            }
            let answer = self.answer(&request);
            let mut framed = (answer.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&answer);
            if conn.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// The running agent; its socket and directory go when it is dropped.
pub struct SshAgent {
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl SshAgent {
    /// Serves `key` with `certificate` on a new socket.
    pub fn start(key: PrivateKey, certificate: &Certificate) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("zeroth-ssh-").tempdir()?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket)?;
        let identity = Arc::new(Identity {
            key,
            cert_blob: certificate
                .to_bytes()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        });
        std::thread::Builder::new()
            .name("ssh-agent".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let id = identity.clone();
                    std::thread::spawn(move || id.serve(conn));
                }
            })?;
        Ok(Self { dir, socket })
    }

    /// For `ssh -o IdentityAgent=…` or `SSH_AUTH_SOCK`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
