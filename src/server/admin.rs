//! The operators' Unix socket. Callers are authenticated by the kernel
//! (SO_PEERCRED): root, or a member of the configured admin group. No
//! bootstrap secret exists to steal.
//!
//! Protocol: one JSON request per connection, one JSON answer.
//! Requests: `{"op": "node.list"}`, `{"op": "node.show"|"node.approve"|
//! "node.reject"|"node.revoke"|"node.readmit", "id": "..."}`. Answers: `{"ok": true, ...}`
//! or `{"ok": false, "error": "..."}`.

use secrecy::ExposeSecret;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Event};
use crate::store::nodes::{self, NodeState};
use crate::store::{backup, Store, StoreError};

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
    pub db: Arc<crate::creds::db::leases::DbBroker>,
    pub ssh: Arc<crate::creds::ssh::issuer::SshIssuer>,
    pub runtime: tokio::runtime::Handle,
    pub leadership: Arc<crate::store::leader::Leadership>,
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
        std::os::unix::fs::chown(path, None, Some(gid))?;
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
                match read.map_err(|e| e.to_string()).and_then(|_| {
                    serde_json::from_str::<AdminRequest>(&line)
                        .map_err(|e| format!("malformed request: {e}"))
                }) {
                    Ok(req) if req.op == "server.status" => {
                        let mut status = serde_json::json!(ext.leadership.status());
                        status["ok"] = true.into();
                        status
                    }
                    Ok(req) if req.op == "store.backup" => match backup(store, uid) {
                        Ok((answer, snap)) => {
                            snapshot = Some(snap);
                            answer
                        }
                        Err(e) => serde_json::json!({"ok": false, "error": e}),
                    },
                    Ok(req) => super::admin_db::execute(ext, &req, uid)
                        .or_else(|| super::admin_ssh::execute(ext, &req))
                        .or_else(|| super::admin_entry::execute(store, names, &req, uid))
                        .unwrap_or_else(|| execute(store, &names.groups, &req, uid))
                        .unwrap_or_else(|e| serde_json::json!({"ok": false, "error": e})),
                    Err(e) => serde_json::json!({"ok": false, "error": e}),
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

/// `store.backup`: a consistent snapshot of the store, recorded in the
/// audit log; its size goes in the answer, its bytes after it.
fn backup(store: &Store, uid: u32) -> Result<(serde_json::Value, backup::Snapshot), String> {
    let snap = backup::snapshot(store).map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(snap.path())
        .map_err(|e| format!("reading the snapshot: {e}"))?
        .len();
    let inspected = backup::inspect(snap.path()).map_err(|e| e.to_string())?;
    let mut conn = store.lock();
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    audit::append(
        &tx,
        &Event {
            kind: "store.backup",
            subject: "store",
            detail: serde_json::json!({"by_uid": uid, "bytes": bytes, "schema": inspected.schema, "nodes": inspected.nodes, "leases": inspected.leases, "audit_events": inspected.audit_events}),
        },
    )
    .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())?;
    Ok((
        serde_json::json!({"ok": true, "bytes": bytes, "schema": inspected.schema, "nodes": inspected.nodes, "leases": inspected.leases, "audit_events": inspected.audit_events}),
        snap,
    ))
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

/// The state an operator's `op` moves a node in `from` to, and the audit
/// event that records it. Revocation is final until a re-admission, which
/// puts the node back to pending: its next enrolment follows its group.
fn node_transition(
    op: &str,
    id: &str,
    from: NodeState,
) -> Result<(NodeState, &'static str), String> {
    use NodeState::*;
    match (op, from) {
        ("node.approve", Pending | Approved) => Ok((Approved, "node.approved")),
        ("node.approve", Revoked) => Err(format!(
            "node {id} was revoked; re-admit it first (`zeroth node readmit {id}`)"
        )),
        ("node.reject", Pending) => Ok((Revoked, "node.rejected")),
        ("node.reject", _) => Err(format!(
            "node {id} is {}, not pending; use revoke",
            from.as_str()
        )),
        ("node.revoke", _) => Ok((Revoked, "node.revoked")),
        ("node.readmit", Revoked) => Ok((Pending, "node.readmitted")),
        ("node.readmit", _) => Err(format!(
            "node {id} is {}, not revoked; only a revoked node is re-admitted",
            from.as_str()
        )),
        _ => Err(format!("unknown operation {op}")),
    }
}

fn execute(
    store: &Store,
    groups: &[String],
    req: &AdminRequest,
    uid: u32,
) -> Result<serde_json::Value, String> {
    let id = || {
        req.id
            .clone()
            .ok_or_else(|| format!("{} needs an \"id\"", req.op))
    };
    let db = |e: StoreError| e.to_string();
    match req.op.as_str() {
        "node.list" => {
            let list = nodes::nodes(&store.lock()).map_err(db)?;
            Ok(serde_json::json!({"ok": true, "nodes": list}))
        }
        "node.show" => {
            let id = id()?;
            let node = nodes::node(&store.lock(), &id)
                .map_err(db)?
                .ok_or_else(|| format!("no node {id}"))?;
            Ok(serde_json::json!({"ok": true, "node": node}))
        }
        op @ ("node.approve" | "node.reject" | "node.revoke" | "node.readmit") => {
            let id = id()?;
            let mut conn = store.lock();
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            let node = nodes::node(&tx, &id)
                .map_err(db)?
                .ok_or_else(|| format!("no node {id}"))?;
            let (state, kind) = node_transition(op, &id, node.state)?;
            if !nodes::set_node_state(&tx, &id, node.state, state).map_err(db)? {
                return Err(format!("node {id} changed meanwhile; try again"));
            }
            audit::append(
                &tx,
                &Event {
                    kind,
                    subject: &format!("node/{id}"),
                    detail: serde_json::json!({"by_uid": uid, "was": node.state}),
                },
            )
            .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            Ok(serde_json::json!({"ok": true, "id": id, "state": state}))
        }
        "token.create" => {
            let group = req.group.clone().ok_or("token.create needs a \"group\"")?;
            if !groups.contains(&group) {
                return Err(format!("no node group {group:?}"));
            }
            let ttl = req.ttl_secs.unwrap_or(600);
            if !(60..=30 * 24 * 3600).contains(&ttl) {
                return Err("the token lifetime must be between 1 minute and 30 days".into());
            }
            let (token, hash) = crate::server::api::token::new_token();
            let chain = hex::encode(rand::random::<[u8; 8]>());
            let mut conn = store.lock();
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            let expires =
                crate::store::tokens::create_chain(&tx, &chain, &group, ttl, &hash).map_err(db)?;
            audit::append(
                &tx,
                &Event {
                    kind: "token.created",
                    subject: &format!("token-chain/{chain}"),
                    detail: serde_json::json!({"by_uid": uid, "group": group, "ttl": ttl}),
                },
            )
            .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            // The token is shown once, to the operator, and stored only as a hash.
            Ok(
                serde_json::json!({"ok": true, "chain": chain, "token": token.expose_secret(), "expires": expires}),
            )
        }
        "token.list" => {
            let chains = crate::store::tokens::list_chains(&store.lock()).map_err(db)?;
            Ok(serde_json::json!({"ok": true, "chains": chains}))
        }
        "token.revoke" => {
            let chain = id()?;
            let mut conn = store.lock();
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            let was = crate::store::tokens::chain(&tx, &chain)
                .map_err(db)?
                .ok_or_else(|| format!("no token chain {chain}"))?;
            if !was.revoked {
                crate::store::tokens::revoke_chain(&tx, &chain).map_err(db)?;
                audit::append(
                    &tx,
                    &Event {
                        kind: "token.revoked",
                        subject: &format!("token-chain/{chain}"),
                        detail: serde_json::json!({"by_uid": uid, "group": was.group}),
                    },
                )
                .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())?;
            // Its leases go at the revoker's next pass, like a revoked node's.
            Ok(serde_json::json!({"ok": true, "chain": chain, "was_revoked": was.revoked}))
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

/// Why the admin socket cannot be reached, and what to check.
fn unreachable(socket: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let at = socket.display();
    match e.kind() {
        ErrorKind::NotFound => format!(
            "no admin socket at {at}: the zeroth server is not running, or not with this state directory (check `systemctl status zeroth-server`; the socket is <state_dir>/admin.sock unless server.toml sets admin_socket; pass --socket PATH)"
        ),
        ErrorKind::ConnectionRefused => format!(
            "nothing listens on the admin socket {at}: the zeroth server that made it is no longer running (check `systemctl status zeroth-server`)"
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied on the admin socket {at}: run as root or as a member of the server's admin_group"
        ),
        _ => format!("cannot connect to the admin socket {at}: {e}"),
    }
}

/// Takes a backup through the admin socket into `out`: the answer, and
/// the snapshot's bytes after it (exactly as many as it says).
pub fn fetch_backup(socket: &Path, out: &mut impl Write) -> Result<serde_json::Value, String> {
    let mut conn = UnixStream::connect(socket).map_err(|e| unreachable(socket, &e))?;
    let req = AdminRequest {
        op: "store.backup".into(),
        ..Default::default()
    };
    let line = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    writeln!(conn, "{line}").map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(&conn);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("malformed answer: {e}"))?;
    if v["ok"] != true {
        return Err(v["error"].as_str().unwrap_or("unknown error").to_owned());
    }
    let bytes = v["bytes"]
        .as_u64()
        .ok_or("the answer does not say the backup's size")?;
    let got = std::io::copy(&mut reader.take(bytes), out).map_err(|e| e.to_string())?;
    if got != bytes {
        return Err(format!(
            "the server sent {got} of the backup's {bytes} bytes"
        ));
    }
    Ok(v)
}

/// Sends one request to the admin socket and returns the answer.
pub fn call(socket: &Path, req: &AdminRequest) -> Result<serde_json::Value, String> {
    let mut conn = UnixStream::connect(socket).map_err(|e| unreachable(socket, &e))?;
    let line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    writeln!(conn, "{line}").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("malformed answer: {e}"))?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err(v["error"].as_str().unwrap_or("unknown error").to_owned())
    }
}
