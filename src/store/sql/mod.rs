//! The SQL the store runs, on either engine: SQLite (embedded, the
//! default) or PostgreSQL (several servers on one replicated database).
//! One small connection type with rusqlite's shape (`execute`,
//! `query_row`, cached statements, transactions that roll back unless
//! committed); statements are written once, with `?N` parameters, in the
//! SQL both engines accept.

mod sqlite;
mod value;

use std::ops::Deref;

pub use value::{FromVal, ToVal, Val, ValRef};

/// Why a statement failed. Never carries a parameter's value.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Sqlite(rusqlite::Error),
    #[error("the statement returned no row")]
    NoRow,
    #[error("column {idx}: {reason}")]
    Column { idx: usize, reason: String },
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
        matches!(self, Self::Sqlite(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull))
    }

    /// A row would have broken a UNIQUE or PRIMARY KEY constraint.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
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
}

enum Engine {
    Sqlite(rusqlite::Connection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.engine {
            Engine::Sqlite(_) => "Conn(sqlite)",
        })
    }
}

impl Conn {
    pub fn sqlite(conn: rusqlite::Connection) -> Self {
        conn.set_prepared_statement_cache_capacity(128);
        Self {
            engine: Engine::Sqlite(conn),
        }
    }

    /// The SQLite connection underneath, for what only SQLite has
    /// (pragmas, the backup API); None on PostgreSQL.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.engine {
            Engine::Sqlite(c) => Some(c),
        }
    }

    /// Runs statements without parameters or results.
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        match &self.engine {
            Engine::Sqlite(c) => Ok(c.execute_batch(sql)?),
        }
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>, SqlError> {
        match &self.engine {
            Engine::Sqlite(c) => Ok(Stmt(StmtInner::Sqlite(c.prepare_cached(sql)?))),
        }
    }

    /// A statement for one use (one whose text varies).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>, SqlError> {
        match &self.engine {
            Engine::Sqlite(c) => Ok(Stmt(StmtInner::SqliteOnce(c.prepare(sql)?))),
        }
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
    pub fn transaction(&mut self) -> Result<Tx<'_>, SqlError> {
        self.execute_batch("BEGIN")?;
        Ok(Tx {
            conn: self,
            open: true,
        })
    }
}

/// An open transaction; every statement of the connection runs in it.
pub struct Tx<'c> {
    conn: &'c Conn,
    open: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), SqlError> {
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
pub struct Stmt<'c>(StmtInner<'c>);

enum StmtInner<'c> {
    Sqlite(rusqlite::CachedStatement<'c>),
    SqliteOnce(rusqlite::Statement<'c>),
}

impl Stmt<'_> {
    /// Runs it; the number of rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize, SqlError> {
        let vals = params.vals();
        match &mut self.0 {
            StmtInner::Sqlite(s) => sqlite::execute(s, &vals),
            StmtInner::SqliteOnce(s) => sqlite::execute(s, &vals),
        }
    }

    /// Every row, each read by `f`.
    pub fn query_map<T>(
        &mut self,
        params: impl Params,
        f: impl FnMut(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<std::vec::IntoIter<Result<T, SqlError>>, SqlError> {
        let vals = params.vals();
        let rows = match &mut self.0 {
            StmtInner::Sqlite(s) => sqlite::query_map(s, &vals, f),
            StmtInner::SqliteOnce(s) => sqlite::query_map(s, &vals, f),
        }?;
        Ok(rows.into_iter())
    }

    /// The first row, read by `f`; [`SqlError::NoRow`] if none.
    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<T, SqlError> {
        let vals = params.vals();
        match &mut self.0 {
            StmtInner::Sqlite(s) => sqlite::query_row(s, &vals, f),
            StmtInner::SqliteOnce(s) => sqlite::query_row(s, &vals, f),
        }
    }
}

/// One row of a result.
pub struct Row<'a>(RowInner<'a>);

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
}

impl Row<'_> {
    /// Column `idx` (from 0) as `T`.
    pub fn get<T: FromVal>(&self, idx: usize) -> Result<T, SqlError> {
        let v = match &self.0 {
            RowInner::Sqlite(r) => sqlite::value(r, idx)?,
        };
        value::column(idx, v)
    }
}
