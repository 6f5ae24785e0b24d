//! Identities for the programs on a node (registration entries), asked for
//! by the node's agent over mTLS: the entries meant for it, X.509-SVIDs for
//! keys its agent made, and JWT-SVIDs. A node sees only its own entries
//! and its group's, and only while it may still act (approved node, token
//! chain not revoked).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use sha2::{Digest, Sha256};

use super::caller::{Caller, CallerKind};
use super::error::{ApiError, JsonBody};
use super::openapi::HolderRefusals;
use crate::audit::{self, Event};
use crate::identity::csr::p256_key;
use crate::identity::jwt::JwtError;
use crate::identity::x509_ca::pem_encode;
use crate::identity::{P256Subject, SpiffeId};
use crate::server::state::{AppState, Shared};
use crate::store::{entries, StoreError};
use crate::wire::entry::{
    EntriesResponse, Entry, Parent, WorkloadJwtRequest, WorkloadSvidRequest, WorkloadSvidResponse,
};
use crate::wire::jwt::JwtResponse;

/// The entries `caller` may use, if it may still act.
fn entries_of(s: &AppState, caller: &Caller, group: &str) -> Result<Vec<Entry>, ApiError> {
    let node = (caller.kind == CallerKind::Node).then_some(caller.id.as_str());
    Ok(entries::for_holder(&*s.store.read()?, node, group)?)
}

/// The caller's group, if it may still act.
fn group_of(s: &Shared, caller: &Caller) -> Result<String, ApiError> {
    super::db::holder(s, caller)?
        .group
        .ok_or_else(|| ApiError::rejected("the caller has no group"))
}

/// The entry `id`, if it is meant for `caller`.
fn entry_for(s: &AppState, caller: &Caller, group: &str, id: &str) -> Result<Entry, ApiError> {
    let entry = entries::get(&*s.store.read()?, id)?;
    let mine = |e: &Entry| match &e.parent {
        Parent::Node(n) => caller.kind == CallerKind::Node && *n == caller.id,
        Parent::Group(g) => g == group,
    };
    entry
        .filter(mine)
        .ok_or_else(|| ApiError::not_found(format!("no entry {id} for {}", caller.spiffe_id)))
}

/// A digest of `entries` that changes whenever any of them does.
pub fn revision(entries: &[Entry]) -> String {
    let json = serde_json::to_vec(entries).unwrap_or_default();
    hex::encode(&Sha256::digest(json)[..16])
}

/// `GET /v1/entries`.
#[utoipa::path(get, path = "/v1/entries", summary = "The registration entries for the caller's programs", tag = "workload",
    security(("svid" = [])),
    responses((status = 200, description = "The registration entries for the caller's programs", body = EntriesResponse), HolderRefusals))]
pub async fn list(
    State(s): State<Shared>,
    caller: Caller,
) -> Result<Json<EntriesResponse>, ApiError> {
    let group = group_of(&s, &caller)?;
    let entries = entries_of(&s, &caller, &group)?;
    Ok(Json(EntriesResponse {
        revision: revision(&entries),
        entries,
    }))
}

/// Records an issuance: the audit event (and for an X.509-SVID its row),
/// committed with other writers' work before the reply (group commit).
async fn record_issue(
    s: &Shared,
    kind: &'static str,
    entry: &Entry,
    caller: &Caller,
    mut detail: serde_json::Value,
    svid: Option<(String, i64)>,
) -> Result<(), ApiError> {
    detail["spiffe_id"] = entry.spiffe_id.clone().into();
    detail["holder"] = caller.spiffe_id.clone().into();
    let (entry_id, spiffe_id, holder) = (
        entry.id.clone(),
        entry.spiffe_id.clone(),
        caller.spiffe_id.clone(),
    );
    s.leases
        .ledger()
        .writer()
        .write_async(move |tx| {
            if let Some((serial, not_after)) = &svid {
                entries::record_svid(tx, serial, &entry_id, &holder, &spiffe_id, *not_after)?;
            }
            audit::append(
                tx,
                &Event {
                    kind,
                    subject: &format!("entry/{entry_id}"),
                    detail,
                },
            )
            .map_err(|e| StoreError::Writer(e.to_string()))?;
            Ok(())
        })
        .await?;
    Ok(())
}

