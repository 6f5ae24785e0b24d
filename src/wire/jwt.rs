//! Bodies of JWT-SVID issuance (`/v1/jwt`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtRequest {
    #[schema(schema_with = audiences)]
    pub audience: Vec<String>,
    /// Lifetime in seconds, at least 10 (default and maximum: the server's
    /// `jwt_max_ttl`).
    #[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]
    #[schema(minimum = 10, maximum = 4294967295.0)]
    pub ttl_seconds: Option<u64>,
}

/// The most audiences one JWT-SVID may name.
pub const MAX_AUDIENCES: usize = 8;
/// The most characters one audience may have.
pub const MAX_AUDIENCE_CHARS: usize = 256;

/// The `audience` of a JWT-SVID request, as the server checks it: 1 to
/// [`MAX_AUDIENCES`] entries of 1 to [`MAX_AUDIENCE_CHARS`] characters,
/// none of them a control character.
pub fn audiences() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .description(Some(
            "Who the token is for (its `aud` claim): 1 to 8 audiences of 1 to 256 characters, none of them a control character",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_AUDIENCE_CHARS))
                .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$")),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_AUDIENCES))
        .examples([serde_json::json!(["payments-db"])])
        .build()
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
