//! MariaDB: pooled admin connections (mysql_async) and the user lifecycle.
//! Passwords reach the server only as mysql_native_password hashes. Each
//! user's expiry is a row in `zeroth.expiry`; one recurring event locks
//! the users whose time has come, every second, and then drops them, so
//! expiry holds even when zeroth is down (if the event scheduler is on). A row costs far less than
//! an event per user, which MariaDB would have to create and schedule.

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};
use secrecy::{ExposeSecret, SecretString};

use super::role::RoleStatements;
use super::secret::{mysql_native_hash, USER_PREFIX};
use super::template::{render, Values};
use super::{DbError, Engine, NewUser, Target};

/// Who a built-in role's GRANT makes (see `role::RoleStatements`).
pub const GRANTEE: &str = "{{name}}@'%' IDENTIFIED BY PASSWORD {{password}}";

/// The schema holding zeroth's expiry table, procedure and event.
pub const EVENTS_SCHEMA: &str = "zeroth";

/// Every admin session: timestamps in templates are UTC, and GRANT may
/// create the user it names (one privilege-cache rebuild per user instead
/// of two for CREATE USER + GRANT).
pub const SESSION_INIT: [&str; 2] = [
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_AUTO_CREATE_USER', '')",
];

/// What `connect` installs (idempotently) on every MariaDB it administers.
const EXPIRY_SETUP: [&str; 5] = [
    r#"CREATE TABLE IF NOT EXISTS `zeroth`.`expiry` (
        user    VARCHAR(80) NOT NULL PRIMARY KEY,
        expires BIGINT NOT NULL,
        KEY by_expiry (expires)
     ) ENGINE=InnoDB"#,
    r#"ALTER TABLE `zeroth`.`expiry` ADD COLUMN IF NOT EXISTS locked TINYINT NOT NULL DEFAULT 0"#,
    // One step of the expiry: up to `size` due users not yet locked (with
    // `locking`) are locked, or up to `size` locked ones dropped, each in
    // one statement; `n` says how many were due.
    r#"CREATE OR REPLACE PROCEDURE `zeroth`.`expire_step`(IN locking TINYINT, IN size INT, OUT n INT)
     BEGIN
        SET @zeroth_due = NULL, @zeroth_accounts = NULL;
        SELECT GROUP_CONCAT(QUOTE(d.user)), COUNT(*) INTO @zeroth_due, n
            FROM (SELECT user FROM `zeroth`.`expiry`
                  WHERE locked = IF(locking, 0, 1) AND expires <= UNIX_TIMESTAMP()
                  ORDER BY expires LIMIT size) d;
        IF n > 0 THEN
            SET @zeroth_sql = CONCAT(
                'SELECT GROUP_CONCAT(CONCAT(QUOTE(User), ''@'', QUOTE(Host))) ',
                'INTO @zeroth_accounts FROM mysql.user WHERE User IN (', @zeroth_due, ')');
            PREPARE stmt FROM @zeroth_sql;
            EXECUTE stmt;
            DEALLOCATE PREPARE stmt;
            IF @zeroth_accounts IS NOT NULL THEN
                SET @zeroth_sql = IF(locking,
                    CONCAT('ALTER USER IF EXISTS ', @zeroth_accounts, ' ACCOUNT LOCK'),
                    CONCAT('DROP USER IF EXISTS ', @zeroth_accounts));
                PREPARE stmt FROM @zeroth_sql;
                EXECUTE stmt;
                DEALLOCATE PREPARE stmt;
            END IF;
            SET @zeroth_sql = IF(locking,
                CONCAT('UPDATE `zeroth`.`expiry` SET locked = 1 WHERE user IN (', @zeroth_due, ')'),
                CONCAT('DELETE FROM `zeroth`.`expiry` WHERE user IN (', @zeroth_due, ')'));
            PREPARE stmt FROM @zeroth_sql;
            EXECUTE stmt;
            DEALLOCATE PREPARE stmt;
        END IF;
     END"#,
    // Every second: first every due account is locked, up to 1,000 to a
    // statement (a lock costs MariaDB little, and a locked account logs in
    // no more); then locked accounts are dropped, 100 to a statement, for
    // at most 0.8 s (a drop costs about 2 ms an account however they are
    // grouped, so under a storm of expiries the drops trail the locks,
    // never the other way round).
    r#"CREATE OR REPLACE PROCEDURE `zeroth`.`expire_users`()
     BEGIN
        DECLARE n INT DEFAULT 1;
        DECLARE started DOUBLE DEFAULT UNIX_TIMESTAMP(SYSDATE(6));
        SET SESSION group_concat_max_len = 4194304;
        WHILE n > 0 DO
            CALL `zeroth`.`expire_step`(1, 1000, n);
        END WHILE;
        SET n = 1;
        WHILE n > 0 AND UNIX_TIMESTAMP(SYSDATE(6)) - started < 0.8 DO
            CALL `zeroth`.`expire_step`(0, 100, n);
        END WHILE;
     END"#,
    r#"CREATE EVENT IF NOT EXISTS `zeroth`.`expire_users`
        ON SCHEDULE EVERY 1 SECOND ON COMPLETION PRESERVE
        DO CALL `zeroth`.`expire_users`()"#,
];

