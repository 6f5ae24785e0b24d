//! The lease lifecycle of dynamic database users: issue (lease written
//! `creating` before the user exists, `active` after), renew, revoke, the
//! expiry scheduler, the startup sweep and the reconciler. Every issuance,
//! renewal and revocation is its own audit event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use zeroth_hsm::{Binding, KeyName, KeyStore, Sealer};

use super::role::RoleStatements;
use super::secret;
use super::{DbAdmin, DbError, Engine, NewUser, Target};
use crate::audit::{self, Event};
use crate::config::DbRoleConfig;
use crate::store::group_commit::GroupWriter;
use crate::store::leader::Leadership;
use crate::store::leases::{self, DbConnectionRow, Lease, LeaseState};
use crate::store::{now, Store, StoreError};

/// Why a credential operation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// The database is unreachable (503, with the cause).
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

impl From<DbError> for CredsError {
    fn from(e: DbError) -> Self {
        match e {
            // A collision still there after its retries is as passing as
            // an unreachable database: ask again later (503).
            DbError::Unavailable { .. } | DbError::Collision { .. } => {
                Self::Unavailable(e.to_string())
            }
            DbError::Statement { .. } | DbError::Template(_) => Self::Refused(e.to_string()),
        }
    }
}

/// Who asks: a SPIFFE ID and, for nodes, their group.
#[derive(Debug, Clone)]
pub struct Holder {
    pub spiffe_id: String,
    pub group: Option<String>,
    /// The local program the holder's agent asked for, as the agent
    /// reported it (its workload API: "uid 1001 pid 4242"), for the audit.
    pub workload: Option<String>,
}

/// Revocations run at once by the background revoker (of the admin pool's
/// eight connections per database, the rest stay free for issuance).
const REVOKE_CONCURRENCY: usize = 4;
/// As many for an engine that batches revocations (MariaDB): one batch.
const BATCHED_REVOKE_CONCURRENCY: usize = super::mariadb_revocations::MAX_BATCH;

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

/// Opens every sealed admin password in `conn` with `sealer` (and drops
/// it at once): how a restore proves the HSM's store key is the one the
/// store was sealed with. The number opened, or the first that fails.
pub fn open_every_sealed(
    conn: &crate::store::sql::Conn,
    sealer: &Sealer,
) -> Result<usize, CredsError> {
    let mut opened = 0;
    for row in leases::connections(conn)? {
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

fn binding(name: &str) -> Binding<'_> {
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

pub struct DbBroker {
    store: Arc<Store>,
    sealer: Sealer,
    roles: BTreeMap<String, DbRoleConfig>,
    /// Open admin pools and the connection rows they were opened from.
    admins: tokio::sync::Mutex<HashMap<String, (Arc<DbAdmin>, DbConnectionRow)>>,
    /// When each open pool's row was last compared with the store's.
    checked: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// The last count of overdue leases per MariaDB connection, and when.
    backlog: std::sync::Mutex<HashMap<String, (std::time::Instant, i64)>>,
    /// Issuance's ledger writes share commits with concurrent issuances.
    writer: Arc<GroupWriter>,
    /// The newest lease row when this server started: `creating` leases up
    /// to it were left by an earlier run, not by an issuance under way.
    earlier_run: i64,
}

/// Runs a store (or HSM) call off the async reactor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CredsError> + Send + 'static,
) -> Result<T, CredsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CredsError::Unavailable(format!("a worker failed: {e}")))?
}

