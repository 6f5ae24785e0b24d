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
    /// base64) over [`proof_message`] of the token and the attempt.
    #[schema(format = Byte)]
    pub proof: String,
    /// Which try of this exchange it is: 0, then 1, 2 … when a reply was
    /// lost. The proof covers it and the server takes each number once, so
    /// a request copied and sent again is refused while the host's own
    /// retry, signed anew, gets the same next token. (Absent from agents
    /// before this field; such requests keep the older rule.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub attempt: Option<u32>,
}

/// What a host signs to exchange `token`: a domain tag, the attempt
/// (4 bytes, big-endian) and the token; without an attempt, the older
/// tag and the token.
pub fn proof_message(token: &str, attempt: Option<u32>) -> Vec<u8> {
    match attempt {
        Some(n) => [
            b"zeroth token exchange v2\0".as_slice(),
            &n.to_be_bytes(),
            token.as_bytes(),
        ]
        .concat(),
        None => [b"zeroth token exchange\0".as_slice(), token.as_bytes()].concat(),
    }
}

impl ExchangeRequest {
    /// The first request that exchanges `token` for an SVID of `key`, with
    /// the proof that the caller holds `key`.
    pub fn new(token: SecretString, key: &p256::ecdsa::SigningKey) -> Self {
        Self::attempt(token, key, 0)
    }

    /// Try `attempt` of the exchange (a retry after a lost reply uses the
    /// same key and the next number).
    pub fn attempt(token: SecretString, key: &p256::ecdsa::SigningKey, attempt: u32) -> Self {
        use base64::Engine;
        use p256::ecdsa::signature::Signer;
        let b64 = base64::engine::general_purpose::STANDARD;
        let signature: p256::ecdsa::Signature =
            key.sign(&proof_message(token.expose_secret(), Some(attempt)));
        Self {
            public_key: b64.encode(key.verifying_key().to_encoded_point(false).as_bytes()),
            proof: b64.encode(signature.to_bytes()),
            attempt: Some(attempt),
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
