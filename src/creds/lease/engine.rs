//! What a credential engine does for the lease manager: undo, extend and
//! list the credentials it made where they live. Issuance is each
//! engine's own (a database user and a certificate are asked for
//! differently); it writes its lease through the [`super::Ledger`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::creds::CredsError;
use crate::store::leases::Lease;

/// A boxed future, so that engines can sit behind `dyn Engine`.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an engine's credentials are named in the audit log.
#[derive(Debug, Clone, Copy)]
pub struct AuditNames {
    /// Prefix of the lease events: `db.creds` gives `db.creds.revoked` and
    /// `db.creds.renewed`.
    pub events: &'static str,
    /// The detail key that carries the credential's name (`user`,
    /// `serial`).
    pub credential: &'static str,
    /// Prefix of the subject of a place the reconciler looked at (`db`
    /// gives `db/CONNECTION`); its event is `PLACE.stray.dropped`.
    pub place: &'static str,
}

/// One kind of credential: PostgreSQL/MariaDB users, SSH certificates.
pub trait Engine: Send + Sync {
    /// The lease kinds (the ledger's `kind` column) this engine answers
    /// for.
    fn kinds(&self) -> &'static [&'static str];

    /// How its credentials appear in the audit log.
    fn audit_names(&self) -> AuditNames;

    /// Whether the credential lives outside the ledger (a database user),
    /// so that a revocation is recorded `revoking` first and then undone
    /// where it lives. When false the record is the revocation (an SSH
    /// certificate, refused through the KRL built from the ledger) and
    /// [`Engine::revoke`] is never called.
    fn lives_outside(&self) -> bool;

    /// Undoes `lease`'s credential where it lives; whether it still
    /// existed. Undoing what is already gone succeeds.
    fn revoke<'a>(&'a self, lease: &'a Lease) -> Fut<'a, Result<bool, CredsError>>;

    /// Whether `lease`'s revocations are done in batches, so that many may
    /// be under way at once (one batch's worth) rather than a few.
    fn batches_revocations<'a>(&'a self, _lease: &'a Lease) -> Fut<'a, bool> {
        Box::pin(async { false })
    }

    /// How far a renewal of a lease of `role` extends it when the holder
    /// names no increment.
    fn default_ttl(&self, role: &str) -> Option<Duration>;

    /// Extends `lease`'s credential where it lives to `expires`.
    fn renew<'a>(&'a self, lease: &'a Lease, expires: i64) -> Fut<'a, Result<(), CredsError>>;

    /// The places the reconciler compares with the ledger (database
    /// connections); none where nothing lives outside it.
    fn places<'a>(&'a self) -> Fut<'a, Result<Vec<String>, CredsError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The credentials carrying zeroth's mark that exist at `place` now.
    fn existing<'a>(&'a self, _place: &'a str) -> Fut<'a, Result<Vec<String>, CredsError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Removes a credential at `place` that no lease accounts for.
    fn drop_stray<'a>(
        &'a self,
        _place: &'a str,
        _name: &'a str,
    ) -> Fut<'a, Result<(), CredsError>> {
        Box::pin(async { Ok(()) })
    }
}
