//! The operators' Unix socket. Callers are authenticated by the kernel
//! (SO_PEERCRED): root, or a member of the configured admin group. No
//! bootstrap secret exists to steal.
//!
//! Protocol: one JSON request per connection (`{"op": …, "id"?, "params"?}`),
//! one JSON answer: `{"ok": true, …}` or `{"ok": false, "error": "…"}`.
//! The operations, by what they act on: [`nodes`] (nodes and enrolment
//! tokens), [`entry`] (registration entries), [`db`] (database
//! connections and leases), [`ssh`] (the SSH CAs), [`backup`]; the
//! operator's side is [`client`].

mod backup;
pub mod client;
mod db;
mod entry;
mod error;
mod nodes;
mod ssh;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use client::{call, fetch_backup};
pub use error::AdminError;

use crate::store::Store;

/// One operator request.
#[derive(Default, Serialize, Deserialize)]
pub struct AdminRequest {
    pub op: String,
    #[serde(default)]
    pub id: Option<String>,
    /// For `token.create`: the node group and the token lifetime in seconds.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// Operation-specific fields (e.g. a database connection's address).
    #[serde(default)]
    pub params: serde_json::Value,
    /// A secret handed over once (a database admin password); never logged.
    #[serde(default, with = "crate::wire::secret::optional")]
    pub secret: Option<secrecy::SecretString>,
}

impl std::fmt::Debug for AdminRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRequest")
            .field("op", &self.op)
            .field("id", &self.id)
            .field("params", &self.params)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

/// Operations served by other subsystems (database connections, leases),
/// which need the async runtime.
pub struct Extensions {
    pub db: Arc<crate::creds::db::broker::DbBroker>,
    pub leases: Arc<crate::creds::lease::LeaseManager>,
    pub ssh: Arc<crate::creds::ssh::issuer::SshIssuer>,
    pub runtime: tokio::runtime::Handle,
    pub leadership: Arc<crate::store::leader::Leadership>,
    /// The X.509 CA certificate (PEM): the trust bundle agents need.
    pub ca_pem: String,
}

/// What operator requests are checked against: the configured node
/// groups and roles, and the trust domain.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub trust_domain: String,
    pub groups: Vec<String>,
    /// Database and SSH role names.
    pub roles: Vec<String>,
}

/// Who may use the socket.
#[derive(Debug, Clone)]
pub struct Access {
    pub admin_gid: Option<u32>,
}

/// A group's id, from the system's group database (NSS: /etc/group, LDAP,
/// sssd … as nsswitch.conf says).
pub fn group_id(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Binds the socket (mode 0660) and serves it on its own threads.
pub fn serve(
    path: &Path,
    store: Arc<Store>,
    access: Access,
    names: Names,
    ext: Arc<Extensions>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = access.admin_gid {
        // The server may give its socket only to a group it is a member of
        // (it holds no capability): the packaged unit's
        // SupplementaryGroups= names the admin group.
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot give the admin socket to the admin group (gid {gid}): {e}; the server must be a member of it: add SupplementaryGroups=<the group> to its unit (systemctl edit zeroth-server)"
                ),
            )
        })?;
        if let Some(dir) = path.parent().filter(|d| !reachable_by_others(d)) {
            tracing::warn!(
                socket = %path.display(),
                directory = %dir.display(),
                "the admin group cannot reach the admin socket: its directory is closed to others; set admin_socket to a path in an open directory, such as /run/zeroth/admin.sock"
            );
        }
    }
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let (store, access, names, ext) =
                    (store.clone(), access.clone(), names.clone(), ext.clone());
                let _ = std::thread::Builder::new()
                    .name("admin-conn".into())
                    .spawn(move || handle(conn, &store, &access, &names, &ext));
            }
        })?;
    Ok(())
}

fn handle(mut conn: UnixStream, store: &Store, access: &Access, names: &Names, ext: &Extensions) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    // Read the request first, so a refused caller still gets its answer.
    let mut line = String::new();
    let read = BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line);
    let mut snapshot = None;
    let answer = match rustix::net::sockopt::socket_peercred(&conn) {
        Err(e) => {
            serde_json::json!({"ok": false, "error": format!("cannot identify the caller: {e}")})
        }
        Ok(cred) => {
            let uid = cred.uid.as_raw();
            let allowed = uid == 0
                || access
                    .admin_gid
                    .is_some_and(|g| member_of(uid, cred.gid.as_raw(), g));
            if !allowed {
                serde_json::json!({"ok": false, "error": format!("permission denied: uid {uid} is neither root nor in the admin group")})
            } else {
                let request = read
                    .map_err(|e| AdminError::BadRequest(e.to_string()))
                    .and_then(|_| {
                        serde_json::from_str::<AdminRequest>(&line)
                            .map_err(|e| AdminError::BadRequest(format!("malformed request: {e}")))
                    });
                match request {
                    Ok(req) if req.op == "server.status" => {
                        let mut status = serde_json::json!(ext.leadership.status());
                        status["ok"] = true.into();
                        status
                    }
                    Ok(req) if req.op == "ca.bundle" => {
                        serde_json::json!({"ok": true, "pem": ext.ca_pem})
                    }
                    Ok(req) if req.op == "store.backup" => match backup::take(store, uid) {
                        Ok((answer, snap)) => {
                            snapshot = Some(snap);
                            answer
                        }
                        Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
                    },
                    Ok(req) => db::execute(ext, &req, uid)
                        .or_else(|| ssh::execute(ext, &req))
                        .or_else(|| entry::execute(store, names, &req, uid))
                        .unwrap_or_else(|| nodes::execute(store, &names.groups, &req, uid))
                        .unwrap_or_else(
                            |e| serde_json::json!({"ok": false, "error": e.to_string()}),
                        ),
                    Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
                }
            }
        }
    };
    let _ = writeln!(conn, "{answer}");
    if let Some(snap) = snapshot {
        // The snapshot's bytes follow the answer line (which says how many).
        let sent =
            std::fs::File::open(snap.path()).and_then(|mut f| std::io::copy(&mut f, &mut conn));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "a backup could not be sent whole");
        }
    }
}

/// Whether users other than the directory's owner and group may pass
/// through `dir` (and every directory above it).
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    dir.ancestors().all(|d| {
        std::fs::metadata(d).is_ok_and(|m| d.as_os_str().is_empty() || m.mode() & 0o001 != 0)
    })
}

/// Admin requests are one line; a database connection's TLS CA (PEM)
/// rides in one, so leave room for a certificate chain.
const MAX_REQUEST: u64 = 64 * 1024;

/// Whether `uid` belongs to `gid`, as its primary group or a supplementary
/// one in the system's databases (NSS).
fn member_of(uid: u32, primary_gid: u32, gid: u32) -> bool {
    if primary_gid == gid {
        return true;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}
