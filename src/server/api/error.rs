//! API errors: the status, a stable code and a reason safe to show the
//! caller, kept apart from the internal cause, which is only logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
    /// Seconds until the caller may try again (a `Retry-After` header).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "rejected",
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn not_found(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            reason: reason.into(),
            retry_after: None,
        }
    }
    /// Too many requests from one source: try again after `secs`.
    pub fn too_many(reason: impl Into<String>, secs: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_requests",
            reason: reason.into(),
            retry_after: Some(secs.max(1)),
        }
    }
    /// A failure of ours or of the hardware: the cause is logged, the
    /// caller learns only which part is unavailable.
    pub fn unavailable(what: &'static str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "{what} unavailable");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            reason: format!("{what} is unavailable; try again later"),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(super::openapi::ErrorBody {
                error: self.code,
                reason: self.reason,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Full { .. } => {
                tracing::error!(cause = %e, "the state storage is full");
                Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    reason: "the server's state storage is full; try again later".into(),
                    retry_after: None,
                }
            }
            _ => Self::unavailable("the server's state store", e),
        }
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        Self::unavailable("the audit log", e)
    }
}

/// A JSON body that, when malformed, is answered 400 with serde's reason
/// (which names the field), in the API's error format.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            // The body is already whole and within its limit (see
            // `whole_body`): what is left is a malformed one.
            Err(rejection) => Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                reason: rejection.body_text(),
                retry_after: None,
            }),
        }
    }
}

/// Decodes a base64 field, naming it when it is not base64.
pub fn b64(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| ApiError::bad_request(format!("`{field}` is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_full_state_storage_is_a_503_that_says_so() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (b BLOB); PRAGMA max_page_count = 4;")
            .unwrap();
        let err = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .map_err(StoreError::sql("recording a lease"))
            .unwrap_err();
        assert!(matches!(err, StoreError::Full { .. }), "{err}");
        // Jobs that shared the failed group commit hear the same reason.
        assert!(matches!(err.for_each_job(), StoreError::Full { .. }));
        let api = ApiError::from(err);
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            api.reason.contains("state storage is full"),
            "{}",
            api.reason
        );
    }
}
