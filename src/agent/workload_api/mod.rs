//! The agent's workload socket. Programs on this host reach two services
//! there, told apart by the first byte they send: the SPIFFE Workload API
//! (gRPC, `super::spiffe`), and zeroth's own requests, dynamic credentials
//! (database users, SSH certificates) asked in the name of this host,
//! without the program ever holding its identity. The agent makes those
//! requests with its own X.509-SVID over mTLS. Every caller is attested by
//! the kernel when it connects (uid, gid, pid, systemd service, executable:
//! `super::attest`) and granted what the configuration's uids and
//! units and the registration entries it matches allow. This is how a host
//! without a TPM, whose SVID key exists only in the agent's memory, gets
//! credentials at all; on a TPM node it spares programs access to the TPM.
//!
//! JSON protocol: one request per connection, one answer line.
//! Requests: `{"op": "db.creds", "role": R, "ttl_seconds"?: N}`,
//! `{"op": "ssh.sign", "role": R, "public_key": K, "principals"?: [..],
//! "ttl_seconds"?: N}`, `{"op": "lease.renew", "id": L,
//! "increment_seconds"?: N}`, `{"op": "lease.revoke", "id": L}`, and for
//! the node's operator `{"op": "workload.list"}`.
//! Answers: the server's answer with `"ok": true`, or `{"ok": false,
//! "status": S, "error": "..."}` (S is the server's HTTP status, or 403 and
//! 503 for the agent's own refusals).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod forward;
mod requests;

pub use requests::{call, route, BadRequest, WorkloadRequest, HOST_KRL};

use super::attest::{Access, AttestError, Attested, Caller, Granted};
use super::enrol::AgentError;
use super::upstream::Upstream;
use forward::owned;

/// Why `who` may not make `req`, if it may not.
fn refuses(
    access: &Access,
    who: &Caller,
    req: &WorkloadRequest,
    entry_roles: &[String],
) -> Option<String> {
    let Granted::Only(roles) = access.granted(who, entry_roles) else {
        return None;
    };
    match &req.role {
        Some(role) if !roles.contains(&role) => Some(format!(
            "{} may ask for {roles:?} only, not {role:?} (workload_api.roles, workload_api.units, entry roles)",
            who.describe()
        )),
        _ => None,
    }
}

