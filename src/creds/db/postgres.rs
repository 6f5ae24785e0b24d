//! PostgreSQL: pooled admin connections (tokio-postgres) and the user
//! lifecycle. Passwords reach the server only as SCRAM verifiers.

use std::collections::HashSet;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::role::RoleStatements;
use super::secret::{scram_verifier, USER_PREFIX};
use super::template::{render, Values};
use super::{retrying_collisions, DbError, Engine, NewUser, Target};

/// Admin connections kept open per database.
const POOL: usize = 8;

pub struct PgAdmin {
    target: Target,
    idle: std::sync::Mutex<Vec<Client>>,
    permits: tokio::sync::Semaphore,
    /// Roles whose setup ran since this server started.
    set_up: tokio::sync::Mutex<HashSet<String>>,
}

/// A refusal by the server is the statement's fault, unless it collided
/// with a concurrent change; anything else (a closed connection, I/O)
/// means the database is unavailable.
fn failed(stage: &'static str, index: usize) -> impl FnOnce(tokio_postgres::Error) -> DbError {
    move |e| match e.as_db_error() {
        Some(d) if collided(d) => DbError::Collision {
            stage,
            index,
            reason: d.message().to_owned(),
        },
        Some(d) => DbError::Statement {
            stage,
            index,
            reason: d.message().to_owned(),
        },
        None => DbError::Unavailable {
            target: "PostgreSQL".into(),
            reason: e.to_string(),
        },
    }
}

/// Whether the server refused a statement only because another session
/// got there first: a serialization failure, a deadlock's victim, or a
/// catalogue row (a role's, a schema's ACL) changed by a transaction that
/// committed while this one waited for it.
fn collided(e: &tokio_postgres::error::DbError) -> bool {
    let code = e.code();
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || (*code == SqlState::INTERNAL_ERROR && e.message().starts_with("tuple concurrently"))
}

impl PgAdmin {
    pub async fn connect(target: Target) -> Result<Self, DbError> {
        let admin = Self {
            target,
            idle: std::sync::Mutex::new(Vec::new()),
            permits: tokio::sync::Semaphore::new(POOL),
            set_up: tokio::sync::Mutex::new(HashSet::new()),
        };
        let first = admin.open().await?;
        admin.give_back(first);
        Ok(admin)
    }

    async fn open(&self) -> Result<Client, DbError> {
        let t = &self.target;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&t.host)
            .port(t.port)
            .dbname(&t.dbname)
            .user(&t.admin_user)
            .password(t.admin_password.expose_secret().as_bytes())
            .application_name("zeroth")
            .connect_timeout(Duration::from_secs(5));
        let unavailable = |e: tokio_postgres::Error| DbError::Unavailable {
            target: t.to_string(),
            reason: match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        };
        match &t.tls_ca {
            None => {
                let (client, connection) = cfg.connect(NoTls).await.map_err(unavailable)?;
                tokio::spawn(connection);
                Ok(client)
            }
            Some(ca) => {
                let config =
                    crate::wire::pg_tls::client_config(ca).map_err(|e| DbError::Unavailable {
                        target: t.to_string(),
                        reason: e.to_string(),
                    })?;
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, connection) = cfg
                    .connect(crate::wire::pg_tls::MakeRustls(config))
                    .await
                    .map_err(unavailable)?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    }

