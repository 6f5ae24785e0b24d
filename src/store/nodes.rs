//! Nodes, enrolment challenges, issued SVIDs and CA certificates.

use crate::store::sql::{params, Conn, OptionalExtension, Tx};

use super::{now, StoreError};

pub use crate::wire::node::NodeState;

/// A node, as the registry holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Node {
    pub id: String,
    pub group: String,
    pub state: NodeState,
    pub ek_hash: String,
    #[serde(skip)]
    pub ek_public: Vec<u8>,
    #[serde(skip)]
    pub ak_public: Vec<u8>,
    pub hostname: String,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub created: i64,
    pub updated: i64,
}

fn node_from_row(r: &crate::store::sql::Row<'_>) -> Result<Node, crate::store::sql::SqlError> {
    Ok(Node {
        id: r.get(0)?,
        group: r.get(1)?,
        state: NodeState::parse(&r.get::<String>(2)?),
        ek_hash: r.get(3)?,
        ek_public: r.get(4)?,
        ak_public: r.get(5)?,
        hostname: r.get(6)?,
        clock: r.get::<i64>(7)? as u64,
        reset_count: r.get::<i64>(8)? as u32,
        restart_count: r.get::<i64>(9)? as u32,
        created: r.get(10)?,
        updated: r.get(11)?,
    })
}

const NODE_COLUMNS: &str =
    "id, grp, state, ek_hash, ek_public, ak_public, hostname, clock, reset_count, restart_count, created, updated";

pub fn node_by_ek(conn: &Conn, ek_hash: &str) -> Result<Option<Node>, StoreError> {
    conn.query_row(
        &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE ek_hash = ?1"),
        [ek_hash],
        node_from_row,
    )
    .optional()
    .map_err(StoreError::sql("looking up a node by EK"))
}

pub fn node(conn: &Conn, id: &str) -> Result<Option<Node>, StoreError> {
    conn.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], node_from_row))
        .optional()
        .map_err(StoreError::sql("looking up a node"))
}

/// How many nodes are in `state`.
pub fn count(conn: &Conn, state: NodeState) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM nodes WHERE state = ?1",
        [state.as_str()],
        |r| r.get(0),
    )
    .map_err(StoreError::sql("counting nodes"))
}

pub fn nodes(conn: &Conn) -> Result<Vec<Node>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes ORDER BY created"
        ))
        .map_err(StoreError::sql("listing nodes"))?;
    let rows = stmt
        .query_map((), node_from_row)
        .map_err(StoreError::sql("listing nodes"))?;
    rows.map(|r| r.map_err(StoreError::sql("reading a node")))
        .collect()
}

/// Inserts or updates a node after a successful attestation. An existing
/// node is updated only if it is not revoked and stays in its group: false
/// when nothing was written.
pub fn upsert_node(tx: &Tx<'_>, n: &Node, ek_cert: Option<&[u8]>) -> Result<bool, StoreError> {
    let written = tx.execute(
        "INSERT INTO nodes (id, grp, state, ek_hash, ek_public, ek_cert, ak_public, hostname, clock, reset_count, restart_count, created, updated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, hostname = excluded.hostname,
            clock = excluded.clock, reset_count = excluded.reset_count,
            restart_count = excluded.restart_count, updated = excluded.updated
         WHERE nodes.state <> 'revoked' AND nodes.grp = excluded.grp
            AND nodes.ek_hash = excluded.ek_hash",
        params![
            n.id,
            n.group,
            n.state.as_str(),
            n.ek_hash,
            n.ek_public,
            ek_cert,
            n.ak_public,
            n.hostname,
            n.clock as i64,
            i64::from(n.reset_count),
            i64::from(n.restart_count),
            now()
        ],
    )
    .map_err(StoreError::sql("recording a node"))?;
    Ok(written == 1)
}

/// Moves a node from state `from` to `to`; false if it was not in `from`.
pub fn set_node_state(
    tx: &Tx<'_>,
    id: &str,
    from: NodeState,
    to: NodeState,
) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE nodes SET state = ?1, updated = ?2 WHERE id = ?3 AND state = ?4",
            params![to.as_str(), now(), id, from.as_str()],
        )
        .map_err(StoreError::sql("changing a node's state"))?;
    Ok(n == 1)
}

/// An enrolment challenge: single use, short-lived.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub id: String,
    pub group: String,
    pub ek_hash: String,
    pub ek_public: Vec<u8>,
    pub ek_cert: Option<Vec<u8>>,
    pub ak_public: Vec<u8>,
    pub hostname: String,
    pub nonce: Vec<u8>,
    pub secret_hash: Vec<u8>,
    pub expires: i64,
}

pub fn insert_challenge(conn: &Conn, c: &Challenge) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO challenges (id, grp, ek_hash, ek_public, ek_cert, ak_public, hostname, nonce, secret_hash, expires)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![c.id, c.group, c.ek_hash, c.ek_public, c.ek_cert, c.ak_public, c.hostname, c.nonce, c.secret_hash, c.expires],
    )
    .map_err(StoreError::sql("recording a challenge"))?;
    // Expired challenges are of no further use (kept a minute past expiry,
    // so a late finish hears "expired" rather than "unknown").
    conn.prepare_cached("DELETE FROM challenges WHERE expires < ?1")
        .and_then(|mut s| s.execute([now() - PRUNE_AFTER]))
        .map_err(StoreError::sql("pruning old challenges"))?;
    Ok(())
}

/// How long past its expiry a challenge is kept.
const PRUNE_AFTER: i64 = 60;

