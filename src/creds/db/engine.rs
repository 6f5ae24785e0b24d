//! PostgreSQL and MariaDB users as a credential engine of the lease
//! manager: a lease's user is dropped (its sessions ended) on revocation,
//! its expiry moved on renewal, and users with zeroth's prefix that no
//! lease accounts for are found per connection.

use std::sync::Arc;
use std::time::Duration;

use super::broker::DbBroker;
use super::DbError;
use crate::creds::lease::ledger::blocking;
use crate::creds::lease::{AuditNames, Engine, Fut};
use crate::creds::CredsError;
use crate::store::db_connections;
use crate::store::leases::Lease;

/// The lease kind of a database user.
pub const LEASE_KIND: &str = "db";

/// The database engine, over the broker's admin pools.
pub struct DbEngine(pub Arc<DbBroker>);

impl Engine for DbEngine {
    fn kinds(&self) -> &'static [&'static str] {
        &[LEASE_KIND]
    }

    fn audit_names(&self) -> AuditNames {
        AuditNames {
            events: "db.creds",
            credential: "user",
            place: "db",
        }
    }

    fn lives_outside(&self) -> bool {
        true
    }

    fn revoke<'a>(&'a self, lease: &'a Lease) -> Fut<'a, Result<bool, CredsError>> {
        Box::pin(async move {
            let (admin, _) = self.0.admin(&lease.connection).await?;
            let extra = self
                .0
                .role(&lease.role)
                .map(|r| r.revocation_statements.clone())
                .unwrap_or_default();
            let existed = admin
                .revoke(&lease.external_name, &extra)
                .await
                .inspect_err(|e| {
                    if matches!(e, DbError::Unavailable { .. }) {
                        // A pool that cannot log in may hold a password
                        // rotated since.
                        self.0.recheck(&lease.connection);
                    }
                })?;
            Ok(existed)
        })
    }

    fn batches_revocations<'a>(&'a self, lease: &'a Lease) -> Fut<'a, bool> {
        Box::pin(async move {
            self.0
                .admins
                .lock()
                .await
                .get(&lease.connection)
                .is_some_and(|(a, _)| a.batches_revocations())
        })
    }

    fn default_ttl(&self, role: &str) -> Option<Duration> {
        self.0.role(role).map(|r| r.default_ttl)
    }

    fn renew<'a>(&'a self, lease: &'a Lease, expires: i64) -> Fut<'a, Result<(), CredsError>> {
        Box::pin(async move {
            let (admin, _) = self.0.admin(&lease.connection).await?;
            let extra = self
                .0
                .role(&lease.role)
                .map(|r| r.renewal_statements.clone())
                .unwrap_or_default();
            admin.renew(&lease.external_name, expires, &extra).await?;
            Ok(())
        })
    }

    fn places<'a>(&'a self) -> Fut<'a, Result<Vec<String>, CredsError>> {
        Box::pin(async move {
            let st = self.0.ledger.store().clone();
            let rows = blocking(move || Ok(db_connections::connections(&st.lock())?)).await?;
            Ok(rows.into_iter().map(|c| c.name).collect())
        })
    }

    fn existing<'a>(&'a self, place: &'a str) -> Fut<'a, Result<Vec<String>, CredsError>> {
        Box::pin(async move {
            let (admin, _) = self.0.admin(place).await?;
            Ok(admin.dynamic_users().await?)
        })
    }

    fn drop_stray<'a>(&'a self, place: &'a str, name: &'a str) -> Fut<'a, Result<(), CredsError>> {
        Box::pin(async move {
            let (admin, _) = self.0.admin(place).await?;
            admin.revoke(name, &[]).await?;
            Ok(())
        })
    }
}