/// Makes `change` and records `event` in one transaction; when `change`
/// finds nothing to do (false), nothing is written and the answer is false.
fn record(
    store: &Store,
    change: impl FnOnce(&crate::store::sql::Tx<'_>) -> Result<bool, StoreError>,
    event: Event<'_>,
) -> Result<bool, CredsError> {
    let mut conn = store.lock();
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a transaction"))?;
    if !change(&tx)? {
        return Ok(false);
    }
    audit::append(&tx, &event)?;
    tx.commit()
        .map_err(StoreError::sql("committing a lease change"))?;
    Ok(true)
}

/// After the last allowed attempt at `id` failed: the lease is left for an
/// operator, with an audit event (`lease.irrevocable`) and an error in the
/// log saying what to do.
fn give_up_if_spent(store: &Store, id: &str, why: &str) -> Result<(), CredsError> {
    if leases::attempts(&store.lock(), id)? != leases::MAX_ATTEMPTS {
        return Ok(());
    }
    tracing::error!(
        lease = %id, error = %why,
        "revocation failed {} times; no longer retried: fix the cause, then `zeroth lease retry {id}`, or `zeroth lease mark-revoked {id}` once the user is gone by hand",
        leases::MAX_ATTEMPTS
    );
    record(
        store,
        |_| Ok(true),
        Event {
            kind: "lease.irrevocable",
            subject: &format!("lease/{id}"),
            detail: serde_json::json!({"attempts": leases::MAX_ATTEMPTS, "last_error": why}),
        },
    )
    .map(drop)
}

/// Whether a job's change to `seen` may go ahead in this transaction: a
/// request (`job` None) always may; the revoker only while the store still
/// names its server the leader and the lease's state and expiry are what it
/// saw when it found the lease due.
fn job_may_act(
    tx: &crate::store::sql::Tx<'_>,
    job: Option<&Leadership>,
    seen: &Lease,
) -> Result<bool, StoreError> {
    let Some(lead) = job else {
        return Ok(true);
    };
    if !lead.still_leads(tx)? {
        return Ok(false);
    }
    leases::unchanged_since(tx, seen)
}

fn matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => pattern == id,
    }
}

impl DbBroker {
    pub fn new(
        store: Arc<Store>,
        keys: Arc<dyn KeyStore>,
        roles: &[DbRoleConfig],
    ) -> Result<Self, CredsError> {
        let sealer = Sealer::new(keys, KeyName::new(zeroth_hsm::STORE_KEK)?)?;
        // Leases still `creating` from before this start were left by a
        // crash, unless other servers share the store: then only the grace
        // tells an abandoned lease from one another server is making.
        let earlier_run = if store.is_shared() {
            0
        } else {
            leases::last_row(&store.lock())?
        };
        Ok(Self {
            writer: Arc::new(GroupWriter::spawn(store.clone())),
            store,
            sealer,
            roles: roles.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            admins: tokio::sync::Mutex::new(HashMap::new()),
            checked: std::sync::Mutex::new(HashMap::new()),
            backlog: std::sync::Mutex::new(HashMap::new()),
            earlier_run,
        })
    }

