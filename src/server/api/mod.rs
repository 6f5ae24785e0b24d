//! The HTTPS JSON API. Errors are `{"error": code, "reason": text}`.

pub mod caller;
pub mod db;
pub mod enroll;
pub mod error;
mod health;
pub mod identity;
pub mod jwt;
pub mod openapi;
mod refusal;
pub mod ssh;
pub mod token;
mod whole_body;
pub mod workload;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::Shared;

/// Request bodies larger than this are refused (413): enrolment messages
/// are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Every route with its OpenAPI description: the router and the document
/// are made from the same list.
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::bundle))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::serve))
        .routes(routes!(enroll::begin))
        .routes(routes!(enroll::finish))
        .routes(routes!(identity::challenge))
        .routes(routes!(identity::renew))
        .routes(routes!(jwt::issue))
        .routes(routes!(jwt::discovery))
        .routes(routes!(jwt::jwks))
        .routes(routes!(token::exchange))
        .routes(routes!(db::creds))
        .routes(routes!(db::renew))
        .routes(routes!(db::revoke))
        .routes(routes!(db::session_events))
        .routes(routes!(ssh::sign))
        .routes(routes!(ssh::user_ca))
        .routes(routes!(ssh::host_ca))
        .routes(routes!(ssh::krl))
        .routes(routes!(ssh::host_krl))
        .routes(routes!(workload::list))
        .routes(routes!(workload::x509))
        .routes(routes!(workload::jwt))
}

pub fn router(state: Shared) -> Router {
    let (router, _) = routes().split_for_parts();
    router
        .layer(axum::middleware::from_fn(whole_body::read_whole_body))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
