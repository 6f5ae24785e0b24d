//! The SQL the store runs, on either engine: SQLite (embedded, the
//! default) or PostgreSQL (several servers on one replicated database).
//! One small connection type with rusqlite's shape (`execute`,
//! `query_row`, cached statements, transactions that roll back unless
//! committed); statements are written once, with `?N` parameters, in the
//! SQL both engines accept.

mod postgres;
mod sqlite;
mod value;

use std::ops::Deref;

pub use postgres::{PgRuntime, PgTarget};
pub use value::{FromVal, Mismatch, ToVal, Val, ValRef};

/// Why a statement failed. Never carries a parameter's value.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Sqlite(rusqlite::Error),
    #[error("{}", postgres_text(.0))]
    Postgres(tokio_postgres::Error),
    #[error("{0}")]
    Connection(String),
    #[error("the statement returned no row")]
    NoRow,
    #[error("column {idx}: {reason}")]
    Column { idx: usize, reason: value::Mismatch },
    /// A statement of the transaction failed earlier: PostgreSQL would
    /// silently roll back a COMMIT now, so neither engine commits.
    #[error("a statement of this transaction failed; it was rolled back")]
    Aborted,
}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Self::NoRow,
            other => Self::Sqlite(other),
        }
    }
}

impl SqlError {
    /// The storage under the database has no room left.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            Self::Postgres(e) => e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }

    /// The database is busy: a lock held too long by another connection, a
    /// transaction that lost a race and may be tried again, or a server
    /// refusing connections while it starts or is full. Passing; the
    /// caller may try again soon.
    pub fn is_busy(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            Self::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Self::Postgres(e) => e.code().is_some_and(|c| {
                [
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::QUERY_CANCELED,
                ]
                .contains(c)
            }),
            _ => false,
        }
    }

    /// The database cannot be reached: no connection, or the one there was
    /// is gone (the server stopped, failed over, or the network is down).
    pub fn is_unreachable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            Self::Connection(_) => true,
            Self::Postgres(e) => match e.code() {
                None => e.is_closed() || e.as_db_error().is_none(),
                Some(c) => {
                    c.code().starts_with("08")
                        || [
                            SqlState::ADMIN_SHUTDOWN,
                            SqlState::CRASH_SHUTDOWN,
                            SqlState::READ_ONLY_SQL_TRANSACTION,
                        ]
                        .contains(c)
                }
            },
            _ => false,
        }
    }

    /// A row would have broken a UNIQUE or PRIMARY KEY constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            Self::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// A PostgreSQL error with its server message (tokio-postgres' own text
/// says only "db error"); never parameter values, which the server does
/// not put in its messages.
fn postgres_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("PostgreSQL: {e}: {cause}"),
            None => format!("PostgreSQL: {e}"),
        },
    }
}

/// `Ok(None)` for a query that found no row.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, SqlError>;
}

impl<T> OptionalExtension<T> for Result<T, SqlError> {
    fn optional(self) -> Result<Option<T>, SqlError> {
        match self {
            Ok(t) => Ok(Some(t)),
            Err(SqlError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A statement's parameters: `()`, an array of one type, or `params![…]`.
pub trait Params {
    fn vals(&self) -> Vec<ValRef<'_>>;
}

impl Params for () {
    fn vals(&self) -> Vec<ValRef<'_>> {
        Vec::new()
    }
}

impl<T: ToVal, const N: usize> Params for [T; N] {
    fn vals(&self) -> Vec<ValRef<'_>> {
        self.iter().map(ToVal::to_val).collect()
    }
}

impl Params for &[&dyn ToVal] {
    fn vals(&self) -> Vec<ValRef<'_>> {
        self.iter().map(|v| v.to_val()).collect()
    }
}

/// Parameters of mixed types: `params![id, 3, Some(x)]`.
macro_rules! params {
    () => { () };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::sql::ToVal),+] as &[&dyn $crate::store::sql::ToVal]
    };
}
pub(crate) use params;

/// A connection to the store's database.
pub struct Conn {
    engine: Engine,
    /// A statement failed since the transaction (or savepoint) began.
    failed: std::cell::Cell<bool>,
}

/// Notes a statement's failure in `failed`. A query that found no row or a
/// value of the wrong type is not the database failing.
fn noted<T>(failed: &std::cell::Cell<bool>, r: Result<T, SqlError>) -> Result<T, SqlError> {
    if let Err(SqlError::Sqlite(_) | SqlError::Postgres(_) | SqlError::Connection(_)) = &r {
        failed.set(true);
    }
    r
}

enum Engine {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::PgConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.engine {
            Engine::Sqlite(_) => "Conn(sqlite)",
            Engine::Postgres(_) => "Conn(postgres)",
        })
    }
}