/// `POST /v1/workload/x509`.
#[utoipa::path(post, path = "/v1/workload/x509", summary = "Issue an X.509-SVID for a program's registration entry", tag = "workload",
    security(("svid" = [])), request_body = WorkloadSvidRequest,
    responses((status = 200, description = "An X.509-SVID for a program's key", body = WorkloadSvidResponse), HolderRefusals))]
pub async fn x509(
    State(s): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<WorkloadSvidRequest>,
) -> Result<Json<WorkloadSvidResponse>, ApiError> {
    use base64::Engine;
    let group = group_of(&s, &caller)?;
    let csr = base64::engine::general_purpose::STANDARD
        .decode(&req.csr)
        .map_err(|e| ApiError::bad_request(format!("`csr` is not base64: {e}")))?;
    let point = p256_key(&csr).map_err(|e| ApiError::bad_request(format!("`csr`: {e}")))?;
    let who = caller.clone();
    let (entry, svid, not_after, bundle) = s
        .blocking(move |s| {
            let entry = entry_for(s, &who, &group, &req.entry_id)?;
            let id = SpiffeId::parse_in(&s.trust_domain, &entry.spiffe_id)
                .map_err(|e| ApiError::unavailable("the entry's SPIFFE ID", e))?;
            let svid =
                s.ca.issue_svid_with_dns(
                    &P256Subject(point),
                    &id,
                    &entry.dns_names,
                    Duration::from_secs(entry.ttl_seconds),
                )
                .map_err(|e| ApiError::unavailable("the CA", e))?;
            let not_after = svid
                .not_after
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs() as i64;
            Ok::<_, ApiError>((entry, svid, not_after, s.ca.cert_pem()))
        })
        .await??;
    record_issue(
        &s,
        "workload.svid.issued",
        &entry,
        &caller,
        serde_json::json!({"serial": svid.serial, "not_after": not_after}),
        Some((svid.serial.clone(), not_after)),
    )
    .await?;
    crate::server::metrics::svid_issued("workload");
    Ok(Json(WorkloadSvidResponse {
        spiffe_id: entry.spiffe_id,
        svid: pem_encode("CERTIFICATE", &svid.der),
        bundle,
        expires: not_after,
    }))
}

/// `POST /v1/workload/jwt`.
#[utoipa::path(post, path = "/v1/workload/jwt", summary = "Issue a JWT-SVID for a program's registration entry", tag = "workload",
    security(("svid" = [])), request_body = WorkloadJwtRequest,
    responses((status = 200, description = "A JWT-SVID naming the entry's SPIFFE ID", body = JwtResponse), HolderRefusals))]
pub async fn jwt(
    State(s): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<WorkloadJwtRequest>,
) -> Result<Json<JwtResponse>, ApiError> {
    let group = group_of(&s, &caller)?;
    let who = caller.clone();
    let (entry, svid, audience) = s
        .blocking(move |s| {
            let entry = entry_for(s, &who, &group, &req.entry_id)?;
            let ttl = super::jwt::lifetime(s, req.ttl_seconds)?;
            let svid = s
                .jwt
                .issue(&entry.spiffe_id, &req.audience, ttl)
                .map_err(|e| match e {
                    JwtError::BadRequest(r) => ApiError::bad_request(r),
                    e => ApiError::unavailable("the JWT key", e),
                })?;
            Ok::<_, ApiError>((entry, svid, req.audience))
        })
        .await??;
    record_issue(
        &s,
        "workload.jwt.issued",
        &entry,
        &caller,
        serde_json::json!({"jti": svid.jti, "audience": audience, "expires": svid.expires}),
        None,
    )
    .await?;
    crate::server::metrics::svid_issued("workload-jwt");
    Ok(Json(JwtResponse {
        token: svid.token,
        spiffe_id: entry.spiffe_id,
        expires: svid.expires,
    }))
}
