//! The PostgreSQL side of [`super::Conn`]. Statements are written with
//! SQLite's `?N` parameters and sent as `$N`; values map onto SQLite's
//! storage classes both ways, so the store's code does not know which
//! engine it runs on.
//!
//! The client is tokio-postgres. Its connection task runs on a small
//! runtime of the store's own, and a caller waits for each statement on a
//! plain channel: the store is called from the server's async handlers and
//! from plain threads alike, as SQLite is.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::{SqlError, Val, ValRef};

/// Where a PostgreSQL store is and how to log in.
#[derive(Clone)]
pub struct PgTarget {
    /// libpq-style URL without a password; several hosts allowed.
    pub url: String,
    pub password: Option<SecretString>,
    /// PEM CA the servers' certificates must chain to (verify-full).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.url)
            .field("tls", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// The runtime the store's PostgreSQL connections run on.
pub struct PgRuntime(Option<tokio::runtime::Runtime>);

impl std::fmt::Debug for PgRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgRuntime")
    }
}

impl PgRuntime {
    pub fn start() -> Result<Arc<Self>, SqlError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-pg")
            .enable_all()
            .build()
            .map(|rt| Arc::new(Self(Some(rt))))
            .map_err(|e| SqlError::Connection(format!("cannot start the store's runtime: {e}")))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle())
    }

    /// Runs `fut` there and waits for it on this thread.
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, SqlError> {
        let stopped = || SqlError::Connection("the store's runtime has stopped".into());
        let handle = self.handle().ok_or_else(stopped)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| stopped())
    }
}

impl Drop for PgRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(super) struct PgConn {
    client: Arc<Client>,
    statements: RefCell<HashMap<String, Statement>>,
    runtime: Arc<PgRuntime>,
}

/// `?N` (and bare `?`) parameters as PostgreSQL's `$N`; quoted text and
/// identifiers are left alone.
pub(super) fn dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut next = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(d) = chars.next_if(char::is_ascii_digit) {
                        out.push(d);
                    }
                } else {
                    next += 1;
                    out.push_str(&next.to_string());
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

fn pg(e: tokio_postgres::Error) -> SqlError {
    SqlError::Postgres(e)
}

impl PgConn {
    pub(super) fn connect(target: &PgTarget, runtime: &Arc<PgRuntime>) -> Result<Self, SqlError> {
        let mut cfg: tokio_postgres::Config = target
            .url
            .parse()
            .map_err(|e| SqlError::Connection(format!("the store URL: {e}")))?;
        if let Some(p) = &target.password {
            cfg.password(p.expose_secret().as_bytes());
        }
        cfg.application_name("zeroth")
            .connect_timeout(Duration::from_secs(5))
            .keepalives_idle(Duration::from_secs(30));
        let tls = match &target.ca_pem {
            Some(ca) => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(
                    crate::wire::pg_tls::client_config(ca)
                        .map_err(|e| SqlError::Connection(e.to_string()))?,
                )
            }
            None => None,
        };
        let client = runtime.block(async move {
            match tls {
                Some(config) => {
                    let (client, conn) =
                        cfg.connect(crate::wire::pg_tls::MakeRustls(config)).await?;
                    tokio::spawn(conn);
                    Ok::<_, tokio_postgres::Error>(client)
                }
                None => {
                    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(conn);
                    Ok(client)
                }
            }
        })?;
        Ok(Self {
            client: Arc::new(client.map_err(pg)?),
            statements: RefCell::new(HashMap::new()),
            runtime: runtime.clone(),
        })
    }

    /// Whether the connection to the database is gone.
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(super) fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        let (client, sql) = (self.client.clone(), sql.to_owned());
        self.runtime
            .block(async move { client.batch_execute(&sql).await })?
            .map_err(pg)
    }

    pub(super) fn prepare(&self, sql: &str, keep: bool) -> Result<Statement, SqlError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let (client, text) = (self.client.clone(), dialect(sql));
        let stmt = self
            .runtime
            .block(async move { client.prepare(&text).await })?
            .map_err(pg)?;
        if keep {
            self.statements
                .borrow_mut()
                .insert(sql.to_owned(), stmt.clone());
        }
        Ok(stmt)
    }

    pub(super) fn execute(&self, stmt: &Statement, vals: &[ValRef<'_>]) -> Result<usize, SqlError> {
        let (client, stmt, vals) = (self.client.clone(), stmt.clone(), owned(vals));
        let n = self
            .runtime
            .block(async move {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                client.execute(&stmt, &refs).await
            })?
            .map_err(pg)?;
        Ok(n as usize)
    }

    pub(super) fn query(
        &self,
        stmt: &Statement,
        vals: &[ValRef<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, SqlError> {
        let (client, stmt, vals) = (self.client.clone(), stmt.clone(), owned(vals));
        self.runtime
            .block(async move {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    vals.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                client.query(&stmt, &refs).await
            })?
            .map_err(pg)
    }
}

fn owned(vals: &[ValRef<'_>]) -> Vec<Val> {
    vals.iter()
        .map(|v| match *v {
            ValRef::Null => Val::Null,
            ValRef::Int(i) => Val::Int(i),
            ValRef::Real(f) => Val::Real(f),
            ValRef::Text(s) => Val::Text(s.to_owned()),
            ValRef::Blob(b) => Val::Blob(b.to_vec()),
        })
        .collect()
}

pub(super) fn value(r: &tokio_postgres::Row, idx: usize) -> Result<Val, SqlError> {
    r.try_get::<_, Val>(idx).map_err(pg)
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Val {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be a {ty} parameter").into()),
            },
            Val::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("a real cannot be a {ty} parameter").into()),
            },
            Val::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(format!("text cannot be a {ty} parameter").into()),
            },
            Val::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(format!("a blob cannot be a {ty} parameter").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Val {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Val::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Val::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Val::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => Val::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Val::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Val::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Val::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Val::Blob(raw.to_vec()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                Val::Text(String::from_sql(ty, raw)?)
            }
            _ => return Err(format!("a {ty} column is not read by the store").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Val::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::dialect;

    #[test]
    fn parameters_become_dollar_numbers_outside_quotes() {
        assert_eq!(
            dialect("UPDATE t SET a = ?1 WHERE b = ?12 AND c = '?3' AND \"d?\" = ?"),
            "UPDATE t SET a = $1 WHERE b = $12 AND c = '?3' AND \"d?\" = $1"
        );
        assert_eq!(dialect("SELECT ?, ?"), "SELECT $1, $2");
    }
}
