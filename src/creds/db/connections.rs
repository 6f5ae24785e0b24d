//! Database connections: adding one (after proving the admin can make
//! and remove users), removing one, and rotating its admin password so
//! that only the HSM-sealed store knows it.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use zeroth_hsm::{Binding, Sealer};

use super::broker::DbBroker;
use super::secret;
use super::{DbAdmin, DbError, Engine, Target};
use crate::audit::Event;
use crate::creds::lease::ledger::{blocking, record};
use crate::creds::CredsError;
use crate::store::db_connections::{self, DbConnectionRow};
use crate::store::leases;
use crate::store::{now, StoreError};

/// Opens every sealed admin password in `conn` with `sealer` (and drops
/// it at once): how a restore proves the HSM's store key is the one the
/// store was sealed with. The number opened, or the first that fails.
pub fn open_every_sealed(
    conn: &crate::store::sql::Conn,
    sealer: &Sealer,
) -> Result<usize, CredsError> {
    let mut opened = 0;
    for row in db_connections::connections(conn)? {
        let sealed = std::iter::once(&row.sealed_password).chain(row.pending_password.as_ref());
        for s in sealed {
            sealer.open(binding(&row.name), s).map_err(|e| {
                CredsError::Unavailable(format!(
                    "the admin password of database connection {}: {e}",
                    row.name
                ))
            })?;
            opened += 1;
        }
    }
    Ok(opened)
}

pub(super) fn binding(name: &str) -> Binding<'_> {
    Binding {
        table: "db_connections",
        record: name,
        column: "admin_password",
    }
}

/// A new connection's description.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    pub name: String,
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub admin_user: String,
    /// PEM CA for TLS with full verification.
    pub tls_ca: Option<Vec<u8>>,
}

impl DbBroker {
    /// Adds (or replaces) a connection after proving its credentials.
    pub async fn add_connection(
        self: &Arc<Self>,
        spec: ConnectionSpec,
        password: SecretString,
        by_uid: u32,
    ) -> Result<(), CredsError> {
        let target = Target {
            engine: spec.engine,
            host: spec.host.clone(),
            port: spec.port,
            dbname: spec.dbname.clone(),
            admin_user: spec.admin_user.clone(),
            admin_password: password.clone(),
            tls_ca: spec.tls_ca.clone(),
        };
        let admin = Arc::new(DbAdmin::connect(target).await?);
        // Checked now, not at the first revocation: an admin that can make
        // users but not drop them would leave every lease `revoking`.
        admin.probe().await.map_err(|e| match e {
            DbError::Statement { reason, .. } => CredsError::BadRequest(format!(
                "{} on {}:{} can make a user but not remove it completely ({reason}); {}",
                spec.admin_user,
                spec.host,
                spec.port,
                match spec.engine {
                    Engine::Postgres => "PostgreSQL needs an admin that is SUPERUSER, or (PostgreSQL 16 and later) has CREATEROLE with ADMIN on the roles it makes, to run DROP OWNED BY on them",
                    Engine::MariaDb => "MariaDB needs CREATE USER, the privileges it grants WITH GRANT OPTION, CONNECTION ADMIN (or SUPER) to end sessions, and rights on the zeroth schema",
                }
            )),
            other => other.into(),
        })?;
        let me = self.clone();
        let s = spec.clone();
        blocking(move || {
            let sealed = me
                .sealer
                .seal(binding(&s.name), password.expose_secret().as_bytes())?;
            record(
                me.ledger.store(),
                |tx| {
                    db_connections::save_connection(
                        tx,
                        &DbConnectionRow {
                            name: s.name.clone(),
                            engine: s.engine.as_str().into(),
                            host: s.host.clone(),
                            port: s.port,
                            dbname: s.dbname.clone(),
                            admin_user: s.admin_user.clone(),
                            sealed_password: sealed,
                            created: now(),
                            rotated: None,
                            tls_ca: s.tls_ca.clone(),
                            pending_password: None,
                        },
                    )
                    .map(|()| true)
                },
                Event {
                    kind: "db.connection.added",
                    subject: &format!("db/{}", s.name),
                    detail: serde_json::json!({"engine": s.engine.as_str(), "host": s.host, "port": s.port, "dbname": s.dbname, "admin_user": s.admin_user, "tls": s.tls_ca.is_some(), "by_uid": by_uid}),
                },
            )
        })
        .await?;
        // The next use opens a pool from the stored row.
        drop(admin);
        self.admins.lock().await.remove(&spec.name);
        Ok(())
    }

