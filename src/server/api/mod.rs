//! The HTTPS JSON API. Errors are `{"error": code, "reason": text}`.

pub mod enroll;
pub mod error;
mod health;
pub mod token;

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
        .route("/v1/token/exchange", post(token::exchange))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
