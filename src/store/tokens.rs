//! Rotating identity tokens for hosts without a TPM. Only SHA-256 hashes of
//! tokens are stored.

use crate::store::sql::{params, OptionalExtension, Tx};

use super::{now, StoreError};

/// A token as found by its hash.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub chain_id: String,
    pub group: String,
    pub generation: i64,
    pub rotated: bool,
    pub expires: i64,
    pub chain_revoked: bool,
    pub ttl: i64,
    /// When it was exchanged, for which public key (SHA-256), and the next
    /// token it was exchanged for, sealed under the HSM key: what an
    /// immediate retry of a lost exchange gets again.
    pub rotation: Option<Rotation>,
}

#[derive(Clone)]
pub struct Rotation {
    pub at: i64,
    pub key_hash: Vec<u8>,
    pub next_sealed: Vec<u8>,
    /// The highest attempt number taken (None: requests without one).
    pub last_attempt: Option<i64>,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

pub fn create_chain(
    tx: &Tx<'_>,
    id: &str,
    group: &str,
    ttl: i64,
    first_hash: &[u8],
) -> Result<i64, StoreError> {
    let t = now();
    tx.execute(
        "INSERT INTO token_chains (id, grp, ttl, state, created) VALUES (?1, ?2, ?3, 'active', ?4)",
        params![id, group, ttl, t],
    )
    .map_err(StoreError::sql("creating a token chain"))?;
    insert_token(tx, id, 1, first_hash, t + ttl)?;
    Ok(t + ttl)
}

pub fn insert_token(
    tx: &Tx<'_>,
    chain: &str,
    generation: i64,
    hash: &[u8],
    expires: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO tokens (hash, chain_id, generation, state, expires, created) VALUES (?1, ?2, ?3, 'active', ?4, ?5)",
        params![hash, chain, generation, expires, now()],
    )
    .map_err(StoreError::sql("recording a token"))?;
    Ok(())
}

pub fn find(tx: &Tx<'_>, hash: &[u8]) -> Result<Option<TokenRow>, StoreError> {
    tx.query_row(
        "SELECT t.chain_id, c.grp, t.generation, t.state, t.expires, c.state, c.ttl,
                t.rotated_at, t.rotated_for, t.next_sealed, t.last_attempt
         FROM tokens t JOIN token_chains c ON c.id = t.chain_id WHERE t.hash = ?1",
        [hash],
        |r| {
            let rotation = match (r.get(7)?, r.get(8)?, r.get(9)?) {
                (Some(at), Some(key_hash), Some(next_sealed)) => Some(Rotation {
                    at,
                    key_hash,
                    next_sealed,
                    last_attempt: r.get(10)?,
                }),
                _ => None,
            };
            Ok(TokenRow {
                chain_id: r.get(0)?,
                group: r.get(1)?,
                generation: r.get(2)?,
                rotated: r.get::<String>(3)? == "rotated",
                expires: r.get(4)?,
                chain_revoked: r.get::<String>(5)? == "revoked",
                ttl: r.get(6)?,
                rotation,
            })
        },
    )
    .optional()
    .map_err(StoreError::sql("looking up a token"))
}

/// Marks the token exchanged, keeping what a retry of the same exchange
/// may be answered with (see [`Rotation`]).
pub fn mark_rotated(
    tx: &Tx<'_>,
    hash: &[u8],
    key_hash: &[u8],
    next_sealed: &[u8],
    attempt: Option<i64>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tokens SET state = 'rotated', rotated_at = ?2, rotated_for = ?3, next_sealed = ?4,
                           last_attempt = ?5
         WHERE hash = ?1 AND state = 'active'",
        params![hash, now(), key_hash, next_sealed, attempt],
    )
    .map_err(StoreError::sql("rotating a token"))?;
    Ok(())
}

/// Records that a retried exchange of the rotated token `hash` took
/// `attempt`, so no request may take it (or an earlier one) again; false if
/// a higher or equal attempt was taken first.
pub fn take_attempt(tx: &Tx<'_>, hash: &[u8], attempt: i64) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE tokens SET last_attempt = ?2
             WHERE hash = ?1 AND state = 'rotated' AND last_attempt < ?2",
            params![hash, attempt],
        )
        .map_err(StoreError::sql("recording an exchange attempt"))?;
    Ok(n == 1)
}

/// When generation `generation` of `chain` expires, if it is still unused.
pub fn unused(tx: &Tx<'_>, chain: &str, generation: i64) -> Result<Option<i64>, StoreError> {
    tx.query_row(
        "SELECT expires FROM tokens WHERE chain_id = ?1 AND generation = ?2 AND state = 'active'",
        params![chain, generation],
        |r| r.get(0),
    )
    .optional()
    .map_err(StoreError::sql("looking up a token"))
}

pub fn revoke_chain(tx: &Tx<'_>, chain: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE token_chains SET state = 'revoked' WHERE id = ?1",
        [chain],
    )
    .map_err(StoreError::sql("revoking a token chain"))?;
    Ok(())
}

/// A token chain as the credential endpoints see it.
#[derive(Debug, Clone)]
pub struct Chain {
    pub group: String,
    pub revoked: bool,
}

pub fn chain(conn: &crate::store::sql::Conn, id: &str) -> Result<Option<Chain>, StoreError> {
    conn.query_row(
        "SELECT grp, state FROM token_chains WHERE id = ?1",
        [id],
        |r| {
            Ok(Chain {
                group: r.get(0)?,
                revoked: r.get::<String>(1)? == "revoked",
            })
        },
    )
    .optional()
    .map_err(StoreError::sql("looking up a token chain"))
}

/// A token chain as an operator sees it (`zeroth token list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainListing {
    pub chain: String,
    pub group: String,
    pub state: String,
    pub created: i64,
    /// Tokens handed out so far (the first included).
    pub tokens: i64,
    /// When the newest token expires (0 if none).
    pub expires: i64,
}

/// Every token chain, newest first.
pub fn list_chains(conn: &crate::store::sql::Conn) -> Result<Vec<ChainListing>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT c.id, c.grp, c.state, c.created,
                    (SELECT COUNT(*) FROM tokens t WHERE t.chain_id = c.id),
                    COALESCE((SELECT MAX(t.expires) FROM tokens t WHERE t.chain_id = c.id), 0)
             FROM token_chains c ORDER BY c.created DESC, c.id",
        )
        .map_err(StoreError::sql("listing token chains"))?;
    let rows = stmt
        .query_map((), |r| {
            Ok(ChainListing {
                chain: r.get(0)?,
                group: r.get(1)?,
                state: r.get(2)?,
                created: r.get(3)?,
                tokens: r.get(4)?,
                expires: r.get(5)?,
            })
        })
        .map_err(StoreError::sql("listing token chains"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing token chains"))
}
