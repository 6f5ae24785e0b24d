//! The server's own data in SQLite: the only code that writes SQL for it.
//!
//! One connection, one writer: SQLite serialises writes anyway, and a single
//! connection behind a mutex keeps every transaction simple. WAL mode with
//! `synchronous=FULL` makes each committed transaction durable before the
//! server acknowledges what it recorded. Hot checks on the request path
//! (is this node approved?) read through [`Store::read`], a small pool of
//! read-only connections that WAL lets run beside the writer, so they never
//! wait for a commit's fsync.

pub mod entries;
pub mod group_commit;
pub mod leases;
mod migrations;
pub mod nodes;
mod readers;
pub mod sql;
pub mod ssh_cas;
pub mod tokens;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use sql::{Conn, SqlError};

pub use readers::Reader;

/// Why the store failed. Never carries a secret: SQL errors name the
/// statement's purpose, not its parameters.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: SqlError,
    },
    #[error(
        "database schema version {found} is newer than this zeroth ({supported}); upgrade zeroth"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("database error while {doing}: {source}")]
    Sql {
        doing: &'static str,
        #[source]
        source: SqlError,
    },
    #[error("database error in a group commit: {0}")]
    Writer(String),
    /// The file system under the state directory has no room left.
    #[error("the state storage is full (while {doing}): free space in the state directory")]
    Full { doing: &'static str },
}

impl StoreError {
    pub(crate) fn sql<E: Into<SqlError>>(doing: &'static str) -> impl FnOnce(E) -> Self {
        move |source| {
            let source = source.into();
            if source.is_disk_full() {
                Self::Full { doing }
            } else {
                Self::Sql { doing, source }
            }
        }
    }

    /// The same failure, for each of the jobs that shared a transaction.
    pub(crate) fn for_each_job(&self) -> Self {
        match self {
            Self::Full { doing } => Self::Full { doing },
            other => Self::Writer(other.to_string()),
        }
    }
}

/// The server's database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Conn>,
    readers: readers::Readers,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source: source.into(),
        })?;
        Self::init(conn, readers::Readers::on_file(path))
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source: source.into(),
        })?;
        Self::init(conn, readers::Readers::none())
    }

    fn init(conn: Connection, readers: readers::Readers) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(StoreError::sql("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(StoreError::sql("setting synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(StoreError::sql("enabling foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(StoreError::sql("setting the busy timeout"))?;
        let mut conn = Conn::sqlite(conn);
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers,
        })
    }

    /// The connection, for one caller at a time.
    pub fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for reading only: one of the pooled read-only ones,
    /// which sees every committed transaction and does not wait for the
    /// writer (an in-memory store has none and lends its only connection).
    pub fn read(&self) -> Result<Reader<'_>, StoreError> {
        self.readers.get(self)
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        migrations::current(&self.lock())
    }
}

pub use crate::wire::now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_serial_blocks_never_overlap_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeroth.db");
        let store = Store::open(&path).unwrap();
        let a = leases::reserve_ssh_serials(&mut store.lock(), 256).unwrap();
        assert_eq!(a, (1, 256));
        drop(store);
        // A restart (maybe after a crash mid-block) starts past the block.
        let store = Store::open(&path).unwrap();
        let b = leases::reserve_ssh_serials(&mut store.lock(), 256).unwrap();
        assert_eq!(b, (257, 512));
        // A serial recorded beyond the reservations is never handed out again.
        {
            let mut conn = store.lock();
            let tx = conn.transaction().unwrap();
            leases::record_ssh_cert(&tx, 900, "l", "k", "h", "r", &[], 0).unwrap();
            assert!(
                leases::record_ssh_cert(&tx, 900, "l2", "k", "h", "r", &[], 0).is_err(),
                "a serial is used once"
            );
            tx.commit().unwrap();
        }
        let c = leases::reserve_ssh_serials(&mut store.lock(), 10).unwrap();
        assert_eq!(c, (901, 910));
    }

    #[test]
    fn a_new_database_gets_the_latest_schema_and_reopening_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeroth.db");
        let v = Store::open(&path).unwrap().schema_version().unwrap();
        assert_eq!(v, migrations::LATEST);
        assert_eq!(Store::open(&path).unwrap().schema_version().unwrap(), v);
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_database_from_a_newer_zeroth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeroth.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute("UPDATE schema_version SET version = 999", [])
            .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 999, .. }),
            "{err}"
        );
    }
}
