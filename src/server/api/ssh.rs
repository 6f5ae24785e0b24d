//! SSH user and host certificates for enrolled nodes (mTLS), and the CA
//! keys that sshd and ssh trust.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::Json;

use super::caller::Caller;
use super::error::{ApiError, JsonBody};
use super::openapi::{HolderRefusals, Krl, Unavailable};
use crate::creds::ssh::ca_set::CaKind;
use crate::creds::ssh::issuer::SignRequest;
use crate::server::state::Shared;
use crate::wire::ssh::{SshSignRequest, SshSignResponse};

/// `POST /v1/ssh/sign/{role}`.
#[utoipa::path(post, path = "/v1/ssh/sign/{role}", summary = "Sign an SSH user certificate for a role", tag = "ssh",
    security(("svid" = [])),
    params(("role" = String, Path, description = "An SSH role of server.toml", example = "ops")),
    request_body = SshSignRequest,
    responses((status = 200, description = "An OpenSSH user certificate", body = SshSignResponse), HolderRefusals))]
pub async fn sign(
    State(s): State<Shared>,
    Path(role): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    JsonBody(req): JsonBody<SshSignRequest>,
) -> Result<Json<SshSignResponse>, ApiError> {
    let holder = super::db::holder_for(&s, &caller, super::db::workload(&headers))?;
    let signed = s
        .ssh
        .sign(
            role,
            holder,
            caller.id.clone(),
            peer.ip(),
            SignRequest {
                public_key: req.public_key,
                principals: req.principals,
                ttl: req.ttl_seconds.map(Duration::from_secs),
            },
        )
        .await?;
    Ok(Json(SshSignResponse {
        certificate: signed.certificate,
        serial: signed.serial,
        lease_id: signed.lease_id,
        principals: signed.principals,
        valid_before: signed.valid_before,
    }))
}

/// `GET /v1/ssh/ca/user`: the user CA keys sshd should trust, one OpenSSH
/// line each (the signing CA, then one published ahead of a rotation and
/// retired ones whose certificates may still be valid).
#[utoipa::path(get, path = "/v1/ssh/ca/user", summary = "The SSH user CA keys", tag = "ssh",
    responses((status = 200, description = "The user CA keys, one OpenSSH public key line each (for sshd's TrustedUserCAKeys)", body = String, content_type = "text/plain")))]
pub async fn user_ca(State(s): State<Shared>) -> String {
    s.ssh.published(CaKind::User)
}

/// `GET /v1/ssh/ca/host`: the host CA keys for `@cert-authority`, likewise.
#[utoipa::path(get, path = "/v1/ssh/ca/host", summary = "The SSH host CA keys", tag = "ssh",
    responses((status = 200, description = "The host CA keys, one OpenSSH public key line each (for @cert-authority)", body = String, content_type = "text/plain")))]
pub async fn host_ca(State(s): State<Shared>) -> String {
    s.ssh.published(CaKind::Host)
}

/// `GET /v1/ssh/krl`: the user CA's revocation list (binary, for sshd's
/// `RevokedKeys`).
#[utoipa::path(get, path = "/v1/ssh/krl", summary = "The SSH user CA's revocation list", tag = "ssh",
    responses((status = 200, description = "The user CA's key revocation list (OpenSSH KRL, binary)", body = inline(Krl), content_type = "application/octet-stream"), Unavailable))]
pub async fn krl(State(s): State<Shared>) -> Result<Vec<u8>, ApiError> {
    Ok(s.blocking(|s| s.ssh.krl(CaKind::User)).await??)
}

/// `GET /v1/ssh/krl/host`: the host CA's revocation list (binary, for the
/// clients' `RevokedHostKeys`).
#[utoipa::path(get, path = "/v1/ssh/krl/host", summary = "The SSH host CA's revocation list", tag = "ssh",
    responses((status = 200, description = "The host CA's key revocation list (OpenSSH KRL, binary)", body = inline(Krl), content_type = "application/octet-stream"), Unavailable))]
pub async fn host_krl(State(s): State<Shared>) -> Result<Vec<u8>, ApiError> {
    Ok(s.blocking(|s| s.ssh.krl(CaKind::Host)).await??)
}
