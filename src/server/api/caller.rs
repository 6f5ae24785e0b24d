//! The enrolled node behind an mTLS request: its SPIFFE ID, read from the
//! client certificate the TLS handshake verified against the zeroth CA.
//! Whether the node may still act (not revoked) is the handler's check,
//! against the store, at the time of the request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use crate::server::peer::PeerCertificate;
use crate::server::state::Shared;

/// A request made with a node's X.509-SVID.
#[derive(Debug, Clone)]
pub struct NodeCaller {
    pub node_id: String,
    pub spiffe_id: String,
    /// Serial of the presented SVID (hex, as the store records it).
    pub serial: String,
    /// The certified key: an uncompressed P-256 point.
    pub point: [u8; 65],
}

fn unauthenticated(reason: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthenticated",
        reason: reason.into(),
    }
}

/// Reads the node out of a verified certificate; `None` for anything that
/// is not a node SVID of `trust_domain`.
pub fn node_from_certificate(der: &[u8], trust_domain: &str) -> Result<NodeCaller, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or("the client certificate has no SPIFFE ID")?;
    let prefix = format!("spiffe://{trust_domain}/node/");
    let spiffe_id = san
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(&prefix) => Some((*u).to_owned()),
            _ => None,
        })
        .ok_or_else(|| format!("the client certificate is not a node SVID ({prefix}…)"))?;
    let node_id = spiffe_id[prefix.len()..].to_owned();
    let point: [u8; 65] = cert
        .public_key()
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| "the client certificate's key is not an uncompressed P-256 point")?;
    Ok(NodeCaller {
        node_id,
        spiffe_id,
        serial: hex::encode(cert.raw_serial()),
        point,
    })
}

impl FromRequestParts<Shared> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        let der = parts
            .extensions
            .get::<PeerCertificate>()
            .and_then(|p| p.0.clone())
            .ok_or_else(|| {
                unauthenticated("this endpoint needs mTLS with the node's X.509-SVID")
            })?;
        node_from_certificate(&der, &s.trust_domain).map_err(unauthenticated)
    }
}