    /// The connection's target with its current admin password.
    fn target(&self, row: &DbConnectionRow) -> Result<Target, CredsError> {
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
            let row = leases::connection(&me.store.lock(), &name)?.ok_or_else(|| {
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
        let (st, name) = (self.store.clone(), connection.to_owned());
        let stored = blocking(move || {
            let reader = st.read()?;
            Ok(leases::connection(&reader, &name)?)
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
    fn recheck(&self, connection: &str) {
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
        let (me, name, user) = (self.clone(), row.name.clone(), row.admin_user.clone());
        blocking(move || {
            record(
                &me.store,
                |tx| leases::switch_to_pending(tx, &name),
                Event {
                    kind: "db.connection.rotated",
                    subject: &format!("db/{name}"),
                    detail: serde_json::json!({"admin_user": user, "finished": "after an interruption"}),
                },
            )
        })
        .await?;
        tracing::info!(connection = %row.name, "finished an interrupted rotate-root");
        Ok((
            admin,
            DbConnectionRow {
                sealed_password: pending,
                pending_password: None,
                rotated: Some(now()),
                ..row
            },
        ))
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
            kind: "db".into(),
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
        // The ledger knows the user before the database does.
        let l = lease.clone();
        self.writer
            .write_async(move |tx| leases::insert(tx, &l))
            .await?;
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
        let (w, l, workload) = (self.writer.clone(), lease.clone(), holder.workload.clone());
        let (state, kind, outcome) = match &made {
            Ok(()) => (
                LeaseState::Active,
                "db.creds.issued",
                serde_json::json!(l.expires),
            ),
            Err(e) => (
                LeaseState::Revoked,
                "db.creds.failed",
                serde_json::json!(e.to_string()),
            ),
        };
        let moved = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = moved.clone();
        let wrote = w
            .write_async(move |tx| {
                if !leases::transition(tx, &l.id, LeaseState::Creating, state)? {
                    return Ok(());
                }
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
                audit::append(
                    tx,
                    &Event {
                        kind,
                        subject: &format!("lease/{}", l.id),
                        detail: serde_json::json!({
                            "role": l.role, "holder": l.holder, "user": l.external_name,
                            if state == LeaseState::Active { "expires" } else { "reason" }: outcome,
                            "workload": workload,
                        }),
                    },
                )
                .map_err(|e| StoreError::Writer(e.to_string()))?;
                Ok(())
            })
            .await;
        let activated = wrote.is_ok() && moved.load(std::sync::atomic::Ordering::Relaxed);
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
        wrote?;
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

    /// The lease `id`, if `holder` holds it (operators pass `None`).
    pub async fn lease(&self, id: &str, holder: Option<&str>) -> Result<Lease, CredsError> {
        // One indexed read on a read-only connection, which never waits
        // for the writer.
        let lease = leases::get(&*self.store.read()?, id)?;
        match lease {
            Some(l) if holder.is_none_or(|h| h == l.holder) => Ok(l),
            _ => Err(CredsError::NotFound(format!("no lease {id} of yours"))),
        }
    }

    /// Extends an active lease by `increment` from now, up to its maximum.
    pub async fn renew(
        self: &Arc<Self>,
        lease: &Lease,
        increment: Option<Duration>,
    ) -> Result<Lease, CredsError> {
        if lease.state != LeaseState::Active || lease.expires <= now() {
            return Err(CredsError::Forbidden(format!(
                "lease {} is {} and cannot be renewed",
                lease.id,
                if lease.state == LeaseState::Active {
                    "expired"
                } else {
                    lease.state.as_str()
                }
            )));
        }
        let role = self.roles.get(&lease.role);
        let increment = increment
            .or(role.map(|r| r.default_ttl))
            .unwrap_or(Duration::from_secs(600));
        let increment = i64::try_from(increment.as_secs()).unwrap_or(i64::MAX);
        let expires = now().saturating_add(increment).min(lease.max_expires);
        let (admin, _) = self.admin(&lease.connection).await?;
        let extra = role
            .map(|r| r.renewal_statements.clone())
            .unwrap_or_default();
        admin.renew(&lease.external_name, expires, &extra).await?;
        let (st, l) = (self.store.clone(), lease.clone());
        let renewed = blocking(move || {
            record(
                &st,
                |tx| leases::set_expires(tx, &l.id, expires),
                Event {
                    kind: "db.creds.renewed",
                    subject: &format!("lease/{}", l.id),
                    detail: serde_json::json!({"user": l.external_name, "expires": expires, "max_expires": l.max_expires}),
                },
            )
        })
        .await?;
        if !renewed {
            return Err(CredsError::Forbidden(format!(
                "lease {} was revoked while it was renewed",
                lease.id
            )));
        }
        Ok(Lease {
            expires,
            ..lease.clone()
        })
    }

    /// Revokes a lease: `revoking` is recorded first, so a failure or a
    /// crash midway is retried by the revoker; a user already gone counts
    /// as revoked. Revoking a lease someone else is revoking is harmless:
    /// whoever records it revoked writes the one audit event.
    pub async fn revoke(self: &Arc<Self>, lease: &Lease, reason: &str) -> Result<(), CredsError> {
        self.revoke_as(lease, reason, None).await
    }

    /// Revokes `lease` for the caller: an operator or the lease's holder
    /// (`job` None: whatever the lease's state now), or the cluster's
    /// revoker, which acts only while it still leads and the lease is as it
    /// saw it due (not renewed, finished or revoked since).
    async fn revoke_as(
        self: &Arc<Self>,
        lease: &Lease,
        reason: &str,
        job: Option<Arc<Leadership>>,
    ) -> Result<(), CredsError> {
        if lease.kind != "db" {
            // Nothing to undo on a database: the record (and the KRL built
            // from it) is the revocation.
            let detail = serde_json::json!({"serial": lease.external_name, "holder": lease.holder, "reason": reason});
            return self
                .mark_revoked(lease, LeaseState::Active, "ssh.cert.revoked", detail, job)
                .await;
        }
        let (st, seen) = (self.store.clone(), lease.clone());
        let state = blocking(move || {
            let mut conn = st.lock();
            let tx = conn
                .transaction()
                .map_err(StoreError::sql("starting a transaction"))?;
            if !job_may_act(&tx, job.as_deref(), &seen)? {
                return Ok(None);
            }
            // What the caller saw may be stale: move from what is there now.
            let now_in = leases::get(&tx, &seen.id)?.map_or(seen.state, |l| l.state);
            if matches!(now_in, LeaseState::Creating | LeaseState::Active)
                && leases::transition(&tx, &seen.id, now_in, LeaseState::Revoking)?
            {
                tx.commit().map_err(StoreError::sql("committing a lease"))?;
                return Ok(Some(LeaseState::Revoking));
            }
            Ok(Some(now_in))
        })
        .await?;
        let Some(state) = state else {
            tracing::info!(lease = %lease.id, "not revoked: this server no longer leads, or the lease changed since it fell due");
            return Ok(());
        };
        if state == LeaseState::Revoked {
            return Ok(());
        }
        let (admin, _) = self.admin(&lease.connection).await?;
        let extra = self
            .roles
            .get(&lease.role)
            .map(|r| r.revocation_statements.clone())
            .unwrap_or_default();
        let existed = admin
            .revoke(&lease.external_name, &extra)
            .await
            .inspect_err(|e| {
                if matches!(e, DbError::Unavailable { .. }) {
                    self.recheck(&lease.connection);
                }
            })?;
        let detail = serde_json::json!({"user": lease.external_name, "holder": lease.holder, "reason": reason, "user_existed": existed});
        self.mark_revoked(
            lease,
            LeaseState::Revoking,
            "db.creds.revoked",
            detail,
            None,
        )
        .await
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
                let (st, name) = (self.store.clone(), connection.to_owned());
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

    /// Records the lease revoked (from `from`), with its audit event, in
    /// one transaction; if it is no longer in `from`, someone else did.
    async fn mark_revoked(
        &self,
        lease: &Lease,
        from: LeaseState,
        kind: &'static str,
        detail: serde_json::Value,
        job: Option<Arc<Leadership>>,
    ) -> Result<(), CredsError> {
        let (st, id, seen) = (self.store.clone(), lease.id.clone(), lease.clone());
        blocking(move || {
            record(
                &st,
                |tx| {
                    Ok(job_may_act(tx, job.as_deref(), &seen)?
                        && leases::transition(tx, &id, from, LeaseState::Revoked)?)
                },
                Event {
                    kind,
                    subject: &format!("lease/{id}"),
                    detail,
                },
            )
        })
        .await
        .map(drop)
    }

    /// Revokes up to `limit` leases that are due: expired ones, those whose
    /// holder was revoked, and unfinished work (`revoking`, and `creating`
    /// left by an earlier run or abandoned), each retried with backoff
    /// until it is done. Returns how many were revoked.
    pub async fn revoke_due(self: &Arc<Self>, limit: usize, lead: &Arc<Leadership>) -> usize {
        let (st, earlier_run) = (self.store.clone(), self.earlier_run);
        let due = blocking(move || {
            let conn = st.read()?;
            let mut due = leases::due(&conn, now(), earlier_run, limit)?;
            due.extend(leases::of_revoked_nodes(&conn, limit)?);
            Ok(due)
        })
        .await;
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read due leases");
                return 0;
            }
        };
        // A lease can be both expired and its holder's: once is enough.
        let mut seen = std::collections::HashSet::new();
        let due: Vec<Lease> = due
            .into_iter()
            .filter(|l| seen.insert(l.id.clone()))
            .collect();
        // A few at a time: faster than one by one, and the admin pool keeps
        // connections free for issuance. Where the engine batches them
        // (one connection for many), a batch's worth at a time.
        let permits = Arc::new(tokio::sync::Semaphore::new(REVOKE_CONCURRENCY));
        let batched = Arc::new(tokio::sync::Semaphore::new(BATCHED_REVOKE_CONCURRENCY));
        let batching: std::collections::HashSet<String> = {
            let admins = self.admins.lock().await;
            admins
                .iter()
                .filter(|(_, (a, _))| a.batches_revocations())
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut running = tokio::task::JoinSet::new();
        for lease in due {
            let pool = match batching.contains(&lease.connection) {
                true => &batched,
                false => &permits,
            };
            let Ok(permit) = pool.clone().acquire_owned().await else {
                break;
            };
            let (me, lead) = (self.clone(), lead.clone());
            running.spawn(async move {
                let _permit = permit;
                let reason = match lease.state {
                    LeaseState::Creating => "left half-made",
                    LeaseState::Revoking => "revocation retried",
                    _ if lease.expires <= now() => "expired",
                    _ => "holder revoked",
                };
                let result = me.revoke_as(&lease, reason, Some(lead)).await;
                if let Err(e) = &result {
                    tracing::warn!(lease = %lease.id, error = %e, "revocation failed; retrying later");
                    let (st, id, why) = (me.store.clone(), lease.id.clone(), e.to_string());
                    let _ = blocking(move || {
                        leases::retry_later(&st.lock(), &id, now())?;
                        give_up_if_spent(&st, &id, &why)
                    })
                    .await;
                }
                result
            });
        }
        let mut done = 0;
        while let Some(r) = running.join_next().await {
            if matches!(r, Ok(Ok(()))) {
                done += 1;
            }
        }
        done
    }

    /// Drops users with zeroth's prefix that no live lease accounts for.
    pub async fn reconcile(self: &Arc<Self>) -> Result<Vec<String>, CredsError> {
        let st = self.store.clone();
        let connections = blocking(move || Ok(leases::connections(&st.lock())?)).await?;
        let mut dropped = Vec::new();
        for c in connections {
            let (admin, _) = self.admin(&c.name).await?;
            // Users first, then the ledger: a user made in between is in
            // the ledger already (leases are written before users).
            let users = admin.dynamic_users().await?;
            let (st, name) = (self.store.clone(), c.name.clone());
            let known = blocking(move || Ok(leases::known_names(&st.lock(), &name)?)).await?;
            for user in users.into_iter().filter(|u| !known.contains(u)) {
                admin.revoke(&user, &[]).await?;
                let (st, conn_name, u) = (self.store.clone(), c.name.clone(), user.clone());
                blocking(move || {
                    record(
                        &st,
                        |_| Ok(true),
                        Event {
                            kind: "db.stray.dropped",
                            subject: &format!("db/{conn_name}"),
                            detail: serde_json::json!({"user": u, "reason": "no lease accounts for it"}),
                        },
                    )
                })
                .await?;
                dropped.push(user);
            }
        }
        Ok(dropped)
    }

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
                &me.store,
                |tx| {
                    leases::save_connection(
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
            let mut conn = me.store.lock();
            let tx = conn
                .transaction()
                .map_err(StoreError::sql("starting a transaction"))?;
            leases::set_pending_password(&tx, &n, &sealed)?;
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
        let (me, n, user) = (self.clone(), name.to_owned(), row.admin_user.clone());
        blocking(move || {
            record(
                &me.store,
                |tx| leases::switch_to_pending(tx, &n),
                Event {
                    kind: "db.connection.rotated",
                    subject: &format!("db/{n}"),
                    detail: serde_json::json!({"admin_user": user, "by_uid": by_uid}),
                },
            )
        })
        .await?;
        let rotated = DbConnectionRow {
            sealed_password: sealed,
            pending_password: None,
            rotated: Some(now()),
            ..row
        };
        let mut target = self.target(&rotated)?;
        target.admin_password = new;
        let fresh = Arc::new(DbAdmin::connect(target).await?);
        self.admins
            .lock()
            .await
            .insert(name.to_owned(), (fresh, rotated));
        Ok(())
    }

    pub async fn remove_connection(
        self: &Arc<Self>,
        name: &str,
        by_uid: u32,
    ) -> Result<bool, CredsError> {
        let (st, n) = (self.store.clone(), name.to_owned());
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
                    removed = leases::remove_connection(tx, &n)?;
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

    /// The writer issuance shares its commits through.
    pub(crate) fn writer(&self) -> &Arc<GroupWriter> {
        &self.writer
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
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
