//! The SPIFFE Workload API over gRPC (SPIFFE standards,
//! SPIFFE_Workload_API.md): every call carries the `workload.spiffe.io:
//! true` header (InvalidArgument without it); a caller no registration
//! entry matches gets PermissionDenied; streams send the full state at
//! once and again at every change (rotation, new or deleted entry, bundle),
//! and end with PermissionDenied when the caller has nothing left.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::identities::{Identities, Snapshot};
use super::jwt_check;
use crate::agent::attest::{AttestError, Attested};
use crate::wire::entry::WorkloadJwtRequest;
use crate::wire::jwt::JwtResponse;
use crate::wire::workload_api::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::wire::workload_api::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};

/// What the socket layer learned of a connection's peer, handed to every
/// call made over it.
#[derive(Debug, Clone)]
pub struct Peer(pub Arc<Result<Attested, AttestError>>);

/// The header every Workload API call must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// How long a new caller waits for the SVIDs of entries it matches that
/// the agent is still minting.
const FIRST_SVID_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct WorkloadApi {
    pub ids: Identities,
}

fn caller<T>(req: &Request<T>) -> Result<Attested, Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => {}
        _ => {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ))
        }
    }
    match req.extensions().get::<Peer>().map(|p| p.0.as_ref()) {
        Some(Ok(a)) => {
            still_same(a)?;
            Ok(a.clone())
        }
        Some(Err(e)) => Err(Status::permission_denied(e.to_string())),
        None => Err(Status::permission_denied("the caller is unknown")),
    }
}

/// Whether the caller still is the process, running the program, that
/// was attested when it connected; checked before every reply.
fn still_same(who: &Attested) -> Result<(), Status> {
    who.still_same().map_err(|e| {
        tracing::warn!(caller = %who.describe(), error = %e, "workload API: refused");
        Status::permission_denied(e.to_string())
    })
}

fn no_entry(who: &Attested) -> Status {
    Status::permission_denied(format!(
        "no registration entry matches {} (zeroth entry list)",
        who.describe()
    ))
}

