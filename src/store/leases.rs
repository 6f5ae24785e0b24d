//! Leases on dynamic credentials (the database connections they use are
//! `db_connections`, the certificates `ssh_certs`).
//! A lease is written `creating` before the credential exists and flipped
//! to `active` after, so a crash in between leaves a record the revoker
//! undoes; a revocation records `revoking` first and is retried until done.

use crate::store::sql::{params, Conn, OptionalExtension, Tx};

use super::{now, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Creating,
    Active,
    Revoking,
    Revoked,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "creating" => Self::Creating,
            "active" => Self::Active,
            "revoking" => Self::Revoking,
            _ => Self::Revoked,
        }
    }
}

/// A lease as the API reports it (`POST /v1/leases/{id}/renew`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Lease {
    pub id: String,
    pub kind: String,
    pub role: String,
    pub connection: String,
    pub holder: String,
    pub external_name: String,
    pub state: LeaseState,
    pub created: i64,
    pub expires: i64,
    pub max_expires: i64,
}

const COLUMNS: &str =
    "id, kind, role, connection, holder, external_name, state, created, expires, max_expires";

fn from_row(r: &crate::store::sql::Row<'_>) -> Result<Lease, crate::store::sql::SqlError> {
    Ok(Lease {
        id: r.get(0)?,
        kind: r.get(1)?,
        role: r.get(2)?,
        connection: r.get(3)?,
        holder: r.get(4)?,
        external_name: r.get(5)?,
        state: LeaseState::parse(&r.get::<String>(6)?),
        created: r.get(7)?,
        expires: r.get(8)?,
        max_expires: r.get(9)?,
    })
}

pub fn insert(tx: &Tx<'_>, l: &Lease) -> Result<(), StoreError> {
    tx.prepare_cached(&format!(
        "INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            l.id,
            l.kind,
            l.role,
            l.connection,
            l.holder,
            l.external_name,
            l.state.as_str(),
            l.created,
            l.expires,
            l.max_expires
        ])
    })
    .map_err(StoreError::sql("recording a lease"))?;
    Ok(())
}

pub fn get(conn: &Conn, id: &str) -> Result<Option<Lease>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM leases WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], from_row))
        .optional()
        .map_err(StoreError::sql("reading a lease"))
}

/// Moves lease `id` from `from` to `to`, in the caller's transaction:
/// false (and nothing written) if it was no longer in `from`. Every change
/// of a lease's state names the state it expects, so a revoked lease can
/// never become active again.
pub fn transition(
    tx: &Tx<'_>,
    id: &str,
    from: LeaseState,
    to: LeaseState,
) -> Result<bool, StoreError> {
    let revoked = (to == LeaseState::Revoked).then(now);
    // Whoever moves a lease to `revoking` is about to revoke it: the
    // revoker leaves it to them for a while rather than race them.
    let retry_at = (to == LeaseState::Revoking).then(|| now() + REVOKING_GRACE);
    let n = tx
        .prepare_cached(
            "UPDATE leases SET state = ?1, revoked = COALESCE(?2, revoked),
                retry_at = COALESCE(?5, retry_at)
             WHERE id = ?3 AND state = ?4",
        )
        .and_then(|mut s| s.execute(params![to.as_str(), revoked, id, from.as_str(), retry_at]))
        .map_err(StoreError::sql("changing a lease's state"))?;
    Ok(n == 1)
}

/// Whether lease `seen` is still in the state and expiry it was read with
/// (not renewed, finished or revoked since).
pub fn unchanged_since(conn: &Conn, seen: &Lease) -> Result<bool, StoreError> {
    Ok(get(conn, &seen.id)?
        .is_some_and(|now| now.state == seen.state && now.expires == seen.expires))
}

/// Extends an active lease; false if it is no longer active.
pub fn set_expires(tx: &Tx<'_>, id: &str, expires: i64) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE leases SET expires = ?1 WHERE id = ?2 AND state = 'active'",
            params![expires, id],
        )
        .map_err(StoreError::sql("renewing a lease"))?;
    Ok(n == 1)
}

/// Puts off the next attempt at an unfinished lease after a failed one:
/// 2, 4, 8 … seconds, at most a minute.
pub fn retry_later(conn: &Conn, id: &str, at: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE leases SET attempts = attempts + 1,
            retry_at = ?1 + CASE attempts WHEN 0 THEN 2 WHEN 1 THEN 4 WHEN 2 THEN 8
                WHEN 3 THEN 16 WHEN 4 THEN 32 ELSE 60 END
         WHERE id = ?2 AND state IN ('creating', 'active', 'revoking')",
        params![at, id],
    )
    .map_err(StoreError::sql("scheduling a retry"))?;
    Ok(())
}

/// Failed attempts after which an unfinished lease is no longer retried
/// (about half an hour at one attempt a minute) and waits for an
/// operator: `zeroth lease retry ID` or `zeroth lease mark-revoked ID`.
pub const MAX_ATTEMPTS: i64 = 30;

