//! The agent's workload socket. Programs on this host reach two services
//! there, told apart by the first byte they send: the SPIFFE Workload API
//! (gRPC, `super::spiffe`), and zeroth's own requests, dynamic credentials
//! (database users, SSH certificates) asked in the name of this host,
//! without the program ever holding its identity. The agent makes those
//! requests with its own X.509-SVID over mTLS. Every caller is attested by
//! the kernel when it connects (uid, gid, pid, systemd service, executable:
//! `super::spiffe::attest`) and granted what the configuration's uids and
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
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::enrol::AgentError;
use super::spiffe::attest::{AttestError, Attested};

/// A request to the agent, as a local program sends it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRequest {
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals: Option<Vec<String>>,
}

/// The agent's current way to reach the server as itself.
#[derive(Clone, Default)]
pub struct Upstream(Arc<RwLock<Option<Link>>>);

#[derive(Clone)]
enum Link {
    /// A token host: an mTLS client holding the current SVID and its
    /// in-memory key, replaced at every rotation.
    Client {
        base: String,
        http: reqwest::blocking::Client,
    },
    /// A TPM node: the TPM is opened for each request (and closed after,
    /// so renewals get their turn), with the SVID then on disk.
    Tpm(super::EnrolOptions),
}

impl Upstream {
    /// From now on, requests go to `server` through `http` (an mTLS client
    /// holding the current SVID).
    pub fn set(&self, server: &str, http: reqwest::blocking::Client) {
        let link = Link::Client {
            base: server.to_owned(),
            http,
        };
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(link);
    }

    /// Requests are signed by the TPM-held identity key of the node `opts`
    /// describes.
    pub fn tpm(opts: &super::EnrolOptions) -> Self {
        Self(Arc::new(RwLock::new(Some(Link::Tpm(opts.clone())))))
    }

    fn get(&self) -> Option<Link> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One connection to the server as this host, for several requests
    /// in a row (a TPM node opens its TPM and shakes hands once).
    pub fn connect(&self) -> Result<Connected, UpstreamError> {
        let link = self.get().ok_or(UpstreamError::NoIdentity)?;
        match link {
            Link::Client { base, http } => Ok(Connected { base, http }),
            Link::Tpm(opts) => {
                let svid = std::fs::read_to_string(opts.state_dir.join("svid.pem"))
                    .map_err(|_| UpstreamError::NotEnrolled)?;
                let tpm = super::enrol::Enrolment::open(&opts.tcti, &opts.state_dir)
                    .map_err(|e| UpstreamError::Tpm(e.to_string()))?;
                let http = tpm
                    .mtls_client(&opts.ca_bundle, &svid)
                    .map_err(|e| UpstreamError::Tpm(e.to_string()))?;
                Ok(Connected {
                    base: opts.server.clone(),
                    http,
                })
            }
        }
    }

    /// Sends `body` to the server's `path` as this host (blocking), naming
    /// the local program `who` for the audit: the answer's status and body.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        who: &str,
    ) -> Result<(u16, String), UpstreamError> {
        self.connect()?.post_as(path, body, who)
    }
}

/// A client of the server holding this host's identity.
pub struct Connected {
    /// The server's base URL, or several (see `servers`).
    base: String,
    http: reqwest::blocking::Client,
}

impl Connected {
    /// POSTs `body` to `path`: the answer's status and body.
    pub fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<(u16, String), UpstreamError> {
        self.post_as(path, body, "")
    }

    /// As [`Connected::post`], naming the local program `who` (when not
    /// empty) for the server's audit.
    pub fn post_as(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        who: &str,
    ) -> Result<(u16, String), UpstreamError> {
        super::servers::first_served(&self.base, |base| {
            let mut request = self
                .http
                .post(format!("{base}{path}"))
                .timeout(super::servers::attempt_wait())
                .json(body);
            if !who.is_empty() {
                request = request.header(crate::wire::db::WORKLOAD_HEADER, who);
            }
            request.send().map(answer).map_err(unreachable)
        })
    }

    /// GETs `path`: the answer's status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String), UpstreamError> {
        super::servers::first_served(&self.base, |base| {
            self.http
                .get(format!("{base}{path}"))
                .timeout(super::servers::attempt_wait())
                .send()
                .map(answer)
                .map_err(unreachable)
        })
    }
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    UpstreamError::Unreachable(text)
}

/// Why the agent could not ask the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("this agent has no identity yet (its first rotation has not succeeded)")]
    NoIdentity,
    #[error("this node has no identity yet (not enrolled)")]
    NotEnrolled,
    #[error("cannot use the TPM: {0}")]
    Tpm(String),
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
}

fn answer(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

/// Who may use the socket besides root and the agent's own user.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Any role.
    pub allow_uids: Vec<u32>,
    /// Only the roles listed, by uid.
    pub roles: std::collections::BTreeMap<u32, Vec<String>>,
    /// Only the roles listed, by systemd service ("shop.service"), whatever
    /// the uid it runs as.
    pub units: std::collections::BTreeMap<String, Vec<String>>,
}

