//! JWT-SVIDs for this node, asked for over mTLS with its X.509-SVID.

use super::enrol::{post_json, AgentError, EnrolOptions, Enrolment};
use crate::wire::jwt::{JwtRequest, JwtResponse};

/// A JWT-SVID for `audience`, valid `ttl_seconds` (the server's maximum
/// when `None`). `svid_pem` is the node's current X.509-SVID.
pub fn jwt(
    opts: &EnrolOptions,
    svid_pem: &str,
    audience: &[String],
    ttl_seconds: Option<u64>,
) -> Result<JwtResponse, AgentError> {
    let e = Enrolment::open(&opts.tcti, &opts.state_dir)?;
    let client = e.mtls_client(&opts.ca_bundle, svid_pem)?;
    let request = JwtRequest {
        audience: audience.to_vec(),
        ttl_seconds,
    };
    super::servers::first_answer(&opts.server, |base| {
        post_json(&client, &format!("{base}/v1/jwt"), &request)
    })
}
