//! Database connections as stored: where each database is and its admin
//! password, sealed under the HSM's store key and bound to its row, with
//! the pending one of a rotation under way.

use crate::store::sql::{params, Conn, OptionalExtension, Tx};

use super::{now, StoreError};

/// A database connection as stored: the admin password sealed under the
/// HSM key-encryption key, bound to this row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbConnectionRow {
    pub name: String,
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub admin_user: String,
    #[serde(skip)]
    pub sealed_password: Vec<u8>,
    pub created: i64,
    pub rotated: Option<i64>,
    /// PEM CA for TLS with full verification; `None`: no TLS. Listed as
    /// `"tls": true|false`.
    #[serde(rename = "tls", serialize_with = "is_some")]
    pub tls_ca: Option<Vec<u8>>,
    /// A new admin password, sealed like the current one, recorded before
    /// the database is told of it: whichever of the two the database holds
    /// after a crash, zeroth knows it.
    #[serde(skip)]
    pub pending_password: Option<Vec<u8>>,
}

fn is_some<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(v.is_some())
}

pub fn save_connection(tx: &Tx<'_>, c: &DbConnectionRow) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO db_connections (name, engine, host, port, dbname, admin_user, sealed_password, created, rotated, tls_ca, pending_password)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(name) DO UPDATE SET engine = excluded.engine, host = excluded.host,
            port = excluded.port, dbname = excluded.dbname, admin_user = excluded.admin_user,
            sealed_password = excluded.sealed_password, rotated = excluded.rotated,
            tls_ca = excluded.tls_ca, pending_password = excluded.pending_password",
        params![
            c.name,
            c.engine,
            c.host,
            c.port,
            c.dbname,
            c.admin_user,
            c.sealed_password,
            c.created,
            c.rotated,
            c.tls_ca,
            c.pending_password
        ],
    )
    .map_err(StoreError::sql("recording a database connection"))?;
    Ok(())
}

/// Records `sealed` as the connection's pending admin password.
pub fn set_pending_password(tx: &Tx<'_>, name: &str, sealed: &[u8]) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE db_connections SET pending_password = ?2 WHERE name = ?1",
            params![name, sealed],
        )
        .map_err(StoreError::sql("recording a pending admin password"))?;
    Ok(n == 1)
}

/// Makes the pending admin password the current one; false if none was
/// pending.
pub fn switch_to_pending(tx: &Tx<'_>, name: &str) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE db_connections SET sealed_password = pending_password,
                pending_password = NULL, rotated = ?2
             WHERE name = ?1 AND pending_password IS NOT NULL",
            params![name, now()],
        )
        .map_err(StoreError::sql("switching to the new admin password"))?;
    Ok(n == 1)
}

fn connection_from_row(
    r: &crate::store::sql::Row<'_>,
) -> Result<DbConnectionRow, crate::store::sql::SqlError> {
    Ok(DbConnectionRow {
        name: r.get(0)?,
        engine: r.get(1)?,
        host: r.get(2)?,
        port: r.get(3)?,
        dbname: r.get(4)?,
        admin_user: r.get(5)?,
        sealed_password: r.get(6)?,
        created: r.get(7)?,
        rotated: r.get(8)?,
        tls_ca: r.get(9)?,
        pending_password: r.get(10)?,
    })
}

const CONNECTION_COLUMNS: &str =
    "name, engine, host, port, dbname, admin_user, sealed_password, created, rotated, tls_ca, pending_password";

pub fn connection(conn: &Conn, name: &str) -> Result<Option<DbConnectionRow>, StoreError> {
    conn.query_row(
        &format!("SELECT {CONNECTION_COLUMNS} FROM db_connections WHERE name = ?1"),
        [name],
        connection_from_row,
    )
    .optional()
    .map_err(StoreError::sql("reading a database connection"))
}

pub fn connections(conn: &Conn) -> Result<Vec<DbConnectionRow>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM db_connections ORDER BY name"
        ))
        .map_err(StoreError::sql("listing database connections"))?;
    let rows = stmt
        .query_map((), connection_from_row)
        .map_err(StoreError::sql("listing database connections"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing database connections"))
}

pub fn remove_connection(tx: &Tx<'_>, name: &str) -> Result<bool, StoreError> {
    let n = tx
        .execute("DELETE FROM db_connections WHERE name = ?1", [name])
        .map_err(StoreError::sql("removing a database connection"))?;
    Ok(n == 1)
}
