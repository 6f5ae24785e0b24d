//! The server's own data in SQLite: the only code that writes SQL for it.
//!
//! One connection, one writer: SQLite serialises writes anyway, and a single
//! connection behind a mutex keeps every transaction simple. WAL mode with
//! `synchronous=FULL` makes each committed transaction durable before the
//! server acknowledges what it recorded. Hot checks on the request path
//! (is this node approved?) read through [`Store::read`], a small pool of
//! read-only connections that WAL lets run beside the writer, so they never
//! wait for a commit's fsync.

pub mod backup;
#[cfg(feature = "lab")]
#[cfg(test)]
mod conformance;
pub mod copy;
pub mod db_connections;
pub mod entries;
pub mod group_commit;
pub mod leader;
pub mod leases;
mod migrations;
pub mod nodes;
mod readers;
pub mod retention;
pub mod sql;
pub mod ssh_cas;
pub mod ssh_certs;
pub mod tokens;
pub mod trust;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use sql::{Conn, SqlError};

pub use migrations::LATEST as LATEST_SCHEMA;
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
    /// The failure of a group commit, as each job that shared it hears it.
    #[error("database error in a group commit: {text}")]
    Shared { trouble: Trouble, text: String },
    /// A backup or restore that cannot be done, and why.
    #[error("{0}")]
    Backup(String),
    /// A record the store holds cannot be read back (edited by hand?).
    #[error("the store's {what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
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
            other => Self::Shared {
                trouble: other.trouble(),
                text: other.to_string(),
            },
        }
    }

    /// What kind of trouble this is, for the answer a caller gets.
    pub fn trouble(&self) -> Trouble {
        match self {
            Self::Full { .. } => Trouble::Full,
            Self::Shared { trouble, .. } => *trouble,
            Self::Sql { source, .. } | Self::Open { source, .. } if source.is_busy() => {
                Trouble::Busy
            }
            Self::Sql { source, .. } if source.is_unreachable() => Trouble::Unreachable,
            Self::Open { .. } => Trouble::Unreachable,
            _ => Trouble::Fault,
        }
    }
}

/// The kinds of store failure a request can meet, each answered for what
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// No room left under the state directory.
    Full,
    /// Busy beyond the wait (a lock held too long, a transaction that lost
    /// a race): passing, try again in a moment.
    Busy,
    /// The store cannot be reached (PostgreSQL down or failing over).
    Unreachable,
    /// Anything else: a fault of the server or of its data, for its
    /// operator (the log has the cause).
    Fault,
}

/// The writer's page cache, in KiB (as `PRAGMA cache_size = -N`).
const WRITER_CACHE_KIB: i64 = -2048;
/// Each pooled reader's page cache, in KiB.
const READER_CACHE_KIB: i64 = -512;

/// How long a statement waits for a lock another connection holds before
/// it fails as busy: a slow store (a loaded machine, a backup, a long
/// sweep) makes writers wait, not fail.
pub(crate) const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The server's database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Conn>,
    readers: readers::Readers,
}

/// Where a store keeps its data.
#[derive(Debug, Clone)]
pub enum Location {
    /// SQLite, embedded: one file in the state directory.
    File(std::path::PathBuf),
    /// PostgreSQL: shared by every server of a cluster.
    Postgres(sql::PgTarget),
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

    /// Opens the store at `at`.
    pub fn open_at(at: &Location) -> Result<Self, StoreError> {
        match at {
            Location::File(path) => Self::open(path),
            Location::Postgres(target) => Self::open_postgres(target),
        }
    }

    /// Connects to a PostgreSQL store and brings its schema up to date
    /// (the first of several servers starting together does it).
    pub fn open_postgres(target: &sql::PgTarget) -> Result<Self, StoreError> {
        let runtime = sql::PgRuntime::start().map_err(|source| StoreError::Open {
            path: target.url.clone(),
            source,
        })?;
        let mut conn = Conn::postgres(target, &runtime).map_err(|source| StoreError::Open {
            path: target.url.clone(),
            source,
        })?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers: readers::Readers::on_postgres(target.clone(), runtime),
        })
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
        // SQLite's page caches are most of the server's heap and fill as the
        // store grows: each is bounded (a negative cache_size is KiB), so the
        // writer and the pooled readers hold at most WRITER_CACHE_KIB +
        // KEEP x READER_CACHE_KIB together; the OS page cache keeps the rest
        // of the file warm.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(StoreError::sql("enabling WAL"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(StoreError::sql("setting synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(StoreError::sql("enabling foreign keys"))?;
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(StoreError::sql("bounding the writer's page cache"))?;
        conn.busy_timeout(BUSY_WAIT)
            .map_err(StoreError::sql("setting the busy timeout"))?;
        let mut conn = Conn::sqlite(conn);
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers,
        })
    }

    /// The connection, for one caller at a time. A PostgreSQL connection
    /// found broken (the database restarted or failed over) is replaced
    /// first; if that fails the broken one is lent and its statements fail.
    pub fn lock(&self) -> MutexGuard<'_, Conn> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_broken() {
            match self.readers.reconnect() {
                Ok(fresh) => {
                    tracing::warn!("the store's connection was lost; reconnected");
                    *conn = fresh;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the store's connection was lost and cannot be made again")
                }
            }
        }
        conn
    }

    /// Whether this store is PostgreSQL (shared by several servers).
    pub fn is_shared(&self) -> bool {
        self.lock().is_postgres()
    }

    /// A connection for reading only: one of the pooled read-only ones,
    /// which sees every committed transaction and does not wait for the
    /// writer (an in-memory store has none and lends its only connection).
    pub fn read(&self) -> Result<Reader<'_>, StoreError> {
        self.readers.get(self)
    }

    /// The SQLite file holding this store (None for PostgreSQL or memory).
    pub fn file(&self) -> Option<&Path> {
        self.readers.file()
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
    fn a_sqlite_store_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zeroth.db");
        drop(Store::open(&path).unwrap());
        let mode: String = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