impl Conn {
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        conn.set_prepared_statement_cache_capacity(128);
        Self {
            engine: Engine::Sqlite(conn),
            failed: Default::default(),
        }
    }

    /// A connection to a PostgreSQL store.
    pub fn postgres(
        target: &PgTarget,
        runtime: &std::sync::Arc<PgRuntime>,
    ) -> Result<Self, SqlError> {
        Ok(Self {
            engine: Engine::Postgres(postgres::PgConn::connect(target, runtime)?),
            failed: Default::default(),
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// Whether the connection is known to be broken (PostgreSQL: the
    /// server went away); such a connection is replaced, not reused.
    pub fn is_broken(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(_) => false,
            Engine::Postgres(c) => c.is_closed(),
        }
    }

    /// The SQLite connection underneath, for what only SQLite has
    /// (pragmas, the backup API); None on PostgreSQL.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.engine {
            Engine::Sqlite(c) => Some(c),
            Engine::Postgres(_) => None,
        }
    }

    /// Runs statements without parameters or results.
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        let r = match &self.engine {
            Engine::Sqlite(c) => c.execute_batch(sql).map_err(SqlError::from),
            Engine::Postgres(c) => c.execute_batch(sql),
        };
        noted(&self.failed, r)
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, SqlError> {
        let inner = match &self.engine {
            Engine::Sqlite(c) => c
                .prepare_cached(sql)
                .map(StmtInner::Sqlite)
                .map_err(SqlError::from),
            Engine::Postgres(c) => c.prepare(sql, true).map(|s| StmtInner::Pg(c, s)),
        };
        noted(&self.failed, inner).map(|inner| Stmt(inner, &self.failed))
    }

    /// A statement for one use (one whose text varies).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, SqlError> {
        let inner = match &self.engine {
            Engine::Sqlite(c) => c
                .prepare(sql)
                .map(StmtInner::SqliteOnce)
                .map_err(SqlError::from),
            Engine::Postgres(c) => c.prepare(sql, false).map(|s| StmtInner::Pg(c, s)),
        };
        noted(&self.failed, inner).map(|inner| Stmt(inner, &self.failed))
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize, SqlError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, read by `f`; [`SqlError::NoRow`] if none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Begins a transaction: rolled back when dropped uncommitted.
    ///
    /// On PostgreSQL every transaction first takes one cluster-wide lock
    /// (an advisory lock held until it ends): the servers of a cluster
    /// write one at a time, as SQLite's single writer does, so a
    /// transaction's reads stay true until it commits (a challenge is used
    /// once, the audit chain has one head, serial blocks never overlap).
    /// Group commit keeps the cost to one lock per batch of requests.
    pub fn transaction(&mut self) -> Result<Tx<'_>, SqlError> {
        self.execute_batch(match self.engine {
            // IMMEDIATE: the write lock from the start, waited for (busy
            // timeout) if another process holds it. A deferred transaction
            // that read first would fail at once when it came to write.
            Engine::Sqlite(_) => "BEGIN IMMEDIATE",
            Engine::Postgres(_) => "BEGIN; SELECT pg_advisory_xact_lock(7305844173468954625)",
        })?;
        self.failed.set(false);
        Ok(Tx {
            conn: self,
            open: true,
        })
    }

    /// Marks a point in the open transaction to roll back to.
    pub fn savepoint(&self, name: &str) -> Result<(), SqlError> {
        self.prepare_cached(&format!("SAVEPOINT {name}"))?
            .execute(())
            .map(drop)
    }

    /// Keeps what was done since the savepoint (in the transaction).
    pub fn release(&self, name: &str) -> Result<(), SqlError> {
        self.prepare_cached(&format!("RELEASE {name}"))?
            .execute(())
            .map(drop)
    }

    /// Undoes what was done since the savepoint, failures included: the
    /// transaction may go on and commit.
    pub fn rollback_to(&self, name: &str) -> Result<(), SqlError> {
        self.prepare_cached(&format!("ROLLBACK TO {name}"))?
            .execute(())?;
        self.failed.set(false);
        Ok(())
    }
}

/// An open transaction; every statement of the connection runs in it.
pub struct Tx<'c> {
    conn: &'c Conn,
    open: bool,
}

impl Tx<'_> {
    /// Commits; refused (and rolled back) if a statement failed in it.
    pub fn commit(mut self) -> Result<(), SqlError> {
        if self.conn.failed.get() {
            return Err(SqlError::Aborted);
        }
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// A prepared statement.
pub struct Stmt<'c>(StmtInner<'c>, &'c std::cell::Cell<bool>);

enum StmtInner<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    SqliteOnce(rusqlite::Statement<'c>),
    Pg(&'c postgres::PgConn, tokio_postgres::Statement),
}

impl Stmt<'_> {
    /// Runs it; the number of rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize, SqlError> {
        let vals = params.vals();
        let r = match &mut self.0 {
            StmtInner::Sqlite(s) => sqlite::execute(s, &vals),
            StmtInner::SqliteOnce(s) => sqlite::execute(s, &vals),
            StmtInner::Pg(c, s) => c.execute(s, &vals),
        };
        noted(self.1, r)
    }

    /// Every row, each read by `f`.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<std::vec::IntoIter<Result<T, SqlError>>, SqlError> {
        let vals = params.vals();
        let rows = match &mut self.0 {
            StmtInner::Sqlite(s) => sqlite::query_map(s, &vals, f),
            StmtInner::SqliteOnce(s) => sqlite::query_map(s, &vals, f),
            StmtInner::Pg(c, s) => c
                .query(s, &vals)
                .map(|rows| rows.iter().map(|r| f(&Row(RowInner::Pg(r)))).collect()),
        };
        let rows = noted(self.1, rows)?;
        Ok(rows.into_iter())
    }

    /// The first row, read by `f`; [`SqlError::NoRow`] if none.
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let vals = params.vals();
        let r = match &mut self.0 {
            StmtInner::Sqlite(s) => sqlite::query_row(s, &vals, f),
            StmtInner::SqliteOnce(s) => sqlite::query_row(s, &vals, f),
            StmtInner::Pg(c, s) => c.query(s, &vals).and_then(|rows| match rows.first() {
                Some(r) => f(&Row(RowInner::Pg(r))),
                None => Err(SqlError::NoRow),
            }),
        };
        noted(self.1, r)
    }
}

/// One row of a result.
pub struct Row<'a>(RowInner<'a>);

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (from 0) as `T`.
    pub fn get<T: FromVal>(&self, idx: usize) -> Result<T, SqlError> {
        let v = match &self.0 {
            RowInner::Sqlite(r) => sqlite::value(r, idx)?,
            RowInner::Pg(r) => postgres::value(r, idx)?,
        };
        value::column(idx, v)
    }
}
