//! The SQLite side of [`super::Conn`]: parameters bound by position, rows
//! read as SQLite's storage classes.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Statement, ToSql};

use super::{Row, RowInner, SqlError, Val, ValRef};

impl ToSql for ValRef<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            ValRef::Null => ValueRef::Null,
            ValRef::Int(i) => ValueRef::Integer(i),
            ValRef::Real(f) => ValueRef::Real(f),
            ValRef::Text(s) => ValueRef::Text(s.as_bytes()),
            ValRef::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind(s: &mut Statement<'_>, vals: &[ValRef<'_>]) -> Result<(), SqlError> {
    for (i, v) in vals.iter().enumerate() {
        s.raw_bind_parameter(i + 1, v)?;
    }
    Ok(())
}

pub(super) fn execute(s: &mut Statement<'_>, vals: &[ValRef<'_>]) -> Result<usize, SqlError> {
    Ok(s.execute(rusqlite::params_from_iter(vals.iter()))?)
}

pub(super) fn query_map<T>(
    s: &mut Statement<'_>,
    vals: &[ValRef<'_>],
    mut f: impl FnMut(&Row<'_>) -> Result<T, SqlError>,
) -> Result<Vec<Result<T, SqlError>>, SqlError> {
    bind(s, vals)?;
    let mut rows = s.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(&Row(RowInner::Sqlite(r))));
    }
    Ok(out)
}

pub(super) fn query_row<T>(
    s: &mut Statement<'_>,
    vals: &[ValRef<'_>],
    f: impl FnOnce(&Row<'_>) -> Result<T, SqlError>,
) -> Result<T, SqlError> {
    bind(s, vals)?;
    let mut rows = s.raw_query();
    match rows.next()? {
        Some(r) => f(&Row(RowInner::Sqlite(r))),
        None => Err(SqlError::NoRow),
    }
}

pub(super) fn value(r: &rusqlite::Row<'_>, idx: usize) -> Result<Val, SqlError> {
    Ok(match r.get::<_, Value>(idx)? {
        Value::Null => Val::Null,
        Value::Integer(i) => Val::Int(i),
        Value::Real(f) => Val::Real(f),
        Value::Text(s) => Val::Text(s),
        Value::Blob(b) => Val::Blob(b),
    })
}
