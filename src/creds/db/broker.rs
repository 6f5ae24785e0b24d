//! The database engine's broker: admin pools per connection (opened from
//! the HSM-sealed store on first use, reopened when another server rotated
//! the password) and issuance, the lease written `creating` before the
//! user exists and `active` after.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use zeroth_hsm::{KeyName, KeyStore, Sealer};

use super::connections::binding;
use super::role::RoleStatements;
use super::secret;
use super::{DbAdmin, DbError, Engine, NewUser, Target};
use crate::config::DbRoleConfig;
use crate::creds::lease::ledger::blocking;
use crate::creds::lease::{Ledger, Settlement};
use crate::creds::{CredsError, Holder};
use crate::store::db_connections::{self, DbConnectionRow};
use crate::store::leases::{self, Lease, LeaseState};
use crate::store::now;

/// MariaDB users past their expiry by more than [`OVERDUE_AFTER`] and not
/// yet dropped, beyond which new MariaDB users are refused (503, try again
/// in [`BEHIND_RETRY`] seconds) until revocation catches up: MariaDB has no
/// VALID UNTIL of its own, so issuance must not outrun the drops.
pub const BACKLOG_BOUND: i64 = 2_000;
const OVERDUE_AFTER: i64 = 5;
pub const BEHIND_RETRY: u64 = 2;
/// How long one count of the backlog stands for.
const BACKLOG_FRESH: Duration = Duration::from_secs(1);
/// How often a server compares an open pool's admin password with the
/// store's.
const PASSWORD_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Credentials handed out once, to their holder only.
pub struct Issued {
    pub lease: Lease,
    pub password: SecretString,
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    /// PEM CA of the database's TLS certificate, when it uses TLS.
    pub tls_ca: Option<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("lease", &self.lease.id)
            .field("username", &self.lease.external_name)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

pub struct DbBroker {
    pub(super) ledger: Arc<Ledger>,
    pub(super) sealer: Sealer,
    roles: BTreeMap<String, DbRoleConfig>,
    /// Open admin pools and the connection rows they were opened from.
    pub(super) admins: tokio::sync::Mutex<HashMap<String, (Arc<DbAdmin>, DbConnectionRow)>>,
    /// When each open pool's row was last compared with the store's.
    checked: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The last count of overdue leases per MariaDB connection, and when.
    backlog: std::sync::Mutex<HashMap<String, (std::time::Instant, i64)>>,
}

fn matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => pattern == id,
    }
}

