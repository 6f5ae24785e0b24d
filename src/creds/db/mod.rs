//! Dynamic database users on PostgreSQL and MariaDB: the engines' admin
//! side (pooled connections, statement templates, revocation that always
//! finishes), shared by issuance, renewal, the expiry scheduler and the
//! reconciler.

pub mod broker;
pub mod connections;
pub mod engine;
pub mod mariadb;
pub mod mariadb_batch;
pub mod mariadb_revocations;
pub mod postgres;
pub mod role;
pub mod secret;
pub mod sessions;
pub mod template;

use secrecy::SecretString;

/// The database engines zeroth manages users on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    #[serde(rename = "mariadb")]
    MariaDb,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MariaDb => "mariadb",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mariadb" | "mysql" => Some(Self::MariaDb),
            _ => None,
        }
    }
}

/// Why a database operation failed. Never carries a password: server
/// messages are passed on, statements are named by their position.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot reach the database {target}: {reason}")]
    Unavailable { target: String, reason: String },
    #[error("statement {index} of the {stage} statements failed: {reason}")]
    Statement {
        stage: &'static str,
        index: usize,
        reason: String,
    },
    /// Another session changed the same catalogue row meanwhile, or the
    /// engine chose this transaction as a deadlock's victim: nothing is
    /// wrong with the statement, and trying again is the remedy.
    #[error(
        "statement {index} of the {stage} statements collided with a concurrent change: {reason}"
    )]
    Collision {
        stage: &'static str,
        index: usize,
        reason: String,
    },
    #[error("{0}")]
    Template(#[from] crate::config::TemplateError),
}

impl From<DbError> for crate::creds::CredsError {
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

/// Attempts at work whose statements keep colliding with concurrent
/// changes, before the collision is the caller's answer.
const COLLISION_ATTEMPTS: u32 = 5;

/// Runs `attempt` until it does not collide with a concurrent change, at
/// most [`COLLISION_ATTEMPTS`] times, pausing 10, 20, 40, 80 ms (plus up
/// to 10 ms at random, so two colliding sides do not meet again).
/// `attempt` must be safe to run again after a collision: each of its
/// transactions was rolled back whole.
pub(crate) async fn retrying_collisions<T, F>(
    what: &'static str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, DbError>
where
    F: std::future::Future<Output = Result<T, DbError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e @ DbError::Collision { .. }) if tries < COLLISION_ATTEMPTS => {
                tracing::info!(error = %e, attempt = tries, "{what}: trying again");
                let pause = (10u64 << (tries - 1)) + rand::random_range(0..10u64);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Where and as whom zeroth administers one database.
#[derive(Clone)]
pub struct Target {
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub admin_user: String,
    pub admin_password: SecretString,
    /// PEM CA of the database's TLS certificate: when set, connections use
    /// TLS with full verification (chain and host name); otherwise none.
    pub tls_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}@{}:{}/{}{}",
            self.engine.as_str(),
            self.admin_user,
            self.host,
            self.port,
            self.dbname,
            if self.tls_ca.is_some() {
                " (TLS, verify-full)"
            } else {
                ""
            }
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A user to create.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub name: &'a str,
    pub password: &'a SecretString,
    /// Seconds since the epoch; the database itself enforces it.
    pub expires: i64,
}

/// Pooled admin connections to one database.
pub enum DbAdmin {
    Postgres(postgres::PgAdmin),
    MariaDb(mariadb::MariaAdmin),
}

impl DbAdmin {
    /// Opens the pool and proves the credentials with one connection.
    pub async fn connect(target: Target) -> Result<Self, DbError> {
        Ok(match target.engine {
            Engine::Postgres => Self::Postgres(postgres::PgAdmin::connect(target).await?),
            Engine::MariaDb => Self::MariaDb(mariadb::MariaAdmin::connect(target).await?),
        })
    }

    pub fn engine(&self) -> Engine {
        match self {
            Self::Postgres(_) => Engine::Postgres,
            Self::MariaDb(_) => Engine::MariaDb,
        }
    }

