//! Bodies of enrolment (`/v1/enroll/begin`, `/v1/enroll/finish`) and of
//! the renewal of a node's SVID over mTLS (`/v1/identity/…`).

use serde::{Deserialize, Serialize};

pub use super::node::NodeState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    #[schema(example = "edge")]
    pub group: String,
    /// The node's name for itself (shown to operators).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,253}$", example = "web-01")]
    pub hostname: String,
    /// TPM2B_PUBLIC of the EK, base64.
    #[schema(format = Byte)]
    pub ek_public: String,
    /// DER EK certificate from NV, base64.
    #[schema(format = Byte)]
    pub ek_certificate: Option<String>,
    /// TPM2B_PUBLIC of the AK, base64.
    #[schema(format = Byte)]
    pub ak_public: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BeginResponse {
    pub challenge_id: String,
    /// TPM2B_ID_OBJECT contents, base64.
    #[schema(format = Byte)]
    pub credential_blob: String,
    /// TPM2B_ENCRYPTED_SECRET contents, base64.
    #[schema(format = Byte)]
    pub encrypted_secret: String,
    /// Qualifying data for the quote and the certification, base64.
    #[schema(format = Byte)]
    pub nonce: String,
    /// SHA-256 PCRs to quote.
    pub pcrs: Vec<u8>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub challenge_id: String,
    /// The secret ActivateCredential recovered, base64.
    #[schema(format = Byte)]
    pub secret: String,
    /// TPMS_ATTEST of the quote, base64.
    #[schema(format = Byte)]
    pub quote_attest: String,
    /// TPMT_SIGNATURE of the quote, base64.
    #[schema(format = Byte)]
    pub quote_signature: String,
    /// "sha256:<index>" -> hex value of each quoted PCR.
    pub pcrs: std::collections::BTreeMap<String, String>,
    /// TPM2B_PUBLIC of the TPM-resident identity key, base64.
    #[schema(format = Byte)]
    pub identity_key: String,
    /// TPMS_ATTEST of TPM2_Certify(identity key, AK), base64.
    #[schema(format = Byte)]
    pub certify_attest: String,
    /// TPMT_SIGNATURE of the certification, base64.
    #[schema(format = Byte)]
    pub certify_signature: String,
    /// The node's TCG event log, base64, for groups whose policy reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<String>,
}

impl std::fmt::Debug for FinishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishRequest")
            .field("challenge_id", &self.challenge_id)
            .field("secret", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishResponse {
    pub node_id: String,
    pub state: NodeState,
    pub spiffe_id: String,
    /// The node's X.509-SVID (PEM), when approved.
    pub svid: Option<String>,
    /// The trust bundle (PEM).
    pub bundle: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewChallenge {
    pub challenge_id: String,
    /// Qualifying data for the quote, base64.
    #[schema(format = Byte)]
    pub nonce: String,
    /// SHA-256 PCRs to quote.
    pub pcrs: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub challenge_id: String,
    /// TPMS_ATTEST of the quote, base64.
    #[schema(format = Byte)]
    pub quote_attest: String,
    /// TPMT_SIGNATURE of the quote, base64.
    #[schema(format = Byte)]
    pub quote_signature: String,
    /// "sha256:<index>" -> hex value of each quoted PCR.
    pub pcrs: std::collections::BTreeMap<String, String>,
    /// The node's TCG event log, base64, for groups whose policy reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewResponse {
    pub spiffe_id: String,
    /// The new X.509-SVID (PEM).
    pub svid: String,
    /// The trust bundle (PEM).
    pub bundle: String,
}
