//! Dynamic database users for enrolled nodes (mTLS), and their leases.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::caller::{Caller, CallerKind};
use super::error::{ApiError, JsonBody};
use super::openapi::HolderRefusals;
use crate::creds::{CredsError, Holder};
use crate::server::state::Shared;
use crate::store::leases::Lease;
use crate::store::nodes::{self, NodeState};
use crate::store::tokens;

use crate::wire::db::{CredsRequest, CredsResponse, RenewLeaseRequest};

impl From<CredsError> for ApiError {
    fn from(e: CredsError) -> Self {
        let e = match e {
            CredsError::Store(e) => return e.into(),
            other => other,
        };
        let (status, code) = match &e {
            CredsError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            CredsError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            CredsError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            CredsError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            CredsError::Behind(_) => {
                return ApiError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "busy",
                    reason: e.to_string(),
                    retry_after: Some(crate::creds::db::broker::BEHIND_RETRY),
                }
            }
            CredsError::Refused(_) => (StatusCode::BAD_GATEWAY, "database_refused"),
            CredsError::Store(_) | CredsError::Audit(_) | CredsError::Hsm(_) => {
                return ApiError::unavailable("the server's store", e)
            }
        };
        ApiError {
            status,
            code,
            reason: e.to_string(),
            retry_after: None,
        }
    }
}

/// The caller as a lease holder, if it may still act: an approved node, or
/// a token chain that was not revoked.
pub(super) fn holder(s: &Shared, caller: &Caller) -> Result<Holder, ApiError> {
    holder_for(s, caller, None)
}

use crate::wire::db::WORKLOAD_HEADER;

/// What the agent said of the program it asks for (printable, bounded).
pub(super) fn workload(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get(WORKLOAD_HEADER)?.to_str().ok()?;
    let v: String = v.chars().filter(|c| !c.is_control()).take(128).collect();
    (!v.is_empty()).then_some(v)
}

/// As [`holder`], recording the local program its agent asked for.
pub(super) fn holder_for(
    s: &Shared,
    caller: &Caller,
    workload: Option<String>,
) -> Result<Holder, ApiError> {
    // An indexed read on a read-only connection: quick, and it never waits
    // for the writer, so it runs here rather than on a blocking thread.
    let conn = s.store.read()?;
    let group = match caller.kind {
        CallerKind::Node => match nodes::node(&conn, &caller.id)? {
            Some(n) if n.state == NodeState::Approved => n.group,
            _ => {
                return Err(ApiError::rejected(format!(
                    "node {} is not approved",
                    caller.id
                )))
            }
        },
        CallerKind::Token => match tokens::chain(&conn, &caller.id)? {
            Some(chain) if !chain.revoked => chain.group,
            _ => {
                return Err(ApiError::rejected(format!(
                    "token chain {} was revoked",
                    caller.id
                )))
            }
        },
    };
    Ok(Holder {
        spiffe_id: caller.spiffe_id.clone(),
        group: Some(group),
        workload,
    })
}

/// `POST /v1/db/creds/{role}`.
#[utoipa::path(post, path = "/v1/db/creds/{role}", summary = "Issue a database user for a role", tag = "database",
    security(("svid" = [])), params(("role" = String, Path, description = "A database role of server.toml", example = "app-ro")), request_body = CredsRequest,
    responses((status = 200, description = "A new database user, dropped when its lease ends", body = CredsResponse), HolderRefusals))]
pub async fn creds(
    State(s): State<Shared>,
    Path(role): Path<String>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    JsonBody(req): JsonBody<CredsRequest>,
) -> Result<Json<CredsResponse>, ApiError> {
    let holder = holder_for(&s, &caller, workload(&headers))?;
    let db = s.db.clone();
    // Issued on its own task: a client that hangs up mid-request does not
    // cut issuance between the database and the ledger.
    let issued = tokio::spawn(async move {
        db.issue(&role, &holder, req.ttl_seconds.map(Duration::from_secs))
            .await
    })
    .await
    .map_err(|e| ApiError::unavailable("issuance", e))??;
    crate::server::metrics::db_creds_issued();
    Ok(Json(CredsResponse {
        lease_id: issued.lease.id.clone(),
        username: issued.lease.external_name.clone(),
        password: issued.password,
        expires: issued.lease.expires,
        engine: issued.engine.as_str().to_owned(),
        host: issued.host,
        port: issued.port,
        database: issued.dbname,
        tls_ca: issued.tls_ca,
    }))
}

/// `POST /v1/leases/{id}/renew`.
#[utoipa::path(post, path = "/v1/leases/{id}/renew", summary = "Extend a lease", tag = "database",
    security(("svid" = [])), params(("id" = String, Path, description = "The lease's id")), request_body = RenewLeaseRequest,
    responses((status = 200, description = "The lease with its new expiry", body = Lease), HolderRefusals))]
pub async fn renew(
    State(s): State<Shared>,
    Path(id): Path<String>,
    caller: Caller,
    JsonBody(req): JsonBody<RenewLeaseRequest>,
) -> Result<Json<Lease>, ApiError> {
    holder(&s, &caller)?;
    let lease = s.leases.lease(&id, Some(&caller.spiffe_id)).await?;
    let leases = s.leases.clone();
    let renewed = tokio::spawn(async move {
        leases
            .renew(&lease, req.increment_seconds.map(Duration::from_secs))
            .await
    })
    .await
    .map_err(|e| ApiError::unavailable("renewal", e))??;
    Ok(Json(renewed))
}

/// `POST /v1/leases/{id}/revoke`: a holder may always give its lease back.
#[utoipa::path(post, path = "/v1/leases/{id}/revoke", summary = "Give a lease back before it expires", tag = "database",
    security(("svid" = [])), params(("id" = String, Path, description = "The lease's id")),
    responses((status = 204, description = "Revoked: the user is dropped, or the certificate is in the KRL"), HolderRefusals))]
pub async fn revoke(
    State(s): State<Shared>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let lease = s.leases.lease(&id, Some(&caller.spiffe_id)).await?;
    let leases = s.leases.clone();
    tokio::spawn(async move { leases.revoke(&lease, "revoked by its holder").await })
        .await
        .map_err(|e| ApiError::unavailable("revocation", e))??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/db/session-events`: an agent reports the use of the sessions
/// its proxies relay.
#[utoipa::path(post, path = "/v1/db/session-events", summary = "Report the use of proxied database sessions", tag = "database",
    security(("svid" = [])), request_body = crate::wire::db::SessionEvents,
    responses((status = 200, description = "What was recorded in the audit", body = crate::wire::db::SessionEventsRecorded), HolderRefusals))]
pub async fn session_events(
    State(s): State<Shared>,
    caller: Caller,
    JsonBody(req): JsonBody<crate::wire::db::SessionEvents>,
) -> Result<Json<crate::wire::db::SessionEventsRecorded>, ApiError> {
    holder(&s, &caller)?;
    let leases = s.leases.clone();
    let spiffe = caller.spiffe_id.clone();
    let done = tokio::spawn(async move {
        crate::creds::db::sessions::record(&leases, &spiffe, req.events).await
    })
    .await
    .map_err(|e| ApiError::unavailable("recording session events", e))??;
    Ok(Json(done))
}