    /// Gives the admin user a new random password that only the HSM-sealed
    /// store knows, so no human knows it afterwards. The new password is
    /// stored (sealed, as pending) before the database changes and made
    /// current after: a crash at any point leaves a password zeroth knows,
    /// and the next opening of the connection finishes the switch.
    pub async fn rotate_root(self: &Arc<Self>, name: &str, by_uid: u32) -> Result<(), CredsError> {
        let (admin, row) = self.admin(name).await?;
        let new = secret::password();
        let (me, n, p) = (self.clone(), name.to_owned(), new.clone());
        let sealed = blocking(move || {
            let sealed = me.sealer.seal(binding(&n), p.expose_secret().as_bytes())?;
            let mut conn = me.ledger.store().lock();
            let tx = conn
                .transaction()
                .map_err(StoreError::sql("starting a transaction"))?;
            db_connections::set_pending_password(&tx, &n, &sealed)?;
            tx.commit()
                .map_err(StoreError::sql("committing a pending password"))?;
            Ok(sealed)
        })
        .await?;
        crash_point("rotate-root:pending-stored");
        // From here the pool's password may be stale: a failure reopens it.
        self.admins.lock().await.remove(name);
        admin.set_admin_password(&new).await?;
        crash_point("rotate-root:database-changed");
        let rotated = self
            .make_pending_current(row, sealed, serde_json::json!({"by_uid": by_uid}))
            .await?;
        let mut target = self.target(&rotated)?;
        target.admin_password = new;
        let fresh = Arc::new(DbAdmin::connect(target).await?);
        self.admins
            .lock()
            .await
            .insert(name.to_owned(), (fresh, rotated));
        Ok(())
    }

    /// Makes the pending admin password `sealed` the connection's current
    /// one, with its audit event (`detail` plus the admin user): the row as
    /// it now is.
    pub(super) async fn make_pending_current(
        self: &Arc<Self>,
        row: DbConnectionRow,
        sealed: Vec<u8>,
        mut detail: serde_json::Value,
    ) -> Result<DbConnectionRow, CredsError> {
        detail["admin_user"] = row.admin_user.clone().into();
        let (me, name) = (self.clone(), row.name.clone());
        blocking(move || {
            record(
                me.ledger.store(),
                |tx| db_connections::switch_to_pending(tx, &name),
                Event {
                    kind: "db.connection.rotated",
                    subject: &format!("db/{name}"),
                    detail,
                },
            )
        })
        .await?;
        Ok(DbConnectionRow {
            sealed_password: sealed,
            pending_password: None,
            rotated: Some(now()),
            ..row
        })
    }

    pub async fn remove_connection(
        self: &Arc<Self>,
        name: &str,
        by_uid: u32,
    ) -> Result<bool, CredsError> {
        let (st, n) = (self.ledger.store().clone(), name.to_owned());
        let removed = blocking(move || {
            let live = leases::live(&st.lock(), None, None)?
                .into_iter()
                .filter(|l| l.connection == n)
                .count();
            if live > 0 {
                return Err(CredsError::Forbidden(format!(
                    "connection {n} still has {live} live lease(s); revoke them first"
                )));
            }
            let mut removed = false;
            record(
                &st,
                |tx| {
                    removed = db_connections::remove_connection(tx, &n)?;
                    Ok(true)
                },
                Event {
                    kind: "db.connection.removed",
                    subject: &format!("db/{n}"),
                    detail: serde_json::json!({"by_uid": by_uid}),
                },
            )?;
            Ok(removed)
        })
        .await?;
        self.admins.lock().await.remove(name);
        Ok(removed)
    }
}

/// Where a debug build dies on purpose when `ZEROTH_CRASH_AT` names the
/// step, so tests can prove that a crash there loses nothing. Release
/// builds have no such switch.
fn crash_point(step: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("ZEROTH_CRASH_AT").is_ok_and(|v| v == step) {
        eprintln!("ZEROTH_CRASH_AT={step}: aborting");
        std::process::abort();
    }
    let _ = step;
}
