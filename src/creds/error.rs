//! Why a credential operation failed, whatever the engine.

use crate::store::StoreError;

/// Why a credential operation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// The place the credential lives (a database, the CA) is unreachable
    /// (503, with the cause).
    #[error("{0}")]
    Unavailable(String),
    /// The database refused a statement (502).
    #[error("{0}")]
    Refused(String),
    /// Revocation is behind on the connection: new users wait (503, with
    /// a time to try again).
    #[error("{0}")]
    Behind(String),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("the HSM: {0}")]
    Hsm(#[from] zeroth_hsm::HsmError),
}

/// Who asks for a credential: a SPIFFE ID and, for nodes, their group.
#[derive(Debug, Clone)]
pub struct Holder {
    pub spiffe_id: String,
    pub group: Option<String>,
    /// The local program the holder's agent asked for, as the agent
    /// reported it (its workload API: "uid 1001 pid 4242"), for the audit.
    pub workload: Option<String>,
}
