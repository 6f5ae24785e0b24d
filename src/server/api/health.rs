use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::error::ApiError;
use crate::server::state::Shared;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers and the HSM signs.
pub async fn readyz(State(s): State<Shared>) -> Result<&'static str, ApiError> {
    s.blocking(|s| -> Result<(), ApiError> {
        s.store.schema_version()?;
        let key = zeroth_hsm::KeyName::new(crate::server::tls::TLS_KEY)
            .map_err(|e| ApiError::unavailable("the HSM", e))?;
        s.keys
            .sign(&key, b"readiness")
            .map_err(|e| ApiError::unavailable("the HSM", e))?;
        Ok(())
    })
    .await??;
    Ok("ready\n")
}

/// The X.509 trust bundle (PEM): the CA that signs every SVID.
pub async fn bundle(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca.cert_pem(),
    )
}

/// Prometheus exposition.
pub async fn metrics(State(s): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let text = s
        .blocking(|s| crate::server::metrics::render(&s.metrics, &s.store))
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
