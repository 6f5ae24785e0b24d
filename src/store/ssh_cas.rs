//! The SSH CA keys of each kind (user, host) and where they are in their
//! rotation: `next` (published, not signing), `active` (signing),
//! `retired` (published until certificates it signed have expired),
//! `removed`.

use crate::store::sql::{params, Conn};

use super::{now, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRow {
    pub key_name: String,
    pub kind: String,
    pub state: String,
    pub created: i64,
}

/// The CA keys of `kind` that are not removed, oldest first.
pub fn list(conn: &Conn, kind: &str) -> Result<Vec<CaRow>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT key_name, kind, state, created FROM ssh_cas
             WHERE kind = ?1 AND state != 'removed' ORDER BY created, key_name",
        )
        .map_err(StoreError::sql("listing SSH CAs"))?;
    let rows = stmt
        .query_map([kind], |r| {
            Ok(CaRow {
                key_name: r.get(0)?,
                kind: r.get(1)?,
                state: r.get(2)?,
                created: r.get(3)?,
            })
        })
        .map_err(StoreError::sql("listing SSH CAs"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing SSH CAs"))
}

/// Records a CA key; false if the key was recorded already (by another
/// server of a cluster starting at the same time).
pub fn insert(conn: &Conn, key_name: &str, kind: &str, state: &str) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "INSERT INTO ssh_cas (key_name, kind, state, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key_name) DO NOTHING",
            params![key_name, kind, state, now()],
        )
        .map_err(StoreError::sql("recording an SSH CA"))?;
    Ok(n == 1)
}

/// Moves every CA of `kind` in state `from` to `to`; how many moved.
pub fn move_state(conn: &Conn, kind: &str, from: &str, to: &str) -> Result<usize, StoreError> {
    conn.execute(
        "UPDATE ssh_cas SET state = ?3 WHERE kind = ?1 AND state = ?2",
        params![kind, from, to],
    )
    .map_err(StoreError::sql("updating SSH CAs"))
}
