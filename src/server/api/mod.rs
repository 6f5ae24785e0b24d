//! The HTTPS JSON API. Errors are `{"error": code, "reason": text}`.

pub mod caller;
pub mod db;
pub mod enroll;
pub mod error;
mod health;
pub mod identity;
pub mod jwt;
mod refusal;
pub mod ssh;
pub mod token;
pub mod workload;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use super::state::Shared;

/// Request bodies larger than this are refused (413): enrolment messages
/// are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/bundle", get(health::bundle))
        .route("/metrics", get(health::metrics))
        .route("/v1/enroll/begin", post(enroll::begin))
        .route("/v1/enroll/finish", post(enroll::finish))
        .route("/v1/identity/challenge", post(identity::challenge))
        .route("/v1/identity/renew", post(identity::renew))
        .route("/v1/jwt", post(jwt::issue))
        .route("/.well-known/openid-configuration", get(jwt::discovery))
        .route("/v1/jwks", get(jwt::jwks))
        .route("/v1/token/exchange", post(token::exchange))
        .route("/v1/db/creds/{role}", post(db::creds))
        .route("/v1/ssh/sign/{role}", post(ssh::sign))
        .route("/v1/ssh/ca/user", get(ssh::user_ca))
        .route("/v1/ssh/ca/host", get(ssh::host_ca))
        .route("/v1/ssh/krl", get(ssh::krl))
        .route("/v1/ssh/krl/host", get(ssh::host_krl))
        .route("/v1/db/session-events", post(db::session_events))
        .route("/v1/leases/{id}/renew", post(db::renew))
        .route("/v1/leases/{id}/revoke", post(db::revoke))
        .route("/v1/entries", get(workload::list))
        .route("/v1/workload/x509", post(workload::x509))
        .route("/v1/workload/jwt", post(workload::jwt))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
