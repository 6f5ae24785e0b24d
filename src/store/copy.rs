//! Moves a single server's SQLite store into an empty PostgreSQL one
//! (`zeroth store migrate`): every table, every row, every value as it
//! was, in one transaction on the target, so a failed move leaves the
//! target empty. Secrets stay sealed under the HSM key as they were.

use super::sql::{Conn, Val};
use super::{Store, StoreError};

/// The tables moved, parents before the rows that name them; `entries` and
/// `leases` in the order they were made (their `rowid`).
const TABLES: &[(&str, &str)] = &[
    ("nodes", ""),
    ("challenges", ""),
    ("svids", ""),
    ("ca_certificates", ""),
    ("token_chains", ""),
    ("tokens", ""),
    ("renewal_challenges", ""),
    ("db_connections", ""),
    ("leases", " ORDER BY rowid"),
    ("ssh_certs", ""),
    ("ssh_cas", ""),
    ("ssh_serial_reservations", ""),
    ("session_events", ""),
    ("entries", " ORDER BY rowid"),
    ("workload_svids", ""),
    ("audit", " ORDER BY seq"),
    ("audit_checkpoints", " ORDER BY seq"),
    ("trust", ""),
];

/// Tables that stay behind: the schema's own version, and which server
/// leads (the new cluster elects its own).
const LEFT: &[&str] = &["schema_version", "leader"];

/// Why a move was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source must be a SQLite store")]
    SourceNotSqlite,
    #[error("the target store is not empty: table {table} holds {rows} rows")]
    TargetNotEmpty { table: &'static str, rows: i64 },
    #[error("the source has a table this zeroth does not know how to move: {0}")]
    UnknownTable(String),
    #[error("table {table}: {read} rows read, {written} rows written")]
    Mismatch {
        table: &'static str,
        read: i64,
        written: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn count(conn: &Conn, table: &str) -> Result<i64, StoreError> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), (), |r| r.get(0))
        .map_err(StoreError::sql("counting rows"))
}

/// Copies every row of `from` (SQLite) into `to` (empty); the rows moved
/// per table.
pub fn copy_all(from: &Store, to: &Store) -> Result<Vec<(&'static str, i64)>, CopyError> {
    let source = from.lock();
    let raw = source.as_sqlite().ok_or(CopyError::SourceNotSqlite)?;
    let known: Vec<String> = {
        let mut st = raw
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .map_err(StoreError::sql("listing tables"))?;
        let names = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(StoreError::sql("listing tables"))?;
        names
            .collect::<Result<_, _>>()
            .map_err(StoreError::sql("listing tables"))?
    };
    if let Some(t) = known
        .iter()
        .find(|t| !LEFT.contains(&t.as_str()) && !TABLES.iter().any(|(k, _)| k == t))
    {
        return Err(CopyError::UnknownTable(t.clone()));
    }
    let mut target = to.lock();
    for (table, _) in TABLES {
        let rows = count(&target, table)?;
        if rows > 0 {
            return Err(CopyError::TargetNotEmpty { table, rows });
        }
    }
    let tx = target
        .transaction()
        .map_err(StoreError::sql("starting the move"))?;
    let mut moved = Vec::new();
    for (table, order) in TABLES {
        let mut st = raw
            .prepare(&format!("SELECT * FROM {table}{order}"))
            .map_err(StoreError::sql("reading the source"))?;
        let columns: Vec<String> = st.column_names().into_iter().map(String::from).collect();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            (1..=columns.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut rows = st
            .query([])
            .map_err(StoreError::sql("reading the source"))?;
        let mut n = 0i64;
        while let Some(row) = rows.next().map_err(StoreError::sql("reading the source"))? {
            let vals = (0..columns.len())
                .map(|i| {
                    row.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                        rusqlite::types::Value::Null => Val::Null,
                        rusqlite::types::Value::Integer(i) => Val::Int(i),
                        rusqlite::types::Value::Real(f) => Val::Real(f),
                        rusqlite::types::Value::Text(s) => Val::Text(s),
                        rusqlite::types::Value::Blob(b) => Val::Blob(b),
                    })
                })
                .collect::<Result<Vec<Val>, _>>()
                .map_err(StoreError::sql("reading the source"))?;
            let refs: Vec<&dyn super::sql::ToVal> =
                vals.iter().map(|v| v as &dyn super::sql::ToVal).collect();
            tx.prepare_cached(&insert)
                .and_then(|mut s| s.execute(refs.as_slice()))
                .map_err(StoreError::sql("writing the target"))?;
            n += 1;
        }
        moved.push((*table, n));
    }
    tx.commit()
        .map_err(StoreError::sql("committing the move"))?;
    for (table, n) in &moved {
        let written = count(&target, table)?;
        if written != *n {
            return Err(CopyError::Mismatch {
                table,
                read: *n,
                written,
            });
        }
    }
    Ok(moved)
}