    fn give_back(&self, client: Client) {
        if !client.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(client);
            }
        }
    }

    /// Runs `f` on a pooled connection (at most [`POOL`] at once).
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DbError::Unavailable {
                target: self.target.to_string(),
                reason: "the pool is closed".into(),
            })?;
        let pooled = self.idle.lock().ok().and_then(|mut i| i.pop());
        let client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.open().await?,
        };
        let result = f(&client).await;
        self.give_back(client);
        result
    }

    /// Runs rendered statements in one transaction.
    async fn transaction(
        client: &Client,
        stage: &'static str,
        statements: &[String],
    ) -> Result<(), DbError> {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(failed(stage, 0))?;
        for (i, s) in statements.iter().enumerate() {
            if let Err(e) = client.batch_execute(s).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(failed(stage, i + 1)(e));
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(failed(stage, statements.len() + 1))
    }

    fn render_all(templates: &[String], v: &Values<'_>) -> Result<Vec<String>, DbError> {
        templates
            .iter()
            .map(|t| render(Engine::Postgres, t, v).map_err(DbError::Template))
            .collect()
    }

    pub async fn create(&self, role: &RoleStatements, user: &NewUser<'_>) -> Result<(), DbError> {
        let verifier = scram_verifier(user.password);
        let v = Values {
            name: user.name,
            password: &verifier,
            expiration: user.expires,
            group: &role.group,
            schema: &role.schema,
        };
        let setup = Self::render_all(&role.setup, &v)?;
        let mut creation = Self::render_all(&role.creation, &v)?;
        // Expiry held by the database itself, whatever the template says.
        creation.push(
            render(
                Engine::Postgres,
                "ALTER ROLE {{name}} VALID UNTIL {{expiration}}",
                &v,
            )
            .map_err(DbError::Template)?,
        );
        if !setup.is_empty() {
            let mut done = self.set_up.lock().await;
            if !done.contains(&role.group) {
                retrying_collisions("a role's setup", || {
                    self.with(async |c| Self::transaction(c, "setup", &setup).await)
                })
                .await?;
                done.insert(role.group.clone());
            }
        }
        retrying_collisions("a user's creation", || {
            self.with(async |c| Self::transaction(c, "creation", &creation).await)
        })
        .await
    }

    pub async fn renew(&self, name: &str, expires: i64, extra: &[String]) -> Result<(), DbError> {
        let v = Values {
            name,
            expiration: expires,
            ..Values::default()
        };
        let mut statements = vec![render(
            Engine::Postgres,
            "ALTER ROLE {{name}} VALID UNTIL {{expiration}}",
            &v,
        )
        .map_err(DbError::Template)?];
        statements.extend(Self::render_all(extra, &v)?);
        retrying_collisions("a renewal", || {
            self.with(async |c| Self::transaction(c, "renewal", &statements).await)
        })
        .await
    }

    pub async fn revoke(&self, name: &str, extra: &[String]) -> Result<bool, DbError> {
        let v = Values {
            name,
            ..Values::default()
        };
        let mut statements = Self::render_all(extra, &v)?;
        for t in [
            "ALTER ROLE {{name}} NOLOGIN",
            "DROP OWNED BY {{name}}",
            "DROP ROLE IF EXISTS {{name}}",
        ] {
            statements.push(render(Engine::Postgres, t, &v).map_err(DbError::Template)?);
        }
        retrying_collisions("a revocation", || {
            self.with(async |c| {
                if !Self::exists(c, name).await? {
                    return Ok(false);
                }
                match Self::revoke_existing(c, name, &statements, extra.len()).await {
                    // Dropped meanwhile by another revocation of the same
                    // user (the revoker's and the holder's, say): done.
                    Err(DbError::Statement { .. }) if !Self::exists(c, name).await? => Ok(false),
                    other => other.map(|()| true),
                }
            })
        })
        .await
    }

    async fn exists(c: &Client, name: &str) -> Result<bool, DbError> {
        Ok(
            c.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
                .await
                .map_err(failed("revocation", 0))?
                .is_some(),
        )
    }

    /// Locks `name` out, ends its sessions, runs the rest of `statements`
    /// (the first `extra` + 1 are the role's own and the lock-out).
    async fn revoke_existing(
        c: &Client,
        name: &str,
        statements: &[String],
        extra: usize,
    ) -> Result<(), DbError> {
        // Locked first, so no new session starts while the old ones end.
        c.batch_execute(&statements[..extra + 1].join(";\n"))
            .await
            .map_err(failed("revocation", 1))?;
        c.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&name],
        )
        .await
        .map_err(failed("revocation", 2))?;
        Self::transaction(c, "revocation", &statements[extra + 1..]).await
    }

    /// A bare login role `name` (a probe of the admin's privileges), or,
    /// with `make` false, its plain removal (what an admin that may create
    /// roles can do even where it cannot drop what they own).
    pub async fn bare_user(&self, name: &str, make: bool) -> Result<(), DbError> {
        let sql = match make {
            true => format!("CREATE ROLE {name} LOGIN"),
            false => format!("DROP ROLE IF EXISTS {name}"),
        };
        self.with(async |c| c.batch_execute(&sql).await.map_err(failed("probe", 0)))
            .await
    }

    pub async fn dynamic_users(&self) -> Result<Vec<String>, DbError> {
        self.with(async |c| {
            let rows = c
                .query(
                    "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
                    &[&USER_PREFIX],
                )
                .await
                .map_err(failed("listing", 0))?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
        .await
    }

    pub async fn set_admin_password(&self, new: &SecretString) -> Result<(), DbError> {
        let verifier = scram_verifier(new);
        let s = render(
            Engine::Postgres,
            "ALTER ROLE CURRENT_USER PASSWORD {{password}}",
            &Values {
                password: &verifier,
                ..Values::default()
            },
        )
        .map_err(DbError::Template)?;
        self.with(async |c| c.batch_execute(&s).await.map_err(failed("rotation", 1)))
            .await
        // The caller replaces this pool: new sessions need the new password.
    }
}
