//! MariaDB: pooled admin connections (mysql_async) and the user lifecycle.
//! Passwords reach the server only as mysql_native_password hashes; every
//! user gets a one-shot event that drops it at expiry, so expiry holds
//! even when zeroth is down (if the event scheduler is on).

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use secrecy::{ExposeSecret, SecretString};

use super::role::RoleStatements;
use super::secret::{mysql_native_hash, USER_PREFIX};
use super::template::{render, Values};
use super::{DbError, Engine, NewUser, Target};

/// The schema holding zeroth's expiry events.
pub const EVENTS_SCHEMA: &str = "zeroth";

pub struct MariaAdmin {
    target: Target,
    pool: Pool,
}

/// A refusal by the server is the statement's fault; anything else (a
/// closed connection, I/O) means the database is unavailable.
fn failed(stage: &'static str, index: usize) -> impl FnOnce(mysql_async::Error) -> DbError {
    move |e| match e {
        mysql_async::Error::Server(s) => DbError::Statement {
            stage,
            index,
            reason: s.message,
        },
        other => DbError::Unavailable {
            target: "MariaDB".into(),
            reason: other.to_string(),
        },
    }
}

/// The expiry event of a user (≤ 64 characters: usernames have ≤ 63).
fn event_name(user: &str) -> String {
    format!("e{user}")
}

