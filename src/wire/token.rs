//! Bodies of the token exchange (`/v1/token/exchange`): a host without a
//! TPM trades its rotating token, with proof that it holds a key, for an
//! X.509-SVID of that key and the next token.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    #[serde(with = "crate::wire::secret")]
    #[schema(value_type = String)]
    pub token: SecretString,
    /// The host's ECDSA P-256 public key, uncompressed SEC1 point, base64.
    #[schema(format = Byte)]
    pub public_key: String,
    /// Proof that the caller holds the key: its ECDSA signature (r || s,
    /// base64) over [`proof_message`] of the token.
    #[schema(format = Byte)]
    pub proof: String,
}

/// What a host signs to exchange `token`: a domain tag, then the token.
pub fn proof_message(token: &str) -> Vec<u8> {
    [b"zeroth token exchange\0".as_slice(), token.as_bytes()].concat()
}

impl ExchangeRequest {
    /// The request that exchanges `token` for an SVID of `key`, with the
    /// proof that the caller holds `key`.
    pub fn new(token: SecretString, key: &p256::ecdsa::SigningKey) -> Self {
        use base64::Engine;
        use p256::ecdsa::signature::Signer;
        let b64 = base64::engine::general_purpose::STANDARD;
        let signature: p256::ecdsa::Signature = key.sign(&proof_message(token.expose_secret()));
        Self {
            public_key: b64.encode(key.verifying_key().to_encoded_point(false).as_bytes()),
            proof: b64.encode(signature.to_bytes()),
            token,
        }
    }
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("token", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExchangeResponse {
    /// The next token; the one presented no longer works.
    #[serde(with = "crate::wire::secret")]
    #[schema(value_type = String)]
    pub token: SecretString,
    pub token_expires: i64,
    pub spiffe_id: String,
    pub svid: String,
    pub bundle: String,
}

impl std::fmt::Debug for ExchangeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeResponse")
            .field("token", &"[REDACTED]")
            .field("spiffe_id", &self.spiffe_id)
            .finish_non_exhaustive()
    }
}