/// The failed attempts at `id` so far.
pub fn attempts(conn: &Conn, id: &str) -> Result<i64, StoreError> {
    conn.query_row("SELECT attempts FROM leases WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(StoreError::sql("reading a lease's attempts"))
}

/// The leases given up on after [`MAX_ATTEMPTS`], waiting for an operator.
pub fn irrevocable(conn: &Conn) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT id FROM leases WHERE state != 'revoked' AND attempts >= ?1 ORDER BY id")
        .map_err(StoreError::sql("listing irrevocable leases"))?;
    let rows = stmt
        .query_map([MAX_ATTEMPTS], |r| r.get(0))
        .map_err(StoreError::sql("listing irrevocable leases"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing irrevocable leases"))
}

/// Makes an unfinished lease due again at once, its attempts counted from
/// zero; false if it is revoked or unknown.
pub fn retry_now(conn: &Conn, id: &str) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE leases SET attempts = 0, retry_at = 0 WHERE id = ?1 AND state != 'revoked'",
        [id],
    )
    .map(|n| n == 1)
    .map_err(StoreError::sql("retrying a lease"))
}

/// How long an issuance may keep its lease `creating` before the revoker
/// takes it for abandoned (a write that failed after the user was made).
pub const CREATING_GRACE: i64 = 60;

/// How long a revocation under way keeps its lease from the revoker
/// (which takes it over if it is still `revoking` then: the revocation
/// failed, or its server stopped midway).
pub const REVOKING_GRACE: i64 = 10;

/// Leases to revoke now: active ones past their expiry, `revoking` ones
/// (a revocation that failed or was cut short), and `creating` ones left
/// by an earlier run (recorded at or before row `earlier_run`, see
/// [`last_row`]) or abandoned longer than [`CREATING_GRACE`] — each no
/// sooner than its retry time.
pub fn due(conn: &Conn, at: i64, earlier_run: i64, limit: usize) -> Result<Vec<Lease>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM leases
             WHERE ((state = 'active' AND expires <= ?1)
                OR state = 'revoking'
                OR (state = 'creating' AND (rowid <= ?2 OR created <= ?1 - ?4)))
               AND retry_at <= ?1 AND attempts < ?5
             ORDER BY expires LIMIT ?3"
        ))
        .map_err(StoreError::sql("finding due leases"))?;
    let rows = stmt
        .query_map(
            params![at, earlier_run, limit as i64, CREATING_GRACE, MAX_ATTEMPTS],
            from_row,
        )
        .map_err(StoreError::sql("finding due leases"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("finding due leases"))
}

/// How many leases of `connection` expired at or before `before` and are
/// still not revoked, counted up to `cap` (enough to tell a bound is
/// passed without counting a large backlog whole).
pub fn overdue(conn: &Conn, connection: &str, before: i64, cap: i64) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM (SELECT 1 FROM leases
             WHERE state IN ('active', 'revoking') AND expires <= ?1 AND connection = ?2
             LIMIT ?3) AS late",
        params![before, connection, cap],
        |r| r.get(0),
    )
    .map_err(StoreError::sql("counting overdue leases"))
}

/// The newest lease row so far: read at start, it tells the leases of
/// earlier runs (the retention sweep never deletes the newest row, so row
/// ids only grow) from those this run is still making.
pub fn last_row(conn: &Conn) -> Result<i64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(rowid), 0) FROM leases", (), |r| {
        r.get(0)
    })
    .map_err(StoreError::sql("reading the newest lease"))
}

/// How many leases are in each state that is not final.
pub fn counts(conn: &Conn) -> Result<Vec<(LeaseState, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM leases WHERE state != 'revoked' GROUP BY state",
        )
        .map_err(StoreError::sql("counting leases"))?;
    let rows = stmt
        .query_map((), |r| {
            Ok((LeaseState::parse(&r.get::<String>(0)?), r.get(1)?))
        })
        .map_err(StoreError::sql("counting leases"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("counting leases"))
}

/// Active leases held by nodes, or token chains, that were revoked since.
pub fn of_revoked_nodes(conn: &Conn, limit: usize) -> Result<Vec<Lease>, StoreError> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("l.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {cols} FROM leases l JOIN nodes n ON l.holder LIKE '%/node/' || n.id
             WHERE n.state = 'revoked' AND l.state = 'active' AND l.attempts < ?2
             UNION ALL
             SELECT {cols} FROM leases l JOIN token_chains c ON l.holder LIKE '%/token/' || c.id
             WHERE c.state = 'revoked' AND l.state = 'active' AND l.attempts < ?2 LIMIT ?1"
        ))
        .map_err(StoreError::sql("finding leases of revoked nodes"))?;
    let rows = stmt
        .query_map([limit as i64, MAX_ATTEMPTS], from_row)
        .map_err(StoreError::sql("finding leases of revoked nodes"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("finding leases of revoked nodes"))
}

/// Leases not yet revoked, optionally only those of `holder` or whose id
/// or role starts with `prefix`.
pub fn live(
    conn: &Conn,
    holder: Option<&str>,
    prefix: Option<&str>,
) -> Result<Vec<Lease>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM leases WHERE state != 'revoked'
               AND (CAST(?1 AS TEXT) IS NULL OR holder = ?1)
               AND (CAST(?2 AS TEXT) IS NULL
                    OR substr(role || '/' || id, 1, length(CAST(?2 AS TEXT))) = ?2)
             ORDER BY created"
        ))
        .map_err(StoreError::sql("listing leases"))?;
    let rows = stmt
        .query_map(params![holder, prefix], from_row)
        .map_err(StoreError::sql("listing leases"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing leases"))
}

/// Every external name the ledger knows on `connection` and has not
/// finished revoking (for the reconciler).
pub fn known_names(conn: &Conn, connection: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT external_name FROM leases WHERE connection = ?1 AND state != 'revoked'")
        .map_err(StoreError::sql("listing lease names"))?;
    let rows = stmt
        .query_map([connection], |r| r.get(0))
        .map_err(StoreError::sql("listing lease names"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("listing lease names"))
}
