//! Online backups of a SQLite store, and their restore into an empty state
//! directory.
//!
//! A backup is `VACUUM INTO` on one of the read-only connections: a single
//! consistent snapshot of every table, taken beside the writer (WAL) while
//! the server keeps serving. The store holds its secrets only sealed with
//! the HSM's store key (database admin passwords) or as hashes (tokens), so
//! a backup is of no use without the token it was taken on.
//!
//! A restore never writes into a store: the file is checked (a whole
//! SQLite database, a zeroth store of a schema this binary knows), copied
//! beside the store's place, brought up to date there, checked against the
//! HSM by the caller, and only then renamed into place.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{migrations, Store, StoreError};

/// The store's file name in a state directory.
pub const STORE_FILE: &str = "zeroth.db";

/// A snapshot file in the store's directory, removed when dropped.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
}

impl Snapshot {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn refused(why: impl Into<String>) -> StoreError {
    StoreError::Backup(why.into())
}

/// Takes a consistent snapshot of the running store.
pub fn snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let file = store.file().ok_or_else(|| {
        refused(
            "this server's store is PostgreSQL: back it up with PostgreSQL's tools \
             (pg_basebackup with WAL archiving, or pg_dump), as docs/operations.md, \
             \"Back up and restore\" says",
        )
    })?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let snap = Snapshot {
        path: dir.join(format!(
            ".backup-{}.db",
            hex::encode(rand::random::<[u8; 8]>())
        )),
    };
    let target = snap
        .path
        .to_str()
        .ok_or_else(|| refused("the state directory's path is not UTF-8"))?
        .to_owned();
    store
        .read()?
        .execute("VACUUM INTO ?1", [target])
        .map_err(StoreError::sql("taking a snapshot"))?;
    Ok(snap)
}

/// What a backup file holds, checked before anything is restored from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub schema: i64,
    pub nodes: i64,
    pub leases: i64,
    pub audit_events: i64,
}

/// Checks that `file` is a whole SQLite database holding a zeroth store of
/// a schema this binary can open, without changing it.
pub fn inspect(file: &Path) -> Result<Inspected, StoreError> {
    let conn =
        Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            StoreError::Open {
                path: file.display().to_string(),
                source: source.into(),
            }
        })?;
    let not_a_store = |_| {
        refused(format!(
            "{} is not a zeroth store (no schema version or audit log in it)",
            file.display()
        ))
    };
    let check: String = conn
        .query_row("PRAGMA integrity_check", (), |r| r.get(0))
        .map_err(|e| refused(format!("{} is not a SQLite database: {e}", file.display())))?;
    if check != "ok" {
        return Err(refused(format!(
            "{} is damaged (SQLite's integrity check: {check})",
            file.display()
        )));
    }
    let schema: i64 = conn
        .query_row("SELECT version FROM schema_version", (), |r| r.get(0))
        .map_err(not_a_store)?;
    if schema > migrations::LATEST {
        return Err(StoreError::TooNew {
            found: schema,
            supported: migrations::LATEST,
        });
    }
    let count = |table: &str| -> Result<i64, StoreError> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), (), |r| r.get(0))
            .map_err(not_a_store)
    };
    Ok(Inspected {
        schema,
        nodes: count("nodes")?,
        leases: count("leases")?,
        audit_events: count("audit")?,
    })
}

/// A backup copied beside the store's place in `state_dir`, opened (and
/// brought up to this binary's schema) for the caller's checks; it
/// becomes the store only by [`Staged::install`], and is removed if
/// dropped before.
#[derive(Debug)]
pub struct Staged {
    store: Option<Store>,
    staged: PathBuf,
    target: PathBuf,
}

impl Staged {
    pub fn store(&self) -> &Store {
        self.store
            .as_ref()
            .expect("a staged store is open until installed")
    }

    /// Closes the staged store, gives it to `owner` (uid, gid) and moves
    /// it into place. The owner is set through the opened file, never by
    /// path: the state directory belongs to the service account, which
    /// could put a symlink where the file was and so have root give it
    /// whatever the link names.
    pub fn install(mut self, owner: Option<(u32, u32)>) -> Result<PathBuf, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Closing the last connection folds the WAL into the file.
        self.store = None;
        let io = |doing: &str, e: std::io::Error| refused(format!("{doing}: {e}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.staged)
            .map_err(|e| io("opening the restored store (not following links)", e))?;
        let meta = file
            .metadata()
            .map_err(|e| io("reading the restored store", e))?;
        if !meta.is_file() {
            return Err(refused(format!(
                "{} is not a regular file any more; nothing was replaced",
                self.staged.display()
            )));
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| {
                io(
                    "giving the restored store to the state directory's owner",
                    e,
                )
            })?;
        }
        file.sync_all()
            .map_err(|e| io("syncing the restored store", e))?;
        if self.target.exists() {
            return Err(refused(format!(
                "{} appeared while restoring; nothing was replaced",
                self.target.display()
            )));
        }
        std::fs::rename(&self.staged, &self.target)
            .map_err(|e| io("moving the restored store into place", e))?;
        if let Some(dir) = self.target.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.target.clone())
    }
}

impl Staged {
    fn remove_staged(&mut self) {
        self.store = None;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.staged.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.remove_staged();
    }
}

/// Copies the backup `file` into `state_dir` (which must hold no store)
/// and opens the copy, running any migration it needs.
pub fn stage(file: &Path, state_dir: &Path) -> Result<(Inspected, Staged), StoreError> {
    let inspected = inspect(file)?;
    let target = state_dir.join(STORE_FILE);
    if target.exists() {
        return Err(refused(format!(
            "{} already holds a store: restore only into an empty state directory",
            state_dir.display()
        )));
    }
    let io = |doing: &str, e: std::io::Error| refused(format!("{doing}: {e}"));
    std::fs::create_dir_all(state_dir).map_err(|e| io("creating the state directory", e))?;
    let staged = state_dir.join(format!(".restoring-{STORE_FILE}"));
    // What a restore cut short left behind goes first.
    let mut staging = Staged {
        store: None,
        staged: staged.clone(),
        target,
    };
    staging.remove_staged();
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut from = std::fs::File::open(file).map_err(|e| io("reading the backup", e))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)
            .map_err(|e| io("writing the restored store", e))?;
        std::io::copy(&mut from, &mut to).map_err(|e| io("copying the backup", e))?;
    }
    staging.store = Some(Store::open(&staged)?);
    Ok((inspected, staging))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_store_swapped_for_a_link_is_refused_and_its_target_untouched() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"not zeroth's").unwrap();
        let before = std::fs::metadata(&victim).unwrap();
        let staged = dir.path().join(".restoring-zeroth.db");
        std::os::unix::fs::symlink(&victim, &staged).unwrap();
        let swapped = Staged {
            store: None,
            staged: staged.clone(),
            target: dir.path().join(STORE_FILE),
        };
        let owner = (before.uid() + 1, before.gid() + 1);
        let err = swapped.install(Some(owner)).unwrap_err().to_string();
        assert!(err.contains("not following links"), "{err}");
        let after = std::fs::metadata(&victim).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert!(!dir.path().join(STORE_FILE).exists());
    }
}
