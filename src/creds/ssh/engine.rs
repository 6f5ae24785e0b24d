//! OpenSSH certificates as a credential engine of the lease manager. A
//! certificate lives nowhere but in its holder's hands: its lease's record
//! is its revocation (the KRL is built from the ledger), it cannot be
//! extended (the holder asks for a new one), and there is nothing to
//! reconcile.

use std::time::Duration;

use crate::creds::lease::{AuditNames, Engine, Fut};
use crate::creds::CredsError;
use crate::store::leases::Lease;

/// The lease kinds of user and host certificates.
pub const USER_KIND: &str = "ssh";
pub const HOST_KIND: &str = "ssh-host";

pub struct SshEngine;

impl Engine for SshEngine {
    fn kinds(&self) -> &'static [&'static str] {
        &[USER_KIND, HOST_KIND]
    }

    fn audit_names(&self) -> AuditNames {
        AuditNames {
            events: "ssh.cert",
            credential: "serial",
            place: "ssh",
        }
    }

    fn lives_outside(&self) -> bool {
        false
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> Fut<'a, Result<bool, CredsError>> {
        // Never called: the ledger's record is the revocation.
        Box::pin(async { Ok(true) })
    }

    fn default_ttl(&self, _role: &str) -> Option<Duration> {
        None
    }

    fn renew<'a>(&'a self, lease: &'a Lease, _expires: i64) -> Fut<'a, Result<(), CredsError>> {
        Box::pin(async move {
            Err(CredsError::Forbidden(format!(
                "lease {} is an SSH certificate, whose validity is signed into it: ask for a new certificate instead",
                lease.id
            )))
        })
    }
}