/// The challenges `ek_hash` holds open (unused, unexpired), and when the
/// first of them expires.
pub fn open_challenges(conn: &Conn, ek_hash: &str) -> Result<(i64, i64), StoreError> {
    conn.prepare_cached(
        "SELECT COUNT(*), COALESCE(MIN(expires), 0) FROM challenges
         WHERE ek_hash = ?1 AND used = 0 AND expires >= ?2",
    )
    .and_then(|mut s| s.query_row(params![ek_hash, now()], |r| Ok((r.get(0)?, r.get(1)?))))
    .map_err(StoreError::sql("counting open challenges"))
}

/// Why a challenge cannot be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRefusal {
    Unknown,
    AlreadyUsed,
    Expired,
}

/// Marks the challenge used and returns it, in the caller's transaction:
/// a second redemption finds it used, even if the first one fails later.
pub fn take_challenge(
    tx: &Tx<'_>,
    id: &str,
) -> Result<Result<Challenge, ChallengeRefusal>, StoreError> {
    let row = tx
        .query_row(
            "SELECT id, grp, ek_hash, ek_public, ek_cert, ak_public, hostname, nonce, secret_hash, expires, used
             FROM challenges WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    Challenge {
                        id: r.get(0)?,
                        group: r.get(1)?,
                        ek_hash: r.get(2)?,
                        ek_public: r.get(3)?,
                        ek_cert: r.get(4)?,
                        ak_public: r.get(5)?,
                        hostname: r.get(6)?,
                        nonce: r.get(7)?,
                        secret_hash: r.get(8)?,
                        expires: r.get(9)?,
                    },
                    r.get::<i64>(10)?,
                ))
            },
        )
        .optional()
        .map_err(StoreError::sql("reading a challenge"))?;
    let Some((c, used)) = row else {
        return Ok(Err(ChallengeRefusal::Unknown));
    };
    if used != 0 {
        return Ok(Err(ChallengeRefusal::AlreadyUsed));
    }
    let taken = tx
        .execute(
            "UPDATE challenges SET used = 1 WHERE id = ?1 AND used = 0",
            [id],
        )
        .map_err(StoreError::sql("using a challenge"))?;
    if taken != 1 {
        return Ok(Err(ChallengeRefusal::AlreadyUsed));
    }
    if c.expires < now() {
        return Ok(Err(ChallengeRefusal::Expired));
    }
    Ok(Ok(c))
}

pub fn record_svid(
    tx: &Tx<'_>,
    serial: &str,
    node_id: &str,
    spiffe_id: &str,
    not_after: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO svids (serial, node_id, spiffe_id, not_after, issued) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![serial, node_id, spiffe_id, not_after, now()],
    )
    .map_err(StoreError::sql("recording an SVID"))?;
    Ok(())
}

pub fn ca_certificate(conn: &Conn, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT der FROM ca_certificates WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
    .map_err(StoreError::sql("reading a CA certificate"))
}

pub fn save_ca_certificate(conn: &Conn, name: &str, der: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO ca_certificates (name, der, created) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        params![name, der, now()],
    )
    .map_err(StoreError::sql("saving a CA certificate"))?;
    Ok(())
}

/// A renewal challenge: the nonce an enrolled node must quote over to renew
/// its SVID. Single use, short-lived, bound to the node that asked.
#[derive(Debug, Clone)]
pub struct RenewalChallenge {
    pub id: String,
    pub node_id: String,
    pub nonce: Vec<u8>,
    pub expires: i64,
}

pub fn insert_renewal_challenge(conn: &Conn, c: &RenewalChallenge) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO renewal_challenges (id, node_id, nonce, expires) VALUES (?1, ?2, ?3, ?4)",
        params![c.id, c.node_id, c.nonce, c.expires],
    )
    .map_err(StoreError::sql("recording a renewal challenge"))?;
    conn.execute(
        "DELETE FROM renewal_challenges WHERE expires < ?1",
        [now() - PRUNE_AFTER],
    )
    .map_err(StoreError::sql("pruning old renewal challenges"))?;
    Ok(())
}

/// Marks the renewal challenge used and returns it (see [`take_challenge`]).
pub fn take_renewal_challenge(
    tx: &Tx<'_>,
    id: &str,
) -> Result<Result<RenewalChallenge, ChallengeRefusal>, StoreError> {
    let row = tx
        .query_row(
            "SELECT id, node_id, nonce, expires, used FROM renewal_challenges WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    RenewalChallenge {
                        id: r.get(0)?,
                        node_id: r.get(1)?,
                        nonce: r.get(2)?,
                        expires: r.get(3)?,
                    },
                    r.get::<i64>(4)?,
                ))
            },
        )
        .optional()
        .map_err(StoreError::sql("reading a renewal challenge"))?;
    let Some((c, used)) = row else {
        return Ok(Err(ChallengeRefusal::Unknown));
    };
    if used != 0 {
        return Ok(Err(ChallengeRefusal::AlreadyUsed));
    }
    let taken = tx
        .execute(
            "UPDATE renewal_challenges SET used = 1 WHERE id = ?1 AND used = 0",
            [id],
        )
        .map_err(StoreError::sql("using a renewal challenge"))?;
    if taken != 1 {
        return Ok(Err(ChallengeRefusal::AlreadyUsed));
    }
    if c.expires < now() {
        return Ok(Err(ChallengeRefusal::Expired));
    }
    Ok(Ok(c))
}

/// Records a node's latest TPM clock after a renewal's quote.
pub fn update_clock(
    tx: &Tx<'_>,
    id: &str,
    clock: u64,
    reset_count: u32,
    restart_count: u32,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE nodes SET clock = ?1, reset_count = ?2, restart_count = ?3, updated = ?4 WHERE id = ?5",
        params![clock as i64, i64::from(reset_count), i64::from(restart_count), now(), id],
    )
    .map_err(StoreError::sql("recording a node's clock"))?;
    Ok(())
}
