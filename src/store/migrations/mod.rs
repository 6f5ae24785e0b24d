//! Versioned schema migrations, forward only: whatever a store lacks is
//! applied in order in one transaction; one list per engine with the same
//! version numbers. A store newer than this binary is refused.

mod postgres;
mod sqlite;

use super::sql::Conn;

use super::StoreError;

pub const LATEST: i64 = 20;

/// Migrations both engines run as written.
///
/// 18: what the retention sweep looks expired records up by.
const RETENTION: &str = "CREATE INDEX ssh_certs_by_expiry ON ssh_certs (valid_before);
 CREATE INDEX svids_by_expiry ON svids (not_after);";

/// 19: the trust a store belongs to (its trust domain and HSM keys).
const TRUST: &str = "CREATE TABLE trust (
    id            BIGINT PRIMARY KEY CHECK (id = 1),
    trust_domain  TEXT NOT NULL,
    keys          TEXT NOT NULL,
    created       BIGINT NOT NULL
 );";

/// 20: the highest exchange attempt taken for a rotated token, so a
/// replayed request (an attempt already seen) is refused.
const EXCHANGE_ATTEMPT: &str = "ALTER TABLE tokens ADD COLUMN last_attempt BIGINT;";

const LEADER: &str = "CREATE TABLE leader (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    holder   TEXT NOT NULL,
    epoch    BIGINT NOT NULL,
    expires  BIGINT NOT NULL
 );";

pub fn current(conn: &Conn) -> Result<i64, StoreError> {
    conn.query_row("SELECT version FROM schema_version", (), |r| r.get(0))
        .map_err(StoreError::sql("reading the schema version"))
}

pub fn apply(conn: &mut Conn) -> Result<(), StoreError> {
    if conn.is_postgres() {
        return apply_postgres(conn);
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
         INSERT INTO schema_version (version)
            SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
    )
    .map_err(StoreError::sql("creating the schema_version table"))?;
    let found = checked(conn)?;
    if found == LATEST {
        return Ok(());
    }
    // Every pending migration in one transaction (SQLite's DDL is
    // transactional): a store is at its old version or the new one, never
    // in between, whatever stops the upgrade.
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a migration"))?;
    for (version, sql) in sqlite::MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.execute_batch(sql)
            .map_err(StoreError::sql("applying a migration"))?;
        tx.execute("UPDATE schema_version SET version = ?1", [version])
            .map_err(StoreError::sql("recording a migration"))?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit()
        .map_err(StoreError::sql("committing a migration"))
}

/// The version found, refused when newer than this zeroth.
fn checked(conn: &Conn) -> Result<i64, StoreError> {
    let found = current(conn)?;
    if found > LATEST {
        return Err(StoreError::TooNew {
            found,
            supported: LATEST,
        });
    }
    Ok(found)
}

/// Servers starting together on one PostgreSQL store: the first to take
/// the migration lock migrates, in one transaction (PostgreSQL's DDL is
/// transactional); the others then find the schema current.
fn apply_postgres(conn: &mut Conn) -> Result<(), StoreError> {
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a migration"))?;
    tx.execute_batch(
        "SELECT pg_advisory_xact_lock(7305844173468954624);
         CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version (version)
            SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
    )
    .map_err(StoreError::sql("creating the schema_version table"))?;
    let found = checked(&tx)?;
    for (version, sql) in postgres::MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.execute_batch(sql)
            .map_err(StoreError::sql("applying a migration"))?;
        tx.execute("UPDATE schema_version SET version = ?1", [version])
            .map_err(StoreError::sql("recording a migration"))?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit()
        .map_err(StoreError::sql("committing a migration"))
}