/// A serving socket; removed when dropped.
pub struct WorkloadApi {
    path: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl Drop for WorkloadApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl WorkloadApi {
    /// Binds `path` (mode 0666: the kernel-attested caller is the check)
    /// and serves it on its own threads: gRPC (the SPIFFE Workload API,
    /// identities from `ids`) and JSON lines (zeroth's own requests).
    pub fn serve(
        path: &Path,
        access: Access,
        upstream: Upstream,
        ids: super::spiffe::Identities,
    ) -> Result<Self, AgentError> {
        let file_err = |what: &'static str| {
            let path = path.to_owned();
            move |source| AgentError::File { what, path, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(file_err("create the socket's directory"))?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(file_err("bind the workload API"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(file_err("open the workload API"))?;
        listener
            .set_nonblocking(true)
            .map_err(file_err("start the workload API"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("workload-api")
            .enable_all()
            .build()
            .map_err(file_err("start the workload API"))?;
        let listener = {
            let _in = runtime.enter();
            tokio::net::UnixListener::from_std(listener)
                .map_err(file_err("start the workload API"))?
        };
        let (grpc, incoming) = tokio::sync::mpsc::channel(64);
        let served = ids.clone();
        runtime.spawn(async move {
            if let Err(e) = super::spiffe::serve_grpc(served, incoming).await {
                tracing::error!(error = %e, "the SPIFFE Workload API stopped");
            }
        });
        let hashes = Arc::new(super::attest::HashCache::default());
        let owners = Arc::new(super::lease_owners::LeaseOwners::default());
        let slots = Arc::new(super::slots::Slots::default());
        runtime.spawn(async move {
            loop {
                let conn = match listener.accept().await {
                    Ok((conn, _)) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "workload API: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (access, upstream, grpc, hashes, ids, owners, slots) = (
                    access.clone(),
                    upstream.clone(),
                    grpc.clone(),
                    hashes.clone(),
                    ids.clone(),
                    owners.clone(),
                    slots.clone(),
                );
                tokio::spawn(dispatch(
                    conn, access, upstream, grpc, hashes, ids, owners, slots,
                ));
            }
        });
        Ok(Self {
            path: path.to_owned(),
            _runtime: runtime,
        })
    }
}

/// Attests a new connection's peer at once (before it can hand the socket
/// on), decides whether anything here admits it, takes a slot for its uid
/// (few for a caller nothing admits), then serves it by the protocol its
/// first byte announces.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    conn: tokio::net::UnixStream,
    access: Access,
    upstream: Upstream,
    grpc: tokio::sync::mpsc::Sender<std::io::Result<super::spiffe::GrpcConn>>,
    hashes: Arc<super::attest::HashCache>,
    ids: super::spiffe::Identities,
    owners: Arc<super::lease_owners::LeaseOwners>,
    slots: Arc<super::slots::Slots>,
) {
    let snapshot = ids.current();
    hashes.wanted(snapshot.names_a_hash());
    let peer = super::spiffe::attest_peer(&conn, hashes).await;
    let (uid, entry_roles, admitted) = match peer.0.as_ref() {
        Ok(a) => {
            let mut roles: Vec<String> = snapshot
                .entries_for(a)
                .flat_map(|e| e.roles.iter().cloned())
                .collect();
            roles.sort();
            roles.dedup();
            let who = Caller {
                uid: a.uid,
                pid: a.pid,
                unit: a.unit.clone(),
            };
            let admitted = snapshot.entries_for(a).next().is_some() || access.knows(&who, &roles);
            (a.uid, roles, admitted)
        }
        Err(_) => (u32::MAX, Vec::new(), false),
    };
    drop(snapshot);
    let limit = match admitted {
        true => super::slots::ADMITTED,
        false => super::slots::NOT_ADMITTED,
    };
    // Over its uid's limit: closed at once, nothing read.
    let Some(slot) = slots.take(uid, limit) else {
        return;
    };
    // A caller nothing admits is answered its refusal soon; an admitted
    // one has longer to send its first bytes.
    let wait = match admitted {
        true => Duration::from_secs(10),
        false => Duration::from_secs(1),
    };
    let first = tokio::time::timeout(wait, super::spiffe::peek_first(&conn));
    match first.await {
        Ok(Ok(Some(b'{'))) => {
            let Ok(conn) = conn.into_std() else { return };
            if conn.set_nonblocking(false).is_ok() {
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    handle(
                        conn,
                        &access,
                        &upstream,
                        &peer.0,
                        &entry_roles,
                        &ids,
                        &owners,
                    )
                });
            }
        }
        Ok(Ok(Some(_))) => {
            let _ = grpc
                .send(Ok(super::spiffe::GrpcConn::new(conn, peer, slot)))
                .await;
        }
        _ => {}
    }
}

const MAX_REQUEST: u64 = 16 * 1024;

/// How long a caller refused before its request was read has to finish
/// sending it before the connection closes.
const REFUSED_DRAIN: Duration = Duration::from_secs(1);

fn refusal(status: u16, error: impl Into<String>) -> serde_json::Value {
    serde_json::json!({"ok": false, "status": status, "error": error.into()})
}

/// Serves one JSON request from the program `peer` (attested when it
/// connected), granted by the configuration and by the roles of the
/// registration entries it matches.
fn handle(
    mut conn: UnixStream,
    access: &Access,
    upstream: &Upstream,
    peer: &Result<Attested, AttestError>,
    entry_roles: &[String],
    ids: &super::spiffe::Identities,
    owners: &super::lease_owners::LeaseOwners,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    // Who may not use the API is told so before anything is read.
    let mut line = String::new();
    let mut served = false;
    let mut read = || {
        served = true;
        BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)
    };
    let answer = match peer {
        Err(e) => refusal(403, e.to_string()),
        Ok(a) => {
            let who = Caller {
                uid: a.uid,
                pid: a.pid,
                unit: a.unit.clone(),
            };
            if !access.knows(&who, entry_roles) {
                refusal(
                    403,
                    format!(
                        "{} may not use this agent's workload API (allow_uids, roles, units, registration entries)",
                        who.describe()
                    ),
                )
            } else {
                match read()
                    .map_err(|e| format!("cannot read the request: {e}"))
                    .and_then(|_| {
                        serde_json::from_str::<WorkloadRequest>(&line)
                            .map_err(|e| format!("malformed request: {e}"))
                    }) {
                    Err(e) => refusal(400, e),
                    // What this agent serves, for its operator only.
                    Ok(req) if req.op == "workload.list" => match access.any_role(who.uid) {
                        true => ids.listing(),
                        false => refusal(
                            403,
                            format!("{} may not list this agent's workloads", who.describe()),
                        ),
                    },
                    Ok(req) => match refuses(access, &who, &req, entry_roles) {
                        Some(why) => refusal(403, why),
                        None => match a.still_same() {
                            Err(e) => refusal(403, e.to_string()),
                            Ok(()) => {
                                let answer = owned(&req, &who, owners, upstream);
                                unless_changed(answer, a, &who, owners, upstream)
                            }
                        },
                    },
                }
            }
        }
    };
    let _ = conn.write_all(format!("{answer}\n").as_bytes());
    if !served {
        // A refusal given before the request was read: the caller's
        // request is drained (briefly) so that closing does not break the
        // write it is making.
        let _ = conn.set_read_timeout(Some(REFUSED_DRAIN));
        let _ = conn.shutdown(std::net::Shutdown::Write);
        let _ = std::io::copy(&mut (&conn).take(MAX_REQUEST), &mut std::io::sink());
    }
}

/// `answer`, unless the caller ran another program while the server was
/// asked: then a refusal, and a credential issued meanwhile is given back.
fn unless_changed(
    answer: serde_json::Value,
    attested: &Attested,
    who: &Caller,
    owners: &super::lease_owners::LeaseOwners,
    upstream: &Upstream,
) -> serde_json::Value {
    let Err(e) = attested.still_same() else {
        return answer;
    };
    tracing::warn!(caller = %who.describe(), error = %e, "workload API: refused");
    if let Some(lease) = answer["lease_id"].as_str() {
        let back = WorkloadRequest {
            op: "lease.revoke".into(),
            id: Some(lease.to_owned()),
            ..Default::default()
        };
        let _ = owned(&back, who, owners, upstream);
    }
    refusal(403, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_get_what_the_configuration_grants_their_uid_and_unit() {
        let access = Access {
            allow_uids: vec![1001],
            operators: true,
            roles: [(1002, vec!["app-ro".to_owned()])].into_iter().collect(),
            units: [("shop.service".to_owned(), vec!["shop-rw".to_owned()])]
                .into_iter()
                .collect(),
        };
        let who = |uid: u32, unit: Option<&str>| Caller {
            uid,
            pid: 42,
            unit: unit.map(Into::into),
        };
        let ask = |role: &str| WorkloadRequest {
            op: "db.creds".into(),
            role: Some(role.into()),
            ..Default::default()
        };
        assert!(access.knows(&who(0, None), &[]) && access.knows(&who(1001, None), &[]));
        assert!(access.knows(&who(1002, None), &[]));
        assert!(!access.knows(&who(1003, None), &[]));
        assert!(access.knows(&who(1003, Some("shop.service")), &[]));
        assert!(!access.knows(&who(1003, Some("other.service")), &[]));
        assert_eq!(
            refuses(&access, &who(1001, None), &ask("shop-rw"), &[]),
            None
        );
        assert_eq!(
            refuses(&access, &who(1002, None), &ask("app-ro"), &[]),
            None
        );
        let why = refuses(&access, &who(1002, None), &ask("shop-rw"), &[]).unwrap();
        assert!(why.contains("not \"shop-rw\""), "{why}");
        // The unit's roles, and with a granted uid the union of both.
        let shop = who(1003, Some("shop.service"));
        assert_eq!(refuses(&access, &shop, &ask("shop-rw"), &[]), None);
        let why = refuses(&access, &shop, &ask("app-ro"), &[]).unwrap();
        assert!(why.contains("unit shop.service"), "{why}");
        let both = who(1002, Some("shop.service"));
        assert_eq!(refuses(&access, &both, &ask("shop-rw"), &[]), None);
        assert_eq!(refuses(&access, &both, &ask("app-ro"), &[]), None);
        // A registration entry's roles, for a program nothing else admits.
        let by_entry = ["app-ro".to_owned()];
        let stranger = who(1004, Some("batch.service"));
        assert!(!access.knows(&stranger, &[]));
        assert!(access.knows(&stranger, &by_entry));
        assert_eq!(refuses(&access, &stranger, &ask("app-ro"), &by_entry), None);
        let why = refuses(&access, &stranger, &ask("shop-rw"), &by_entry).unwrap();
        assert!(why.contains("entry roles"), "{why}");
        // Giving a lease back names no role.
        let back = WorkloadRequest {
            op: "lease.revoke".into(),
            id: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(refuses(&access, &who(1002, None), &back, &[]), None);
    }
}