impl DbBroker {
    pub fn new(
        ledger: Arc<Ledger>,
        keys: Arc<dyn KeyStore>,
        roles: &[DbRoleConfig],
    ) -> Result<Self, CredsError> {
        let sealer = Sealer::new(keys, KeyName::new(zeroth_hsm::STORE_KEK)?)?;
        Ok(Self {
            ledger,
            sealer,
            roles: roles.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            admins: tokio::sync::Mutex::new(HashMap::new()),
            checked: std::sync::Mutex::new(HashMap::new()),
            backlog: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The role `name`, as configured.
    pub(super) fn role(&self, name: &str) -> Option<&DbRoleConfig> {
        self.roles.get(name)
    }

    /// The connection's target with its current admin password.
    pub(super) fn target(&self, row: &DbConnectionRow) -> Result<Target, CredsError> {
        self.target_with(row, &row.sealed_password)
    }

    /// The connection's target with the admin password `sealed`.
    fn target_with(&self, row: &DbConnectionRow, sealed: &[u8]) -> Result<Target, CredsError> {
        let engine = Engine::parse(&row.engine).ok_or_else(|| {
            CredsError::Unavailable(format!(
                "connection {} has engine {:?}",
                row.name, row.engine
            ))
        })?;
        let password = self.sealer.open(binding(&row.name), sealed)?;
        let password = String::from_utf8(password.to_vec()).map_err(|_| {
            CredsError::Unavailable(format!("connection {}'s password is not UTF-8", row.name))
        })?;
        Ok(Target {
            engine,
            host: row.host.clone(),
            port: row.port,
            dbname: row.dbname.clone(),
            admin_user: row.admin_user.clone(),
            admin_password: SecretString::from(password),
            tls_ca: row.tls_ca.clone(),
        })
    }

    /// The pooled admin of `connection`, opened on first use. Later calls
    /// take it from memory: neither the store nor the HSM is asked again
    /// until the connection is rotated or removed.
    pub async fn admin(
        self: &Arc<Self>,
        connection: &str,
    ) -> Result<(Arc<DbAdmin>, DbConnectionRow), CredsError> {
        let cached = self.admins.lock().await.get(connection).cloned();
        if let Some((a, row)) = cached {
            if self.still_current(connection, &row).await {
                return Ok((a, row));
            }
            tracing::info!(connection, "the admin password changed in the store (rotated by another server?); reopening the pool");
            self.admins.lock().await.remove(connection);
        }
        let (me, name) = (self.clone(), connection.to_owned());
        let (row, target) = blocking(move || {
            let row = db_connections::connection(&me.ledger.store().lock(), &name)?.ok_or_else(|| {
                CredsError::Unavailable(format!("no database connection {name:?}; an operator makes it with `zeroth db connection create`"))
            })?;
            let target = me.target(&row)?;
            Ok((row, target))
        })
        .await?;
        let mut admins = self.admins.lock().await;
        if let Some((a, row)) = admins.get(connection) {
            return Ok((a.clone(), row.clone()));
        }
        let (admin, row) = match DbAdmin::connect(target).await {
            Ok(admin) => (admin, row),
            Err(e) => self.finish_rotation(row).await.map_err(|_| e)?,
        };
        let admin = Arc::new(admin);
        admins.insert(connection.to_owned(), (admin.clone(), row.clone()));
        Ok((admin, row))
    }

    /// Whether the admin password `row` holds is still the store's. The
    /// store is asked at most every second per connection: another server
    /// of a cluster may have rotated it, and the pool's new connections
    /// would then fail to log in.
    async fn still_current(self: &Arc<Self>, connection: &str, row: &DbConnectionRow) -> bool {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            match checked.get(connection) {
                Some(at) if now.duration_since(*at) < PASSWORD_CHECK => return true,
                _ => checked.insert(connection.to_owned(), now),
            };
        }
        let (st, name) = (self.ledger.store().clone(), connection.to_owned());
        let stored = blocking(move || {
            let reader = st.read()?;
            Ok(db_connections::connection(&reader, &name)?)
        })
        .await;
        match stored {
            Ok(Some(now)) => {
                now.sealed_password == row.sealed_password
                    && now.pending_password == row.pending_password
            }
            // Removed: the caller finds out when it reopens.
            Ok(None) => false,
            // The store is unreachable: keep what works.
            Err(_) => true,
        }
    }

    /// Makes the next use of `connection` compare its password with the
    /// store's (after the database refused the pool's login, say).
    pub(super) fn recheck(&self, connection: &str) {
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(connection);
    }

    /// A rotation cut short after the database took the new password: the
    /// pending one opens the database, and becomes the current one.
    async fn finish_rotation(
        self: &Arc<Self>,
        row: DbConnectionRow,
    ) -> Result<(DbAdmin, DbConnectionRow), CredsError> {
        let pending = row
            .pending_password
            .clone()
            .ok_or_else(|| CredsError::Unavailable("no rotation was under way".into()))?;
        let admin = DbAdmin::connect(self.target_with(&row, &pending)?).await?;
        let name = row.name.clone();
        let row = self
            .make_pending_current(
                row,
                pending,
                serde_json::json!({"finished": "after an interruption"}),
            )
            .await?;
        tracing::info!(connection = %name, "finished an interrupted rotate-root");
        Ok((admin, row))
    }

    fn statements(role: &DbRoleConfig, engine: Engine) -> RoleStatements {
        let mut s = RoleStatements::builtin(engine, role.access, &role.name, &role.schema);
        if !role.creation_statements.is_empty() {
            s.setup.clear();
            s.creation = role.creation_statements.clone();
            s.batch_grant = None;
        }
        s.revocation = role.revocation_statements.clone();
        s
    }

    /// New credentials of `role` for `holder`, valid `ttl` (the role's
    /// default when `None`, never beyond its maximum).
    pub async fn issue(
        self: &Arc<Self>,
        role_name: &str,
        holder: &Holder,
        ttl: Option<Duration>,
    ) -> Result<Issued, CredsError> {
        let role = self
            .roles
            .get(role_name)
            .ok_or_else(|| CredsError::NotFound(format!("no database role {role_name:?}")))?
            .clone();
        let by_group = holder
            .group
            .as_ref()
            .is_some_and(|g| role.allow_groups.contains(g));
        let by_id = role
            .allow_spiffe
            .iter()
            .any(|p| matches(p, &holder.spiffe_id));
        if !by_group && !by_id {
            return Err(CredsError::Forbidden(format!(
                "{} (group {}) may not use role {role_name}: it admits groups {:?} and SPIFFE IDs {:?}",
                holder.spiffe_id,
                holder.group.as_deref().unwrap_or("none"),
                role.allow_groups,
                role.allow_spiffe
            )));
        }
        let ttl = ttl.unwrap_or(role.default_ttl);
        if ttl < Duration::from_secs(10) {
            return Err(CredsError::BadRequest(
                "`ttl_seconds` must be at least 10".into(),
            ));
        }
        let ttl = ttl.min(role.max_ttl);
        let (admin, conn_row) = self.admin(&role.connection).await?;
        if admin.engine() == Engine::MariaDb {
            self.refuse_while_behind(&role.connection).await?;
        }
        let created = now();
        let lease = Lease {
            id: hex::encode(rand::random::<[u8; 16]>()),
            kind: super::engine::LEASE_KIND.into(),
            role: role.name.clone(),
            connection: role.connection.clone(),
            holder: holder.spiffe_id.clone(),
            external_name: secret::username(&role.name),
            state: LeaseState::Creating,
            created,
            expires: created + ttl.as_secs() as i64,
            max_expires: created + role.max_ttl.as_secs() as i64,
        };
        let password = secret::password();
        self.ledger.begin(&lease).await?;
        let statements = Self::statements(&role, admin.engine());
        let made = admin
            .create(
                &statements,
                &NewUser {
                    name: &lease.external_name,
                    password: &password,
                    expires: lease.expires,
                },
            )
            .await;
        if let Err(DbError::Unavailable { .. }) = &made {
            // A pool that cannot log in may hold a password rotated since.
            self.recheck(&role.connection);
        }
        // Either way the outcome is one state change and one audit event.
        let settled = self
            .ledger
            .settle(
                &lease,
                Settlement {
                    issued: "db.creds.issued",
                    failed: "db.creds.failed",
                    detail: serde_json::json!({
                        "role": lease.role, "holder": lease.holder, "user": lease.external_name,
                        "workload": holder.workload,
                    }),
                    failure: made.as_ref().err().map(ToString::to_string),
                },
            )
            .await;
        let activated = matches!(settled, Ok(true));
        if made.is_ok() && !activated {
            // The user exists but its lease is not active: the ledger could
            // not record it (a full disk) or the revoker took the lease for
            // abandoned. Undo the user now; the revoker closes the lease.
            if let Err(e) = admin
                .revoke(&lease.external_name, &statements.revocation)
                .await
            {
                tracing::warn!(lease = %lease.id, error = %e, "undoing an unrecorded user failed; the revoker retries");
            }
        }
        settled?;
        made?;
        if !activated {
            return Err(CredsError::Unavailable(format!(
                "lease {} was revoked before its user was ready; ask again",
                lease.id
            )));
        }
        let engine = admin.engine();
        Ok(Issued {
            lease: Lease {
                state: LeaseState::Active,
                ..lease
            },
            password,
            engine,
            host: conn_row.host,
            port: conn_row.port,
            dbname: conn_row.dbname,
            tls_ca: conn_row
                .tls_ca
                .map(|pem| String::from_utf8_lossy(&pem).into_owned()),
        })
    }

    /// Refuses a new user on `connection` while more than
    /// [`BACKLOG_BOUND`] of its users are overdue for revocation.
    async fn refuse_while_behind(&self, connection: &str) -> Result<(), CredsError> {
        let cached = self
            .backlog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection)
            .filter(|(at, _)| at.elapsed() < BACKLOG_FRESH)
            .map(|(_, n)| *n);
        let late = match cached {
            Some(n) => n,
            None => {
                let (st, name) = (self.ledger.store().clone(), connection.to_owned());
                let n = blocking(move || {
                    Ok(leases::overdue(
                        &*st.read()?,
                        &name,
                        now() - OVERDUE_AFTER,
                        BACKLOG_BOUND + 1,
                    )?)
                })
                .await?;
                self.backlog
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(connection.to_owned(), (std::time::Instant::now(), n));
                n
            }
        };
        if late > BACKLOG_BOUND {
            return Err(CredsError::Behind(format!(
                "revocation is behind on connection {connection}: more than {BACKLOG_BOUND} expired users are still to be dropped; try again in {BEHIND_RETRY} s"
            )));
        }
        Ok(())
    }
}
