//! Dynamic database users on PostgreSQL and MariaDB: the engines' admin
//! side (pooled connections, statement templates, revocation that always
//! finishes), shared by issuance, renewal, the expiry scheduler and the
//! reconciler.

pub mod leases;
pub mod mariadb;
pub mod mariadb_batch;
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
    #[error("{0}")]
    Template(String),
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
