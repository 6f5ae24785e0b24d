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
    /// Each kind of store failure is answered for what it is, and logged
    /// with its cause and kind.
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::Trouble;
        let trouble = e.trouble();
        let (status, code, reason, retry_after) = match trouble {
            Trouble::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server's state storage is full; try again later",
                None,
            ),
            Trouble::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server's state store is busy; try again in a moment",
                Some(1),
            ),
            Trouble::Unreachable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server's state store is unreachable; try again later",
                Some(5),
            ),
            Trouble::Fault => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server's state store failed this request; its operator has the cause in the server's log",
                None,
            ),
        };
        tracing::error!(cause = %e, kind = ?trouble, "the state store failed a request");
        Self {
            status,
            code,
            reason: reason.into(),
            retry_after,
        }
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        Self::unavailable("the audit log", e)
    }
}

/// A JSON body that, when malformed, is answered 400 with serde's reason
/// (which names the field), in the API's error format. Every request body
/// of the API is a JSON object: an array, which serde would otherwise take
/// for a struct's fields in order, is refused too.
pub struct JsonBody<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is already whole in memory (see `whole_body`): holding
        // on to it is a reference count.
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, super::MAX_BODY)
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        let req = axum::extract::Request::from_parts(parts, bytes.clone().into());
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) if is_object(&bytes) => Ok(Self(v)),
            Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
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

/// Whether a JSON text is an object (it starts with `{`).
fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
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

    #[derive(Debug, serde::Deserialize)]
    struct AllOptional {
        #[serde(default)]
        ttl_seconds: Option<u64>,
    }

    async fn body(text: &'static str) -> Result<AllOptional, ApiError> {
        use axum::extract::FromRequest;
        let req = axum::extract::Request::builder()
            .method("POST")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(text))
            .unwrap();
        JsonBody::<AllOptional>::from_request(req, &())
            .await
            .map(|b| b.0)
    }

    #[tokio::test]
    async fn a_body_is_a_json_object_even_where_serde_would_take_an_array() {
        assert_eq!(body("{}").await.unwrap().ttl_seconds, None);
        assert_eq!(
            body(" \n{\"ttl_seconds\": 60}").await.unwrap().ttl_seconds,
            Some(60)
        );
        for not_an_object in ["[]", "[60]", " [null]"] {
            let e = body(not_an_object).await.unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{not_an_object}");
            assert_eq!(
                e.reason, "the body must be a JSON object",
                "{not_an_object}"
            );
        }
        // Malformed JSON keeps serde's own reason.
        let e = body("{\"ttl_seconds\": \"x\"}").await.unwrap_err();
        assert!(e.reason.contains("ttl_seconds"), "{}", e.reason);
    }

    /// A store file whose write lock another connection holds.
    fn locked_store() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER); BEGIN IMMEDIATE;",
            )
            .unwrap();
        (dir, holder)
    }

    #[test]
    fn a_busy_store_is_a_503_busy_with_retry_after_and_a_fault_is_a_500() {
        let (dir, _holder) = locked_store();
        let other = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
        let err = other
            .execute("INSERT INTO t VALUES (1)", [])
            .map_err(StoreError::sql("recording a lease"))
            .unwrap_err();
        assert_eq!(err.trouble(), crate::store::Trouble::Busy, "{err}");
        // Jobs that shared a failed group commit hear the same kind.
        assert_eq!(err.for_each_job().trouble(), crate::store::Trouble::Busy);
        let api = ApiError::from(err.for_each_job());
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!((api.code, api.retry_after), ("busy", Some(1)));

        // A record that cannot be read back is the server's fault, not a
        // passing unavailability.
        let api = ApiError::from(StoreError::Malformed {
            what: "lease",
            reason: "bad state".into(),
        });
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(api.code, "internal");
        assert!(!api.reason.contains("bad state"), "{}", api.reason);
    }

    #[test]
    fn a_writer_waits_for_a_lock_held_for_seconds_rather_than_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = crate::store::Store::open(&path).unwrap();
        store
            .lock()
            .execute_batch("CREATE TABLE t (v INTEGER)")
            .unwrap();
        // Another process (an offline command, say) takes the write lock.
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(6));
            holder.execute_batch("COMMIT").unwrap();
        });
        let started = std::time::Instant::now();
        // A transaction that reads before it writes, as lease changes do.
        let mut conn = store.lock();
        let tx = conn.transaction().expect("the writer waits for the lock");
        let n: i64 = tx
            .query_row("SELECT count(*) FROM t", (), |r| r.get(0))
            .unwrap();
        tx.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
        tx.commit().unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_secs(5));
        release.join().unwrap();
    }

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