impl Access {
    fn any_role(&self, uid: u32) -> bool {
        uid == 0 || uid == rustix::process::geteuid().as_raw() || self.allow_uids.contains(&uid)
    }

    /// The roles granted to `who` by uid, by unit and by the registration
    /// entries it matches (`entry_roles`); `None`: any role.
    fn granted<'a>(&'a self, who: &Caller, entry_roles: &'a [String]) -> Option<Vec<&'a String>> {
        if self.any_role(who.uid) {
            return None;
        }
        let by_unit = who.unit.as_ref().and_then(|u| self.units.get(u));
        Some(
            self.roles
                .get(&who.uid)
                .into_iter()
                .chain(by_unit)
                .flatten()
                .chain(entry_roles)
                .collect(),
        )
    }

    /// Whether `who` may use the socket at all.
    fn knows(&self, who: &Caller, entry_roles: &[String]) -> bool {
        self.any_role(who.uid)
            || !entry_roles.is_empty()
            || self.roles.contains_key(&who.uid)
            || who
                .unit
                .as_ref()
                .is_some_and(|u| self.units.contains_key(u))
    }

    /// Why `who` may not make `req`, if it may not.
    fn refuses(
        &self,
        who: &Caller,
        req: &WorkloadRequest,
        entry_roles: &[String],
    ) -> Option<String> {
        let roles = self.granted(who, entry_roles)?;
        match &req.role {
            Some(role) if !roles.contains(&role) => Some(format!(
                "{} may ask for {roles:?} only, not {role:?} (workload_api.roles, workload_api.units, entry roles)",
                who.describe()
            )),
            _ => None,
        }
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
        let hashes = Arc::new(super::spiffe::attest::HashCache::default());
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
    hashes: Arc<super::spiffe::attest::HashCache>,
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
                    Ok(req) => match access.refuses(&who, &req, entry_roles) {
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

/// The server call a request stands for: path and JSON body.
pub fn route(req: &WorkloadRequest) -> Result<(String, serde_json::Value), String> {
    // Role names and lease ids become one path segment: letters, digits,
    // '-', '_' and inner dots only, so nothing can reach another path
    // ("..", "%2e%2e", '/', '?', '#').
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 128
                    && !s.starts_with('.')
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            })
            .ok_or_else(|| format!("{} needs a valid \"{what}\"", req.op))
    };
    Ok(match req.op.as_str() {
        "db.creds" => (
            format!("/v1/db/creds/{}", need(&req.role, "role")?),
            serde_json::json!({"ttl_seconds": req.ttl_seconds}),
        ),
        "ssh.sign" => (
            format!("/v1/ssh/sign/{}", need(&req.role, "role")?),
            serde_json::json!({
                "public_key": req.public_key.clone().ok_or("ssh.sign needs a \"public_key\"")?,
                "principals": req.principals,
                "ttl_seconds": req.ttl_seconds,
            }),
        ),
        "lease.renew" => (
            format!("/v1/leases/{}/renew", need(&req.id, "id")?),
            serde_json::json!({"increment_seconds": req.increment_seconds}),
        ),
        "lease.revoke" => (
            format!("/v1/leases/{}/revoke", need(&req.id, "id")?),
            serde_json::json!({}),
        ),
        other => return Err(format!("unknown operation {other:?}")),
    })
}

/// Forwards `req` for `who`, acting on a lease only for the program it was
/// issued to, and remembering whose each new lease is.
fn owned(
    req: &WorkloadRequest,
    who: &Caller,
    owners: &super::lease_owners::LeaseOwners,
    upstream: &Upstream,
) -> serde_json::Value {
    let on_lease = matches!(req.op.as_str(), "lease.renew" | "lease.revoke");
    if on_lease {
        if let Err(why) = owners.check(req.id.as_deref().unwrap_or_default(), who) {
            return refusal(403, why.to_string());
        }
    }
    let answer = forward(req, &who.describe(), upstream);
    if answer["ok"] != true {
        return answer;
    }
    let id = req.id.as_deref().unwrap_or_default();
    match req.op.as_str() {
        "db.creds" | "ssh.sign" => {
            let expires = answer["expires"]
                .as_i64()
                .or_else(|| answer["valid_before"].as_i64())
                .unwrap_or_else(|| crate::wire::now() + 24 * 3600);
            if let Some(lease) = answer["lease_id"].as_str() {
                owners.record(lease, who, expires);
            }
        }
        "lease.renew" => {
            if let Some(expires) = answer["expires"].as_i64() {
                owners.extend(id, expires);
            }
        }
        "lease.revoke" => owners.forget(id),
        _ => {}
    }
    answer
}

