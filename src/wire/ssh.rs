//! Bodies of OpenSSH certificate signing (`/v1/ssh/…`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSignRequest {
    /// OpenSSH public key line.
    pub public_key: String,
    /// Principals wanted (default: all the role allows).
    pub principals: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::wire::seconds::deserialize")]
    #[schema(maximum = 4294967295.0)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SshSignResponse {
    /// OpenSSH certificate line (`…-cert-v01@openssh.com …`).
    pub certificate: String,
    pub serial: u64,
    pub lease_id: String,
    pub principals: Vec<String>,
    pub valid_before: i64,
}