    /// Creates the user with the role's statements; the expiry is also set
    /// in the database (VALID UNTIL / a one-shot event) whatever the
    /// template says. On failure nothing is left behind.
    pub async fn create(
        &self,
        role: &role::RoleStatements,
        user: &NewUser<'_>,
    ) -> Result<(), DbError> {
        let created = match self {
            Self::Postgres(a) => a.create(role, user).await,
            Self::MariaDb(a) => a.create(role, user).await,
        };
        if created.is_err() {
            // Whatever part was made goes; the original error is what matters.
            let _ = self.revoke(user.name, &[]).await;
        }
        created
    }

    /// Moves the user's expiry, then runs the role's `extra` renewal
    /// statements.
    pub async fn renew(&self, name: &str, expires: i64, extra: &[String]) -> Result<(), DbError> {
        match self {
            Self::Postgres(a) => a.renew(name, expires, extra).await,
            Self::MariaDb(a) => a.renew(name, expires, extra).await,
        }
    }

    /// Locks the user out, ends its sessions and drops it. A user already
    /// gone counts as revoked (returns false).
    pub async fn revoke(&self, name: &str, extra: &[String]) -> Result<bool, DbError> {
        match self {
            Self::Postgres(a) => a.revoke(name, extra).await,
            Self::MariaDb(a) => a.revoke(name, extra).await,
        }
    }

    /// Whether revocations asked for together are done in one batch (so
    /// running many at once costs no more connections).
    pub fn batches_revocations(&self) -> bool {
        matches!(self, Self::MariaDb(_))
    }

    /// Proves the admin can do what zeroth will ask of it: make a user and
    /// revoke it completely, by the very revocation leases get. A probe
    /// that could not be revoked is removed plainly if it can be; the
    /// answer says what the database refused.
    pub async fn probe(&self) -> Result<(), DbError> {
        let name = format!(
            "{}probe_{}",
            secret::USER_PREFIX,
            hex::encode(rand::random::<[u8; 6]>())
        );
        self.bare_user(&name, true).await?;
        let revoked = self.revoke(&name, &[]).await;
        if revoked.is_err() {
            let _ = self.bare_user(&name, false).await;
        }
        revoked.map(drop)
    }

    async fn bare_user(&self, name: &str, make: bool) -> Result<(), DbError> {
        match self {
            Self::Postgres(a) => a.bare_user(name, make).await,
            Self::MariaDb(a) => a.bare_user(name, make).await,
        }
    }

    /// Users whose name starts with [`secret::USER_PREFIX`].
    pub async fn dynamic_users(&self) -> Result<Vec<String>, DbError> {
        match self {
            Self::Postgres(a) => a.dynamic_users().await,
            Self::MariaDb(a) => a.dynamic_users().await,
        }
    }

    /// Changes the admin user's own password on the database.
    pub async fn set_admin_password(&self, new: &SecretString) -> Result<(), DbError> {
        match self {
            Self::Postgres(a) => a.set_admin_password(new).await,
            Self::MariaDb(a) => a.set_admin_password(new).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn collision() -> DbError {
        DbError::Collision {
            stage: "renewal",
            index: 1,
            reason: "tuple concurrently updated".into(),
        }
    }

    #[tokio::test]
    async fn a_collision_is_tried_again_until_the_work_gets_through() {
        let calls = AtomicU32::new(0);
        let got = retrying_collisions("a renewal", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(collision()),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn collisions_that_do_not_stop_are_the_answer_after_the_last_attempt() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retrying_collisions("a renewal", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(collision())
        })
        .await;
        assert!(matches!(got, Err(DbError::Collision { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), COLLISION_ATTEMPTS);
    }

    #[tokio::test]
    async fn any_other_failure_is_not_tried_again() {
        let calls = AtomicU32::new(0);
        let got: Result<(), _> = retrying_collisions("a renewal", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(DbError::Statement {
                stage: "renewal",
                index: 1,
                reason: "permission denied".into(),
            })
        })
        .await;
        assert!(matches!(got, Err(DbError::Statement { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
