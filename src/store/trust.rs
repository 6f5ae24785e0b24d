//! The trust a store belongs to: its trust domain and the identities of
//! the HSM keys it was made with, recorded once by the first server and
//! compared by every server after, before it writes anything else.

use std::collections::BTreeMap;

use crate::store::sql::{params, Conn, OptionalExtension};

use super::{now, StoreError};

/// What a store was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub trust_domain: String,
    /// Per key name, what identifies it: a signing key's public key, or
    /// (for the store key, which has none) a value sealed under it; hex.
    pub keys: BTreeMap<String, String>,
    pub created: i64,
}

/// The store's binding, if one was recorded.
pub fn read(conn: &Conn) -> Result<Option<Binding>, StoreError> {
    let row = conn
        .query_row(
            "SELECT trust_domain, keys, created FROM trust WHERE id = 1",
            (),
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?)),
        )
        .optional()
        .map_err(StoreError::sql("reading the store's trust"))?;
    let Some((trust_domain, keys, created)) = row else {
        return Ok(None);
    };
    let keys = serde_json::from_str(&keys).map_err(|e| StoreError::Malformed {
        what: "record of its HSM keys",
        reason: e.to_string(),
    })?;
    Ok(Some(Binding {
        trust_domain,
        keys,
        created,
    }))
}

/// Records (or, for keys added by a later release, extends) the binding.
pub fn write(
    conn: &Conn,
    trust_domain: &str,
    keys: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let keys = serde_json::to_string(keys).map_err(|e| StoreError::Malformed {
        what: "record of its HSM keys",
        reason: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO trust (id, trust_domain, keys, created) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET keys = excluded.keys",
        params![trust_domain, keys, now()],
    )
    .map_err(StoreError::sql("recording the store's trust"))?;
    Ok(())
}
