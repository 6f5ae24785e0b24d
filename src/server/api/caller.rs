//! Who is behind an mTLS request: its SPIFFE ID, read from the client
//! certificate the TLS handshake verified against the zeroth CA. Two kinds
//! of holders exist: enrolled TPM nodes (`/node/<id>`) and hosts on a
//! rotating token (`/token/<chain>`). Whether the holder may still act (not
//! revoked) is the handler's check, against the store, at the time of the
//! request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use crate::server::peer::PeerCertificate;
use crate::server::state::Shared;

/// What kind of identity an SVID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// An enrolled node; its key lives in its TPM.
    Node,
    /// A host without a TPM, on a rotating token chain.
    Token,
}

/// A request made with a node's or a token host's X.509-SVID (the
/// credential endpoints serve both).
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: CallerKind,
    /// The node id, or the token chain id.
    pub id: String,
    pub spiffe_id: String,
}

/// A request made with a node's X.509-SVID (identity renewal and JWTs are
/// for TPM nodes only).
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
        retry_after: None,
    }
}

/// Why a verified client certificate names no holder.
#[derive(Debug, thiserror::Error)]
pub enum NotAHolder {
    #[error("the client certificate does not parse: {0}")]
    Unparsable(String),
    #[error("the client certificate has no SPIFFE ID")]
    NoSpiffeId,
    #[error("the client certificate is neither a node nor a token-host SVID of {0}")]
    OtherId(String),
    #[error("the client certificate's key is not an uncompressed P-256 point")]
    NotP256,
}

/// Reads the holder out of a verified certificate; an error for anything
/// that is not a node or token-host SVID of `trust_domain`.
pub fn from_certificate(
    der: &[u8],
    trust_domain: &str,
) -> Result<(Caller, NodeCaller), NotAHolder> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| NotAHolder::Unparsable(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or(NotAHolder::NoSpiffeId)?;
    let base = format!("spiffe://{trust_domain}/");
    let (kind, spiffe_id, id) = san
        .value
        .general_names
        .iter()
        .find_map(|n| {
            let GeneralName::URI(u) = n else { return None };
            let rest = u.strip_prefix(&base)?;
            let (kind, id) = match rest.split_once('/')? {
                ("node", id) => (CallerKind::Node, id),
                ("token", id) => (CallerKind::Token, id),
                _ => return None,
            };
            (!id.is_empty() && !id.contains('/')).then(|| (kind, (*u).to_owned(), id.to_owned()))
        })
        .ok_or_else(|| NotAHolder::OtherId(base.clone()))?;
    let point: [u8; 65] = cert
        .public_key()
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| NotAHolder::NotP256)?;
    Ok((
        Caller {
            kind,
            id: id.clone(),
            spiffe_id: spiffe_id.clone(),
        },
        NodeCaller {
            node_id: id,
            spiffe_id,
            serial: hex::encode(cert.raw_serial()),
            point,
        },
    ))
}

fn verified(parts: &Parts, s: &Shared) -> Result<(Caller, NodeCaller), ApiError> {
    let der = parts
        .extensions
        .get::<PeerCertificate>()
        .and_then(|p| p.0.clone())
        .ok_or_else(|| unauthenticated("this endpoint needs mTLS with an X.509-SVID"))?;
    from_certificate(&der, &s.trust_domain).map_err(|e| unauthenticated(e.to_string()))
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        verified(parts, s).map(|(c, _)| c)
    }
}

impl FromRequestParts<Shared> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        match verified(parts, s)? {
            (c, node) if c.kind == CallerKind::Node => Ok(node),
            (c, _) => Err(ApiError::rejected(format!(
                "{} is a token host: this endpoint serves TPM nodes only",
                c.spiffe_id
            ))),
        }
    }
}
