//! Bodies of JWT-SVID issuance (`/v1/jwt`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtRequest {
    /// Who the token is for (its `aud` claim): 1 to 8 audiences.
    #[schema(min_items = 1, max_items = 8, example = json!(["payments-db"]))]
    pub audience: Vec<String>,
    /// Lifetime in seconds (default and maximum: the server's `jwt_max_ttl`).
    #[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]
    #[schema(maximum = 4294967295.0)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct JwtResponse {
    pub token: String,
    pub spiffe_id: String,
    pub expires: i64,
}

impl std::fmt::Debug for JwtResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtResponse")
            .field("token", &"[REDACTED]")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires", &self.expires)
            .finish()
    }
}
