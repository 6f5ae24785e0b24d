//! Registration entries (which SPIFFE ID a program on a node gets). The
//! parent is stored as `node:<id>` or `group:<name>`, so one index serves
//! an agent's question "what is for me": its node's entries and its
//! group's.

use crate::store::sql::{params, Conn, OptionalExtension, Tx};

use super::StoreError;
use crate::wire::entry::{Entry, Parent, Selector};

fn parent_key(p: &Parent) -> String {
    match p {
        Parent::Node(id) => format!("node:{id}"),
        Parent::Group(g) => format!("group:{g}"),
    }
}

fn parent_of(key: &str) -> Option<Parent> {
    match key.split_once(':')? {
        ("node", id) => Some(Parent::Node(id.into())),
        ("group", g) => Some(Parent::Group(g.into())),
        _ => None,
    }
}

const COLUMNS: &str = "id, spiffe_id, parent, selectors, ttl, dns_names, roles, hint, created";

fn json_list<T: serde::de::DeserializeOwned>(
    text: &str,
    idx: usize,
) -> Result<Vec<T>, crate::store::sql::SqlError> {
    serde_json::from_str(text).map_err(|e| crate::store::sql::SqlError::Column {
        idx,
        reason: crate::store::sql::Mismatch::Content(e.to_string()),
    })
}

fn from_row(r: &crate::store::sql::Row<'_>) -> Result<Entry, crate::store::sql::SqlError> {
    let parent: String = r.get(2)?;
    Ok(Entry {
        id: r.get(0)?,
        spiffe_id: r.get(1)?,
        parent: parent_of(&parent).ok_or_else(|| crate::store::sql::SqlError::Column {
            idx: 2,
            reason: crate::store::sql::Mismatch::Content(format!(
                "unknown entry parent {parent:?}"
            )),
        })?,
        selectors: json_list::<Selector>(&r.get::<String>(3)?, 3)?,
        ttl_seconds: r.get::<i64>(4)?.max(0) as u64,
        dns_names: json_list(&r.get::<String>(5)?, 5)?,
        roles: json_list(&r.get::<String>(6)?, 6)?,
        hint: r.get(7)?,
        created: r.get(8)?,
    })
}

/// A list as the JSON text it is stored as.
fn json<T: serde::Serialize>(v: &[T]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

/// Stores a new entry; `false` when the same SPIFFE ID, parent and
/// selectors are already registered.
pub fn create(tx: &Tx<'_>, e: &Entry) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "INSERT INTO entries (id, spiffe_id, parent, selectors, ttl, dns_names, roles, hint, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (spiffe_id, parent, selectors) DO NOTHING",
            params![
                e.id,
                e.spiffe_id,
                parent_key(&e.parent),
                json(&e.selectors),
                e.ttl_seconds as i64,
                json(&e.dns_names),
                json(&e.roles),
                e.hint,
                e.created
            ],
        )
        .map_err(StoreError::sql("storing an entry"))?;
    Ok(n == 1)
}

pub fn get(conn: &Conn, id: &str) -> Result<Option<Entry>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM entries WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()
    .map_err(StoreError::sql("reading an entry"))
}

/// Every entry, in the order they were made.
pub fn all(conn: &Conn) -> Result<Vec<Entry>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM entries ORDER BY rowid"))
        .map_err(StoreError::sql("listing entries"))?;
    let rows = st
        .query_map((), from_row)
        .map_err(StoreError::sql("listing entries"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing entries"))
}

/// The entries for one node (or token host) of `group`: its own and its
/// group's, in the order they were made. `node_id` is `None` for a token host.
pub fn for_holder(
    conn: &Conn,
    node_id: Option<&str>,
    group: &str,
) -> Result<Vec<Entry>, StoreError> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM entries WHERE parent IN (?1, ?2) ORDER BY rowid"
        ))
        .map_err(StoreError::sql("listing a node's entries"))?;
    let node_key = node_id.map(|id| parent_key(&Parent::Node(id.into())));
    let group_key = parent_key(&Parent::Group(group.into()));
    let rows = st
        .query_map(params![node_key, group_key], from_row)
        .map_err(StoreError::sql("listing a node's entries"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing a node's entries"))
}

/// Records an X.509-SVID issued for `entry_id` to `holder` (the node's or
/// token host's SPIFFE ID).
pub fn record_svid(
    tx: &Tx<'_>,
    serial: &str,
    entry_id: &str,
    holder: &str,
    spiffe_id: &str,
    not_after: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO workload_svids (serial, entry_id, holder, spiffe_id, not_after, issued)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![serial, entry_id, holder, spiffe_id, not_after, super::now()],
    )
    .map_err(StoreError::sql("recording a workload SVID"))?;
    Ok(())
}

/// Removes an entry; the entry as it was, if there was one.
pub fn delete(tx: &Tx<'_>, id: &str) -> Result<Option<Entry>, StoreError> {
    let was = get(tx, id)?;
    if was.is_some() {
        tx.execute("DELETE FROM entries WHERE id = ?1", [id])
            .map_err(StoreError::sql("deleting an entry"))?;
    }
    Ok(was)
}
