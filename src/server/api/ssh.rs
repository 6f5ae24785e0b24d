//! SSH user and host certificates for enrolled nodes (mTLS), and the CA
//! keys that sshd and ssh trust.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::Json;

use super::caller::Caller;
use super::error::{ApiError, JsonBody};
use crate::creds::ssh::issuer::{CaKind, SignRequest};
use crate::server::state::Shared;
use crate::wire::ssh::{SshSignRequest, SshSignResponse};

/// `POST /v1/ssh/sign/{role}`.
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
pub async fn user_ca(State(s): State<Shared>) -> String {
    s.ssh.published(CaKind::User)
}

/// `GET /v1/ssh/ca/host`: the host CA keys for `@cert-authority`, likewise.
pub async fn host_ca(State(s): State<Shared>) -> String {
    s.ssh.published(CaKind::Host)
}

/// `GET /v1/ssh/krl`: the user CA's revocation list (binary, for sshd's
/// `RevokedKeys`).
pub async fn krl(State(s): State<Shared>) -> Result<Vec<u8>, ApiError> {
    Ok(s.blocking(|s| s.ssh.krl(CaKind::User)).await??)
}

/// `GET /v1/ssh/krl/host`: the host CA's revocation list (binary, for the
/// clients' `RevokedHostKeys`).
pub async fn host_krl(State(s): State<Shared>) -> Result<Vec<u8>, ApiError> {
    Ok(s.blocking(|s| s.ssh.krl(CaKind::Host)).await??)
}