/// Asks the server for `req`, naming the local program `who` for its audit.
fn forward(req: &WorkloadRequest, who: &str, upstream: &Upstream) -> serde_json::Value {
    let (path, body) = match route(req) {
        Ok(r) => r,
        Err(e) => return refusal(400, e),
    };
    let (status, text) = match upstream.post(&path, &body, who) {
        Ok(answer) => answer,
        Err(e) => return refusal(503, e.to_string()),
    };
    let parsed: serde_json::Value = if text.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"reason": text}))
    };
    if (200..300).contains(&status) {
        let mut answer = parsed;
        match answer.as_object_mut() {
            Some(map) => {
                map.insert("ok".into(), true.into());
                answer
            }
            None => serde_json::json!({"ok": true, "answer": answer}),
        }
    } else {
        let reason = parsed["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        refusal(status, reason)
    }
}

/// Sends one request to an agent's workload API and returns the answer,
/// `Err((status, reason))` for a refusal.
pub fn call(socket: &Path, req: &WorkloadRequest) -> Result<serde_json::Value, (u16, String)> {
    let mut conn = UnixStream::connect(socket).map_err(|e| {
        (
            503,
            format!(
                "cannot connect to the agent's workload API at {}: {e} (is `zeroth agent run` up, with [workload_api]?)",
                socket.display()
            ),
        )
    })?;
    let line = serde_json::to_string(req).map_err(|e| (400, e.to_string()))?;
    // One write; if the agent has already answered (a refusal it gives
    // before reading) and closed, its answer is still there to read.
    let sent = conn.write_all(format!("{line}\n").as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(&conn).read_line(&mut answer);
    if answer.is_empty() {
        sent.map_err(|e| (503, e.to_string()))?;
        read.map_err(|e| (503, e.to_string()))?;
    }
    let v: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| (503, format!("the agent's answer does not parse: {e}")))?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err((
            v["status"].as_u64().unwrap_or(503) as u16,
            v["error"].as_str().unwrap_or("refused").to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_only_plain_path_segments() {
        let req = |op: &str, role: Option<&str>| WorkloadRequest {
            op: op.into(),
            role: role.map(Into::into),
            ..Default::default()
        };
        assert_eq!(
            route(&req("db.creds", Some("app"))).unwrap().0,
            "/v1/db/creds/app"
        );
        for bad in [
            "",
            "../identity/renew",
            "..",
            ".",
            "%2e%2e",
            "a?b",
            "a#b",
            "a b",
        ] {
            let e = route(&req("db.creds", Some(bad))).unwrap_err();
            assert!(e.contains("valid \"role\""), "{bad}: {e}");
        }
        assert!(route(&req("node.revoke", None))
            .unwrap_err()
            .contains("unknown operation"));
        assert!(route(&req("ssh.sign", Some("ops")))
            .unwrap_err()
            .contains("public_key"));
    }

    #[test]
    fn callers_get_what_the_configuration_grants_their_uid_and_unit() {
        let access = Access {
            allow_uids: vec![1001],
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
        assert_eq!(access.refuses(&who(1001, None), &ask("shop-rw"), &[]), None);
        assert_eq!(access.refuses(&who(1002, None), &ask("app-ro"), &[]), None);
        let why = access
            .refuses(&who(1002, None), &ask("shop-rw"), &[])
            .unwrap();
        assert!(why.contains("not \"shop-rw\""), "{why}");
        // The unit's roles, and with a granted uid the union of both.
        let shop = who(1003, Some("shop.service"));
        assert_eq!(access.refuses(&shop, &ask("shop-rw"), &[]), None);
        let why = access.refuses(&shop, &ask("app-ro"), &[]).unwrap();
        assert!(why.contains("unit shop.service"), "{why}");
        let both = who(1002, Some("shop.service"));
        assert_eq!(access.refuses(&both, &ask("shop-rw"), &[]), None);
        assert_eq!(access.refuses(&both, &ask("app-ro"), &[]), None);
        // A registration entry's roles, for a program nothing else admits.
        let by_entry = ["app-ro".to_owned()];
        let stranger = who(1004, Some("batch.service"));
        assert!(!access.knows(&stranger, &[]));
        assert!(access.knows(&stranger, &by_entry));
        assert_eq!(access.refuses(&stranger, &ask("app-ro"), &by_entry), None);
        let why = access
            .refuses(&stranger, &ask("shop-rw"), &by_entry)
            .unwrap();
        assert!(why.contains("entry roles"), "{why}");
        // Giving a lease back names no role.
        let back = WorkloadRequest {
            op: "lease.revoke".into(),
            id: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(access.refuses(&who(1002, None), &back, &[]), None);
    }

    #[test]
    fn without_an_identity_the_agent_says_so() {
        let answer = forward(
            &WorkloadRequest {
                op: "db.creds".into(),
                role: Some("app".into()),
                ..Default::default()
            },
            "uid 0 pid 1",
            &Upstream::default(),
        );
        assert_eq!(answer["status"], 503);
        assert!(answer["error"]
            .as_str()
            .unwrap()
            .contains("no identity yet"));
    }
}
