//! Issued SSH certificates: serials reserved in blocks, each certificate's
//! record, and the revoked ones the KRL is built from.

use crate::store::sql::{params, Conn, Tx};

use super::{now, StoreError};

/// Reserves `n` certificate serials no one has had, durably (a server
/// restarted after a crash starts past them): returns the first and last.
pub fn reserve_ssh_serials(conn: &mut Conn, n: u64) -> Result<(u64, u64), StoreError> {
    let tx = conn
        .transaction()
        .map_err(StoreError::sql("starting a transaction"))?;
    let last = reserve_past(&tx, n as i64)?;
    tx.commit()
        .map_err(StoreError::sql("committing SSH serial reservations"))?;
    Ok((last as u64 - n + 1, last as u64))
}

/// Moves the SSH serial reservations `n` past every serial reserved or
/// recorded, in the caller's transaction: the new highest reserved.
pub fn reserve_past(tx: &Tx<'_>, n: i64) -> Result<i64, StoreError> {
    let current: i64 = tx
        .query_row(
            "SELECT MAX(v) FROM (
                SELECT up_to AS v FROM ssh_serial_reservations WHERE id = 1
                UNION ALL SELECT MAX(serial) FROM ssh_certs
                UNION ALL SELECT 0) AS highest",
            (),
            |r| r.get(0),
        )
        .map_err(StoreError::sql("reading SSH serial reservations"))?;
    let last = current.saturating_add(n);
    tx.execute(
        "INSERT INTO ssh_serial_reservations (id, up_to) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET up_to = excluded.up_to",
        [last],
    )
    .map_err(StoreError::sql("reserving SSH serials"))?;
    Ok(last)
}

/// Records what certificate `serial` was issued for, in the caller's
/// transaction (a serial used twice fails here).
#[allow(clippy::too_many_arguments)]
pub fn record_ssh_cert(
    tx: &Tx<'_>,
    serial: u64,
    lease_id: &str,
    key_id: &str,
    holder: &str,
    role: &str,
    principals: &[String],
    valid_before: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO ssh_certs (serial, lease_id, key_id, holder, role, principals, valid_before, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            serial as i64,
            lease_id,
            key_id,
            holder,
            role,
            principals.join(","),
            valid_before,
            now()
        ])
    })
    .map_err(StoreError::sql("recording an SSH certificate"))?;
    Ok(())
}

/// SSH certificates revoked before they expired: their serials and key ids
/// (what a KRL revokes).
#[derive(Debug, Default, Clone)]
pub struct RevokedCerts {
    pub serials: Vec<u64>,
    pub key_ids: Vec<String>,
}

/// Serials and key ids of SSH certificates revoked before they expired:
/// user certificates (`lease_kind` "ssh") or host ones ("ssh-host").
pub fn revoked_ssh_certs(
    conn: &Conn,
    at: i64,
    lease_kind: &str,
) -> Result<RevokedCerts, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT c.serial, c.key_id FROM leases l
             JOIN ssh_certs c ON CAST(c.serial AS TEXT) = l.external_name
             WHERE l.kind = ?2 AND l.state = 'revoked' AND l.expires > ?1",
        )
        .map_err(StoreError::sql("listing revoked SSH certificates"))?;
    let rows = stmt
        .query_map(params![at, lease_kind], |r| {
            Ok((r.get::<i64>(0)? as u64, r.get::<String>(1)?))
        })
        .map_err(StoreError::sql("listing revoked SSH certificates"))?;
    let mut revoked = RevokedCerts::default();
    for row in rows {
        let (serial, key_id) = row.map_err(StoreError::sql("listing revoked SSH certificates"))?;
        revoked.serials.push(serial);
        revoked.key_ids.push(key_id);
    }
    Ok(revoked)
}

/// The sequence number and time of the latest SSH certificate revocation in
/// the audit log (0, 0 if none): a KRL's version and generation date, so the
/// same revocations always give the same bytes.
pub fn last_ssh_revocation(conn: &Conn) -> Result<(u64, u64), StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0), COALESCE(MAX(time), 0) FROM audit
         WHERE kind = 'ssh.cert.revoked'",
        (),
        |r| Ok((r.get::<i64>(0)? as u64, r.get::<i64>(1)? as u64)),
    )
    .map_err(StoreError::sql("reading the latest SSH revocation"))
}
