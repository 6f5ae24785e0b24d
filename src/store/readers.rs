//! Read-only connections to the store, pooled (SQLite: to its file;
//! PostgreSQL: sessions whose transactions are read-only). In WAL mode a reader
//! sees the last committed transaction and neither waits for the writer nor
//! holds it up, so request-path checks do not queue behind a group commit.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use super::sql::{Conn, PgRuntime, PgTarget};

use super::{Store, StoreError};

/// Idle read connections kept for reuse; more may be open at once.
const KEEP: usize = 8;

#[derive(Debug)]
pub(super) struct Readers {
    source: Source,
    idle: Mutex<Vec<Conn>>,
}

#[derive(Debug)]
enum Source {
    /// An in-memory store, which another connection cannot open.
    None,
    File(PathBuf),
    /// On PostgreSQL every connection is a session of its own; readers set
    /// their transactions read-only.
    Postgres {
        target: PgTarget,
        runtime: Arc<PgRuntime>,
    },
}

impl Readers {
    pub(super) fn on_file(path: &Path) -> Self {
        Self::with(Source::File(path.to_owned()))
    }

    pub(super) fn on_postgres(target: PgTarget, runtime: Arc<PgRuntime>) -> Self {
        Self::with(Source::Postgres { target, runtime })
    }

    /// The SQLite file the store keeps its data in, if it is one.
    pub(super) fn file(&self) -> Option<&Path> {
        match &self.source {
            Source::File(path) => Some(path),
            _ => None,
        }
    }

    pub(super) fn none() -> Self {
        Self::with(Source::None)
    }

    fn with(source: Source) -> Self {
        Self {
            source,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn get<'a>(&'a self, store: &'a Store) -> Result<Reader<'a>, StoreError> {
        if let Source::None = self.source {
            return Ok(Reader(Lent::Shared(store.lock())));
        }
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) if !c.is_broken() => c,
            _ => self.open()?,
        };
        Ok(Reader(Lent::Pooled {
            conn: Some(conn),
            home: self,
        }))
    }

    fn open(&self) -> Result<Conn, StoreError> {
        match &self.source {
            Source::File(path) => open(path),
            Source::Postgres { target, runtime } => {
                let conn = Conn::postgres(target, runtime).map_err(|source| StoreError::Open {
                    path: target.url.clone(),
                    source,
                })?;
                conn.execute_batch("SET default_transaction_read_only = on")
                    .map_err(StoreError::sql("making a reader read-only"))?;
                Ok(conn)
            }
            Source::None => Err(StoreError::Writer(
                "an in-memory store has no readers".into(),
            )),
        }
    }

    /// A new writing connection, in place of one the database dropped
    /// (PostgreSQL only: a SQLite file does not go away).
    pub(super) fn reconnect(&self) -> Result<Conn, StoreError> {
        match &self.source {
            Source::Postgres { target, runtime } => {
                Conn::postgres(target, runtime).map_err(|source| StoreError::Open {
                    path: target.url.clone(),
                    source,
                })
            }
            _ => Err(StoreError::Writer(
                "only a PostgreSQL store reconnects".into(),
            )),
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.is_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < KEEP {
            idle.push(conn);
        }
    }
}

fn open(path: &Path) -> Result<Conn, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source: source.into(),
    })?;
    conn.busy_timeout(super::BUSY_WAIT)
        .map_err(StoreError::sql("setting a reader's busy timeout"))?;
    conn.pragma_update(None, "cache_size", super::READER_CACHE_KIB)
        .map_err(StoreError::sql("bounding a reader's page cache"))?;
    Ok(Conn::sqlite(conn))
}

/// A connection lent for reading; returned to the pool when dropped.
pub struct Reader<'a>(Lent<'a>);

enum Lent<'a> {
    Pooled {
        conn: Option<Conn>,
        home: &'a Readers,
    },
    Shared(MutexGuard<'a, Conn>),
}

impl Deref for Reader<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match &self.0 {
            Lent::Pooled { conn, .. } => conn
                .as_ref()
                .expect("a pooled reader holds its connection until dropped"),
            Lent::Shared(guard) => guard,
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Lent::Pooled { conn, home } = &mut self.0 {
            if let Some(c) = conn.take() {
                home.give_back(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on disk with table `t` holding one row `v`.
    fn store_with(v: i64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("zeroth.db")).unwrap();
        store
            .lock()
            .execute_batch(&format!(
                "CREATE TABLE t (v INTEGER); INSERT INTO t VALUES ({v});"
            ))
            .unwrap();
        (dir, store)
    }

    fn read_v(conn: &Conn) -> i64 {
        conn.query_row("SELECT v FROM t", (), |row| row.get(0))
            .unwrap()
    }

    fn idle(store: &Store) -> usize {
        store.readers.idle.lock().unwrap().len()
    }

    #[test]
    fn the_writer_and_every_reader_have_a_bounded_page_cache() {
        let (_dir, store) = store_with(1);
        let size = |c: &Conn| -> i64 {
            c.query_row("PRAGMA cache_size", (), |row| row.get(0))
                .unwrap()
        };
        assert_eq!(size(&store.lock()), super::super::WRITER_CACHE_KIB);
        let r = store.read().unwrap();
        assert_eq!(size(&r), super::super::READER_CACHE_KIB);
    }

    #[test]
    fn a_reader_sees_what_the_writer_committed_and_cannot_write() {
        let (_dir, store) = store_with(7);
        let r = store.read().unwrap();
        assert_eq!(read_v(&r), 7);
        let err = r.execute("INSERT INTO t VALUES (8)", ()).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        drop(r);
        // Pooled: the next reader reuses the connection and sees new commits.
        assert_eq!(idle(&store), 1);
        store.lock().execute("UPDATE t SET v = 9", ()).unwrap();
        let r = store.read().unwrap();
        assert_eq!(idle(&store), 0);
        assert_eq!(read_v(&r), 9);
        drop(r);
        assert_eq!(idle(&store), 1);
    }

    #[test]
    fn a_reader_is_not_held_up_by_an_open_write_transaction() {
        let (_dir, store) = store_with(1);
        let mut w = store.lock();
        let tx = w.transaction().unwrap();
        tx.execute("UPDATE t SET v = 2", ()).unwrap();
        // The writer's lock is held and its change uncommitted: a reader
        // answers at once with the committed value.
        assert_eq!(read_v(&store.read().unwrap()), 1);
        tx.commit().unwrap();
    }
}