fn x509_message(s: &Snapshot, who: &Attested) -> Option<X509svidResponse> {
    let svids = s.svids_for(who);
    (!svids.is_empty()).then(|| X509svidResponse {
        svids: svids
            .iter()
            .map(|v| X509svid {
                spiffe_id: v.entry.spiffe_id.clone(),
                x509_svid: v.cert_der.clone(),
                x509_svid_key: v.key_pkcs8.to_vec(),
                bundle: s.bundle.to_vec(),
                hint: v.entry.hint.clone(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles: HashMap::new(),
    })
}

fn entitled(s: &Snapshot, who: &Attested) -> bool {
    s.entries_for(who).next().is_some() && !s.bundle.is_empty()
}

fn x509_bundles(s: &Snapshot, who: &Attested) -> Option<X509BundlesResponse> {
    entitled(s, who).then(|| X509BundlesResponse {
        crl: Vec::new(),
        bundles: [(s.trust_domain_id(), s.bundle.to_vec())].into(),
    })
}

fn jwt_bundles(s: &Snapshot, who: &Attested) -> Option<JwtBundlesResponse> {
    entitled(s, who).then(|| JwtBundlesResponse {
        bundles: [(s.trust_domain_id(), s.jwks.to_vec())].into(),
    })
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// A stream of `make`'s message for `who`: the first at once (waiting a
/// little for SVIDs still being minted), then one per change, and
/// PermissionDenied once there is nothing left for it.
async fn watch_stream<T>(
    ids: &Identities,
    who: Attested,
    make: fn(&Snapshot, &Attested) -> Option<T>,
) -> Result<Stream<T>, Status>
where
    T: Clone + PartialEq + Send + 'static,
{
    let mut rx = ids.subscribe();
    let first = {
        let deadline = tokio::time::Instant::now() + FIRST_SVID_WAIT;
        loop {
            let s = rx.borrow_and_update().clone();
            if let Some(m) = make(&s, &who) {
                still_same(&who)?;
                ids.saw(s.entries_for(&who), &who);
                break m;
            }
            // Matching entries whose SVIDs are on their way: wait for them.
            if s.entries_for(&who).next().is_none() && !s.entries.is_empty() {
                return Err(no_entry(&who));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(no_entry(&who)),
            }
        }
    };
    let (tx, out) = mpsc::channel(4);
    let _ = tx.send(Ok(first.clone())).await;
    tokio::spawn(async move {
        let mut last = first;
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { break },
                _ = tx.closed() => break,
            }
            let s = rx.borrow_and_update().clone();
            match make(&s, &who) {
                None => {
                    let _ = tx.send(Err(no_entry(&who))).await;
                    break;
                }
                Some(m) if m != last => {
                    if let Err(refused) = still_same(&who) {
                        let _ = tx.send(Err(refused)).await;
                        break;
                    }
                    if tx.send(Ok(m.clone())).await.is_err() {
                        break;
                    }
                    last = m;
                }
                Some(_) => {}
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(out)))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let who = caller(&req)?;
        watch_stream(&self.ids, who, x509_message)
            .await
            .map(Response::new)
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let who = caller(&req)?;
        watch_stream(&self.ids, who, x509_bundles)
            .await
            .map(Response::new)
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let who = caller(&req)?;
        watch_stream(&self.ids, who, jwt_bundles)
            .await
            .map(Response::new)
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() || req.audience.iter().any(|a| a.is_empty()) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let snapshot = self.ids.current();
        let entries: Vec<_> = snapshot
            .entries_for(&who)
            .filter(|e| req.spiffe_id.is_empty() || e.spiffe_id == req.spiffe_id)
            .cloned()
            .collect();
        self.ids.saw(entries.iter(), &who);
        if entries.is_empty() {
            return Err(match req.spiffe_id.is_empty() {
                true => no_entry(&who),
                false => Status::permission_denied(format!(
                    "{} is not entitled to {}",
                    who.describe(),
                    req.spiffe_id
                )),
            });
        }
        let upstream = self.ids.upstream().clone();
        let audience = req.audience;
        let svids = tokio::task::spawn_blocking(move || {
            let conn = upstream
                .connect()
                .map_err(|e| Status::unavailable(e.to_string()))?;
            entries
                .iter()
                .map(|e| {
                    let (status, text) = conn
                        .post(
                            "/v1/workload/jwt",
                            &WorkloadJwtRequest {
                                entry_id: e.id.clone(),
                                audience: audience.clone(),
                                ttl_seconds: None,
                            },
                        )
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    if status != 200 {
                        return Err(Status::unavailable(format!(
                            "the server refused a JWT-SVID for {} ({status})",
                            e.spiffe_id
                        )));
                    }
                    let jwt: JwtResponse = serde_json::from_str(&text)
                        .map_err(|e| Status::internal(format!("the JWT answer: {e}")))?;
                    Ok(Jwtsvid {
                        spiffe_id: jwt.spiffe_id,
                        svid: jwt.token,
                        hint: e.hint.clone(),
                    })
                })
                .collect::<Result<Vec<_>, Status>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        still_same(&who)?;
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let who = caller(&req)?;
        let req = req.into_inner();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let snapshot = self.ids.current();
        if !entitled(&snapshot, &who) {
            return Err(no_entry(&who));
        }
        let jwks: serde_json::Value = serde_json::from_slice(&snapshot.jwks)
            .map_err(|_| Status::unavailable("the agent has no JWT bundle yet"))?;
        let (spiffe_id, claims) = jwt_check::validate(
            &req.svid,
            &req.audience,
            &jwks,
            &snapshot.trust_domain,
            crate::wire::now(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(to_struct(claims)),
        }))
    }
}

fn to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}
