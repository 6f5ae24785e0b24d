//! Every request body is read whole (up to [`super::MAX_BODY`]) before the
//! handler runs. A handler that refuses a caller before reading the body
//! (no SVID, a token host at a node-only endpoint) would otherwise leave it
//! unread, and the HTTP layer then closes the connection after answering,
//! without saying so: a client that reuses the connection, as HTTP/1.1
//! allows, meets a reset on its next request.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

pub async fn read_whole_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let probe = Request::from_parts(parts.clone(), body);
    match Bytes::from_request(probe, &()).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(rejection) => {
            let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
            let mut response = ApiError {
                status: rejection.status(),
                code: if too_large {
                    "payload_too_large"
                } else {
                    "bad_request"
                },
                reason: rejection.body_text(),
                retry_after: None,
            }
            .into_response();
            // The rest of the body is left unread: this connection ends.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}