pub struct MariaAdmin {
    target: Target,
    pool: Pool,
    batches: tokio::sync::mpsc::UnboundedSender<super::mariadb_batch::Job>,
    revocations: tokio::sync::mpsc::UnboundedSender<super::mariadb_revocations::Job>,
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
            .init(SESSION_INIT.to_vec())
            .pool_opts(PoolOpts::default().with_constraints(constraints))
            .into();
        let pool = Pool::new(opts);
        let admin = Self {
            batches: super::mariadb_batch::spawn(pool.clone(), target.to_string()),
            revocations: super::mariadb_revocations::spawn(pool.clone(), target.to_string()),
            pool,
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
        for (i, sql) in EXPIRY_SETUP.iter().enumerate() {
            conn.query_drop(*sql)
                .await
                .map_err(failed("setup", i + 1))?;
        }
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

    /// Sets (or moves) the user's expiry row.
    async fn set_expiry(
        conn: &mut mysql_async::Conn,
        stage: &'static str,
        name: &str,
        expires: i64,
    ) -> Result<(), DbError> {
        conn.exec_drop(
            "INSERT INTO `zeroth`.`expiry` (user, expires) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE expires = VALUES(expires)",
            (name, expires),
        )
        .await
        .map_err(failed(stage, 0))
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
        if let (Some(head), true) = (&role.batch_grant, role.setup.is_empty()) {
            let (done, answer) = tokio::sync::oneshot::channel();
            let job = super::mariadb_batch::Job {
                grant: render(Engine::MariaDb, head, &v).map_err(DbError::Template)?,
                grantee: render(Engine::MariaDb, GRANTEE, &v).map_err(DbError::Template)?,
                name: user.name.to_owned(),
                expires: user.expires,
                done,
            };
            let gone = || DbError::Unavailable {
                target: self.target.to_string(),
                reason: "the batching task stopped".into(),
            };
            self.batches.send(job).map_err(|_| gone())?;
            return answer.await.map_err(|_| gone())?.map(|_| ());
        }
        let setup = Self::render_all(&role.setup, &v)?;
        let creation = Self::render_all(&role.creation, &v)?;
        let mut conn = self.conn().await?;
        Self::run(&mut conn, "setup", &setup).await?;
        // The expiry first: a user never exists without one.
        Self::set_expiry(&mut conn, "creation", user.name, user.expires).await?;
        Self::run(&mut conn, "creation", &creation).await
    }

    pub async fn renew(&self, name: &str, expires: i64, extra: &[String]) -> Result<(), DbError> {
        let v = Values {
            name,
            expiration: expires,
            ..Values::default()
        };
        let statements = Self::render_all(extra, &v)?;
        let mut conn = self.conn().await?;
        Self::set_expiry(&mut conn, "renewal", name, expires).await?;
        Self::run(&mut conn, "renewal", &statements).await
    }

    /// Locks, disconnects and drops `name` at every host it exists at (a
    /// custom template may have made it at another host than `%`). Its
    /// sessions are ended even when the account is already gone: the
    /// expiry event may have dropped it while sessions stayed open. A role
    /// without extra revocation statements is revoked in a batch with the
    /// others asked for meanwhile.
    pub async fn revoke(&self, name: &str, extra: &[String]) -> Result<bool, DbError> {
        let v = Values {
            name,
            ..Values::default()
        };
        let extra = Self::render_all(extra, &v)?;
        if extra.is_empty() {
            let (done, answer) = tokio::sync::oneshot::channel();
            let job = super::mariadb_revocations::Job {
                name: name.to_owned(),
                done,
            };
            let gone = || DbError::Unavailable {
                target: self.target.to_string(),
                reason: "the revocation queue has stopped".into(),
            };
            self.revocations.send(job).map_err(|_| gone())?;
            return answer.await.map_err(|_| gone())?;
        }
        let mut conn = self.conn().await?;
        super::mariadb_revocations::one(&mut conn, &self.target.to_string(), name, &extra).await
    }

    /// A bare, locked account `name` (a probe of the admin's privileges),
    /// or, with `make` false, its plain removal.
    pub async fn bare_user(&self, name: &str, make: bool) -> Result<(), DbError> {
        let sql = match make {
            true => format!("CREATE USER '{name}'@'%' ACCOUNT LOCK"),
            false => format!("DROP USER IF EXISTS '{name}'@'%'"),
        };
        let mut conn = self.conn().await?;
        conn.query_drop(sql).await.map_err(failed("probe", 0))
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

/// `s` as a string literal.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
