//! Why an operator's request failed; the answer's `error` is its text.

use crate::audit::AuditError;
use crate::creds::ssh::ca::SshCaError;
use crate::creds::CredsError;
use crate::store::sql::SqlError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request is malformed, or names what the configuration lacks.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The current state forbids it (do something else first, or again).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sql(#[from] SqlError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Creds(#[from] CredsError),
    #[error("{0}")]
    SshCa(#[from] SshCaError),
    #[error("reading the snapshot: {0}")]
    Snapshot(std::io::Error),
}

/// The request's `"id"`, which `op` needs.
pub(super) fn need_id(req: &super::AdminRequest) -> Result<String, AdminError> {
    req.id
        .clone()
        .ok_or_else(|| AdminError::BadRequest(format!("{} needs an \"id\"", req.op)))
}
