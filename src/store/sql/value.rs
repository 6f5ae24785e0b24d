//! Values crossing into and out of SQL, the same for both engines: SQLite's
//! storage classes (NULL, integer, real, text, blob). PostgreSQL columns are
//! mapped onto them (`BIGINT` and smaller integers and `BOOLEAN` as integer,
//! `DOUBLE PRECISION` as real, `TEXT` as text, `BYTEA` as blob).

use super::SqlError;

/// A parameter, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum ValRef<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A column's value, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "NULL",
            Val::Int(_) => "an integer",
            Val::Real(_) => "a real",
            Val::Text(_) => "text",
            Val::Blob(_) => "a blob",
        }
    }
}

/// What may be bound as a parameter.
pub trait ToVal {
    fn to_val(&self) -> ValRef<'_>;
}

/// Why a column's value is not of the type asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("{found} where {wanted} was expected")]
    Kind {
        found: &'static str,
        wanted: &'static str,
    },
    #[error("{value} is out of range for {ty}")]
    Range { value: i64, ty: &'static str },
    /// Of the right type, but not what the column must hold.
    #[error("{0}")]
    Content(String),
}

/// What a column may be read as.
pub trait FromVal: Sized {
    fn from_val(v: Val) -> Result<Self, Mismatch>;
}

fn wrong<T>(v: &Val, wanted: &'static str) -> Result<T, Mismatch> {
    Err(Mismatch::Kind {
        found: v.kind(),
        wanted,
    })
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl ToVal for $t {
            fn to_val(&self) -> ValRef<'_> {
                ValRef::Int(*self as i64)
            }
        }
        impl FromVal for $t {
            fn from_val(v: Val) -> Result<Self, Mismatch> {
                match v {
                    Val::Int(i) => <$t>::try_from(i)
                        .map_err(|_| Mismatch::Range { value: i, ty: stringify!($t) }),
                    other => wrong(&other, "an integer"),
                }
            }
        }
    )*};
}
integers!(i64, i32, i16, u8, u16, u32, u64, usize);

impl ToVal for bool {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Int(i64::from(*self))
    }
}

impl FromVal for bool {
    fn from_val(v: Val) -> Result<Self, Mismatch> {
        match v {
            Val::Int(i) => Ok(i != 0),
            other => wrong(&other, "a boolean"),
        }
    }
}

impl ToVal for f64 {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Real(*self)
    }
}

impl FromVal for f64 {
    fn from_val(v: Val) -> Result<Self, Mismatch> {
        match v {
            Val::Real(f) => Ok(f),
            Val::Int(i) => Ok(i as f64),
            other => wrong(&other, "a number"),
        }
    }
}

impl ToVal for str {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Text(self)
    }
}

impl ToVal for String {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Text(self)
    }
}

impl FromVal for String {
    fn from_val(v: Val) -> Result<Self, Mismatch> {
        match v {
            Val::Text(s) => Ok(s),
            other => wrong(&other, "text"),
        }
    }
}

impl ToVal for [u8] {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Blob(self)
    }
}

impl ToVal for Vec<u8> {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Blob(self)
    }
}

impl<const N: usize> ToVal for [u8; N] {
    fn to_val(&self) -> ValRef<'_> {
        ValRef::Blob(self)
    }
}

impl FromVal for Vec<u8> {
    fn from_val(v: Val) -> Result<Self, Mismatch> {
        match v {
            Val::Blob(b) => Ok(b),
            other => wrong(&other, "a blob"),
        }
    }
}

impl<T: ToVal> ToVal for Option<T> {
    fn to_val(&self) -> ValRef<'_> {
        match self {
            Some(t) => t.to_val(),
            None => ValRef::Null,
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_val(v: Val) -> Result<Self, Mismatch> {
        match v {
            Val::Null => Ok(None),
            other => T::from_val(other).map(Some),
        }
    }
}

impl<T: ToVal + ?Sized> ToVal for &T {
    fn to_val(&self) -> ValRef<'_> {
        (**self).to_val()
    }
}

impl FromVal for Val {
    fn from_val(v: Val) -> Result<Self, Mismatch> {
        Ok(v)
    }
}

impl ToVal for Val {
    fn to_val(&self) -> ValRef<'_> {
        match self {
            Val::Null => ValRef::Null,
            Val::Int(i) => ValRef::Int(*i),
            Val::Real(f) => ValRef::Real(*f),
            Val::Text(s) => ValRef::Text(s),
            Val::Blob(b) => ValRef::Blob(b),
        }
    }
}

/// Reads column `idx`'s value as `T`.
pub(super) fn column<T: FromVal>(idx: usize, v: Val) -> Result<T, SqlError> {
    T::from_val(v).map_err(|reason| SqlError::Column { idx, reason })
}