impl MariaAdmin {
    pub async fn connect(target: Target) -> Result<Self, DbError> {
        let constraints = PoolConstraints::new(0, 8).unwrap_or_default();
        let ssl = target.tls_ca.as_ref().map(|ca| {
            // verify-full: only this CA, and the certificate must name the host.
            mysql_async::SslOpts::default()
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true)
        });
        let opts: Opts = OptsBuilder::default()
            .ssl_opts(ssl)
            .ip_or_hostname(target.host.clone())
            .tcp_port(target.port)
            .user(Some(target.admin_user.clone()))
            .pass(Some(target.admin_password.expose_secret().to_owned()))
            .db_name(None::<String>)
            .prefer_socket(false)
            // Timestamps in templates are UTC.
            .init(vec!["SET time_zone = '+00:00'"])
            .pool_opts(PoolOpts::default().with_constraints(constraints))
            .into();
        let admin = Self {
            pool: Pool::new(opts),
            target,
        };
        let mut conn = admin.conn().await?;
        let scheduler: Option<String> = conn
            .query_first("SELECT @@event_scheduler")
            .await
            .map_err(failed("check", 0))?;
        if scheduler.as_deref() != Some("ON") {
            tracing::warn!(
                target = %admin.target,
                "MariaDB's event_scheduler is {}: users will NOT expire on their own while zeroth is down; set event_scheduler=ON",
                scheduler.unwrap_or_default()
            );
        }
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{EVENTS_SCHEMA}`"))
            .await
            .map_err(failed("setup", 0))?;
        Ok(admin)
    }

    async fn conn(&self) -> Result<mysql_async::Conn, DbError> {
        self.pool
            .get_conn()
            .await
            .map_err(|e| DbError::Unavailable {
                target: self.target.to_string(),
                reason: e.to_string(),
            })
    }

    fn render_all(templates: &[String], v: &Values<'_>) -> Result<Vec<String>, DbError> {
        templates
            .iter()
            .map(|t| render(Engine::MariaDb, t, v).map_err(DbError::Template))
            .collect()
    }

    async fn run(
        conn: &mut mysql_async::Conn,
        stage: &'static str,
        statements: &[String],
    ) -> Result<(), DbError> {
        for (i, s) in statements.iter().enumerate() {
            conn.query_drop(s).await.map_err(failed(stage, i + 1))?;
        }
        Ok(())
    }

    fn expiry_event(name: &str, expires: i64, create: bool) -> Result<String, DbError> {
        let v = Values {
            name,
            expiration: expires,
            ..Values::default()
        };
        let event = format!("`{EVENTS_SCHEMA}`.`{}`", event_name(name));
        let t = if create {
            format!("CREATE EVENT {event} ON SCHEDULE AT {{{{expiration}}}} ON COMPLETION NOT PRESERVE DO DROP USER IF EXISTS {{{{name}}}}@'%'")
        } else {
            format!("ALTER EVENT {event} ON SCHEDULE AT {{{{expiration}}}}")
        };
        render(Engine::MariaDb, &t, &v).map_err(DbError::Template)
    }

    pub async fn create(&self, role: &RoleStatements, user: &NewUser<'_>) -> Result<(), DbError> {
        let hash = mysql_native_hash(user.password);
        let v = Values {
            name: user.name,
            password: &hash,
            expiration: user.expires,
            group: &role.group,
            schema: &role.schema,
        };
        let setup = Self::render_all(&role.setup, &v)?;
        let mut creation = Self::render_all(&role.creation, &v)?;
        creation.push(Self::expiry_event(user.name, user.expires, true)?);
        let mut conn = self.conn().await?;
        Self::run(&mut conn, "setup", &setup).await?;
        Self::run(&mut conn, "creation", &creation).await
    }

    pub async fn renew(&self, name: &str, expires: i64, extra: &[String]) -> Result<(), DbError> {
        let v = Values {
            name,
            expiration: expires,
            ..Values::default()
        };
        let mut statements = vec![Self::expiry_event(name, expires, false)?];
        statements.extend(Self::render_all(extra, &v)?);
        let mut conn = self.conn().await?;
        Self::run(&mut conn, "renewal", &statements).await
    }

    pub async fn revoke(&self, name: &str, extra: &[String]) -> Result<bool, DbError> {
        let v = Values {
            name,
            ..Values::default()
        };
        let extra = Self::render_all(extra, &v)?;
        let mut conn = self.conn().await?;
        let exists: Option<u8> = conn
            .exec_first("SELECT 1 FROM mysql.user WHERE User = ? LIMIT 1", (name,))
            .await
            .map_err(failed("revocation", 0))?;
        let drop_event = format!(
            "DROP EVENT IF EXISTS `{EVENTS_SCHEMA}`.`{}`",
            event_name(name)
        );
        if exists.is_none() {
            conn.query_drop(drop_event)
                .await
                .map_err(failed("revocation", 0))?;
            return Ok(false);
        }
        Self::run(&mut conn, "revocation", &extra).await?;
        // Locked first, so no new session starts while the old ones end.
        let lock = render(Engine::MariaDb, "ALTER USER {{name}}@'%' ACCOUNT LOCK", &v)
            .map_err(DbError::Template)?;
        conn.query_drop(lock)
            .await
            .map_err(failed("revocation", 1))?;
        let sessions: Vec<u64> = conn
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
                (name,),
            )
            .await
            .map_err(failed("revocation", 2))?;
        for id in sessions {
            // A session that ended meanwhile is fine.
            let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
        }
        let drop_user = render(Engine::MariaDb, "DROP USER IF EXISTS {{name}}@'%'", &v)
            .map_err(DbError::Template)?;
        conn.query_drop(drop_user)
            .await
            .map_err(failed("revocation", 3))?;
        conn.query_drop(drop_event)
            .await
            .map_err(failed("revocation", 4))?;
        Ok(true)
    }

    pub async fn dynamic_users(&self) -> Result<Vec<String>, DbError> {
        let mut conn = self.conn().await?;
        conn.exec(
            "SELECT DISTINCT User FROM mysql.user WHERE LEFT(User, ?) = ? ORDER BY 1",
            (USER_PREFIX.len() as u64, USER_PREFIX),
        )
        .await
        .map_err(failed("listing", 0))
    }

    pub async fn set_admin_password(&self, new: &SecretString) -> Result<(), DbError> {
        let hash = mysql_native_hash(new);
        let mut conn = self.conn().await?;
        let hosts: Vec<String> = conn
            .exec(
                "SELECT Host FROM mysql.user WHERE User = ?",
                (&self.target.admin_user,),
            )
            .await
            .map_err(failed("rotation", 0))?;
        for host in hosts {
            let s = format!(
                "ALTER USER {}@{} IDENTIFIED BY PASSWORD {}",
                quote(&self.target.admin_user),
                quote(&host),
                quote(&hash)
            );
            conn.query_drop(s).await.map_err(failed("rotation", 1))?;
        }
        Ok(())
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
