//! JWT-SVIDs for enrolled nodes, and the OIDC discovery documents anyone
//! may read to verify them.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use super::caller::NodeCaller;
use super::error::{ApiError, JsonBody};
use super::openapi::NodeRefusals;
use crate::audit::{self, Event};
use crate::identity::jwt::JwtError;
use crate::server::state::{AppState, Shared};
use crate::store::nodes::{self, NodeState};
use crate::wire::jwt::{JwtRequest, JwtResponse};

/// `POST /v1/jwt`.
#[utoipa::path(post, path = "/v1/jwt", summary = "Issue a JWT-SVID for the node", tag = "jwt",
    security(("svid" = [])), request_body = JwtRequest,
    responses((status = 200, description = "A JWT-SVID naming the node", body = JwtResponse), NodeRefusals))]
pub async fn issue(
    State(s): State<Shared>,
    caller: NodeCaller,
    JsonBody(req): JsonBody<JwtRequest>,
) -> Result<Json<JwtResponse>, ApiError> {
    s.blocking(move |s| {
        let subject = format!("node/{}", caller.node_id);
        let node = nodes::node(&s.store.lock(), &caller.node_id)?;
        if node.as_ref().map(|n| n.state) != Some(NodeState::Approved) {
            return Err(super::refusal::refuse(
                s,
                "jwt.denied",
                "jwt",
                &subject,
                ApiError::rejected(format!(
                    "node {} is not approved: no JWT-SVID",
                    caller.node_id
                )),
            ));
        }
        let ttl = lifetime(s, req.ttl_seconds)?;
        let svid = s
            .jwt
            .issue(&caller.spiffe_id, &req.audience, ttl)
            .map_err(|e| match e {
                JwtError::BadRequest(r) => ApiError::bad_request(r),
                e => ApiError::unavailable("the JWT key", e),
            })?;
        let mut conn = s.store.lock();
        let tx = conn
            .transaction()
            .map_err(crate::store::StoreError::sql("starting a transaction"))?;
        audit::append(
            &tx,
            &Event {
                kind: "jwt.issued",
                subject: &subject,
                detail: serde_json::json!({"jti": svid.jti, "audience": req.audience, "expires": svid.expires}),
            },
        )?;
        tx.commit()
            .map_err(crate::store::StoreError::sql("committing a JWT issuance"))?;
        crate::server::metrics::svid_issued("jwt");
        Ok(JwtResponse {
            token: svid.token,
            spiffe_id: caller.spiffe_id,
            expires: svid.expires,
        })
    })
    .await?
    .map(Json)
}

/// A JWT-SVID's lifetime: the asked `ttl_seconds`, 10 s to the server's
/// `jwt_max_ttl` (the default).
pub(super) fn lifetime(s: &AppState, asked: Option<u64>) -> Result<Duration, ApiError> {
    match asked {
        None => Ok(s.jwt_max_ttl),
        Some(t) if t >= 10 && Duration::from_secs(t) <= s.jwt_max_ttl => Ok(Duration::from_secs(t)),
        Some(t) => Err(ApiError::bad_request(format!(
            "`ttl_seconds` is {t}; it must be 10 to {}",
            s.jwt_max_ttl.as_secs()
        ))),
    }
}

/// `GET /.well-known/openid-configuration`.
#[utoipa::path(get, path = "/.well-known/openid-configuration", summary = "OpenID Connect discovery document for JWT-SVIDs", tag = "jwt",
    responses((status = 200, description = "OpenID Connect discovery: the issuer and where its keys are", body = Object)))]
pub async fn discovery(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(s.jwt.discovery())
}

/// `GET /v1/jwks`.
#[utoipa::path(get, path = "/v1/jwks", summary = "The keys that verify JWT-SVIDs", tag = "jwt",
    responses((status = 200, description = "The JSON Web Key Set that verifies JWT-SVIDs", body = Object)))]
pub async fn jwks(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(s.jwt.jwks())
}
