use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::error::ApiError;
use super::openapi::Unavailable;
use std::time::Instant;

use crate::server::state::{AppState, Shared};

#[utoipa::path(get, path = "/healthz", summary = "Liveness", tag = "health",
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain", example = "ok\n")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers and the HSM signs (checked at most
/// once a second, whoever asks).
#[utoipa::path(get, path = "/readyz", summary = "Readiness: the store answers and the HSM signs", tag = "health",
    responses((status = 200, description = "The store answers and the HSM signs", body = String, content_type = "text/plain", example = "ready\n"), Unavailable))]
pub async fn readyz(State(s): State<Shared>) -> Result<&'static str, ApiError> {
    let outcome = match s.readiness.fresh(Instant::now()) {
        Some(outcome) => outcome,
        None => {
            s.blocking(|s| {
                let outcome = check(s).map_err(|e| crate::server::readiness::NotReady(e.reason));
                s.readiness.record(Instant::now(), outcome.clone());
                outcome
            })
            .await?
        }
    };
    outcome.map(|()| "ready\n").map_err(|why| ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        code: "unavailable",
        reason: why.0,
        retry_after: None,
    })
}

fn check(s: &AppState) -> Result<(), ApiError> {
    s.store
        .read()?
        .query_row("SELECT 1", (), |_| Ok(()))
        .map_err(crate::store::StoreError::sql("checking readiness"))?;
    let key = zeroth_hsm::KeyName::new(crate::server::tls::TLS_KEY)
        .map_err(|e| ApiError::unavailable("the HSM", e))?;
    s.keys
        .sign(&key, b"readiness")
        .map_err(|e| ApiError::unavailable("the HSM", e))?;
    Ok(())
}

/// The X.509 trust bundle (PEM): the CA that signs every SVID.
#[utoipa::path(get, path = "/v1/bundle", summary = "The X.509 trust bundle", tag = "health",
    responses((status = 200, description = "The X.509 trust bundle: the CA certificate that signs every SVID", body = String, content_type = "application/x-pem-file")))]
pub async fn bundle(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca.cert_pem(),
    )
}

/// Prometheus exposition.
#[utoipa::path(get, path = "/metrics", summary = "Prometheus metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"), Unavailable))]
pub async fn metrics(State(s): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let text = s
        .blocking(|s| crate::server::metrics::render(&s.metrics, &s.store, &s.leadership))
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
